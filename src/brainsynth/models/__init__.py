"""Network definitions: the progressive GAN (:mod:`.pggan`) and the DCGAN baseline (:mod:`.dcgan`).

:func:`build_models` is the one place that maps a model kind to its two networks.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from brainsynth import LABELS
from brainsynth.config import TrainConfig
from brainsynth.errors import ConfigError
from brainsynth.models import dcgan, pggan

MODEL_KINDS = {"pggan": pggan, "dcgan": dcgan}
"""Model kind -> module defining ``Generator`` and ``Discriminator``."""


def _accepted(cls: type, kwargs: dict[str, Any]) -> dict[str, Any]:
    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in kwargs.items() if k in names}


def build_models(kind: str, **kwargs: Any) -> tuple[nn.Module, nn.Module]:
    """Build ``(G, D)`` of one kind from shared keyword options.

    Each option goes to whichever constructor accepts it (``resolution`` and
    ``n_classes`` to both, ``z_dim`` to G, ``mbstd_group`` to D, ...); an option neither
    accepts is an error, so that a typo in a config does not pass silently.

    Parameters
    ----------
    kind : {"pggan", "dcgan"}
    **kwargs
        Constructor options, see :class:`brainsynth.models.pggan.Generator` and
        :class:`brainsynth.models.dcgan.Generator`.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model must be one of {', '.join(MODEL_KINDS)}, got {kind!r}")
    module = MODEL_KINDS[kind]
    g_kwargs = _accepted(module.Generator, kwargs)
    d_kwargs = _accepted(module.Discriminator, kwargs)
    unknown = sorted(set(kwargs) - set(g_kwargs) - set(d_kwargs))
    if unknown:
        valid = sorted((set(inspect.signature(module.Generator.__init__).parameters)
                        | set(inspect.signature(module.Discriminator.__init__).parameters)) - {"self"})
        raise ConfigError(f"unknown {kind} option(s) {unknown}; valid: {', '.join(valid)}")
    return module.Generator(**g_kwargs), module.Discriminator(**d_kwargs)


def network_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options of :func:`build_models` for a resolved training config (stored in the model card).

    Plain types only (a checkpoint and a JSON card hold them); ``cfg.resolution`` must be known.
    """
    common = {"resolution": cfg.resolution, "z_dim": cfg.z_dim, "n_classes": len(LABELS)}
    if cfg.model == "dcgan":
        return {**common, "width": cfg.dcgan_width}
    return {**common, "fmap_base": cfg.fmap_base, "fmap_max": cfg.fmap_max, "conditioning": cfg.conditioning,
            "mbstd_group": cfg.mbstd_group, "widths": dict(cfg.widths) if cfg.widths else None}


__all__ = ["MODEL_KINDS", "build_models", "dcgan", "network_kwargs", "pggan"]
