"""G_ema, the generator used for sampling: an exponential moving average of G's weights.

Karras et al. (2018) sample from a running average of G (beta 0.999 per step); brainsynth
can also give the decay as a half-life in images (``train.ema_halflife_images``).

Batch norm (the DCGAN only, ``train.dcgan.ema_bn``). G_ema's weights are an average of G's,
so the running statistics G collected during training belong to other weights:

``copy``
    G's running statistics are copied into G_ema after every step (the original behaviour);
``recompute``
    G_ema's statistics are recomputed from its own train-mode forward passes on fresh
    latents ("precise BN", Wu & Johnson 2021) before every sample grid and checkpoint, so
    generation and export (eval mode) use statistics that match the weights;
``train_mode``
    G_ema is sampled with batch statistics, as G is in training (the tick grid and
    ``brainsynth generate``, in batches of the training batch size);
``no_ema``
    no averaging: G_ema is a copy of G, weights and statistics.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from brainsynth.config import DCGANConfig, TrainConfig

RECOMPUTE_SEED_STRIDE = 1_000_003  # the recomputation's latents come from their own stream


def ema_bn_mode(cfg: TrainConfig) -> str:
    """``train.dcgan.ema_bn`` of a DCGAN run; ``copy`` otherwise (the other families have no batch norm)."""
    return cfg.ema_bn if isinstance(cfg, DCGANConfig) else "copy"


def ema_beta(cfg: TrainConfig, batch: int) -> float:
    """G_ema's decay for one step of ``batch`` images (from the half-life when one is set)."""
    return 0.5 ** (batch / cfg.ema_halflife_images) if cfg.ema_halflife_images else cfg.ema_beta


@torch.no_grad()
def update_ema(G_ema: nn.Module, G: nn.Module, beta: float, bn_mode: str = "copy") -> None:
    """One EMA step ``G_ema <- beta * G_ema + (1 - beta) * G`` (``no_ema``: a plain copy).

    Buffers (batch-norm statistics) are copied from G, except under ``recompute``, where
    :func:`recompute_statistics` sets them before G_ema is used.
    """
    ema_params, params = list(G_ema.parameters()), list(G.parameters())
    if bn_mode == "no_ema":
        torch._foreach_copy_(ema_params, params)
    else:
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # one multi-tensor kernel for all tensors
    if bn_mode != "recompute":
        for b_ema, b in zip(G_ema.buffers(), G.buffers()):
            b_ema.copy_(b)


def recompute_statistics(G_ema: nn.Module, cfg: DCGANConfig, class_probs: torch.Tensor, batch: int,
                         images_shown: int, device: torch.device) -> int:
    """Give G_ema batch-norm statistics of its own (``ema_bn=recompute``).

    ``cfg.ema_bn_images`` fresh latents (rounded up to whole batches of ``batch``, the
    training batch size), labels drawn from the data's distribution ``class_probs [C]``,
    from a generator seeded by the run's seed and ``images_shown``: a resumed run recomputes
    exactly the same statistics. Returns the number of batches.
    """
    from brainsynth.models.dcgan import recompute_batch_norm

    g = torch.Generator().manual_seed(cfg.seed * RECOMPUTE_SEED_STRIDE + int(images_shown))
    n_batches = -(-cfg.ema_bn_images // batch)

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(n_batches):
            z = torch.randn(batch, cfg.z_dim, generator=g)  # [B, z]
            labels = torch.multinomial(class_probs, batch, replacement=True, generator=g)  # [B]
            yield z.to(device), labels.to(device)

    return recompute_batch_norm(G_ema, batches())


@torch.no_grad()
def sample(G_ema: nn.Module, z: torch.Tensor, labels: torch.Tensor, res: int, alpha: float,
           bn_mode: str = "copy") -> torch.Tensor:
    """G_ema's images ``[N, 1, res, res]`` of latents ``z [N, z_dim]``, as ``bn_mode`` samples it."""
    if bn_mode == "train_mode":
        from brainsynth.models.dcgan import batch_statistics

        with batch_statistics(G_ema):
            return G_ema(z, labels, res, alpha)
    return G_ema(z, labels, res, alpha)
