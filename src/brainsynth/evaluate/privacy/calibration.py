"""Calibration of the near-copy thresholds on one half of the held-out subjects, checked on the other.

The held-out subjects are split in two, by subject, seeded and stratified by label
(:func:`split_holdout`). Half A sets the thresholds (:func:`calibrate`); half B, never used to set
them, measures how often the rule flags an innocent real image (the false-flag rate, with a 95 %
Wilson interval, :func:`wilson_interval`). Thresholds are set per brain-area band: a small low
slice is close to everything, and would otherwise set the threshold for every slice (see
:class:`Calibration` for how bands and the tail threshold work together).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from brainsynth.errors import InputError

MIN_PER_BAND = 20
"""Fewest half-A images a brain-area band may hold; fewer bands are used otherwise."""


def subject_of(image_id: str) -> str:
    """``"sub-01:45"`` -> ``"sub-01"`` (the part before the first colon)."""
    return str(image_id).split(":", 1)[0]


def split_holdout(subjects: Sequence[str], labels: Sequence[str] | None, seed: int) -> np.ndarray:
    """Which held-out images are in half A (calibration): bool [H], split by subject.

    Subjects of each label are shuffled (seeded) and dealt to A and B in turn, continuing across
    labels, so each half gets about half of every label and the halves differ by at most one
    subject.
    """
    subjects = np.asarray([str(s) for s in subjects], dtype=object)
    unique = sorted(set(subjects.tolist()))
    if len(unique) < 2:
        raise InputError(f"the held-out images come from {len(unique)} subject; the audit calibrates on half of "
                         "the held-out subjects and checks on the other half, so it needs at least 2 (re-run "
                         "'brainsynth prepare' with a larger --test-fraction)")
    label_of = {}
    for s, lbl in zip(subjects, labels if labels is not None else [""] * len(subjects)):
        label_of.setdefault(s, str(lbl))
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for label in sorted(set(label_of.values())):
        group = [s for s in unique if label_of[s] == label]
        order += [group[i] for i in rng.permutation(len(group))]
    first = int(rng.integers(2))  # which half the dealing starts with
    half_a = {s for k, s in enumerate(order) if (k + first) % 2 == 0}
    return np.array([s in half_a for s in subjects], dtype=bool)


def band_edges(area: np.ndarray, n_bands: int) -> np.ndarray:
    """[B - 1] brain-area edges at quantiles of ``area``, with at least :data:`MIN_PER_BAND` per band."""
    n = max(1, min(int(n_bands), len(area) // MIN_PER_BAND))
    return np.quantile(area, np.arange(1, n) / n) if n > 1 else np.zeros(0)


def calibrate_thresholds(holdout_scores: dict[str, np.ndarray], rate: float) -> tuple[dict[str, float], float]:
    """Per-space thresholds whose OR-rule flags at most ``rate`` of the given images.

    ``holdout_scores`` maps each space to the images' scores (smaller = more like a copy). Every
    space uses the same quantile level ``t`` of its own scores; ``t`` is the largest
    level in ``[0, rate]`` at which "below the threshold in ANY space" flags no more than ``rate``
    of the images. Fully correlated spaces give ``t = rate``, independent ones about ``rate / 2``.

    Returns
    -------
    thresholds : dict
        space -> distance; an image is flagged in a space when strictly below it.
    level : float
        The quantile level ``t`` used.
    """
    def thresholds_at(t: float) -> dict[str, float]:
        return {s: float(np.quantile(d, t)) for s, d in holdout_scores.items()}

    def or_rate(t: float) -> float:
        thr = thresholds_at(t)
        below = np.logical_or.reduce([holdout_scores[s] < thr[s] for s in holdout_scores])
        return float(np.mean(below))

    if or_rate(rate) <= rate:
        return thresholds_at(rate), rate
    lo, hi = 0.0, rate  # or_rate(lo) == 0 <= rate; or_rate is non-decreasing in t
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if or_rate(mid) <= rate else (lo, mid)
    return thresholds_at(lo), lo


@dataclass
class Calibration:
    """Near-copy thresholds set on half A of the held-out images (plus, by default, the training images).

    Each brain-area band is first put on a common scale: a score is divided by the median score
    of the band's calibration images (the band's typical value, estimated from every image of the
    band). One threshold per space is then set on the rescaled scores of all calibration images.
    So a band of small low slices, whose scores are lower, does not set the threshold of large
    slices, and the tail quantile that decides the false flags rests on all calibration images
    rather than on the handful of one band: per-band quantiles of two or three subjects' slices
    swing with the subjects (on the demo cohort 14-24 % false flags on half B, against 0.5-4 %
    rescaled).
    """

    half_a: np.ndarray  # bool [H]
    edges: np.ndarray  # [B - 1] brain-area band edges
    medians: dict[str, np.ndarray]  # space -> [B] median half-A score per band
    thresholds: dict[str, float]  # space -> threshold on the rescaled score (score / band median)
    level: float  # quantile level of the rescaled calibration scores used in every space
    percentile: float
    n_calibration: int = 0  # images the thresholds were set on (half A plus any extra)
    n_extra: int = 0  # of which training images scored against the other training subjects
    counts: np.ndarray | None = None  # [B] calibration images per band

    def band(self, area: np.ndarray) -> np.ndarray:
        """int [N]: the band of each brain-area share."""
        return np.searchsorted(self.edges, np.asarray(area), side="right")

    def band_thresholds(self, space: str) -> np.ndarray:
        """[B]: the threshold of each band on the raw score of ``space``."""
        return self.thresholds[space] * self.medians[space]

    def flags(self, scores: dict[str, np.ndarray], area: np.ndarray) -> dict[str, np.ndarray]:
        """space -> bool [N]: below the threshold of the image's band."""
        band = self.band(area)
        return {s: scores[s] < self.band_thresholds(s)[band] for s in scores}


def calibrate(holdout_scores: dict[str, np.ndarray], area: np.ndarray, half_a: np.ndarray, percentile: float,
              n_bands: int, extra_scores: dict[str, np.ndarray] | None = None,
              extra_area: np.ndarray | None = None) -> Calibration:
    """Thresholds from half A (and any extra calibration images): band medians, then one tail threshold per space.

    Parameters
    ----------
    holdout_scores : dict
        space -> float [H], every held-out image's score (smaller = more like a copy; NaN = undefined).
    area : np.ndarray
        float [H] brain-area share of each held-out image.
    half_a : np.ndarray
        bool [H], the calibration half.
    percentile : float
        Share (%) of the calibration images the OR-rule may flag.
    n_bands : int
        Brain-area bands wanted (fewer when a band would hold < :data:`MIN_PER_BAND` calibration images).
    extra_scores, extra_area : dict, np.ndarray, optional
        More calibration images (never half B): the training images scored against the OTHER
        training subjects (see :func:`brainsynth.evaluate.privacy.fold.audit_fold`).
    """
    scores = {s: d[half_a] for s, d in holdout_scores.items()}
    pool_area = area[half_a]
    if extra_scores is not None:
        scores = {s: np.r_[scores[s], extra_scores[s]] for s in scores}
        pool_area = np.r_[pool_area, extra_area]
    defined = np.logical_and.reduce([np.isfinite(d) for d in scores.values()])  # [C]
    scores, pool_area = {s: d[defined] for s, d in scores.items()}, pool_area[defined]
    edges = band_edges(pool_area, n_bands)
    band = np.searchsorted(edges, pool_area, side="right")
    medians = {s: np.array([np.median(d[band == b]) for b in range(len(edges) + 1)]) for s, d in scores.items()}
    rescaled = {s: d / np.maximum(medians[s][band], 1e-12) for s, d in scores.items()}
    thresholds, level = calibrate_thresholds(rescaled, percentile / 100)
    return Calibration(half_a=half_a, edges=edges, medians=medians, thresholds=thresholds, level=level,
                       percentile=float(percentile), n_calibration=int(defined.sum()),
                       counts=np.bincount(band, minlength=len(edges) + 1),
                       n_extra=0 if extra_scores is None else int(defined[int(half_a.sum()):].sum()))


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """95 % Wilson score interval of a proportion ``k / n`` (Wilson 1927); ``(None, None)`` when n = 0."""
    if n <= 0:
        return None, None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def share(flags: np.ndarray) -> dict[str, Any]:
    """``{"rate", "ci", "k", "n"}`` of a bool array (a :class:`~brainsynth.evaluate.report.schema_privacy.Rate`)."""
    k, n = int(np.sum(flags)), int(np.size(flags))
    return {"rate": k / n if n else None, "ci": list(wilson_interval(k, n)), "k": k, "n": n}
