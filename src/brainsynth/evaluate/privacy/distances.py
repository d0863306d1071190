"""The two distances of the privacy audit, in words and in code: aligned pixels and features.

The *pixel* distance asks whether some plausible re-acquisition of a training slice reproduces a
synthetic image; the search behind it is :mod:`brainsynth.evaluate.privacy.registration`. The *feature* distance compares
CNN features, which catches copies that differ in pixels but not in content.
:mod:`brainsynth.evaluate.privacy.fold` calibrates thresholds on both. The definitions below are
written into every privacy report, for readers who never open the code.
"""

from __future__ import annotations

import numpy as np
import torch

from brainsynth.evaluate.privacy.nearest import Nearest, from_blocks, rows_for
from brainsynth.evaluate.privacy.registration import BLUR_SIGMA_AT_64, Family

BLOCK_BYTES = 128 << 20
"""Bytes of one block of feature distances (query rows x every reference, float32 and masks)."""

FEATURE_DEFINITION = "cosine distance (1 - cos) between feature vectors centred on the training-set mean"


def pixel_definition(family: Family, side: int, work_size: int) -> str:
    """The aligned pixel distance in words, for images of ``side`` px compared at ``work_size`` px."""
    size = min(work_size, side)
    return (
        f"sqrt(1 - R^2), where R^2 is the share of the synthetic image's pixel variance explained by the training "
        f"slice after the slice is re-acquired ({family.describe(side)}) and given the best brightness curve "
        f"c0 + c1 x + c2 x^2 that increases over its range of values; both images are first blurred by a Gaussian "
        f"of {BLUR_SIGMA_AT_64 * side / 64:.3g} px and compared at {size} x {size} px; 0 = identical after "
        "alignment, 1 = unrelated"
    )


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


def unit_features(features: np.ndarray, centre: np.ndarray, device: str | torch.device | None = None,
                  block_rows: int = 4096) -> torch.Tensor:
    """Features centred on ``centre`` and scaled to unit length, float32 [N, D] on ``device``
    (the rows of :func:`feature_distances`), converted a block of rows at a time."""
    features = np.asarray(features)
    out = torch.empty((len(features), features.shape[1]), dtype=torch.float32, device=device)
    mid = torch.as_tensor(np.asarray(centre, np.float32), device=device)
    for lo in range(0, len(features), block_rows):
        x = torch.as_tensor(np.asarray(features[lo:lo + block_rows], np.float32), device=device) - mid
        out[lo:lo + len(x)] = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return out


def feature_nearest(queries: torch.Tensor, refs: torch.Tensor, ref_groups: np.ndarray, *,
                    query_groups: np.ndarray | None = None) -> tuple[Nearest, np.ndarray]:
    """Each query's nearest reference by the feature distance, without the query x reference matrix.

    Parameters
    ----------
    queries, refs : torch.Tensor
        [Nq, D], [Nr, D] rows of :func:`unit_features` (one centre), on one device.
    ref_groups : np.ndarray
        int [Nr] subject of each reference.
    query_groups : np.ndarray, optional
        int [Nq]: leave out pairs of one subject (a training image against the OTHER training subjects).

    Returns
    -------
    nearest : Nearest
    ref_min : np.ndarray
        float32 [Nr], each reference's distance to its nearest query.
    """
    def block(lo: int, hi: int) -> torch.Tensor:
        with torch.no_grad():
            return (1.0 - queries[lo:hi] @ refs.T).clamp_(0.0, 2.0)  # [B, Nr]

    return from_blocks(block, len(queries), ref_groups, query_groups=query_groups,
                       block_rows=rows_for(len(refs), 16, BLOCK_BYTES))
