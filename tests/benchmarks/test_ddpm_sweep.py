"""benchmarks/ddpm_sweep.py on the tiny dataset: a PGGAN and a diffusion run, then --reuse of one of them."""

import json

import pytest
import yaml

SPEC = {"preset": "tiny", "images_per_label": 3, "runs": [
    {"name": "pg", "model": "pggan", "set": {"total_images": 32, "schedule": "fit", "tick_images": 16}},
    {"name": "dd", "model": "ddpm", "set": {"total_images": 16, "tick_images": 8, "patch": 2},
     "generate": {"steps": 2}},
]}
METRICS = ("swd", "fid", "kid", "precision", "recall", "density", "coverage", "background")


def test_runs_are_trained_sampled_and_scored_and_reuse_keeps_the_training(load_benchmark, tiny_dataset, tmp_path,
                                                                          capsys):
    ddpm_sweep = load_benchmark("ddpm_sweep")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    args = ["--dataset", str(tiny_dataset), "--out", str(tmp_path / "out"), "--spec", str(spec), "--json"]
    assert ddpm_sweep.main(args) == 0
    printed, err = capsys.readouterr()
    first = json.loads(printed)
    assert "| name | train_s |" in err
    assert (first["preset"], first["images_per_label"]) == ("tiny", 3)
    real, pg, dd = first["rows"]
    assert [real["name"], pg["name"], dd["name"]] == ["real-train", "pg", "dd"]
    assert json.loads((tmp_path / "out" / "sweep.json").read_text()) == first["rows"]
    assert (pg["images"], dd["images"]) == (32, 16)  # each run's total_images from the spec
    for row in (pg, dd):
        assert row["train_s"] > 0 and row["train_img_s"] > 0 and row["sample_s"] > 0
        assert len(list((tmp_path / "out" / "synthetic" / row["name"]).iterdir())) > 0
    for row in first["rows"]:
        assert all(0 <= row[k] <= 1 for k in ("precision", "recall", "coverage")) and row["swd"] >= 0
    assert real["swd"] < min(pg["swd"], dd["swd"])  # two real samples are closer than a 32-image generator

    assert ddpm_sweep.main(args + ["--reuse", "--only", "dd"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in again["rows"]] == ["real-train", "dd"]
    assert again["rows"][0] == real
    reused = again["rows"][1]
    assert (reused["train_s"], reused["images"]) == (dd["train_s"], dd["images"])  # the training was kept
    assert {k: reused[k] for k in METRICS} == pytest.approx({k: dd[k] for k in METRICS})  # same seeds, same images
