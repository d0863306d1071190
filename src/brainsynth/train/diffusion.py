"""The diffusion model's training step: the denoising objective with label dropout.

The training loop (:mod:`brainsynth.train.loop`) drives the diffusion model as it drives the
GANs (schedule in images shown, EMA copy, ticks, checkpoints, rollback, torchrun); this module
is the part that differs, the step (:class:`DiffusionStep`). The model has no discriminator:
its checkpoints hold ``D`` and ``opt_D`` as None, and its sample grid is DDIM-sampled from
fixed noise. Per step, for a global batch of ``B`` real images
``x0 [B, 1, R, R]`` with labels ``y [B]``:

1. draw, from the loop's seeded generator and in this order, the batch rows, the noise
   ``eps [B, 1, R, R]``, the steps ``t [B]`` uniform in ``[0, T)`` and the label-dropout
   mask ``[B]`` (every rank draws the whole global batch and keeps its slice, so a 2-process
   run sees exactly the data of a 1-process run);
2. replace the dropped labels by the null class (classifier-free guidance, Ho & Salimans 2022);
3. ``loss = mean(w_t * (net(x_t, t, y) - target)^2)`` with ``x_t`` and the target (``eps``, the
   velocity or ``x0``) from MONAI's scheduler: ``w_t = 1`` is Ho et al. 2020's "simple"
   objective; ``train.ddpm.min_snr = gamma > 0`` clips the signal-to-noise ratio
   ``SNR_t = abar_t / (1 - abar_t)`` of each step's weight at gamma (Min-SNR-gamma, Hang et al.
   2023: ``min(SNR, gamma) / SNR`` for epsilon, ``/ (SNR + 1)`` for velocity, ``min(SNR,
   gamma)`` for x0), so that the nearly clean steps no longer dominate the gradient; Hang et
   al. report about 3x faster convergence.

The gradient is averaged over ranks and its norm clipped to ``train.ddpm.grad_clip`` (Ho et al.
2020 clip at 1) before the Adam step; both happen in the loop.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from brainsynth import LABELS
from brainsynth.config import MIN_UNET_PX, DDPMConfig
from brainsynth.models import diffusion_kwargs
from brainsynth.models.ddpm import Sampler
from brainsynth.train import distributed as ddp
from brainsynth.train.steps import TrainingStep

log = logging.getLogger("brainsynth.train.diffusion")
from brainsynth.models.ddpm import diffusion_targets, make_schedulers


class DiffusionLoss:
    """The denoising loss of one diffusion run.

    Parameters
    ----------
    net : nn.Module
        The denoiser being trained (``Denoiser`` or its compiled forward).
    cfg : DDPMConfig
        The run's ``train.ddpm`` section (timesteps, noise schedule, prediction, label dropout).
    null_label : int
        Index of the null class (the number of real classes).
    """

    def __init__(self, net: nn.Module, cfg: DDPMConfig, null_label: int):
        self.net = net
        self.timesteps = cfg.timesteps
        self.label_dropout = cfg.label_dropout
        self.null_label = int(null_label)
        self.scheduler, _ = make_schedulers(cfg.timesteps, cfg.noise_schedule, cfg.prediction)
        self.weights = loss_weights(self.scheduler.alphas_cumprod.double(), cfg.prediction, cfg.min_snr).float()  # [T]

    def draw(self, batch: int, n_images: int, res: int, gen: torch.Generator
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The global batch's random draws: rows ``[B]``, noise ``[B, 1, res, res]``, steps ``[B]``, dropout ``[B]``."""
        idx = torch.randint(n_images, (batch,), generator=gen)  # [B]
        noise = torch.randn(batch, 1, res, res, generator=gen)  # [B, 1, res, res]
        t = torch.randint(self.timesteps, (batch,), generator=gen)  # [B]
        drop = torch.rand(batch, generator=gen) < self.label_dropout  # [B] bool
        return idx, noise, t, drop

    def loss(self, reals: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
             drop: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The mean squared error of this rank's slice, and its stats (device tensors).

        ``reals [b, 1, R, R]`` in [-1, 1], ``labels [b]``, ``noise`` like ``reals``, ``t [b]``,
        ``drop [b]`` bool (labels replaced by the null class).
        """
        labels = torch.where(drop, torch.full_like(labels, self.null_label), labels)  # [b]
        x_t, target = diffusion_targets(self.scheduler, reals.float(), noise, t)  # [b, 1, R, R] each
        pred = self.net(x_t, t, labels)  # [b, 1, R, R]
        per_image = (pred.float() - target).pow(2).mean(dim=(1, 2, 3))  # [b]
        loss = (self.weights.to(per_image.device)[t] * per_image).mean()
        return loss, {"loss_mse": per_image.mean().detach()}


def loss_weights(alphas_cumprod: torch.Tensor, prediction: str, min_snr: float) -> torch.Tensor:
    """The per-step loss weight ``[T]``: 1, or Min-SNR-gamma (Hang et al. 2023) for ``min_snr > 0``."""
    if min_snr <= 0:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1.0 - alphas_cumprod)  # [T]
    clipped = snr.clamp(max=min_snr)
    if prediction == "epsilon":
        return clipped / snr
    if prediction == "v_prediction":
        return clipped / (snr + 1.0)
    return clipped  # x0 ("sample") prediction


class DiffusionStep(TrainingStep):
    """The diffusion model's step: fetch, denoising loss, Adam (gradient norm clipped).

    See :class:`~brainsynth.train.steps.TrainingStep` for the parameters; ``D`` is None.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        if cfg.patch_at(cfg.resolution) != cfg.patch:
            log.info("train.ddpm.patch %d is halved to %d for %d px images (the UNet's deepest level stays >= %d px)",
                     cfg.patch, cfg.patch_at(cfg.resolution), cfg.resolution, MIN_UNET_PX)
        self.loss = DiffusionLoss(self.G_fwd, cfg, null_label=len(LABELS))
        self.sampler = Sampler(self.G_ema, **diffusion_kwargs(self.cfg))  # the tick grid's DDIM sampler

    def step(self, phase: Any, batch: int, index: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        info = self.info
        # --- fetch: the GLOBAL batch's draws, identical on every rank; each keeps its slice
        idx, noise, t, drop = self.loss.draw(batch, self.data.n, phase.res, self.gen)
        reals, labels = self.data.batch(ddp.shard(idx, info))  # [b, 1, res, res], [b]
        noise, t, drop = (ddp.shard(x, info).to(self.device) for x in (noise, t, drop))

        # --- denoising step
        self.opt_G.zero_grad(set_to_none=True)
        with self.autocast():
            loss, stats = self.loss.loss(reals, labels, noise, t, drop)
        loss.backward()
        ddp.average_gradients(self.G, info)
        if self.cfg.grad_clip > 0:
            stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.G.parameters(), self.cfg.grad_clip)
        self.opt_G.step()
        return stats, (loss,)

    def grid_input(self, columns: int, generator: torch.Generator) -> torch.Tensor:
        res = self.cfg.resolution
        return torch.randn(columns, 1, res, res, generator=generator)  # [columns, 1, res, res]: initial noise

    def samples(self, grid: torch.Tensor, labels: torch.Tensor, phase: Any) -> torch.Tensor:
        # DDIM from fixed noise, the conditional model alone.
        return self.sampler(grid, labels, steps=self.cfg.grid_steps, guidance=0.0, precision=self.cfg.precision)

    @staticmethod
    def probe(cfg: Any, n: int, phase: Any, device: torch.device) -> tuple:
        labels = torch.zeros(n, dtype=torch.long, device=device)
        return torch.zeros(n, 1, phase.res, phase.res, device=device), labels, labels


__all__ = ["DiffusionLoss", "DiffusionStep", "loss_weights"]
