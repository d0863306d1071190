"""Differentiable discriminator augmentation for small datasets (DiffAugment / ADA).

About 1,100 training slices is the regime where a plain GAN's discriminator memorises the
reals (Karras et al. 2020, "Training GANs with Limited Data"; Zhao et al. 2020, "Differentiable
Augmentation for Data-Efficient GAN Training"). Every image D sees (reals AND fakes, see
:mod:`brainsynth.train.losses`) goes through the same random, differentiable transforms,
so D cannot tell them apart by the augmentation, and G still gets gradients through them.

Transforms (each applied per sample with probability ``p``, independently):

- translation by up to 1/8 of the image size in x and y, whole pixels;
- cutout of one square of side 1/4..1/2 of the image at a random place;
- brightness (add U(-0.5, 0.5)) and contrast (scale about the image mean by U(0.5, 1.5)).

Uncovered pixels (translation) and the cutout square take ``fill``, by default -1: the
black background of a skull-stripped slice in the [-1, 1] data range, i.e. "zero
intensity". (DiffAugment fills with the value 0, which for [-1, 1] data is mid-grey, a
border no real brain slice has.)

Modes: ``"off"`` (identity), ``"fixed"`` (constant ``p``), ``"adaptive"`` (ADA: ``p``
follows the overfitting heuristic E[sign D(real)], see :meth:`Augment.update`).

Randomness: the augmentation owns a ``torch.Generator`` on the CPU (seeded by ``seed``,
or passed in), draws its few per-sample numbers there and moves them to the images'
device. Its state is in :meth:`Augment.state_dict`, so a resumed run draws exactly the
same augmentations as an uninterrupted one, independent of the global RNG.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from brainsynth.errors import ConfigError

AUGMENT_MODES = ("off", "fixed", "adaptive")
TRANSLATE_RATIO = 0.125  # max shift as a fraction of the size (DiffAugment)
CUTOUT_MIN, CUTOUT_MAX = 0.25, 0.5  # cutout side as a fraction of the size
BRIGHTNESS_RANGE = 0.5  # added offset ~ U(-0.5, 0.5) in the [-1, 1] range
CONTRAST_RANGE = (0.5, 1.5)
P_MAX = math.nextafter(1.0, 0.0)  # ADA keeps p < 1 so some reals are always seen as they are


class Augment:
    """Per-sample differentiable augmentation with a fixed or adaptive probability.

    Parameters
    ----------
    mode : {"off", "fixed", "adaptive"}
    p : float
        Fixed probability, or the initial one for "adaptive", in [0, 1).
    target : float
        ADA target of E[sign(D(real))] (official 0.6).
    interval : int
        D steps between ADA updates (official 4).
    speed_images : int
        Images over which p can move from 0 to 1 (official 500k).
    batch_size : int
        Images per D step, for the ADA step size; the loop may change the attribute
        when the batch size changes, or pass ``batch_size`` to :meth:`update`.
    fill : float
        Value of pixels uncovered by translation and of the cutout square.
    seed : int
        Seed of the augmentation's own generator (ignored when ``generator`` is given).
    generator : torch.Generator, optional
        A CPU generator to draw from instead.
    """

    def __init__(self, mode: str = "off", p: float = 0.0, target: float = 0.6, interval: int = 4,
                 speed_images: int = 500_000, batch_size: int = 16, fill: float = -1.0, seed: int = 0,
                 generator: torch.Generator | None = None):
        if mode not in AUGMENT_MODES:
            raise ConfigError(f"augment mode must be one of {', '.join(AUGMENT_MODES)}, got {mode!r}")
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"augment p must be in [0, 1), got {p}")
        if interval < 1 or speed_images < 1 or batch_size < 1:
            raise ConfigError("augment interval, speed_images and batch_size must be >= 1")
        self.mode = mode
        self.p = float(p)
        self.target = float(target)
        self.interval = int(interval)
        self.speed_images = int(speed_images)
        self.batch_size = int(batch_size)
        self.fill = float(fill)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._sign_sum: torch.Tensor | None = None  # accumulated E[sign D(real)] (device tensor, no sync)
        self._steps = 0

    # --- the transforms -------------------------------------------------------------------

    def _rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator).to(device, non_blocking=True)

    def _chosen(self, n: int, device: torch.device) -> torch.Tensor:
        return (self._rand(n, 1, 1, 1, device=device) < self.p)  # [N, 1, 1, 1] bool

    def _translate(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        sy, sx = max(1, int(h * TRANSLATE_RATIO + 0.5)), max(1, int(w * TRANSLATE_RATIO + 0.5))
        # Integer shifts in [-s, s], per sample.
        dy = (self._rand(n, 1, 1, device=x.device) * (2 * sy + 1)).floor().long() - sy  # [N, 1, 1]
        dx = (self._rand(n, 1, 1, device=x.device) * (2 * sx + 1)).floor().long() - sx
        ys = torch.arange(h, device=x.device).view(1, h, 1) - dy  # [N, H, 1] source row
        xs = torch.arange(w, device=x.device).view(1, 1, w) - dx  # [N, 1, W] source column
        inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)  # [N, H, W]
        flat = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
        moved = x.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)  # differentiable gather
        return torch.where(inside.unsqueeze(1), moved, torch.full_like(moved, self.fill))

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        side = CUTOUT_MIN + (CUTOUT_MAX - CUTOUT_MIN) * self._rand(n, 1, 1, device=x.device)  # [N, 1, 1]
        half_h, half_w = side * h / 2, side * w / 2
        cy = self._rand(n, 1, 1, device=x.device) * h  # centre, may reach past the border
        cx = self._rand(n, 1, 1, device=x.device) * w
        ys = torch.arange(h, device=x.device).view(1, h, 1) + 0.5
        xs = torch.arange(w, device=x.device).view(1, 1, w) + 0.5
        hole = ((ys - cy).abs() < half_h) & ((xs - cx).abs() < half_w)  # [N, H, W]
        return x.masked_fill(hole.unsqueeze(1), self.fill)

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        shift = (self._rand(n, 1, 1, 1, device=x.device) - 0.5) * (2 * BRIGHTNESS_RANGE)  # [N, 1, 1, 1]
        lo, hi = CONTRAST_RANGE
        gain = lo + (hi - lo) * self._rand(n, 1, 1, 1, device=x.device)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * gain.to(x.dtype) + mean + shift.to(x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch ``[N, C, H, W]``; identity (same tensor) when off or ``p == 0``."""
        if self.mode == "off" or self.p <= 0.0:
            return x
        for transform in (self._translate, self._cutout, self._color):
            chosen = self._chosen(x.shape[0], x.device)
            x = torch.where(chosen, transform(x), x)
        return x

    # --- ADA ------------------------------------------------------------------------------

    def update(self, real_sign_mean: torch.Tensor, batch_size: int | None = None) -> None:
        """Accumulate E[sign D(real)] of one D step; adjust ``p`` every ``interval`` steps.

        ``p += sign(mean - target) * batch * interval / speed_images``, clamped to [0, 1).
        Reading the accumulated mean syncs with the device once per ``interval`` steps.
        Does nothing unless ``mode == "adaptive"``.

        Parameters
        ----------
        real_sign_mean : Tensor
            0-dim mean of ``sign(D(real))`` over the step's batch (the ``real_sign`` stat).
        batch_size : int, optional
            Images in that step (default: the ``batch_size`` attribute).
        """
        if self.mode != "adaptive":
            return
        if batch_size is not None:
            self.batch_size = int(batch_size)
        value = real_sign_mean.detach().float()
        self._sign_sum = value if self._sign_sum is None else self._sign_sum + value
        self._steps += 1
        if self._steps < self.interval:
            return
        mean = float(self._sign_sum) / self._steps
        step = self.batch_size * self._steps / self.speed_images
        direction = (mean > self.target) - (mean < self.target)
        self.p = min(max(self.p + direction * step, 0.0), P_MAX)
        self._sign_sum, self._steps = None, 0

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: p, the pending ADA sums and the RNG state."""
        return {"mode": self.mode, "p": self.p, "batch_size": self.batch_size,
                "sign_sum": 0.0 if self._sign_sum is None else float(self._sign_sum), "steps": self._steps,
                "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output (mode must match the configured one)."""
        if state.get("mode", self.mode) != self.mode:
            raise ConfigError(f"checkpoint augmentation mode {state['mode']!r} differs from the configured "
                              f"{self.mode!r}; set augment mode to {state['mode']!r} to resume")
        self.p = float(state["p"])
        self.batch_size = int(state.get("batch_size", self.batch_size))
        self._steps = int(state["steps"])
        self._sign_sum = torch.tensor(float(state["sign_sum"])) if self._steps else None
        self.generator.set_state(state["rng"])
