"""Pooled GAN-train scores over folds, cluster-bootstrap intervals and paired verdicts.

The cross-validated protocol (``prepare --folds K --repeats R``) tests every subject once per
repeat. Each fold's classifier writes one decision score per test slice; this module pools
those predictions (a table with :data:`PREDICTION_COLUMNS`) into the report's numbers:

pooled scores
    Sensitivity, specificity and HM over every test slice of every fold and repeat (slice
    level), and over every (repeat, subject) unit, a subject predicted from the mean decision
    score of its slices (subject level).
cluster bootstrap
    Slices of one subject are not independent, and neither are the R predictions of one
    subject across repeats (Varoquaux 2018). A resample draws test SUBJECTS with replacement
    within each label (so both classes are always present), and a drawn subject brings all its
    slices of every repeat. :func:`resample_weights` draws the resamples once; every row and
    every comparison uses the same draws.
paired comparisons
    Two rows tested on the same subjects are compared on the SAME resamples: the interval of
    HM(a) - HM(b) over resamples. The verdict is ``better`` when it lies above 0, ``worse``
    when below, ``not distinguishable`` when it holds 0.
the n/a rule
    With fewer than :data:`MIN_SUBJECTS_FOR_CI` test subjects in a class (a single fold of a
    12-subject cohort has 2), resampling has almost nothing to draw from (2 subjects give 3
    distinct resamples, and the intervals come out as [1.0, 1.0]). Such an interval, and a
    verdict resting on it, is ``n/a`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from brainsynth import LABELS
from brainsynth.evaluate.gan_train import METRICS, rates_from_counts

PREDICTION_COLUMNS = ("set", "repeat", "fold", "subject", "slice", "patch", "label", "score")
"""One row per test slice and training set: the fold's SVM decision score (> 0 = ADHD)."""

MIN_SUBJECTS_FOR_CI = 3
"""An interval needs at least this many test subjects of each class."""

CI_LEVEL = 0.95
LEVELS = ("slice", "subject")
LEVEL_UNITS = {"slice": "slice (CI over subjects)", "subject": "subject per repeat (mean decision score)"}


# --- test units -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Units:
    """The test subjects of a pooled result, in one order shared by every row compared on them."""

    subjects: np.ndarray  # str [S], sorted
    labels: np.ndarray  # int [S], 0 control / 1 adhd

    def __len__(self) -> int:
        return len(self.subjects)

    def per_label(self) -> dict[str, int]:
        return {lbl: int(np.sum(self.labels == i)) for i, lbl in enumerate(LABELS)}


def units_of(predictions: pd.DataFrame) -> Units:
    """The distinct test subjects of a prediction table and their labels."""
    first = predictions.groupby("subject", sort=True)["label"].first()
    return Units(subjects=first.index.to_numpy().astype(str),
                 labels=np.array([LABELS.index(str(lbl)) for lbl in first.to_numpy()], dtype=np.int64))


def ci_note(units: Units, n_boot: int) -> str | None:
    """Why no interval can be given for these test subjects, or ``None`` when one can."""
    if n_boot <= 0:
        return "n/a: bootstrap = 0 (no resamples)"
    short = {lbl: n for lbl, n in units.per_label().items() if n < MIN_SUBJECTS_FOR_CI}
    if short:
        listing = ", ".join(f"{n} {lbl}" for lbl, n in short.items())
        return (f"n/a: {listing} test subject(s); a CI needs at least {MIN_SUBJECTS_FOR_CI} per class "
                "(pool the folds)")
    return None


# --- counts -----------------------------------------------------------------------------------

def _cells(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Column of (TP, FN, TN, FP) each prediction falls in [N]."""
    return np.where(y_true == 1, np.where(y_pred == 1, 0, 1), np.where(y_pred == 0, 2, 3))


def subject_counts(rows: pd.DataFrame, units: Units) -> dict[str, np.ndarray]:
    """Confusion counts (TP, FN, TN, FP) per test subject, summed over folds and repeats.

    Parameters
    ----------
    rows : DataFrame
        The predictions of ONE training set (:data:`PREDICTION_COLUMNS`).
    units : Units
        The subjects, in the order of the returned rows; every subject of ``rows`` must be one.

    Returns
    -------
    dict
        ``"slice"``: float [S, 4], one count per test slice; ``"subject"``: float [S, 4], one
        count per (repeat, subject), predicted from the mean decision score of its slices.
    """
    index = pd.Index(units.subjects)
    pos = index.get_indexer(rows["subject"].astype(str))  # [N]
    if np.any(pos < 0):
        raise ValueError("predictions name subjects outside the test units")
    y_true = np.array([LABELS.index(str(lbl)) for lbl in rows["label"]], dtype=np.int64)  # [N]
    scores = rows["score"].to_numpy(dtype=np.float64)  # [N]
    slice_counts = np.zeros((len(units), 4))
    np.add.at(slice_counts, (pos, _cells(y_true, (scores > 0).astype(np.int64))), 1.0)
    per_unit = pd.DataFrame({"repeat": rows["repeat"].to_numpy(), "pos": pos, "score": scores})
    means = per_unit.groupby(["repeat", "pos"], sort=True)["score"].mean()  # one unit per (repeat, subject)
    unit_pos = means.index.get_level_values("pos").to_numpy()
    unit_true = units.labels[unit_pos]
    subject = np.zeros((len(units), 4))
    np.add.at(subject, (unit_pos, _cells(unit_true, (means.to_numpy() > 0).astype(np.int64))), 1.0)
    return {"slice": slice_counts, "subject": subject}


def rates(counts: np.ndarray) -> dict[str, float]:
    """Sensitivity, specificity, HM of counts [S, 4] summed over subjects (NaN for an absent class)."""
    tp, fn, tn, fp = counts.sum(axis=0)
    return {k: float(v) for k, v in rates_from_counts(tp, fn, tn, fp).items()}


# --- bootstrap --------------------------------------------------------------------------------

def resample_weights(labels: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """How often each subject is drawn in each stratified bootstrap resample.

    Parameters
    ----------
    labels : int [S]
        Each subject's class; each resample draws, within each class, as many subjects as the
        class has, with replacement.
    n_boot : int
    seed : int

    Returns
    -------
    np.ndarray
        float [n_boot, S]; each row sums to S. Multiplying it with per-subject counts [S, 4]
        gives the resamples' counts [n_boot, 4], with every slice of a drawn subject.
    """
    rng = np.random.default_rng(seed)
    weights = np.zeros((n_boot, len(labels)))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        draw = members[rng.integers(0, len(members), size=(n_boot, len(members)))]  # [B, m] subject positions
        np.add.at(weights, (np.arange(n_boot)[:, None], draw), 1.0)
    return weights


def _resampled_rates(counts: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    totals = weights @ counts  # [B, 4]
    return rates_from_counts(totals[:, 0], totals[:, 1], totals[:, 2], totals[:, 3])


def percentile_interval(values: np.ndarray) -> list[float] | None:
    """The central :data:`CI_LEVEL` percentile interval of the finite values, or ``None`` if none are."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return None
    alpha = (1.0 - CI_LEVEL) / 2 * 100
    return [float(np.percentile(values, alpha)), float(np.percentile(values, 100 - alpha))]


def pooled_level(counts: np.ndarray, weights: np.ndarray | None, note: str | None, *, level: str,
                 n: int) -> dict[str, Any]:
    """One level's pooled scores and intervals (the report's ``LevelScores``).

    Parameters
    ----------
    counts : float [S, 4]
        Per-subject confusion counts (:func:`subject_counts`).
    weights : float [B, S] or None
        The resamples (:func:`resample_weights`); ``None`` with ``note``.
    note : str or None
        Why there is no interval (:func:`ci_note`).
    level : {"slice", "subject"}
    n : int
        Test units scored at this level.
    """
    out: dict[str, Any] = rates(counts)
    out["ci"], out["ci_note"] = None, note
    if note is None and weights is not None:
        boot = _resampled_rates(counts, weights)
        out["ci"] = {m: percentile_interval(boot[m]) or [None, None] for m in METRICS}
    out.update(n=int(n), n_groups=int(len(counts)), unit=LEVEL_UNITS[level])
    return out


# --- paired comparisons -----------------------------------------------------------------------

def verdict(interval: list[float] | None) -> str:
    """``better`` / ``worse`` when the interval of a - b excludes 0, ``not distinguishable`` when it holds 0."""
    if interval is None:
        return "n/a"
    lo, hi = interval
    return "better" if lo > 0 else "worse" if hi < 0 else "not distinguishable"


def compare(counts_a: np.ndarray, counts_b: np.ndarray, weights: np.ndarray | None, note: str | None,
            metric: str = "hm") -> dict[str, Any]:
    """Paired comparison of two rows scored on the same test subjects.

    Parameters
    ----------
    counts_a, counts_b : float [S, 4]
        Per-subject counts of the two rows, subjects in the same order.
    weights : float [B, S] or None
        The SAME resamples for both rows (:func:`resample_weights`).
    note : str or None
        Why there is no interval; the verdict is then ``n/a``.
    metric : str
        ``sensitivity``, ``specificity`` or ``hm``.

    Returns
    -------
    dict
        ``a_value``, ``b_value``, ``diff`` (a - b), ``ci`` of the difference, ``ci_note``,
        ``verdict``, ``ratio`` (a / b) and ``ratio_ci``.
    """
    a, b = rates(counts_a)[metric], rates(counts_b)[metric]
    out: dict[str, Any] = {"a_value": a, "b_value": b, "diff": a - b, "ci": None, "ci_note": note,
                           "ratio": a / b if b else float("nan"), "ratio_ci": None}
    if note is None and weights is not None:
        boot_a = _resampled_rates(counts_a, weights)[metric]  # [B]
        boot_b = _resampled_rates(counts_b, weights)[metric]  # [B]
        out["ci"] = percentile_interval(boot_a - boot_b)
        with np.errstate(divide="ignore", invalid="ignore"):
            out["ratio_ci"] = percentile_interval(boot_a / boot_b)
        if out["ci"] is None:
            out["ci_note"] = "n/a: no resample could score both rows"
    out["verdict"] = verdict(out["ci"])
    return out
