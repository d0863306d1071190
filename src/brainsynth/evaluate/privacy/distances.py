"""The two distances of the privacy audit, in words and in code: aligned pixels and features.

The *pixel* distance asks whether some plausible re-acquisition of a training slice reproduces a
synthetic image; the search behind it is :mod:`brainsynth.evaluate.privacy.registration`. The *feature* distance compares
CNN features, which catches copies that differ in pixels but not in content.
:mod:`brainsynth.evaluate.privacy.fold` calibrates thresholds on both. The definitions below are
written into every privacy report, for readers who never open the code.
"""

from __future__ import annotations

import numpy as np

from brainsynth.evaluate.privacy.registration import BLUR_SIGMA_AT_64, Family

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
