"""How one simulated subject becomes a T1w volume: geometry, deformation, regional changes, noise.

The pieces of :mod:`brainsynth.data.phantom` that turn a drawn :class:`Subject` into voxels
(the module docstring of :mod:`~brainsynth.data.phantom` describes the whole simulation):

* the output grid (:data:`GRID_SHAPE`, 0.6 mm voxels, RAS+, brain centred);
* the map from output millimetres back to template MNI millimetres: neonatal size, a smooth
  random deformation, each structure's radial pull (:data:`REGIONS`), the frontal lobes'
  front-to-back compression (:func:`_frontal_stretch`), and a rescaling that keeps the
  brain's volume at its own drawn ICV (:func:`icv_compensated`);
* tissue sampling by ``grid_sample``, tissue contrast, a bias field and Rician noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from brainsynth.data.template import Template, load_template

# --- geometry -------------------------------------------------------------------------------

GRID_SHAPE = (320, 320, 200)
"""Output voxels (x, y, z): ~200 axial slices of 320 x 320, like the paper's scans."""
VOXEL_SIZE_MM = 0.6
"""Isotropic voxel size at :data:`GRID_SHAPE`; the field of view is 192 x 192 x 120 mm."""
FIELD_OF_VIEW_MM = tuple(n * VOXEL_SIZE_MM for n in GRID_SHAPE)
NODE_SPACING_MM = 1.8
"""Spacing of the coarse grid on which the deformation and bias are computed, in output mm
(3 voxels at 0.6 mm); they are trilinearly upsampled from it, which is much cheaper."""
BRAIN_MARGIN_MM = 12.0
"""Margin around the template brain's bounding box that may still receive tissue after
deformation (template mm); outside it every voxel is zero background."""

# --- anatomy of the simulation --------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """An approximate subcortical structure: an ellipsoid in MNI space (left hemisphere).

    The right-hemisphere copy is the mirror image (x -> -x).

    Attributes
    ----------
    centre_mm : (x, y, z) MNI coordinates of the left structure's centre, mm.
    radii_mm : semi-axes of the ellipsoid along x, y, z, mm.
    """

    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]


REGIONS: dict[str, Region] = {
    "caudate": Region((-13.0, 12.0, 10.0), (5.0, 9.0, 8.0)),
    "putamen": Region((-25.0, 3.0, 1.0), (6.0, 13.0, 8.0)),
    "accumbens": Region((-10.0, 12.0, -8.0), (4.0, 5.0, 4.0)),
    "amygdala": Region((-23.0, -4.0, -19.0), (7.0, 7.0, 7.0)),
    "hippocampus": Region((-28.0, -23.0, -12.0), (6.0, 16.0, 7.0)),
}
"""Structures shrunk in ADHD, approximate MNI ellipsoids (no atlas ships offline)."""
FRONTAL_PLANE_Y_MM = 10.0
"""The frontal lobes are the brain anterior to this coronal plane (MNI y, mm)."""
FRONTAL_RAMP_MM = 6.0
"""Width of the smooth transition across the frontal plane (softplus scale), mm."""
ICV_GRID_MM = 4.0
"""Template-mm spacing of the grid on which :func:`icv_compensated` measures brain areas."""
AREA_SMOOTHING_MM = 6.0
"""SD of the Gaussian that smooths those areas along z, template mm (a smooth in-plane scale)."""

# --- intensities ----------------------------------------------------------------------------

NOISE_SD = 0.025
"""Rician noise level, relative to intensity 1 (about a white-matter intensity)."""
INTENSITY_TO_UINT8 = 200.0
"""Stored value of intensity 1.0; headroom up to 255 for bias and noise."""


@dataclass(frozen=True)
class TissueContrast:
    """Mean T1w intensity of each tissue (1.0 is stored as :data:`INTENSITY_TO_UINT8`)."""

    csf: float
    gm: float
    wm: float


# --- one subject ----------------------------------------------------------------------------


@dataclass
class Subject:
    """Everything random about one simulated subject (drawn by :func:`brainsynth.data.phantom.draw_subject`).

    Attributes
    ----------
    diagnosis : "adhd" or "control".
    age_days : postnatal age at scan, days.
    sex : "M" or "F".
    size_factor : linear scale from the adult template to this subject's brain (world mm
        per template mm), including the neonatal 1/3 volume and the ICV variation.
    region_volume : {(name, hemisphere): volume factor} for each :data:`REGIONS` structure.
    frontal_volume : volume factor of the frontal lobes (1 = template).
    displacement_mm : float32 [3, A, B, C], random displacement control points spread over the
        template's brain box (plus :data:`BRAIN_MARGIN_MM`), template mm.
    log_bias : float32 [3, 3, 3] control points of the log bias field.
    contrast : per-subject tissue intensities.
    noise_seed : seed of the subject's Rician noise.
    inplane_scale : None as drawn; set by :func:`icv_compensated` to float64 [2, n]: template z
        (mm about the brain centre) and the extra scale along x and y at that height, which
        gives every axial level its brain area back.
    """

    diagnosis: str
    age_days: int
    sex: str
    size_factor: float
    region_volume: dict[tuple[str, str], float]
    frontal_volume: float
    displacement_mm: np.ndarray
    log_bias: np.ndarray
    contrast: TissueContrast
    noise_seed: int = field(repr=False, default=0)
    inplane_scale: np.ndarray | None = field(repr=False, default=None)

    def to_template(self, world: np.ndarray) -> np.ndarray:
        """Output world mm [3, ...] -> template mm about the brain centre, before any deformation."""
        out = world / self.size_factor  # [3, ...]
        if self.inplane_scale is not None:
            z, k = self.inplane_scale
            out[:2] /= np.interp(out[2], z, k)  # [...] broadcast over x and y
        return out

    @property
    def max_scale(self) -> np.ndarray:
        """float64 [3], the largest world mm per template mm along x, y, z (for bounding boxes)."""
        k = 1.0 if self.inplane_scale is None else max(1.0, float(self.inplane_scale[1].max()))
        return self.size_factor * np.array([k, k, 1.0])


def grid_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """RAS+ voxel -> world mm affine of an output grid; world (0, 0, 0) is the grid centre.

    The field of view is always :data:`FIELD_OF_VIEW_MM`; a smaller ``shape`` only means
    bigger voxels (used by tests).
    """
    voxel = np.asarray(FIELD_OF_VIEW_MM) / np.asarray(shape)
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = -voxel * (np.asarray(shape) - 1) / 2.0
    return affine


def _spline_field(control: np.ndarray, frac: np.ndarray) -> np.ndarray:
    """Cubic-spline interpolation of a coarse control grid at fractional positions.

    Parameters
    ----------
    control : float32 [A, B, C] values at control points spanning the unit cube.
    frac : float [3, ...] positions in [0, 1] along each axis (clipped).

    Returns
    -------
    float32 [...] interpolated values.
    """
    scale = (np.asarray(control.shape, dtype=np.float64) - 1.0).reshape(3, *([1] * (frac.ndim - 1)))
    coords = np.clip(frac, 0.0, 1.0) * scale
    return ndimage.map_coordinates(control, coords, order=3, mode="nearest").astype(np.float32)


def _radial_pull(points: np.ndarray, centre: np.ndarray, radii: np.ndarray, volume_factor: float) -> np.ndarray:
    """Displacement that makes an ellipsoid look ``volume_factor`` times its template size.

    The output samples the template further from (or closer to) the centre: a pull
    ``p -> c + (p - c) * (1 + a * w(r))`` with ``(1 + a)^3 = 1 / volume_factor`` inside the
    ellipsoid, fading out by a flat-topped profile ``w = exp(-r^4 / 2)`` (r: normalised
    ellipsoid radius), which stays one-to-one for ``|a| < 0.8``.

    Parameters
    ----------
    points : float64 [3, ...] MNI mm.
    centre, radii : float64 [3] mm.
    volume_factor : target volume / template volume.

    Returns
    -------
    float64 [3, ...] displacement, mm.
    """
    shape = (3,) + (1,) * (points.ndim - 1)
    offset = points - centre.reshape(shape)  # [3, ...]
    r2 = np.sum((offset / radii.reshape(shape)) ** 2, axis=0)  # [...]
    a = volume_factor ** (-1.0 / 3.0) - 1.0
    return offset * (a * np.exp(-0.5 * r2 * r2))


def _template_coordinates(subject: Subject, template: Template, world: np.ndarray,
                          pulls: bool = True) -> np.ndarray:
    """Map output world points to the template MNI points whose tissue they show.

    Parameters
    ----------
    world : float64 [3, ...] output world mm.
    pulls : apply the structures' and the frontal lobes' changes (False: size and random
        deformation only).

    Returns
    -------
    float64 [3, ...] MNI mm.
    """
    shape = (3,) + (1,) * (world.ndim - 1)
    mni = template.brain_centre_mm.reshape(shape) + subject.to_template(world)  # [3, ...]
    # Random smooth deformation, control points spread over the brain's bounding box.
    lo, hi = template.brain_lo_mm - BRAIN_MARGIN_MM, template.brain_hi_mm + BRAIN_MARGIN_MM
    frac = (mni - lo.reshape(shape)) / (hi - lo).reshape(shape)
    mni = mni + np.stack([_spline_field(subject.displacement_mm[i], frac) for i in range(3)])
    return _pulled(subject, mni) if pulls else mni


def _pulled(subject: Subject, mni: np.ndarray) -> np.ndarray:
    """``mni`` [3, ...] moved by the regional volume changes (each computed from the unmoved points)."""
    pulled = mni.copy()
    for (name, hemi), factor in subject.region_volume.items():
        region = REGIONS[name]
        centre = np.array(region.centre_mm) * (np.array([-1.0, 1.0, 1.0]) if hemi == "right" else 1.0)
        pulled += _radial_pull(mni, centre, np.array(region.radii_mm), factor)
    if subject.frontal_volume != 1.0:
        pulled[1] += _frontal_stretch(mni[1], subject.frontal_volume)
    return pulled


def _frontal_stretch(mni_y: np.ndarray, volume_factor: float) -> np.ndarray:
    """Displacement along y that makes the frontal lobes ``volume_factor`` times as long.

    Anterior to :data:`FRONTAL_PLANE_Y_MM` the output samples the template at
    ``y0 + (y - y0) / volume_factor``: the lobes are compressed (or stretched) front to back
    with all their tissues, so their composition, and the brain's mean intensity, stay as
    they were. A softplus ramp (:data:`FRONTAL_RAMP_MM`) makes the change of scale smooth;
    the map stays one-to-one for any factor > 0.
    """
    u = (mni_y - FRONTAL_PLANE_Y_MM) / FRONTAL_RAMP_MM
    return (1.0 / volume_factor - 1.0) * FRONTAL_RAMP_MM * np.logaddexp(0.0, u)


def _reach_mm(subject: Subject, template: Template) -> tuple[np.ndarray, np.ndarray]:
    """Box that can hold this subject's tissue, in template mm about the brain centre (before scaling).

    The template's brain box plus :data:`BRAIN_MARGIN_MM` for the random deformation, lengthened
    in front when the frontal lobes are longer than the template's.
    """
    half = (template.brain_hi_mm - template.brain_lo_mm) / 2.0 + BRAIN_MARGIN_MM
    hi = half.copy()
    hi[1] += max(0.0, (template.brain_hi_mm[1] - FRONTAL_PLANE_Y_MM) * (subject.frontal_volume - 1.0))
    return -half, hi


def icv_compensated(subject: Subject, template: Template) -> Subject:
    """``subject`` rescaled in-plane so that each axial level keeps the brain area it had without the pulls.

    Shortening the frontal lobes shrinks the brain, more at some heights than at others; left
    alone, the ICV and the brain area of each axial slice would become group differences far
    beyond ENIGMA's ICV d = -0.10, and a classifier could read them off every slice. The ICV
    is its own, separately drawn factor, so the area of the brain mask is measured per axial
    level on a coarse grid (:data:`ICV_GRID_MM`) with and without the pulls, both smoothed
    along z (:data:`AREA_SMOOTHING_MM`), and each level is scaled along x and y by the square
    root of their ratio. The brain's volume, and its area at every height, stay as drawn;
    only its shape changes.
    """
    if subject.inplane_scale is not None or (
            subject.frontal_volume == 1.0 and all(v == 1.0 for v in subject.region_volume.values())):
        return subject  # already compensated, or nothing to compensate
    lo, hi = _reach_mm(subject, template)
    axes = [np.arange(a, b + ICV_GRID_MM, ICV_GRID_MM) for a, b in zip(lo, hi)]
    world = np.stack(np.meshgrid(*axes, indexing="ij")) * subject.size_factor  # [3, a, b, c] output mm
    mask = template.tissues[0, 2].numpy()
    inv = np.linalg.inv(template.affine)
    areas = []
    deformed = _template_coordinates(subject, template, world, pulls=False)  # [3, a, b, c]
    for mni in (deformed, _pulled(subject, deformed)):
        tidx = inv[:3, :3] @ mni.reshape(3, -1) + inv[:3, 3:4]  # [3, a*b*c]
        inside = ndimage.map_coordinates(mask, tidx, order=1, mode="constant").reshape(mni.shape[1:])
        areas.append(inside.sum(axis=(0, 1)))  # [c] brain area per axial level
    plain, pulled = (ndimage.gaussian_filter1d(a, AREA_SMOOTHING_MM / ICV_GRID_MM, mode="constant") for a in areas)
    # Levels with hardly any brain keep scale 1 (the added constant dominates their ratio) ...
    floor = 0.02 * plain.max()
    scale = np.sqrt((plain + floor) / (pulled + floor))  # [c]
    # ... so one common factor returns what the smoothing and that constant left of the volume.
    scale *= np.sqrt(areas[0].sum() / max(float((scale**2 * areas[1]).sum()), 1e-9))
    return Subject(**{**subject.__dict__, "inplane_scale": np.stack([axes[2], scale])})


def _brain_box(subject: Subject, template: Template, affine: np.ndarray,
               shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index range (inclusive) that can hold tissue; everything outside is background."""
    lo_mm, hi_mm = _reach_mm(subject, template)
    voxel = np.diag(affine)[:3]
    lo = np.floor((lo_mm * subject.max_scale - affine[:3, 3]) / voxel).astype(int)
    hi = np.ceil((hi_mm * subject.max_scale - affine[:3, 3]) / voxel).astype(int)
    return np.clip(lo, 0, np.asarray(shape) - 1), np.clip(hi, 0, np.asarray(shape) - 1)


@dataclass
class SampledTissues:
    """A subject's tissue maps on (a box of) the output grid, before contrast and noise.

    Attributes
    ----------
    lo, hi : int [3] first and last voxel index of the box; outside it all is background.
    gm, wm, csf, brain : torch.Tensor float32 [*box], tissue probabilities (brain: mask).
    log_bias : torch.Tensor float32 [*box], log of the multiplicative bias field.
    """

    lo: np.ndarray
    hi: np.ndarray
    gm: torch.Tensor
    wm: torch.Tensor
    csf: torch.Tensor
    brain: torch.Tensor
    log_bias: torch.Tensor


def sample_tissues(subject: Subject, shape: tuple[int, int, int] = GRID_SHAPE,
                   template: Template | None = None) -> SampledTissues:
    """Deform the template into one subject's output grid.

    The deformation and bias are computed on a coarse grid
    (:data:`NODE_SPACING_MM`) over the brain's box only and trilinearly upsampled; the
    template is then sampled once by ``grid_sample``.

    Parameters
    ----------
    subject : from :func:`draw_subject`.
    shape : output grid (x, y, z) voxels; the field of view is fixed.
    template : the loaded template (loaded when omitted).
    """
    template = template or load_template()
    subject = icv_compensated(subject, template)
    affine = grid_affine(shape)
    voxel = np.diag(affine)[:3]
    lo, hi = _brain_box(subject, template, affine, shape)
    box = tuple(int(n) for n in hi - lo + 1)
    # Coarse nodes spanning the box exactly (first and last voxel included), so the
    # align_corners=True upsampling below lands each node on its voxel.
    # Never finer than the voxels themselves (coarse test grids).
    spacing = max(NODE_SPACING_MM, float(voxel.min()))
    nodes = [np.linspace(lo[a], hi[a], max(2, math.ceil((box[a] - 1) * voxel[a] / spacing) + 1)) for a in range(3)]
    index = np.stack(np.meshgrid(*nodes, indexing="ij"))  # [3, a, b, c] voxel indices
    world = (affine[:3, :3] @ index.reshape(3, -1) + affine[:3, 3:4]).reshape(index.shape)  # [3, a, b, c] mm
    mni = _template_coordinates(subject, template, world)  # [3, a, b, c]
    # Template voxel index -> grid_sample's [-1, 1] (align_corners=True), ordered (z, y, x).
    inv = np.linalg.inv(template.affine)
    tidx = (inv[:3, :3] @ mni.reshape(3, -1) + inv[:3, 3:4]).reshape(mni.shape)
    tshape = np.asarray(template.tissues.shape[2:], dtype=np.float64).reshape(3, 1, 1, 1)
    norm = 2.0 * tidx / (tshape - 1.0) - 1.0
    frac = (index - lo.reshape(3, 1, 1, 1)) / np.maximum(hi - lo, 1).reshape(3, 1, 1, 1)
    log_bias = _spline_field(subject.log_bias, frac)
    coarse = np.concatenate([norm[::-1], log_bias[None]]).astype(np.float32)  # [4, a, b, c]
    fine = F.interpolate(torch.from_numpy(coarse)[None], size=box, mode="trilinear",
                         align_corners=True)  # [1, 4, *box]
    grid = fine[0, :3].permute(1, 2, 3, 0)[None]  # [1, *box, 3]
    tissue = F.grid_sample(template.tissues, grid, mode="bilinear", padding_mode="zeros",
                           align_corners=True)[0]  # [3, *box]
    gm, wm, brain = tissue[0], tissue[1], tissue[2]
    csf = (brain - gm - wm).clamp_(min=0.0)
    return SampledTissues(lo, hi, gm, wm, csf, brain, fine[0, 3])


def render_subject(subject: Subject, shape: tuple[int, int, int] = GRID_SHAPE,
                   template: Template | None = None) -> np.ndarray:
    """Render one subject's T1w volume: tissues -> contrast -> bias -> Rician noise -> uint8.

    Parameters
    ----------
    subject : from :func:`draw_subject`.
    shape : output grid (x, y, z) voxels; the field of view is fixed.
    template : the loaded template (loaded when omitted).

    Returns
    -------
    uint8 [X, Y, Z] volume, zero outside the brain.
    """
    t = sample_tissues(subject, shape, template)
    c = subject.contrast
    signal = (t.gm * c.gm + t.wm * c.wm + t.csf * c.csf) * torch.exp(t.log_bias)  # [*box]
    inside = t.brain > 0.02
    box = torch.zeros(t.brain.shape, dtype=torch.float32)
    box[inside] = torch.from_numpy(_rician(signal[inside].numpy(), subject.noise_seed))
    volume = np.zeros(shape, dtype=np.uint8)
    volume[t.lo[0]:t.hi[0] + 1, t.lo[1]:t.hi[1] + 1, t.lo[2]:t.hi[2] + 1] = np.clip(
        np.rint(box.numpy() * INTENSITY_TO_UINT8), 0, 255).astype(np.uint8)
    return volume


def region_masks(subject: Subject, shape: tuple[int, int, int] = GRID_SHAPE,
                 template: Template | None = None) -> dict[str, np.ndarray]:
    """Where each :data:`REGIONS` structure (both hemispheres) would lie without its own change.

    The subject's size, random deformation and frontal change are applied but not the
    structures' own pulls, so the grey matter inside a mask measures how much the structure
    shrank or grew (used by tests and diagnostics, not by rendering).

    Returns
    -------
    {name: bool [X, Y, Z]}.
    """
    template = template or load_template()
    affine = grid_affine(shape)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:4]  # [3, X*Y*Z] mm
    unpulled = Subject(**{**icv_compensated(subject, template).__dict__, "region_volume": {}})
    mni = _template_coordinates(unpulled, template, world)  # [3, X*Y*Z]
    masks = {}
    for name, region in REGIONS.items():
        inside = np.zeros(mni.shape[1], dtype=bool)
        for sign in (1.0, -1.0):
            centre = np.array(region.centre_mm) * np.array([sign, 1.0, 1.0])
            inside |= np.sum(((mni - centre[:, None]) / np.array(region.radii_mm)[:, None]) ** 2, axis=0) <= 1.0
        masks[name] = inside.reshape(shape)
    return masks


def _rician(signal: np.ndarray, seed: int) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels (Rician), float32 [n]."""
    rng = np.random.default_rng(seed)
    real = signal + rng.standard_normal(signal.shape, dtype=np.float32) * NOISE_SD
    imag = rng.standard_normal(signal.shape, dtype=np.float32) * NOISE_SD
    return np.sqrt(real * real + imag * imag)
