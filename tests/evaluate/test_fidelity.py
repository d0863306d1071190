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
    np.testing.assert_allclose(fd.knn_radii(points, 1), [0.1, 0.1, 0.1, 0.1, 0.1, 0.1], rtol=1e-5)
    np.testing.assert_allclose(fd.knn_radii(points, 1, subjects), [10.0, 9.9, 9.8, 9.8, 9.9, 10.0], rtol=1e-5)
    np.testing.assert_allclose(fd.knn_radii(points, 2, subjects), [10.1, 10.0, 9.9, 9.9, 10.0, 10.1], rtol=1e-5)
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
                      "density", "coverage", "background", "background_real"}
    assert r["background"] == r["background_real"]  # the same images in another order
    assert abs(r["fid"]) < 1e-6 and r["swd"]["avg"] > 0 and set(r["swd_per_class"]) == {"control", "adhd"}
    assert r["ms_ssim"]["scales"] == 3 and set(r["ms_ssim"]["real"]) == {"control", "adhd"}
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0


# --- the fast paths give the numbers of the straightforward ones ------------------------------

def _reference_sliced_wasserstein(a, b, rng, repeats=4, directions=128):
    """The sort-per-call version this module used before its speed-up (issue 14)."""
    dists = []
    for _ in range(repeats):
        dirs = rng.standard_normal((directions, a.shape[1]))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        dirs = dirs.astype(a.dtype)
        pa, pb = np.sort(dirs @ a.T, axis=1), np.sort(dirs @ b.T, axis=1)
        dists.append(np.abs(pa - pb).mean(dtype=np.float64))
    return float(np.mean(dists))


def test_sliced_wasserstein_equals_the_reference_on_any_number_of_threads():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 49)).astype(np.float32)
    b = (rng.normal(size=(300, 49)) * 1.2 + 0.1).astype(np.float32)
    before, got = torch.get_num_threads(), {}
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            got[threads] = fd.sliced_wasserstein(a, b, np.random.default_rng(5), directions=40)
    finally:
        torch.set_num_threads(before)
    assert got[1] == got[3] > 0  # every block's partial sum is added in the same order
    # Equal but for the order of the float64 sum (per block of rows) and GEMM blocking.
    assert got[1] == pytest.approx(_reference_sliced_wasserstein(a, b, np.random.default_rng(5), directions=40),
                                   rel=1e-6)


def test_swd_many_gives_each_set_its_own_swd():
    real = _blobby_images(10, (32, 32), seed=1)
    fakes = {"more": _blobby_images(14, (32, 32), seed=2), "fewer": _blobby_images(6, (32, 32), seed=3),
             "same": real.copy()}
    pyramids = {name: fd.laplacian_pyramid(x) for name, x in fakes.items()}
    together = fd.swd_many(fd.laplacian_pyramid(real), pyramids, seed=4)
    for name, x in fakes.items():
        assert together[name] == fd.swd(real, x, seed=4)
    assert together["same"]["avg"] == 0.0 and together["fewer"]["avg"] > 0


def test_swd_descriptors_are_capped_only_where_both_sets_exceed_the_cap(monkeypatch):
    from brainsynth.evaluate import image_fidelity as imf

    real = _blobby_images(12, (32, 32), seed=1)
    fakes = {"larger": _blobby_images(10, (32, 32), seed=2), "smaller": _blobby_images(4, (32, 32), seed=3),
             "same": real.copy()}
    pyramids = {name: fd.laplacian_pyramid(x) for name, x in fakes.items()}
    uncapped = fd.swd_many(fd.laplacian_pyramid(real), pyramids, seed=4)
    monkeypatch.setattr(imf, "SWD_MAX_DESCRIPTORS", 6 * imf.SWD_PATCHES_PER_IMAGE)
    capped = fd.swd_many(fd.laplacian_pyramid(real), pyramids, seed=4)
    assert capped["smaller"] == uncapped["smaller"]  # 4 images: below the cap, compared as before
    assert capped["larger"]["avg"] != uncapped["larger"]["avg"] and capped["larger"]["avg"] > 0
    assert capped["same"]["avg"] == 0.0  # common random numbers: identical sets still give 0


@pytest.mark.parametrize("size, n", [(64, 12), (48, 6), (256, 3)])
def test_ms_ssim_equals_torchmetrics(size, n):
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure as reference

    x = _blobby_images(2 * n, (size, size), seed=size)
    x[n:] = gaussian_filter(x[n:] + 0.3 * x[:n], sigma=(0, 0.7, 0.7))  # related pairs: positive terms
    x[0] = 1.0 - x[0]  # an inverted pair: negative contrast terms, clipped to 0 by torchmetrics' relu
    scales, kernel = fd.ms_ssim_settings(size)
    betas = tuple(float(b) for b in np.array(fd.MS_SSIM_BETAS[:scales]) / np.sum(fd.MS_SSIM_BETAS[:scales]))
    t = torch.from_numpy(x)
    expected = reference(t[:n, None], t[n:, None], data_range=1.0, kernel_size=kernel, sigma=1.5, betas=betas,
                         reduction="none")
    from brainsynth.evaluate.image_fidelity import ms_ssim_pairs

    got = ms_ssim_pairs(t[:n], t[n:], betas)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)
    assert float(expected[0]) == 0.0 and int((expected > 0.05).sum()) >= n // 2  # both cases are covered


def _reference_fid_low_rank(real, fake):
    """The SVD form used before the speed-up."""
    a, b = real - real.mean(axis=0), fake - fake.mean(axis=0)
    na, nb = len(a) - 1, len(b) - 1
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(na * nb)
    return float(np.sum((real.mean(0) - fake.mean(0)) ** 2) + np.sum(a * a) / na + np.sum(b * b) / nb - 2 * tr_sqrt)


@pytest.mark.parametrize("rank", [None, 7])
def test_low_rank_fid_equals_the_svd_form(rank):
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(40, 90)), rng.normal(size=(55, 90)) * 1.1 + 0.2
    if rank:  # features in a 7-d subspace: most singular values are 0 and only round-off remains
        basis = rng.normal(size=(rank, 90))
        a, b = rng.normal(size=(40, rank)) @ basis, (rng.normal(size=(55, rank)) + 0.5) @ basis
    assert fd._fid_low_rank(a, b) == pytest.approx(_reference_fid_low_rank(a, b), rel=1e-10)
    assert fd._fid_low_rank(b, a) == pytest.approx(_reference_fid_low_rank(b, a), rel=1e-10)


def test_prdc_equals_brute_force():
    rng = np.random.default_rng(11)
    real, fake = rng.normal(size=(50, 6)), rng.normal(size=(40, 6)) * 1.3 + 0.4
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r3, r5 = np.sort(d_rr, axis=1)[:, 3], np.sort(d_rr, axis=1)[:, 5]
    f3 = np.sort(d_ff, axis=1)[:, 3]
    expected = {"precision": np.mean((d_fr <= r3).any(axis=1)), "recall": np.mean((d_fr <= f3[:, None]).any(axis=0)),
                "density": (d_fr <= r5).sum() / (5 * 40), "coverage": np.mean(d_fr.min(axis=0) <= r5)}
    got = fd.prdc(real, fake)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got == fd.prdc(real, fake, real_radii=fd.knn_radii_many(real, (3, 5)))


def test_fidelity_reports_give_each_set_its_own_report():
    rng = np.random.default_rng(6)
    real = _blobby_images(16, (32, 32), seed=7)
    labels = np.array(["control", "adhd"] * 8)
    feats = rng.normal(size=(16, 10))
    sets = {"a": (_blobby_images(12, (32, 32), seed=8), labels[:12], rng.normal(size=(12, 10))),
            "b": (_blobby_images(20, (32, 32), seed=9), np.array(["control", "adhd"] * 10), rng.normal(size=(20, 10)))}
    together = fd.fidelity_reports(real, labels, feats, sets, labels=("control", "adhd"), seed=3, ms_ssim_pairs=8)
    for name, (images, image_labels, f) in sets.items():
        alone = fd.fidelity_report(real, labels, feats, images, image_labels, f, labels=("control", "adhd"), seed=3,
                                   ms_ssim_pairs=8)
        assert together[name] == alone
