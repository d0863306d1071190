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
* **prefiltered** (``prefilter: P``, the default): a cheaper score first, the same grid at twice
  its steps (10 degrees, 10 %: 18 transforms) on 8 px thumbnails, an 11th of the exhaustive
  cost per pair. Each query keeps its ``P`` best references by this score, plus the best
  reference of each of its ``P // 8`` best subjects; each reference keeps its
  ``max(4 k_cols, P // 8)`` best queries (when columns are asked for). The full coarse grid is
  then computed for these pairs only, and the candidates are chosen among them as above. This
  is the approximation of the audit: a pair that the prefilter ranks below the pool is never
  aligned, so its distance is ``inf`` as if it were far. ``benchmarks/prefilter_recall.py``
  measures what the prefilter changes against the exhaustive search (docs/privacy.md, "Where
  the search is approximate").

Both grow in memory with the number of images, never with their product: blocks of query rows
are sized to :data:`BLOCK_BYTES`, and the pairs are kept as lists.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.evaluate.privacy.nearest import row_blocks, rows_for
from brainsynth.evaluate.privacy.registration import (Matches, Prepared, coarse_bank, coarse_grid,
                                                     coarse_similarity_of_pairs, pair_starts, refine, unit_rows)
from brainsynth.evaluate.privacy.transforms import Family

BLOCK_BYTES = 128 << 20
"""Bytes of one block of similarities or warped thumbnails: bounds the search's working memory."""

PREFILTER_SIZE = 8  # px of the prefilter's thumbnails (the 16 px centred thumbnails, area-reduced)
PREFILTER_ROTATION_STEP = 10.0  # degrees between the prefilter's rotations (the coarse grid's: 5)
PREFILTER_SCALE_STEP = 0.10  # relative scale between the prefilter's scales (the coarse grid's: 0.05)
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
        0: rank every pair by the coarse similarity (exhaustive); P > 0: the cheap 2-transform score
        first, the coarse similarity on each query's P best references only (module docstring).
    progress : callable, optional
        ``progress(n)`` after every block of ``n`` queries (a progress bar).

    Returns
    -------
    Matches
    """
    if query_groups is not None and groups is None:
        raise ValueError("query_groups needs groups")
    if prefilter > 0:
        pool = prefiltered_pool(queries, refs, family, prefilter, k_rows, k_cols, query_groups, groups, progress)
        pairs = select(pool, coarse_similarity_of_pairs(queries, refs, pool, family)[0], k_rows, k_cols, groups,
                       k_groups)
    else:
        pairs = exhaustive_candidates(queries, refs, family, k_rows, k_cols, query_groups, groups, k_groups, progress)
    kwargs = {} if iterations is None else {"iterations": iterations}
    dist, params, coeffs = refine(queries, refs, pairs, family,
                                  starts=pair_starts(queries, refs, pairs, family), **kwargs)
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
    """[N, S*S]: the centred thumbnails reduced to :data:`PREFILTER_SIZE` px (area averaging)."""
    c = int(math.isqrt(images.centred.shape[1]))
    size = min(PREFILTER_SIZE, c)
    return F.interpolate(images.centred.view(-1, 1, c, c), size=(size, size), mode="area").flatten(1)


def prefilter_grid(family: Family) -> torch.Tensor:
    """[T, 3] the prefilter's transforms: the coarse grid at twice its steps (18 at the default bounds)."""
    return coarse_grid(family, PREFILTER_ROTATION_STEP, PREFILTER_SCALE_STEP)


def prefiltered_pool(queries: Prepared, refs: Prepared, family: Family, pool: int, k_rows: int, k_cols: int,
                     query_groups: np.ndarray | None, groups: np.ndarray | None, progress=None) -> np.ndarray:
    """[Np, 2] pairs worth the full coarse grid: each query's ``pool`` best references by the prefilter score, the
    best reference of each of its ``pool // 8`` best subjects, and (``k_cols`` > 0) each reference's
    ``max(4 k_cols, pool // 8)`` best queries."""
    grid = prefilter_grid(family)
    q = unit_rows(thumbnails(queries))  # [Nq, p]
    bank = coarse_bank(thumbnails(refs), grid, 0, len(grid))  # [T, Nr, p]
    n_rows = pool if k_rows > 0 else 0
    n_groups = max(1, pool // GROUP_POOL_DIVISOR) if k_rows > 0 else 0
    n_cols = max(COLUMN_POOL_FACTOR * k_cols, pool // GROUP_POOL_DIVISOR) if k_cols > 0 else 0
    group_index = None if groups is None else torch.as_tensor(np.unique(np.asarray(groups), return_inverse=True)[1],
                                                              device=q.device)
    rows = rows_for(len(refs), 32, BLOCK_BYTES)  # the score, one product, masks and the group bests per cell
    found, col_val, col_idx = [], None, None
    for lo, hi in row_blocks(len(queries), rows):
        with torch.no_grad():
            score = q[lo:hi] @ bank[0].T  # [B, Nr]
            for t in range(1, len(bank)):
                torch.maximum(score, q[lo:hi] @ bank[t].T, out=score)
        if query_groups is not None:
            same = torch.as_tensor(np.asarray(query_groups[lo:hi]), device=q.device)[:, None] == \
                torch.as_tensor(np.asarray(groups), device=q.device)[None, :]
            score = score.masked_fill(same, -math.inf)
        rows_of = torch.arange(lo, hi, device=q.device)[:, None]
        if n_rows:
            top = score.topk(min(n_rows, len(refs)), dim=1)
            keep = torch.isfinite(top.values)
            found.append(torch.stack([rows_of.expand_as(top.indices)[keep], top.indices[keep]], 1))
        if n_groups and group_index is not None:
            best, arg = _segment_best(score, group_index)  # [B, G]
            pick = best.topk(min(n_groups, best.shape[1]), dim=1)
            chosen = arg.gather(1, pick.indices)
            keep = torch.isfinite(pick.values)
            found.append(torch.stack([rows_of.expand_as(chosen)[keep], chosen[keep]], 1))
        if n_cols:
            val, idx = score.topk(min(n_cols, hi - lo), dim=0)  # [c, Nr]
            idx = idx + lo
            if col_val is not None:
                val, pick = torch.cat([col_val, val]).topk(min(n_cols, len(col_val) + len(val)), dim=0)
                idx = torch.cat([col_idx, idx]).gather(0, pick)
            col_val, col_idx = val, idx
        if progress:
            progress(hi - lo)
    if col_val is not None:
        keep = torch.isfinite(col_val)
        refs_of = torch.arange(len(refs), device=col_idx.device)[None, :].expand_as(col_idx)
        found.append(torch.stack([col_idx[keep], refs_of[keep]], 1))
    if not found:
        return np.zeros((0, 2), np.int64)
    return np.unique(torch.cat(found).cpu().numpy().astype(np.int64), axis=0)


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
        return np.zeros((0, 2), np.int64)
    picked = np.unique(np.concatenate(chosen))
    picked = picked[np.isfinite(sim[picked])]
    return pool[picked]


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
