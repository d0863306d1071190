"""Fidelity and diversity of a synthetic set against real images.

Feature-based (on the extractor's features, see :mod:`brainsynth.evaluate.features`):

- FID (Heusel et al. 2017): ``||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))``, written here as small pure stages
  (features -> centred features or covariances -> number). torchmetrics' FID takes a general
  eigendecomposition of the D x D product, which for fc7 (D = 4096) costs minutes on a CPU. With
  fewer images than dimensions the same trace comes exactly from the singular values of the
  n1 x n2 cross-product of the centred feature matrices, which is what :func:`fid` uses then.
- KID (Binkowski et al. 2018): torchmetrics' estimator and subset draws (tested equal to its
  ``KernelInceptionDistance``), with the kernel matrices computed once instead of once per subset
  (30 s -> ~2 s for fc7). Subsets hold half the smaller set (at most 1000 images): a subset as
  large as a set would be that whole set every time, and the spread over subsets would be 0.
- Precision/recall (Kynkaanniemi et al. 2019, k = 3) and density/coverage (Naeem et al. 2020,
  k = 5) from k-nearest-neighbour balls. For real images the ball of an image reaches its k-th
  nearest image of ANOTHER subject: adjacent slices of one subject are near-duplicates (98.6% of
  a demo slice's nearest neighbours were), which shrinks the balls to nothing and makes every
  set look imprecise.

Pixel-based:

- SWD, the progressive-GAN protocol (Karras et al. 2018): Laplacian pyramid (5x5 binomial filter) from full
  resolution down to 16 px, 128 random 7x7 patches per image and level, each set's descriptors
  normalised by its own mean/std, sliced Wasserstein distance with 4 x 128 random directions,
  reported x1e3 per level and averaged.
- MS-SSIM (Wang et al. 2003) between random pairs of images of one class, the diversity measure
  of Odena et al. 2017 (lower = more diverse). The standard
  five scales with an 11 px window need images of 176 px or more; smaller images use a 7 px
  window and as many scales as fit (4 at 64 px), with the standard betas truncated and
  renormalised. The number of scales is reported beside the values.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("brainsynth.evaluate.fidelity")

KID_SUBSETS = 100
KID_MAX_SUBSET = 1000
PR_K = 3
DC_K = 5
SWD_MIN_RES = 16
SWD_PATCH = 7
SWD_PATCHES_PER_IMAGE = 128
SWD_REPEATS = 4
SWD_DIRECTIONS = 128
SWD_SCALE = 1e3
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_SIGMA = 1.5
MS_SSIM_KERNELS = (11, 7)
MS_SSIM_PAIRS = 250
_DIST_CHUNK = 1024


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
    eigenvalues of S1 S2 are the squared singular values of A B' / sqrt((n1-1)(n2-1)).
    """
    a = np.asarray(real, dtype=np.float64)
    b = np.asarray(fake, dtype=np.float64)
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    a = a - mu_a  # [n1, D]
    b = b - mu_b  # [n2, D]
    na, nb = len(a) - 1, len(b) - 1
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / math.sqrt(na * nb)
    return float(np.sum((mu_a - mu_b) ** 2) + np.sum(a * a) / na + np.sum(b * b) / nb - 2.0 * tr_sqrt)


def fid(real: np.ndarray, fake: np.ndarray) -> float:
    """Frechet distance between two feature sets [N1, D], [N2, D] (each N >= 2)."""
    if min(len(real), len(fake)) < 2:
        raise ValueError("FID needs at least 2 images in each set")
    if min(len(real), len(fake)) < real.shape[1]:
        return _fid_low_rank(real, fake)
    return frechet_distance(*feature_statistics(real), *feature_statistics(fake))


# --- KID --------------------------------------------------------------------------------

def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's cubic polynomial kernel ``(x.y / D + 1)^3`` [len(x), len(y)]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


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
    (tested equal), but the kernel matrices are computed once for the whole sets and each
    subset indexes into them, instead of 3 x ``subsets`` fresh D-dimensional products.
    Subsets hold ``subset_size`` images each, by default :func:`kid_subset_size`.

    Note: two *identical* sets give a negative value (the self-pairs k(x, x) enter the cross
    term only), so "no difference" reads as ~0 only for independent samples.
    """
    x = torch.from_numpy(np.asarray(real, dtype=np.float64))  # [N1, D]
    y = torch.from_numpy(np.asarray(fake, dtype=np.float64))  # [N2, D]
    m = kid_subset_size(len(x), len(y)) if subset_size is None else min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError("KID needs at least 2 images in each set")
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    scores = []
    # torchmetrics draws the subsets from the global RNG: fork it so the caller's stream is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(subsets):
            i = torch.randperm(len(x))[:m]
            j = torch.randperm(len(y))[:m]
            scores.append(_unbiased_mmd2(k_xx, k_xy, k_yy, _mask(i, len(x)), _mask(j, len(y))))
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False))


# --- precision / recall, density / coverage ---------------------------------------------

def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)] (float64), computed in row chunks."""
    ta = torch.from_numpy(np.asarray(a, dtype=np.float64))
    tb = torch.from_numpy(np.asarray(b, dtype=np.float64))
    return torch.cat([torch.cdist(ta[i:i + _DIST_CHUNK], tb) for i in range(0, len(ta), _DIST_CHUNK)]).numpy()


def knn_radii(points: np.ndarray, k: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Distance of each point [N, D] to its k-th nearest OTHER point of the same set [N].

    Parameters
    ----------
    groups : array [N], optional
        Subject of each point: a point's neighbours are then only points of other subjects
        (slices of one subject are near-duplicates of each other).
    """
    if len(points) <= k:
        raise ValueError(f"need more than k={k} points, got {len(points)}")
    d = _pairwise(points, points)  # [N, N]
    if groups is None:
        # Column 0 of each sorted row is the point itself (distance 0).
        return np.partition(d, k, axis=1)[:, k]
    groups = np.asarray(groups)
    same = groups[:, None] == groups[None, :]  # [N, N], the diagonal included
    if np.min(np.sum(~same, axis=1)) < k:
        raise ValueError(f"a point has fewer than k={k} points of other subjects")
    d[same] = np.inf
    return np.partition(d, k - 1, axis=1)[:, k - 1]


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = PR_K, *, real_groups: np.ndarray | None = None,
                     fake_groups: np.ndarray | None = None) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    precision: share of fake points inside at least one real k-NN ball;
    recall: share of real points inside at least one fake k-NN ball.
    ``real_groups`` / ``fake_groups`` [N] / [M]: subjects, for balls over other subjects only
    (:func:`knn_radii`).
    """
    r_real = knn_radii(real, k, real_groups)  # [N]
    r_fake = knn_radii(fake, k, fake_groups)  # [M]
    d = _pairwise(fake, real)  # [M, N]
    precision = float(np.mean((d <= r_real[None, :]).any(axis=1)))
    recall = float(np.mean((d <= r_fake[:, None]).any(axis=0)))
    return precision, recall


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = DC_K, *,
                     real_groups: np.ndarray | None = None) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020), both from real k-NN balls.

    density: mean number of real balls holding a fake point, divided by k (1 ~ same distribution);
    coverage: share of real balls holding at least one fake point. ``real_groups`` [N]: subjects,
    for balls over other subjects only (:func:`knn_radii`).
    """
    r_real = knn_radii(real, k, real_groups)  # [N]
    d = _pairwise(fake, real)  # [M, N]
    inside = d <= r_real[None, :]  # [M, N]
    density = float(inside.sum() / (k * len(fake)))
    coverage = float(np.mean(d.min(axis=0) <= r_real))
    return density, coverage


# --- SWD --------------------------------------------------------------------------------

def _binomial_kernel() -> torch.Tensor:
    row = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float32)
    return (torch.outer(row, row) / 256.0).view(1, 1, 5, 5)  # [1, 1, 5, 5], sums to 1


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """5x5 binomial filter with mirrored borders; x [N, 1, H, W]."""
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), (_binomial_kernel() * gain).to(x.dtype))


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]  # [N, 1, ceil(H/2), ceil(W/2)]


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    n, c, h, w = x.shape
    up = torch.zeros((n, c, 2 * h, 2 * w), dtype=x.dtype)
    up[:, :, ::2, ::2] = x
    # x4 restores the mean lost to the inserted zeros.
    return _blur(up, gain=4.0)[:, :, : size[0], : size[1]]  # [N, 1, H, W]


def laplacian_pyramid(images: np.ndarray, min_res: int = SWD_MIN_RES) -> list[np.ndarray]:
    """Laplacian pyramid of images [N, H, W], finest level first, halving while the shorter
    side stays >= ``min_res`` (64 px -> 64, 32, 16).

    Every level but the last holds the detail lost by halving; the last is the blurred
    low-resolution image itself.
    """
    # float32 halves the memory traffic; descriptors are normalised per set afterwards anyway.
    levels = [torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)]  # [N, 1, H, W]
    while min(levels[-1].shape[-2:]) // 2 >= min_res:
        levels.append(_pyr_down(levels[-1]))
        levels[-2] = levels[-2] - _pyr_up(levels[-1], tuple(levels[-2].shape[-2:]))
    return [lvl[:, 0].numpy() for lvl in levels]


def patch_descriptors(level: np.ndarray, rng: np.random.Generator, n_per_image: int = SWD_PATCHES_PER_IMAGE,
                      patch: int = SWD_PATCH) -> np.ndarray:
    """Random square patches of each image [N, h, w] -> descriptors [N * n_per_image, patch**2]."""
    n, h, w = level.shape
    half = patch // 2
    cy = rng.integers(half, h - half, size=(n, n_per_image))  # [N, P] patch centres
    cx = rng.integers(half, w - half, size=(n, n_per_image))
    off = np.arange(-half, half + 1)
    rows = cy[:, :, None, None] + off[None, None, :, None]  # [N, P, 7, 1]
    cols = cx[:, :, None, None] + off[None, None, None, :]  # [N, P, 1, 7]
    img = np.arange(n)[:, None, None, None]
    return level[img, rows, cols].reshape(n * n_per_image, patch * patch)


def _normalise(desc: np.ndarray) -> np.ndarray:
    # One channel: the mean/std "per channel over the set" is one number each.
    mean, std = float(desc.mean(dtype=np.float64)), float(desc.std(dtype=np.float64))
    return (desc - mean) / max(std, 1e-12)  # Python floats keep float32 descriptors float32


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, repeats: int = SWD_REPEATS,
                       directions: int = SWD_DIRECTIONS) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of projections.

    a, b: descriptors [n, D] with the same n.
    """
    dists = []
    for _ in range(repeats):
        dirs = rng.standard_normal((directions, a.shape[1]))  # [K, D]
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs = dirs.astype(a.dtype)
        # Projections laid out [K, n] so each sort runs over contiguous memory (2x faster).
        pa = np.sort(dirs @ a.T, axis=1)  # [K, n]
        pb = np.sort(dirs @ b.T, axis=1)
        dists.append(np.abs(pa - pb).mean(dtype=np.float64))
    return float(np.mean(dists))


def swd(real: np.ndarray, fake: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Sliced Wasserstein distance per pyramid level (x1e3), keyed by resolution, plus "avg".

    Parameters
    ----------
    real, fake : float [N, H, W] in [0, 1], same H, W (the sets may differ in size; the larger
        set's descriptors are subsampled so both sides have equally many).
    """
    return swd_from_pyramids(laplacian_pyramid(real), laplacian_pyramid(fake), seed=seed)


def swd_from_pyramids(real: list[np.ndarray], fake: list[np.ndarray], *, seed: int = 0) -> dict[str, float]:
    """:func:`swd` of two sets given as their Laplacian pyramids (to reuse them per class)."""
    # Both sides draw patch positions and subsamples from identically seeded streams (common
    # random numbers), so identical sets give exactly 0 and comparisons are less noisy.
    rng_real, rng_fake = np.random.default_rng(seed), np.random.default_rng(seed)
    rng_dirs = np.random.default_rng([seed, 1])
    result: dict[str, float] = {}
    for lvl_real, lvl_fake in zip(real, fake):
        da = _normalise(patch_descriptors(lvl_real, rng_real))  # [N1 * 128, 49]
        db = _normalise(patch_descriptors(lvl_fake, rng_fake))  # [N2 * 128, 49]
        n = min(len(da), len(db))
        da = da[np.sort(rng_real.permutation(len(da))[:n])]
        db = db[np.sort(rng_fake.permutation(len(db))[:n])]
        result[str(lvl_real.shape[-1])] = sliced_wasserstein(da, db, rng_dirs) * SWD_SCALE
    result["avg"] = float(np.mean(list(result.values())))
    return result


# --- MS-SSIM ----------------------------------------------------------------------------

def ms_ssim_settings(size: int) -> tuple[int, int]:
    """(scales, kernel_size) for square images of side ``size``.

    The most scales (at most 5) whose coarsest level still holds a whole window and that
    torchmetrics accepts; the standard 11 px window where it fits, else 7 px (smaller windows
    hold too few pixels for stable local statistics). 256 px: (5, 11); 64 px: (4, 7).
    """
    for scales in range(len(MS_SSIM_BETAS), 0, -1):
        for kernel in MS_SSIM_KERNELS:
            div = max(1, scales - 1) ** 2  # torchmetrics' own size check
            if size >= 2 ** scales and size // div > kernel - 1 and size // 2 ** (scales - 1) >= kernel:
                return scales, kernel
    raise ValueError(f"images of {size} px are too small for MS-SSIM")


def ms_ssim_diversity(images: np.ndarray, *, n_pairs: int = MS_SSIM_PAIRS, seed: int = 0) -> tuple[float, int]:
    """Mean MS-SSIM over random pairs of distinct images [N, H, W]; lower = more diverse.

    Returns
    -------
    (value, scales)
    """
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as ms_ssim

    if len(images) < 2:
        return float("nan"), 0
    scales, kernel = ms_ssim_settings(min(images.shape[-2:]))
    betas = np.array(MS_SSIM_BETAS[:scales])
    betas = tuple(float(b) for b in betas / betas.sum())
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(images), size=n_pairs)
    j = (i + rng.integers(1, len(images), size=n_pairs)) % len(images)  # never i itself
    x = torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)  # [N, 1, H, W]
    values = ms_ssim(x[i], x[j], data_range=1.0, kernel_size=kernel, sigma=MS_SSIM_SIGMA, betas=betas,
                     reduction="none")  # [P]
    return float(values.mean()), scales


# --- all of it for one synthetic set ----------------------------------------------------

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
        ``precision``, ``recall``, ``density``, ``coverage`` (the report.json block).
    """
    out: dict[str, Any] = {"fid": fid(real_features, synth_features)}
    out["kid_mean"], out["kid_std"] = kid(real_features, synth_features, seed=seed)
    pyr_real, pyr_synth = laplacian_pyramid(real_images), laplacian_pyramid(synth_images)
    out["swd"] = swd_from_pyramids(pyr_real, pyr_synth, seed=seed)
    out["swd_per_class"] = {
        lbl: swd_from_pyramids([lvl[real_labels == lbl] for lvl in pyr_real],
                               [lvl[synth_labels == lbl] for lvl in pyr_synth], seed=seed)
        for lbl in labels
    }
    ms: dict[str, Any] = {"scales": 0, "synthetic": {}, "real": {}}
    for lbl in labels:
        ms["synthetic"][lbl], ms["scales"] = ms_ssim_diversity(synth_images[synth_labels == lbl],
                                                               n_pairs=ms_ssim_pairs, seed=seed)
        ms["real"][lbl], _ = ms_ssim_diversity(real_images[real_labels == lbl], n_pairs=ms_ssim_pairs, seed=seed)
    out["ms_ssim"] = ms
    out["precision"], out["recall"] = precision_recall(real_features, synth_features, PR_K, real_groups=real_subjects,
                                                       fake_groups=synth_subjects)
    out["density"], out["coverage"] = density_coverage(real_features, synth_features, DC_K, real_groups=real_subjects)
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
    brain = _unit_range(real) > level  # [N, H, W]
    return brain.mean(axis=0) <= max_share  # [H, W]


def background_intensity(images: np.ndarray, mask: np.ndarray) -> float | None:
    """Mean intensity (in [0, 1]) of ``images [N, H, W]`` over the pixels of ``mask [H, W]``.

    None (with a warning) when the mask is empty: the brain reaches every pixel somewhere.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        log.warning("no background pixel: the real brains cover the whole image, so no background intensity")
        return None
    return float(_unit_range(images)[:, mask].mean())


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
