"""`brainsynth run` end to end on the tiny preset (2 subject folds): stages per fold, caching, resume, user input."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from brainsynth import api
from brainsynth.cli import main
from brainsynth.errors import ConfigError, InputError



def _data_fixtures():
    """The data tests' NIfTI helpers (tests/data/conftest.py registers itself as data_fixtures)."""
    if "data_fixtures" not in sys.modules:
        spec = importlib.util.spec_from_file_location("data_fixtures", Path(__file__).parent / "data" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["data_fixtures"] = module
        spec.loader.exec_module(module)
    return sys.modules["data_fixtures"]

FOLDS = ["r0/f0", "r0/f1"]
STAGES = ["cohort", "prepare", *[f"{f}/train_{m}" for f in FOLDS for m in ("pggan", "dcgan")],
          *[f"{f}/generate_{m}" for f in FOLDS for m in ("pggan", "dcgan")], *[f"{f}/evaluate" for f in FOLDS],
          "report"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    report = api.run(out, config="tiny")
    return out, report


def test_run_cross_validates_and_pools_every_row(tiny_run, capsys):
    out, report = tiny_run
    on_disk = json.loads((out / "report" / "report.json").read_text())
    assert {k: on_disk["protocol"][k] for k in ("folds", "repeats", "n_subjects", "subjects_tested_per_repeat")} == {
        "folds": 2, "repeats": 1, "n_subjects": 6, "subjects_tested_per_repeat": 6}
    for name in ("pggan", "dcgan", "real", "shortcut"):
        row = on_disk["gan_train"][name]
        assert {"sensitivity", "specificity", "hm", "ci", "per_fold"} <= set(row)
        assert 0.0 <= row["hm"] <= 1.0 and row["ci"] is not None  # 3 test subjects per class, pooled
        assert [(f["repeat"], f["fold"]) for f in row["per_fold"]] == [(0, 0), (0, 1)]
    assert {(c["a"], c["b"]) for c in on_disk["comparisons"]} >= {("real", "pggan"), ("pggan", "dcgan"),
                                                                  ("real", "shortcut")}
    assert set(on_disk["fidelity"]) == {"pggan", "dcgan", "real-test"}
    assert on_disk["simulated"] is True
    timings = json.loads((out / "timings.json").read_text())
    assert sorted(timings) == sorted(STAGES) and all(t >= 0 for t in timings.values())
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert all(state[s]["done"] for s in STAGES)
    assert (out / "report" / "report.html").is_file()
    for fold in FOLDS:
        meta = json.loads((out / fold / "synthetic" / "pggan" / "metadata.json").read_text())
        assert meta["synthetic"] is True and meta["counts"] == {"control": 24, "adhd": 24}


def test_each_fold_trains_on_its_own_training_subjects_only(tiny_run):
    out, report = tiny_run
    from brainsynth.data.dataset import load_dataset

    ds = load_dataset(out / "dataset")
    import torch

    fingerprints = set()
    for fold in (0, 1):
        view = ds.fold(fold)
        ckpt = sorted((out / f"r0/f{fold}" / "runs" / "pggan" / "checkpoints").iterdir())[-1]
        data = torch.load(ckpt, weights_only=True, map_location="cpu")["data"]
        assert (data["repeat"], data["fold"]) == (0, fold)
        train = view.table[view.table["split"] == "train"]
        assert data["n_images"] == len(train) and data["n_subjects_per_label"] == {
            lbl: train.loc[train["label"] == lbl, "subject"].nunique() for lbl in ("control", "adhd")}
        fingerprints.add(data["fingerprint"])
        fold_report = json.loads((out / f"r0/f{fold}" / "evaluation" / "fold.json").read_text())
        assert fold_report["data"]["test_subjects"] == view.test_subjects()
    assert len(fingerprints) == 2  # the checkpoint's data fingerprint differs per fold


def test_rerun_skips_finished_stages(tiny_run, caplog):
    out, _ = tiny_run
    ckpts = sorted((out / "r0/f1" / "runs" / "pggan" / "checkpoints").iterdir())
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    report_stamp = (out / "report" / "report.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="brainsynth"):
        api.run(out, config="tiny")
    assert [p.stat().st_mtime_ns for p in sorted((out / "r0/f1" / "runs" / "pggan" / "checkpoints").iterdir())] == stamps
    assert (out / "report" / "report.json").stat().st_mtime_ns == report_stamp
    assert sum("up to date, skipped" in r.getMessage() for r in caplog.records) == len(STAGES)


def test_a_lost_fold_evaluation_is_redone_and_only_it(tiny_run, caplog):
    out, _ = tiny_run
    import shutil

    shutil.rmtree(out / "r0/f1" / "evaluation")
    with caplog.at_level("INFO", logger="brainsynth"):
        api.run(out, config="tiny")
    assert (out / "report" / "report.json").is_file()
    ran = [r.getMessage() for r in caplog.records if r.getMessage().endswith("running")]
    assert ran == ["[r0/f1/evaluate] running"]


def test_a_redone_evaluation_reads_every_feature_from_the_run_folders_cache(tiny_run, monkeypatch):
    import shutil

    from brainsynth.evaluate import features

    out, _ = tiny_run
    entries = sorted(p.name for p in (out / "cache" / "features").iterdir())
    # The dataset once for every fold, and each fold's two synthetic sets: .npy + .json each.
    assert len(entries) == 2 * (1 + 2 * len(FOLDS))
    calls: list[int] = []
    monkeypatch.setattr(features.Extractor, "extract", lambda self, images: calls.append(len(images)))
    for fold in FOLDS:
        shutil.rmtree(out / fold / "evaluation")
    api.run(out, config="tiny")
    assert calls == [] and (out / "report" / "report.json").is_file()
    assert sorted(p.name for p in (out / "cache" / "features").iterdir()) == entries


def test_an_interrupted_run_resumes_at_the_fold_and_stage_where_it_stopped(tmp_path, monkeypatch):
    out = tmp_path / "out"
    from brainsynth.train import loop

    real_train = loop.train
    calls = []

    def crash_in_the_second_fold(dataset, run_dir, cfg, **kw):
        calls.append((Path(run_dir).parent.parent.name, Path(run_dir).name, kw["resume"], kw["fold"]))
        if calls[-1][:2] == ("f1", "pggan") and len(calls) == 3:
            # Ctrl-C in the second fold's PGGAN stage, after its first checkpoint
            loop.run_training(dataset, run_dir, cfg, stop_after_images=32, **kw)
            raise KeyboardInterrupt
        return real_train(dataset, run_dir, cfg, **kw)

    monkeypatch.setattr(loop, "train", crash_in_the_second_fold)
    with pytest.raises(KeyboardInterrupt):
        api.run(out, config="tiny")
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert state["r0/f0/train_pggan"]["done"] and state["r0/f0/train_dcgan"]["done"]
    assert not state["r0/f1/train_pggan"]["done"] and "r0/f1/train_dcgan" not in state
    api.run(out, config="tiny")
    # fold 0 is not trained again; fold 1's PGGAN resumes from its checkpoint, then its DCGAN starts
    assert calls == [("f0", "pggan", False, 0), ("f0", "dcgan", False, 0), ("f1", "pggan", False, 1),
                     ("f1", "pggan", True, 1), ("f1", "dcgan", False, 1)]
    assert json.loads((out / "pipeline.json").read_text())["stages"]["report"]["done"]


def test_run_on_an_adhd200_style_folder(tmp_path, capsys):
    site = tmp_path / "KKI"
    dx = {"1000001": "0", "1000002": "1", "1000003": "Typically Developing", "1000004": "ADHD-Combined",
          "1000005": "0", "1000006": "3", "1000007": "pending"}
    rows = ["participant_id\tgender\tage\tdx"] + [f"{sid}\tM\t10\t{d}" for sid, d in dx.items()]
    (site / "participants.tsv").parent.mkdir(parents=True)
    (site / "participants.tsv").write_text("\n".join(rows) + "\n")
    helpers = _data_fixtures()
    for i, sid in enumerate(dx):
        shrink = 0.8 if dx[sid] in ("1", "3", "ADHD-Combined") else 1.0
        vol = helpers.brain_volume(seed=i, marker=False) * shrink
        helpers.write_nifti(site / f"sub-{sid}" / "ses-1" / "anat" / f"sub-{sid}_ses-1_T1w.nii.gz", vol.astype(np.float32))
    out = tmp_path / "out"
    code = main(["run", "--input", str(site), "--out", str(out), "--preset", "tiny", "--skip-unlabeled"])
    assert code == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["simulated"] is False
    # 6 labelled subjects (pending dropped), 2 folds: every subject tested once
    assert report["protocol"]["subjects_tested_per_repeat"] == report["protocol"]["n_subjects"] == 6
    assert [len(f["test_subjects"]) for f in report["data"]["real"]["folds"]] == [3, 3]
    assert not (out / "cohort").exists()
    for name in ("real", "shortcut", "pggan", "dcgan"):
        assert report["gan_train"][name]["ci"] is not None  # pooled over folds: 3 test subjects per class
    assert all(c["verdict"] in ("better", "worse", "not distinguishable") for c in report["comparisons"])
    printed = capsys.readouterr().out
    assert "Real data" in printed and "0.883" in printed  # Table 1 with the paper's numbers beside ours
    assert "Shortcut" in printed and "Paired verdicts on pooled slice HM" in printed
    assert "Real data vs Shortcut: " in printed and "In plain words:" in printed
    for c in report["comparisons"]:
        # Real vs a synthetic set that these 6 subjects cannot tell apart is said plainly, not as an ordering.
        if (c["a"], c["metric"], c["verdict"]) == ("real", "hm", "not distinguishable") and c["b"] != "shortcut":
            assert f"{c['b'].upper()} vs real data: NOT DISTINGUISHABLE with these 3 control and 3 adhd" in printed


def test_an_unrelated_out_folder_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(InputError, match="not a brainsynth run folder"):
        api.run(tmp_path, config="tiny")
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_parallel_training_runs_every_fold_and_model_in_worker_processes(tmp_path):
    out = tmp_path / "out"
    api.run(out, config="tiny", set=["run.parallel_training=true"])
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    for fold in FOLDS:
        for model in ("pggan", "dcgan"):
            progress = json.loads((out / fold / "runs" / model / "progress.json").read_text())
            assert progress["finished"] is True and progress["images_shown"] == progress["target_images"]
            assert state[f"{fold}/train_{model}"]["done"] and state[f"{fold}/train_{model}"]["seconds"] > 0
    # Only the first job shows a progress bar, so two do not overwrite each other.
    assert "progress_bar: false" in (out / "r0/f0" / "runs" / "dcgan" / "config.yaml").read_text()
    assert "progress_bar: false" in (out / "r0/f1" / "runs" / "pggan" / "config.yaml").read_text()


def test_the_resolved_configuration_is_written_beside_every_output(tiny_run):
    out, _ = tiny_run
    from brainsynth.config import load_config

    whole = load_config(out / "config.yaml")
    assert whole.prepare.size == 16 and whole.run.models == ["pggan", "dcgan"]
    assert load_config(out / "dataset" / "config.yaml").prepare == whole.prepare
    assert load_config(out / "r0/f0" / "runs" / "pggan" / "config.yaml").train["pggan"].resolution == 16
    assert load_config(out / "r0/f1" / "synthetic" / "dcgan" / "config.yaml").generate == whole.generate
    assert load_config(out / "r0/f1" / "evaluation" / "config.yaml").evaluate == whole.evaluate
    assert load_config(out / "report" / "config.yaml").evaluate == whole.evaluate
    assert load_config(out / "cohort" / "code" / "config.yaml").cohort == whole.cohort


def test_a_training_size_other_than_the_prepared_size_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="train.pggan.resolution=8 differs from prepare.size=16"):
        api.run(tmp_path / "out", config="tiny", set=["train.resolution=8"])
    assert not (tmp_path / "out").exists()


def test_run_adds_the_diffusion_row_everywhere(tmp_path):
    out = tmp_path / "out"
    report = api.run(out, config="tiny", set=["run.models=[dcgan,ddpm]"])
    for section in (report.gan_train, report.gan_test, report.fidelity, report.privacy,
                    report.privacy_utility.points):
        assert "ddpm" in section and "dcgan" in section
    timings = json.loads((out / "timings.json").read_text())
    assert {f"{f}/{stage}_ddpm" for f in FOLDS for stage in ("train", "generate")} <= set(timings)
    for fold in FOLDS:  # trained and sampled once per fold
        meta = json.loads((out / fold / "synthetic" / "ddpm" / "metadata.json").read_text())
        assert meta["generator"]["model"] == "ddpm" and meta["generator"]["steps"] == 10
        assert meta["counts"] == {"control": 24, "adhd": 24}
    assert [(f.repeat, f.fold) for f in report.gan_train["ddpm"].per_fold] == [(0, 0), (0, 1)]
    assert report.privacy["ddpm"].n_folds == 2
    assert report.privacy_utility.points["ddpm"].n_synthetic == report.privacy["ddpm"].memorization.n == 96
    assert (out / "report" / "figures" / "summary_privacy_utility.png").is_file()
    assert (out / "report" / "figures" / "training_ddpm.png").is_file()  # its denoising loss curve
