"""Network definitions: the progressive GAN (:mod:`.pggan`), the DCGAN baseline (:mod:`.dcgan`)
and the diffusion model (:mod:`.ddpm`).

:func:`build_models` is the one place that maps a model kind to its networks: a generator
and a discriminator for the GANs, the denoising UNet and ``None`` for the diffusion model.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from brainsynth import LABELS
from brainsynth.config import DCGANConfig, DDPMConfig, TrainConfig
from brainsynth.errors import ConfigError
from brainsynth.models import dcgan, ddpm, pggan

MODEL_KINDS = {"pggan": (pggan.Generator, pggan.Discriminator), "dcgan": (dcgan.Generator, dcgan.Discriminator),
               "ddpm": (ddpm.Denoiser, None)}
"""Model kind -> (the network that makes images, its discriminator or None)."""


def _accepted(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in kwargs.items() if k in names}


def build_models(kind: str, **kwargs: Any) -> tuple[nn.Module, nn.Module | None]:
    """Build ``(G, D)`` of one kind from shared keyword options (``D`` is None for ``ddpm``).

    Each option goes to whichever constructor accepts it (``resolution`` and
    ``n_classes`` to both, ``z_dim`` to G, ``mbstd_group`` to D, ...); an option neither
    accepts is an error, so that a typo in a config does not pass silently.

    Parameters
    ----------
    kind : {"pggan", "dcgan", "ddpm"}
    **kwargs
        Constructor options, see :class:`brainsynth.models.pggan.Generator`,
        :class:`brainsynth.models.dcgan.Generator` and :class:`brainsynth.models.ddpm.Denoiser`.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    g_cls, d_cls = MODEL_KINDS[kind]
    classes = [c for c in (g_cls, d_cls) if c is not None]
    g_kwargs = _accepted(g_cls, kwargs)
    d_kwargs = _accepted(d_cls, kwargs) if d_cls is not None else {}
    unknown = sorted(set(kwargs) - set(g_kwargs) - set(d_kwargs))
    if unknown:
        valid = sorted(set().union(*(inspect.signature(c.__init__).parameters for c in classes)) - {"self"})
        raise ConfigError(f"unknown {kind} option(s) {unknown}; valid: {', '.join(valid)}")
    return g_cls(**g_kwargs), (d_cls(**d_kwargs) if d_cls is not None else None)


def network_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options of :func:`build_models` for a resolved training config (stored in the model card).

    Plain types only (a checkpoint and a JSON card hold them); ``cfg.resolution`` must be known.
    """
    if isinstance(cfg, DDPMConfig):
        return {"resolution": cfg.resolution, "n_classes": len(LABELS), "channels": list(cfg.channels),
                "attention": list(cfg.attention), "res_blocks": cfg.res_blocks, "norm_groups": cfg.norm_groups,
                "head_channels": cfg.head_channels, "patch": cfg.patch_at(cfg.resolution)}
    common = {"resolution": cfg.resolution, "z_dim": cfg.z_dim, "n_classes": len(LABELS)}
    if isinstance(cfg, DCGANConfig):
        return {**common, "width": cfg.width}
    return {**common, "fmap_base": cfg.fmap_base, "fmap_max": cfg.fmap_max, "conditioning": cfg.conditioning,
            "mbstd_group": cfg.mbstd_group, "widths": dict(cfg.widths) if cfg.widths else None,
            "upsample": cfg.upsample}


def diffusion_kwargs(cfg: DDPMConfig) -> dict[str, Any]:
    """The ddpm's noise process (:class:`brainsynth.models.ddpm.Sampler` options), stored in the model card."""
    return {"timesteps": cfg.timesteps, "schedule": cfg.noise_schedule, "prediction": cfg.prediction}


__all__ = ["MODEL_KINDS", "build_models", "dcgan", "ddpm", "diffusion_kwargs", "network_kwargs", "pggan"]
