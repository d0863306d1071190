"""benchmarks/evaluate_speed.py at tiny scale: evaluate() end to end, twice on a feature cache, and --throughput."""

import json

import pytest

STAGES = {"load", "features", "gan_train", "fidelity", "privacy", "images_per_s_features", "total"}
TINY = ["--input-size", "32", "--precision", "fp32", "--bootstrap", "10", "--threads", "1"]


@pytest.fixture
def evaluate_speed(load_benchmark, monkeypatch):
    module = load_benchmark("evaluate_speed")
    # The peak's 256-channel convolution costs seconds; a small one keeps the test about the script.
    monkeypatch.setattr(module, "PEAK_SHAPE", dict(batch=1, channels=32, size=8))
    return module


def test_end_to_end_on_the_stand_in_data_counts_every_image_featurised(evaluate_speed, capsys):
    assert evaluate_speed.main(["--size", "16", "--subjects", "6", "--slices", "4", "--n-synthetic", "12",
                                "--sets", "2"] + TINY) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mode"] == "evaluate" and "cached_rerun" not in result
    assert (result["real_images"], result["synthetic_images"], result["synthetic_sets"]) == (24, 12, 2)
    assert (result["image_size"], result["input_size"], result["precision"]) == (16, 32, "fp32")
    assert set(result["stages_s"]) == STAGES
    # Every real image of the dataset and every synthetic one goes through the extractor once.
    assert result["features_img_per_s"] == pytest.approx(36 / result["stages_s"]["features"], rel=0.01, abs=0.1)
    assert result["stages_s"]["images_per_s_features"] == pytest.approx(result["features_img_per_s"], rel=0.01, abs=0.1)
    assert result["gflop_per_img"] > 0 and result["peak_gflops"] > 0 and result["features_pct_of_peak"] > 0
    assert result["wall_s"] > 0 and result["threads"] == 1


def test_a_feature_cache_serves_the_second_run(evaluate_speed, tiny_dataset, tmp_path, capsys):
    synthetic = evaluate_speed.write_standin_synthetic(tmp_path / "synthetic", 8, 16)
    cache = tmp_path / "cache"
    assert evaluate_speed.main(["--dataset", str(tiny_dataset), "--synthetic", f"pggan={synthetic}",
                                "--feature-cache", str(cache)] + TINY) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["real_images"], result["synthetic_images"], result["synthetic_sets"]) == (48, 8, 1)
    assert any(cache.iterdir())
    rerun = result["cached_rerun"]
    assert set(rerun["stages_s"]) == STAGES and rerun["wall_s"] > 0
    assert rerun["stages_s"]["features"] < result["stages_s"]["features"]  # read back, not extracted again


def test_throughput_rows_per_precision_and_variant(evaluate_speed, capsys):
    assert evaluate_speed.main(["--throughput", "--size", "16", "--sizes", "32", "--precisions", "fp32,bf16",
                                "--variants", "eager,unfused", "--batch-sizes", "0", "--n", "4", "--repeats", "1",
                                "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert (result["mode"], result["images"], result["image_size"], result["repeats"]) == ("throughput", 4, 16, 1)
    rows = result["rows"]
    assert len(rows) == 4
    assert [json.loads(line) for line in err.splitlines() if line.startswith("{")] == rows  # as measured
    assert {(r["precision"], r["variant"]) for r in rows} == {
        ("fp32", "eager"), ("fp32", "unfused"), ("bf16", "eager"), ("bf16", "unfused")}
    assert len({r["gflop_per_img"] for r in rows}) == 1 and rows[0]["gflop_per_img"] > 0  # one network, one size
    for r in rows:
        assert r["input_size"] == 32 and r["auto_batch"] and r["batch"] >= 4
        assert r["img_per_s"] > 0 and len(r["img_per_s_all"]) == len(r["others_cpu_share"]) == 1
        assert r["achieved_gflops"] == pytest.approx(r["img_per_s"] * r["gflop_per_img"], rel=0.01, abs=0.1)
        assert r["pct_of_peak"] == pytest.approx(100 * r["achieved_gflops"] / r["peak_gflops"], rel=0.02, abs=0.1)
