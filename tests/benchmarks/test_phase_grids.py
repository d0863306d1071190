"""benchmarks/phase_grids.py on a tiny PGGAN run: the figure, the table, the real floor per phase."""

import json

import numpy as np
import pytest
from PIL import Image

from brainsynth.config import load_config
from brainsynth.train.loop import run_training


@pytest.fixture(scope="module")
def phase_grids(load_benchmark):
    return load_benchmark("phase_grids")


def test_a_tiny_run_gives_one_block_per_phase(phase_grids, tiny_dataset, tmp_path, capsys):
    overrides = [("train.pggan.phase_swd_images", 12, "test"), ("train.pggan.tensorboard", False, "test")]
    run = run_training(tiny_dataset, tmp_path / "run", load_config("tiny", overrides).train["pggan"])
    out = tmp_path / "phases.png"
    assert phase_grids.main([str(run), "--out", str(out), "--dataset", str(tiny_dataset), "--scale", "1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # 16 px: 4 px stable, then a fade and a stable phase at 8 and at 16 px
    assert [(r["phase"], r["kind"], r["res"]) for r in rows] == [
        (0, "stable", 4), (1, "fade", 8), (2, "stable", 8), (3, "fade", 16), (4, "stable", 16)]
    assert all(r["real_floor"] > 0 and r["swd"]["avg"] > 0 for r in rows)
    with Image.open(out) as im:
        pixels = np.asarray(im)
    # Each block: a 14 px header, the G_ema row and the real row (16 px cells, 2 px gap), 4 px between blocks.
    assert pixels.shape == (5 * (14 + 16 + 2 + 16 + 4), 4 * 16 + 3 * 2)
    assert phase_grids.main([str(run), "--out", str(tmp_path / "plain.png")]) == 0
    assert "| 4 | stable | 16 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no phases.jsonl records"):
        phase_grids.main([str(tmp_path), "--out", str(tmp_path / "none.png")])
