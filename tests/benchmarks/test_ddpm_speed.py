"""benchmarks/ddpm_speed.py on the tiny preset's diffusion model: one training row, four sampling rows."""

import json

import pytest


def test_training_and_sampling_rates_beside_the_pggan_yardstick(load_benchmark, tmp_path, capsys):
    ddpm_speed = load_benchmark("ddpm_speed")
    out = tmp_path / "ddpm_speed.json"
    assert ddpm_speed.main(["--config", "tiny", "--threads", "1", "--images", "2", "--train-steps", "1",
                            "--repeats", "1", "--steps", "2", "--reference-images", "4", "--out", str(out),
                            "--json"]) == 0
    printed, err = capsys.readouterr()
    result = json.loads(printed)
    assert json.loads(out.read_text()) == result
    assert "# load average before" in err and "sampling 2 steps, bf16, guidance 1" in err
    assert (result["config"], result["resolution"], result["threads"], result["batch"]) == ("tiny", 16, 1, 8)
    assert result["architecture"]["channels"] == [8, 8] and result["architecture"]["resolution"] == 16
    training, *sampling = result["rows"]
    assert (training["mode"], training["precision"]) == ("training", result["train_precision"])
    assert {(r["steps"], r["precision"], r["guidance"]) for r in sampling} == {
        (2, "fp32", 0.0), (2, "fp32", 1.0), (2, "bf16", 0.0), (2, "bf16", 1.0)}
    assert len(sampling) == 4 and all(r["mode"] == "sampling" for r in sampling)
    for r in result["rows"]:
        assert r["img_per_s"] > 0 and r["reference_img_per_s"] > 0
        assert r["ratio"] == pytest.approx(r["img_per_s"] / r["reference_img_per_s"])
