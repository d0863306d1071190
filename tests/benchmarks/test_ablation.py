"""benchmarks/ablation.py: its settings, its scoring against the real test images, its table."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def ablation(load_benchmark):
    return load_benchmark("ablation")


def test_a_setting_is_a_name_a_model_and_train_keys(ablation):
    s = ablation.parse_setting(["wide", "pggan", "widths={4: 128, 8: 64}", "lr=0.0002"])
    assert s == {"name": "wide", "model": "pggan", "sets": ["widths={4: 128, 8: 64}", "lr=0.0002"]}
    with pytest.raises(SystemExit, match="MODEL pggan or dcgan"):
        ablation.parse_setting(["wide", "stylegan"])
    with pytest.raises(SystemExit, match="'lr' is not KEY=VALUE"):
        ablation.parse_setting(["wide", "pggan", "lr"])
    with pytest.raises(SystemExit, match="reserved"):
        ablation.parse_setting(["real-train", "dcgan"])


def test_seeds_are_pooled_as_mean_and_sample_sd(ablation):
    agg = ablation.aggregate([{"swd": 1.0, "fid": 10.0}, {"swd": 3.0, "fid": 20.0}])
    assert agg["seeds"] == 2
    assert agg["swd"] == pytest.approx(2.0) and agg["swd_sd"] == pytest.approx(np.sqrt(2.0))
    assert agg["fid"] == pytest.approx(15.0) and "recall" not in agg
    table = ablation.table([{"name": "a", "model": "pggan", "sets": ["lr=0.001"]}], {"a": agg}, 0.0)
    assert "| a | pggan | lr=0.001 | 2.00 ± 1.41 | 15 ± 7.07 |" in table


def test_the_real_images_score_zero_against_themselves_and_a_grey_background_shows(ablation):
    rng = np.random.default_rng(0)
    n, size = 24, 32
    yy, xx = np.mgrid[:size, :size]
    disk = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4) ** 2  # [H, W]
    real = (disk * rng.uniform(0.4, 1.0, (n, size, size))).astype(np.float32)  # black outside the disk
    labels = np.array(["control", "adhd"] * (n // 2))
    feats = rng.normal(size=(n, 8))
    grey = np.clip(real + 0.25, 0, 1)  # the same brains on a grey background
    rows = ablation.score(real, labels, feats, {"same": (real, labels, feats), "grey": (grey, labels, feats)}, 0)
    assert rows["same"]["swd"] == pytest.approx(0.0, abs=1e-9)
    assert rows["same"]["fid"] == pytest.approx(0.0, abs=1e-6)
    assert rows["same"]["precision"] == 1.0 and rows["same"]["recall"] == 1.0
    assert rows["same"]["background"] == rows["same"]["background_real"] == 0.0
    assert rows["grey"]["background"] == pytest.approx(0.25)
    assert rows["grey"]["swd"] > 1.0


def test_train_and_score_then_score_only_reuses_every_run(ablation, tiny_dataset, tmp_path, capsys):
    out = tmp_path / "abl"
    args = [str(tiny_dataset), "--out", str(out), "--config", "tiny", "--images-per-label", "3", "--json",
            "--setting", "pg", "pggan", "total_images=32", "schedule=fit",
            "--setting", "dc", "dcgan", "total_images=16", "ema_bn=copy", "--grids", "pg"]
    assert ablation.main(args) == 0
    printed, err = capsys.readouterr()
    first = json.loads(printed)
    assert json.loads((out / "ablation.json").read_text()) == first
    assert "training pg (pggan)" in err and "training dc (dcgan)" in err
    assert "old name" not in (out / "logs" / "dc-s0.train.log").read_text()  # ema_bn is train.dcgan's own key
    assert (first["config"], first["seeds"], first["images_per_label"], first["input_size"]) == ("tiny", [0], 3, 32)
    assert set(first["runs"]) == {"real-train", "pg-s0", "dc-s0"}
    assert list(first["summary"]) == ["real-train", "pg", "dc"]
    pg, dc = first["runs"]["pg-s0"], first["runs"]["dc-s0"]
    assert (pg["images"], dc["images"], pg["resolution"], dc["resolution"]) == (32, 16, 16, 16)
    for run in (pg, dc):
        assert run["cpu_s"] > 0 and run["process_s"] > 0 and run["train_s"] > 0
        assert 0 <= run["precision"] <= 1 and run["swd"] > first["runs"]["real-train"]["swd"]
    assert first["summary"]["pg"]["seeds"] == 1 and first["summary"]["pg"]["swd"] == pg["swd"]
    assert (out / "grids" / "pg-s0.png").is_file() and not (out / "grids" / "dc-s0.png").exists()

    checkpoints = sorted((out / "runs" / "pg-s0" / "checkpoints").iterdir())
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    assert ablation.main(args[:-2] + ["--setting", "never", "pggan", "--score-only"]) == 0
    printed, err = capsys.readouterr()
    again = json.loads(printed)
    assert "skipping never-s0: no finished run" in err and "training" not in err
    assert [p.stat().st_mtime_ns for p in sorted((out / "runs" / "pg-s0" / "checkpoints").iterdir())] == stamps
    assert set(again["runs"]) == {"real-train", "pg-s0", "dc-s0"} and "never" not in again["summary"]
    for key in ("pg-s0", "dc-s0"):  # the same runs and sets, scored again: the same figures
        assert again["runs"][key] == first["runs"][key]
