"""A SIMULATED neonatal ADHD / control cohort, built offline from the MNI152 template.

No public neonatal MRI set carries ADHD labels, so this is brainsynth's default dataset.
Every subject is the adult MNI ICBM152 2009 template (grey-matter, white-matter and brain
masks that nilearn ships) put through:

1. **a neonatal size**: the brain is scaled down in world millimetres so that its volume is
   :data:`NEONATAL_VOLUME_RATIO` (1/3) of the adult template, times a per-subject
   intracranial-volume (ICV) factor. The voxel size stays a neonatal-like 0.6 mm, so the
   brain fills a 320 x 320 x 200 grid much as the paper's scans do.
2. **a smooth random deformation**: a coarse grid of random displacements
   (:data:`DEFORMATION_SD_MM`) interpolated by cubic splines.
3. **regional volumes**: caudate, putamen, accumbens, amygdala and hippocampus (left and
   right) are approximate ellipsoids at their MNI coordinates (:data:`REGIONS`; no atlas
   ships offline). Each one is grown or shrunk by a local radial deformation; frontal cortex
   is thinned by turning part of its grey matter into CSF.
4. **tissue contrast**: "neonatal" T1 (unmyelinated white matter darker than grey matter,
   CSF darkest) or "adult" T1 (white matter brightest), with per-subject jitter.
5. **a smooth multiplicative bias field and Rician noise** inside the brain; the
   background is exactly zero, as in skull-stripped ("segmented") data.

Group difference
----------------
Every simulated volume (each region, frontal grey matter, ICV) varies between subjects with
a relative standard deviation of :data:`NATURAL_SD`. ADHD subjects' volumes are, in
addition, changed by ``effect * EXAGGERATION * d * NATURAL_SD * severity``, where ``d`` is
the ENIGMA-ADHD Cohen's d of that structure (:data:`ENIGMA_D`, Hoogman et al. 2017; frontal
cortex uses the d of about -0.2 reported for children's frontal surface area) and
``severity`` is drawn per ADHD subject from N(1, :data:`SEVERITY_SD`) (clipped at 0), so the
groups overlap. The simulated Cohen's d is therefore about ``effect * EXAGGERATION`` times
the real one: with the default ``effect=1`` the differences are exaggerated
:data:`EXAGGERATION`-fold (37.5x: for a typical ADHD subject about -33 % caudate and
hippocampus, -42 % putamen, -45 % accumbens, -30 % ICV, and amygdala and frontal grey matter
at the floor of -50 % that every volume factor has; ENIGMA reports differences of about 1 %),
which is what lets 12 subjects show them. ``effect=0`` gives two groups drawn from the
same distribution. A subject's anatomy is drawn from its own random stream, so changing
``effect`` changes ADHD subjects only and leaves controls byte-identical.

Calibration (the default was chosen so that a real-data baseline is informative, not
trivial): axial slices 30..120, centre 256 x 256 patch, 4x4 block mean to 64 x 64, a
standardised-pixel linear SVM (C=1e-3), 8 training / 4 test subjects (balanced), mean over
12 random subject splits of a 12-subject cohort. Slice-level harmonic mean of sensitivity
and specificity (a proxy only; the paper's real-data baseline is 0.883):

    effect            0            0.5    1                   2
    HM, seed 0        0.43         0.71   0.97                1.00
    HM, seeds 1, 2    0.35 (s1)    -      0.81 (s1), 0.94 (s2) -

so the default (effect 1) averages about 0.9 over cohort seeds, with a wide spread: 12
subjects are few.

Geometry
--------
:data:`GRID_SHAPE` voxels of :data:`VOXEL_SIZE_MM` mm, RAS+ orientation (axis 0 left->right,
axis 1 posterior->anterior, axis 2 inferior->superior; the third axis indexes axial slices),
brain centred, stored as uint8 ``.nii.gz``.
"""

from __future__ import annotations

import gzip
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage

from brainsynth import __version__
from brainsynth.config import CohortConfig, sections_yaml
from brainsynth.data.template import MNI152_2009, Template, load_template
from brainsynth.fsio import atomic_write_json, atomic_write_text, staged_output_dir

log = logging.getLogger("brainsynth.phantom")

# --- geometry -------------------------------------------------------------------------------

GRID_SHAPE = (320, 320, 200)
"""Output voxels (x, y, z): ~200 axial slices of 320 x 320, like the paper's scans."""
VOXEL_SIZE_MM = 0.6
"""Isotropic voxel size at :data:`GRID_SHAPE`; the field of view is 192 x 192 x 120 mm."""
FIELD_OF_VIEW_MM = tuple(n * VOXEL_SIZE_MM for n in GRID_SHAPE)
NEONATAL_VOLUME_RATIO = 1.0 / 3.0
"""Newborn brain volume relative to the adult template (about 1/3; e.g. Knickmeyer et al. 2008)."""
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

ENIGMA_D: dict[str, float] = {
    "accumbens": -0.15, "amygdala": -0.19, "caudate": -0.11, "hippocampus": -0.11,
    "putamen": -0.14, "icv": -0.10, "frontal_cortex": -0.20,
}
"""Cohen's d, ADHD vs control (ENIGMA-ADHD, Hoogman 2017; frontal: children's surface area)."""
NATURAL_SD = 0.08
"""Between-subject SD of every simulated volume, as a fraction of its mean."""
EXAGGERATION: dict[str, float] = {
    "caudate": 25.0, "putamen": 25.0, "accumbens": 25.0, "amygdala": 25.0, "hippocampus": 25.0,
    "frontal_cortex": 25.0, "icv": 1.0,
}
"""Simulated Cohen's d / ENIGMA Cohen's d of each structure at ``effect=1`` (module docstring)."""
VOLUME_FLOOR = 0.5
"""No simulated volume factor goes below this (natural variation and ADHD change, each)."""
SEVERITY_SD = 0.3
"""SD of the per-ADHD-subject severity multiplier (mean 1)."""
DEFORMATION_SD_MM = 2.5
"""SD of the random displacement at each control point, template mm."""
DEFORMATION_GRID = (6, 7, 6)
"""Control points of the random deformation across the template's field of view."""
BIAS_SD = 0.08
"""SD of the log bias field at each of its 3 x 3 x 3 control points."""
NOISE_SD = 0.025
"""Rician noise level, relative to intensity 1 (about a white-matter intensity)."""
INTENSITY_TO_UINT8 = 200.0
"""Stored value of intensity 1.0; headroom up to 255 for bias and noise."""
GZIP_LEVEL = 1
"""Fast compression: the background is zero, so level 1 is already compact."""


@dataclass(frozen=True)
class TissueContrast:
    """Mean T1w intensity of each tissue (1.0 is stored as :data:`INTENSITY_TO_UINT8`)."""

    csf: float
    gm: float
    wm: float


CONTRASTS: dict[str, TissueContrast] = {
    # Unmyelinated neonatal white matter has long T1, so it is darker than cortex on T1w.
    "neonatal": TissueContrast(csf=0.15, gm=0.80, wm=0.55),
    "adult": TissueContrast(csf=0.15, gm=0.60, wm=0.90),
}
CONTRAST_JITTER = 0.04
"""Per-subject relative SD of each tissue's mean intensity (scanner/maturation differences)."""

AGE_DAYS_RANGE = (1, 28)
"""Postnatal age at scan, days (the neonatal period)."""
DIAGNOSES = ("control", "adhd")


# --- one subject ----------------------------------------------------------------------------


@dataclass
class Subject:
    """Everything random about one simulated subject (drawn by :func:`draw_subject`).

    Attributes
    ----------
    diagnosis : "adhd" or "control".
    age_days : postnatal age at scan, days.
    sex : "M" or "F".
    size_factor : linear scale from the adult template to this subject's brain (world mm
        per template mm), including the neonatal 1/3 volume and the ICV variation.
    region_volume : {(name, hemisphere): volume factor} for each :data:`REGIONS` structure.
    frontal_volume : volume factor of the frontal lobes (1 = template).
    displacement_mm : float32 [3, *DEFORMATION_GRID], random displacement control points.
    log_bias : float32 [3, 3, 3] control points of the log bias field.
    contrast : per-subject tissue intensities.
    noise_seed : seed of the subject's Rician noise.
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


def _volume_change(rng: np.random.Generator, d: float, adhd_shift: float) -> float:
    """A volume factor: natural variation times the ADHD shift (``adhd_shift`` in units of d)."""
    natural = rng.normal(0.0, NATURAL_SD)
    return max(1.0 + natural, VOLUME_FLOOR) * max(1.0 + adhd_shift * d * NATURAL_SD, VOLUME_FLOOR)


def draw_subject(seed: int, index: int, diagnosis: str, effect: float, contrast: str) -> Subject:
    """Draw one subject's anatomy, contrast and noise from its own random stream.

    The stream depends on ``(seed, index)`` only and every number is drawn whatever the
    diagnosis, so ``effect`` and the labels of other subjects never change a control.

    Parameters
    ----------
    seed : cohort seed.
    index : 0-based subject index.
    diagnosis : "adhd" or "control".
    effect : multiplier of the simulated group difference (0 = none).
    contrast : a key of :data:`CONTRASTS`.
    """
    rng = np.random.default_rng([seed, index])
    severity = max(rng.normal(1.0, SEVERITY_SD), 0.0)
    # In units of Cohen's d: the ADHD shift of this subject (0 for controls).
    shift = effect * severity if diagnosis == "adhd" else 0.0
    age_days = int(rng.integers(AGE_DAYS_RANGE[0], AGE_DAYS_RANGE[1] + 1))
    sex = "M" if rng.random() < 0.5 else "F"
    icv = _volume_change(rng, ENIGMA_D["icv"] * EXAGGERATION["icv"], shift)
    size_factor = (NEONATAL_VOLUME_RATIO * icv) ** (1.0 / 3.0)
    region_volume = {
        (name, hemi): _volume_change(rng, ENIGMA_D[name] * EXAGGERATION[name], shift)
        for name in REGIONS for hemi in ("left", "right")
    }
    frontal = _volume_change(rng, ENIGMA_D["frontal_cortex"] * EXAGGERATION["frontal_cortex"], shift)
    displacement = rng.normal(0.0, DEFORMATION_SD_MM, size=(3, *DEFORMATION_GRID)).astype(np.float32)
    log_bias = rng.normal(0.0, BIAS_SD, size=(3, 3, 3)).astype(np.float32)
    base = CONTRASTS[contrast]
    jitter = 1.0 + CONTRAST_JITTER * rng.standard_normal(3)
    tissue = TissueContrast(csf=base.csf * jitter[0], gm=base.gm * jitter[1], wm=base.wm * jitter[2])
    noise_seed = int(rng.integers(2**63 - 1))
    return Subject(diagnosis, age_days, sex, float(size_factor), region_volume, float(frontal), displacement,
                   log_bias, tissue, noise_seed)


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


def _template_coordinates(subject: Subject, template: Template, world: np.ndarray) -> np.ndarray:
    """Map output world points to the template MNI points whose tissue they show.

    Parameters
    ----------
    world : float64 [3, ...] output world mm.

    Returns
    -------
    float64 [3, ...] MNI mm.
    """
    shape = (3,) + (1,) * (world.ndim - 1)
    mni = template.brain_centre_mm.reshape(shape) + world / subject.size_factor  # [3, ...]
    # Random smooth deformation, control points spread over the brain's bounding box.
    lo, hi = template.brain_lo_mm - BRAIN_MARGIN_MM, template.brain_hi_mm + BRAIN_MARGIN_MM
    frac = (mni - lo.reshape(shape)) / (hi - lo).reshape(shape)
    mni = mni + np.stack([_spline_field(subject.displacement_mm[i], frac) for i in range(3)])
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


ICV_GRID_MM = 4.0
"""Template-mm spacing of the grid on which :func:`icv_compensated` measures brain volume."""


def icv_compensated(subject: Subject, template: Template) -> Subject:
    """``subject`` with its size rescaled so that the regional pulls leave its brain volume unchanged.

    Shrinking the frontal lobes (and, a little, structures near the surface) would shrink the
    intracranial volume far beyond ENIGMA's d = -0.10; the ICV is its own, separately drawn
    factor. The brain-mask volume is measured on a coarse grid (:data:`ICV_GRID_MM`) with and
    without the pulls, and the whole brain is scaled by the cube root of their ratio.
    """
    if subject.frontal_volume == 1.0 and all(v == 1.0 for v in subject.region_volume.values()):
        return subject
    lo, hi = _reach_mm(subject, template)
    axes = [np.arange(a, b + ICV_GRID_MM, ICV_GRID_MM) for a, b in zip(lo, hi)]
    world = np.stack(np.meshgrid(*axes, indexing="ij")) * subject.size_factor  # [3, a, b, c] output mm
    mask = template.tissues[0, 2].numpy()
    inv = np.linalg.inv(template.affine)
    volumes = []
    for s in (Subject(**{**subject.__dict__, "region_volume": {}, "frontal_volume": 1.0}), subject):
        mni = _template_coordinates(s, template, world)  # [3, a, b, c]
        tidx = (inv[:3, :3] @ mni.reshape(3, -1) + inv[:3, 3:4])  # [3, a*b*c]
        volumes.append(float(ndimage.map_coordinates(mask, tidx, order=1, mode="constant").sum()))
    ratio = volumes[0] / max(volumes[1], 1e-9)
    return Subject(**{**subject.__dict__, "size_factor": subject.size_factor * ratio ** (1.0 / 3.0)})


def _brain_box(subject: Subject, template: Template, affine: np.ndarray,
               shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Voxel index range (inclusive) that can hold tissue; everything outside is background."""
    lo_mm, hi_mm = _reach_mm(subject, template)
    voxel = np.diag(affine)[:3]
    lo = np.floor((lo_mm * subject.size_factor - affine[:3, 3]) / voxel).astype(int)
    hi = np.ceil((hi_mm * subject.size_factor - affine[:3, 3]) / voxel).astype(int)
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

    The deformation, bias and frontal thinning are computed on a coarse grid
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

    The subject's size and random deformation are applied but not the regional pulls, so
    the grey matter inside a mask measures how much the structure shrank or grew (used by
    tests and diagnostics, not by rendering).

    Returns
    -------
    {name: bool [X, Y, Z]}.
    """
    template = template or load_template()
    affine = grid_affine(shape)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ index + affine[:3, 3:4]  # [3, X*Y*Z] mm
    unpulled = Subject(**{**icv_compensated(subject, template).__dict__, "region_volume": {}, "frontal_volume": 1.0})
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


# --- the cohort -----------------------------------------------------------------------------


def assign_diagnoses(subjects: int, adhd_fraction: float, seed: int) -> list[str]:
    """Exactly ``round(subjects * adhd_fraction)`` ADHD labels, placed at random by ``seed``."""
    n_adhd = int(round(subjects * adhd_fraction))
    rng = np.random.default_rng([seed, 2**31])  # a stream of its own, apart from the subjects'
    adhd = set(rng.choice(subjects, size=n_adhd, replace=False).tolist())
    return ["adhd" if i in adhd else "control" for i in range(subjects)]


def _nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """A .nii.gz file's bytes; gzip with mtime 0 so the same volume gives the same bytes."""
    img = nib.Nifti1Image(volume, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)  # scanner-anatomical
    img.header.set_sform(affine, code=1)
    img.header["descrip"] = b"brainsynth SIMULATED neonatal T1w phantom"
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def _description(cfg: CohortConfig, shape: tuple[int, int, int], template: Template) -> dict:
    effect = cfg.effect
    return {
        "Name": "brainsynth simulated neonatal ADHD/control cohort (SIMULATED, not patient data)",
        "BIDSVersion": "1.9.0",
        "DatasetType": "raw",
        "Simulated": True,
        "Statement": (
            "These images are SIMULATED. No real patient data is involved. Each subject is an adult brain "
            "template scaled to neonatal size (1/3 adult volume), randomly deformed, given neonatal or adult "
            "T1w tissue contrast, a bias field and Rician noise. ADHD subjects have smaller caudate, putamen, "
            "accumbens, amygdala and hippocampus and shorter frontal lobes, in the directions reported by "
            "ENIGMA-ADHD but exaggerated (factors below); their intracranial volume differs only at the "
            "real effect size (Cohen's d -0.10 at effect 1), and their brain's mean intensity not at all "
            "by design."
        ),
        "GeneratedBy": [{"Name": "brainsynth", "Version": __version__,
                         "Description": "brainsynth phantom (brainsynth.data.phantom.make_cohort)"}],
        "Simulation": {
            "seed": cfg.seed,
            "subjects": cfg.subjects,
            "adhd_fraction": cfg.adhd_fraction,
            "effect": effect,
            "contrast": cfg.contrast,
            "layout": cfg.layout,
            "exaggeration_factor": {k: effect * v for k, v in EXAGGERATION.items()},
            "exaggeration_note": (
                "per structure, the simulated Cohen's d of an ADHD subject of average severity is "
                "exaggeration_factor x the ENIGMA-ADHD Cohen's d (enigma_cohens_d); exaggeration_factor is "
                "effect x the calibrated factor of brainsynth.data.phantom.EXAGGERATION"
            ),
            "typical_adhd_volume_change": {k: round(typical_change(k, effect), 4) for k in EXAGGERATION},
            "enigma_cohens_d": ENIGMA_D,
            "natural_sd": NATURAL_SD,
            "severity_sd": SEVERITY_SD,
            "volume_floor": VOLUME_FLOOR,
            "neonatal_volume_ratio": NEONATAL_VOLUME_RATIO,
            "grid_shape": list(shape),
            "voxel_size_mm": [float(v) for v in np.asarray(FIELD_OF_VIEW_MM) / np.asarray(shape)],
            "template": template.name,
        },
    }


PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Subject identifier"},
    "diagnosis": {"Description": "Simulated group", "Levels": {
        "adhd": "simulated ADHD (smaller subcortical structures, shorter frontal lobes)",
        "control": "simulated typically developing control"}},
    "age": {"Description": "Simulated postnatal age at scan", "Units": "days"},
    "sex": {"Description": "Simulated sex", "Levels": {"M": "male", "F": "female"}},
}

ADHD200_PARTICIPANTS_JSON = {
    "participant_id": {"Description": "Subject identifier (sub- and 7 digits, as in ADHD-200)"},
    "gender": {"Description": "Simulated sex", "Levels": {"0": "female", "1": "male"}},
    "age": {"Description": "Simulated postnatal age at scan", "Units": "years"},
    "dx": {"Description": "Simulated diagnosis, ADHD-200 codes", "Levels": {
        "0": "typically developing control", "1": "ADHD combined (simulated ADHD)",
        "3": "ADHD inattentive (simulated ADHD)", "pending": "no diagnosis released", "-999": "missing"}},
}
ADHD200_UNLABELLED = ("pending", "-999")
"""dx of the extra subjects an ADHD-200-layout cohort lists without a usable label (one each)."""
ADHD200_ADHD_CODES = (1, 3)
"""dx codes given to simulated ADHD subjects (combined, inattentive), drawn at random."""
ADHD200_ID_PREFIX = "99"
"""Subject ids are this prefix and a 5-digit number: 7 digits, as ADHD-200's, in no real site's range."""

README_TEXT = """\
SIMULATED DATA - NOT REAL PATIENTS

This {layout} dataset was written by `brainsynth phantom`. Every T1w image is a simulation built
from an adult brain template ({template}): scaled to neonatal size, randomly deformed, given
{contrast} T1w contrast, a bias field and Rician noise. Diagnoses are simulated: "adhd"
subjects have smaller caudate, putamen, accumbens, amygdala and hippocampus and shorter frontal
lobes. Each difference is the real ENIGMA-ADHD effect size times an exaggeration factor
({factors}), so that {subjects} subjects can show it. Intracranial volume differs only at the
real effect size (factor {icv:g}) and the mean brain intensity is not changed.

Do not use these images to draw any clinical conclusion. Settings: seed {seed}, effect {effect:g}.
See dataset_description.json for the full recipe.
"""


def typical_change(name: str, effect: float) -> float:
    """Volume change of structure ``name`` for an ADHD subject of severity 1 (e.g. -0.3 = 30 % smaller)."""
    return max(1.0 + effect * EXAGGERATION[name] * ENIGMA_D[name] * NATURAL_SD, VOLUME_FLOOR) - 1.0


def _adhd200_rows(cfg: CohortConfig, diagnoses: list[str]) -> list[tuple[str, str, str | int]]:
    """(subject id, diagnosis to simulate, dx cell) of every subject, unlabelled ones last.

    The dx codes come from a stream of their own, so the volumes equal the BIDS layout's.
    """
    rng = np.random.default_rng([cfg.seed, 2**31 + 1])
    codes = rng.choice(ADHD200_ADHD_CODES, size=len(diagnoses))
    rows = [(f"sub-{ADHD200_ID_PREFIX}{i + 1:05d}", d, int(codes[i]) if d == "adhd" else 0)
            for i, d in enumerate(diagnoses)]
    # Unlabelled subjects have scans too (ADHD-200's test release); their anatomy is a control's.
    rows += [(f"sub-{ADHD200_ID_PREFIX}{len(diagnoses) + j + 1:05d}", "control", dx)
             for j, dx in enumerate(ADHD200_UNLABELLED)]
    return rows


def make_cohort(out_dir: str | Path, cfg: CohortConfig, *, force: bool = False) -> Path:
    """Write a SIMULATED neonatal ADHD/control cohort as a BIDS folder or an ADHD-200 site folder.

    Parameters
    ----------
    out_dir : str or Path
        Folder to create. ``layout: bids``: ``sub-XX/anat/sub-XX_T1w.nii.gz``, participants.tsv
        (participant_id, diagnosis, age in days, sex). ``layout: adhd200``:
        ``sub-99NNNNN/ses-1/anat/sub-99NNNNN_ses-1_T1w.nii.gz``, participants.tsv (participant_id,
        gender, age in years, dx codes 0 / 1 / 3) with one ``pending`` and one ``-999`` subject
        more, whose scans have no usable label (``prepare --skip-unlabeled`` drops them). Both
        add participants.json, dataset_description.json, README, and the resolved ``cohort``
        section as code/config.yaml.
    cfg : CohortConfig
        The ``cohort`` section: subjects (1..99), ADHD share (exactly
        ``round(subjects * adhd_fraction)``), effect (multiplier >= 0 of the simulated group
        difference; 1 is the calibrated default of :data:`EXAGGERATION`, 0 removes it),
        contrast, template (:data:`~brainsynth.data.template.MNI152_2009` or a T1 NIfTI path),
        layout, grid shape (null = :data:`GRID_SHAPE`; the field of view stays
        :data:`FIELD_OF_VIEW_MM`, so a smaller grid has coarser voxels, for fast tests) and seed
        (the same seed gives byte-identical files).
    force : bool
        Replace an existing ``out_dir``.

    Returns
    -------
    Path to the written folder.

    Raises
    ------
    ConfigError
        On an invalid option.
    InputError
        On a template file that cannot be used.
    OutputExistsError
        When ``out_dir`` exists and ``force`` is false.
    """
    cfg.check()
    shape = tuple(int(n) for n in cfg.shape) if cfg.shape else GRID_SHAPE
    out_dir = Path(out_dir)
    diagnoses = assign_diagnoses(cfg.subjects, cfg.adhd_fraction, cfg.seed)
    template = load_template(cfg.template)
    affine = grid_affine(shape)
    adhd200 = cfg.layout == "adhd200"
    if adhd200:
        plan = _adhd200_rows(cfg, diagnoses)
    else:
        plan = [(f"sub-{i + 1:02d}", d, d) for i, d in enumerate(diagnoses)]
    rows = []
    with staged_output_dir(out_dir, force=force, option="OUT_DIR") as stage:
        for index, (subject_id, diagnosis, cell) in enumerate(plan):
            subject = draw_subject(cfg.seed, index, diagnosis, cfg.effect, cfg.contrast)
            volume = render_subject(subject, shape, template)
            if adhd200:
                anat, name = stage / subject_id / "ses-1" / "anat", f"{subject_id}_ses-1_T1w.nii.gz"
                rows.append({"participant_id": subject_id, "gender": int(subject.sex == "M"),
                             "age": round(subject.age_days / 365.25, 4), "dx": cell})
            else:
                anat, name = stage / subject_id / "anat", f"{subject_id}_T1w.nii.gz"
                rows.append({"participant_id": subject_id, "diagnosis": diagnosis, "age": subject.age_days,
                             "sex": subject.sex})
            anat.mkdir(parents=True)
            (anat / name).write_bytes(_nifti_bytes(volume, affine))
            log.info("%s  %-7s  simulated (%d/%d)", subject_id, cell, index + 1, len(plan))
        atomic_write_text(stage / "participants.tsv", pd.DataFrame(rows).to_csv(sep="\t", index=False))
        atomic_write_json(stage / "participants.json", ADHD200_PARTICIPANTS_JSON if adhd200 else PARTICIPANTS_JSON)
        atomic_write_json(stage / "dataset_description.json", _description(cfg, shape, template))
        factors = ", ".join(f"{k} {cfg.effect * v:g}x" for k, v in EXAGGERATION.items() if k != "icv")
        atomic_write_text(stage / "README", README_TEXT.format(
            layout="ADHD-200-layout" if adhd200 else "BIDS", template=template.name, contrast=cfg.contrast,
            factors=factors, icv=cfg.effect * EXAGGERATION["icv"], subjects=cfg.subjects, seed=cfg.seed,
            effect=cfg.effect))
        # BIDS keeps what made a dataset under code/; a validator ignores it.
        atomic_write_text(stage / "code" / "config.yaml", sections_yaml(cfg, what="simulated cohort"))
    return out_dir
