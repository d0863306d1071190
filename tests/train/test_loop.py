"""The training loop on the tiny preset: outputs, exact resume (also after SIGKILL), rollback, refusals."""

import json
import logging
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from brainsynth.errors import CheckpointError, ConfigError, OutputExistsError
from brainsynth.train import checkpoint as ckpt
from brainsynth.train import loop
from brainsynth.config import load_config, sections_yaml
from brainsynth.train.loop import RealImages, TrainingDivergedError, run_training, train

TIMING = {"img_per_s", "sec_per_tick", "wall_s", "process_cpu_s"}


def _final_state(run_dir):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))


def _assert_same_weights(run_a, run_b):
    a, b = _final_state(run_a), _final_state(run_b)
    assert a["progress"]["images_shown"] == b["progress"]["images_shown"]
    for net in ("G", "D", "G_ema"):
        assert a[net].keys() == b[net].keys()
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
    for opt in ("opt_G", "opt_D"):
        for i, s in a[opt]["state"].items():
            assert torch.equal(s["exp_avg_sq"], b[opt]["state"][i]["exp_avg_sq"])


def _stats(run_dir):
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def straight_run(tiny_dataset, tmp_path_factory, tiny_cfg):
    """One uninterrupted tiny PGGAN run: 4 px stable 64, fade to 8 px over 64, 8 px stable 64 (192 images)."""
    return run_training(tiny_dataset, tmp_path_factory.mktemp("runs") / "straight", tiny_cfg(),
                        launch=["preset 'tiny'"])


def test_run_writes_progress_stats_samples_and_tensorboard(straight_run, tiny_cfg):
    progress = json.loads((straight_run / "progress.json").read_text())
    assert progress == {"images_shown": 192, "target_images": 192, "resolution": 8, "alpha": 1.0, "finished": True}

    stats = [json.loads(line) for line in (straight_run / "stats.jsonl").read_text().splitlines()]
    assert [s["images_shown"] for s in stats] == [32, 64, 96, 128, 160, 192]  # one line per 32-image tick
    assert [s["res"] for s in stats] == [4, 4, 8, 8, 8, 8]
    assert stats[2]["alpha"] == pytest.approx(24 / 64)  # the tick's last step: 88 images, 24 into the fade
    for s in stats:
        # The default projection conditioning has no auxiliary-classifier terms (acgan adds ac_real/ac_fake).
        assert {"loss_d", "loss_g", "gp", "score_real", "img_per_s", "augment_p", "wall_s", "lr"} <= s.keys()
        assert "ac_real" not in s
        assert np.isfinite(s["loss_d"]) and s["img_per_s"] > 0 and s["lr"] == 0.001

    samples = straight_run / "samples"
    assert sorted(p.name for p in samples.iterdir()) == [f"grid-{n:09d}.png" for n in (32, 64, 96, 128, 160, 192)] + [
        "latest.png", "phase-00-4px.png", "phase-01-8px.png", "phase-02-8px.png"]  # tests/train/test_phases.py
    with Image.open(samples / "latest.png") as im:
        # 2 rows (control, adhd) of 4 cells of 8 px upscaled x2 to 16 px, 2 px gaps, 48 px label margin.
        assert im.mode == "L" and im.size == (48 + 4 * 16 + 3 * 2, 2 * 16 + 2)
        latest = np.asarray(im)
    with Image.open(samples / "grid-000000192.png") as im:
        assert np.array_equal(np.asarray(im), latest)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(straight_run / "tb")).Reload()
    assert {"loss/loss_d", "loss/loss_g", "schedule/alpha", "schedule/res", "schedule/lr", "schedule/augment_p"} <= set(
        events.Tags()["scalars"])
    assert {"samples/control", "samples/adhd"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Scalars("schedule/res")] == [32, 64, 96, 128, 160, 192]

    saved = yaml.safe_load((straight_run / "config.yaml").read_text())
    # The dataset's 8 px images set the resolution the tiny preset leaves open (null).
    assert tiny_cfg().resolution is None
    assert saved == yaml.safe_load(sections_yaml(tiny_cfg(resolution=8), what="run"))
    assert load_config(straight_run / "config.yaml").train["pggan"] == tiny_cfg(resolution=8)  # reusable
    assert [p.name for p in ckpt.list_checkpoints(straight_run)] == ["ckpt-000000160.pt", "ckpt-000000192.pt"]
    state = _final_state(straight_run)
    assert state["data"]["n_images"] == 40 and state["data"]["n_images_per_label"] == {"control": 20, "adhd": 20}
    assert state["data"]["n_subjects_per_label"] == {"control": 2, "adhd": 2} and state["data"]["simulated"] is True
    assert state["progress"]["step"] == 24 and state["launch"]["config"] == ["preset 'tiny'"]


def test_existing_run_dir_needs_resume_or_force(tiny_dataset, straight_run, tmp_path, tiny_cfg):
    with pytest.raises(OutputExistsError, match="pass --resume to continue that run, --force to start over"):
        train(tiny_dataset, straight_run, tiny_cfg())
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(OutputExistsError, match="not a brainsynth run folder"):
        train(tiny_dataset, other, tiny_cfg(), force=True)
    assert (other / "thesis.tex").read_text() == "precious"
    with pytest.raises(CheckpointError, match="no checkpoint to resume from; start the run without --resume"):
        train(tiny_dataset, tmp_path / "fresh", tiny_cfg(), resume=True)


def test_stop_and_resume_continues_exactly(tiny_dataset, straight_run, tmp_path, tiny_cfg):
    run = tmp_path / "run"
    run_training(tiny_dataset, run, tiny_cfg(), stop_after_images=96)
    progress = json.loads((run / "progress.json").read_text())
    assert progress == {"images_shown": 96, "target_images": 192, "resolution": 8, "alpha": 0.5, "finished": False}
    assert _final_state(run)["progress"]["phase_index"] == 1
    with pytest.raises(ConfigError, match="trains a pggan; pass --model pggan to resume it"):
        train(tiny_dataset, run, tiny_cfg("dcgan"), resume=True)

    train(tiny_dataset, run, load_config("demo").train["pggan"], resume=True)  # the run keeps its own config
    _assert_same_weights(run, straight_run)
    assert _stats(run) == _stats(straight_run)  # same ticks, same losses, no duplicates


def test_resume_after_sigkill_is_exact(tiny_dataset, straight_run, tmp_path, tiny_cfg):
    run = tmp_path / "killed"
    # The child dies by SIGKILL at the 128-image tick after its stats line is written but before
    # the checkpoint: the resumed run must restart from the 96-image checkpoint and drop that line.
    child = textwrap.dedent(f"""
        import os, signal, sys
        from brainsynth.config import load_config
        from brainsynth.train import checkpoint, loop
        real_save = checkpoint.save_checkpoint
        def save_or_die(run_dir, state, keep):
            if state["progress"]["images_shown"] >= 128:
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(run_dir, state, keep)
        checkpoint.save_checkpoint = save_or_die
        loop.train({str(tiny_dataset)!r}, {str(run)!r}, load_config("tiny").train["pggan"])
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert ckpt.latest_checkpoint(run).name == "ckpt-000000096.pt"
    assert json.loads((run / "stats.jsonl").read_text().splitlines()[-1])["images_shown"] == 128

    train(tiny_dataset, run, tiny_cfg(), resume=True)
    _assert_same_weights(run, straight_run)
    assert _stats(run) == _stats(straight_run)


def test_resume_with_a_larger_budget_extends_a_finished_run(tiny_dataset, tmp_path, tiny_cfg):
    run = run_training(tiny_dataset, tmp_path / "run", tiny_cfg(total_images=64, tensorboard=False))
    assert json.loads((run / "progress.json").read_text())["finished"] is True
    train(tiny_dataset, run, tiny_cfg(), resume=True, changes=[("train.total_images", 128, "--set total_images=128")])
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["images_shown"], progress["resolution"], progress["finished"]) == (128, 8, True)


def test_adam_is_reset_exactly_when_the_phase_changes(tiny_dataset, tmp_path, monkeypatch, tiny_cfg):
    calls = []
    original = loop.Trainer._new_optimisers

    def counting(self):
        calls.append(self.images_shown)
        original(self)

    monkeypatch.setattr(loop.Trainer, "_new_optimisers", counting)
    run_training(tiny_dataset, tmp_path / "run", tiny_cfg(total_images=96, tensorboard=False))
    assert calls == [0, 64]  # setup, then the 4 -> 8 px fade starts at 64 images


def test_nan_rolls_back_to_the_last_checkpoint_with_lower_lr(tiny_dataset, tmp_path, monkeypatch, caplog, tiny_cfg):
    from brainsynth.train.losses import WGANGPLoss

    original = WGANGPLoss.d_loss
    poisoned = []

    def d_loss(self, *args):
        loss, stats = original(self, *args)
        if args[-1] == 6 and not poisoned:  # D step 6 (images 48..56), once
            poisoned.append(True)
            loss = loss * float("nan")
        return loss, stats

    monkeypatch.setattr(WGANGPLoss, "d_loss", d_loss)
    with caplog.at_level(logging.WARNING, logger="brainsynth.train.loop"):
        run = run_training(tiny_dataset, tmp_path / "run", tiny_cfg(total_images=96, tensorboard=False))
    progress = _final_state(run)["progress"]
    assert (progress["images_shown"], progress["rollbacks"], progress["lr_scale"]) == (96, 1, 0.5)
    assert "rolled back to" in caplog.text and "ckpt-000000032.pt" in caplog.text
    assert [s["images_shown"] for s in _stats(run)] == [32, 64, 96]
    assert all(s["lr"] == 0.0005 for s in _stats(run)[1:])


def test_nan_every_time_ends_with_a_clear_error(tiny_dataset, tmp_path, monkeypatch, tiny_cfg):
    from brainsynth.train.losses import WGANGPLoss

    original = WGANGPLoss.d_loss
    monkeypatch.setattr(WGANGPLoss, "d_loss", lambda self, *a: (original(self, *a)[0] * float("nan"), {}))
    with pytest.raises(TrainingDivergedError, match="NaN/Inf again after 1 rollbacks; lower the learning rate"):
        run_training(tiny_dataset, tmp_path / "run", tiny_cfg(nan_retries=1, total_images=96, tensorboard=False))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "run")] == ["ckpt-000000000.pt"]  # nothing NaN saved


def test_dcgan_trains_at_the_final_resolution_only(tiny_dataset, tmp_path, tiny_cfg):
    run = run_training(tiny_dataset, tmp_path / "dcgan", tiny_cfg("dcgan", tensorboard=False))
    stats = _stats(run)
    assert [s["res"] for s in stats] == [8] * 6 and stats[-1]["images_shown"] == 192
    assert {"loss_d", "loss_g", "score_real"} <= stats[0].keys() and "gp" not in stats[0]
    assert _final_state(run)["config"]["model"] == "dcgan"


def test_larger_images_are_pooled_once_and_smaller_ones_refused(tmp_path, make_dataset, tiny_cfg):
    ds16 = make_dataset(tmp_path / "ds16", size=16, per_subject=3)
    data = RealImages(ds16, 8, torch.device("cpu"))
    raw = np.load(ds16 / "images.npy")[:12].astype(np.float32)  # the 4 train subjects come first
    expected8 = raw.reshape(12, 8, 2, 8, 2).mean(axis=(2, 4))
    assert data.base.shape == (12, 1, 8, 8) and data.summary["image_size"] == 16
    assert np.abs(data.base[:, 0].numpy() - expected8).max() <= 0.5  # rounded back to uint8
    data.set_resolution(4)
    expected4 = data.base[:, 0].numpy().astype(np.float32).reshape(12, 4, 2, 4, 2).mean(axis=(2, 4)) / 127.5 - 1
    assert data.images.shape == (12, 1, 4, 4)
    assert np.allclose(data.images[:, 0].numpy(), expected4, atol=1e-6)

    ds4 = make_dataset(tmp_path / "ds4", size=4, per_subject=3)
    with pytest.raises(ConfigError, match="images are 4 px but the config's train.resolution is 8; prepare the "
                                          "dataset with --size 8, or set train.resolution to null"):
        train(ds4, tmp_path / "run", tiny_cfg(resolution=8))
    assert not (tmp_path / "run").exists()


def test_a_stats_line_cut_short_by_a_kill_is_dropped_on_resume(tiny_dataset, tmp_path, tiny_cfg):
    run = run_training(tiny_dataset, tmp_path / "run", tiny_cfg(tensorboard=False), stop_after_images=64)
    with open(run / "stats.jsonl", "a") as f:
        f.write('{"images_shown": 96, "loss_d": 0.1')  # no closing brace, no newline
    train(tiny_dataset, run, tiny_cfg(), resume=True, changes=[("train.total_images", 96, "--set total_images=96")])
    assert [s["images_shown"] for s in _stats(run)] == [32, 64, 96]


def test_cli_dry_run_with_a_dataset_shows_its_schedule(tmp_path, capsys, make_dataset):
    dataset = make_dataset(tmp_path / "ds", size=8)
    from brainsynth.cli import main

    code = main(["train", str(dataset), "--out", str(tmp_path / "run"), "--config", "tiny", "--set", "seed=3",
                 "--dry-run"])
    printed = capsys.readouterr().out
    data = yaml.safe_load(printed)["train"]["pggan"]
    assert code == 0 and data["seed"] == 3 and data["resolution"] == 8
    assert "# schedule: Schedule(4->8" in printed
