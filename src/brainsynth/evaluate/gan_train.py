"""GAN-train and GAN-test (Shmelkov et al. 2018) with the paper's linear SVM on image features.

Three protocols share one classifier and one scorer:

real baseline
    train on the real TRAIN split, test on the real TEST split.
GAN-train
    train on a synthetic set (subsampled to equal class sizes), test on the real TEST split.
GAN-test
    train on the real TRAIN split, test on the synthetic set.

Every function takes its training and test arrays separately, so the real test split can only
reach a classifier through a ``test_*`` argument, never through training.

Scores are Sensitivity = TP/(TP+FN), Specificity = TN/(TN+FP) and their harmonic mean HM,
with ADHD (label index 1) the positive class, as in the paper. They are reported per slice and
per subject. A subject is predicted from the MEAN SVM decision score of its slices (threshold 0):
averaging scores uses each slice's confidence, which a majority vote throws away, and it cannot
tie. 95% confidence intervals come from a bootstrap over test SUBJECTS (stratified by label, so
every resample has both classes), recomputing the metric on the resampled subjects' slices;
synthetic test images have no subjects, so GAN-test resamples images.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from brainsynth.evaluate.linear_svm import PrimalSVC, liblinear_would_copy

log = logging.getLogger("brainsynth.evaluate.gan_train")

SVM_C = 1.0
SVM_MAX_ITER = 20_000
CI_LEVEL = 0.95
METRICS = ("sensitivity", "specificity", "hm")


# --- metrics ----------------------------------------------------------------------------

def rates_from_counts(tp: np.ndarray, fn: np.ndarray, tn: np.ndarray, fp: np.ndarray) -> dict[str, np.ndarray]:
    """Sen, Spe, HM from confusion counts (arrays broadcast; an empty class gives NaN)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        sen = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        spe = np.where(tn + fp > 0, tn / np.maximum(tn + fp, 1), np.nan)
        denom = sen + spe
        hm = np.where(denom > 0, 2 * sen * spe / np.where(denom > 0, denom, 1), 0.0)
        hm = np.where(np.isnan(denom), np.nan, hm)
    return {"sensitivity": sen, "specificity": spe, "hm": hm}


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[int, int, int, int]:
    """(TP, FN, TN, FP) with class 1 (ADHD) positive."""
    y_true = np.asarray(y_true).astype(np.int64)
    y_pred = np.asarray(y_pred).astype(np.int64)
    tp = int(np.sum((y_true == 1) & (y_pred == 1)))
    fn = int(np.sum((y_true == 1) & (y_pred == 0)))
    tn = int(np.sum((y_true == 0) & (y_pred == 0)))
    fp = int(np.sum((y_true == 0) & (y_pred == 1)))
    return tp, fn, tn, fp


def confusion_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """The paper's scores: sensitivity TP/(TP+FN), specificity TN/(TN+FP), hm 2*Sen*Spe/(Sen+Spe).

    Parameters
    ----------
    y_true, y_pred : array of int [N]
        0 = control, 1 = adhd (the positive class).

    Returns
    -------
    dict
        ``sensitivity``, ``specificity``, ``hm`` (0 when both rates are 0; NaN for a rate whose
        class is absent from ``y_true``).
    """
    tp, fn, tn, fp = (np.float64(c) for c in confusion_counts(y_true, y_pred))
    return {k: float(v) for k, v in rates_from_counts(tp, fn, tn, fp).items()}


# --- classifier -------------------------------------------------------------------------

def make_classifier(seed: int = 0) -> Pipeline:
    """Standardise features, then a linear SVM (class-balanced, seeded)."""
    svm = LinearSVC(C=SVM_C, class_weight="balanced", max_iter=SVM_MAX_ITER, random_state=seed, dual="auto")
    return make_pipeline(StandardScaler(), svm)


def fit_classifier(x: np.ndarray, y: np.ndarray, seed: int = 0) -> Pipeline | PrimalSVC:
    """:func:`make_classifier` fitted on ``x`` [N, D], ``y`` [N]; the same problem solved by
    :class:`~brainsynth.evaluate.linear_svm.PrimalSVC` when liblinear would copy a large ``x`` (24 bytes per value)."""
    if liblinear_would_copy(*np.shape(x)):
        log.info("linear SVM on %d x %d features: primal Newton-CG on the float32 features (liblinear would "
                 "copy them to %.1f GB)", *np.shape(x), 24 * np.shape(x)[0] * (np.shape(x)[1] + 1) / 2**30)
        return PrimalSVC(C=SVM_C).fit(x, y)
    return make_classifier(seed).fit(x, y)


def balanced_subsample(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """Indices that keep every class at the size of the smallest one (sorted, seeded)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    n = counts.min()
    keep = [rng.choice(np.flatnonzero(labels == c), size=n, replace=False) for c in classes]
    return np.sort(np.concatenate(keep))


def fit_and_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Fit the classifier on (train_x, train_y) and return decision scores of ``test_x``.

    Parameters
    ----------
    train_x : float [N, D]; train_y : int [N] (0/1); test_x : float [M, D]

    Returns
    -------
    np.ndarray
        float64 [M]; > 0 means ADHD.
    """
    if len(np.unique(train_y)) < 2:
        raise ValueError("training labels must contain both classes")
    clf = fit_classifier(train_x, train_y, seed)
    return np.asarray(clf.decision_function(test_x), dtype=np.float64)


# --- scoring with bootstrap CIs ---------------------------------------------------------

def _group_counts(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-group confusion counts [G, 4] (TP, FN, TN, FP) and each group's label [G]."""
    uniq, inv = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(uniq), 4), dtype=np.float64)
    cell = np.where(y_true == 1, np.where(y_pred == 1, 0, 1), np.where(y_pred == 0, 2, 3))
    np.add.at(counts, (inv, cell), 1.0)
    group_label = np.zeros(len(uniq), dtype=np.int64)
    group_label[inv] = y_true
    return counts, group_label


def bootstrap_ci(counts: np.ndarray, group_label: np.ndarray, *, n_boot: int, seed: int) -> dict[str, list[float]] | None:
    """Percentile CIs of Sen/Spe/HM from resampling groups with replacement within each label.

    Parameters
    ----------
    counts : float [G, 4]
        Confusion counts (TP, FN, TN, FP) contributed by each group.
    group_label : int [G]
        Label of each group; the resampling is stratified by it.
    n_boot : int
        Number of resamples; 0 gives ``None``.
    """
    if n_boot <= 0:
        return None
    rng = np.random.default_rng(seed)
    totals = np.zeros((n_boot, 4), dtype=np.float64)
    for label in np.unique(group_label):
        members = np.flatnonzero(group_label == label)
        draw = rng.integers(0, len(members), size=(n_boot, len(members)))  # [B, G_label]
        totals += counts[members[draw]].sum(axis=1)  # [B, 4]
    rates = rates_from_counts(totals[:, 0], totals[:, 1], totals[:, 2], totals[:, 3])
    alpha = (1.0 - CI_LEVEL) / 2 * 100
    out = {}
    for k, v in rates.items():
        v = v[~np.isnan(v)]
        out[k] = [float(np.percentile(v, alpha)), float(np.percentile(v, 100 - alpha))] if len(v) else [np.nan, np.nan]
    return out


def _level_result(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, *, unit: str, n_boot: int,
                  seed: int) -> dict[str, Any]:
    counts, group_label = _group_counts(y_true, y_pred, groups)
    result: dict[str, Any] = confusion_metrics(y_true, y_pred)
    result["ci"] = bootstrap_ci(counts, group_label, n_boot=n_boot, seed=seed)
    result["n"] = int(len(y_true))
    result["n_groups"] = int(len(counts))
    result["unit"] = unit
    return result


def score_predictions(scores: np.ndarray, y_true: np.ndarray, groups: np.ndarray | None, *, n_boot: int,
                      seed: int) -> dict[str, Any]:
    """Slice- and subject-level Sen/Spe/HM with bootstrap CIs from decision scores.

    Parameters
    ----------
    scores : float [N]
        SVM decision scores of the test images (> 0 = ADHD).
    y_true : int [N]
    groups : array [N], optional
        Subject of each test image; ``None`` when the images have no subjects (synthetic),
        then each image is its own unit and the subject level equals the image level.
    n_boot : int
        Bootstrap resamples; seeded by ``seed``.

    Returns
    -------
    dict
        ``{"slice": {...}, "subject": {...}}`` plus the slice-level ``sensitivity``,
        ``specificity``, ``hm``, ``ci`` copied to the top level.
    """
    scores = np.asarray(scores, dtype=np.float64)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = (scores > 0).astype(np.int64)
    if groups is None:
        image_ids = np.arange(len(y_true))
        level = _level_result(y_true, y_pred, image_ids, unit="image", n_boot=n_boot, seed=seed)
        result: dict[str, Any] = {"slice": level, "subject": dict(level)}
    else:
        groups = np.asarray(groups).astype(str)
        slice_level = _level_result(y_true, y_pred, groups, unit="slice (CI over subjects)", n_boot=n_boot, seed=seed)
        subj, inv = np.unique(groups, return_inverse=True)
        subj_score = np.bincount(inv, weights=scores) / np.bincount(inv)  # [S] mean decision score
        subj_true = np.zeros(len(subj), dtype=np.int64)
        subj_true[inv] = y_true
        subj_pred = (subj_score > 0).astype(np.int64)
        subject_level = _level_result(subj_true, subj_pred, subj, unit="subject (mean decision score)",
                                      n_boot=n_boot, seed=seed)
        result = {"slice": slice_level, "subject": subject_level}
    for key in (*METRICS, "ci"):
        result[key] = result["slice"][key]
    return result


# --- the three protocols ----------------------------------------------------------------

def real_baseline(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                  test_subjects: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Train on the real train split, test on the real test split (the paper's "Real data" row).

    Parameters
    ----------
    train_x : float [N, D]; train_y : int [N]
    test_x : float [M, D]; test_y : int [M]; test_subjects : str [M]
    """
    scores = fit_and_score(train_x, train_y, test_x, seed=seed)
    return score_predictions(scores, test_y, test_subjects, n_boot=n_boot, seed=seed)


def gan_train(synth_x: np.ndarray, synth_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              test_subjects: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """GAN-train: fit on class-balanced synthetic features, test on the real test split.

    Parameters
    ----------
    synth_x : float [S, D]; synth_y : int [S]
    test_x : float [M, D]; test_y : int [M]; test_subjects : str [M]
    """
    keep = balanced_subsample(synth_y, seed)
    scores = fit_and_score(synth_x[keep], synth_y[keep], test_x, seed=seed)
    result = score_predictions(scores, test_y, test_subjects, n_boot=n_boot, seed=seed)
    result["n_train"] = int(len(keep))
    return result


def gan_test(train_x: np.ndarray, train_y: np.ndarray, synth_x: np.ndarray, synth_y: np.ndarray, *,
             n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """GAN-test: fit on the real train split, test on synthetic images (bootstrap over images).

    Parameters
    ----------
    train_x : float [N, D]; train_y : int [N]
    synth_x : float [S, D]; synth_y : int [S]
    """
    scores = fit_and_score(train_x, train_y, synth_x, seed=seed)
    return score_predictions(scores, synth_y, None, n_boot=n_boot, seed=seed)
