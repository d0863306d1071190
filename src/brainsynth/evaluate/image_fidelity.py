"""Pixel-based fidelity: SWD on Laplacian pyramids and MS-SSIM diversity.

- SWD, the progressive-GAN protocol (Karras et al. 2018): Laplacian pyramid (5x5 binomial filter) from full
  resolution down to 16 px, 128 random 7x7 patches per image and level, each set's descriptors
  normalised by its own mean/std, sliced Wasserstein distance with 4 x 128 random directions,
  reported x1e3 per level and averaged.
- MS-SSIM (Wang et al. 2003) between random pairs of images of one class, the diversity measure
  of Odena et al. 2017 (lower = more diverse). The standard five scales need images of 176 px
  or more; smaller images use as many scales as fit (4 at 64 px), with the standard betas
  truncated and renormalised. The number of scales is reported beside the values.

Speed (figures in ``benchmarks/README.md``): SWD is almost all sorting, 2 x 4 x 128 sorts of
``128 x N`` projections per level. The sorts run in place on several threads, and
:func:`swd_many` compares several synthetic sets with one real set, sorting the real side
once. MS-SSIM computes torchmetrics' formula (``normalize="relu"``, a Gaussian of sigma 1.5
and 11 taps: torchmetrics derives the taps from sigma, the ``kernel_size`` it is given only
gates its size check) with the separable Gaussian as two small matrix products instead of an
11x11 single-channel convolution, 2-6x faster. Both give the same numbers as before, float
rounding aside (tests/evaluate/test_fidelity.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

SWD_MIN_RES = 16
SWD_PATCH = 7
SWD_PATCHES_PER_IMAGE = 128
SWD_REPEATS = 4
SWD_DIRECTIONS = 128
SWD_SCALE = 1e3
SWD_MAX_DESCRIPTORS = 1 << 17
"""Most descriptors per side of one level's comparison (1,024 images' worth). Only comparisons whose
sets both hold more images are subsampled further: the real-test reference from about 40 subjects up,
never the demo's. Sorting, SWD's whole cost, then stops growing with the cohort. The value of an
empirical W1 depends on the sample size (it is biased upward by about c / sqrt(n)): on the
120-subject benchmark fold the real-test reference scored 4.7 with all 465,920 descriptors, 6.6 at
this cap and 8.4 at half of it (seeds 0-2 spread +-0.4). Rows compared at different sizes, such as
the demo's real-test reference (364 slices a fold) beside 600-image synthetic sets, are therefore
not on one scale (docs/evidence.md, "Fidelity with a scale")."""
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_SIGMA = 1.5
MS_SSIM_KERNELS = (11, 7)
MS_SSIM_PAIRS = 250
MS_SSIM_K1, MS_SSIM_K2 = 0.01, 0.03
_SORT_ROWS = 16  # rows per sorting task: small enough to balance threads, large enough to amortise them
PYRAMID_BLOCK = 1024  # images filtered per convolution call (its workspace: 25 floats per pixel)
DESCRIPTOR_BLOCK = 1 << 22  # patch values gathered per call (bounds the broadcast index arrays)
DESCRIPTOR_BYTES = 64 << 20  # a set's descriptors of one level up to this size are gathered whole


# --- Laplacian pyramid and patches --------------------------------------------------------

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
    low-resolution image itself. Images are filtered :data:`PYRAMID_BLOCK` at a time: the 5x5
    convolution's workspace holds 25 values per pixel of its batch (400 kB per 64 px image), so
    one call on every image would grow with the set.
    """
    n, (h, w) = len(images), images.shape[-2:]
    shapes = [(h, w)]
    while min(shapes[-1]) // 2 >= min_res:
        shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))
    out = [np.empty((n, *shape), dtype=np.float32) for shape in shapes]
    for lo in range(0, n, PYRAMID_BLOCK):
        for level, values in enumerate(_pyramid_block(images[lo:lo + PYRAMID_BLOCK], len(shapes))):
            out[level][lo:lo + len(values)] = values
    return out


def _pyramid_block(images: np.ndarray, n_levels: int) -> list[np.ndarray]:
    # float32 halves the memory traffic; descriptors are normalised per set afterwards anyway.
    levels = [torch.from_numpy(np.asarray(images, dtype=np.float32)).unsqueeze(1)]  # [N, 1, H, W]
    while len(levels) < n_levels:
        levels.append(_pyr_down(levels[-1]))
        levels[-2] = levels[-2] - _pyr_up(levels[-1], tuple(levels[-2].shape[-2:]))
    return [lvl[:, 0].numpy() for lvl in levels]


def patch_centres(n: int, shape: tuple[int, int], rng: np.random.Generator, n_per_image: int = SWD_PATCHES_PER_IMAGE,
                  patch: int = SWD_PATCH) -> tuple[np.ndarray, np.ndarray]:
    """Random patch centres (rows, columns), int [N, n_per_image] each, inside images of ``shape``."""
    half = patch // 2
    cy = rng.integers(half, shape[0] - half, size=(n, n_per_image))  # [N, P] patch centres
    cx = rng.integers(half, shape[1] - half, size=(n, n_per_image))
    return cy, cx


def descriptors_at(level: np.ndarray, image: np.ndarray, cy: np.ndarray, cx: np.ndarray,
                   patch: int = SWD_PATCH) -> np.ndarray:
    """The square patches centred at (``cy``, ``cx``) of images ``image`` (int [K] each) -> [K, patch**2]."""
    half = patch // 2
    off = np.arange(-half, half + 1)
    out = np.empty((len(image), patch * patch), dtype=level.dtype)
    step = max(1, DESCRIPTOR_BLOCK // (patch * patch))  # bounds the broadcast index arrays
    for lo in range(0, len(image), step):
        rows = cy[lo:lo + step, None, None] + off[None, :, None]  # [k, 7, 1]
        cols = cx[lo:lo + step, None, None] + off[None, None, :]  # [k, 1, 7]
        out[lo:lo + step] = level[image[lo:lo + step, None, None], rows, cols].reshape(-1, patch * patch)
    return out


def patch_descriptors(level: np.ndarray, rng: np.random.Generator, n_per_image: int = SWD_PATCHES_PER_IMAGE,
                      patch: int = SWD_PATCH) -> np.ndarray:
    """Random square patches of each image [N, h, w] -> descriptors [N * n_per_image, patch**2]."""
    cy, cx = patch_centres(len(level), level.shape[-2:], rng, n_per_image, patch)
    image = np.repeat(np.arange(len(level)), n_per_image)
    return descriptors_at(level, image, cy.ravel(), cx.ravel(), patch)


class _LevelDescriptors:
    """One set's normalised descriptors of one pyramid level, drawn as :func:`patch_descriptors` draws them.

    Only the descriptors that a comparison keeps (a random subsample as large as the other set's,
    at most :data:`SWD_MAX_DESCRIPTORS`) are ever gathered; the normalisation's mean and SD, over
    every descriptor, are accumulated a block of images at a time. A level whose descriptors fit in
    :data:`DESCRIPTOR_BYTES` is gathered whole, the computation of earlier versions.
    """

    def __init__(self, level: np.ndarray, rng: np.random.Generator, patch: int = SWD_PATCH):
        self.level, self.patch = level, patch
        self.cy, self.cx = patch_centres(len(level), level.shape[-2:], rng, SWD_PATCHES_PER_IMAGE, patch)
        self.count = self.cy.size
        self.whole = None
        if self.count * patch * patch * 4 <= DESCRIPTOR_BYTES:
            self.whole = _normalise(descriptors_at(level, np.repeat(np.arange(len(level)), self.cy.shape[1]),
                                                   self.cy.ravel(), self.cx.ravel(), patch))
            return
        total, n = 0.0, self.count * patch * patch
        for block in self._blocks():
            total += float(block.sum(dtype=np.float64))
        self.mean = total / n
        squares = 0.0
        for block in self._blocks():
            squares += float(np.square(block - self.mean, dtype=np.float64).sum())
        self.std = max((squares / n) ** 0.5, 1e-12)

    def _blocks(self):
        per = self.cy.shape[1]
        images = max(1, DESCRIPTOR_BLOCK // (per * self.patch * self.patch))
        for lo in range(0, len(self.level), images):
            hi = min(lo + images, len(self.level))
            yield descriptors_at(self.level, np.repeat(np.arange(lo, hi), per), self.cy[lo:hi].ravel(),
                                 self.cx[lo:hi].ravel(), self.patch)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Normalised descriptors of the given rows (positions in image-major order), float32 [len(rows), patch**2]."""
        if self.whole is not None:
            return self.whole[rows]
        per = self.cy.shape[1]
        desc = descriptors_at(self.level, rows // per, self.cy.ravel()[rows], self.cx.ravel()[rows], self.patch)
        return (desc - self.mean) / self.std


def _normalise(desc: np.ndarray) -> np.ndarray:
    # One channel: the mean/std "per channel over the set" is one number each.
    mean, std = float(desc.mean(dtype=np.float64)), float(desc.std(dtype=np.float64))
    return (desc - mean) / max(std, 1e-12)  # Python floats keep float32 descriptors float32


# --- sliced Wasserstein -------------------------------------------------------------------

def _directions(rng: np.random.Generator, dim: int, dtype: np.dtype, n: int = SWD_DIRECTIONS) -> np.ndarray:
    """``n`` random unit directions [n, dim]."""
    dirs = rng.standard_normal((n, dim))  # [K, D]
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return dirs.astype(dtype)


def _parallel(task, starts: range) -> list:
    """``[task(i) for i in starts]`` on :func:`torch.get_num_threads` threads (numpy's sorts,
    matrix products and ufuncs release the GIL)."""
    threads = min(max(1, torch.get_num_threads()), len(starts))
    if threads == 1:
        return [task(i) for i in starts]
    return list(_executor(threads).map(task, starts))


@lru_cache(maxsize=4)
def _executor(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="brainsynth-swd")


def _sorted_projections(dirs: np.ndarray, desc: np.ndarray) -> np.ndarray:
    """Projections of descriptors [n, D] on directions [K, D], each row sorted: [K, n].

    Laid out [K, n] so each sort runs over contiguous memory (2x faster than sorting columns);
    blocks of rows are projected and sorted in parallel. Every row is sorted on its own, so the
    result does not depend on the number of threads.
    """
    out = np.empty((len(dirs), len(desc)), dtype=desc.dtype)  # [K, n]

    def task(i: int) -> None:
        block = out[i:i + _SORT_ROWS]  # [<=16, n], a view: written and sorted in place
        np.matmul(dirs[i:i + _SORT_ROWS], desc.T, out=block)
        block.sort(axis=1)

    _parallel(task, range(0, len(dirs), _SORT_ROWS))
    return out


def _w1_to(sorted_a: np.ndarray, dirs: np.ndarray, desc: np.ndarray) -> float:
    """Mean 1-D Wasserstein-1 distance between sorted projections [K, n] and those of ``desc`` [n, D].

    With equally many points on both sides, W1 of two 1-D samples is the mean absolute
    difference of their sorted values. ``desc``'s projections are never held whole: each block
    of rows is projected, sorted and compared in one task.
    """

    def task(i: int) -> float:
        block = dirs[i:i + _SORT_ROWS] @ desc.T  # [<=16, n]
        block.sort(axis=1)
        np.subtract(block, sorted_a[i:i + _SORT_ROWS], out=block)
        return float(np.abs(block, out=block).sum(dtype=np.float64))

    return float(np.sum(_parallel(task, range(0, len(dirs), _SORT_ROWS)))) / sorted_a.size


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, repeats: int = SWD_REPEATS,
                       directions: int = SWD_DIRECTIONS) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance of projections.

    a, b: descriptors [n, D] with the same n.
    """
    dists = []
    for _ in range(repeats):
        dirs = _directions(rng, a.shape[1], a.dtype, directions)  # [K, D]
        dists.append(_w1_to(_sorted_projections(dirs, a), dirs, b))
    return float(np.mean(dists))


def swd(real: np.ndarray, fake: np.ndarray, *, seed: int = 0, min_res: int = SWD_MIN_RES,
        patch: int = SWD_PATCH) -> dict[str, float]:
    """Sliced Wasserstein distance per pyramid level (x1e3), keyed by resolution, plus "avg".

    Parameters
    ----------
    real, fake : float [N, H, W] in [0, 1], same H, W (the sets may differ in size; the larger
        set's descriptors are subsampled so both sides have equally many).
    min_res, patch : int
        The coarsest pyramid level and the patch side (odd); the protocol's 16 and 7. Only
        images smaller than the protocol allows (a growing PGGAN's 4 and 8 px phases,
        :mod:`brainsynth.train.phases`) need others.
    """
    return swd_from_pyramids(laplacian_pyramid(real, min_res), laplacian_pyramid(fake, min_res), seed=seed,
                             patch=patch)


def swd_from_pyramids(real: list[np.ndarray], fake: list[np.ndarray], *, seed: int = 0,
                      patch: int = SWD_PATCH) -> dict[str, float]:
    """:func:`swd` of two sets given as their Laplacian pyramids (to reuse them per class)."""
    return swd_many(real, {"fake": fake}, seed=seed, patch=patch)["fake"]


def swd_many(real: list[np.ndarray], fakes: Mapping[str, list[np.ndarray]], *,
             seed: int = 0, patch: int = SWD_PATCH) -> dict[str, dict[str, float]]:
    """:func:`swd_from_pyramids` of one real pyramid against several fake ones.

    Each side gives ``min(real, fake, SWD_MAX_DESCRIPTORS)`` random descriptors. Every fake set gets
    exactly the number it would get alone: the same patch positions, subsamples and directions.
    The real side's sorted projections are shared by all fake sets that need the same number of
    descriptors (all of them when every fake set has at least as many images as the real one),
    which saves up to half of the sorting.
    """
    # Both sides draw patch positions and subsamples from identically seeded streams (common
    # random numbers), so identical sets give exactly 0 and comparisons are less noisy.
    rng_real = np.random.default_rng(seed)
    rng_fake = {name: np.random.default_rng(seed) for name in fakes}
    rng_dirs = np.random.default_rng([seed, 1])
    results: dict[str, dict[str, float]] = {name: {} for name in fakes}
    for level, lvl_real in enumerate(real):
        da = _LevelDescriptors(lvl_real, rng_real, patch)  # N1 * 128 descriptors of patch**2 values, gathered as needed
        fake_desc = {name: _LevelDescriptors(pyr[level], rng_fake[name], patch) for name, pyr in fakes.items()}
        real_order = rng_real.permutation(da.count)
        subsampled: dict[str, tuple[int, np.ndarray]] = {}
        for name, db in fake_desc.items():
            n = min(da.count, db.count, SWD_MAX_DESCRIPTORS)
            subsampled[name] = (n, db.take(np.sort(rng_fake[name].permutation(db.count)[:n])))  # [n, 49]
        all_dirs = [_directions(rng_dirs, patch * patch, lvl_real.dtype)
                    for _ in range(SWD_REPEATS)]  # [K, 49] each
        dists: dict[str, list[float]] = {name: [] for name in fakes}
        for n in sorted({n for n, _ in subsampled.values()}):
            a = da.take(np.sort(real_order[:n]))  # [n, 49]
            for dirs in all_dirs:
                pa = _sorted_projections(dirs, a)  # [K, n]
                for name, (m, b) in subsampled.items():
                    if m == n:
                        dists[name].append(_w1_to(pa, dirs, b))
        for name in fakes:
            results[name][str(lvl_real.shape[-1])] = float(np.mean(dists[name])) * SWD_SCALE
    for result in results.values():
        result["avg"] = float(np.mean(list(result.values())))
    return results


# --- MS-SSIM ------------------------------------------------------------------------------

def ms_ssim_settings(size: int) -> tuple[int, int]:
    """(scales, kernel_size) for square images of side ``size``.

    The most scales (at most 5) whose coarsest level still holds a whole window and that
    torchmetrics accepts; the standard 11 px window where it fits, else 7 px. 256 px: (5, 11);
    64 px: (4, 7). (The Gaussian itself always has 11 taps, see the module docstring; the
    kernel size only decides which sizes are accepted.)
    """
    for scales in range(len(MS_SSIM_BETAS), 0, -1):
        for kernel in MS_SSIM_KERNELS:
            div = max(1, scales - 1) ** 2  # torchmetrics' own size check
            if size >= 2 ** scales and size // div > kernel - 1 and size // 2 ** (scales - 1) >= kernel:
                return scales, kernel
    raise ValueError(f"images of {size} px are too small for MS-SSIM")


@lru_cache(maxsize=16)
def _gaussian_band(n_out: int, sigma: float = MS_SSIM_SIGMA) -> torch.Tensor:
    """[n_out + taps - 1, n_out]: a 'valid' 1-D Gaussian filter as a matrix (column j = output j)."""
    taps = int(3.5 * sigma + 0.5) * 2 + 1  # torchmetrics' Gaussian size for this sigma (11 at 1.5)
    dist = torch.arange((1 - taps) / 2, (1 + taps) / 2, 1.0)
    gauss = torch.exp(-((dist / sigma) ** 2) / 2)
    gauss = gauss / gauss.sum()
    band = torch.zeros(n_out + taps - 1, n_out)
    for j in range(n_out):
        band[j:j + taps, j] = gauss
    return band


def _gaussian_blur_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian, no padding: [M, Hp, Wp] -> [M, Hp - 10, Wp - 10] (11 taps)."""
    taps = _gaussian_band(1).shape[0]
    h, w = x.shape[-2] - taps + 1, x.shape[-1] - taps + 1
    rows = x @ _gaussian_band(w)  # [M, Hp, w]
    return _gaussian_band(h).T @ rows  # [M, h, w]


def ms_ssim_pairs(x: torch.Tensor, y: torch.Tensor, betas: tuple[float, ...]) -> torch.Tensor:
    """MS-SSIM of image pairs x[i], y[i] [P, H, W] with data range 1: float32 [P].

    torchmetrics' ``multiscale_structural_similarity_index_measure`` (``gaussian_kernel=True``,
    ``sigma=1.5``, ``normalize="relu"``): per scale SSIM's contrast-structure term, averaged over
    the valid interior; at the coarsest scale the full SSIM, averaged over the reflect-padded
    image; each clipped at 0, raised to its beta and multiplied; 2x2 average pooling between
    scales.
    """
    pad = (_gaussian_band(1).shape[0] - 1) // 2
    c1, c2 = MS_SSIM_K1**2, MS_SSIM_K2**2
    terms = []
    for scale in range(len(betas)):
        xp = F.pad(x.unsqueeze(1), (pad,) * 4, mode="reflect")[:, 0]  # [P, H+2p, W+2p]
        yp = F.pad(y.unsqueeze(1), (pad,) * 4, mode="reflect")[:, 0]
        mu_x, mu_y, e_xx, e_yy, e_xy = _gaussian_blur_valid(
            torch.cat([xp, yp, xp * xp, yp * yp, xp * yp])).split(len(x))  # 5 x [P, H, W]
        mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        var_x = torch.clamp(e_xx - mu_xx, min=0.0)
        var_y = torch.clamp(e_yy - mu_yy, min=0.0)
        upper, lower = 2 * (e_xy - mu_xy) + c2, var_x + var_y + c2
        if scale == len(betas) - 1:
            ssim = ((2 * mu_xy + c1) * upper) / ((mu_xx + mu_yy + c1) * lower)  # [P, H, W]
            terms.append(ssim.flatten(1).mean(1))
        else:
            terms.append((upper / lower)[:, pad:-pad, pad:-pad].flatten(1).mean(1))
            x, y = F.avg_pool2d(x.unsqueeze(1), 2)[:, 0], F.avg_pool2d(y.unsqueeze(1), 2)[:, 0]
    stacked = torch.relu(torch.stack(terms))  # [scales, P]
    return torch.prod(stacked ** torch.tensor(betas).view(-1, 1), dim=0)  # [P]


def ms_ssim_diversity(images: np.ndarray, *, n_pairs: int = MS_SSIM_PAIRS, seed: int = 0) -> tuple[float, int]:
    """Mean MS-SSIM over random pairs of distinct images [N, H, W]; lower = more diverse.

    Returns
    -------
    (value, scales)
    """
    if len(images) < 2:
        return float("nan"), 0
    scales, _ = ms_ssim_settings(min(images.shape[-2:]))
    betas = np.array(MS_SSIM_BETAS[:scales])
    betas = tuple(float(b) for b in betas / betas.sum())
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(images), size=n_pairs)
    j = (i + rng.integers(1, len(images), size=n_pairs)) % len(images)  # never i itself
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))  # [N, H, W]
    return float(ms_ssim_pairs(x[i], x[j], betas).mean()), scales
