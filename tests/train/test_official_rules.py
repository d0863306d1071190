"""The loop follows the official release (Karras et al. 2018): the D step's labels, the Adam reset points."""

import pytest
import torch

from brainsynth.train import checkpoint as ckpt
from brainsynth.train import loop
from brainsynth.train.losses import DCGANLoss, WGANGPLoss
from brainsynth.train.loop import run_training


@pytest.mark.parametrize("model, loss_cls", [("pggan", WGANGPLoss), ("dcgan", DCGANLoss)])
def test_d_step_fakes_take_the_real_batch_labels_and_g_step_labels_follow_the_data(
        tiny_dataset, tmp_path, monkeypatch, tiny_cfg, model, loss_cls):
    d_steps, g_labels = [], []
    original_d, original_g = loss_cls.d_loss, loss_cls.g_loss

    def d_loss(self, reals, real_labels, z, fake_labels, *rest):
        G, made = self.G, []

        def spy(z_, labels, *args):  # the generator call that makes the D step's fakes
            made.append(labels.clone())
            return G(z_, labels, *args)

        self.G = spy
        try:
            out = original_d(self, reals, real_labels, z, fake_labels, *rest)
        finally:
            self.G = G
        d_steps.append((real_labels.clone(), made[0]))
        return out

    def g_loss(self, z, labels, *rest):
        g_labels.append(labels.clone())
        return original_g(self, z, labels, *rest)

    original_init = loop.RealImages.__init__

    def only_adhd_fakes(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.class_probs = torch.tensor([0.0, 1.0], dtype=torch.float64)  # [C]: the G step draws adhd only

    monkeypatch.setattr(loss_cls, "d_loss", d_loss)
    monkeypatch.setattr(loss_cls, "g_loss", g_loss)
    monkeypatch.setattr(loop.RealImages, "__init__", only_adhd_fakes)
    run_training(tiny_dataset, tmp_path / "run", tiny_cfg(model, total_images=64, tensorboard=False))
    assert len(d_steps) == 8
    for real_labels, fake_labels in d_steps:
        assert torch.equal(fake_labels, real_labels)
    assert torch.cat([r for r, _ in d_steps]).unique().tolist() == [0, 1]  # both classes among the reals
    assert len(g_labels) == 8 and all((y == 1).all() for y in g_labels)


def _reset_points(tiny_dataset, run_dir, monkeypatch, cfg, **kwargs):
    calls = []
    original = loop.Trainer._new_optimisers

    def counting(self):
        calls.append(self.images_shown)
        original(self)

    monkeypatch.setattr(loop.Trainer, "_new_optimisers", counting)
    run_training(tiny_dataset, run_dir, cfg, **kwargs)
    monkeypatch.setattr(loop.Trainer, "_new_optimisers", original)
    return calls


# tiny preset on 8 px images: 4 px stable 0-64, fade to 8 px 64-128, 8 px stable 128-192.
@pytest.mark.parametrize("rule, expected", [("resolution", [0, 64]), ("lod", [0, 64, 128])])
def test_adam_reset_points(tiny_dataset, tmp_path, monkeypatch, tiny_cfg, rule, expected):
    cfg = tiny_cfg(adam_reset=rule, tensorboard=False)
    assert _reset_points(tiny_dataset, tmp_path / "run", monkeypatch, cfg) == expected


@pytest.mark.parametrize("stop, resets", [
    (128, [0, 128]),  # the fade ends exactly at the checkpoint: the first step after the resume resets Adam
    (160, [0]),  # inside the 8 px stable phase: no reset (its Adam state is in the checkpoint)
])
def test_the_lod_rule_resumes_exactly(tiny_dataset, tmp_path, monkeypatch, tiny_cfg, stop, resets):
    cfg = tiny_cfg(adam_reset="lod", tensorboard=False)
    straight = run_training(tiny_dataset, tmp_path / "straight", cfg)
    run_training(tiny_dataset, tmp_path / "resumed", cfg, stop_after_images=stop)
    # (The restore builds empty optimisers first, before the counters are read: the 0.)
    assert _reset_points(tiny_dataset, tmp_path / "resumed", monkeypatch, cfg, resume=True) == resets
    a, b = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r)) for r in (straight, tmp_path / "resumed"))
    assert a["progress"]["adam_segment"] == b["progress"]["adam_segment"] == 2
    for net in ("G", "D", "G_ema", "opt_G"):
        flat_a, flat_b = ([v for v in s[net].values()] if net != "opt_G" else
                          [t["exp_avg"] for t in s[net]["state"].values()] for s in (a, b))
        assert all(torch.equal(x, y) for x, y in zip(flat_a, flat_b)), net
