"""The class-conditional diffusion model: a denoising UNet and its DDIM sampler, built on MONAI.

Training follows Ho et al. 2020 ("Denoising Diffusion Probabilistic Models"): an image ``x0``
in [-1, 1] is noised to ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` at a random step
``t < T``, and the network learns to predict ``eps`` (or the velocity ``v = sqrt(abar_t) eps
- sqrt(1 - abar_t) x0``, Salimans & Ho 2022, or ``x0`` itself) with a mean squared error. Class conditioning is a
learned class embedding added to the time embedding; during training a share of the labels
(``train.ddpm.label_dropout``) is replaced by an extra *null* class, so that one network is
both conditional and unconditional (classifier-free guidance, Ho & Salimans 2022). Sampling
is DDIM (Song et al. 2021, deterministic, eta 0) in ``steps`` steps, with the guided
prediction ``(1 + w) * pred(x, y) - w * pred(x, null)``: ``w = 0`` is the plain conditional
model (one network evaluation per step), ``w > 0`` strengthens the class (two evaluations
per step, run as one batch).

Optionally the image is folded into channels first (space-to-depth by ``patch``, the
"patching" of Hoogeboom et al. 2023, "simple diffusion"): a 64 px image becomes a
``patch**2``-channel image of ``64 / patch`` px, which makes every level of the UNet
``patch**2`` times cheaper at the same width, the lever that makes CPU sampling fast.

Why MONAI rather than diffusers
-------------------------------
- MONAI's generative models (the former MONAI Generative Models, Pinaya et al. 2023, part of
  core MONAI since 1.4) were built for brain MRI: the same ``DiffusionModelUNet`` and
  schedulers are the ones of the brain latent diffusion model (Pinaya et al. 2022), with a
  ``spatial_dims=3`` path for volumes later.
- Its UNet takes class labels directly (``num_class_embeds``), which is exactly what
  classifier-free guidance with a null class needs; diffusers' ``UNet2DModel`` does too, but
- MONAI needs only torch and numpy (plus einops for attention); diffusers brings the
  Hugging Face Hub client and its download-first conventions, and nothing may be
  downloaded at run time here.
- MONAI is already the maintained medical-imaging framework a reviewer expects.

MONAI's ``DiffusionInferer`` is not used: its training call and its sampler pass the
condition as a cross-attention ``context`` (and its guidance fills a context tensor), not as
class labels; the loops here are a few lines, with the guidance batched into one forward.
Its ``DDIMScheduler.step`` is used as is. One property of it worth knowing: it steps from
``t`` to ``t - T // steps`` while its timesteps are ``linspace(T - 1, 0, steps)`` rounded, so
each step lands a little away from the next timestep evaluated: at most 2 of T = 1,000
training steps at 25 DDIM steps, 1 at 50 and 100, but 11 at 10 steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.errors import ConfigError

SCHEDULES = ("linear_beta", "scaled_linear_beta", "cosine")
PREDICTIONS = ("epsilon", "v_prediction", "sample")


def _optional_monai():
    """MONAI's UNet and schedulers, with an install hint when the package is missing."""
    try:
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
    except ImportError as exc:  # pragma: no cover - monai is a declared dependency
        raise ConfigError(f"the ddpm model needs MONAI ({exc}); install it with 'pip install monai einops'") from None
    return DiffusionModelUNet, DDPMScheduler, DDIMScheduler


class Denoiser(nn.Module):
    """Class-conditional denoising UNet ``(x_t, t, labels) -> prediction``, all ``[N, 1, H, W]``.

    Parameters
    ----------
    resolution : int
        Image side in px; must be divisible by ``patch * 2**(len(channels) - 1)``.
    n_classes : int
        Number of real classes; index ``n_classes`` is the null class of classifier-free guidance.
    channels : sequence of int
        UNet channels per level, each a multiple of ``norm_groups`` (MONAI ``channels``).
    attention : sequence of bool
        Self-attention at each level (MONAI ``attention_levels``); the middle block always has it.
    res_blocks : int
        Residual blocks per level on the way down (MONAI adds one on the way up).
    norm_groups : int
        Group-norm groups.
    head_channels : int
        Channels per attention head.
    patch : int
        Space-to-depth factor (1: none). The UNet sees ``patch**2`` channels of ``resolution / patch`` px.
    """

    def __init__(self, resolution: int, n_classes: int = 2, channels: Sequence[int] = (32, 64, 64),
                 attention: Sequence[bool] = (False, False, True), res_blocks: int = 1, norm_groups: int = 16,
                 head_channels: int = 16, patch: int = 1):
        super().__init__()
        DiffusionModelUNet, _, _ = _optional_monai()
        channels, attention = tuple(int(c) for c in channels), tuple(bool(a) for a in attention)
        check_denoiser(resolution, channels, attention, norm_groups, patch, head_channels)
        self.resolution, self.n_classes, self.patch = int(resolution), int(n_classes), int(patch)
        self.null_label = self.n_classes
        self.unet = DiffusionModelUNet(
            spatial_dims=2, in_channels=patch * patch, out_channels=patch * patch, num_res_blocks=res_blocks,
            channels=channels, attention_levels=attention, norm_num_groups=norm_groups,
            num_head_channels=head_channels, num_class_embeds=n_classes + 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Prediction (noise or velocity) for noisy images ``x [N, 1, H, W]`` at steps ``t [N]``
        with class indices ``labels [N]`` (``null_label`` for the unconditional model)."""
        p = self.patch
        h = F.pixel_unshuffle(x, p) if p > 1 else x  # [N, p*p, H/p, W/p]
        out = self.unet(h, timesteps=t, class_labels=labels)  # [N, p*p, H/p, W/p]
        return F.pixel_shuffle(out, p) if p > 1 else out  # [N, 1, H, W]


def check_denoiser(resolution: int, channels: Sequence[int], attention: Sequence[bool], norm_groups: int,
                   patch: int, head_channels: int = 1) -> None:
    """Refuse an architecture MONAI would reject deep inside its constructor, with the fix."""
    if len(channels) != len(attention):
        raise ConfigError(f"train.ddpm.channels has {len(channels)} levels but train.ddpm.attention {len(attention)}; "
                          "give one attention flag per level")
    if any(c % norm_groups for c in channels):
        raise ConfigError(f"train.ddpm.channels {list(channels)} must all be multiples of train.ddpm.norm_groups ({norm_groups})")
    # The middle block always has attention, at the last level's width.
    attended = [c for c, a in zip(channels, attention) if a] + [channels[-1]]
    if any(c % head_channels for c in attended):
        raise ConfigError(f"train.ddpm.head_channels {head_channels} must divide the channels of every level with attention "
                          f"and of the last level ({sorted(set(attended))})")
    step = patch * 2 ** (len(channels) - 1)
    if resolution % step:
        raise ConfigError(f"a {resolution} px image cannot go through {len(channels)} UNet levels after a patch of "
                          f"{patch}: the size must be divisible by {step}; use fewer train.ddpm.channels or a smaller train.ddpm.patch")


def make_schedulers(timesteps: int, schedule: str, prediction: str) -> tuple[Any, Any]:
    """MONAI's ``(DDPMScheduler, DDIMScheduler)`` for one noise schedule.

    The first gives the training targets (``add_noise``, ``get_velocity``), the second the
    sampling steps; they are separate objects because MONAI's ``add_noise`` recasts the
    scheduler's tables to the dtype of its input.
    """
    _, DDPMScheduler, DDIMScheduler = _optional_monai()
    if schedule not in SCHEDULES:
        raise ConfigError(f"noise schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction {prediction!r}: choose one of {', '.join(PREDICTIONS)}")
    train = DDPMScheduler(num_train_timesteps=timesteps, schedule=schedule, prediction_type=prediction)
    sample = DDIMScheduler(num_train_timesteps=timesteps, schedule=schedule, prediction_type=prediction,
                           clip_sample=True)
    return train, sample


class Sampler(nn.Module):
    """DDIM sampling with classifier-free guidance: noise ``[N, 1, H, W]`` + labels -> images.

    This is what ``brainsynth generate`` runs and what
    :func:`brainsynth.export.load_exported_generator` returns for a diffusion model.

    Parameters
    ----------
    denoiser : Denoiser
        The trained network (the run's EMA copy).
    timesteps, schedule, prediction
        The training diffusion: ``train.ddpm.timesteps``, ``noise_schedule``, ``prediction``.
    """

    def __init__(self, denoiser: Denoiser, timesteps: int, schedule: str, prediction: str):
        super().__init__()
        self.denoiser = denoiser
        self.timesteps, self.schedule, self.prediction = int(timesteps), schedule, prediction
        _, self._ddim = make_schedulers(self.timesteps, schedule, prediction)

    @torch.no_grad()
    def forward(self, noise: torch.Tensor, labels: torch.Tensor, steps: int = 25, guidance: float = 0.0,
                precision: str = "fp32") -> torch.Tensor:
        """Images ``[N, 1, H, W]`` in [-1, 1] from initial noise ``[N, 1, H, W]`` and labels ``[N]``.

        Parameters
        ----------
        steps : int
            DDIM steps (at most the training ``timesteps``).
        guidance : float
            Classifier-free guidance weight ``w >= 0`` (0: conditional model alone).
        precision : {"fp32", "bf16"}
            Autocast of the network's forward passes; the DDIM update stays in fp32.
        """
        if not 1 <= steps <= self.timesteps:
            raise ConfigError(f"generate.steps={steps} must be between 1 and the model's {self.timesteps} "
                              "training steps (fix it with --set generate.steps=...)")
        if not guidance >= 0.0:
            raise ConfigError(f"generate.guidance={guidance} must be >= 0 (fix it with --set generate.guidance=...)")
        ddim = self._ddim
        ddim.set_timesteps(steps)
        x = noise.float()  # [N, 1, H, W]
        n, device = x.shape[0], x.device
        labels = labels.to(device)
        guided = guidance > 0.0
        if guided:
            null = torch.full_like(labels, self.denoiser.null_label)
            labels = torch.cat([labels, null])  # [2N]: conditional half, then unconditional
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        for t in ddim.timesteps.tolist():
            t_batch = torch.full((labels.shape[0],), t, device=device, dtype=torch.long)  # [N] or [2N]
            with autocast:
                pred = self.denoiser(torch.cat([x, x]) if guided else x, t_batch, labels).float()
            if guided:
                cond, uncond = pred[:n], pred[n:]  # [N, 1, H, W] each
                pred = cond + guidance * (cond - uncond)
            x, _ = ddim.step(pred, t, x)  # [N, 1, H, W]
        return x.clamp_(-1.0, 1.0)


def diffusion_targets(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_t, target)`` of the training objective for clean images ``x0 [N, 1, H, W]``.

    ``noise`` is ``eps ~ N(0, I)`` of the same shape, ``t [N]`` the steps; the target is
    ``eps``, the velocity or ``x0`` itself, as the scheduler's ``prediction_type`` says.
    """
    x_t = scheduler.add_noise(original_samples=x0, noise=noise, timesteps=t)  # [N, 1, H, W]
    if scheduler.prediction_type == "v_prediction":
        return x_t, scheduler.get_velocity(x0, noise, t)
    if scheduler.prediction_type == "sample":
        return x_t, x0
    return x_t, noise


__all__ = ["Denoiser", "PREDICTIONS", "SCHEDULES", "Sampler", "check_denoiser", "diffusion_targets",
           "make_schedulers"]
