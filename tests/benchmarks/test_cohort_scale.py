"""benchmarks/cohort_scale.py at its tiny scale: both modes (measure, --fit-only) and the JSON they print."""

import json

import pytest


def test_cohort_scale_measures_every_stage_and_fits_the_growth(load_benchmark, tmp_path, capsys):
    script = load_benchmark("cohort_scale")
    out = tmp_path / "scale"
    assert script.main(["--out", str(out), "--tiny", "--subjects", "6", "8", "--sizes", "16", "--synthetic", "24",
                        "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert json.loads((out / "cohort_scale.json").read_text()) == result
    assert (out / "cohort_scale.png").stat().st_size > 1000
    records = sorted(result["records"], key=lambda r: r["subjects"])
    assert [(r["subjects"], r["size"]) for r in records] == [(6, 16), (8, 16)]
    small, large = records
    assert small["train_slices"] < large["train_slices"] and large["subjects_train"] == 4  # 2 folds: half trains
    for r in records:
        assert set(r["stages"]) >= {"load", "features", "gan_train", "fidelity", "privacy", "figures", "pool", "report"}
        assert all(v["wall_s"] >= 0 and v["peak_gb"] > 0 for v in r["stages"].values())
        assert r["peak_gb"] >= max(v["peak_gb"] for v in r["stages"].values())
        assert 0 < r["cpu_s"] and 0 < r["wall_s"] <= r["process_wall_s"] and 0 <= r["others_cpu_share"] <= 1
        assert r["prepare"]["wall_s"] > 0 and set(r["memorization"]) == {"g0", "g1"}
    fit = result["fit"]["16"]
    assert fit["train_slices"] == [small["train_slices"], large["train_slices"]]
    per_subject = large["train_slices"] / large["subjects_train"]
    assert fit["target_train_slices"] == pytest.approx(960 * 0.5 * per_subject, rel=1e-6)
    evaluate = fit["stages"]["evaluate"]
    assert evaluate["measured_at_largest"] == large["wall_s"] and evaluate["exponent"] is not None
    assert evaluate["exponent_used"] == max(evaluate["exponent"], evaluate["exponent_last_two"], 0.0)
    assert evaluate["extrapolated"] == pytest.approx(
        large["wall_s"] * (fit["target_train_slices"] / large["train_slices"]) ** evaluate["exponent_used"], rel=1e-2)
    # --fit-only: the same records refitted, nothing measured again
    assert script.main(["--out", str(out), "--fit-only", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["records"] == result["records"] and again["fit"] == result["fit"]
