"""benchmarks/phantom_effect.py on a 4-subject cohort of the tiny preset, small grid, with --overlap."""

import json

import pytest


def test_one_small_cohort_scores_both_baselines_and_the_group_ranges(load_benchmark, capsys):
    phantom_effect = load_benchmark("phantom_effect")
    assert phantom_effect.main(["--config", "tiny", "--effect", "1", "--seeds", "0", "--subjects", "4",
                                "--shape", "40", "48", "32", "--overlap", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # stdout is the JSON object alone; the lines and table went to stderr
    assert "| effect | real HM mean (SD)" in err and "| 1 | " in err
    assert (result["subjects"], result["folds"], result["seeds"], result["shape"]) == (4, 2, [0], [40, 48, 32])
    assert result["features"]["input_size"] == 32  # the tiny preset's evaluate section
    [row] = result["rows"]
    assert (row["effect"], row["seed"]) == (1.0, 0) and row["seconds"] > 0
    for which in ("real", "shortcut"):
        sen, spe, hm = (row[which][k] for k in ("sensitivity", "specificity", "hm"))
        assert 0 <= sen <= 1 and 0 <= spe <= 1
        assert hm == pytest.approx(2 * sen * spe / (sen + spe) if sen + spe else 0.0)
    assert set(row["groups"]) == {"adhd", "control"}
    for ranges in row["groups"].values():
        assert set(ranges) == {"area", "intensity", "icv_cc"}
        assert all(lo <= hi for lo, hi in ranges.values()) and ranges["icv_cc"][0] > 0
    [entry] = result["table"]
    assert entry["seeds"] == [0] and entry["real"]["hm"] == [round(row["real"]["hm"], 3)]
    assert entry["real"]["hm_mean"] == entry["real"]["hm_min"] == entry["real"]["hm_max"]
    assert entry["shortcut"]["hm_sd"] == 0.0
