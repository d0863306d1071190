"""benchmarks/quality_vs_compute.py at tiny scale: both modes, the JSON, the figure, the reuse of finished runs."""

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def qvc(load_benchmark):
    return load_benchmark("quality_vs_compute")


def test_budget_keys_and_bases(qvc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert qvc.budget_sets("pggan", 300) == ["train.pggan.schedule=compute", "train.pggan.total_images=null",
                                             "train.pggan.compute_images=300"]
    assert qvc.budget_sets("ddpm", 300) == ["train.ddpm.total_images=300"]
    demo = qvc.load_config("demo").train
    assert qvc.parse_base(["dcgan=7"]) == {"pggan": demo["pggan"].compute_images, "dcgan": 7, "ddpm": 40_000}
    assert qvc.parse_base([], "tiny")["pggan"] is None  # the tiny preset has no compute budget
    with pytest.raises(SystemExit, match="expected MODEL=IMAGES"):
        qvc.parse_base(["gan=7"])
    with pytest.raises(SystemExit, match="the preset gives no budget for pggan; pass --base MODEL=IMAGES"):
        qvc.main(["dataset", "--out", "unused", "--config", "tiny", "--models", "pggan"])
    points = [{"cpu_s": 10.0, "swd": 30.0}, {"cpu_s": 20.0, "swd": 11.0}, {"cpu_s": 40.0, "swd": 9.0}]
    assert qvc.first_within(points, {"swd": 10.0}) == 20.0 and qvc.first_within(points, {"swd": 1.0}) is None


def test_snapshot_budgets_must_be_multiples_of_the_smallest(qvc, tmp_path):
    with pytest.raises(SystemExit, match="every factor must be a whole multiple of the smallest, 0.3"):
        qvc.snapshot_points(tmp_path, tmp_path, "dcgan", [0.3, 0.5], 100, None)


def test_tiny_run_trains_scores_plots_and_reuses(qvc, tmp_path, capsys, tiny_dataset):
    dataset = tiny_dataset
    out = tmp_path / "qvc"
    args = [str(dataset), "--out", str(out), "--config", "tiny", "--models", "pggan", "ddpm", "--factors", "0.5", "1",
            "--base", "pggan=64", "ddpm=64", "--images-per-label", "12", "--json"]
    assert qvc.main(args) == 0
    result = json.loads((out / "quality_vs_compute.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert (out / "quality_vs_compute.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [(p["model"], p["factor"], p["budget_images"]) for p in result["points"]] == [
        ("pggan", 0.5, 32), ("pggan", 1.0, 64), ("ddpm", 0.5, 32), ("ddpm", 1.0, 64)]
    for p in result["points"]:
        assert p["cpu_s"] > 0 and p["wall_s"] > 0 and 0.0 <= p["others_cpu_share"] <= 1.0
        assert np.isfinite(p["swd"]) and 0.0 <= p["precision"] <= 1.0 and 0.0 <= p["recall"] <= 1.0
    pg = [p for p in result["points"] if p["model"] == "pggan"]
    assert pg[1]["images_shown"] > pg[0]["images_shown"] > 32  # the compute schedule shows more, cheaper, images
    ddpm = [p for p in result["points"] if p["model"] == "ddpm"]
    # One ddpm run to the largest budget, checkpointed at the smaller one: its CPU seconds by then.
    assert [p["images_shown"] for p in ddpm] == [32, 64] and 0 < ddpm[0]["cpu_s"] < ddpm[1]["cpu_s"]
    long_ckpt = out / "runs" / "ddpm-long" / "checkpoints" / "ckpt-000000032.pt"
    assert (out / "runs" / "ddpm-x0.5" / "checkpoints" / "ckpt-000000032.pt").samefile(long_ckpt)
    ref = result["reference"]
    assert set(ref) >= {"swd", "fid", "precision", "recall"} and ref["swd"] > 0
    assert set(result["swd_within_1_2x_reference_at_cpu_s"]) == {"pggan", "ddpm"}
    assert result["demo_cpu_s"] == pg[1]["cpu_s"]
    assert "CPUs" in result["machine"]

    timing = (out / "runs" / "pggan-x1" / "qvc_timing.json").read_text()
    assert qvc.main(args) == 0  # finished runs and sets are reused, not trained again
    capsys.readouterr()
    assert (out / "runs" / "pggan-x1" / "qvc_timing.json").read_text() == timing

    scored = tmp_path / "scored"
    assert qvc.main([str(dataset), "--out", str(scored), "--config", "tiny", "--json",
                     "--score", f"again={out / 'sets' / 'ddpm-x1'}:12.5"]) == 0
    only = json.loads(capsys.readouterr().out)
    assert only["points"] == [] and not (scored / "quality_vs_compute.png").exists()
    again = only["extra"]["again"]
    assert again["cpu_s"] == 12.5
    same = next(p for p in result["points"] if p["model"] == "ddpm" and p["factor"] == 1.0)
    assert again["swd"] == pytest.approx(same["swd"]) and again["precision"] == same["precision"]
    with pytest.raises(SystemExit, match="expected NAME=DIR"):
        qvc.main([str(dataset), "--out", str(scored), "--score", "nodir"])
