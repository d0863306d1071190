"""``evaluate()``: refusals on bad inputs and one tiny end-to-end run."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from brainsynth.config import AuditConfig, EvaluateConfig
from brainsynth.errors import ConfigError, InputError, OutputExistsError
from brainsynth.evaluate import evaluate
from brainsynth.evaluate.report.schema import Report, read_report
from brainsynth.evaluate.report.targets import format_table1
from brainsynth.imageset import write_image_set

SIZE = 32
SLICES = 5
TINY = EvaluateConfig(features="vgg16-random", input_size=32, feature_layer="pool5", bootstrap=20, seed=0)


def _brain(label: str, rng: np.random.Generator, n: int) -> np.ndarray:
    """uint8 [n, SIZE, SIZE]: a bright disc, larger for ADHD, plus smooth texture."""
    yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    radius = 11.0 if label == "adhd" else 7.0
    disc = (np.hypot(yy, xx) < radius).astype(np.float64)
    tex = gaussian_filter(rng.random((n, SIZE, SIZE)), sigma=(0, 1, 1))
    return np.clip((0.6 * disc + 0.4 * tex) * 255, 0, 255).astype(np.uint8)


def write_dataset(root: Path, subjects: list[tuple[str, str, str]], seed: int = 0) -> Path:
    """A prepared DATASET folder: (subject, label, split) rows, SLICES images each."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    images, rows = [], []
    for subject, label, split in subjects:
        images.append(_brain(label, rng, SLICES))
        rows += [{"subject": subject, "label": label, "split": split, "slice": 40 + k, "patch": 0}
                 for k in range(SLICES)]
    table = pd.DataFrame(rows)
    table.insert(0, "index", np.arange(len(table)))
    np.save(root / "images.npy", np.concatenate(images))
    table.to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True}))
    return root


GOOD_SPLIT = [("s1", "control", "train"), ("s2", "control", "train"), ("s3", "adhd", "train"),
              ("s4", "adhd", "train"), ("s5", "control", "test"), ("s6", "adhd", "test")]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("ds") / "dataset", GOOD_SPLIT)


def write_synthetic(root: Path, n_per_label: dict[str, int], size: int = SIZE, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    images = [_brain(lbl, rng, n)[:, :size, :size] for lbl, n in n_per_label.items()]
    records = [{"label": lbl, "seed": i} for lbl, n in n_per_label.items() for i in range(n)]
    return write_image_set(root, np.concatenate(images), records, synthetic=True, fmt="npz",
                           extra_meta={"generator": {"model": "pggan", "checkpoint_sha256": "abc"}})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn") / "pggan", {"control": 8, "adhd": 8})


def test_end_to_end_report(dataset, synthetic, tmp_path, monkeypatch):
    from brainsynth.evaluate import fidelity

    monkeypatch.setattr(fidelity, "MS_SSIM_PAIRS", 10)  # the default 250 pairs cost seconds here
    out = tmp_path / "report"
    report = evaluate(dataset, {"pggan": str(synthetic)}, out, TINY, AuditConfig(percentile=5.0),
                      timings={"train_pggan": 12.5})
    on_disk = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert isinstance(report, Report) and read_report(out) == report
    assert on_disk["gan_train"]["real"]["hm"] == report.gan_train["real"].hm
    assert list(on_disk) == ["schema_version", "brainsynth_version", "created", "simulated", "features", "device",
                             "protocol", "data", "gan_train", "gan_test", "comparisons", "fidelity", "privacy",
                             "privacy_utility", "timings"]
    assert on_disk["simulated"] is True and on_disk["device"] == "cpu"
    assert on_disk["features"]["name"] == "vgg16-random" and on_disk["features"]["input_size"] == 32
    # A dataset written before folds: its split column is the one fold.
    assert {k: on_disk["protocol"][k] for k in ("folds", "repeats", "n_subjects", "subjects_tested_per_repeat")} == {
        "folds": 1, "repeats": 1, "n_subjects": 6, "subjects_tested_per_repeat": 2}
    real = on_disk["data"]["real"]
    assert (real["n_images"], real["n_subjects"], real["image_size"]) == (30, 6, SIZE)
    (fold,) = real["folds"]
    assert (fold["n_train"], fold["n_test"]) == (20, 10)
    assert fold["train_subjects"] == ["s1", "s2", "s3", "s4"] and fold["test_subjects"] == ["s5", "s6"]
    syn = on_disk["data"]["synthetic"]["pggan"]
    assert syn["n_images"] == 16 and syn["counts"] == {"control": 8, "adhd": 8}
    assert syn["source"]["model"] == "pggan" and syn["per_fold"][0]["path"] == str(synthetic)
    assert list(on_disk["gan_train"]) == ["real", "pggan", "shortcut"]
    for name in ("real", "pggan", "shortcut"):
        block = on_disk["gan_train"][name]
        assert {"sensitivity", "specificity", "hm", "ci", "ci_note", "slice", "subject", "per_fold"} <= set(block)
        # One test subject per class: no interval, and the report says why.
        assert block["ci"] is None and block["ci_note"].startswith("n/a: 1 control, 1 adhd test subject(s); a CI "
                                                                   "needs at least 3 per class")
        assert [(f["repeat"], f["fold"]) for f in block["per_fold"]] == [(0, 0)]
    assert set(on_disk["gan_test"]["pggan"]["ci"]) == {"sensitivity", "specificity", "hm"}  # images are the units
    assert on_disk["gan_train"]["real"]["subject"]["n"] == 2
    # The disc size separates the classes: the real baseline gets every test slice right, and so does the shortcut
    # (brain area is the whole difference here).
    assert on_disk["gan_train"]["real"]["hm"] == pytest.approx(1.0)
    assert on_disk["gan_train"]["shortcut"]["hm"] == pytest.approx(1.0)
    assert [(c["a"], c["b"], c["metric"], c["verdict"]) for c in on_disk["comparisons"]] == [
        (a, b, m, "n/a") for a, b in (("real", "pggan"), ("real", "shortcut"), ("pggan", "shortcut"))
        for m in ("hm", "subject_hm")]
    assert list(on_disk["fidelity"]) == ["pggan", "real-test"]
    fid = on_disk["fidelity"]["pggan"]
    assert {"fid", "kid_mean", "kid_std", "swd", "swd_per_class", "ms_ssim", "precision", "recall", "density",
            "coverage", "sd", "per_fold"} <= set(fid)
    assert fid["sd"] is None and fid["per_fold"][0]["values"]["fid"] == fid["fid"]  # one fold: the mean is it
    assert set(fid["swd"]) == {"32", "16", "avg"} and set(fid["ms_ssim"]["synthetic"]) == {"control", "adhd"}
    assert on_disk["gan_train"]["pggan"]["n_train"] == 16 and on_disk["gan_train"]["real"]["n_train"] is None
    assert "memorization_rate" in on_disk["privacy"]["pggan"]
    assert on_disk["privacy"]["pggan"]["audits"][0]["audit"]["percentile"] == 5.0
    audit = on_disk["privacy"]["pggan"]["audits"][0]["audit"]
    assert audit["n_holdout"] == 10 and audit["false_flags"]["n"] == 5  # held-out half B: one of the two subjects
    assert on_disk["privacy"]["pggan"]["false_flags"]["n"] == 5 and on_disk["privacy"]["pggan"]["n_folds"] == 1
    predictions = pd.read_csv(out / "predictions.tsv", sep="\t", dtype={"subject": str})
    assert list(predictions.columns) == ["set", "repeat", "fold", "subject", "slice", "patch", "label", "score"]
    assert len(predictions) == 3 * 10 and set(predictions["subject"]) == {"s5", "s6"}
    assert (out / "folds" / "r0" / "f0" / "fold.json").is_file()
    assert on_disk["timings"]["train_pggan"] == 12.5 and on_disk["timings"]["evaluate_features"] > 0
    assert list(on_disk["timings"])[0] == "train_pggan"  # earlier stages first
    config = (out / "config.yaml").read_text()
    assert "feature_layer: pool5" in config and "bootstrap: 20" in config and "audit: {percentile: 5.0," in config
    with pytest.raises(OutputExistsError):
        evaluate(dataset, {"pggan": str(synthetic)}, out, TINY)

    # What `brainsynth evaluate` prints: ours beside the paper's numbers, the verdicts, then the targets.
    printed = format_table1(report)
    assert "PGGAN" in printed and "0.736" in printed and "Real data" in printed and "Shortcut" in printed
    assert "Real data vs PGGAN: n/a" in printed and "near-copies <= held-out half-B false flags" in printed


def test_refuses_subjects_on_both_sides_of_the_split(tmp_path, synthetic):
    leaky = write_dataset(tmp_path / "leaky", GOOD_SPLIT + [("s1", "control", "test")])
    with pytest.raises(InputError, match=r"leaky: subjects s1 have images in both the train and the test split"):
        evaluate(leaky, {"pggan": str(synthetic)}, tmp_path / "out", TINY)
    assert not (tmp_path / "out").exists()


def test_refuses_a_split_without_a_class(tmp_path, synthetic):
    one_sided = write_dataset(tmp_path / "ds", [s for s in GOOD_SPLIT if s[0] != "s6"])
    with pytest.raises(InputError, match="repeat 0 fold 0: the test split has 0 adhd images"):
        evaluate(one_sided, {"pggan": str(synthetic)}, tmp_path / "out", TINY)


def test_refuses_a_synthetic_set_without_a_class(dataset, tmp_path):
    only_control = write_synthetic(tmp_path / "dcgan", {"control": 6})
    with pytest.raises(InputError, match=r"dcgan: synthetic set 'dcgan' has 0 adhd images.*--label both"):
        evaluate(dataset, {"dcgan": str(only_control)}, tmp_path / "out", TINY)


def test_refuses_synthetic_images_of_another_size(dataset, tmp_path):
    small = write_synthetic(tmp_path / "small", {"control": 4, "adhd": 4}, size=16)
    with pytest.raises(InputError, match=r"holds 16x16 px images but the dataset .* holds 32x32 px; regenerate"):
        evaluate(dataset, {"small": str(small)}, tmp_path / "out", TINY)


def test_refuses_bad_options_before_reading(synthetic, tmp_path):
    nowhere = tmp_path / "no-dataset"  # never read: the options fail first
    with pytest.raises(ConfigError, match="the name 'real' is reserved"):
        evaluate(nowhere, {"real": str(synthetic)}, tmp_path / "out", TINY)
    with pytest.raises(ConfigError, match="did you mean 'vgg16-random'"):
        evaluate(nowhere, {"pggan": str(synthetic)}, tmp_path / "out", replace(TINY, features="vgg16-randon"))
    with pytest.raises(ConfigError, match=r"evaluate.bootstrap=-1 must be >= 0 \(fix it with --set evaluate.bootstrap"):
        evaluate(nowhere, {"pggan": str(synthetic)}, tmp_path / "out", replace(TINY, bootstrap=-1))
    with pytest.raises(ConfigError, match=r"audit.percentile=0.0 must be above 0"):
        evaluate(nowhere, {"pggan": str(synthetic)}, tmp_path / "out", TINY, AuditConfig(percentile=0.0))
    assert not (tmp_path / "out").exists()


def test_cli_evaluate_prints_table1_and_maps_flags_to_config_keys(dataset, synthetic, tmp_path, capsys):
    from brainsynth.cli import main

    out = tmp_path / "cli-report"
    code = main(["-q", "evaluate", "--real", str(dataset), "--synthetic", f"pggan={synthetic}", "--out", str(out),
                 "--input-size", "32", "--feature-layer", "pool5", "--bootstrap", "20", "--set", "audit.percentile=5"])
    printed = capsys.readouterr().out
    assert code == 0 and "PGGAN" in printed and "0.736" in printed and "Real data" in printed
    config = (out / "config.yaml").read_text()
    assert "input_size: 32" in config and "feature_layer: pool5" in config and "audit: {percentile: 5.0," in config


def test_cli_audit_bad_percentile_is_one_line_and_exit_2(dataset, synthetic, tmp_path, capsys):
    from brainsynth.cli import main

    code = main(["audit", "--train", str(dataset), "--synthetic", str(synthetic), "--out", str(tmp_path / "a"),
                 "--percentile", "60"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("brainsynth: error: --percentile 60.0: audit.percentile=60.0 must be above 0")
    assert not (tmp_path / "a").exists()


# --- cross-validation: every fold, pooled ------------------------------------------------------------

CV_SUBJECTS = [("c1", "control"), ("c2", "control"), ("c3", "control"), ("a1", "adhd"), ("a2", "adhd"),
               ("a3", "adhd")]


@pytest.fixture(scope="module")
def cv_inputs(tmp_path_factory):
    """A 3-fold DATASET of 3 + 3 subjects (one of each class tested per fold) and each fold's synthetic set."""
    root = tmp_path_factory.mktemp("cv")
    test_fold = {"c1": 0, "a1": 0, "c2": 1, "a2": 1, "c3": 2, "a3": 2}
    dataset = write_dataset(root / "dataset", [(s, lbl, "test" if test_fold[s] == 0 else "train")
                                               for s, lbl in CV_SUBJECTS])
    rows = ["subject\trepeat\tfold\tsplit"] + [f"{s}\t0\t{k}\t{'test' if test_fold[s] == k else 'train'}"
                                               for k in range(3) for s, _ in CV_SUBJECTS]
    (dataset / "folds.tsv").write_text("\n".join(rows) + "\n")
    for k in range(3):
        write_synthetic(root / "r0" / f"f{k}" / "pggan", {"control": 8, "adhd": 8}, seed=10 + k)
    return dataset, str(root / "r{repeat}" / "f{fold}" / "pggan")


def test_all_folds_are_evaluated_and_pooled_with_intervals(cv_inputs, tmp_path, monkeypatch):
    from brainsynth.evaluate import fidelity

    monkeypatch.setattr(fidelity, "MS_SSIM_PAIRS", 10)
    dataset, template = cv_inputs
    out = tmp_path / "report"
    report = evaluate(dataset, {"pggan": template}, out, TINY, AuditConfig(percentile=5.0), all_folds=True)
    assert read_report(out) == report
    p = report.protocol
    assert (p.folds, p.repeats, p.n_subjects, p.subjects_tested_per_repeat, p.folds_evaluated) == (3, 1, 6, 6, 3)
    assert p.test_subjects_per_label == {"control": 3, "adhd": 3}
    for name in ("real", "pggan", "shortcut"):
        row = report.gan_train[name]
        # pooled: every subject tested once, 3 per class, so an interval; each fold: 1 per class, so none, and why
        assert row.ci is not None and row.ci_note is None and row.slice.n == 30 and row.subject.n_groups == 6
        assert [(f.fold, f.n, f.ci, f.n_subjects) for f in row.per_fold] == [
            (k, 10, None, {"control": 1, "adhd": 1}) for k in range(3)]
        assert all(f.ci_note.startswith("n/a: 1 control, 1 adhd test subject(s)") for f in row.per_fold)
    verdicts = {(c.a, c.b, c.metric): c for c in report.comparisons}
    assert set(verdicts) == {(a, b, m) for a, b in (("real", "pggan"), ("real", "shortcut"), ("pggan", "shortcut"))
                             for m in ("hm", "subject_hm")}
    same = verdicts[("real", "shortcut", "hm")]  # both perfect here (the disc size is the whole difference)
    assert (same.diff, same.ci, same.verdict) == (0.0, (0.0, 0.0), "not distinguishable")
    assert all(c.verdict in ("better", "worse", "not distinguishable") for c in report.comparisons)
    assert [len(report.fidelity[k].per_fold) for k in ("pggan", "real-test")] == [3, 3]
    fids = [f.values.fid for f in report.fidelity["pggan"].per_fold]
    assert report.fidelity["pggan"].fid == pytest.approx(np.mean(fids))
    assert report.fidelity["pggan"].sd.fid == pytest.approx(np.std(fids, ddof=1))
    privacy = report.privacy["pggan"]
    assert privacy.memorization.n == 48 and [f.audit.n_synthetic for f in privacy.audits] == [16] * 3
    assert [f.fold for f in privacy.per_fold] == ["r0/f0", "r0/f1", "r0/f2"] and privacy.n_folds == 3
    for k in range(3):
        assert (out / "folds" / "r0" / f"f{k}" / "predictions.tsv").is_file()
    assert len(pd.read_csv(out / "predictions.tsv", sep="\t")) == 3 * 30
    md = (out / "report.md").read_text()
    assert "### GAN-train per fold" in md and "Real test (reference)" in md and "## Paired verdicts" in md


def test_all_folds_needs_each_folds_set_named(cv_inputs, tmp_path):
    dataset, template = cv_inputs
    with pytest.raises(ConfigError, match=r"--synthetic pggan=.*: with --all-folds each fold has its own set, so DIR "
                                          r"must name it with \{fold\}"):
        evaluate(dataset, {"pggan": template.replace("f{fold}", "f0")}, tmp_path / "out", TINY, all_folds=True)


def test_one_fold_of_a_cross_validated_dataset(cv_inputs, tmp_path, monkeypatch):
    from brainsynth.evaluate import fidelity

    monkeypatch.setattr(fidelity, "MS_SSIM_PAIRS", 10)
    dataset, template = cv_inputs
    report = evaluate(dataset, {"pggan": template.format(repeat=0, fold=2)}, tmp_path / "out", TINY, fold=2)
    assert report.data.real.folds[0].test_subjects == ["a3", "c3"]
    assert report.protocol.subjects_tested_per_repeat == 2 and report.gan_train["real"].ci is None
    with pytest.raises(InputError, match="no fold 3 of repeat 0"):
        evaluate(dataset, {"pggan": template}, tmp_path / "out3", TINY, fold=3)
