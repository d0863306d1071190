"""Figures: the montage layout and reading a run's stats.jsonl."""

from __future__ import annotations

import json

import numpy as np

from brainsynth.evaluate.report import figures


def test_montage_tiles_images_with_gaps():
    tiles = figures.montage(np.zeros((5, 3, 4), np.float32), cols=2)
    assert tiles.shape == (3 * 3 + 2, 2 * 4 + 1)
    assert tiles[3, 0] == 1.0 and tiles[0, 4] == 1.0 and tiles[0, 0] == 0.0


def test_read_stats_skips_a_torn_last_line_and_curves_need_losses(tmp_path, caplog):
    ticks = [{"images_shown": 1000 * i, "res": 4, "loss_d": -1.0, "loss_g": None} for i in range(3)]
    (tmp_path / "stats.jsonl").write_text("\n".join(json.dumps(t) for t in ticks) + '\n{"images_shown": 7')
    records = figures.read_stats(tmp_path)
    assert len(records) == 3 and "skipped 1 unreadable lines" in caplog.text
    png = figures.figure_training_curves(records, "pggan")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert figures.figure_training_curves([{"images_shown": 0, "res": 4}], "pggan") is None
    assert figures.read_stats(tmp_path / "missing") == []
