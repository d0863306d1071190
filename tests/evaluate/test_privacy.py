"""Privacy audit: calibration on half A checked on half B, distance ratios, planted copies, membership
inference with intervals, pooling folds, the audit command and its self-test."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from brainsynth.cli import main
from brainsynth.config import AuditConfig, EvaluateConfig
from brainsynth.errors import ConfigError, InputError, OutputExistsError, SelfTestFailed
from brainsynth.evaluate import audit
from brainsynth.evaluate import features as feat
from brainsynth.evaluate.privacy import membership as mia
from brainsynth.evaluate.privacy.calibration import (
    band_edges,
    calibrate,
    calibrate_thresholds,
    split_holdout,
    wilson_interval,
)
from brainsynth.evaluate.privacy.planting import FAMILIES, apply_plant, draw_plant
from brainsynth.evaluate.privacy.fold import (
    audit_fold,
    distance_ratio,
    family_of,
    fold_reference,
    neighbour_distance_excluding_subject,
)
from brainsynth.evaluate.privacy.summary import pool_folds, privacy_audit
from brainsynth.evaluate.report.schema import SCHEMA_VERSION, AuditReport, PrivacySummary, SelfTestReport
from brainsynth.evaluate.privacy.selftest import selftest
from brainsynth.imageset import read_image_set, write_image_set
from brainsynth.shareable import absolute_paths

from privacy_data import RandomProjection, cohort, write_dataset

CFG = AuditConfig(bootstrap=200, permutations=300, selftest_copies=6)
FEATURES = EvaluateConfig()  # the extractor is replaced by RandomProjection where a dataset is audited


# --- calibration ---------------------------------------------------------------------------------------

def test_holdout_split_is_by_subject_stratified_seeded_and_needs_two_subjects():
    subjects = np.repeat([f"h{i}" for i in range(6)], 5)
    labels = np.repeat(["adhd", "adhd", "adhd", "control", "control", "control"], 5)
    half_a = split_holdout(subjects, labels, seed=3)
    for s in set(subjects):  # every slice of a subject on one side
        assert len(set(half_a[subjects == s])) == 1
    a_subjects = set(subjects[half_a])
    assert len(a_subjects) == 3
    assert {lbl for s, lbl in zip(subjects, labels) if s in a_subjects} == {"adhd", "control"}
    assert np.array_equal(half_a, split_holdout(subjects, labels, seed=3))
    assert any(not np.array_equal(half_a, split_holdout(subjects, labels, seed=s)) for s in range(4, 10))
    with pytest.raises(InputError, match="at least 2"):
        split_holdout(["h0"] * 4, None, seed=0)


def test_or_rule_calibration_keeps_the_requested_rate():
    rng = np.random.default_rng(2)
    independent = {"pixel": rng.random(1000), "feature": rng.random(1000)}
    thr, level = calibrate_thresholds(independent, 0.05)
    flagged = (independent["pixel"] < thr["pixel"]) | (independent["feature"] < thr["feature"])
    assert 0.04 <= flagged.mean() <= 0.05
    assert 0.02 < level < 0.03  # about half the rate for two independent spaces
    same = rng.random(1000)
    assert calibrate_thresholds({"pixel": same, "feature": same}, 0.05)[1] == pytest.approx(0.05)


def test_bands_rescale_each_brain_area_band_by_its_own_median():
    # Small brains score half as high as large ones; a single threshold would flag only small brains.
    rng = np.random.default_rng(0)
    area = np.r_[rng.uniform(0.05, 0.1, 300), rng.uniform(0.3, 0.4, 300)]
    score = np.r_[rng.uniform(0.3, 0.5, 300), rng.uniform(0.6, 1.0, 300)]
    half_a = rng.random(600) < 0.5
    assert len(band_edges(area[half_a], 2)) == 1 and len(band_edges(area[half_a][:30], 3)) == 0  # >= 20 per band
    cal = calibrate({"pixel": score}, area, half_a, percentile=5.0, n_bands=2)
    np.testing.assert_allclose(cal.medians["pixel"], [0.4, 0.8], atol=0.03)
    flags = cal.flags({"pixel": score}, area)["pixel"]
    small = area < 0.2
    assert 0.01 < flags[small & ~half_a].mean() < 0.12 and 0.01 < flags[~small & ~half_a].mean() < 0.12
    np.testing.assert_allclose(cal.band_thresholds("pixel"), cal.thresholds["pixel"] * cal.medians["pixel"])
    single = calibrate({"pixel": score}, area, half_a, percentile=5.0, n_bands=1).flags({"pixel": score}, area)
    assert single["pixel"][~small].sum() == 0  # one threshold: set by the small brains alone


@pytest.mark.parametrize("k, n, low, high", [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (7, 182, 0.0188, 0.0772)])
def test_wilson_interval_matches_published_values(k, n, low, high):
    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-3)
    assert wilson_interval(0, 0) == (None, None)


def test_distance_ratio_compares_with_the_nearest_other_subject():
    d = np.array([[0.1, 0.2, 0.5, 0.4],   # nearest sub a; nearest other subject: 0.4
                  [0.3, 0.3, 0.0, 0.6],   # exact copy of a b slice
                  [0.5, np.inf, 0.5, 0.5]])
    ratio, other = distance_ratio(d, ["a", "a", "b", "c"])
    np.testing.assert_allclose(ratio, [0.25, 0.0, 1.0])
    np.testing.assert_allclose(other, [0.4, 0.3, 0.5])


def test_train_neighbour_skips_the_same_subject():
    dist = np.array([[0, 1, 5], [1, 0, 3], [5, 3, 0]], np.float32)
    np.testing.assert_allclose(neighbour_distance_excluding_subject(dist, ["a", "a", "b"]), [5, 3, 3])
    np.testing.assert_allclose(neighbour_distance_excluding_subject(dist, ["a", "a", "a"]), [1, 1, 3])


# --- membership inference ---------------------------------------------------------------------------

def test_pair_counts_and_auc_agree_with_a_brute_force_count():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    groups = [rng.normal(0, 1, n).round(1) for n in (4, 6, 5, 3)]  # rounded: ties happen
    counts = mia.pair_counts(groups)
    brute = sum(float(a < b) + 0.5 * float(a == b) for a in groups[0] for b in groups[2])
    assert counts[0, 2] == pytest.approx(brute)
    result = mia.attack(np.r_[groups[0], groups[1]], ["m1"] * 4 + ["m2"] * 6, np.r_[groups[2], groups[3]],
                        ["n1"] * 5 + ["n2"] * 3, space="pixel", level="slice", n_boot=200, n_perm=100, seed=0)
    scores = np.r_[groups[0], groups[1], groups[2], groups[3]]
    truth = roc_auc_score(np.r_[np.ones(10), np.zeros(8)], -scores)
    assert result.auc == pytest.approx(truth)
    assert result.ci[0] <= result.auc <= result.ci[1]
    assert result.exact and (result.n_members, result.n_nonmembers) == (10, 8)


def test_perfect_separation_has_the_smallest_exact_p_value():
    members = [0.1, 0.2, 0.15, 0.12, 0.3, 0.25]  # three member subjects, all closer
    others = [0.8, 0.9, 0.7, 0.85]  # two non-member subjects
    result = mia.attack(np.array(members), ["a", "a", "b", "b", "c", "c"], np.array(others), ["x", "x", "y", "y"],
                        space="pixel", level="slice", n_boot=0, n_perm=1000, seed=0)
    assert result.auc == 1.0 and result.exact
    assert result.p_value == pytest.approx(1 / math.comb(5, 3))  # 10 relabellings, one as extreme
    assert result.ci == (None, None)
    subject = mia.attack(np.array(members), ["a", "a", "b", "b", "c", "c"], np.array(others), ["x", "x", "y", "y"],
                         space="pixel", level="subject", n_boot=0, n_perm=1000, seed=0)
    assert subject.auc == 1.0 and (subject.n_members, subject.n_nonmembers) == (3, 2)


def test_without_a_leak_the_p_value_is_large():
    rng = np.random.default_rng(5)
    values = rng.random(80)
    subjects = np.repeat([f"s{i}" for i in range(8)], 10)
    result = mia.attack(values[:50], subjects[:50], values[50:], subjects[50:], space="pixel", level="slice",
                        n_boot=100, n_perm=200, seed=0)
    assert 0.3 < result.auc < 0.7 and result.p_value > 0.1


# --- one fold ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fold():
    """A planted-copy fold: 6 training and 4 held-out subjects of 10 slices, 32 px."""
    train, train_ids, _ = cohort(0, 6)
    hold, hold_ids, hold_labels = cohort(1, 4, prefix="hold")
    rng = np.random.default_rng(3)
    family = family_of(CFG)
    sources, planted, families = [], [], []
    for name in FAMILIES:
        for j in rng.choice(len(train), 6, replace=False):
            planted.append(apply_plant(train[j], draw_plant(name, rng, family, 32), rng))
            sources.append(int(j))
            families.append(name)
    novel, _, _ = cohort(2, 2, prefix="new")
    synth = np.concatenate([np.stack(planted), novel])
    proj = RandomProjection(32 * 32)
    summary, pairs, result = privacy_audit(
        train, hold, synth, train_features=proj.extract(train), holdout_features=proj.extract(hold),
        synth_features=proj.extract(synth), synth_files=[f"s{i:03d}.png" for i in range(len(synth))],
        train_ids=train_ids, holdout_ids=hold_ids, holdout_labels=hold_labels, cfg=CFG)
    return {"summary": summary, "pairs": pairs, "result": result, "sources": np.array(sources),
            "families": np.array(families), "train_ids": train_ids, "n_planted": len(planted)}


def test_every_planted_family_is_flagged_and_names_its_source(fold):
    result, n = fold["result"], fold["n_planted"]
    for name in FAMILIES:
        chosen = fold["families"] == name
        assert result.flagged[:n][chosen].all(), name
    nearest = result.spaces["pixel"].synth.index[:n]
    assert np.mean(nearest == fold["sources"]) >= 0.9  # or a neighbouring slice of the same subject
    assert result.flagged[n:].mean() <= 0.1  # new subjects' slices: flagged as often as half B at most


def test_the_prefilter_keeps_the_exhaustive_searchs_flags(fold):
    """A pool of 12 of the 60 training slices per image (the default pools 256): every planted copy is still
    flagged with its source found, and the flags and false flags are those of the exhaustive search."""
    import dataclasses

    train, train_ids, _ = cohort(0, 6)
    hold, hold_ids, hold_labels = cohort(1, 4, prefix="hold")
    synth = np.stack([apply_plant(train[j], draw_plant(name, np.random.default_rng(j), family_of(CFG), 32),
                                  np.random.default_rng(j)) for j, name in zip(range(0, 60, 5), FAMILIES * 2)])
    synth = np.concatenate([synth, cohort(2, 1, prefix="new")[0]])
    proj = RandomProjection(32 * 32)
    kwargs = dict(train_features=proj.extract(train), holdout_features=proj.extract(hold),
                  synth_features=proj.extract(synth), train_ids=train_ids, holdout_ids=hold_ids,
                  holdout_labels=hold_labels)
    exhaustive = audit_fold(train, hold, synth, cfg=dataclasses.replace(CFG, prefilter=0), **kwargs)
    prefiltered = audit_fold(train, hold, synth, cfg=dataclasses.replace(CFG, prefilter=12), **kwargs)
    assert prefiltered.flagged[:12].all() and np.array_equal(prefiltered.flagged, exhaustive.flagged)
    assert list(prefiltered.spaces["pixel"].synth.index[:12]) == list(range(0, 60, 5))
    # 80 calibration images: the threshold is their smallest ratio, so one image more or less near it moves a flag
    assert abs(int(prefiltered.holdout_flagged.sum()) - int(exhaustive.holdout_flagged.sum())) <= 1
    same = prefiltered.spaces["pixel"].holdout.index == exhaustive.spaces["pixel"].holdout.index
    assert same.mean() >= 0.9
    with pytest.raises(ConfigError, match="audit.prefilter=3 must be 0 .exhaustive. or at least audit.candidates"):
        AuditConfig(prefilter=3).check()


def test_half_b_checks_what_half_a_set(fold):
    summary, result = fold["summary"], fold["result"]
    cal = summary["calibration"]
    assert len(cal["half_a_subjects"]) == len(cal["half_b_subjects"]) == 2
    assert not set(cal["half_a_subjects"]) & set(cal["half_b_subjects"])
    assert summary["false_flags"]["n"] == 20 and summary["false_flags"]["k"] == int(result.holdout_flagged[result.half_b].sum())
    assert (cal["n_calibration"], cal["training_images"]) == (20 + 60, 60)  # half A + every training slice
    assert sum(b["n_calibration"] for b in cal["bands"]) == 80 and sum(b["n_half_b"] for b in cal["bands"]) == 20
    assert summary["excess_memorization"] == pytest.approx(summary["memorization_rate"] - summary["false_flags"]["rate"])
    low, high = summary["memorization"]["ci"]
    assert low <= summary["memorization_rate"] <= high


def test_summary_reads_into_the_typed_schema_with_transforms_and_limits(fold):
    summary = PrivacySummary.from_dict(json.loads(json.dumps(fold["summary"])), source="test")
    assert summary.membership.headline == "pixel/slice" and summary.mia_auc == summary.membership.attacks["pixel/slice"].auc
    assert set(summary.membership.attacks) == {"pixel/slice", "pixel/subject", "feature/slice", "feature/subject"}
    top = summary.flagged[0]
    assert top.ratio <= summary.flagged[-1].ratio and top.ratio < top.threshold
    assert top.train_id in fold["train_ids"] and len(top.transform.shift_px) == 2
    assert any("not differential privacy" in text for text in summary.limits)
    assert "+/-2 px" in summary.distances.pixel and "rotated by up to +/-10 degrees" in summary.transforms
    pair = fold["pairs"][0]
    assert pair["aligned_image"].shape == pair["synthetic_image"].shape == (32, 32)
    assert len(summary.nearest_pairs) == 8


def test_pooling_folds_sums_counts_and_tests_the_mean_auc(fold):
    result = fold["result"]
    pooled = pool_folds([result, result], ["r0/f0", "r0/f1"], n_perm=100, seed=0)
    assert pooled["memorization"]["n"] == 2 * len(result.flagged)
    assert pooled["memorization"]["k"] == 2 * int(result.flagged.sum())
    assert pooled["false_flags"]["n"] == 2 * int(result.half_b.sum())
    assert pooled["mia_auc"] == pytest.approx(result.attacks["pixel/slice"].auc)
    assert 0 < pooled["mia_p_value"] <= 1 and [f["fold"] for f in pooled["per_fold"]] == ["r0/f0", "r0/f1"]
    # The membership rule reads half B alone: 6 training and 2 half-B subjects per fold.
    half_b = result.halves["b"]
    assert half_b.n_nonmember_subjects == 2 and half_b.n_nonmembers == int(result.half_b.sum())
    verdict = pooled["membership_rule"]
    assert verdict["half"] == "b" and verdict["n_folds"] == 2 and verdict["auc"] == pytest.approx(half_b.auc)
    assert verdict["smallest_p_value"] == pytest.approx(1 / 101)  # 28**2 = 784 relabellings > 100 drawn
    assert verdict["passed"] == (half_b.auc <= 0.6 and verdict["p_value"] >= 0.05)
    assert pooled["per_fold"][0]["mia_auc_half_b"] == pytest.approx(half_b.auc)
    assert pooled["per_fold"][0]["mia_p_value_half_b"] == pytest.approx(half_b.p_value)
    assert result.halves["a"].n_nonmember_subjects == 2
    assert fold["summary"]["membership"]["half_b"]["auc"] == pytest.approx(half_b.auc)


def test_a_fold_reference_shared_by_two_sets_gives_the_same_audit():
    train, train_ids, _ = cohort(0, 4, n_slices=6, size=24)
    hold, hold_ids, labels = cohort(1, 2, n_slices=6, size=24, prefix="h")
    proj = RandomProjection(24 * 24)
    real = dict(train_features=proj.extract(train), holdout_features=proj.extract(hold), train_ids=train_ids,
                holdout_ids=hold_ids, holdout_labels=labels, cfg=CFG)
    reference = fold_reference(train, hold, **real)
    for synth in (train[[1, 8, 15]], hold[:4]):
        alone = audit_fold(train, hold, synth, synth_features=proj.extract(synth), **real)
        shared = audit_fold(None, None, synth, synth_features=proj.extract(synth), reference=reference)
        assert np.array_equal(alone.flagged, shared.flagged)
        np.testing.assert_allclose(alone.spaces["pixel"].synth_ratio, shared.spaces["pixel"].synth_ratio)
        assert alone.attacks["pixel/slice"].auc == shared.attacks["pixel/slice"].auc
    assert shared.calibration is reference.calibration


def test_bad_inputs_are_refused():
    train, ids, _ = cohort(0, 2, n_slices=3, size=16)
    hold, hold_ids, _ = cohort(1, 2, n_slices=3, size=16, prefix="h")
    f = np.zeros((len(train), 3))
    kwargs = dict(train_features=f, holdout_features=np.zeros((6, 3)), synth_features=np.zeros((4, 3)),
                  train_ids=ids, holdout_ids=hold_ids)
    with pytest.raises(InputError, match="synthetic 10x10"):
        audit_fold(train, hold, np.zeros((4, 10, 10), np.float32), **kwargs)
    with pytest.raises(InputError, match="1 subject; a near-copy"):
        audit_fold(train, hold, train[:4], **{**kwargs, "train_ids": ["s:1"] * 6})
    with pytest.raises(ConfigError, match="audit.percentile=0.0 must be above 0 and at most 50"):
        audit_fold(train, hold, train[:4], **kwargs, cfg=AuditConfig(percentile=0.0))


# --- `brainsynth audit` and its self-test ------------------------------------------------------------

@pytest.fixture()
def dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(feat, "get_extractor", lambda cfg, device=None: RandomProjection(32 * 32))
    return write_dataset(tmp_path / "dataset")


def test_audit_writes_its_outputs_and_the_filter_records_what_it_dropped(dataset, tmp_path, capsys):
    images = np.load(dataset / "images.npy").astype(np.float32) / 255
    novel, _, _ = cohort(7, 1, n_slices=9)
    synth = np.concatenate([images[[3, 14, 25]], novel])  # copies of three training subjects' slices
    records = [{"label": "control" if i % 2 else "adhd", "seed": i} for i in range(len(synth))]
    synthetic = write_image_set(tmp_path / "synthetic", synth, records, synthetic=True,
                                extra_meta={"generator": {"checkpoint_sha256": "abc", "run_dir": str(tmp_path)}})
    out = tmp_path / "audit"
    result = audit(dataset, synthetic, out, CFG, FEATURES, filter_flagged=True)
    assert "Privacy audit of 12 synthetic images" in capsys.readouterr().out

    doc = json.loads((out / "privacy.json").read_text())
    assert AuditReport.from_dict(doc).privacy.n_synthetic == 12 and doc["schema_version"] == SCHEMA_VERSION
    assert doc["privacy"]["n_train"] == 60 and doc["privacy"]["n_holdout"] == 40
    flagged = {e["file"] for e in doc["privacy"]["flagged"]}
    assert {"adhd/000000.png", "control/000000.png", "adhd/000001.png"} <= flagged
    assert result["memorization_rate"] == doc["privacy"]["memorization_rate"] and result["out"] == str(out)
    assert "percentile: 0.5" in (out / "config.yaml").read_text()
    header = (out / "distances.tsv").read_text().splitlines()[0].split("\t")
    assert header[:3] == ["file", "band", "nearest_train_pixel"] and "pixel_ratio" in header
    assert (out / "nearest_pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "privacy.md").read_text()
    for text in ("SIMULATED", "## What this does and does not prove", "not differential privacy",
                 "The closest pairs after alignment", "false flags on half B", "Membership inference"):
        assert text in md, text

    filtered = read_image_set(out / "filtered")
    kept = {r["source_file"] for r in filtered.records}
    assert len(filtered) == 12 - len(flagged) and not kept & flagged
    record = filtered.meta["privacy_filter"]
    assert set(record["removed"]) == flagged
    assert (record["n_source"], record["n_removed"], record["n_kept"]) == (12, len(flagged), 12 - len(flagged))
    assert record["rule"] == doc["privacy"]["rules"]["flagged"] and record["percentile"] == 0.5
    assert record["membership_of_source_half_b"]["auc"] == doc["privacy"]["membership"]["half_b"]["auc"]
    assert "does not stop membership inference" in record["does_not"]
    assert "does not stop membership inference" in md  # the audit's own report says it too
    assert filtered.meta["generator"]["checkpoint_sha256"] == "abc" and filtered.synthetic
    assert not absolute_paths(json.loads((out / "filtered" / "metadata.json").read_text()))


def test_audit_refuses_existing_output_and_a_single_held_out_subject(dataset, tmp_path):
    synthetic = write_image_set(tmp_path / "s", np.zeros((2, 32, 32), np.float32),
                                [{"label": "adhd"}, {"label": "control"}], synthetic=True)
    out = tmp_path / "audit"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="already exists; choose another --out or pass --force"):
        audit(dataset, synthetic, out, CFG, FEATURES)
    table = pd.read_csv(dataset / "images.tsv", sep="\t")
    table.loc[table["subject"] != "sub-09", "split"] = "train"
    table.to_csv(dataset / "images.tsv", sep="\t", index=False)
    with pytest.raises(InputError, match="the test split holds 1 subject.*--test-fraction"):
        audit(dataset, synthetic, tmp_path / "o2", CFG, FEATURES)


def test_selftest_finds_every_family_and_prints_one_table(dataset, tmp_path, capsys):
    report = selftest(dataset, CFG, FEATURES, out=tmp_path / "st")
    printed = capsys.readouterr().out
    assert report.passed and [f.family for f in report.families] == list(FAMILIES)
    for family in report.families:
        assert family.detection.n == 6 and family.detection.rate >= 0.95, family.family
    assert report.false_flags.n == 20
    assert printed.count("Privacy self-test") == 1 and "PASSED" in printed and "held-out half B" in printed
    assert SelfTestReport.from_dict(json.loads((tmp_path / "st" / "selftest.json").read_text())).passed
    assert "| combined |" in (tmp_path / "st" / "selftest.md").read_text()


def test_selftest_fails_with_one_line_and_exit_status_1(dataset, capsys):
    strict = AuditConfig(percentile=50.0, max_false_flags=0.0, selftest_copies=2, bootstrap=0, permutations=0)
    with pytest.raises(SelfTestFailed, match=r"false flags on held-out half B, at most 0% allowed \(lower audit"):
        selftest(dataset, strict, FEATURES)
    code = main(["audit", "--selftest", str(dataset), "--set", "percentile=50", "--set", "max_false_flags=0",
                 "--copies", "2"])
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the log lines
    assert code == 1 and last.startswith("brainsynth: error: privacy self-test failed on ")


def test_audit_command_line_needs_its_inputs(capsys):
    assert main(["audit", "--train", "x", "--out", "y"]) == 2
    assert "brainsynth audit needs --synthetic (or --selftest DATASET" in capsys.readouterr().err
    assert main(["audit", "--selftest", "x", "--train", "y"]) == 2
    assert "--selftest DATASET plants its own copies: leave out --train" in capsys.readouterr().err
