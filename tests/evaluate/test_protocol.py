"""Pooled scores, the cluster bootstrap over subjects, paired comparisons and the n/a rule, on known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from brainsynth.evaluate import protocol
from brainsynth.evaluate.protocol import PREDICTION_COLUMNS


def predictions(name: str, scores_by_subject: dict[str, list[float]], labels: dict[str, str], repeat: int = 0,
                fold: int = 0) -> pd.DataFrame:
    rows = [(name, repeat, fold, s, 40 + i, 0, labels[s], score)
            for s, scores in scores_by_subject.items() for i, score in enumerate(scores)]
    return pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS))


# 4 control, 3 ADHD subjects with 3, 4, 5, ... slices: unequal, so a per-slice (not per-subject) resample would show.
LABELS = {**{f"c{i}": "control" for i in range(4)}, **{f"a{i}": "adhd" for i in range(3)}}
N_SLICES = {s: 3 + i for i, s in enumerate(LABELS)}


def always(right: bool, name: str = "row", noise: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """A row that classifies every slice right (or wrong), with scores of random size."""
    rng = np.random.default_rng(seed)
    sign = {"adhd": 1.0, "control": -1.0}
    scores = {s: list((sign[LABELS[s]] if right else -sign[LABELS[s]]) * (0.5 + rng.random(N_SLICES[s])))
              for s in LABELS}
    return predictions(name, scores, LABELS)


def test_identical_predictions_differ_by_exactly_zero_and_are_not_distinguishable():
    rows = always(True, seed=1)
    units = protocol.units_of(rows)
    counts = protocol.subject_counts(rows, units)
    weights = protocol.resample_weights(units.labels, 200, seed=0)
    c = protocol.compare(counts["slice"], counts["slice"], weights, None)
    assert c["diff"] == 0.0 and c["ci"] == [0.0, 0.0] and c["verdict"] == "not distinguishable"
    assert c["ratio"] == 1.0 and c["ratio_ci"] == [1.0, 1.0]


def test_a_row_always_right_is_better_than_one_always_wrong():
    right, wrong = always(True, "right"), always(False, "wrong", seed=3)
    units = protocol.units_of(right)
    a, b = protocol.subject_counts(right, units), protocol.subject_counts(wrong, units)
    weights = protocol.resample_weights(units.labels, 200, seed=0)
    for level in ("slice", "subject"):
        c = protocol.compare(a[level], b[level], weights, None)
        assert (c["a_value"], c["b_value"], c["diff"]) == (1.0, 0.0, 1.0)
        assert c["ci"] == [1.0, 1.0] and c["verdict"] == "better"
        assert protocol.compare(b[level], a[level], weights, None)["verdict"] == "worse"


def test_a_difference_resting_on_one_subject_is_not_distinguishable():
    # b errs on one ADHD subject only: when the resamples leave it out, the rows tie.
    right = always(True, "a")
    scores = {s: [1.0 if LABELS[s] == "adhd" else -1.0] * N_SLICES[s] for s in LABELS}
    scores["a0"] = [-1.0] * N_SLICES["a0"]
    wrong_on_a0 = predictions("b", scores, LABELS)
    units = protocol.units_of(right)
    weights = protocol.resample_weights(units.labels, 500, seed=0)
    c = protocol.compare(protocol.subject_counts(right, units)["slice"],
                         protocol.subject_counts(wrong_on_a0, units)["slice"], weights, None)
    assert c["diff"] > 0 and c["ci"][0] == 0.0 and c["verdict"] == "not distinguishable"


def test_fewer_than_three_subjects_of_a_class_means_no_interval_and_no_verdict():
    two_adhd = {s: lbl for s, lbl in LABELS.items() if s != "a2"}
    rows = predictions("row", {s: [1.0] for s in two_adhd}, two_adhd)
    units = protocol.units_of(rows)
    assert units.per_label() == {"control": 4, "adhd": 2}
    note = protocol.ci_note(units, n_boot=100)
    assert note == "n/a: 2 adhd test subject(s); a CI needs at least 3 per class (pool the folds)"
    counts = protocol.subject_counts(rows, units)
    level = protocol.pooled_level(counts["slice"], None, note, level="slice", n=len(rows))
    assert level["ci"] is None and level["ci_note"] == note and level["hm"] == pytest.approx(2 * 0.0 / 1.0)
    c = protocol.compare(counts["slice"], counts["slice"], None, note)
    assert c["ci"] is None and c["verdict"] == "n/a" and c["ci_note"] == note
    assert protocol.ci_note(protocol.units_of(always(True)), n_boot=100) is None
    assert protocol.ci_note(protocol.units_of(always(True)), n_boot=0) == "n/a: bootstrap = 0 (no resamples)"


def test_resamples_draw_subjects_within_each_label():
    labels = np.array([0] * 4 + [1] * 3)
    weights = protocol.resample_weights(labels, 1000, seed=2)
    assert weights.shape == (1000, 7)
    assert np.all(weights[:, labels == 0].sum(axis=1) == 4) and np.all(weights[:, labels == 1].sum(axis=1) == 3)
    assert np.array_equal(weights, protocol.resample_weights(labels, 1000, seed=2))
    # each subject drawn with probability 1/m per draw: on average once per resample
    assert weights.mean(axis=0) == pytest.approx(np.ones(7), abs=0.1)


def test_a_drawn_subject_brings_all_its_slices_of_every_repeat():
    r0 = predictions("row", {"c0": [-1, -1], "a0": [1, -1, -1]}, {"c0": "control", "a0": "adhd"}, repeat=0)
    r1 = predictions("row", {"c0": [1, 0.5], "a0": [1, 1, 1]}, {"c0": "control", "a0": "adhd"}, repeat=1, fold=2)
    rows = pd.concat([r0, r1], ignore_index=True)
    units = protocol.units_of(rows)
    counts = protocol.subject_counts(rows, units)
    assert list(units.subjects) == ["a0", "c0"]
    # slice level, (TP, FN, TN, FP) summed over both repeats: a0 4 right and 2 wrong, c0 2 right and 2 wrong
    assert counts["slice"].tolist() == [[4, 2, 0, 0], [0, 0, 2, 2]]
    # subject level: one unit per (repeat, subject) from the mean score: a0 wrong in r0, right in r1; c0 the reverse
    assert counts["subject"].tolist() == [[1, 1, 0, 0], [0, 0, 1, 1]]
    # so a resample row of weights [w_a0, w_c0] scales every one of those counts together
    assert (np.array([[1.0, 1.0]]) @ counts["slice"]).tolist() == [[4, 2, 2, 2]]


def test_pooled_level_reads_like_the_paper():
    rows = always(True)
    units = protocol.units_of(rows)
    counts = protocol.subject_counts(rows, units)
    weights = protocol.resample_weights(units.labels, 100, seed=0)
    level = protocol.pooled_level(counts["slice"], weights, None, level="slice", n=len(rows))
    assert (level["sensitivity"], level["specificity"], level["hm"]) == (1.0, 1.0, 1.0)
    assert level["ci"] == {"sensitivity": [1.0, 1.0], "specificity": [1.0, 1.0], "hm": [1.0, 1.0]}
    assert (level["n"], level["n_groups"], level["ci_note"]) == (sum(N_SLICES.values()), 7, None)
