"""A training run folder has one writer: a second resume is refused, a killed holder blocks nobody."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from brainsynth.folder_lock import LOCK_FILE
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.loop import run_training

TOTAL = 192  # the tiny preset on 8 px images: 4 px, the fade, then 8 px


def _resume_command(dataset, run):
    return [sys.executable, "-u", "-m", "brainsynth", "train", str(dataset), "--out", str(run), "--config", "tiny",
            "--model", "pggan", "--resume", "--set", "train.tensorboard=false"]


def _start_and_wait_until_training(dataset, run) -> subprocess.Popen:
    """A resume in a child process, returned once it holds the folder (it logs 'training pggan on ...')."""
    proc = subprocess.Popen(_resume_command(dataset, run), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True)
    for line in proc.stderr:
        if "training pggan on" in line:
            return proc
    raise AssertionError(f"the resume ended before training (exit {proc.wait()})")


def _history(run):
    return [json.loads(line)["images_shown"] for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tiny_dataset, tmp_path_factory, tiny_cfg):
    """A tiny run stopped at its 64-image checkpoint, and the same run trained straight through."""
    root = tmp_path_factory.mktemp("one-writer")
    half = run_training(tiny_dataset, root / "half", tiny_cfg(tensorboard=False), stop_after_images=64)
    straight = run_training(tiny_dataset, root / "straight", tiny_cfg(tensorboard=False))
    return half, straight


@pytest.fixture()
def half_run(runs, tmp_path):
    """A copy of the half-trained run to resume, and the straight run to compare with."""
    half, straight = runs
    return Path(shutil.copytree(half, tmp_path / "run")), straight


def test_a_second_resume_is_refused_and_the_first_keeps_its_own_history(tiny_dataset, half_run):
    run, straight = half_run
    first = _start_and_wait_until_training(tiny_dataset, run)
    os.kill(first.pid, signal.SIGSTOP)  # frozen while holding the folder: the second one meets it for sure
    try:
        second = subprocess.run(_resume_command(tiny_dataset, run), capture_output=True, text=True, timeout=120)
        files_while_held = sorted(p.name for p in (run / ckpt.CHECKPOINT_DIR).iterdir())
    finally:
        os.kill(first.pid, signal.SIGCONT)
    err = second.stderr.strip().splitlines()
    assert second.returncode == 2 and len(err) == 1
    assert f"{run}: this training run is being written by another brainsynth process (pid {first.pid} on " in err[0]
    assert first.wait(timeout=120) == 0
    assert "ckpt-000000064.pt" in files_while_held
    # The run is the first resume's alone: the ticks of an uninterrupted run, once each, same weights.
    assert _history(run) == _history(straight) == [32, 64, 96, 128, 160, 192]
    a, b = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r)) for r in (run, straight))
    assert all(torch.equal(a["G_ema"][k], b["G_ema"][k]) for k in a["G_ema"])


def test_a_killed_holder_does_not_block_the_next_resume(tiny_dataset, half_run):
    run, straight = half_run
    killed = _start_and_wait_until_training(tiny_dataset, run)
    killed.kill()  # SIGKILL: no cleanup runs, the lock file stays
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert (run / LOCK_FILE).is_file()
    again = subprocess.run(_resume_command(tiny_dataset, run), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / "progress.json").read_text())["images_shown"] == TOTAL
    assert _history(run) == _history(straight)
