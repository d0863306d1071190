"""GAN-train / GAN-test: the paper's Sen/Spe/HM, subject aggregation, bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.evaluate import gan_train as gt


@pytest.mark.parametrize("y_true, y_pred, expected", [
    # TP 3, FN 1, TN 2, FP 1 -> Sen 3/4, Spe 2/3, HM 2*(3/4)*(2/3)/(3/4+2/3) = 12/17
    ([1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0, 1], (0.75, 2 / 3, 12 / 17)),
    # TP 1, FN 0, TN 0, FP 3 -> Sen 1, Spe 0, HM 0
    ([1, 0, 0, 0], [1, 1, 1, 1], (1.0, 0.0, 0.0)),
    # everything wrong: both rates 0, HM defined as 0
    ([1, 1, 0], [0, 0, 1], (0.0, 0.0, 0.0)),
    # TP 2, FN 3, TN 4, FP 1 -> Sen 0.4, Spe 0.8, HM 0.64/1.2
    ([1] * 5 + [0] * 5, [1, 1, 0, 0, 0, 0, 0, 0, 0, 1], (0.4, 0.8, 0.64 / 1.2)),
])
def test_confusion_metrics_match_hand_computed_tables(y_true, y_pred, expected):
    m = gt.confusion_metrics(np.array(y_true), np.array(y_pred))
    assert (m["sensitivity"], m["specificity"], m["hm"]) == pytest.approx(expected)


def test_confusion_metrics_adhd_is_the_positive_class():
    # Predicting everything ADHD: perfect sensitivity, zero specificity (not the other way round).
    m = gt.confusion_metrics(np.array([1, 1, 0, 0]), np.array([1, 1, 1, 1]))
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.0


def test_subject_prediction_uses_the_mean_decision_score():
    # s1 (adhd): slices 1 right, 2 wrong, but the mean score 0.2 > 0 -> ADHD (a majority vote would say control)
    # s2 (control): mean -0.5 -> control;  s3 (adhd): mean -0.1 -> control (wrong); s4 (control): mean 0.3 -> wrong
    scores = np.array([1.0, -0.2, -0.2, 0.5, -1.0, -1.0, -0.1, 0.3])
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0])
    groups = np.array(["s1", "s1", "s1", "s2", "s2", "s2", "s3", "s4"])
    r = gt.score_predictions(scores, y, groups, n_boot=0, seed=0)
    # slice level: TP 1 (s1), FN 3 (two s1 + s3), TN 2 (s2), FP 2 (s2's 0.5, s4)
    assert r["slice"]["sensitivity"] == pytest.approx(1 / 4)
    assert r["slice"]["specificity"] == pytest.approx(2 / 4)
    # subject level: s1 right, s3 wrong; s2 right, s4 wrong
    assert (r["subject"]["sensitivity"], r["subject"]["specificity"]) == (0.5, 0.5)
    assert r["subject"]["n"] == 4 and r["slice"]["n"] == 8
    assert r["hm"] == r["slice"]["hm"] and r["ci"] is None


def test_bootstrap_ci_brackets_the_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = np.repeat([f"s{i}" for i in range(10)], 20)
    y = np.repeat([0, 1] * 5, 20)
    scores = np.where(y == 1, 1.0, -1.0) + rng.normal(0, 1.2, len(y))
    a = gt.score_predictions(scores, y, groups, n_boot=300, seed=1)
    b = gt.score_predictions(scores, y, groups, n_boot=300, seed=1)
    assert a == b
    for k in gt.METRICS:
        lo, hi = a["ci"][k]
        assert lo <= a[k] <= hi and lo < hi
    perfect = gt.score_predictions(np.where(y == 1, 1.0, -1.0), y, groups, n_boot=50, seed=0)
    assert perfect["ci"]["hm"] == [1.0, 1.0]
    assert perfect["subject"]["ci"]["sensitivity"] == [1.0, 1.0]


def _blobs(n_per_class: int, dim: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n_per_class)
    x = rng.normal(size=(2 * n_per_class, dim))
    x[:, 0] += np.where(y == 1, sep, -sep)
    return x.astype(np.float32), y


def test_gan_train_balances_classes_and_scores_on_real_test():
    sx, sy = _blobs(30, 6, 4.0, seed=0)
    sx, sy = sx[:45], sy[:45]  # 30 control, 15 adhd
    tx, ty = _blobs(10, 6, 4.0, seed=1)
    subjects = np.array([f"t{i // 5}" for i in range(20)])
    r = gt.gan_train(sx, sy, tx, ty, subjects, n_boot=20, seed=0)
    assert r["n_train"] == 30  # 15 per class
    assert r["hm"] == pytest.approx(1.0) and r["subject"]["hm"] == pytest.approx(1.0)
    assert r["subject"]["n"] == 4 and r["slice"]["n"] == 20


def test_gan_test_uses_images_as_units_and_flags_label_swaps():
    rx, ry = _blobs(20, 5, 4.0, seed=0)
    sx, sy = _blobs(8, 5, 4.0, seed=2)
    good = gt.gan_test(rx, ry, sx, sy, n_boot=20, seed=0)
    swapped = gt.gan_test(rx, ry, sx, 1 - sy, n_boot=20, seed=0)
    assert good["hm"] == pytest.approx(1.0) and swapped["hm"] == pytest.approx(0.0)
    assert good["slice"]["unit"] == "image" and good["subject"]["n"] == 16


def test_balanced_subsample_is_seeded_and_equal_sized():
    labels = np.array([0] * 7 + [1] * 3)
    idx = gt.balanced_subsample(labels, seed=4)
    assert np.array_equal(idx, gt.balanced_subsample(labels, seed=4))
    assert np.bincount(labels[idx]).tolist() == [3, 3]


def test_training_on_one_class_is_refused():
    with pytest.raises(ValueError, match="both classes"):
        gt.fit_and_score(np.zeros((4, 2)), np.zeros(4, dtype=int), np.zeros((1, 2)))
