"""Global per-slice features for the shortcut baseline: does a classifier need more than trivia?

A classifier can reach a high score from a confound (head size, scanner, overall brightness)
rather than from the effect of interest (Geirhos et al. 2020, "Shortcut learning in deep neural
networks"; Varoquaux 2018 on small-sample neuroimaging). The shortcut baseline trains the same
linear SVM as GAN-train on four numbers per slice, computed here, instead of on image features.
If those four numbers already separate the groups, a high real-data or GAN-train score says
little about the anatomy the classifier learned.

The four features of one 2D slice:

``brain_area``
    Share of the slice's pixels above :data:`BACKGROUND_THRESHOLD` (the brain mask).
``mean_intensity``
    Mean intensity of the pixels inside that mask (0 when the mask is empty).
``sd_intensity``
    Standard deviation (population, ``ddof=0``) of the pixels inside the mask (0 when empty).
``slice_position``
    The slice's relative position in its subject's kept slice range, 0 (first) .. 1 (last),
    supplied by the caller (from the DATASET's ``slice`` column, per subject).

Intensities are on the [0, 1] scale: uint8 images (a prepared DATASET's ``images.npy``) are
divided by 255; float images are taken as already in [0, 1].
"""

from __future__ import annotations

import numpy as np

FEATURE_NAMES = ("brain_area", "mean_intensity", "sd_intensity", "slice_position")
"""Column order of :func:`global_slice_features`."""

ROWS = 2048  # slices converted to float64 at once (64 MB at 64 px)

BACKGROUND_THRESHOLD = 0.05
"""A pixel is brain when its [0, 1] intensity is above this (13 of 255 on the uint8 scale).

Skull-stripped slices have a background of exactly 0 after ``prepare``'s normalisation, and
generators leave a little noise there; 0.05 ignores that noise while keeping all tissue of the
simulated cohort (its darkest tissue, CSF, normalises to about 0.1 or more at 64 px except in
thin partial-volume rims)."""


def global_slice_features(images: np.ndarray, slice_position: np.ndarray) -> np.ndarray:
    """Brain area, mean and SD of brain intensity, and slice position of each slice.

    Parameters
    ----------
    images : np.ndarray
        [N, H, W] grayscale slices: uint8 (0..255, divided by 255) or float in [0, 1].
    slice_position : np.ndarray
        float [N], each slice's relative position in its subject's kept range, in [0, 1]
        (``(slice - first) / (last - first)`` per subject; 0 when a subject has one slice).

    Returns
    -------
    np.ndarray
        float64 [N, 4], columns :data:`FEATURE_NAMES`.

    Raises
    ------
    ValueError
        On images that are not [N, H, W], a ``slice_position`` of another length, or a
        position outside [0, 1] (a programming error of the caller, not a user error).
    """
    images = np.asarray(images)
    position = np.asarray(slice_position, dtype=np.float64)
    if images.ndim != 3:
        raise ValueError(f"expected images [N, H, W], got shape {images.shape}")
    if position.shape != (len(images),):
        raise ValueError(f"slice_position must have shape ({len(images)},), got {position.shape}")
    if len(position) and not (np.all(position >= 0.0) and np.all(position <= 1.0)):
        raise ValueError("slice_position must lie in [0, 1] (relative position in the kept range)")
    scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
    flat = images.reshape(len(images), -1)  # [N, H*W]
    parts = [_area_mean_sd(flat[lo:lo + ROWS], scale) for lo in range(0, len(flat), ROWS)]
    area, mean, sd = np.concatenate(parts, axis=1)
    return np.stack([area, mean, sd, position], axis=1)  # [N, 4]


def _area_mean_sd(rows: np.ndarray, scale: float) -> np.ndarray:
    """[3, n]: brain area share, mean and SD of brain intensity of a block of flattened slices.

    A block at a time: the float64 temporaries of all the slices at once would be 4 x 8 bytes a pixel,
    1.9 GB for a 240-subject fold's training slices at 64 px (benchmarks/README.md, "Cohort size").
    """
    x = rows.astype(np.float64) * scale  # [n, H*W]
    mask = x > BACKGROUND_THRESHOLD  # [n, H*W]
    n = mask.sum(axis=1).astype(np.float64)  # [n] brain pixels per slice
    safe = np.maximum(n, 1.0)
    mean = np.where(mask, x, 0.0).sum(axis=1) / safe  # [n]
    var = np.where(mask, (x - mean[:, None]) ** 2, 0.0).sum(axis=1) / safe  # [n]
    return np.stack([n / x.shape[1], mean, np.sqrt(var)])


def relative_slice_positions(subjects: np.ndarray, slices: np.ndarray) -> np.ndarray:
    """Each slice's position in its subject's kept range: ``(slice - first) / (last - first)``.

    Parameters
    ----------
    subjects : array [N] of subject ids (any hashable values).
    slices : int [N] axial slice numbers (a DATASET's ``slice`` column).

    Returns
    -------
    np.ndarray
        float64 [N] in [0, 1]; 0 for a subject whose images all come from one slice.
    """
    subjects = np.asarray(subjects)
    slices = np.asarray(slices, dtype=np.float64)
    out = np.zeros(len(slices), dtype=np.float64)
    for subject in np.unique(subjects):
        rows = subjects == subject
        first, last = slices[rows].min(), slices[rows].max()
        if last > first:
            out[rows] = (slices[rows] - first) / (last - first)
    return out
