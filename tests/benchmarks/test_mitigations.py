"""benchmarks/mitigations.py: one ``brainsynth run`` per setting, one table row each, at tiny scale."""

import json
import re

import pytest
import yaml

TINY_SETS = ["evaluate.bootstrap=20", "generate.images_per_label=8"]
SETTINGS = [
    {"name": "dc", "model": "dcgan", "overrides": ["train.snapshot_first=64"], "note": "the tiny DCGAN"},
    {"name": "dc-best", "model": "dcgan", "overrides": ["train.snapshot_first=64", "generate.select=private-best"],
     "base": "dc", "note": "selection among dc's checkpoints"},
    {"name": "pg-dp", "model": "pggan", "note": "DP-SGD of D by person",
     "overrides": ["train.pggan.mbstd_group=1", "train.pggan.precision=fp32", "train.pggan.dp_noise=1.0"]},
]


@pytest.fixture(scope="module")
def mitigations(load_benchmark):
    return load_benchmark("mitigations")


@pytest.fixture(scope="module")
def finished(mitigations, tmp_path_factory):
    """Every tiny setting run once: (OUT, settings file, the printed result)."""
    root = tmp_path_factory.mktemp("mitigations")
    settings = root / "settings.yaml"
    settings.write_text(yaml.safe_dump(SETTINGS))
    out = root / "out"
    args = ["--out", str(out), "--config", "tiny", "--settings", str(settings),
            *[a for s in TINY_SETS for a in ("--set", s)]]
    mitigations.main([*args, "--only", "dc"])  # one at a time, as on the shared machine
    result = mitigations.main([*args, "--only", "dc-best", "pg-dp", "--json"])
    return out, args, result


def test_each_setting_gets_one_row_with_utility_privacy_and_the_four_requirements(finished, capsys):
    out, _, result = finished
    on_disk = json.loads((out / "mitigations.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert [r["setting"] for r in on_disk["rows"]] == ["dc", "dc-best", "pg-dp"] and on_disk["pending"] == []
    for r in on_disk["rows"]:
        assert 0.0 <= r["gan_train_hm"] <= 1.0 and 0.0 <= r["real_hm"] <= 1.0
        # Oriented set - real and set - shortcut: the difference is the set's HM minus the row's.
        assert r["vs_real"]["diff"] == pytest.approx(r["gan_train_hm"] - r["real_hm"])
        assert r["vs_shortcut"]["diff"] == pytest.approx(r["gan_train_hm"] - r["vs_shortcut"]["shortcut_hm"])
        assert r["vs_real"]["verdict"] in ("better", "worse", "not distinguishable")
        assert 0.0 <= r["precision"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
        copies, flags = r["near_copies"], r["false_flags_half_b"]
        assert copies["n"] == 2 * 2 * 8 and 0 <= copies["k"] <= copies["n"] and flags["n"] > 0  # 2 folds x 2 labels
        assert r["excess_near_copies"] == pytest.approx(copies["rate"] - flags["rate"])
        assert 0.0 <= r["membership_half_b"]["auc"] <= 1.0 and len(r["membership_half_b"]["per_fold_auc"]) == 2
        req = r["requirements"]
        assert list(req) == ["gan_train_not_worse_than_real", "near_copies", "membership_rule_half_b", "precision"]
        assert req["precision"] == (r["precision"] >= 0.5)
        assert req["gan_train_not_worse_than_real"] == (r["vs_real"]["verdict"] != "worse")
        assert req["membership_rule_half_b"] == r["membership_half_b"]["passed"]
        assert r["misses"] == [k for k, v in req.items() if v is False]
        assert r["passes_all"] == all(v is True for v in req.values())
        assert r["command"].startswith(f"brainsynth run --out {out / r['setting']} --config tiny --set ")
        assert r["run"]["setting"] == r["setting"] and r["run"]["cpu_s"] > 0
        assert re.fullmatch(r"[0-9a-f]{7,}(\+dirty)?", r["run"]["code"])  # the commit the row was measured with
    dc, best, dp = on_disk["rows"]
    assert dc["epsilon_per_fold"] is None and dc["selection_per_fold"] is None
    assert dc["images_shown_per_fold"] == [192, 192]
    # The base's training runs were reused, not retrained: the same checkpoints to choose among.
    assert best["run"]["seeded_from"] == "dc" and set(best["run"]["seeded_stages"]) == {
        "cohort", "prepare", "r0/f0/train_dcgan", "r0/f1/train_dcgan"}
    assert all(s["chosen"].endswith(".pt") and isinstance(s["private_on_half_a"], bool)
               for s in best["selection_per_fold"]) and len(best["selection_per_fold"]) == 2
    assert dp["run"]["seeded_stages"] == ["cohort", "prepare"]
    assert len(dp["epsilon_per_fold"]) == 2 and all(e > 0 for e in dp["epsilon_per_fold"])
    assert dp["dp"]["noise_multiplier"] == 1.0 and dp["dp"]["delta"] == 1e-5
    table = (out / "mitigations.md").read_text()
    assert table.count("\n| dc") == 2 and "\n| pg-dp |" in table and "delta 1e-05" in table
    for name in ("mitigations.png", "mitigations_membership.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_only_runs_nothing_and_lists_the_settings_not_run(mitigations, finished, tmp_path, capsys):
    out, args, _ = finished
    settings = tmp_path / "more.yaml"
    settings.write_text(yaml.safe_dump([*SETTINGS, {"name": "dc-wide", "model": "dcgan",
                                                    "overrides": ["train.dcgan.width=16"]}]))
    before = json.loads((out / "mitigations.json").read_text())
    args = [*args[:args.index("--settings")], "--settings", str(settings), *args[args.index("--settings") + 2:]]
    result = mitigations.main([*args, "--collect-only", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["pending"] == ["dc-wide"] and not (out / "dc-wide").exists()
    assert printed["rows"] == before["rows"] == json.loads(json.dumps(result["rows"]))


def test_bad_settings_are_refused_with_one_line(mitigations, tmp_path):
    with pytest.raises(SystemExit, match="no such setting"):
        mitigations.main(["--out", str(tmp_path / "o"), "--only", "nonesuch"])
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump([{"name": "a", "model": "dcgan", "base": "b"}, {"name": "b", "model": "dcgan"}]))
    with pytest.raises(SystemExit, match="must be listed before it"):
        mitigations.main(["--out", str(tmp_path / "o"), "--settings", str(bad)])
    bad.write_text(yaml.safe_dump([{"name": "a", "modle": "dcgan"}]))
    with pytest.raises(SystemExit, match="expected a YAML list"):
        mitigations.main(["--out", str(tmp_path / "o"), "--settings", str(bad)])


def test_a_report_of_another_schema_is_listed_and_an_earlier_collection_supplies_its_row(mitigations, finished,
                                                                                        tmp_path):
    out, args, _ = finished
    old = tmp_path / "out"
    (old / "dc-old" / "report").mkdir(parents=True)
    report = json.loads((out / "dc" / "report" / "report.json").read_text())
    (old / "dc-old" / "report" / "report.json").write_text(json.dumps({**report, "schema_version": 6}))
    settings = tmp_path / "old.yaml"
    settings.write_text(yaml.safe_dump([{"name": "dc-old", "model": "dcgan"}]))
    base = ["--out", str(old), "--config", "tiny", "--settings", str(settings), "--collect-only"]
    result = mitigations.main(base)
    assert result["rows"] == [] and result["pending"] == ["dc-old"]
    assert "schema_version 6, but this brainsynth reads" in result["unreadable"]["dc-old"]
    earlier = json.loads((out / "mitigations.json").read_text())
    stand_in = {**earlier["rows"][0], "setting": "dc-old"}
    (tmp_path / "earlier.json").write_text(json.dumps({"rows": [stand_in, {**stand_in, "setting": "other"}]}))
    result = mitigations.main([*base, "--include", str(tmp_path / "earlier.json")])
    assert result["rows"] == [stand_in] and result["pending"] == [] and "dc-old" in result["unreadable"]
    assert "\n| dc-old |" in (old / "mitigations.md").read_text()


def test_every_demo_setting_resolves_against_the_demo_preset(mitigations):
    """A mistyped key or a refused combination fails here, not 20 minutes into a measurement."""
    from brainsynth.config import load_config

    mitigations.check_settings(mitigations.DEMO_SETTINGS)
    for setting in mitigations.DEMO_SETTINGS:
        cfg = load_config("demo", setting.sets())
        assert cfg.run.models == [setting.model], setting.name
    fixed = next(s for s in mitigations.DEMO_SETTINGS if s.name == "dcgan-augment-fixed0.5-width16")
    dcgan = load_config("demo", fixed.sets()).train["dcgan"]
    assert (dcgan.augment, dcgan.augment_p, dcgan.width) == ("fixed", 0.5, 16)


def test_the_pggan_snapshots_fall_in_the_demo_final_stable_phase(mitigations):
    """private-best audits final-resolution checkpoints only: every kept PGGAN snapshot must be one."""
    from brainsynth.config import load_config
    from brainsynth.train.schedule import build_schedule

    cfg = load_config("demo", mitigations.PGGAN_FINAL_SNAPSHOTS).train["pggan"]
    cfg.resolution = load_config("demo").prepare.size
    schedule = build_schedule(cfg)
    first = schedule.at(cfg.snapshot_first)
    assert (first.res, first.fading) == (64, False)
    assert cfg.snapshot_first < schedule.total_images == 45603
