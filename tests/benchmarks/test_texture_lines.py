"""benchmarks/texture_lines.py: the measures on hand-made images, then both sources on a tiny run."""

import json

import numpy as np
import pytest

from brainsynth.config import load_config
from brainsynth.imageset import write_image_set
from brainsynth.train.loop import run_training


@pytest.fixture(scope="module")
def texture(load_benchmark):
    return load_benchmark("texture_lines")


def _brains(n, size=32, seed=0):
    """Bright discs on black (round, as brains: their edge is no line) with independent noise inside."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = ((yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2) < (0.4 * size) ** 2
    return disc * (0.6 + 0.1 * rng.standard_normal((n, size, size)))


def test_a_grid_of_lines_scores_high_and_independent_noise_low(texture):
    plain = texture.texture_stats(_brains(50))
    assert plain["line_share"] < 0.15  # round edge and noise: no lines
    rng = np.random.default_rng(1)
    noise = 0.5 + 0.1 * rng.standard_normal((50, 32, 32))  # everywhere "brain", nothing shared
    grid = noise.copy()
    grid[:, 6:-6:4, :] += 0.3  # horizontal lines every 4 px, at the same place in every image
    grid[:, :, 6:-6:4] += 0.3  # and vertical ones
    free, lined = texture.texture_stats(noise), texture.texture_stats(grid)
    assert free["line_share"] == pytest.approx(2 / 32, abs=0.03) and lined["line_share"] > 0.6
    assert free["fixed_pattern_share"] == pytest.approx(1 / 50, abs=0.01) and lined["fixed_pattern_share"] > 0.6
    same = texture.texture_stats(np.repeat(noise[:1], 10, axis=0))
    assert same["fixed_pattern_share"] == pytest.approx(1.0)
    flat = texture.texture_stats(np.full((3, 16, 16), 0.5))
    assert flat == {"line_share": 0.0, "fixed_pattern_share": 0.0, "hp_rms": 0.0}


def test_image_sets_and_checkpoints_beside_the_real_slices(texture, tiny_dataset, tmp_path, capsys):
    overrides = [("train.pggan.phase_swd_images", 0, "test"), ("train.pggan.tensorboard", False, "test")]
    run = run_training(tiny_dataset, tmp_path / "run", load_config("tiny", overrides).train["pggan"])
    images = (np.clip(_brains(6, size=16), 0, 1) * 255).round().astype(np.uint8)
    records = [{"label": label} for label in ["control", "adhd"] * 3]
    folder = write_image_set(tmp_path / "set", images, records, synthetic=True)
    assert texture.main([str(tiny_dataset), str(folder), f"ckpt:{run}", f"ckpt:{run}:G", "--images", "8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in rows] == ["real training slices", str(folder), "run@320:G_ema", "run@320:G"]
    expected = texture.texture_stats(images / 255.0)
    assert {k: rows[1][k] for k in expected} == pytest.approx(expected, rel=1e-5)
    assert all(0.0 <= r["line_share"] <= 1.0 and r["hp_rms"] > 0 for r in rows)
    assert texture.main([str(tiny_dataset), f"ckpt:{run}@288", "--images", "4"]) == 0
    assert "| run@288:G_ema |" in capsys.readouterr().out
