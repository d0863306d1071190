"""Fidelity metrics against direct computations and simple cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.ndimage import gaussian_filter

from brainsynth.evaluate import fidelity as fd


def direct_fid(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root))


@pytest.mark.parametrize("n1, n2, dim", [(60, 45, 12), (9, 14, 20)])  # full-rank path, low-rank path
def test_fid_equals_the_direct_computation(n1, n2, dim):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(n1, dim))
    b = rng.normal(size=(n2, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 0.3
    assert fd.fid(a, b) == pytest.approx(direct_fid(a, b), rel=1e-6)


def test_both_fid_paths_agree_and_identical_sets_give_zero():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 8)), rng.normal(size=(25, 8)) + 1.0
    assert fd._fid_low_rank(a, b) == pytest.approx(fd.frechet_distance(*fd.feature_statistics(a),
                                                                       *fd.feature_statistics(b)), rel=1e-9)
    assert abs(fd.fid(a, a)) < 1e-9
    wide = rng.normal(size=(10, 50))
    assert abs(fd.fid(wide, wide)) < 1e-9


def test_kid_matches_torchmetrics():
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(40, 16)), rng.normal(size=(30, 16)) * 1.3 + 0.2
    ref = KernelInceptionDistance(feature=Identity(), subsets=100, subset_size=30)
    ref.update(torch.from_numpy(a), real=True)
    ref.update(torch.from_numpy(b), real=False)
    torch.manual_seed(7)
    ref_mean, ref_std = (float(v) for v in ref.compute())
    assert fd.kid(a, b, seed=7, subset_size=30) == pytest.approx((ref_mean, ref_std), rel=1e-9)


def test_kid_subsets_are_smaller_than_both_sets():
    assert fd.kid_subset_size(40, 30) == 15 and fd.kid_subset_size(5000, 3000) == 1000
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(40, 8)), rng.normal(size=(30, 8))
    # Subsets as large as the smaller set would be that whole set in every draw: no spread over subsets.
    assert fd.kid(a, b, subset_size=30)[1] > 0 and fd.kid(a, b)[1] > fd.kid(a, b, subset_size=30)[1]


def test_kid_near_zero_for_one_distribution_and_large_for_a_shift():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    same, _ = fd.kid(a, b)
    shifted, _ = fd.kid(a, b + 1.0)
    assert abs(same) < 0.02 and shifted > 0.5
    # identical sets read slightly negative: self-pairs k(x, x) only enter the cross term
    assert fd.kid(a, a)[0] < 0


def test_precision_recall_density_coverage_on_known_point_clouds():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(50, 3))
    assert fd.precision_recall(real, real) == (1.0, 1.0)
    density, coverage = fd.density_coverage(real, real)
    assert coverage == 1.0 and density >= 1.0  # every point sits in its own ball, plus its k neighbours'
    assert fd.precision_recall(real, real + 100.0) == (0.0, 0.0)
    assert fd.density_coverage(real, real + 100.0) == (0.0, 0.0)
    # Fakes collapsed on one real point (mode collapse): precise, but no recall or coverage.
    collapsed = np.repeat(real[:1], 20, axis=0) + rng.normal(scale=1e-6, size=(20, 3))
    precision, recall = fd.precision_recall(real, collapsed)
    _, coverage = fd.density_coverage(real, collapsed)
    assert precision == 1.0 and recall <= 4 / 50 and coverage <= 6 / 50


def test_knn_radii_of_real_images_reach_only_other_subjects():
    # Two subjects, each a tight cluster of near-duplicate slices, 10 apart.
    points = np.array([[0.0], [0.1], [0.2], [10.0], [10.1], [10.2]])
    subjects = np.array(["s1"] * 3 + ["s2"] * 3)
    np.testing.assert_allclose(fd.knn_radii(points, 1), [0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    np.testing.assert_allclose(fd.knn_radii(points, 1, subjects), [10.0, 9.9, 9.8, 9.8, 9.9, 10.0])
    np.testing.assert_allclose(fd.knn_radii(points, 2, subjects), [10.1, 10.0, 9.9, 9.9, 10.0, 10.1])
    with pytest.raises(ValueError, match="fewer than k=4 points of other subjects"):
        fd.knn_radii(points, 4, subjects)
    # A fake point between the clusters: outside every same-subject ball, inside the other-subject ones.
    fake = np.array([[5.0], [5.1]])
    assert fd.precision_recall(points, fake, 1)[0] == 0.0
    assert fd.precision_recall(points, fake, 1, real_groups=subjects)[0] == 1.0
    assert fd.density_coverage(points, fake, 1, real_groups=subjects)[1] > fd.density_coverage(points, fake, 1)[1]


def test_knn_radii_excludes_the_point_itself():
    points = np.array([[0.0], [1.0], [3.0], [6.0]])
    np.testing.assert_allclose(fd.knn_radii(points, 1), [1.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(fd.knn_radii(points, 2), [3.0, 2.0, 3.0, 5.0])


def _blobby_images(n: int, size: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth random blobs in [0, 1]: image-like structure at every pyramid level."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((n, *size)), sigma=(0, 1.5, 1.5))
    x = (x - x.min()) / (x.max() - x.min())
    return x.astype(np.float32)


def test_laplacian_pyramid_levels_and_reconstruction():
    x = _blobby_images(3, (64, 48), seed=0)
    pyr = fd.laplacian_pyramid(x)
    # Halving stops before the shorter side drops below 16 px.
    assert [p.shape for p in pyr] == [(3, 64, 48), (3, 32, 24)]
    assert [p.shape for p in fd.laplacian_pyramid(x[:, :, :32])] == [(3, 64, 32), (3, 32, 16)]
    # Collapsing the pyramid gives the image back exactly.
    rec = torch.from_numpy(pyr[-1]).unsqueeze(1)
    for lvl in reversed(pyr[:-1]):
        rec = fd._pyr_up(rec, lvl.shape[-2:]) + torch.from_numpy(lvl).unsqueeze(1)
    np.testing.assert_allclose(rec[:, 0].numpy(), x, atol=1e-5)  # float32 pyramid


def test_swd_zero_for_identical_sets_and_larger_for_blurred_ones():
    real = _blobby_images(12, (32, 32), seed=1)
    other = _blobby_images(12, (32, 32), seed=2)
    blurred = gaussian_filter(other, sigma=(0, 2, 2))
    same = fd.swd(real, real)
    assert set(same) == {"32", "16", "avg"} and all(v == 0.0 for v in same.values())
    fresh, blur = fd.swd(real, other), fd.swd(real, blurred)
    assert blur["32"] > 2 * fresh["32"] and blur["avg"] > fresh["avg"] > 0
    assert fd.swd(real, other, seed=5) == fd.swd(real, other, seed=5)


def test_patch_descriptors_pick_7x7_windows_inside_the_image():
    level = np.arange(2 * 9 * 10, dtype=np.float64).reshape(2, 9, 10)
    d = fd.patch_descriptors(level, np.random.default_rng(0), n_per_image=5)
    assert d.shape == (10, 49)
    patch = d[7].reshape(7, 7)  # image 1: consecutive rows differ by the row stride 10
    np.testing.assert_array_equal(np.diff(patch, axis=0), 10.0)
    np.testing.assert_array_equal(np.diff(patch, axis=1), 1.0)
    assert patch.min() >= 90  # belongs to image 1


@pytest.mark.parametrize("size, expected", [(8, (1, 7)), (16, (2, 7)), (64, (4, 7)), (256, (5, 11))])
def test_ms_ssim_settings(size, expected):
    assert fd.ms_ssim_settings(size) == expected


def test_ms_ssim_diversity_one_for_copies_lower_for_distinct_images():
    x = _blobby_images(6, (32, 32), seed=3)
    copies = np.repeat(x[:1], 6, axis=0)
    value, scales = fd.ms_ssim_diversity(copies, n_pairs=20)
    assert value == pytest.approx(1.0, abs=1e-5) and scales == 3
    distinct, _ = fd.ms_ssim_diversity(x, n_pairs=20)
    assert distinct < 0.9


def test_fidelity_report_keys():
    rng = np.random.default_rng(5)
    imgs = _blobby_images(16, (32, 32), seed=4)
    labels = np.array(["control", "adhd"] * 8)
    feats = rng.normal(size=(16, 10)).astype(np.float32)
    r = fd.fidelity_report(imgs, labels, feats, imgs[::-1].copy(), labels[::-1].copy(), feats[::-1].copy(),
                           labels=("control", "adhd"), seed=0, ms_ssim_pairs=10)
    assert set(r) == {"fid", "kid_mean", "kid_std", "swd", "swd_per_class", "ms_ssim", "precision", "recall",
                      "density", "coverage"}
    assert abs(r["fid"]) < 1e-6 and r["swd"]["avg"] > 0 and set(r["swd_per_class"]) == {"control", "adhd"}
    assert r["ms_ssim"]["scales"] == 3 and set(r["ms_ssim"]["real"]) == {"control", "adhd"}
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0
