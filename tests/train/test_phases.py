"""Per-phase diagnostics of a growing PGGAN: phase spans, grids, phases.jsonl, SWD, resume."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from brainsynth.train.loop import run_training, train
from brainsynth.train.phases import PhaseLog, phase_spans, phase_swd, read_phases, swd_settings
from brainsynth.train.schedule import Schedule, blend_reals

VOLATILE = {"wall_s", "diagnostic_s", "diagnostic_cpu_s"}


def _records(run_dir):
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in read_phases(run_dir)]


def test_phase_spans_follow_the_schedule_and_stop_at_its_end():
    s = Schedule(16, start_res=4, stable_images=100, fade_images=40, batch_sizes=8)
    spans = phase_spans(s)
    assert [(p.number, p.kind, p.res, p.start_images, p.end_images) for p in spans] == [
        (0, "stable", 4, 0, 100), (1, "fade", 8, 100, 140), (2, "stable", 8, 140, 240), (3, "fade", 16, 240, 280),
        (4, "stable", 16, 280, 380)]
    short = phase_spans(Schedule(16, start_res=4, stable_images=100, fade_images=40, total_images=120))
    assert [(p.number, p.end_images) for p in short] == [(0, 100), (1, 120)]  # the run ends inside the fade


def test_swd_settings_fit_small_images():
    assert swd_settings(64) == (16, 7) and swd_settings(16) == (16, 7)
    assert swd_settings(8) == (8, 7) and swd_settings(4) == (4, 3)


def test_phase_swd_is_zero_for_the_reals_and_grows_with_the_damage():
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    disk = (((yy - 8) ** 2 + (xx - 8) ** 2) < 25).float()
    reals = (disk * torch.rand(48, 1, 16, 16, generator=g) * 2 - 1)  # bright texture on a -1 background
    assert phase_swd(reals, reals, 16)["avg"] == pytest.approx(0.0, abs=1e-9)
    noisy = (reals + 0.3 * torch.randn(48, 1, 16, 16, generator=g)).clamp(-1, 1)
    noise = torch.rand(48, 1, 16, 16, generator=g) * 2 - 1
    small, large = phase_swd(reals, noisy, 16), phase_swd(reals, noise, 16)
    assert set(small) == {"16", "avg"} and 0 < small["avg"] < large["avg"]
    tiny = phase_swd(torch.nn.functional.avg_pool2d(reals, 4), torch.nn.functional.avg_pool2d(noise, 4), 4)
    assert set(tiny) == {"4", "avg"} and tiny["avg"] > 0


def test_the_real_images_are_pooled_and_blended_as_d_sees_them(tmp_path):
    reals = torch.randint(0, 256, (6, 1, 16, 16), dtype=torch.uint8)
    log = PhaseLog(tmp_path, Schedule(16, start_res=4, stable_images=8, fade_images=8), reals, torch.tensor([0, 1] * 3),
                   torch.tensor([0.5, 0.5]), swd_images=0, z_dim=4, seed=0, enabled=False)
    pooled = torch.nn.functional.avg_pool2d(reals.float(), 2) / 127.5 - 1  # [6, 1, 8, 8]
    assert torch.allclose(log.real_images(8, 1.0), pooled, atol=1e-6)
    assert torch.allclose(log.real_images(8, 0.25), blend_reals(pooled, 0.25), atol=1e-6)
    assert log.after_step(None, 0, 0, 0.0, None) is None  # disabled (ranks other than 0): nothing


@pytest.fixture(scope="module")
def phase_run(tiny_dataset, tmp_path_factory, tiny_cfg):
    """4 px stable 64, 8 px fade 64, 8 px stable 64 images, 24 images scored by SWD per phase."""
    return run_training(tiny_dataset, tmp_path_factory.mktemp("runs") / "phases",
                        tiny_cfg(phase_swd_images=24, tensorboard=False))


def test_every_phase_end_writes_a_grid_and_a_record(phase_run):
    records = read_phases(phase_run)
    assert [(r["phase"], r["kind"], r["res"]) for r in records] == [(0, "stable", 4), (1, "fade", 8), (2, "stable", 8)]
    assert [(r["start_images"], r["end_images"]) for r in records] == [(0, 64), (64, 128), (128, 192)]
    assert [r["images_shown"] for r in records] == [64, 128, 192]  # batch 8: the steps land on the ends
    assert [r["step"] for r in records] == [8, 16, 24]
    assert records[1]["alpha"] == pytest.approx(56 / 64)  # the fade's last step, as trained
    assert records[0]["alpha"] == records[2]["alpha"] == 1.0
    assert [set(r["swd"]) for r in records] == [{"4", "avg"}, {"8", "avg"}, {"8", "avg"}]
    assert all(r["swd_images"] == 24 and r["swd"]["avg"] > 0 for r in records)
    for r, name in zip(records, ("phase-00-4px.png", "phase-01-8px.png", "phase-02-8px.png")):
        assert r["grid"] == f"samples/{name}"
        with Image.open(phase_run / r["grid"]) as im:
            # rows control, adhd (G_ema), real c, real a; 4 columns of 16 px cells, 2 px gaps, 48 px label margin
            assert im.mode == "L" and im.size == (48 + 4 * 16 + 3 * 2, 4 * 16 + 3 * 2)
            pixels = np.asarray(im)
        assert pixels[:, 48:].std() > 0


def test_the_diagnostics_leave_training_unchanged(phase_run, tiny_dataset, tmp_path, tiny_cfg):
    plain = run_training(tiny_dataset, tmp_path / "grids-only", tiny_cfg(phase_swd_images=0, tensorboard=False))
    a, b = (torch.load(sorted((r / "checkpoints").glob("*.pt"))[-1], weights_only=True) for r in (phase_run, plain))
    assert all(torch.equal(a["G_ema"][k], b["G_ema"][k]) for k in a["G_ema"])
    assert [r["swd"] for r in read_phases(plain)] == [None, None, None]
    assert len(list((plain / "samples").glob("phase-*.png"))) == 3


def test_a_resumed_run_logs_every_phase_once_as_an_uninterrupted_one(phase_run, tiny_dataset, tmp_path, tiny_cfg):
    run = tmp_path / "resumed"
    cfg = tiny_cfg(phase_swd_images=24, tensorboard=False)
    run_training(tiny_dataset, run, cfg, stop_after_images=96)  # checkpoint at 96, inside the fade
    assert [r["phase"] for r in read_phases(run)] == [0]
    with open(run / "phases.jsonl", "a") as f:  # as if the killed process had logged a phase after its checkpoint
        f.write(json.dumps({"phase": 1, "images_shown": 128}) + "\n")
    train(tiny_dataset, run, cfg, resume=True)
    assert _records(run) == _records(phase_run)


def test_only_the_pggan_grows(tiny_dataset, tmp_path, tiny_cfg):
    run = run_training(tiny_dataset, tmp_path / "dcgan", tiny_cfg("dcgan", tensorboard=False, total_images=32))
    assert not (run / "phases.jsonl").exists() and not list((run / "samples").glob("phase-*"))
