"""The re-acquisitions of a training slice: the transform family and the warps that apply it.

Conventions (every module of the audit uses them): coordinates are (x, y) in pixels from the image
centre, x to the right and y down. A training slice ``t`` re-acquired by (mirror ``M``, rotation
``theta``, scale ``s``, shift ``d``) is the image ``copy(y) = t(A (y - d))`` with
``A = M R(-theta) / s``: mirrored left-right, rotated about the centre (clockwise as displayed for
``theta > 0``), scaled about the centre, then shifted. Warps use torch's ``affine_grid`` /
``grid_sample`` with border padding (see :mod:`brainsynth.evaluate.privacy.registration` for why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INTERPOLATION = "bicubic"  # grid_sample mode of the distance: bilinear blurs half-pixel shifts visibly at 32 px
STEP_INTERPOLATION = "bilinear"  # of the Gauss-Newton steps, which need the direction only (and cost 1.5x less)


@dataclass(frozen=True)
class Family:
    """The re-acquisitions a near-copy may have gone through (the bounds of the search).

    Parameters
    ----------
    max_shift : float
        Largest translation per axis, as a fraction of the image side (0.0625 = 4 px at 64 px).
    max_rotation : float
        Largest rotation, degrees.
    max_scale : float
        Largest relative change of size (0.1 = 0.9x to 1.1x).
    flip : bool
        Whether a left-right mirror image counts.
    """

    max_shift: float = 0.0625
    max_rotation: float = 10.0
    max_scale: float = 0.1
    flip: bool = True

    def describe(self, side: int) -> str:
        """The family in words, shifts in px of a ``side`` px image."""
        mirror = "mirrored left-right or not, " if self.flip else ""
        return (f"{mirror}rotated by up to +/-{self.max_rotation:g} degrees, scaled by up to +/-{100 * self.max_scale:g} %, "
                f"shifted by up to +/-{self.max_shift * side:.3g} px ({100 * self.max_shift:.3g} % of the side) per axis")


def matrix(flip: torch.Tensor, theta_rad: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """[P, 2, 2] A = M R(-theta) / s, mapping copy coordinates (x, y) to slice coordinates."""
    c, s = torch.cos(theta_rad), torch.sin(theta_rad)
    inv_scale = torch.exp(-log_scale)
    mirror = 1.0 - 2.0 * flip  # -1 mirrors x
    a = torch.stack([torch.stack([mirror * c, mirror * s], -1), torch.stack([-s, c], -1)], -2)  # [P, 2, 2]
    return a * inv_scale[:, None, None]


def affine(a: torch.Tensor, shift: torch.Tensor, size: int) -> torch.Tensor:
    """[P, 2, 3] affine_grid matrices: slice sampled at A (y - d), all in normalised units."""
    t = -(a @ (2 * shift / size)[:, :, None])  # [P, 2, 1]
    return torch.cat([a, t], dim=2)


def sample(images: torch.Tensor, theta: torch.Tensor, mode: str = INTERPOLATION) -> torch.Tensor:
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # [P, S, S, 2]
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


def sample_points(images: torch.Tensor, a: torch.Tensor, shift: torch.Tensor, points: torch.Tensor,
                  mode: str) -> torch.Tensor:
    """Images [P, C, S, S] sampled at ``A (y - d)`` for the points ``y`` [n, 2] (px from the centre): [P, C, n]."""
    size = images.shape[-1]
    grid = ((points[None] - shift[:, None]) @ a.transpose(1, 2)) * (2.0 / size)  # [P, n, 2] normalised (x, y)
    return F.grid_sample(images, grid[:, None], mode=mode, padding_mode="border", align_corners=False)[:, :, 0]
