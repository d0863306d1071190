"""The lazy gradient penalty (train.pggan.gp_every): every k-th D step, weighted by k; exact resume."""

import json

import pytest
import torch

from brainsynth.errors import ConfigError
from brainsynth.train import checkpoint as ckpt
from brainsynth.train import losses
from brainsynth.train.loop import run_training, train
from brainsynth.train.losses import WGANGPLoss, is_penalty_step
from test_losses import _FixedG, _LinearCritic  # the same stand-ins as the loss tests

TIMING = {"img_per_s", "sec_per_tick", "wall_s", "process_cpu_s"}


def test_the_penalty_is_computed_on_every_kth_step_weighted_by_k():
    g = torch.Generator().manual_seed(1)
    reals, fakes = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    D = _LinearCritic(4)
    y = torch.zeros(3, dtype=torch.long)
    lazy = WGANGPLoss(_FixedG(fakes), D, gp_every=3)
    plain = WGANGPLoss(_FixedG(fakes), D, gp_lambda=0.0)
    penalty = ((D.w.norm() - 1) ** 2).item()
    for step in range(7):
        loss, stats = lazy.d_loss(reals, y, torch.zeros(3, 2), y, 4, 1.0, step)
        without, _ = plain.d_loss(reals, y, torch.zeros(3, 2), y, 4, 1.0, step)
        expected_gp = 3 * penalty if step % 3 == 0 else 0.0
        assert stats["gp"].item() == pytest.approx(expected_gp, rel=1e-5)
        assert loss.item() - without.item() == pytest.approx(10 * expected_gp, rel=1e-4, abs=1e-6)
    assert [is_penalty_step(s, 3) for s in range(7)] == [True, False, False, True, False, False, True]
    assert all(is_penalty_step(s, 1) for s in range(7))


def _counting_penalty(monkeypatch):
    calls = []
    original = losses.gradient_penalty

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(losses, "gradient_penalty", counted)
    return calls


def _stats(run):
    lines = (run / "stats.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


def test_a_lazy_run_computes_the_penalty_on_every_kth_step_and_resumes_exactly(tiny_dataset, tmp_path, tiny_cfg,
                                                                               monkeypatch):
    calls = _counting_penalty(monkeypatch)
    cfg = tiny_cfg(gp_every=2, tensorboard=False)
    straight = run_training(tiny_dataset, tmp_path / "straight", cfg)
    steps = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight))["progress"]["step"]
    assert steps == 24 and len(calls) == 12  # steps 0, 2, ..., 22

    calls.clear()
    run = tmp_path / "resumed"
    run_training(tiny_dataset, run, cfg, stop_after_images=96)
    assert len(calls) == 6  # steps 0, 2, ..., 10 before the stop at 96 images
    train(tiny_dataset, run, cfg, resume=True)
    assert len(calls) == 12  # the resumed run goes on from step 12: 12, 14, ..., 22
    a, b = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r)) for r in (run, straight))
    for net in ("G", "D", "G_ema"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
    assert _stats(run) == _stats(straight)
    assert all(s["gp"] >= 0 for s in _stats(straight))


def test_gp_every_must_be_a_positive_step_count(tiny_cfg):
    with pytest.raises(ConfigError, match=r"gp_every=0 must be >= 1"):
        tiny_cfg(gp_every=0)
    assert tiny_cfg().gp_every == 1  # the official penalty on every step by default


def test_private_training_refuses_a_lazy_penalty(tiny_cfg):
    assert tiny_cfg(dp_noise=1.0, mbstd_group=1).gp_every == 1
    with pytest.raises(ConfigError, match=r"gp_every=2 must be 1 with dp_noise"):
        tiny_cfg(dp_noise=1.0, mbstd_group=1, gp_every=2)
