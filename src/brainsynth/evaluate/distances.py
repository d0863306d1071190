"""Distances between images, for the privacy audit: pixel space (shift-tolerant) and feature space.

Two complementary views of "is this synthetic image a copy of that training image": the pixel
distance catches copies, noisy copies and slightly shifted copies; the feature distance catches
copies that differ in pixels but not in content. :mod:`brainsynth.evaluate.privacy` calibrates
thresholds on both.
"""

from __future__ import annotations

import numpy as np
import torch

from brainsynth.errors import InputError

MAX_SHIFT = 2
"""Largest translation (pixels, each axis) the pixel distance forgives."""

PIXEL_BLUR_SIGMA = 1.0
"""Gaussian blur (pixels) applied before pixel distances. Independent pixel noise, such as a GAN's
texture or added noise, shrinks by about 3.5x at sigma 1 while the anatomy that identifies a copy
is several pixels wide, so a noisy copy stays close to its source."""

DISTANCE_DEFINITIONS = {
    "pixel": (
        f"root-mean-square intensity difference (images in [0, 1], both blurred by a Gaussian of sigma "
        f"{PIXEL_BLUR_SIGMA:g} px) over the central crop, minimised over integer translations of up to "
        f"+/-{MAX_SHIFT} px of the reference image"
    ),
    "feature": "cosine distance (1 - cos) between feature vectors centred on the training-set mean",
}

_QUERY_BATCH = 1024  # queries per matmul block: bounds memory at [1024, N_ref] floats per shift


# --- distances ----------------------------------------------------------------------------

def shift_tolerant_distances(queries: np.ndarray, refs: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Pixel distance between every query and every reference, forgiving small translations.

    Both image sets are first smoothed (:data:`PIXEL_BLUR_SIGMA`). The query's central crop
    (``max_shift`` px cut from each border) is then compared with every crop of the reference
    shifted by ``(dy, dx)``, ``|dy|, |dx| <= max_shift``; the smallest root-mean-square
    difference wins. Comparing crops, rather than padding or rolling, keeps border fill values
    out of the distance.

    Parameters
    ----------
    queries : np.ndarray
        float32 [Nq, H, W] in [0, 1].
    refs : np.ndarray
        float32 [Nr, H, W] in [0, 1].
    max_shift : int
        Largest translation in pixels per axis; reduced for images too small to crop.

    Returns
    -------
    np.ndarray
        float32 [Nq, Nr], RMS intensity difference at the best shift.
    """
    h, w = queries.shape[1:]
    if refs.shape[1:] != (h, w):
        raise InputError(f"images of different sizes cannot be compared: {queries.shape[1:]} vs {refs.shape[1:]}")
    m = _usable_shift(h, w, max_shift)
    # Centring by one scalar leaves distances unchanged but shrinks the norms, so the
    # |q|^2 + |r|^2 - 2 q.r expansion loses less to float32 cancellation near zero distance.
    centre = float(np.mean(refs)) if len(refs) else 0.0
    q_all = torch.from_numpy(_smooth(queries)) - centre  # [Nq, H, W]
    r_all = torch.from_numpy(_smooth(refs)) - centre  # [Nr, H, W]
    q_flat = q_all[:, m:h - m, m:w - m].reshape(len(q_all), -1)  # [Nq, P]
    n_pix = q_flat.shape[1]
    best = torch.full((len(q_all), len(r_all)), float("inf"))  # [Nq, Nr], min over shifts of |r|^2 - 2 q.r
    with torch.no_grad():
        for dy, dx in _shifts(m):
            r_flat = r_all[:, m + dy:h - m + dy, m + dx:w - m + dx].reshape(len(r_all), -1)  # [Nr, P]
            r_sq = (r_flat * r_flat).sum(1)[None, :]  # [1, Nr]
            for start in range(0, len(q_flat), _QUERY_BATCH):
                rows = best[start:start + _QUERY_BATCH]  # a view: updated in place
                partial = torch.addmm(r_sq, q_flat[start:start + _QUERY_BATCH], r_flat.T, alpha=-2.0)  # [B, Nr]
                torch.minimum(rows, partial, out=rows)
        d2 = best + (q_flat * q_flat).sum(1, keepdim=True)  # [Nq, Nr]; |q|^2 does not depend on the shift
    return torch.sqrt(d2.clamp_min(0.0) / n_pix).numpy().astype(np.float32)


def best_shift(query: np.ndarray, ref: np.ndarray, max_shift: int = MAX_SHIFT) -> tuple[int, int]:
    """The offset ``(dy, dx)`` at which :func:`shift_tolerant_distances` matched ``query`` [H, W] to ``ref`` [H, W].

    ``query[y, x]`` is compared with ``ref[y + dy, x + dx]``.
    """
    h, w = query.shape
    m = _usable_shift(h, w, max_shift)
    q, r = _smooth(query[None])[0], _smooth(ref[None])[0]
    crop = q[m:h - m, m:w - m]
    errors = [float(np.sum((crop - r[m + dy:h - m + dy, m + dx:w - m + dx]) ** 2)) for dy, dx in _shifts(m)]
    return _shifts(m)[int(np.argmin(errors))]


def _usable_shift(h: int, w: int, max_shift: int) -> int:
    return max(0, min(max_shift, (min(h, w) - 2) // 4))  # keep at least half of each axis in the crop


def _shifts(m: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)]


def _smooth(images: np.ndarray) -> np.ndarray:
    """float32 [N, H, W] blurred in-plane by :data:`PIXEL_BLUR_SIGMA` px."""
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, dtype=np.float32)
    if PIXEL_BLUR_SIGMA <= 0:
        return np.ascontiguousarray(images)
    return np.ascontiguousarray(gaussian_filter(images, sigma=(0, PIXEL_BLUR_SIGMA, PIXEL_BLUR_SIGMA), mode="nearest"))


def feature_distances(queries: np.ndarray, refs: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Cosine distance between feature vectors after subtracting ``centre``.

    Centring on the training mean matters: ReLU features of brain slices share a large common
    component, which makes raw cosines all close to 1 and hides the differences.

    Parameters
    ----------
    queries : np.ndarray
        [Nq, D] features.
    refs : np.ndarray
        [Nr, D] features.
    centre : np.ndarray
        [D], usually the training features' mean.

    Returns
    -------
    np.ndarray
        float32 [Nq, Nr] in [0, 2].
    """
    q = _unit_rows(np.asarray(queries, dtype=np.float32) - centre)  # [Nq, D]
    r = _unit_rows(np.asarray(refs, dtype=np.float32) - centre)  # [Nr, D]
    return np.clip(1.0 - q @ r.T, 0.0, 2.0).astype(np.float32)  # [Nq, Nr]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)
