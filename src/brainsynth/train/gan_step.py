"""The GANs' training step (PGGAN and DCGAN): fetch, D step, G step, augmentation probability.

The D step pairs the fakes with the REAL batch's labels (the official ``D_wgangp_acgan``), so
that each gradient-penalty interpolate blends a real and a fake of one class and is scored as
it. The G step draws its labels from the data's label distribution (official AC-GAN setup)
and freezes D, so that no parameter gradient is wasted on it. Losses: WGAN-GP for the PGGAN,
the non-saturating DCGAN loss for the DCGAN (:mod:`brainsynth.train.losses`).
"""

from __future__ import annotations

from typing import Any

import torch

from brainsynth.train import distributed as ddp
from brainsynth.train.ema import ema_bn_mode, recompute_statistics
from brainsynth.train.ema import sample as sample_ema
from brainsynth.train.losses import DCGANLoss, WGANGPLoss
from brainsynth.train.schedule import blend_reals
from brainsynth.train.steps import TrainingStep


class GANStep(TrainingStep):
    """One step of a GAN; see :class:`~brainsynth.train.steps.TrainingStep` for the parameters."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        augment = self.augment if cfg.augment != "off" else None
        if cfg.model == "pggan":
            self.loss = WGANGPLoss(self.G_fwd, self.D, augment=augment, gp_lambda=cfg.gp_lambda, drift=cfg.drift,
                                   ac_weight=cfg.ac_weight, label_flip_every=cfg.label_flip_every)
        else:
            self.loss = DCGANLoss(self.G_fwd, self.D, augment=augment, label_flip_every=cfg.label_flip_every)
        self.ema_bn = ema_bn_mode(cfg)

    def step(self, phase: Any, batch: int, index: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        cfg, info = self.cfg, self.info
        # --- fetch: the GLOBAL batch's draws, identical on every rank; each keeps its slice
        g = self.gen
        idx = torch.randint(self.data.n, (batch,), generator=g)  # [B]
        z_d = torch.randn(batch, cfg.z_dim, generator=g)  # [B, z]
        z_g = torch.randn(batch, cfg.z_dim, generator=g)  # [B, z]
        labels_g = torch.multinomial(self.data.class_probs, batch, replacement=True, generator=g)  # [B]
        reals, real_labels = self.data.batch(ddp.shard(idx, info))  # [b, 1, res, res], [b]
        if phase.fading:
            reals = blend_reals(reals, phase.alpha)
        z_d, z_g, labels_g = (ddp.shard(t, info).to(self.device) for t in (z_d, z_g, labels_g))

        # --- D step
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self.autocast():
            loss_d, stats_d = self.loss.d_loss(reals, real_labels, z_d, real_labels, phase.res, phase.alpha,
                                               index)
        loss_d.backward()
        ddp.average_gradients(self.D, info)
        self.opt_D.step()

        # --- G step (D frozen)
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            loss_g, stats_g = self.loss.g_loss(z_g, labels_g, phase.res, phase.alpha)
        loss_g.backward()
        ddp.average_gradients(self.G, info)
        self.opt_G.step()
        self.D.requires_grad_(True)

        # --- augmentation probability (adaptive: from the sign of D on the reals)
        if cfg.augment == "adaptive":
            self.augment.update(ddp.all_mean(stats_d["real_sign"], info), batch_size=batch)
        stats = dict(stats_d)
        stats.update({key if key == "loss_g" else f"g_{key}": value for key, value in stats_g.items()})
        return stats, (loss_d, loss_g)

    def grid_input(self, columns: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(columns, self.cfg.z_dim, generator=generator)  # [columns, z]

    def samples(self, grid: torch.Tensor, labels: torch.Tensor, phase: Any) -> torch.Tensor:
        return sample_ema(self.G_ema, grid, labels, phase.res, phase.alpha, self.ema_bn)  # [N, 1, res, res]

    @staticmethod
    def probe(cfg: Any, n: int, phase: Any, device: torch.device) -> tuple:
        labels = torch.zeros(n, dtype=torch.long, device=device)
        return torch.zeros(n, cfg.z_dim, device=device), labels, phase.res, phase.alpha

    def prepare_for_sampling(self, images_shown: int, batch: int) -> None:
        # ema_bn=recompute: G_ema's own batch-norm statistics, before it is sampled or saved.
        if self.ema_bn == "recompute":
            recompute_statistics(self.G_ema, self.cfg, self.data.class_probs, batch, images_shown, self.device)
