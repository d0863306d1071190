"""The shortcut baseline's global per-slice features (brainsynth.evaluate.shortcut)."""

from __future__ import annotations

import numpy as np
import pytest

from brainsynth.evaluate import gan_train, shortcut
from brainsynth.evaluate.shortcut import (
    BACKGROUND_THRESHOLD, FEATURE_NAMES, global_slice_features, relative_slice_positions)


def test_known_images_give_hand_computed_features():
    images = np.zeros((3, 4, 5), dtype=np.float32)  # unequal sides: a transposed axis would show
    images[0, :2, :] = 0.5  # 10 of 20 pixels at 0.5
    images[1, 0, :2] = [0.2, 0.6]  # 2 of 20 pixels, mean 0.4, SD 0.2
    images[1, 3, 4] = 0.8 * BACKGROUND_THRESHOLD  # below the threshold: background
    # images[2] is all background
    feats = global_slice_features(images, np.array([0.0, 0.5, 1.0]))
    assert feats.shape == (3, 4) and feats.dtype == np.float64
    np.testing.assert_allclose(feats, [[0.5, 0.5, 0.0, 0.0],
                                       [0.1, 0.4, 0.2, 0.5],
                                       [0.0, 0.0, 0.0, 1.0]], atol=1e-12)
    assert FEATURE_NAMES == ("brain_area", "mean_intensity", "sd_intensity", "slice_position")


def test_uint8_images_are_read_on_the_unit_scale():
    as_uint8 = np.zeros((1, 6, 7), dtype=np.uint8)
    as_uint8[0, 1:4, 2:6] = [[51, 102, 153, 204]] * 3  # 12 pixels: 0.2, 0.4, 0.6, 0.8 (x3)
    as_uint8[0, 0, 0] = 12  # 12/255 < 0.05: background
    feats = global_slice_features(as_uint8, np.array([0.25]))[0]
    values = np.array([0.2, 0.4, 0.6, 0.8])
    np.testing.assert_allclose(feats, [12 / 42, values.mean(), values.std(), 0.25])
    np.testing.assert_allclose(global_slice_features(as_uint8.astype(np.float32) / 255.0, [0.25])[0], feats)


def test_blocks_of_slices_give_the_features_of_all_at_once(monkeypatch):
    rng = np.random.default_rng(0)
    images = (rng.random((7, 6, 5)) * (rng.random((7, 1, 1)) > 0.2)).astype(np.float32)  # one slice all background
    position = np.linspace(0.0, 1.0, 7)
    whole = global_slice_features(images, position)
    monkeypatch.setattr(shortcut, "ROWS", 3)  # blocks of 3, 3 and 1 slices
    np.testing.assert_array_equal(global_slice_features(images, position), whole)


def test_relative_positions_per_subject():
    subjects = np.array(["b", "a", "a", "a", "b", "c"])
    slices = np.array([40, 30, 40, 35, 60, 50])
    np.testing.assert_allclose(relative_slice_positions(subjects, slices), [0.0, 0.0, 1.0, 0.5, 1.0, 0.0])


@pytest.mark.parametrize("images, position, message", [
    (np.zeros((2, 4)), [0.0, 1.0], r"expected images \[N, H, W\], got shape \(2, 4\)"),
    (np.zeros((2, 4, 4)), [0.0], r"slice_position must have shape \(2,\), got \(1,\)"),
    (np.zeros((2, 4, 4)), [0.0, 1.5], r"slice_position must lie in \[0, 1\]"),
])
def test_bad_arguments(images, position, message):
    with pytest.raises(ValueError, match=message):
        global_slice_features(images, np.array(position))


def test_the_svm_separates_groups_that_differ_in_brain_area_only():
    # The baseline's purpose: a group difference in a global cue is found by the same SVM.
    rng = np.random.default_rng(0)
    n, size = 40, 16
    labels = np.repeat([0, 1], n)
    radius = np.where(labels == 1, 5.0, 7.0) + rng.normal(0, 0.3, 2 * n)  # ADHD: smaller brains
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    images = (np.hypot(yy, xx)[None] < radius[:, None, None]) * rng.uniform(0.4, 0.6, (2 * n, size, size))
    feats = global_slice_features(images, rng.uniform(0, 1, 2 * n))
    train = np.arange(2 * n) % 2 == 0
    scores = gan_train.fit_and_score(feats[train], labels[train], feats[~train])
    assert gan_train.confusion_metrics(labels[~train], (scores > 0).astype(int))["hm"] == 1.0
