"""``train.schedule: compute`` from the config to the run: costs, boundaries, resume."""

import dataclasses
import json

import pytest
import torch

from brainsynth.errors import ConfigError
from brainsynth.models import build_models, network_kwargs
from brainsynth.models.pggan import training_macs
from brainsynth.train.loop import build_schedule, run_training, train
from brainsynth.train.losses import WGANGPLoss
from brainsynth.train.phases import read_phases
from brainsynth.train.schedule import image_costs

COST = {4: 1.0, 8: 3.0}


def _sized(cfg, resolution=8):
    return dataclasses.replace(cfg, resolution=resolution)


def test_the_config_builds_the_compute_schedule(tiny_cfg):
    cfg = _sized(tiny_cfg(schedule="compute", compute_images=40, image_cost=COST, final_share=0.5))
    s = build_schedule(cfg)
    # 40 images at 8 px cost 120: 60 stay at 8 px (20 images), 30 per phase: 30 images at 4 px, 10 in the fade.
    assert s.phase_images == [30, 10] and s.total_images == 60
    assert build_schedule(cfg).boundaries() == s.boundaries()  # a pure function of the config
    dcgan = _sized(tiny_cfg("dcgan", schedule="compute", total_images=40))
    assert build_schedule(dcgan).total_images == 40  # a model that does not grow spends its budget at 8 px


def test_config_refusals(tiny_cfg):
    with pytest.raises(ConfigError, match="'compute' splits a budget of compute_images"):
        tiny_cfg(schedule="compute")
    with pytest.raises(ConfigError, match="total_images=100 is not used by schedule 'compute'"):
        tiny_cfg(schedule="compute", compute_images=40, total_images=100)
    with pytest.raises(ConfigError, match=r"image_cost=\{4: 0.0"):
        tiny_cfg(schedule="compute", compute_images=40, image_cost={4: 0.0, 8: 1.0})
    with pytest.raises(ConfigError, match="'compute' on a model trained at one resolution counts its budget in images"):
        tiny_cfg("dcgan", schedule="compute", total_images=None)
    with pytest.raises(ConfigError, match="only pggan reads it"):
        tiny_cfg("dcgan", compute_images=40)
    with pytest.raises(ConfigError, match=r"image_cost has no cost for resolution\(s\) \[8\]"):
        image_costs(_sized(tiny_cfg(schedule="compute", compute_images=40, image_cost={4: 1.0})))


def test_default_costs_are_the_counted_multiply_adds_of_a_training_step(tiny_cfg):
    """training_macs against torch's FLOP counter on a whole step (D with the penalty, then G)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = _sized(tiny_cfg(widths={4: 16, 8: 16, 16: 8}), 16)
    G, D = build_models("pggan", **network_kwargs(cfg))
    loss = WGANGPLoss(G, D)
    n = 4
    counted = {}
    for res in (4, 8, 16):
        counter = FlopCounterMode(display=False)
        counter.mod_tracker = type("Global", (), {"parents": {"Global"}, "__enter__": lambda s: s,
                                                  "__exit__": lambda s, *a: False})()
        reals, labels = torch.rand(n, 1, res, res), torch.tensor([0, 1] * (n // 2))
        with counter:
            d, _ = loss.d_loss(reals, labels, torch.randn(n, cfg.z_dim), labels, res, 1.0, 0)
            d.backward()
            g, _ = loss.g_loss(torch.randn(n, cfg.z_dim), labels, res, 1.0)
            g.backward()
        counted[res] = counter.get_total_flops() / 2 / n  # multiply-adds per image
    costs = image_costs(cfg)
    assert sorted(costs) == [4, 8, 16]
    for res in (4, 8, 16):
        assert costs[res] == training_macs(G.widths, res, cfg.z_dim, 2)
        assert costs[res] == pytest.approx(counted[res], rel=0.1)


def test_a_resumed_compute_run_lands_on_the_same_boundaries(tiny_dataset, tmp_path, tiny_cfg):
    cfg = tiny_cfg(schedule="compute", compute_images=40, image_cost=COST, final_share=0.5, batch_sizes=5,
                   tick_images=10, phase_swd_images=0, tensorboard=False)
    straight = run_training(tiny_dataset, tmp_path / "straight", cfg)
    run = tmp_path / "resumed"
    run_training(tiny_dataset, run, cfg, stop_after_images=20)  # inside the 4 px phase
    train(tiny_dataset, run, tiny_cfg(), resume=True)  # the run keeps its own config, so its own boundaries
    spans = [[(p["phase"], p["start_images"], p["end_images"], p["images_shown"]) for p in read_phases(r)]
             for r in (straight, run)]
    assert spans[0] == spans[1] == [(0, 0, 30, 30), (1, 30, 40, 40), (2, 40, 60, 60)]
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["images_shown"], progress["target_images"], progress["finished"]) == (60, 60, True)
