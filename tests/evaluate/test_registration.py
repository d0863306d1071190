"""The aligned pixel distance: transforms recovered, brightness removed, candidates chosen, planting."""

import math

import numpy as np
import pytest

from brainsynth.evaluate.privacy import registration as reg
from brainsynth.evaluate.privacy import search
from brainsynth.evaluate.privacy.distances import feature_distances, pixel_definition
from brainsynth.evaluate.privacy.planting import FAMILIES, Plant, apply_plant, draw_plant, family_text

from privacy_data import cohort

FAMILY = reg.Family()


@pytest.fixture(scope="module")
def slices():
    images, ids, _ = cohort(0, 3, n_slices=6, size=32)
    return images, ids


def _distance(query: np.ndarray, ref: np.ndarray) -> tuple[float, np.ndarray]:
    q, r = reg.prepare(query[None], 32), reg.prepare(ref[None], 32)
    dist, params, _ = reg.refine(q, r, np.array([[0, 0]]), FAMILY)
    return float(dist[0]), params[0]


@pytest.mark.parametrize("plant, expected", [
    # (mirror, rotation deg, scale, dx, dy): x to the right, y down, as the docs say.
    (Plant(shift_px=(2.0, -1.0)), (0, 0.0, 1.0, 2.0, -1.0)),  # the bound is 2 px at 32 px
    (Plant(mirrored=True), (1, 0.0, 1.0, 0.0, 0.0)),
    (Plant(rotation_deg=7.0), (0, 7.0, 1.0, 0.0, 0.0)),
    (Plant(scale=0.92), (0, 0.0, 0.92, 0.0, 0.0)),
    (Plant(mirrored=True, rotation_deg=-6.0, scale=1.06, shift_px=(-1.0, 2.0)), (1, -6.0, 1.06, -1.0, 2.0)),
])
def test_the_transform_of_a_planted_copy_is_recovered(slices, plant, expected):
    source = slices[0][7]
    copy = apply_plant(source, plant, np.random.default_rng(0))
    dist, params = _distance(copy, source)
    assert dist < 0.05
    assert params[0] == expected[0]
    assert np.all(np.abs(params[1:] - np.array(expected[1:])) <= [0.6, 0.012, 0.35, 0.35]), params


def test_brightness_is_removed_in_closed_form_but_inverted_contrast_is_not(slices):
    source = slices[0][8]
    rng = np.random.default_rng(1)
    linear = apply_plant(source, Plant(gain=0.85, offset=0.05), rng)
    gamma = apply_plant(source, Plant(gamma=0.72), rng)
    assert _distance(linear, source)[0] < 1e-3  # a x + b exactly
    assert _distance(gamma, source)[0] < 0.05  # the quadratic curve absorbs most of a gamma of 0.72
    assert _distance(1.0 - source, source)[0] > 0.9  # a decreasing curve is no re-acquisition
    other = slices[0][14]  # another subject (slices of 6 per subject)
    assert _distance(other, source)[0] > 0.2


def test_the_search_stays_inside_its_bounds(slices):
    source = slices[0][7]
    far = apply_plant(source, Plant(rotation_deg=25.0), np.random.default_rng(2))
    dist, params = _distance(far, source)
    assert abs(params[1]) <= 10.0 + 1e-4 and dist > 0.05
    shifted = apply_plant(source, Plant(shift_px=(6.0, 0.0)), np.random.default_rng(2))
    assert abs(_distance(shifted, source)[1][3]) <= 0.0625 * 32 + 1e-4


@pytest.mark.parametrize("prefilter", [0, 8])
def test_match_keeps_the_candidates_and_finds_each_copys_source(slices, prefilter):
    images, ids = slices
    rng = np.random.default_rng(3)
    sources = [2, 9, 15]
    copies = np.stack([apply_plant(images[j], draw_plant("combined", rng, FAMILY, 32), rng) for j in sources])
    q, r = reg.prepare(copies, 32), reg.prepare(images, 32)
    m = search.match(q, r, FAMILY, k_rows=3, k_cols=1, prefilter=prefilter)
    dense = m.dense()
    assert dense.shape == m.shape == (3, len(images))
    assert np.isfinite(dense).sum(axis=1).min() >= 3  # k_rows candidates per query
    assert np.isfinite(dense).sum(axis=0).min() >= 1  # k_cols per reference
    assert list(dense.argmin(axis=1)) == sources
    assert dense.min(axis=1).max() < 0.15  # noise at 32 px survives the half-pixel blur more than at 64 px
    nearest, ref_min = m.nearest(np.repeat(np.arange(3), 6))
    assert list(nearest.index) == sources and np.allclose(nearest.distance, dense.min(axis=1))
    np.testing.assert_allclose(ref_min, dense.min(axis=0))
    t = m.transform(0, sources[0])
    assert set(t) == {"mirrored", "rotation_deg", "scale", "shift_px", "brightness"}
    with pytest.raises(KeyError):
        m.transform(0, int(np.flatnonzero(~np.isfinite(dense[0]))[0]))
    aligned = reg.align_image(images[sources[0]], t)
    assert aligned.shape == (32, 32) and 0.0 <= aligned.min() and aligned.max() <= 1.0


def test_candidate_pairs_rows_columns_and_exclusions():
    import torch

    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
    pairs = search.candidate_pairs(sim, k_rows=1, k_cols=0)
    assert pairs.tolist() == [[0, 0], [1, 1]]
    pairs = search.candidate_pairs(sim, k_rows=1, k_cols=1)
    assert pairs.tolist() == [[0, 0], [0, 2], [1, 1]]
    exclude = np.array([[True, False, False], [False, False, False]])
    assert search.candidate_pairs(sim, k_rows=1, k_cols=0, exclude=exclude).tolist() == [[0, 2], [1, 1]]


def test_sparse_selection_follows_the_dense_rule():
    import torch

    rng = np.random.default_rng(7)
    sim = rng.random((9, 14)).astype(np.float32)
    groups = np.repeat(np.arange(5), [3, 3, 3, 3, 2])
    dense = search.candidate_pairs(torch.from_numpy(sim), k_rows=2, k_cols=1, groups=groups, k_groups=2)
    pool = np.argwhere(np.ones_like(sim, bool))  # every pair listed: the sparse rule must pick the same
    sparse = search.select(pool, sim[pool[:, 0], pool[:, 1]], k_rows=2, k_cols=1, groups=groups, k_groups=2)
    assert sparse.tolist() == dense.tolist()


def test_coarse_grid_covers_the_bounds():
    grid = reg.coarse_grid(FAMILY)
    assert len(grid) == 2 * 5 * 5  # mirror x rotations -10..10 by 5 x scales 0.9..1.1
    assert math.degrees(float(grid[:, 1].max())) == pytest.approx(10.0)
    assert float(grid[:, 2].max()) == pytest.approx(math.log(1.1))
    assert len(reg.coarse_grid(reg.Family(max_rotation=0, max_scale=0, flip=False))) == 1


def test_brain_mask_ignores_brightness_changes(slices):
    image = slices[0][5]
    assert reg.brain_area(np.stack([image, 0.7 * image + 0.1]))[0] == pytest.approx(
        reg.brain_area(np.stack([image, 0.7 * image + 0.1]))[1])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_is_drawn_inside_its_ranges(family):
    rng = np.random.default_rng(4)
    for _ in range(20):
        p = draw_plant(family, rng, FAMILY, 64)
        assert abs(p.rotation_deg) <= 10 and abs(p.scale - 1) <= 0.1 + 1e-9
        assert max(abs(d) for d in p.shift_px) <= 4 and 0.7 <= p.gamma <= 1.4 and p.noise <= 0.05
        if family == "shift":
            assert any(p.shift_px) and float(p.shift_px[0]).is_integer()
        if family == "rotate":
            assert abs(p.rotation_deg) >= 2
    assert family_text(family, FAMILY, 64)


def test_distance_definitions_name_the_bounds_in_pixels():
    text = pixel_definition(FAMILY, side=64, work_size=32)
    assert "+/-4 px" in text and "+/-10 degrees" in text and "+/-10 %" in text and "32 x 32 px" in text
    assert "+/-16 px" in pixel_definition(FAMILY, side=256, work_size=32)


def test_feature_distance_is_centred_cosine():
    refs = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    queries = np.array([[2.0, 0.0], [-1.0, 0.0], [0.0, 0.0]], np.float32)
    d = feature_distances(queries, refs, centre=np.zeros(2, np.float32))
    np.testing.assert_allclose(d, [[0.0, 1.0], [2.0, 1.0], [1.0, 1.0]], atol=1e-6)
