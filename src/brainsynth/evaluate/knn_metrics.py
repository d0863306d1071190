"""Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et al. 2020) from k-NN balls.

Precision/recall use k = 3, density/coverage k = 5. For real images the ball of an image reaches its
k-th nearest image of ANOTHER subject: adjacent slices of one subject are near-duplicates (98.6% of
a demo slice's nearest neighbours were), which shrinks the balls to nothing and makes every set look
imprecise.

Distances are Euclidean, from float32 matrix products (``torch.cdist``), and computed in blocks: of
rows for the real set's k-NN radii, of real columns for the fake-vs-real comparisons, each block at
most :data:`COLUMN_BLOCK_BYTES`. float32 is the features' own precision (fc7 is computed in bf16
and stored as float32); float64 products, as before, cost twice the time for digits the features
do not have (24 of the fidelity stage's 150 CPU s on the 120-subject benchmark fold, growing with
slices^2).
Memory therefore holds one block, never the N x N matrix (at ADHD-200's ~58,000 training slices a
fold that matrix alone would be 27 GB); the time still grows with N^2 D, the cost of exact k-NN in
4,096 dimensions. A set that fits in one block is the computation of earlier versions, call for call.
"""

from __future__ import annotations

import numpy as np
import torch

from brainsynth.progress import bar

PR_K = 3
DC_K = 5
_DIST_CHUNK = 1024
COLUMN_BLOCK_BYTES = 64 << 20  # float32 reference rows (and distance rows) held at once


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] (float32), computed in row chunks (for small sets and tests)."""
    return np.concatenate([block for _, block in _distance_blocks(a, b)], axis=1) if len(b) else \
        np.zeros((len(a), 0))


def _distance_blocks(a: np.ndarray, b: np.ndarray):
    """Yield ``(lo, d)``: float32 Euclidean distances [len(a), hi - lo] of ``a`` to ``b[lo:hi]``.

    ``b`` is read a block of columns at a time (at most :data:`COLUMN_BLOCK_BYTES` of float32 rows), ``a`` in
    row chunks; a ``b`` that fits in one block gives exactly the distances of one ``torch.cdist`` call.
    """
    ta = torch.from_numpy(np.asarray(a, dtype=np.float32))
    cols = max(1, COLUMN_BLOCK_BYTES // (4 * max(1, np.shape(b)[1])))
    for lo in range(0, len(b), cols):
        tb = torch.from_numpy(np.asarray(b[lo:lo + cols], dtype=np.float32))
        yield lo, torch.cat([torch.cdist(ta[i:i + _DIST_CHUNK], tb) for i in range(0, len(ta), _DIST_CHUNK)]).numpy()


def knn_radii(points: np.ndarray, k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Distance of each point [N, D] to its k-th nearest OTHER point of the same set [N].

    Parameters
    ----------
    groups : array [N], optional
        Subject of each point: a point's neighbours are then only points of other subjects
        (slices of one subject are near-duplicates of each other).
    """
    return knn_radii_many(points, (k,), groups)[k]


def knn_radii_many(points: np.ndarray, ks: tuple[int, ...],
                   groups: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """:func:`knn_radii` for several k from one pass over the distances.

    Rows are processed in blocks, each against every point, so memory holds one block of rows
    (not the N x N matrix); each row keeps its k smallest distances, exactly as a partition of the
    whole row would.
    """
    if len(points) <= max(ks):
        raise ValueError(f"need more than k={max(ks)} points, got {len(points)}")
    groups = None if groups is None else np.asarray(groups)
    if groups is not None:
        counts = np.unique(groups, return_counts=True)[1]
        if len(groups) - counts.max() < max(ks):  # points of the largest subject have the fewest others
            raise ValueError(f"a point has fewer than k={max(ks)} points of other subjects")
    rows = max(1, COLUMN_BLOCK_BYTES // (4 * len(points)))
    out = {k: np.empty(len(points), dtype=np.float32) for k in ks}
    with bar(len(points), "fidelity: k-NN radii of the real images") as step:
        for lo in range(0, len(points), rows):
            block = np.asarray(points[lo:lo + rows])
            for k, radius in _radii_block(block, points, ks, None if groups is None else groups[lo:lo + rows],
                                          groups).items():
                out[k][lo:lo + len(block)] = radius
            step(len(block))
    return out


def _radii_block(block: np.ndarray, points: np.ndarray, ks: tuple[int, ...], block_groups: np.ndarray | None,
                 groups: np.ndarray | None) -> dict[int, np.ndarray]:
    """k -> the k-NN radius of each row of ``block`` among ``points`` (of other subjects, with groups)."""
    d = np.concatenate([part for _, part in _distance_blocks(block, points)], axis=1)  # [B, N]
    if groups is None:
        # Column 0 of each sorted row is the point itself (distance 0).
        part = np.partition(d, sorted(set(ks)), axis=1)
        return {k: part[:, k] for k in ks}
    d[block_groups[:, None] == groups[None, :]] = np.inf  # the diagonal included
    part = np.partition(d, sorted({k - 1 for k in ks}), axis=1)
    return {k: part[:, k - 1] for k in ks}


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K, *, real_groups: np.ndarray | None = None,
                     fake_groups: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    precision: share of fake points inside at least one real k-NN ball;
    recall: share of real points inside at least one fake k-NN ball.
    ``real_groups`` / ``fake_groups`` [N] / [M]: subjects, for balls over other subjects only
    (:func:`knn_radii`).
    """
    # One k for both ball sets: a small real set needs only k + 1 points (of other subjects).
    numbers = prdc(real, fake, pr_k=k, dc_k=k, real_groups=real_groups, fake_groups=fake_groups)
    return numbers["precision"], numbers["recall"]


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DC_K, *,
                     real_groups: np.ndarray | None = None) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), both from real k-NN balls.

    density: mean number of real balls holding a fake point, divided by k (1 ~ same distribution);
    coverage: share of real balls holding at least one fake point. ``real_groups`` [N]: subjects,
    for balls over other subjects only (:func:`knn_radii`).
    """
    numbers = prdc(real, fake, pr_k=k, dc_k=k, real_groups=real_groups)
    return numbers["density"], numbers["coverage"]


def prdc(real: np.ndarray, fake: np.ndarray, *, pr_k: int = PR_K, dc_k: int = DC_K,
         real_radii: dict[int, np.ndarray] | None = None, real_groups: np.ndarray | None = None,
         fake_groups: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall (k = ``pr_k``), density and coverage (k = ``dc_k``), each distance once.

    ``real_radii`` (from :func:`knn_radii_many` of ``real``, with the same ``real_groups``) lets
    several fake sets share the real set's N x N distances. ``real_groups`` / ``fake_groups``
    [N] / [M]: subjects, for balls over other subjects only (:func:`knn_radii`).
    """
    if real_radii is None or pr_k not in real_radii or dc_k not in real_radii:
        real_radii = knn_radii_many(real, (pr_k, dc_k), real_groups)
    r_fake = knn_radii(fake, pr_k, fake_groups)  # [M]
    r_pr, r_dc = real_radii[pr_k], real_radii[dc_k]  # [N] each
    # Blocks of real columns: every number is a sum or an any() over them.
    precise = np.zeros(len(fake), dtype=bool)  # [M] inside some real k-NN ball
    recalled, covered = np.zeros(len(real), dtype=bool), np.zeros(len(real), dtype=bool)  # [N]
    inside = 0
    for lo, d in _distance_blocks(fake, real):  # d [M, Nb]
        hi = lo + d.shape[1]
        precise |= (d <= r_pr[None, lo:hi]).any(axis=1)
        recalled[lo:hi] = (d <= r_fake[:, None]).any(axis=0)
        inside += int((d <= r_dc[None, lo:hi]).sum())
        covered[lo:hi] = d.min(axis=0) <= r_dc[lo:hi]
    return {
        "precision": float(np.mean(precise)),
        "recall": float(np.mean(recalled)),
        "density": float(inside / (dc_k * len(fake))),
        "coverage": float(np.mean(covered)),
    }
