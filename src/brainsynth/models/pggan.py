"""The progressive-growing GAN (Karras et al. 2018), class-conditional, in one file.

Everything a faithful PGGAN needs is here and matches the official release of Karras et al.
(2018), "Progressive Growing of GANs for Improved Quality, Stability, and Variation":

- equalised learning rate: every weight is stored N(0, 1) and scaled at run time by
  ``gain / sqrt(fan_in)`` (gain sqrt(2); the 4x4 dense layer of G uses sqrt(2)/4 and the
  1x1 toRGB and the last dense layer of D use gain 1, as in the official code);
- pixel norm after every generator convolution, and on the input latent;
- minibatch standard deviation in D's 4x4 head;
- nearest 2x upsampling + 3x3 convolutions in G, linear 1x1 toRGB (no tanh);
  D: 1x1 fromRGB + LReLU, blocks conv3x3, conv3x3, 2x2 average pool;
- the fade-in of the newest block, ``alpha`` in [0, 1].

G's 2x upsampling (``upsample``): ``"nearest"`` is the official one. ``"bilinear"`` is StyleGAN's
change (Karras et al. 2019 upsample bilinearly, after Zhang 2019): a fresh block on nearest-upsampled
features starts with a pattern fixed to the coarse pixel grid, which short runs do not train away
(docs/training.md, "Fifth pass"); bilinear features have no such edges. The fade path of G and the
real images' fade (:func:`brainsynth.train.schedule.blend_reals`) use the same mode, so that
neither side of a fade can be told by its coarse image.

Conditioning (``conditioning``): ``"acgan"`` (official: one-hot label concatenated to z
before pixel norm, D outputs class logits), ``"projection"`` (same G input, D adds
``<embed(y), phi(x)>`` to its score, no logits) or ``"none"``.

Speed notes (a 2-core CPU trains this):

- the equalised-lr scale is folded into the weight once per forward
  (``conv2d(x, w * scale)``) instead of scaling activations;
- G's "upsample then 3x3 conv" is computed as ONE stride-2 transposed 4x4 convolution
  whose kernel is the sum of the four shifted 3x3 kernels: the same function (exact up to
  float rounding) at 16/36 of the multiply-adds. The official PGGAN release fuses the same
  way at EVERY resolution (``G_paper``'s default ``fused_scale=True``); fusing only from
  128 px up ("above 64 px") is StyleGAN's later ``fused_scale='auto'`` rule, not PGGAN's.
  D's "conv, LReLU, pool" is NOT fused, because the official fused D moves the activation
  after the pool, which changes the function.
- modules run in any memory format; ``channels_last`` is the fast one with oneDNN;
- under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the convolutions run in bf16,
  while the pixel norm statistics and the minibatch stddev are computed in fp32
  (a mean of squares over 512 channels loses too much in bf16's 8-bit mantissa);
- the custom autograd functions behind ``conv2d``, ``leaky_relu``, ``avg_pool2x2`` and
  ``pixel_norm`` live in :mod:`brainsynth.models.ops` (same values as the stock ops, faster
  derivatives; benchmarks/README.md has the figures).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.config import CONDITIONINGS, UPSAMPLE_MODES
from brainsynth.errors import ConfigError
from brainsynth.per_resolution import expand
from brainsynth.models.ops import nhwc_strided, to_nhwc, avg_pool2x2, conv2d, leaky_relu, pixel_norm

MBSTD_EPS = 1e-8
GAIN_RELU = math.sqrt(2.0)
GAIN_G_DENSE = math.sqrt(2.0) / 4.0  # official: "override gain to match the original Theano implementation"


# --- shape helpers -------------------------------------------------------------------------

def _log2_exact(value: int, what: str) -> int:
    if not isinstance(value, int) or value < 4 or value & (value - 1):
        raise ConfigError(f"{what} must be a power of two >= 4, got {value!r}")
    return int(math.log2(value))


def official_width(res: int, fmap_base: int = 8192, fmap_max: int = 512) -> int:
    """The official width rule ``min(fmap_base / 2**stage, fmap_max)``, ``stage = log2(res) - 1``."""
    return max(1, min(int(fmap_base / 2 ** (int(math.log2(res)) - 1)), fmap_max))


def channel_widths(
    resolution: int,
    fmap_base: int = 8192,
    fmap_max: int = 512,
    widths: Mapping[int, int] | Sequence[int] | None = None,
) -> dict[int, int]:
    """Feature-map count per resolution, ``{4: nf, 8: nf, ..., resolution: nf}``.

    Parameters
    ----------
    resolution : int
        Final image size in pixels (power of two >= 4).
    fmap_base, fmap_max : int
        Official rule, :func:`official_width`.
    widths : dict or list, optional
        Explicit widths: a dict keyed by resolution, or a list for resolutions 4, 8, ...,
        ``resolution`` in order. A resolution the dict does not list follows the official
        rule scaled to the nearest listed one (:mod:`brainsynth.per_resolution`), so a preset
        tuned at 64 px also builds a network at 16 or 256 px.

    Returns
    -------
    dict[int, int]
        Channels at each resolution, in increasing resolution order.
    """
    top = _log2_exact(resolution, "resolution")
    resolutions = [2 ** k for k in range(2, top + 1)]
    if widths is None:
        return {r: official_width(r, fmap_base, fmap_max) for r in resolutions}
    if isinstance(widths, Mapping):
        if not widths:
            raise ConfigError("widths is empty; give channels for at least one resolution, or null for the rule")
        scaled = expand(widths, resolutions, lambda r: official_width(r, fmap_base, fmap_max))
        chosen = {r: max(1, round(w)) for r, w in scaled.items()}
    else:
        if len(widths) != len(resolutions):
            raise ConfigError(f"widths lists {len(widths)} values; give {len(resolutions)}, one per resolution "
                              f"{resolutions[0]}..{resolution}")
        chosen = {r: int(w) for r, w in zip(resolutions, widths)}
    if min(chosen.values()) < 1:
        raise ConfigError(f"widths must be positive, got {chosen}")
    return chosen


# Passes of each network in one training step, per image: G runs for the D step's fakes, then
# forward and two backward products in the G step (4); D runs forward and two backward products on
# the reals and the fakes (6), three more in the gradient penalty and its double backward, and three
# in the G step, about 14 in all. With these counts, training_macs matches torch's FLOP counter on
# a whole step within 1% at every resolution of the demo's networks (docs/training.md).
G_PASSES_PER_STEP = 4
D_PASSES_PER_STEP = 14
D_PASSES_OF_THE_PENALTY = 3  # of the 14; a lazy penalty (train.pggan.gp_every=k) runs them on 1 step in k


def training_macs(widths: Mapping[int, int], res: int, z_dim: int, label_dim: int = 0, gp_every: int = 1) -> float:
    """Multiply-adds of one training step per image at ``res``: the compute schedule's default cost.

    Counts the convolutions and dense layers of G (the fused up-convolution as its 4x4 kernel at
    stride 2) and of D (fromRGB, blocks, the 4x4 head) at ``res``, stable phase, weighted by
    ``G_PASSES_PER_STEP`` and ``D_PASSES_PER_STEP``.

    Parameters
    ----------
    widths : dict[int, int]
        Channels per resolution (:func:`channel_widths`), at least up to ``res``.
    res : int
        The resolution trained.
    z_dim, label_dim : int
        Latent size and one-hot label size of G's input.
    gp_every : int
        The gradient penalty on one step in ``gp_every`` (its D passes are averaged over the steps).
    """
    nf4 = widths[4]
    g = (z_dim + label_dim) * nf4 * 16 + nf4 * nf4 * 9 * 16  # dense to 4x4, conv4
    d = (nf4 + 1) * nf4 * 9 * 16 + nf4 * 16 * nf4 + nf4  # head: conv4 (+ the stddev map), dense0, dense1
    size = 8
    while size <= res:
        c_in, c_out = widths[size // 2], widths[size]
        g += c_in * c_out * 16 * (size // 2) ** 2 + c_out * c_out * 9 * size * size
        d += c_out * c_out * 9 * size * size + c_out * c_in * 9 * size * size
        size *= 2
    g += widths[res] * res * res  # toRGB
    d += widths[res] * res * res  # fromRGB
    d_passes = D_PASSES_PER_STEP - D_PASSES_OF_THE_PENALTY * (1 - 1 / gp_every)
    return G_PASSES_PER_STEP * g + d_passes * d


def _check_conditioning(conditioning: str) -> str:
    if conditioning not in CONDITIONINGS:
        raise ConfigError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {conditioning!r}")
    return conditioning


# --- the PGGAN layers --------------------------------------------------------------------

def minibatch_stddev(x: torch.Tensor, group_size: int = 4) -> torch.Tensor:
    """Append the official minibatch standard-deviation feature map.

    The batch is split into groups of ``g`` samples, where ``g`` is the largest divisor of
    N not above ``group_size`` (so any batch size works; the official code needs N
    divisible by ``min(group_size, N)``). Sample ``i`` belongs to group ``i % (N // g)``
    as in the official reshape. Per group: biased std over the group of every feature,
    ``sqrt(var + 1e-8)`` (finite even for a group of one: then it is 1e-4), averaged over
    C, H, W and appended as one extra channel.

    Parameters
    ----------
    x : Tensor
        ``[N, C, H, W]`` features.
    group_size : int
        Maximum group size (official 4). 1 or less disables the statistic (zeros).

    Returns
    -------
    Tensor
        ``[N, C + 1, H, W]``.
    """
    n, c, h, w = x.shape
    g = max(d for d in range(1, max(1, min(group_size, n)) + 1) if n % d == 0)
    if group_size <= 1:
        stat = x.new_zeros(n, 1, h, w)
    else:
        y = x.float().reshape(g, n // g, c, h, w)  # [G, M, C, H, W]
        y = y - y.mean(dim=0, keepdim=True)
        y = torch.sqrt(y.square().mean(dim=0) + MBSTD_EPS)  # [M, C, H, W]
        y = y.mean(dim=(1, 2, 3)).to(x.dtype)  # [M]
        stat = y.repeat(g).view(n, 1, 1, 1).expand(n, 1, h, w)  # [N, 1, H, W]
    return torch.cat([x, stat], dim=1)


def _lerp(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """``a + (b - a) * alpha`` with ``alpha`` a Python float (no tensor, no sync)."""
    return torch.lerp(a, b, float(alpha))


class EqualizedConv2d(nn.Module):
    """Conv layer with equalised learning rate: weight N(0,1) scaled by ``gain/sqrt(fan_in)``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int
        Odd kernel size; padding keeps the spatial size.
    gain : float
        He-style gain; the run-time weight std is ``gain / sqrt(in_channels * k * k)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float = GAIN_RELU):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv2d(x, self.weight * self.scale, self.bias, self.padding)


def upsample2x(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """``[N, C, H, W] -> [N, C, 2H, 2W]``, nearest or bilinear (half-pixel centres, edges clamped)."""
    if mode == "nearest":
        return F.interpolate(x, scale_factor=2.0, mode="nearest")
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class EqualizedUpConv2d(EqualizedConv2d):
    """2x upsample followed by a 3x3 equalised conv; nearest is computed as one transposed conv.

    ``conv3x3(upsample(x))`` equals ``conv_transpose(x, K, stride 2, padding 1)`` with the
    4x4 kernel ``K`` = sum of the four one-pixel shifts of the (spatially flipped) 3x3
    kernel: every output pixel sees the same inputs with the same summed weights, borders
    included. Parameters and initialisation are those of the 3x3 conv (fan_in = C_in * 9).
    ``mode="bilinear"`` upsamples bilinearly and convolves, unfused (same parameters).
    """

    def __init__(self, in_channels: int, out_channels: int, gain: float = GAIN_RELU, mode: str = "nearest"):
        super().__init__(in_channels, out_channels, 3, gain)
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "nearest":  # no fused form: upsample, then the 3x3 conv (2.25x its multiply-adds)
            return super().forward(upsample2x(x, self.mode))  # [N, O, 2H, 2W]
        w = (self.weight * self.scale).flip(2, 3)  # [O, I, 3, 3]
        w = F.pad(w, (1, 1, 1, 1))  # [O, I, 5, 5]
        w = w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]  # [O, I, 4, 4]
        return F.conv_transpose2d(x, w.transpose(0, 1), self.bias, stride=2, padding=1)  # [N, O, 2H, 2W]


class EqualizedLinear(nn.Module):
    """Dense layer with equalised learning rate (weight N(0,1) scaled by ``gain/sqrt(in)``)."""

    def __init__(self, in_features: int, out_features: int, gain: float = GAIN_RELU, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _act(x: torch.Tensor) -> torch.Tensor:
    # In place: x is always a layer's fresh output. LReLU's backward (and double backward)
    # only needs the sign, which the output keeps because the slope is positive.
    return leaky_relu(x)


# --- generator ---------------------------------------------------------------------------

class _GBlock(nn.Module):
    """Upsample 2x, then (conv3x3, LReLU, PixelNorm) twice."""

    def __init__(self, in_channels: int, out_channels: int, upsample: str = "nearest"):
        super().__init__()
        self.conv0 = EqualizedUpConv2d(in_channels, out_channels, mode=upsample)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(_act(self.conv0(x)))  # [N, C_out, 2H, 2W]
        return pixel_norm(_act(self.conv1(x)))


class Generator(nn.Module):
    """Progressive-growing generator, output ``[N, 1, res, res]`` linear, data range [-1, 1].

    Parameters
    ----------
    resolution : int
        Final image size (power of two, 4..512).
    z_dim : int
        Latent size; z ~ N(0, I).
    n_classes : int
        Number of labels (ADHD / control: 2).
    fmap_base, fmap_max : int
        Official width rule, see :func:`channel_widths`.
    conditioning : {"acgan", "projection", "none"}
        With "acgan" or "projection" a one-hot label is concatenated to z before the
        pixel norm (official); "none" ignores labels.
    widths : dict or list, optional
        Explicit channels per resolution (overrides fmap_base/fmap_max).
    upsample : {"nearest", "bilinear"}
        2x upsampling of the blocks and of the fade path (see the module notes).
    """

    def __init__(self, resolution: int = 64, z_dim: int = 512, n_classes: int = 2, fmap_base: int = 8192,
                 fmap_max: int = 512, conditioning: str = "acgan", *,
                 widths: Mapping[int, int] | Sequence[int] | None = None, upsample: str = "nearest"):
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {', '.join(UPSAMPLE_MODES)}, got {upsample!r}")
        self.upsample = upsample
        self.resolution = resolution
        self.z_dim = z_dim
        self.n_classes = n_classes
        self.conditioning = _check_conditioning(conditioning)
        self.widths = channel_widths(resolution, fmap_base, fmap_max, widths)
        self.label_dim = n_classes if conditioning != "none" else 0
        nf4 = self.widths[4]
        self.dense = EqualizedLinear(z_dim + self.label_dim, nf4 * 16, gain=GAIN_G_DENSE, bias=False)
        self.dense_bias = nn.Parameter(torch.zeros(nf4))  # official: one bias per channel after the reshape
        self.conv4 = EqualizedConv2d(nf4, nf4, 3)
        self.blocks = nn.ModuleDict()
        self.to_rgb = nn.ModuleDict({"4": EqualizedConv2d(nf4, 1, 1, gain=1.0)})
        for r in list(self.widths)[1:]:
            self.blocks[str(r)] = _GBlock(self.widths[r // 2], self.widths[r], upsample)
            self.to_rgb[str(r)] = EqualizedConv2d(self.widths[r], 1, 1, gain=1.0)

    def _check(self, res: int) -> None:
        if res not in self.widths:
            raise ConfigError(f"res must be a power of two in 4..{self.resolution}, got {res!r}")

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None, res: int, alpha: float = 1.0) -> torch.Tensor:
        """Images at ``res`` with the newest block faded in by ``alpha``.

        Parameters
        ----------
        z : Tensor
            ``[N, z_dim]`` latents.
        labels : LongTensor
            ``[N]`` class indices (ignored, may be None, when ``conditioning="none"``).
        res : int
            Output resolution, a power of two in 4..``resolution``.
        alpha : float
            Fade weight of the block at ``res``: 0 gives the upsampled ``res/2`` output,
            1 the new block alone.

        Returns
        -------
        Tensor
            ``[N, 1, res, res]``.
        """
        self._check(res)
        x = z
        if self.label_dim:
            x = torch.cat([z, F.one_hot(labels, self.n_classes).to(z.dtype)], dim=1)  # [N, z_dim + n_classes]
        x = pixel_norm(x)
        x = self.dense(x).view(x.shape[0], self.widths[4], 4, 4)  # [N, nf4, 4, 4]
        x = pixel_norm(_act(x + self.dense_bias.view(1, -1, 1, 1).to(x.dtype)))
        x = pixel_norm(_act(self.conv4(x)))  # [N, nf4, 4, 4]
        prev = x
        r = 4
        while r < res:
            r *= 2
            prev = x
            x = self.blocks[str(r)](x)  # [N, nf_r, r, r]
        img = self.to_rgb[str(res)](x)  # [N, 1, res, res]
        if res > 4 and alpha < 1.0:
            old = upsample2x(self.to_rgb[str(res // 2)](prev), self.upsample)
            img = _lerp(old, img, alpha)
        return img


# --- discriminator -----------------------------------------------------------------------

class _DBlock(nn.Module):
    """(conv3x3, LReLU) twice, then 2x2 average pool."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _act(self.conv0(x))
        x = _act(self.conv1(x))
        return avg_pool2x2(x)  # [N, C_out, H/2, W/2]


class Discriminator(nn.Module):
    """Progressive-growing critic: ``(score [N], class_logits [N, n_classes] or None)``.

    Parameters
    ----------
    resolution, n_classes, fmap_base, fmap_max, widths
        As for :class:`Generator`. The hidden dense layer of the head has
        ``min(fmap_base, fmap_max)`` units (official ``nf(0)``), or ``widths[4]`` when
        explicit widths are given.
    conditioning : {"acgan", "projection", "none"}
        "acgan" returns class logits; "projection" adds ``<embed(y), phi(x)>`` to the
        score and returns None for the logits; "none" ignores labels.
    mbstd_group : int
        Minibatch-stddev group size (official 4); see :func:`minibatch_stddev`.
    """

    def __init__(self, resolution: int = 64, n_classes: int = 2, fmap_base: int = 8192, fmap_max: int = 512,
                 conditioning: str = "acgan", mbstd_group: int = 4, *,
                 widths: Mapping[int, int] | Sequence[int] | None = None):
        super().__init__()
        self.resolution = resolution
        self.n_classes = n_classes
        self.conditioning = _check_conditioning(conditioning)
        self.mbstd_group = mbstd_group
        self.widths = channel_widths(resolution, fmap_base, fmap_max, widths)
        nf4 = self.widths[4]
        hidden = nf4 if widths is not None else max(1, min(fmap_base, fmap_max))
        self.from_rgb = nn.ModuleDict({str(r): EqualizedConv2d(1, c, 1) for r, c in self.widths.items()})
        self.blocks = nn.ModuleDict({str(r): _DBlock(self.widths[r], self.widths[r // 2])
                                     for r in list(self.widths)[1:]})
        self.conv4 = EqualizedConv2d(nf4 + 1, nf4, 3)
        self.dense0 = EqualizedLinear(nf4 * 16, hidden)
        n_logits = n_classes if conditioning == "acgan" else 0
        self.dense1 = EqualizedLinear(hidden, 1 + n_logits, gain=1.0)
        if conditioning == "projection":
            # Class embeddings N(0,1) scaled like an equalised dense layer of fan-in `hidden`.
            self.embed = nn.Parameter(torch.randn(n_classes, hidden))
            self.embed_scale = 1.0 / math.sqrt(hidden)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None, res: int,
                alpha: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Critic score of images at ``res`` with the newest block faded in by ``alpha``.

        Parameters
        ----------
        x : Tensor
            ``[N, 1, res, res]`` images in [-1, 1].
        labels : LongTensor
            ``[N]`` class indices (used by "projection" only; may be None otherwise).
        res : int
            Input resolution, a power of two in 4..``resolution``.
        alpha : float
            Fade weight of the block at ``res``; 0 reads the 2x average-pooled image
            through the ``res/2`` path only.

        Returns
        -------
        score : Tensor
            ``[N]`` unbounded critic score.
        class_logits : Tensor or None
            ``[N, n_classes]`` for "acgan", else None.
        """
        if res not in self.widths:
            raise ConfigError(f"res must be a power of two in 4..{self.resolution}, got {res!r}")
        if nhwc_strided(self.conv4.weight):  # the network is channels-last (conv4's weight is never 1x1x1)
            x = to_nhwc(x)
        h = _act(self.from_rgb[str(res)](x))  # [N, nf_res, res, res]
        if res > 4:
            h = self.blocks[str(res)](h)  # [N, nf_res/2, res/2, res/2]
            if alpha < 1.0:
                old = _act(self.from_rgb[str(res // 2)](avg_pool2x2(x)))
                h = _lerp(old, h, alpha)
            r = res // 2
            while r > 4:
                h = self.blocks[str(r)](h)
                r //= 2
        h = minibatch_stddev(h, self.mbstd_group)  # [N, nf4 + 1, 4, 4]
        h = _act(self.conv4(h))  # [N, nf4, 4, 4]
        phi = _act(self.dense0(h.flatten(1)))  # [N, hidden]
        out = self.dense1(phi)  # [N, 1 + n_logits]
        score = out[:, 0]
        if self.conditioning == "projection":
            emb = self.embed[labels] * self.embed_scale  # [N, hidden]
            score = score + (emb.to(phi.dtype) * phi).sum(dim=1)
        logits = out[:, 1:] if self.conditioning == "acgan" else None
        return score, logits
