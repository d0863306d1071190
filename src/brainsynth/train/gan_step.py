"""The GANs' training step (PGGAN and DCGAN): fetch, D step, G step, augmentation probability.

The D step pairs the fakes with the REAL batch's labels (the official ``D_wgangp_acgan``), so
that each gradient-penalty interpolate blends a real and a fake of one class and is scored as
it. The G step draws its labels from the data's label distribution (official AC-GAN setup)
and freezes D, so that no parameter gradient is wasted on it. Losses: WGAN-GP for the PGGAN,
the non-saturating DCGAN loss for the DCGAN (:mod:`brainsynth.train.losses`).

With ``train.pggan.dp_noise`` set, the D step is DP-SGD with the person as the unit
(:mod:`brainsynth.train.dp`): subjects are Poisson-sampled at the rate that gives the phase's
batch size on average, each subject's gradient is clipped, Gaussian noise is added, and the
accountant records the step. The G step then draws its labels uniformly (the data's label
proportions are a statistic of the private data) and learns only through the private D.
"""

from __future__ import annotations

from typing import Any

import torch

from brainsynth.errors import ConfigError
from brainsynth.train import distributed as ddp
from brainsynth.train import dp
from brainsynth.train.ema import ema_bn_mode, recompute_statistics
from brainsynth.train.ema import sample as sample_ema
from brainsynth.train.losses import DCGANLoss, WGANGPLoss, is_flip_step
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
                                   ac_weight=cfg.ac_weight, label_flip_every=cfg.label_flip_every,
                                   gp_every=cfg.gp_every)
        else:
            self.loss = DCGANLoss(self.G_fwd, self.D, augment=augment, label_flip_every=cfg.label_flip_every)
        self.ema_bn = ema_bn_mode(cfg)
        self.upsample = getattr(cfg, "upsample", "nearest")  # the reals fade as G's coarse path enlarges
        self.private = getattr(cfg, "dp_noise", None) is not None
        if self.private:
            self._start_private()

    def _start_private(self) -> None:
        n_subjects = len(self.data.rows_of_subject)
        if self.info.world_size > 1:
            raise ConfigError("train.pggan.dp_noise: private training runs in one process (the accountant counts "
                              "one stream of D steps); start it without torchrun")
        dp.check_delta(self.cfg.dp_delta, n_subjects)
        dp.check_per_sample_safe(self.D)
        self.accountant = dp.Accountant(self.cfg.dp_accountant)
        # Uniform fake labels: the data's label proportions would be a statistic of the private data.
        self.class_probs = torch.full((self.data.class_probs.numel(),), 1.0 / self.data.class_probs.numel(),
                                      dtype=torch.float64)

    def step(self, phase: Any, batch: int, index: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        if self.private:
            return self._private_step(phase, batch, index)
        cfg, info = self.cfg, self.info
        # --- fetch: the GLOBAL batch's draws, identical on every rank; each keeps its slice
        g = self.gen
        idx = torch.randint(self.data.n, (batch,), generator=g)  # [B]
        z_d = torch.randn(batch, cfg.z_dim, generator=g)  # [B, z]
        z_g = torch.randn(batch, cfg.z_dim, generator=g)  # [B, z]
        labels_g = torch.multinomial(self.data.class_probs, batch, replacement=True, generator=g)  # [B]
        reals, real_labels = self.data.batch(ddp.shard(idx, info))  # [b, 1, res, res], [b]
        if phase.fading:
            reals = blend_reals(reals, phase.alpha, self.upsample)
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
        loss_g, stats_g = self._g_step(phase, z_g, labels_g)

        # --- augmentation probability (adaptive: from the sign of D on the reals)
        if cfg.augment == "adaptive":
            self.augment.update(ddp.all_mean(stats_d["real_sign"], info), batch_size=batch)
        stats = dict(stats_d)
        stats.update({key if key == "loss_g" else f"g_{key}": value for key, value in stats_g.items()})
        return stats, (loss_d, loss_g)

    def _g_step(self, phase: Any, z: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """G's update through the frozen D (no parameter gradient is wasted on D)."""
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            loss_g, stats_g = self.loss.g_loss(z, labels, phase.res, phase.alpha)
        loss_g.backward()
        ddp.average_gradients(self.G, self.info)
        self.opt_G.step()
        self.D.requires_grad_(True)
        return loss_g, stats_g

    def _private_step(self, phase: Any, batch: int, index: int) -> tuple[dict[str, torch.Tensor], tuple]:
        """A step whose D update is DP-SGD by person; the G step as usual (post-processing)."""
        cfg, g, data = self.cfg, self.gen, self.data
        n_subjects = len(data.rows_of_subject)
        # The rate that brings the phase's batch on average; the accountant is told the same rate.
        rate = min(1.0, batch / (cfg.dp_slices_per_subject * n_subjects))
        chosen = dp.poisson_subjects(n_subjects, rate, g)
        rows, subjects = dp.subject_batch(data.rows_of_subject, chosen, cfg.dp_slices_per_subject, g)
        z_d = torch.randn(len(rows), cfg.z_dim, generator=g).to(self.device)  # [b, z]
        mix = torch.rand(len(rows), generator=g).to(self.device)  # [b] penalty interpolation weights
        z_g = torch.randn(batch, cfg.z_dim, generator=g).to(self.device)  # [B, z]
        labels_g = torch.multinomial(self.class_probs, batch, replacement=True, generator=g).to(self.device)  # [B]
        reals, labels = data.batch(torch.from_numpy(rows))  # [b, 1, res, res], [b]
        if phase.fading:
            reals = blend_reals(reals, phase.alpha, self.upsample)
        with torch.no_grad():
            fakes = self.G_fwd(z_d, labels, phase.res, phase.alpha) if len(rows) else torch.zeros_like(reals)
        seen = self.augment if cfg.augment != "off" else (lambda x: x)

        # --- private D step: per-person clipped, noised gradients, then Adam
        self.opt_D.zero_grad(set_to_none=True)
        clip = dp.private_d_step_gradients(
            cfg.model, self.D, seen(reals) if len(rows) else reals, seen(fakes) if len(rows) else fakes, labels, labels,
            mix, torch.from_numpy(subjects), phase.res, phase.alpha, max_norm=cfg.dp_clip,
            noise_multiplier=cfg.dp_noise, expected_subjects=rate * n_subjects, generator=g,
            gp_lambda=cfg.gp_lambda, drift=cfg.drift, ac_weight=cfg.ac_weight,
            flip=is_flip_step(index, cfg.label_flip_every))
        self.opt_D.step()
        self.accountant.step(cfg.dp_noise, rate)

        loss_g, stats_g = self._g_step(phase, z_g, labels_g)
        stats = {"dp_subjects": torch.tensor(float(clip.subjects)), "dp_clipped": torch.tensor(clip.clipped),
                 "dp_median_norm": torch.tensor(clip.median_norm)}
        stats.update({key if key == "loss_g" else f"g_{key}": value for key, value in stats_g.items()})
        return stats, (loss_g, stats["dp_median_norm"])

    def tick_record(self) -> dict[str, float]:
        if not self.private:
            return {}
        return {"dp_epsilon": self.accountant.epsilon(self.cfg.dp_delta), "dp_steps": self.accountant.steps}

    def state_dict(self) -> dict[str, Any] | None:
        return {"accountant": self.accountant.state_dict()} if self.private else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        # A rollback or resume restores the accountant with the weights: the discarded steps
        # never reach the released generator, so they spend nothing it reveals.
        if self.private and state is not None:
            self.accountant = dp.Accountant.from_state_dict(state["accountant"])

    def grid_input(self, columns: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(columns, self.cfg.z_dim, generator=generator)  # [columns, z]

    def samples(self, grid: torch.Tensor, labels: torch.Tensor, phase: Any) -> torch.Tensor:
        return self.sample_at(grid, labels, phase.res, phase.alpha)

    def sample_at(self, z: torch.Tensor, labels: torch.Tensor, res: int, alpha: float) -> torch.Tensor:
        """G_ema's images ``[N, 1, res, res]`` at a resolution and fade weight (the per-phase diagnostics)."""
        return sample_ema(self.G_ema, z.to(self.device), labels.to(self.device), res, alpha, self.ema_bn)

    @staticmethod
    def probe(cfg: Any, n: int, phase: Any, device: torch.device) -> tuple:
        labels = torch.zeros(n, dtype=torch.long, device=device)
        return torch.zeros(n, cfg.z_dim, device=device), labels, phase.res, phase.alpha

    def prepare_for_sampling(self, images_shown: int, batch: int) -> None:
        # ema_bn=recompute: G_ema's own batch-norm statistics, before it is sampled or saved.
        if self.ema_bn == "recompute":
            recompute_statistics(self.G_ema, self.cfg, self.data.class_probs, batch, images_shown, self.device)
