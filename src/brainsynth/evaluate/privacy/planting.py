"""Planted copies: training slices re-acquired by a known transform, to test that the audit finds them.

Each *family* changes a slice in one way (or all ways at once, ``combined``), with parameters
drawn uniformly from the ranges below and from the audit's search bounds
(:class:`~brainsynth.evaluate.privacy.registration.Family`). The geometry is resampled with scipy's cubic
spline (:func:`scipy.ndimage.affine_transform`), deliberately not with the bilinear torch warp the
detector aligns with, so a detection cannot rest on sharing the interpolator.

The order of operations: mirror, rotate, scale (about the centre), shift; then the gamma curve
``x ** g``, the brightness change ``a x + b``; then Gaussian noise. Values are clipped to [0, 1]
after each step, as an image file would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from brainsynth.evaluate.privacy.registration import Family

FAMILIES = ("exact", "shift", "flip", "rotate", "scale", "intensity", "gamma", "noise", "combined")
"""The planted transform families, in table order (``exact`` is the unchanged slice, a sanity row)."""

GAIN_RANGE = (0.8, 1.25)  # a of a x + b
OFFSET_RANGE = (-0.1, 0.1)  # b of a x + b
GAMMA_RANGE = (0.7, 1.4)  # g of x ** g
NOISE_RANGE = (0.02, 0.05)  # Gaussian noise sigma (image values in [0, 1])
MIN_ROTATION = 2.0  # degrees: smaller rotations are hardly a transform at all
MIN_SCALE = 0.02  # relative


@dataclass(frozen=True)
class Plant:
    """One re-acquisition: the geometry first, then the intensity, then the noise."""

    mirrored: bool = False
    rotation_deg: float = 0.0
    scale: float = 1.0
    shift_px: tuple[float, float] = (0.0, 0.0)  # (dx, dy), px of the image
    gamma: float = 1.0
    gain: float = 1.0
    offset: float = 0.0
    noise: float = 0.0

    def describe(self) -> str:
        parts = ["mirrored"] if self.mirrored else []
        if self.rotation_deg:
            parts.append(f"rotated {self.rotation_deg:+.1f} deg")
        if self.scale != 1.0:
            parts.append(f"scaled x{self.scale:.3f}")
        if any(self.shift_px):
            parts.append(f"shifted ({self.shift_px[0]:+g}, {self.shift_px[1]:+g}) px")
        if self.gamma != 1.0:
            parts.append(f"gamma {self.gamma:.2f}")
        if (self.gain, self.offset) != (1.0, 0.0):
            parts.append(f"{self.gain:.2f} x {self.offset:+.2f}")
        if self.noise:
            parts.append(f"noise sigma {self.noise:.3f}")
        return ", ".join(parts) or "unchanged"


def draw_plant(family: str, rng: np.random.Generator, bounds: Family, side: int) -> Plant:
    """Random parameters of one planted copy of ``family`` (one of :data:`FAMILIES`)."""
    def signed(lo: float, hi: float) -> float:
        return float(rng.choice([-1.0, 1.0]) * rng.uniform(lo, hi))

    max_shift = max(1, int(math.floor(bounds.max_shift * side)))

    def shift() -> tuple[float, float]:
        while True:
            d = rng.integers(-max_shift, max_shift + 1, size=2)
            if d.any():
                return float(d[0]), float(d[1])

    def gamma() -> float:
        while True:
            g = float(np.exp(rng.uniform(*np.log(GAMMA_RANGE))))
            if abs(math.log(g)) >= math.log(1.1):
                return g

    if family == "exact":
        return Plant()
    if family == "shift":
        return Plant(shift_px=shift())
    if family == "flip":
        return Plant(mirrored=True)
    if family == "rotate":
        return Plant(rotation_deg=signed(min(MIN_ROTATION, bounds.max_rotation), bounds.max_rotation))
    if family == "scale":
        return Plant(scale=1.0 + signed(min(MIN_SCALE, bounds.max_scale), bounds.max_scale))
    if family == "intensity":
        return Plant(gain=float(rng.uniform(*GAIN_RANGE)), offset=float(rng.uniform(*OFFSET_RANGE)))
    if family == "gamma":
        return Plant(gamma=gamma())
    if family == "noise":
        return Plant(noise=float(rng.uniform(*NOISE_RANGE)))
    if family == "combined":
        d = rng.integers(-max_shift, max_shift + 1, size=2)
        return Plant(mirrored=bool(rng.integers(2)), rotation_deg=float(rng.uniform(-1, 1) * bounds.max_rotation),
                     scale=float(1.0 + rng.uniform(-1, 1) * bounds.max_scale), shift_px=(float(d[0]), float(d[1])),
                     gamma=float(np.exp(rng.uniform(*np.log(GAMMA_RANGE)))), gain=float(rng.uniform(*GAIN_RANGE)),
                     offset=float(rng.uniform(*OFFSET_RANGE)), noise=float(rng.uniform(0.0, NOISE_RANGE[1])))
    raise ValueError(f"unknown family {family!r}; choose one of {', '.join(FAMILIES)}")


def apply_plant(image: np.ndarray, plant: Plant, rng: np.random.Generator) -> np.ndarray:
    """``image`` (float [H, W] in [0, 1]) re-acquired by ``plant``; float32 [H, W] in [0, 1].

    The geometry follows :mod:`~brainsynth.evaluate.privacy.registration`: copy(y) = slice(A (y - d)) with
    ``A = M R(-theta) / s`` in (x, y) coordinates from the image centre.
    """
    from scipy.ndimage import affine_transform

    img = np.asarray(image, dtype=np.float64)
    if plant.mirrored or plant.rotation_deg or plant.scale != 1.0 or any(plant.shift_px):
        t = math.radians(plant.rotation_deg)
        m = -1.0 if plant.mirrored else 1.0
        a_xy = np.array([[m * math.cos(t), m * math.sin(t)], [-math.sin(t), math.cos(t)]]) / plant.scale
        swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # scipy indexes (row, col) = (y, x)
        a_rc = swap @ a_xy @ swap
        centre = (np.array(img.shape, dtype=np.float64) - 1) / 2
        d_rc = np.array([plant.shift_px[1], plant.shift_px[0]])
        img = affine_transform(img, a_rc, offset=centre - a_rc @ (centre + d_rc), order=3, mode="nearest")
        img = np.clip(img, 0.0, 1.0)
    if plant.gamma != 1.0:
        img = img ** plant.gamma
    if (plant.gain, plant.offset) != (1.0, 0.0):
        img = np.clip(plant.gain * img + plant.offset, 0.0, 1.0)
    if plant.noise:
        img = np.clip(img + rng.normal(0.0, plant.noise, img.shape), 0.0, 1.0)
    return img.astype(np.float32)


def family_text(family: str, bounds: Family, side: int) -> str:
    """What a planted copy of ``family`` went through, in words (ranges included)."""
    shift = max(1, int(math.floor(bounds.max_shift * side)))
    texts = {
        "exact": "the training slice unchanged",
        "shift": f"shifted by whole pixels, up to +/-{shift} px per axis (not both 0)",
        "flip": "mirrored left-right",
        "rotate": f"rotated by {min(MIN_ROTATION, bounds.max_rotation):g}-{bounds.max_rotation:g} degrees either way",
        "scale": f"scaled by {100 * min(MIN_SCALE, bounds.max_scale):g}-{100 * bounds.max_scale:g} % either way",
        "intensity": f"a x + b, a in {GAIN_RANGE[0]:g}-{GAIN_RANGE[1]:g}, b in {OFFSET_RANGE[0]:+g}-{OFFSET_RANGE[1]:+g}",
        "gamma": f"x ** g, g in {GAMMA_RANGE[0]:g}-{GAMMA_RANGE[1]:g} (at least 10 % away from 1)",
        "noise": f"Gaussian noise, sigma {NOISE_RANGE[0]:g}-{NOISE_RANGE[1]:g}",
        "combined": "all of the above at once, each drawn from its range (rotation, scale and shift from 0), "
                    f"noise sigma 0-{NOISE_RANGE[1]:g}",
    }
    return texts[family]
