"""Every quality lever of the ablations is a config key that reaches the networks and the loop."""

import dataclasses
import json
import logging

import pytest
import torch

from brainsynth.models import build_models, network_kwargs
from brainsynth.train import checkpoint as ckpt
from brainsynth.train import loop
from brainsynth.train.loop import build_schedule, run_training, train


def _stats(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


def test_lr_batch_widths_ema_augment_and_conditioning_reach_the_loop(tiny_dataset, tmp_path, monkeypatch, tiny_cfg):
    betas = []
    original = loop.update_ema
    monkeypatch.setattr(loop, "update_ema", lambda G_ema, G, beta, mode: (betas.append(beta), original(G_ema, G, beta, mode)))
    cfg = tiny_cfg(lr={4: 0.002, 8: 0.0005}, batch_sizes={4: 8, 8: 4}, widths={4: 12, 8: 6}, ema_halflife_images=32,
                   augment="fixed", augment_p=0.5, conditioning="acgan", schedule="fit", total_images=160,
                   final_share=0.5, tensorboard=False)
    sized = dataclasses.replace(cfg, resolution=8)
    assert build_schedule(sized).fade_starts == [40]  # 80 images to grow (stable 4 px 40, fade 40), 80 at 8 px
    run = run_training(tiny_dataset, tmp_path / "run", cfg)
    stats = _stats(run)
    assert [(s["res"], s["lr"], s["batch"]) for s in stats] == [(4, 0.002, 8)] + [(8, 0.0005, 4)] * 4
    assert all(s["augment_p"] == 0.5 and "ac_real" in s for s in stats)  # fixed augmentation, AC-GAN terms
    assert betas[0] == pytest.approx(0.5 ** (8 / 32)) and betas[-1] == pytest.approx(0.5 ** (4 / 32))
    G = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["G"]
    assert G["to_rgb.4.weight"].shape[1] == 12 and G["to_rgb.8.weight"].shape[1] == 6


@pytest.mark.parametrize("conditioning, embed, logits", [("projection", True, False), ("acgan", False, True),
                                                          ("none", False, False)])
def test_conditioning_reaches_the_discriminator(tiny_cfg, conditioning, embed, logits):
    cfg = tiny_cfg(conditioning=conditioning)
    cfg.resolution = 8
    _, D = build_models("pggan", **network_kwargs(cfg))
    score, class_logits = D(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 0, 1]), 8, 1.0)
    assert score.shape == (4,)
    assert hasattr(D, "embed") == embed and (class_logits is not None) == logits


def test_time_budget_stops_at_the_first_tick_past_it_and_resume_respects_it(tiny_dataset, tmp_path, tiny_cfg, caplog):
    cfg = tiny_cfg("dcgan", time_budget_s=1e-6, tensorboard=False)
    run = run_training(tiny_dataset, tmp_path / "run", cfg)
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["images_shown"], progress["target_images"], progress["finished"]) == (32, 192, True)
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["ckpt-000000000.pt", "ckpt-000000032.pt"]
    with caplog.at_level(logging.INFO, logger="brainsynth.train.observe"):
        train(tiny_dataset, run, cfg, resume=True)
    assert "already trained for its time budget" in caplog.text
    assert json.loads((run / "progress.json").read_text())["images_shown"] == 32
    # A larger budget on resume continues the run, to its image target.
    train(tiny_dataset, run, cfg, resume=True, changes=[("train.time_budget_s", 1e6, "--set time_budget_s=1e6")])
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["images_shown"], progress["finished"]) == (192, True)


def test_time_budget_must_be_positive(tiny_cfg):
    from brainsynth.errors import ConfigError

    with pytest.raises(ConfigError, match=r"time_budget_s=0.0 must be a number of seconds > 0, or null"):
        tiny_cfg("dcgan", time_budget_s=0.0)
