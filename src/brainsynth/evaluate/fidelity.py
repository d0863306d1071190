"""Fidelity and diversity of a synthetic set against real images.

Feature-based (on the extractor's features, see :mod:`brainsynth.evaluate.features`):

- FID (Heusel et al. 2017): ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, written here as small pure stages
  (features -> centred features or covariances -> number). torchmetrics' FID takes a general
  eigendecomposition of the D x D product, which for fc7 (D = 4096) costs minutes on a CPU. With
  fewer images than dimensions the same trace comes exactly from the singular values of the
  n1 x n2 cross-product of the centred feature matrices, which is what :func:`fid` uses then.
- KID (Binkowski et al. 2018): torchmetrics' estimator and subset draws (tested equal to its
  ``KernelInceptionDistance``), with the kernel matrices computed once instead of once per subset
  (30 s -> ~2 s for fc7) while the sets are small, and from each subset's own rows when the
  whole matrices would cost more (a large real set). Subsets hold half the smaller set (at most
  1000 images): a subset as large as a set would be that whole set every time, and the spread
  over subsets would be 0.
- Precision/recall (k = 3) and density/coverage (k = 5) from k-nearest-neighbour balls, in
  :mod:`brainsynth.evaluate.knn_metrics` (re-exported here).

Pixel-based, in :mod:`brainsynth.evaluate.image_fidelity` (re-exported here): SWD on Laplacian
pyramids (Karras et al. 2018) and MS-SSIM diversity (Wang et al. 2003; Odena et al. 2017).

No function here holds an N x N matrix or a float64 copy of a whole large feature set: feature
rows are read :data:`ROW_BLOCK` at a time (a set of one block is the earlier computation).

:func:`fidelity_reports` evaluates several synthetic sets against one real set and computes the
real side (pyramid, MS-SSIM pairs, k-NN radii, SWD's sorted projections) once; each set gets
the numbers :func:`fidelity_report` gives it alone. How each metric grows with the number of
images and the image size is in ``benchmarks/README.md``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from brainsynth.evaluate.knn_metrics import (  # noqa: F401  (re-exported: the metrics' one namespace)
    DC_K,
    PR_K,
    density_coverage,
    knn_radii,
    knn_radii_many,
    prdc,
    precision_recall,
)
from brainsynth.evaluate.image_fidelity import (  # noqa: F401  (re-exported: the metrics' one namespace)
    MS_SSIM_BETAS,
    MS_SSIM_PAIRS,
    SWD_SCALE,
    _pyr_up,
    laplacian_pyramid,
    ms_ssim_diversity,
    ms_ssim_settings,
    patch_descriptors,
    sliced_wasserstein,
    swd,
    swd_from_pyramids,
    swd_many,
)

log = logging.getLogger("brainsynth.evaluate.fidelity")

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
KID_WHOLE_BYTES = 128 << 20  # whole-set kernel matrices (float64) up to this size; larger sets: per-subset kernels
IMAGE_BLOCK = 4096  # images read at once by the background numbers (whole sets up to this size)
ROW_BLOCK = 2048  # feature rows converted to float64 at once (64 MB at fc7's 4096 dimensions)


# --- FID --------------------------------------------------------------------------------

def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased covariance [D, D] (float64) of features [N, D]."""
    f = np.asarray(features, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """FID from two Gaussians' statistics, via symmetric eigendecompositions.

    ``Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2))``; the right side is symmetric PSD, so
    ``eigh`` is stable and negative round-off eigenvalues are clipped to 0.
    """
    w1, v1 = np.linalg.eigh(cov1)
    root1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T  # [D, D]
    inner = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    tr_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def _fid_low_rank(real: np.ndarray, fake: np.ndarray) -> float:
    """FID when there are fewer images than dimensions.

    With centred matrices A [n1, D], B [n2, D], S1 = A'A/(n1-1) and S2 = B'B/(n2-1); the nonzero
    eigenvalues of S1 S2 are the squared singular values of M = A B' / sqrt((n1-1)(n2-1)).
    Their square roots are taken from the symmetric eigenvalues of the smaller of M M' and
    M' M (6x faster than the SVD of M at fc7 scale); eigenvalues below the round-off level of
    the largest one are zero singular values, clipped so their noise does not add up.

    The larger set is read a block of :data:`ROW_BLOCK` rows at a time (float64 copies of whole
    feature sets would need 32 kB per image); a set of at most one block is the same computation.
    """
    if len(real) < len(fake):
        real, fake = fake, real  # FID is symmetric: A is the larger set, read in blocks
    b = np.asarray(fake, dtype=np.float64)
    mu_b = b.mean(axis=0)
    b = b - mu_b  # [n2, D]
    mu_a = _mean_rows(real)
    na, nb = len(real) - 1, len(b) - 1
    if len(real) <= ROW_BLOCK:
        a = np.asarray(real, dtype=np.float64) - mu_a  # [n1, D]
        cross = a @ b.T  # [n1, n2]
        gram = cross.T @ cross  # [n2, n2]
        ss_a = np.sum(a * a)
    else:
        gram, ss_a = np.zeros((len(b), len(b))), 0.0
        for lo in range(0, len(real), ROW_BLOCK):
            a = np.asarray(real[lo:lo + ROW_BLOCK], dtype=np.float64) - mu_a  # [B, D]
            cross = a @ b.T  # [B, n2]
            gram += cross.T @ cross
            ss_a += float(np.sum(a * a))
    eig = np.linalg.eigvalsh(gram)
    noise = max(eig.max(initial=0.0), 0.0) * len(eig) * np.finfo(np.float64).eps
    tr_sqrt = np.sqrt(np.where(eig > noise, eig, 0.0)).sum() / math.sqrt(na * nb)
    return float(np.sum((mu_a - mu_b) ** 2) + ss_a / na + np.sum(b * b) / nb - 2.0 * tr_sqrt)


def _mean_rows(x: np.ndarray) -> np.ndarray:
    """Mean row (float64) of [N, D], read a block of rows at a time."""
    if len(x) <= ROW_BLOCK:
        return np.asarray(x, dtype=np.float64).mean(axis=0)
    total = np.zeros(x.shape[1])
    for lo in range(0, len(x), ROW_BLOCK):
        total += np.asarray(x[lo:lo + ROW_BLOCK], dtype=np.float64).sum(axis=0)
    return total / len(x)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between two feature sets [N1, D], [N2, D] (each N >= 2)."""
    if min(len(real), len(fake)) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    if min(len(real), len(fake)) < real.shape[1]:
        return _fid_low_rank(real, fake)
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


# --- KID --------------------------------------------------------------------------------

def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's cubic kernel ``(x.y / D + 1)^3`` [len(x), len(y)]: float64, the products in the inputs' dtype."""
    return ((x @ y.T).double() / x.shape[1] + 1.0) ** 3


def _unbiased_mmd2(k_xx: torch.Tensor, k_xy: torch.Tensor, k_yy: torch.Tensor, wx: torch.Tensor,
                   wy: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of the subsets marked by 0/1 masks wx [N1], wy [N2] (m members each).

    Quadratic forms with the masks sum the subset blocks of the full kernel matrices without
    copying them out (10x faster than fancy indexing at fc7 scale).
    """
    m = wx.sum()
    within = (wx @ k_xx @ wx - wx @ k_xx.diagonal() + wy @ k_yy @ wy - wy @ k_yy.diagonal()) / (m * (m - 1))
    return within - 2.0 * (wx @ k_xy @ wy) / m**2


def _mask(index: torch.Tensor, n: int) -> torch.Tensor:
    w = torch.zeros(n, dtype=torch.float64)
    w[index] = 1.0
    return w


def kid_subset_size(n_real: int, n_fake: int) -> int:
    """Images per KID subset: half the smaller set, at most 1000, so each subset is a real subsample."""
    return min(KID_MAX_SUBSET, min(n_real, n_fake) // 2)


def kid(real: np.ndarray, fake: np.ndarray, *, subsets: int = KID_SUBSETS, seed: int = 0,
        subset_size: int | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over random subsets) of feature sets [N1, D], [N2, D].

    The same estimator and the same subset draws as torchmetrics' ``KernelInceptionDistance``
    (tested equal). When the whole sets are small, the kernel matrices are computed once and
    each subset indexes into them, instead of 3 x ``subsets`` fresh D-dimensional products; when
    that would cost more than the subsets' own kernels (a large real set against subsets of a
    few hundred images) or the whole matrices would exceed :data:`KID_WHOLE_BYTES`, each subset's
    kernels are computed from its own rows, so neither time nor memory grows with the larger set
    beyond the draw itself.
    Subsets hold ``subset_size`` images each, by default :func:`kid_subset_size`.

    Note: two *identical* sets give a negative value (the self-pairs k(x, x) enter the cross
    term only), so "no difference" reads as ~0 only for independent samples.
    """
    n1, n2 = len(real), len(fake)
    m = kid_subset_size(n1, n2) if subset_size is None else min(subset_size, n1, n2)
    if m < 2:
        raise ValueError("KID needs at least 2 images in each set")
    entries = n1 * n1 + n2 * n2 + n1 * n2
    whole = entries <= 3 * subsets * m * m and 8 * entries <= KID_WHOLE_BYTES
    if whole:
        x = torch.from_numpy(np.asarray(real, dtype=np.float64))  # [N1, D]
        y = torch.from_numpy(np.asarray(fake, dtype=np.float64))  # [N2, D]
        k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    scores = []
    # torchmetrics draws the subsets from the global RNG: fork it so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(subsets):
            i = torch.randperm(n1)[:m]
            j = torch.randperm(n2)[:m]
            if whole:
                scores.append(_unbiased_mmd2(k_xx, k_xy, k_yy, _mask(i, n1), _mask(j, n2)))
            else:
                scores.append(_subset_mmd2(np.asarray(real[i.numpy()], dtype=np.float32),
                                           np.asarray(fake[j.numpy()], dtype=np.float32)))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


def _subset_mmd2(xs: np.ndarray, ys: np.ndarray) -> torch.Tensor:
    """Unbiased MMD^2 of two subsets of m images each, from their own kernels (``_unbiased_mmd2`` of them).

    The dot products are float32 matrix products (twice as fast as float64, and this path's 3 x 100
    products of up to 1,000 x 1,000 x 4,096 are the fidelity stage's largest fixed cost); the kernel
    and the sums are float64. A dot product of 4,096 float32 terms is exact to about 1e-6 of its size,
    far below the spread of KID over subsets.
    """
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)  # float32: the products are float32, the kernel float64
    ones = torch.ones(len(x), dtype=torch.float64)
    return _unbiased_mmd2(_poly_kernel(x, x), _poly_kernel(x, y), _poly_kernel(y, y), ones, ones)


# --- all of it ----------------------------------------------------------------------------

def fidelity_report(real_images: np.ndarray, real_labels: np.ndarray, real_features: np.ndarray,
                    synth_images: np.ndarray, synth_labels: np.ndarray, synth_features: np.ndarray, *,
                    labels: tuple[str, ...], seed: int = 0, ms_ssim_pairs: int = MS_SSIM_PAIRS,
                    real_subjects: np.ndarray | None = None,
                    synth_subjects: np.ndarray | None = None) -> dict[str, Any]:
    """Every fidelity number of one synthetic set against the real (train) set.

    Parameters
    ----------
    real_images, synth_images : float [N, H, W] in [0, 1]
    real_labels, synth_labels : str [N]
    real_features, synth_features : float [N, D]
    labels : tuple of str
        Class names in report order.
    ms_ssim_pairs : int
        Random pairs per class and set for MS-SSIM.
    real_subjects, synth_subjects : array [N], optional
        Subject of each image, for k-NN balls over other subjects only (:func:`knn_radii`);
        ``synth_subjects`` when the compared set is real too (the ``real-test`` reference).

    Returns
    -------
    dict
        ``fid``, ``kid_mean``, ``kid_std``, ``swd``, ``swd_per_class``, ``ms_ssim``,
        ``precision``, ``recall``, ``density``, ``coverage``, ``background`` and
        ``background_real`` (the report.json block).
    """
    return fidelity_reports(real_images, real_labels, real_features,
                            {"synthetic": (synth_images, synth_labels, synth_features)},
                            labels=labels, seed=seed, ms_ssim_pairs=ms_ssim_pairs, real_subjects=real_subjects,
                            synth_subjects=None if synth_subjects is None else {"synthetic": synth_subjects}
                            )["synthetic"]


def fidelity_reports(real_images: np.ndarray, real_labels: np.ndarray, real_features: np.ndarray,
                     synthetic: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                     labels: tuple[str, ...], seed: int = 0, ms_ssim_pairs: int = MS_SSIM_PAIRS,
                     real_subjects: np.ndarray | None = None,
                     synth_subjects: Mapping[str, np.ndarray] | None = None) -> dict[str, dict[str, Any]]:
    """:func:`fidelity_report` of several synthetic sets, name -> (images, labels, features).

    ``real_subjects`` [N] and ``synth_subjects`` (name -> [M], for sets of real images) as in
    :func:`fidelity_report`.

    The real side (Laplacian pyramid, MS-SSIM of real pairs, k-NN radii, SWD's sorted
    projections) is computed once for all sets; each set's numbers equal those it gets alone.

    numpy's BLAS runs on one thread here: its small calls (the eigenvalues of a 700 x 700 Gram,
    the 49-wide SWD projections) ran up to 30x slower on 2 threads of a busy 2-core machine,
    while SWD's sorting, the bulk, runs on its own threads and KID/k-NN on torch's.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _fidelity_reports(real_images, real_labels, real_features, synthetic, labels=labels, seed=seed,
                                 ms_ssim_pairs=ms_ssim_pairs, real_subjects=real_subjects,
                                 synth_subjects=synth_subjects)


def _fidelity_reports(real_images: np.ndarray, real_labels: np.ndarray, real_features: np.ndarray,
                      synthetic: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *,
                      labels: tuple[str, ...], seed: int, ms_ssim_pairs: int, real_subjects: np.ndarray | None,
                      synth_subjects: Mapping[str, np.ndarray] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, (_, _, feats) in synthetic.items():
        out[name] = {"fid": fid(real_features, feats)}
        out[name]["kid_mean"], out[name]["kid_std"] = kid(real_features, feats, seed=seed)
    pyr_real = laplacian_pyramid(real_images)
    pyr_synth = {name: laplacian_pyramid(images) for name, (images, _, _) in synthetic.items()}
    for name, numbers in swd_many(pyr_real, pyr_synth, seed=seed).items():
        out[name]["swd"] = numbers
        out[name]["swd_per_class"] = {}
    for lbl in labels:
        per_class = swd_many([lvl[real_labels == lbl] for lvl in pyr_real],
                             {name: [lvl[synthetic[name][1] == lbl] for lvl in pyr]
                              for name, pyr in pyr_synth.items()}, seed=seed)
        for name, numbers in per_class.items():
            out[name]["swd_per_class"][lbl] = numbers
    real_ms = {lbl: ms_ssim_diversity(real_images[real_labels == lbl], n_pairs=ms_ssim_pairs, seed=seed)[0]
               for lbl in labels}
    radii = knn_radii_many(real_features, (PR_K, DC_K), real_subjects)
    # One background mask, from the real images, for every set (synthetic images have no brain mask).
    mask = background_mask(real_images)
    real_background = background_intensity(real_images, mask)
    for name, (images, image_labels, feats) in synthetic.items():
        ms: dict[str, Any] = {"scales": 0, "synthetic": {}, "real": dict(real_ms)}
        for lbl in labels:
            ms["synthetic"][lbl], ms["scales"] = ms_ssim_diversity(images[image_labels == lbl],
                                                                   n_pairs=ms_ssim_pairs, seed=seed)
        out[name]["ms_ssim"] = ms
        out[name]["background"] = background_intensity(images, mask)
        out[name]["background_real"] = real_background
        out[name].update(prdc(real_features, feats, real_radii=radii, real_groups=real_subjects,
                              fake_groups=(synth_subjects or {}).get(name)))
    return out


# --- background -------------------------------------------------------------------------

BACKGROUND_LEVEL = 0.02
"""Intensity in [0, 1] above which a real pixel is brain (prepare's brain-mask level, see
:data:`brainsynth.data.volume.BACKGROUND_LEVEL`: prepared slices map the brain's 0.5th
intensity percentile to 0, so their background is 0)."""

BACKGROUND_MAX_SHARE = 0.01
"""A pixel is background when at most this share of the real images are brain there."""


def _unit_range(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32, copy=False)


def background_mask(real: np.ndarray, level: float = BACKGROUND_LEVEL,
                    max_share: float = BACKGROUND_MAX_SHARE) -> np.ndarray:
    """bool ``[H, W]``: the pixels outside the brain in (almost) every real image.

    The synthetic images have no brain mask of their own, so one mask, from the REAL images,
    serves both sets: a pixel is background when no more than ``max_share`` of the real
    images exceed ``level`` there (the share forgives a few outlying slices). It is the
    complement of the union of the real slices' brains.

    Parameters
    ----------
    real : array ``[N, H, W]``
        Real images, float in [0, 1] or uint8.
    level : float
        Brain threshold in [0, 1].
    max_share : float
        Share of real images allowed above ``level`` at a background pixel.
    """
    if len(real) <= IMAGE_BLOCK:
        brain = _unit_range(real) > level  # [N, H, W]
        return brain.mean(axis=0) <= max_share  # [H, W]
    count = np.zeros(real.shape[1:], dtype=np.int64)
    for lo in range(0, len(real), IMAGE_BLOCK):
        count += (_unit_range(real[lo:lo + IMAGE_BLOCK]) > level).sum(axis=0)
    return count / len(real) <= max_share  # [H, W]


def background_intensity(images: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean intensity (in [0, 1]) of ``images [N, H, W]`` over the pixels of ``mask [H, W]``.

    None (with a warning) when the mask is empty: the brain reaches every pixel somewhere.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        log.warning("no background pixel: the real brains cover the whole image, so no background intensity")
        return None
    if len(images) <= IMAGE_BLOCK:
        return float(_unit_range(images)[:, mask].mean())
    total = sum(float(_unit_range(images[lo:lo + IMAGE_BLOCK])[:, mask].sum(dtype=np.float64))
                for lo in range(0, len(images), IMAGE_BLOCK))
    return total / (len(images) * int(mask.sum()))


def background_fidelity(real: np.ndarray, synthetic: np.ndarray) -> dict[str, float | None]:
    """Mean background intensity of the synthetic images beside the real ones (issue 13's target).

    A generator that draws the real slices' clean black background has ``difference``
    (synthetic - real) near 0; a grey, smudged background makes it positive.

    Returns
    -------
    dict
        ``synthetic``, ``real`` (mean intensities in [0, 1] outside the brain, the mask of
        :func:`background_mask` from ``real``), ``difference`` and ``mask_fraction`` (the
        share of pixels in the mask).
    """
    mask = background_mask(real)
    values = {"synthetic": background_intensity(synthetic, mask), "real": background_intensity(real, mask)}
    diff = None if values["synthetic"] is None else values["synthetic"] - values["real"]
    return {**values, "difference": diff, "mask_fraction": float(mask.mean())}
