"""The background fidelity measure: mean intensity outside the real brains, synthetic beside real."""

import logging

import numpy as np
import pytest

from brainsynth.evaluate import fidelity as fd


def _brains(n=20, h=12, w=14, seed=0, haze=0.0):
    """Discs of radius 2-4 px around the centre (intensity ~0.7) on a black background, plus ``haze``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    r2 = (yy - h / 2) ** 2 + (xx - w / 2) ** 2
    radii = rng.uniform(2.0, 4.0, n)
    images = np.stack([(r2 < r ** 2) * rng.uniform(0.5, 0.9, (h, w)) for r in radii]).astype(np.float32)
    return np.clip(images + haze, 0, 1), r2, radii


def test_mask_is_outside_every_real_brain():
    real, r2, radii = _brains()
    mask = fd.background_mask(real)
    assert mask.shape == (12, 14)
    np.testing.assert_array_equal(mask, r2 >= radii.max() ** 2)  # the union of the discs is brain
    # A pixel where one real image in 20 (5%) is bright is brain at the default 1% share, background at 10%.
    odd = real.copy()
    odd[0, 0, 0] = 1.0
    assert not fd.background_mask(odd)[0, 0] and fd.background_mask(odd, max_share=0.1)[0, 0]


def test_grey_haze_shows_as_the_difference_and_uint8_gives_the_same():
    real, _, _ = _brains()
    synthetic, _, _ = _brains(n=9, seed=1, haze=0.1)
    out = fd.background_fidelity(real, synthetic)
    assert out["real"] == 0.0
    assert out["synthetic"] == pytest.approx(0.1, abs=1e-6) and out["difference"] == pytest.approx(0.1, abs=1e-6)
    assert out["mask_fraction"] == pytest.approx(fd.background_mask(real).mean())
    as_uint8 = fd.background_fidelity((real * 255).round().astype(np.uint8), (synthetic * 255).round().astype(np.uint8))
    assert as_uint8["difference"] == pytest.approx(0.1, abs=1 / 255)


def test_no_background_pixel_warns_and_gives_none(caplog):
    full = np.full((4, 5, 6), 0.5, dtype=np.float32)
    with caplog.at_level(logging.WARNING, logger="brainsynth.evaluate.fidelity"):
        out = fd.background_fidelity(full, full)
    assert out == {"synthetic": None, "real": None, "difference": None, "mask_fraction": 0.0}
    assert "no background pixel" in caplog.text


def test_every_fidelity_entry_carries_its_background_beside_the_real_one():
    real, _, _ = _brains(n=24, h=32, w=32)
    clean, _, _ = _brains(n=24, h=32, w=32, seed=1)
    hazy, _, _ = _brains(n=24, h=32, w=32, seed=2, haze=0.05)
    rng = np.random.default_rng(0)
    labels = np.array(["control", "adhd"] * 12)
    feats = {name: rng.normal(size=(24, 8)).astype(np.float32) for name in ("real", "clean", "hazy")}
    out = fd.fidelity_reports(real, labels, feats["real"], {"clean": (clean, labels, feats["clean"]),
                                                            "hazy": (hazy, labels, feats["hazy"])},
                              labels=("control", "adhd"), seed=0, ms_ssim_pairs=8)
    assert out["clean"]["background_real"] == out["hazy"]["background_real"] == 0.0
    assert out["clean"]["background"] == 0.0
    assert out["hazy"]["background"] == pytest.approx(0.05, abs=1e-6)
