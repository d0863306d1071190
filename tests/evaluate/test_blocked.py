"""Bounded-memory computations give the numbers of the whole-array ones they replace (small cases, tiny blocks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import pairwise_distances

from brainsynth.evaluate import fidelity as fd
from brainsynth.evaluate import image_fidelity as imf
from brainsynth.evaluate import knn_metrics
from brainsynth.evaluate.gan_train import make_classifier
from brainsynth.evaluate import linear_svm
from brainsynth.evaluate.linear_svm import PrimalSVC
from brainsynth.evaluate.privacy import nearest as nn
from brainsynth.evaluate.privacy.distances import feature_distances, feature_nearest, unit_features
from brainsynth.evaluate.privacy.fold import distance_ratio, neighbour_distance_excluding_subject


@pytest.fixture()
def clouds():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(57, 6)).astype(np.float32)
    fake = (rng.normal(size=(31, 6)) * 1.2 + 0.3).astype(np.float32)
    groups = np.repeat(np.arange(19), 3)  # 19 "subjects" of 3 slices
    return real, fake, groups


def test_blocked_knn_radii_and_prdc_equal_the_whole_matrix(clouds, monkeypatch):
    real, fake, groups = clouds
    d = pairwise_distances(real.astype(np.float64))
    d_other = np.where(groups[:, None] == groups[None, :], np.inf, d)
    whole = fd.prdc(real, fake, real_groups=groups)
    monkeypatch.setattr(knn_metrics, "COLUMN_BLOCK_BYTES", 4 * 6 * 5)  # blocks of 5 rows / columns
    radii = fd.knn_radii_many(real, (3, 5), groups)
    # float32 products: equal to the float64 distances to float32 rounding
    np.testing.assert_allclose(radii[3], np.sort(d_other, axis=1)[:, 2], rtol=1e-5)
    np.testing.assert_allclose(radii[5], np.sort(d_other, axis=1)[:, 4], rtol=1e-5)
    np.testing.assert_allclose(fd.knn_radii(real, 2), np.sort(d, axis=1)[:, 2], rtol=1e-5)
    assert fd.prdc(real, fake, real_groups=groups) == pytest.approx(whole, rel=1e-12)


def test_blocked_fid_and_subset_kid_equal_the_whole_computation(clouds, monkeypatch):
    real, fake, _ = clouds
    whole_fid = fd.fid(real, fake)
    whole_kid = fd.kid(real, fake, subsets=4, subset_size=25, seed=3)  # 57^2 + ... < 3 * 4 * 25^2: whole kernels
    monkeypatch.setattr(fd, "ROW_BLOCK", 7)
    assert fd.fid(real, fake) == pytest.approx(whole_fid, rel=1e-9)
    assert fd.fid(fake, real) == pytest.approx(whole_fid, rel=1e-9)
    # 4 subsets of 5: each subset's own kernels (the same draws)
    rng_state = torch.random.get_rng_state()
    small = fd.kid(real, fake, subsets=4, subset_size=5, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng_state)
    torch.manual_seed(3)
    draws = [(torch.randperm(57)[:5], torch.randperm(31)[:5]) for _ in range(4)]
    x, y = torch.from_numpy(real.astype(np.float64)), torch.from_numpy(fake.astype(np.float64))
    k_xx, k_yy, k_xy = fd._poly_kernel(x, x), fd._poly_kernel(y, y), fd._poly_kernel(x, y)
    expected = torch.stack([fd._unbiased_mmd2(k_xx, k_xy, k_yy, fd._mask(i, 57), fd._mask(j, 31)) for i, j in draws])
    # The subset path's dot products are float32 (its kernels and sums float64): equal to float32 rounding.
    assert small == pytest.approx((float(expected.mean()), float(expected.std(unbiased=False))), rel=1e-5)
    assert whole_kid != small


def test_blocked_pyramid_descriptors_and_background_equal_the_whole_arrays(monkeypatch):
    rng = np.random.default_rng(1)
    real = rng.random((23, 32, 32)).astype(np.float32)
    fake = rng.random((11, 32, 32)).astype(np.float32)
    whole_pyramid, whole_swd = imf.laplacian_pyramid(real), imf.swd(real, fake, seed=2)
    mask = fd.background_mask(real, level=0.5, max_share=0.6)
    whole_background = (fd.background_intensity(fake, mask), mask)
    monkeypatch.setattr(imf, "PYRAMID_BLOCK", 4)
    monkeypatch.setattr(imf, "DESCRIPTOR_BLOCK", 49 * 10)
    monkeypatch.setattr(imf, "DESCRIPTOR_BYTES", 0)  # both sides' descriptors gathered only as needed
    monkeypatch.setattr(fd, "IMAGE_BLOCK", 5)
    for a, b in zip(imf.laplacian_pyramid(real), whole_pyramid):
        np.testing.assert_array_equal(a, b)
    assert imf.swd(real, fake, seed=2) == pytest.approx(whole_swd, rel=1e-5)
    assert fd.background_intensity(fake, mask) == pytest.approx(whole_background[0], rel=1e-6)
    np.testing.assert_array_equal(fd.background_mask(real, level=0.5, max_share=0.6), whole_background[1])


def test_primal_svm_solves_liblinears_problem():
    rng = np.random.default_rng(2)
    x = np.maximum(rng.normal(size=(600, 40)) + 0.2, 0).astype(np.float32)
    x[:, 3] = 0.0  # a dead ReLU unit: zero variance
    y = (x @ rng.normal(size=40) + rng.normal(size=600) > 0.5).astype(int)
    test = np.maximum(rng.normal(size=(200, 40)) + 0.2, 0).astype(np.float32)
    reference = make_classifier(0).fit(x, y).decision_function(test)
    ours = PrimalSVC().fit(x, y).decision_function(test)
    assert np.corrcoef(reference, ours)[0, 1] > 0.9999
    assert np.mean((reference > 0) == (ours > 0)) >= 0.99
    np.testing.assert_allclose(ours, reference, atol=2e-3 * np.abs(reference).max())


def test_primal_svm_active_rows_gathered_or_in_blocks_give_one_product(monkeypatch):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    active = np.sort(rng.choice(300, 170, replace=False))
    mean, scale = x.mean(axis=0).astype(np.float64), x.std(axis=0).astype(np.float64)
    v, u = rng.normal(size=13), rng.normal(size=170)
    standardised = np.c_[(x[active] - mean) / scale, np.ones(170)]  # [A, D + 1], float64
    gathered = linear_svm.ActiveRows(x, active, mean, scale)
    monkeypatch.setattr(linear_svm, "ACTIVE_BYTES", 0)
    monkeypatch.setattr(linear_svm, "ROWS", 64)
    blocked = linear_svm.ActiveRows(x, active, mean, scale)
    assert gathered.gathered is not None and gathered.gathered.shape == (170, 12) and blocked.gathered is None
    for rows in (gathered, blocked):
        np.testing.assert_allclose(rows.times(v), standardised @ v, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(rows.transpose_times(u), standardised.T @ u, rtol=1e-5, atol=1e-4)


def test_primal_svm_stops_where_liblinear_stops():
    # liblinear's primal solver stops at tol * min(n+, n-) / n of the starting gradient norm, tol = LinearSVC's.
    assert make_classifier(0)[-1].tol == linear_svm.TOLERANCE
    assert linear_svm.stopping_share([30, 70]) == pytest.approx(linear_svm.TOLERANCE * 0.3)
    assert linear_svm.stopping_share([0, 5]) == pytest.approx(linear_svm.TOLERANCE / 5)


def test_nearest_from_pairs_and_from_blocks_equal_the_dense_ratio():
    rng = np.random.default_rng(3)
    dense = rng.random((9, 12)).astype(np.float32)
    dense[rng.random((9, 12)) < 0.5] = np.inf  # pairs that were no candidate
    dense[4] = np.inf  # a query without any candidate
    subjects = np.array(list("aaabbbcccddd"))
    groups = np.unique(subjects, return_inverse=True)[1]
    ratio, other = distance_ratio(dense, subjects)
    pairs = np.argwhere(np.isfinite(dense))
    sparse, ref_min = nn.from_pairs(9, 12, pairs, dense[pairs[:, 0], pairs[:, 1]], groups)
    blocked, ref_min_blocked = nn.from_blocks(lambda lo, hi: torch.from_numpy(dense[lo:hi]), 9, groups, block_rows=2)
    for found in (sparse, blocked):
        np.testing.assert_allclose(found.ratio, ratio)
        np.testing.assert_allclose(found.other, other)
        np.testing.assert_allclose(found.distance, dense.min(axis=1))
        assert list(found.index[np.isfinite(found.distance)]) == list(dense.argmin(axis=1)[np.isfinite(found.distance)])
    np.testing.assert_allclose(ref_min, dense.min(axis=0))
    np.testing.assert_allclose(ref_min_blocked, dense.min(axis=0))


def test_feature_nearest_in_blocks_equals_the_dense_feature_distance(monkeypatch):
    rng = np.random.default_rng(4)
    train, queries = rng.random((15, 8)).astype(np.float32), rng.random((7, 8)).astype(np.float32)
    subjects = np.repeat(np.array(["a", "b", "c", "d", "e"]), 3)
    groups = np.unique(subjects, return_inverse=True)[1]
    centre = train.mean(axis=0)
    dense_q, dense_t = feature_distances(queries, train, centre), feature_distances(train, train, centre)
    monkeypatch.setattr("brainsynth.evaluate.privacy.distances.BLOCK_BYTES", 16 * 15 * 2)  # 2 rows per block
    t_unit = unit_features(train, centre, block_rows=4)
    found, ref_min = feature_nearest(unit_features(queries, centre), t_unit, groups)
    np.testing.assert_allclose(found.ratio, distance_ratio(dense_q, subjects)[0], rtol=1e-5)
    np.testing.assert_allclose(ref_min, dense_q.min(axis=0), rtol=1e-5, atol=1e-6)
    loo, _ = feature_nearest(t_unit, t_unit, groups, query_groups=groups)
    np.testing.assert_allclose(loo.distance, neighbour_distance_excluding_subject(dense_t, subjects), rtol=1e-5)
    masked = np.where(subjects[:, None] == subjects[None, :], np.inf, dense_t)
    np.testing.assert_allclose(loo.ratio, distance_ratio(masked, subjects)[0], rtol=1e-5)
