"""`brainsynth run` end to end on the tiny preset: stages, caching, resume and user input."""

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

STAGES = ["cohort", "prepare", "train_pggan", "train_dcgan", "generate_pggan", "generate_dcgan", "evaluate"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    report = api.run(out, config="tiny")
    return out, report


def test_run_writes_the_three_gan_train_rows_and_stage_timings(tiny_run, capsys):
    out, report = tiny_run
    on_disk = json.loads((out / "report" / "report.json").read_text())
    for name in ("pggan", "dcgan", "real"):
        row = on_disk["gan_train"][name]
        assert {"sensitivity", "specificity", "hm"} <= set(row)
        assert 0.0 <= row["hm"] <= 1.0
    assert on_disk["simulated"] is True
    timings = json.loads((out / "timings.json").read_text())
    assert list(timings) == STAGES and all(t >= 0 for t in timings.values())
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert all(state[s]["done"] for s in STAGES)
    assert (out / "report" / "report.html").is_file()
    meta = json.loads((out / "synthetic" / "pggan" / "metadata.json").read_text())
    assert meta["synthetic"] is True and meta["counts"] == {"control": 24, "adhd": 24}


def test_rerun_skips_finished_stages(tiny_run, caplog):
    out, _ = tiny_run
    ckpts = sorted((out / "runs" / "pggan" / "checkpoints").iterdir())
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    report_stamp = (out / "report" / "report.json").stat().st_mtime_ns
    with caplog.at_level("INFO", logger="brainsynth"):
        api.run(out, config="tiny")
    assert [p.stat().st_mtime_ns for p in sorted((out / "runs" / "pggan" / "checkpoints").iterdir())] == stamps
    assert (out / "report" / "report.json").stat().st_mtime_ns == report_stamp
    assert sum("up to date, skipped" in r.getMessage() for r in caplog.records) == len(STAGES)


def test_a_lost_stage_output_is_redone_and_only_it(tiny_run, caplog):
    out, _ = tiny_run
    import shutil

    shutil.rmtree(out / "report")
    with caplog.at_level("INFO", logger="brainsynth"):
        api.run(out, config="tiny")
    assert (out / "report" / "report.json").is_file()
    ran = [r.getMessage() for r in caplog.records if r.getMessage().endswith("running")]
    assert ran == ["[evaluate] running"]


def test_a_redone_evaluation_reads_every_feature_from_the_run_folders_cache(tiny_run, monkeypatch):
    import shutil

    from brainsynth.evaluate import features

    out, _ = tiny_run
    entries = sorted(p.name for p in (out / "cache" / "features").iterdir())
    assert len(entries) == 6  # the dataset and both synthetic sets: .npy + .json each
    calls: list[int] = []
    monkeypatch.setattr(features.Extractor, "extract", lambda self, images: calls.append(len(images)))
    shutil.rmtree(out / "report")
    api.run(out, config="tiny")
    assert calls == [] and (out / "report" / "report.json").is_file()
    assert sorted(p.name for p in (out / "cache" / "features").iterdir()) == entries


def test_an_interrupted_training_stage_resumes(tmp_path, monkeypatch):
    out = tmp_path / "out"
    from brainsynth.train import loop

    real_train = loop.train
    calls = []

    def crash_after_pggan(dataset, run_dir, cfg, **kw):
        calls.append((Path(run_dir).name, kw["resume"]))
        if Path(run_dir).name == "dcgan" and len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the DCGAN stage
        return real_train(dataset, run_dir, cfg, **kw)

    monkeypatch.setattr(loop, "train", crash_after_pggan)
    with pytest.raises(KeyboardInterrupt):
        api.run(out, config="tiny")
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    assert state["train_pggan"]["done"] and not state["train_dcgan"]["done"]
    api.run(out, config="tiny")
    assert calls[0] == ("pggan", False) and calls[-1][0] == "dcgan"
    assert json.loads((out / "pipeline.json").read_text())["stages"]["evaluate"]["done"]


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
    assert report["data"]["real"]["train_subjects"] and report["data"]["real"]["test_subjects"]
    assert not (out / "cohort").exists()
    printed = capsys.readouterr().out
    assert "Real data" in printed and "0.883" in printed  # Table 1 with the paper's numbers beside ours


def test_an_unrelated_out_folder_is_refused(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(InputError, match="not a brainsynth run folder"):
        api.run(tmp_path, config="tiny")
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_parallel_training_runs_both_models_in_worker_processes(tmp_path):
    out = tmp_path / "out"
    api.run(out, config="tiny", set=["run.parallel_training=true"])
    state = json.loads((out / "pipeline.json").read_text())["stages"]
    for model in ("pggan", "dcgan"):
        progress = json.loads((out / "runs" / model / "progress.json").read_text())
        assert progress["finished"] is True and progress["images_shown"] == progress["target_images"]
        assert state[f"train_{model}"]["done"] and state[f"train_{model}"]["seconds"] > 0
    # The second job's progress bar is turned off so the two do not overwrite each other.
    assert "progress_bar: false" in (out / "runs" / "dcgan" / "config.yaml").read_text()


def test_the_resolved_configuration_is_written_beside_every_output(tiny_run):
    out, _ = tiny_run
    from brainsynth.config import load_config

    whole = load_config(out / "config.yaml")
    assert whole.prepare.size == 16 and whole.run.models == ["pggan", "dcgan"]
    assert load_config(out / "dataset" / "config.yaml").prepare == whole.prepare
    assert load_config(out / "runs" / "pggan" / "config.yaml").train["pggan"].resolution == 16
    assert load_config(out / "synthetic" / "dcgan" / "config.yaml").generate == whole.generate
    assert load_config(out / "report" / "config.yaml").evaluate == whole.evaluate
    assert load_config(out / "cohort" / "code" / "config.yaml").cohort == whole.cohort


def test_a_training_size_other_than_the_prepared_size_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="train.pggan.resolution=8 differs from prepare.size=16"):
        api.run(tmp_path / "out", config="tiny", set=["train.resolution=8"])
    assert not (tmp_path / "out").exists()
