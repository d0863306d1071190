"""benchmarks/audit_speed.py on the tiny dataset: 5 stand-ins, at the dataset's size and upsampled."""

import json

import pytest


def test_every_match_of_the_audit_is_timed_and_named_by_its_images(load_benchmark, tiny_dataset, capsys):
    audit_speed = load_benchmark("audit_speed")
    assert audit_speed.main([str(tiny_dataset), "--n", "5", "--sizes", "16,24", "--threads", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert "16 px, 1 thread(s):" in err and "24 px, 1 thread(s):" in err
    assert (result["train_images"], result["holdout_images"], result["synthetic_images"]) == (24, 24, 5)
    assert result["image_size"] == 16
    assert [(r["size"], r["threads"]) for r in result["rows"]] == [(16, 1), (24, 1)]
    sides = {"synth": 5, "holdout": 24, "train": 24}
    for row in result["rows"]:
        names = sorted(m["match"] for m in row["matches"])
        assert names == ["holdout-train", "synth-holdout", "synth-train", "train-train"]
        for m in row["matches"]:
            queries, refs = m["match"].split("-")
            assert (m["queries"], m["references"]) == (sides[queries], sides[refs])
            assert m["wall_s"] >= 0
        assert row["wall_s"] == pytest.approx(row["rest_s"] + sum(m["wall_s"] for m in row["matches"]), abs=0.01)
        assert row["cpu_s"] > 0 and row["candidate_pairs"] > 0 and 0 <= row["flagged"] <= 5
