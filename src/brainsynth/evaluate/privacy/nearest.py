"""What the audit keeps of a query set's distances to the training images: a few numbers per image.

Every score of the audit reads, per query image (synthetic, held-out, or a training image scored
against the other training subjects), its nearest training image, the distance to it, and the
distance to the nearest training image of ANOTHER subject (:class:`Nearest`); membership reads,
per training or held-out image, its distance to the nearest synthetic image (a column minimum).
None of that needs the query x training matrix, which at ADHD-200's size (about 58,000 training
slices per fold) would not fit in memory. This module builds them from sparse candidate pairs
(the aligned pixel distance, :func:`from_pairs`) and from row blocks of a dense distance
(the feature distance, :func:`from_blocks`), so memory grows with the number of images, not with
their product.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
import torch


@dataclass
class Nearest:
    """Each query's nearest reference, and its nearest reference of another subject."""

    index: np.ndarray  # int64 [Nq] nearest reference (0 where the query had no candidate)
    distance: np.ndarray  # float32 [Nq] distance to it (inf: no candidate)
    other: np.ndarray  # float32 [Nq] distance to the nearest reference of another subject than index's (inf: none)

    def __len__(self) -> int:
        return len(self.index)

    @property
    def ratio(self) -> np.ndarray:
        """The nearest-neighbour distance ratio ``distance / other`` in [0, 1]; NaN where ``other`` is undefined.

        See :func:`brainsynth.evaluate.privacy.fold.distance_ratio` (the same numbers from a dense matrix).
        """
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(self.other > 0, self.distance / self.other, 1.0)  # 0 / 0: two identical people
        return np.where(np.isfinite(self.other), np.clip(ratio, 0.0, 1.0), np.nan)

    def take(self, rows: np.ndarray) -> Nearest:
        """The facts of some queries (bool mask or indices)."""
        return Nearest(self.index[rows], self.distance[rows], self.other[rows])


def from_dense(query_to_ref: np.ndarray, ref_groups: np.ndarray) -> Nearest:
    """:class:`Nearest` of a dense [Nq, Nr] matrix (``inf`` = no candidate); small cases and tests."""
    return from_blocks(lambda lo, hi: torch.from_numpy(np.asarray(query_to_ref[lo:hi], np.float32)),
                       len(query_to_ref), np.asarray(ref_groups), block_rows=len(query_to_ref) or 1)[0]


def from_pairs(n_queries: int, n_refs: int, pairs: np.ndarray, dist: np.ndarray,
               ref_groups: np.ndarray) -> tuple[Nearest, np.ndarray]:
    """:class:`Nearest` of sparse candidate pairs, and each reference's nearest query distance.

    Parameters
    ----------
    pairs : np.ndarray
        int [Np, 2] (query, reference); a pair that is not listed has distance ``inf``.
    dist : np.ndarray
        float [Np] the pairs' distances.
    ref_groups : np.ndarray
        int [Nr] subject of each reference.

    Returns
    -------
    nearest : Nearest
    ref_min : np.ndarray
        float32 [Nr], each reference's smallest distance to any query (``inf`` without a candidate).
    """
    qi, rj = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    dist = np.asarray(dist, dtype=np.float32)
    index = np.zeros(n_queries, np.int64)
    distance = np.full(n_queries, np.inf, np.float32)
    other = np.full(n_queries, np.inf, np.float32)
    ref_min = np.full(n_refs, np.inf, np.float32)
    if len(pairs):
        order = np.lexsort((rj, dist, qi))  # per query: smallest distance first, ties to the smaller index
        first = order[np.r_[True, qi[order][1:] != qi[order][:-1]]]
        index[qi[first]], distance[qi[first]] = rj[first], dist[first]
        elsewhere = ref_groups[rj] != ref_groups[index[qi]]  # [Np] pair's reference of another subject
        np.minimum.at(other, qi[elsewhere], dist[elsewhere])
        np.minimum.at(ref_min, rj, dist)
    return Nearest(index, distance, other), ref_min


def from_blocks(block: Callable[[int, int], torch.Tensor], n_queries: int, ref_groups: np.ndarray, *,
                query_groups: np.ndarray | None = None, block_rows: int = 1024) -> tuple[Nearest, np.ndarray]:
    """:class:`Nearest` of a dense distance computed one block of query rows at a time.

    Parameters
    ----------
    block : callable
        ``block(lo, hi)`` -> float tensor [hi - lo, Nr]: the distances of queries ``lo..hi``.
    ref_groups : np.ndarray
        int [Nr] subject of each reference.
    query_groups : np.ndarray, optional
        int [Nq] subject of each query: pairs of one subject are left out (a training image scored
        against the OTHER training subjects).

    Returns
    -------
    nearest : Nearest
    ref_min : np.ndarray
        float32 [Nr], each reference's smallest distance to any query.
    """
    index, distance, other, ref_min = [], [], [], None
    groups = None
    for lo, hi in row_blocks(n_queries, block_rows):
        d = block(lo, hi).float()  # [B, Nr]
        if groups is None:
            groups = torch.as_tensor(np.asarray(ref_groups, np.int64), device=d.device)
        if query_groups is not None:
            own = torch.as_tensor(np.asarray(query_groups[lo:hi], np.int64), device=d.device)
            d = d.masked_fill(own[:, None] == groups[None, :], float("inf"))
        nearest = d.argmin(dim=1)  # the first of equal minima, as numpy's argmin
        index.append(nearest)
        distance.append(d.gather(1, nearest[:, None])[:, 0])
        other.append(d.masked_fill(groups[None, :] == groups[nearest][:, None], float("inf")).amin(dim=1))
        column = d.amin(dim=0)
        ref_min = column if ref_min is None else torch.minimum(ref_min, column)
    if ref_min is None:
        empty = np.zeros(0, np.float32)
        return Nearest(np.zeros(0, np.int64), empty, empty), np.full(len(ref_groups), np.inf, np.float32)

    def joined(parts: Iterable[torch.Tensor], dtype) -> np.ndarray:
        return torch.cat(list(parts)).cpu().numpy().astype(dtype)

    return (Nearest(joined(index, np.int64), joined(distance, np.float32), joined(other, np.float32)),
            ref_min.cpu().numpy().astype(np.float32))


def row_blocks(n: int, rows: int) -> list[tuple[int, int]]:
    """``[(lo, hi), ...]`` covering ``0..n`` in blocks of ``rows``."""
    rows = max(1, int(rows))
    return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]


def rows_for(n_columns: int, bytes_per_cell: int, budget: int) -> int:
    """Rows of a block of ``n_columns`` cells of ``bytes_per_cell`` that fit in ``budget`` bytes (at least 1)."""
    return max(1, budget // max(1, n_columns * bytes_per_cell))
