"""Which training slices each image is aligned with: the candidate search of the aligned pixel distance.

The aligned distance (:mod:`brainsynth.evaluate.privacy.registration`) costs a few Gauss-Newton
steps per pair, so only a few candidate pairs per image are aligned. Candidates are ranked by the
*coarse similarity*: the best correlation of two centroid-centred 16 px thumbnails over a grid of
mirror x rotation (5 degree steps) x scale (5 % steps) applied to the training slice (50
transforms at the default bounds). A query's candidates are its ``k`` best references, plus the
best reference of each of its ``k_groups`` most similar subjects (so its nearest image of another
subject is measured too), and, for questions asked the other way round (membership), each
reference's ``k_cols`` best queries.

Two ways to find them (``audit.prefilter``):

* **exhaustive** (``prefilter: 0``): the coarse similarity of every query with every reference,
  in blocks of query rows (memory bounded; time grows with queries x references x 50 transforms).
* **prefiltered** (``prefilter: P``, the default): a cheaper score first. The thumbnails are
  rescaled so that every brain has one size (which undoes a re-acquisition's scale change up to
  a few per cent), then correlated under mirror x 3 rotations (10 degree steps) x 3 scales (5 %
  steps): 18 transforms instead of 50, about a third of the cost per pair. Each query keeps its
  ``P`` best references by this score, plus the best reference of each of its ``P // 8`` best
  subjects; each reference keeps its ``max(4 k_cols, P // 8)`` best queries (when columns are
  asked for). The full coarse grid is then computed for these pairs only, and the candidates are
  chosen among them as above. This is the approximation of the audit: a pair that the prefilter
  ranks below the pool is never aligned, so its distance is ``inf`` as if it were far.
  ``benchmarks/prefilter_recall.py`` measures what the prefilter changes against the exhaustive
  search (docs/privacy.md, "Speed, memory, and where the search is approximate").

Both grow in memory with the number of images, never with their product: blocks of query rows
are sized to :data:`BLOCK_BYTES`, and the pairs are kept as lists.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from brainsynth.evaluate.privacy.nearest import row_blocks, rows_for
from brainsynth.evaluate.privacy.registration import (COARSE_SCALE_STEP, Matches, Prepared, brain_mask, coarse_bank,
                                                     coarse_grid, coarse_similarity_of_pairs, pair_starts, refine,
                                                     unit_rows)
from brainsynth.evaluate.privacy.transforms import Family, affine, matrix, sample

BLOCK_BYTES = 128 << 20
"""Bytes of one block of similarities or warped thumbnails: bounds the search's working memory."""

PREFILTER_RADIUS = 0.25  # the prefilter's thumbnails are rescaled to a brain RMS radius of a quarter of their side
PREFILTER_RESIDUAL_SCALE = 0.05  # scale change left after that rescaling, searched at the coarse grid's 5 % step
PREFILTER_ROTATION_STEP = 10.0  # degrees between the prefilter's rotations (the coarse grid's: 5)
GROUP_POOL_DIVISOR = 8  # a prefiltered query also keeps the best reference of its prefilter // 8 best subjects
COLUMN_POOL_FACTOR = 4  # a prefiltered reference keeps its max(4 k_cols, prefilter // 8) best queries (membership)


def match(queries: Prepared, refs: Prepared, family: Family, *, k_rows: int, k_cols: int = 0,
          query_groups: np.ndarray | None = None, groups: np.ndarray | None = None, k_groups: int = 0,
          prefilter: int = 0, iterations: int | None = None, progress=None) -> Matches:
    """Aligned distances between queries and references, for the candidate pairs only.

    Parameters
    ----------
    queries, refs : Prepared
        From :func:`~brainsynth.evaluate.privacy.registration.prepare`, same working size.
    family : Family
        The bounds of the search.
    k_rows : int
        Candidates per query (its nearest references are among them).
    k_cols : int
        Candidates per reference (for "nearest query of each reference").
    query_groups : np.ndarray, optional
        int [Nq] subject of each query, comparable with ``groups``: pairs of one subject are never
        matched (a training image scored against the OTHER training subjects).
    groups, k_groups : np.ndarray, int
        int [Nr] subject of each reference, and how many of the most similar subjects contribute their
        best reference to every query's candidates.
    prefilter : int
        0: rank every pair by the coarse similarity (exhaustive); P > 0: the prefilter's cheaper score
        first, the coarse similarity on each query's P best references only (module docstring).
    progress : callable, optional
        ``progress(n)`` after every block of ``n`` queries (a progress bar).

    Returns
    -------
    Matches
    """
    if query_groups is not None and groups is None:
        raise ValueError("query_groups needs groups")
    arg = None
    if prefilter > 0:
        pool = prefiltered_pool(queries, refs, family, prefilter, k_rows, k_cols, query_groups, groups, progress)
        best, _, pool_arg = coarse_similarity_of_pairs(queries, refs, pool, family)
        chosen = select_positions(pool, best, k_rows, k_cols, groups, k_groups)
        pairs, arg = pool[chosen], pool_arg[:, chosen]  # the candidates' coarse transforms: not searched twice
    else:
        pairs = exhaustive_candidates(queries, refs, family, k_rows, k_cols, query_groups, groups, k_groups, progress)
    kwargs = {} if iterations is None else {"iterations": iterations}
    dist, params, coeffs = refine(queries, refs, pairs, family,
                                  starts=pair_starts(queries, refs, pairs, family, arg=arg), **kwargs)
    return Matches(shape=(len(queries), len(refs)), pairs=pairs, dist=dist, params=params, coeffs=coeffs)


# --- exhaustive ------------------------------------------------------------------------------------

def exhaustive_candidates(queries: Prepared, refs: Prepared, family: Family, k_rows: int, k_cols: int,
                          query_groups: np.ndarray | None, groups: np.ndarray | None, k_groups: int,
                          progress=None) -> np.ndarray:
    """[Np, 2] candidate pairs ranked by the coarse similarity of every query with every reference."""
    grid = coarse_grid(family)
    patch = refs.centred.shape[1]
    cached = len(grid) * len(refs) * patch * 4 <= BLOCK_BYTES
    bank = coarse_bank(refs, grid, 0, len(grid)) if cached else None  # [T, Nr, P]
    chunk = len(grid) if cached else max(1, min(len(grid), 10))
    rows = rows_for(len(refs), 4 * chunk, BLOCK_BYTES)
    found, col_val, col_idx = [], None, None
    for lo, hi in row_blocks(len(queries), rows):
        sim = _coarse_block(queries, refs, grid, lo, hi, bank, chunk)  # [B, Nr]
        if query_groups is not None:
            same = torch.as_tensor(np.asarray(query_groups[lo:hi]))[:, None] == torch.as_tensor(groups)[None, :]
            sim = sim.masked_fill(same.to(sim.device), -math.inf)
        local = candidate_pairs(sim, k_rows, 0, groups=groups, k_groups=k_groups)
        found.append(local + np.array([lo, 0]))
        if k_cols > 0:
            val, idx = sim.topk(min(k_cols, hi - lo), dim=0)  # [k, Nr]
            idx = idx + lo
            if col_val is not None:
                val, pick = torch.cat([col_val, val]).topk(min(k_cols, len(col_val) + len(val)), dim=0)
                idx = torch.cat([col_idx, idx]).gather(0, pick)
            col_val, col_idx = val, idx
        if progress:
            progress(hi - lo)
    if col_val is not None:
        keep = torch.isfinite(col_val)
        refs_of = torch.arange(len(refs), device=col_idx.device)[None, :].expand_as(col_idx)
        found.append(torch.stack([col_idx[keep], refs_of[keep]], 1).cpu().numpy())
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def _coarse_block(queries: Prepared, refs: Prepared, grid: torch.Tensor, lo: int, hi: int,
                  bank: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """[hi - lo, Nr] best correlation over the coarse grid of queries ``lo..hi`` with every reference."""
    q = unit_rows(queries.centred[lo:hi])  # [B, P]
    best = torch.full((hi - lo, len(refs)), -1.0, device=q.device)
    with torch.no_grad():
        for start in range(0, len(grid), chunk):
            part = bank[start:start + chunk] if bank is not None else coarse_bank(refs, grid, start, start + chunk)
            sim = torch.einsum("qp,trp->qtr", q, part)  # [B, T, Nr]
            torch.maximum(best, sim.amax(dim=1), out=best)
    return best


def candidate_pairs(similarity: torch.Tensor, k_rows: int, k_cols: int, exclude: np.ndarray | None = None,
                    groups: np.ndarray | None = None, k_groups: int = 0) -> np.ndarray:
    """[Np, 2] (query, reference) candidate pairs of a dense similarity block, ``exclude`` [Nq, Nr] (bool) left out.

    A query's candidates are its ``k_rows`` most similar references, plus the most similar
    reference of each of its ``k_groups`` most similar ``groups`` (subjects: int [Nr]), so that
    its nearest image of ANOTHER subject is among them too; a reference's candidates are its
    ``k_cols`` most similar queries.
    """
    sim = similarity.clone()
    if exclude is not None:
        sim[torch.from_numpy(np.asarray(exclude, dtype=bool)).to(sim.device)] = -math.inf
    nq, nr = sim.shape
    found = []
    if k_rows > 0 and nr:
        top = sim.topk(min(k_rows, nr), dim=1).indices  # [Nq, k]
        found.append(torch.stack([torch.arange(nq, device=sim.device)[:, None].expand_as(top), top], -1).reshape(-1, 2))
    if k_cols > 0 and nq:
        top = sim.topk(min(k_cols, nq), dim=0).indices  # [k, Nr]
        found.append(torch.stack([top, torch.arange(nr, device=sim.device)[None, :].expand_as(top)], -1).reshape(-1, 2))
    if groups is not None and k_groups > 0 and nr:
        best, arg = group_best(sim, groups)  # [Nq, G]
        top = best.topk(min(k_groups, best.shape[1]), dim=1).indices  # [Nq, kg]
        chosen = torch.gather(arg, 1, top)
        found.append(torch.stack([torch.arange(nq, device=sim.device)[:, None].expand_as(chosen), chosen],
                                 -1).reshape(-1, 2))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = torch.unique(torch.cat(found), dim=0)
    keep = torch.isfinite(sim[pairs[:, 0], pairs[:, 1]])
    return pairs[keep].cpu().numpy().astype(np.int64)


def group_best(sim: torch.Tensor, groups: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the best similarity in each group and the column that has it: [Nq, G] each."""
    labels = np.asarray(groups)
    names = np.unique(labels)
    best = torch.full((sim.shape[0], len(names)), -math.inf, device=sim.device)
    arg = torch.zeros((sim.shape[0], len(names)), dtype=torch.long, device=sim.device)
    for g, name in enumerate(names):
        members = torch.from_numpy(np.flatnonzero(labels == name)).to(sim.device)
        value, index = sim[:, members].max(dim=1)
        best[:, g], arg[:, g] = value, members[index]
    return best, arg


# --- prefiltered -----------------------------------------------------------------------------------

def thumbnails(images: Prepared) -> torch.Tensor:
    """[N, C*C]: the centred thumbnails rescaled so that every brain has one size (RMS radius of its mask
    :data:`PREFILTER_RADIUS` of the side). A re-acquisition's scale change is thereby undone in closed form, up to
    the few per cent the residual grid of :func:`prefilter_grid` covers."""
    c = int(math.isqrt(images.centred.shape[1]))
    square = images.centred.view(-1, c, c)
    mask = brain_mask(square)  # [N, C, C]
    coords = torch.arange(c, dtype=torch.float32, device=square.device) - (c - 1) / 2
    r2 = (mask * (coords[None, :, None] ** 2 + coords[None, None, :] ** 2)).sum((1, 2)) / mask.sum((1, 2)).clamp_min(1)
    log_scale = torch.log(r2.sqrt().clamp_min(1e-3) / (PREFILTER_RADIUS * c))  # [N]
    zero = torch.zeros_like(log_scale)
    theta = affine(matrix(zero, zero, -log_scale), torch.zeros(len(square), 2, device=square.device), c)
    return sample(square[:, None], theta).flatten(1)  # [N, C*C]


def prefilter_grid(family: Family) -> torch.Tensor:
    """[T, 3] the prefilter's transforms: mirror x rotations at twice the coarse grid's step x the scale left after
    :func:`thumbnails` (18 at the default bounds)."""
    residual = Family(max_shift=family.max_shift, max_rotation=family.max_rotation,
                      max_scale=min(family.max_scale, PREFILTER_RESIDUAL_SCALE), flip=family.flip)
    return coarse_grid(residual, PREFILTER_ROTATION_STEP, COARSE_SCALE_STEP)


def prefiltered_pool(queries: Prepared, refs: Prepared, family: Family, pool: int, k_rows: int, k_cols: int,
                     query_groups: np.ndarray | None, groups: np.ndarray | None, progress=None) -> np.ndarray:
    """[Np, 2] pairs worth the full coarse grid: each query's ``pool`` best references by the prefilter score, the
    best reference of each of its ``pool // 8`` best subjects, and (``k_cols`` > 0) each reference's
    ``max(4 k_cols, pool // 8)`` best queries.

    References are visited in chunks of whole subjects (each chunk's warped thumbnails made once), queries in
    blocks inside each chunk; every query keeps a running list of its best references and best subjects, so memory
    holds one chunk, one block and those lists.
    """
    grid = prefilter_grid(family)
    q = unit_rows(thumbnails(queries))  # [Nq, p]
    ref_thumbs = thumbnails(refs)  # [Nr, p]
    dev = q.device
    n_rows = min(pool, len(refs)) if k_rows > 0 else 0
    n_groups = max(1, pool // GROUP_POOL_DIVISOR) if k_rows > 0 and groups is not None else 0
    n_cols = min(max(COLUMN_POOL_FACTOR * k_cols, pool // GROUP_POOL_DIVISOR), len(queries)) if k_cols > 0 else 0
    labels = np.zeros(len(refs), np.int64) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    order = np.argsort(labels, kind="stable")  # references by subject: a chunk holds whole subjects
    qg = None if query_groups is None else torch.as_tensor(np.asarray(query_groups, np.int64), device=dev)
    running = _Running(len(queries), n_rows, n_groups, dev)
    found = []
    for chunk in _subject_chunks(labels[order], rows_for(len(grid) * q.shape[1], 4, BLOCK_BYTES)):
        members = order[chunk]  # reference indices of this chunk
        bank = coarse_bank(ref_thumbs[torch.as_tensor(members, device=dev)], grid, 0, len(grid))  # [T, Rc, p]
        chunk_groups = torch.as_tensor(labels[members], device=dev)
        local_groups = torch.unique(chunk_groups, return_inverse=True)[1]
        col_val = col_idx = None
        for lo, hi in row_blocks(len(queries), rows_for(len(members), 40, BLOCK_BYTES)):
            with torch.no_grad():
                score = q[lo:hi] @ bank[0].T  # [B, Rc]
                for t in range(1, len(bank)):
                    torch.maximum(score, q[lo:hi] @ bank[t].T, out=score)
            if qg is not None:
                score = score.masked_fill(qg[lo:hi, None] == chunk_groups[None, :], -math.inf)
            running.update(lo, hi, score, members, local_groups)
            if n_cols:
                val, idx = score.topk(min(n_cols, hi - lo), dim=0)  # [c, Rc]
                if col_val is not None:
                    val, pick = torch.cat([col_val, val]).topk(min(n_cols, len(col_val) + len(val)), dim=0)
                    idx = torch.cat([col_idx, idx + lo]).gather(0, pick)
                else:
                    idx = idx + lo
                col_val, col_idx = val, idx
        if col_val is not None:
            keep = torch.isfinite(col_val)
            refs_of = torch.as_tensor(members, device=dev)[None, :].expand_as(col_idx)
            found.append(torch.stack([col_idx[keep], refs_of[keep]], 1).cpu().numpy())
        if progress:
            progress(len(queries) * len(members) / len(refs))
    found += running.pairs()
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(np.concatenate(found).astype(np.int64), axis=0)


def _subject_chunks(sorted_labels: np.ndarray, size: int) -> list[np.ndarray]:
    """Positions 0..N-1 in chunks of about ``size`` that never split a label's run (a subject stays whole)."""
    starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
    chunks, begin = [], 0
    for start in list(starts[1:]) + [len(sorted_labels)]:
        if start - begin >= size:
            chunks.append(np.arange(begin, start))
            begin = start
    if begin < len(sorted_labels):
        chunks.append(np.arange(begin, len(sorted_labels)))
    return chunks


class _Running:
    """Each query's best references and best subjects so far (values and reference indices), merged chunk by chunk."""

    def __init__(self, n_queries: int, n_rows: int, n_groups: int, device: torch.device):
        self.n_rows, self.n_groups = n_rows, n_groups
        self.row_val = torch.full((n_queries, n_rows), -math.inf, device=device)
        self.row_idx = torch.zeros((n_queries, n_rows), dtype=torch.long, device=device)
        self.group_val = torch.full((n_queries, n_groups), -math.inf, device=device)
        self.group_idx = torch.zeros((n_queries, n_groups), dtype=torch.long, device=device)

    @staticmethod
    def _merge(val, idx, new_val, new_idx, k):
        both_val, both_idx = torch.cat([val, new_val], 1), torch.cat([idx, new_idx], 1)
        top = both_val.topk(k, dim=1)
        return top.values, both_idx.gather(1, top.indices)

    def update(self, lo: int, hi: int, score: torch.Tensor, members: np.ndarray, local_groups: torch.Tensor) -> None:
        ref_index = torch.as_tensor(members, device=score.device)
        if self.n_rows:
            top = score.topk(min(self.n_rows, score.shape[1]), dim=1)
            self.row_val[lo:hi], self.row_idx[lo:hi] = self._merge(
                self.row_val[lo:hi], self.row_idx[lo:hi], top.values, ref_index[top.indices], self.n_rows)
        if self.n_groups:
            best, arg = _segment_best(score, local_groups)  # [B, G_chunk]
            self.group_val[lo:hi], self.group_idx[lo:hi] = self._merge(
                self.group_val[lo:hi], self.group_idx[lo:hi], best, ref_index[arg], self.n_groups)

    def pairs(self) -> list[np.ndarray]:
        out = []
        for val, idx in ((self.row_val, self.row_idx), (self.group_val, self.group_idx)):
            if val.shape[1]:
                keep = torch.isfinite(val)
                rows = torch.arange(len(val), device=val.device)[:, None].expand_as(idx)
                out.append(torch.stack([rows[keep], idx[keep]], 1).cpu().numpy())
        return out


def _segment_best(score: torch.Tensor, group_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the best score of each group and its first column: [B, G] each (``-inf``/0 for an empty group)."""
    n_groups = int(group_index.max()) + 1
    index = group_index[None, :].expand_as(score)
    best = torch.full((score.shape[0], n_groups), -math.inf, device=score.device)
    best = best.scatter_reduce(1, index, score, reduce="amax")
    columns = torch.arange(score.shape[1], device=score.device)[None, :].expand_as(score)
    hit = score == best.gather(1, index)
    arg = torch.full((score.shape[0], n_groups), score.shape[1], device=score.device, dtype=torch.long)
    arg = arg.scatter_reduce(1, index, torch.where(hit, columns, score.shape[1]), reduce="amin")
    return best, arg.clamp_max(score.shape[1] - 1)


def select(pool: np.ndarray, sim: np.ndarray, k_rows: int, k_cols: int, groups: np.ndarray | None,
           k_groups: int) -> np.ndarray:
    """The candidates among scored pairs (``pool`` [Np, 2], ``sim`` [Np]): the rule of :func:`candidate_pairs`."""
    return pool[select_positions(pool, sim, k_rows, k_cols, groups, k_groups)]


def select_positions(pool: np.ndarray, sim: np.ndarray, k_rows: int, k_cols: int, groups: np.ndarray | None,
                     k_groups: int) -> np.ndarray:
    """Positions in ``pool`` of the pairs :func:`select` chooses (sorted)."""
    qi, rj = pool[:, 0], pool[:, 1]
    chosen = []
    if k_rows > 0:
        chosen.append(_top_per_key(qi, sim, k_rows))
    if k_cols > 0:
        chosen.append(_top_per_key(rj, sim, k_cols))
    if groups is not None and k_groups > 0 and len(pool):
        g = np.unique(np.asarray(groups), return_inverse=True)[1][rj]
        best_of_group = _top_per_key(qi * (int(g.max()) + 1) + g, sim, 1)  # pair index of each (query, group) best
        chosen.append(best_of_group[_top_per_key(qi[best_of_group], sim[best_of_group], k_groups)])
    if not chosen:
        return np.zeros(0, np.int64)
    picked = np.unique(np.concatenate(chosen))
    return picked[np.isfinite(sim[picked])]


def _top_per_key(key: np.ndarray, value: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``value`` of each ``key`` (ties: the earlier position)."""
    if not len(key):
        return np.zeros(0, np.int64)
    order = np.lexsort((-value, key))
    sorted_key = key[order]
    first = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    position = np.arange(len(order))
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    return order[rank < k]
