"""The conditional DCGAN baseline (Radford et al. 2016), with the PGGAN forward signatures.

Standard DCGAN: G projects ``[z, embed(y)]`` to 4x4 with a transposed 4x4 conv, then
doubles the size with stride-2 transposed 4x4 convs (batch norm + ReLU), ending in tanh.
D reads the image with one-hot label planes concatenated as extra input channels, halves
the size with stride-2 4x4 convs (LeakyReLU 0.2, batch norm except after the first
layer) down to 4x4 and ends in one 4x4 conv to a logit.

``res`` must equal ``resolution`` and ``alpha`` is ignored (no progressive growing); they
exist so that the training loop drives both model kinds the same way.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.errors import ConfigError

LABEL_EMBED_DIM = 16
"""Size of G's learned label embedding concatenated to z."""

LRELU_SLOPE = 0.2
INIT_STD = 0.02  # DCGAN paper: all weights N(0, 0.02); batch-norm scales N(1, 0.02)


def _n_doublings(resolution: int) -> int:
    if not isinstance(resolution, int) or resolution < 8 or resolution & (resolution - 1):
        raise ConfigError(f"DCGAN resolution must be a power of two >= 8, got {resolution!r}")
    return int(math.log2(resolution)) - 2


def _dcgan_init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, INIT_STD)
            nn.init.zeros_(m.bias)


def _check_res(res: int, resolution: int) -> None:
    if res != resolution:
        raise ConfigError(f"DCGAN does not grow: res must equal resolution {resolution}, got {res!r}")


class Generator(nn.Module):
    """Conditional DCGAN generator, output ``[N, 1, resolution, resolution]`` in (-1, 1).

    Parameters
    ----------
    resolution : int
        Image size (power of two >= 8).
    z_dim : int
        Latent size; z ~ N(0, I).
    n_classes : int
        Number of labels.
    width : int
        Channels of the last hidden layer; each layer towards 4x4 doubles it.
    """

    def __init__(self, resolution: int = 64, z_dim: int = 100, n_classes: int = 2, width: int = 64):
        super().__init__()
        n = _n_doublings(resolution)
        self.resolution = resolution
        self.z_dim = z_dim
        self.n_classes = n_classes
        self.embed = nn.Embedding(n_classes, LABEL_EMBED_DIM)
        chans = [width * 2 ** (n - 1 - i) for i in range(n)]  # 4x4 .. resolution/2
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim + LABEL_EMBED_DIM, chans[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(chans[-1], 1, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor, res: int | None = None,
                alpha: float = 1.0) -> torch.Tensor:
        """``z [N, z_dim]``, ``labels [N]`` -> images ``[N, 1, resolution, resolution]``."""
        if res is not None:
            _check_res(res, self.resolution)
        x = torch.cat([z, self.embed(labels).to(z.dtype)], dim=1)  # [N, z_dim + E]
        return self.net(x[:, :, None, None])  # [N, 1, R, R]


class Discriminator(nn.Module):
    """Conditional DCGAN discriminator: ``(logit [N], None)``.

    Parameters
    ----------
    resolution, n_classes : int
        As for :class:`Generator`.
    width : int
        Channels of the first layer; each stride-2 layer doubles it.
    """

    def __init__(self, resolution: int = 64, n_classes: int = 2, width: int = 64):
        super().__init__()
        n = _n_doublings(resolution)
        self.resolution = resolution
        self.n_classes = n_classes
        chans = [width * 2 ** i for i in range(n)]  # resolution/2 .. 4x4
        layers: list[nn.Module] = [nn.Conv2d(1 + n_classes, chans[0], 4, 2, 1), nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                       nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
        layers += [nn.Conv2d(chans[-1], 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        _dcgan_init(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, res: int | None = None,
                alpha: float = 1.0) -> tuple[torch.Tensor, None]:
        """``x [N, 1, R, R]``, ``labels [N]`` -> ``(logit [N], None)``."""
        if res is not None:
            _check_res(res, self.resolution)
        # A comparison, not F.one_hot: one_hot checks its input's range on the host, which
        # torch.func.vmap (per-sample gradients, brainsynth.train.dp) cannot run.
        classes = torch.arange(self.n_classes, device=labels.device)  # [K]
        planes = (labels[:, None] == classes).to(x.dtype)[:, :, None, None]  # [N, K, 1, 1]
        planes = planes.expand(-1, -1, x.shape[2], x.shape[3])  # [N, K, R, R]
        return self.net(torch.cat([x, planes], dim=1)).view(-1), None


# --- batch-norm statistics of an averaged generator ----------------------------------------------
# G_ema's weights are an average of G's, so the running statistics G collected belong to other
# weights; these two helpers give G_ema statistics of its own (see DCGANConfig.ema_bn).

def _batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def recompute_batch_norm(G: nn.Module, latents: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Replace G's batch-norm running statistics by those of its own train-mode batches.

    The "precise BN" of Wu & Johnson (2021, "Rethinking 'Batch' in BatchNorm"): every batch
    runs in train mode (each layer normalised by the batch's own statistics, as in training)
    and each layer's running mean and variance become the plain average over the batches of
    the batch mean and (unbiased) batch variance, PyTorch's cumulative average
    (``momentum=None``). G's weights are not touched; G comes back in eval mode.

    Parameters
    ----------
    G : nn.Module
        A generator with the ``G(z, labels)`` signature (G_ema).
    latents : iterable of (Tensor, LongTensor)
        Batches ``(z [B, z_dim], labels [B])``; use the training batch size, so the batch
        statistics are those the layers saw in training.

    Returns
    -------
    int
        Number of batches used (0 leaves the statistics reset to mean 0, variance 1).
    """
    norms = _batch_norms(G)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the batches
    G.train()
    n = 0
    try:
        for z, labels in latents:
            G(z, labels)  # [B, 1, R, R]; only the running statistics are kept
            n += 1
    finally:
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        G.eval()
    return n


@contextlib.contextmanager
def batch_statistics(G: nn.Module) -> Iterator[nn.Module]:
    """Within the block, G's batch norms normalise by the batch's own statistics (train mode)
    and leave their running statistics untouched; G's other layers stay as they were."""
    norms = _batch_norms(G)
    saved = [(bn.training, bn.track_running_stats) for bn in norms]
    for bn in norms:
        bn.train()
        bn.track_running_stats = False  # train mode without updating the buffers
    try:
        yield G
    finally:
        for bn, (training, track) in zip(norms, saved):
            bn.train(training)
            bn.track_running_stats = track
