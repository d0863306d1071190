"""The brain template a simulated cohort is built from, as grey-matter, white-matter and brain maps.

Two sources (``cohort.template``):

``mni152-2009`` (the default)
    The MNI ICBM152 2009 template that nilearn ships (1 mm, offline): its skull-stripped T1
    gives the brain mask, its grey- and white-matter probability maps the tissues.
a path to a skull-stripped T1 NIfTI template in MNI space
    For example the MNI avg152 T1 brain (2 mm) that nilearn 0.8.1 shipped (``docs/cohorts.md``
    has the recipe). The brain is every voxel above :data:`MASK_LEVEL` of the robust maximum;
    grey and white matter are the posterior probabilities of a three-class Gaussian mixture of
    the brain's intensities (:func:`tissue_posteriors`), ordered CSF < grey < white as on an
    adult T1 (Ashburner & Friston 2005 use the same intensity model, with spatial priors, in
    SPM's unified segmentation). The simulated structures sit at MNI coordinates, so the
    template must be in MNI space.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from brainsynth.config import DEFAULT_TEMPLATE
from brainsynth.data.volume import describe_error
from brainsynth.errors import InputError

log = logging.getLogger("brainsynth.phantom")

MNI152_2009 = DEFAULT_TEMPLATE
"""Name of the default template (nilearn's MNI ICBM152 2009, 1 mm)."""
MASK_LEVEL = 0.02
"""A template voxel is brain when above this fraction of the brain's 99.9th intensity percentile."""
GMM_SAMPLE = 200_000
"""Brain voxels (a fixed-seed random subset) the mixture is fitted on; all are then classified."""
GMM_ITERATIONS = 200
GMM_TOLERANCE = 1e-7
"""EM stops when the mean log-likelihood per voxel improves by less than this."""


@dataclass(frozen=True)
class Template:
    """A template as tissue maps.

    Attributes
    ----------
    tissues : torch.Tensor
        float32 [1, 3, X, Y, Z]: grey-matter, white-matter and brain-mask probabilities.
    affine : np.ndarray
        float64 [4, 4] voxel -> MNI mm.
    brain_lo_mm, brain_hi_mm : np.ndarray
        float64 [3], the brain's bounding box in MNI mm.
    name : str
        What it is, for the dataset description.
    """

    tissues: torch.Tensor
    affine: np.ndarray
    brain_lo_mm: np.ndarray
    brain_hi_mm: np.ndarray
    name: str = MNI152_2009

    @property
    def brain_centre_mm(self) -> np.ndarray:
        return (self.brain_lo_mm + self.brain_hi_mm) / 2.0


def _from_maps(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray, affine: np.ndarray, name: str) -> Template:
    """A :class:`Template` from float maps [X, Y, Z] (brain: 0/1 mask) and the voxel -> mm affine."""
    tissues = np.stack([gm * brain, wm * brain, brain]).astype(np.float32)[None]  # [1, 3, X, Y, Z]
    idx = np.argwhere(brain > 0)  # [n, 3]
    first, last = idx.min(0), idx.max(0)
    # All 8 corners of the voxel box: an axis stored right-to-left (LAS) flips min and max.
    corners = np.array([[(first, last)[b][a] for a, b in enumerate(bits)]
                        for bits in np.ndindex(2, 2, 2)], dtype=np.float64)  # [8, 3]
    mm = corners @ affine[:3, :3].T + affine[:3, 3]  # [8, 3]
    return Template(torch.from_numpy(np.ascontiguousarray(tissues)), np.asarray(affine, dtype=np.float64),
                    mm.min(0), mm.max(0), name)


@lru_cache(maxsize=4)
def load_template(spec: str = MNI152_2009) -> Template:
    """Load the template ``spec`` names (:data:`MNI152_2009` or a NIfTI path) once per process."""
    if spec == MNI152_2009:
        return _mni152_2009()
    return template_from_t1(spec)


def _mni152_2009() -> Template:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32)  # [197, 233, 189]
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32)
    # The T1 template is skull-stripped; the tissue maps extend a little beyond it.
    brain = (t1.get_fdata(dtype=np.float32) > 0).astype(np.float32)
    return _from_maps(gm, wm, brain, t1.affine,
                      "MNI ICBM152 2009 (nilearn.datasets.load_mni152_template, resolution=1)")


def template_from_t1(path: str | Path) -> Template:
    """A template from a skull-stripped T1 NIfTI in MNI space: brain mask and tissue posteriors.

    Parameters
    ----------
    path : str or Path
        The NIfTI file (one 3D volume, or 4D with one volume; any orientation, its affine
        mapping voxels to MNI mm).

    Returns
    -------
    Template
        Brain: voxels above :data:`MASK_LEVEL` x the brain's 99.9th intensity percentile; grey
        and white matter: :func:`tissue_posteriors` of those voxels.

    Raises
    ------
    InputError
        When the file is missing, unreadable, not 3D, not finite, or has no brain to classify.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: template file not found; pass a skull-stripped T1 NIfTI in MNI space "
                         f"or --template {MNI152_2009}")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (nib.filebasedimages.ImageFileError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(f"{path}: not a readable NIfTI template ({describe_error(exc)}); pass a .nii or .nii.gz "
                         "file") from None
    data = np.squeeze(data)
    if data.ndim != 3:
        raise InputError(f"{path}: a template must be one 3D volume, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{path}: the template has NaN/Inf voxels; replace them with 0")
    top = float(np.percentile(data[data > 0], 99.9)) if np.any(data > 0) else 0.0
    brain = data > MASK_LEVEL * top
    if top <= 0 or brain.sum() < 1000:
        raise InputError(f"{path}: the template has fewer than 1000 brain voxels above background; "
                         "pass a skull-stripped T1 brain")
    gm_brain, wm_brain = tissue_posteriors(data[brain], path)
    gm = np.zeros(data.shape, dtype=np.float32)
    wm = np.zeros(data.shape, dtype=np.float32)
    gm[brain], wm[brain] = gm_brain, wm_brain
    log.info("template %s: %d brain voxels, grey %.0f%%, white %.0f%% (Gaussian mixture)", path,
             brain.sum(), 100 * gm_brain.mean(), 100 * wm_brain.mean())
    return _from_maps(gm, wm, brain.astype(np.float32), img.affine, f"T1 template {path.name} (tissues by "
                      "a three-class Gaussian mixture of its intensities)")


def tissue_posteriors(values: np.ndarray, path: Path | str = "template") -> tuple[np.ndarray, np.ndarray]:
    """Grey- and white-matter probabilities of brain voxels from a 1D three-class Gaussian mixture.

    Expectation-maximisation (Dempster, Laird & Rubin 1977) on the intensities, started at
    their 15th, 50th and 85th percentiles; the classes are then ordered by mean as CSF, grey,
    white (adult T1 contrast). Fitted on at most :data:`GMM_SAMPLE` voxels drawn with a fixed
    seed, so the same template always gives the same maps.

    Parameters
    ----------
    values : float [n] intensities of the brain voxels.
    path : where they came from, for the error message.

    Returns
    -------
    (gm, wm) : float32 [n] each, posterior probabilities (CSF is the rest).

    Raises
    ------
    InputError
        When the intensities do not separate into three classes (a constant or binary image).
    """
    x = np.asarray(values, dtype=np.float64)
    fit = x if len(x) <= GMM_SAMPLE else np.random.default_rng(0).choice(x, GMM_SAMPLE, replace=False)
    means = np.percentile(fit, [15.0, 50.0, 85.0])
    spread = float(fit.std())
    if spread <= 0 or len(np.unique(np.round(fit / spread, 3))) < 3:
        raise InputError(f"{path}: the brain's intensities do not vary enough to tell CSF, grey and white "
                         "matter apart; pass a T1-weighted template")
    var = np.full(3, (spread / 3.0) ** 2)
    weight = np.full(3, 1.0 / 3.0)
    previous = -np.inf
    for _ in range(GMM_ITERATIONS):
        resp, loglik = _responsibilities(fit, means, var, weight)  # [n, 3]
        total = resp.sum(0) + 1e-12  # [3]
        weight = total / len(fit)
        means = (resp * fit[:, None]).sum(0) / total
        var = np.maximum((resp * (fit[:, None] - means) ** 2).sum(0) / total, (1e-3 * spread) ** 2)
        if loglik - previous < GMM_TOLERANCE:
            break
        previous = loglik
    order = np.argsort(means)
    means, var, weight = means[order], var[order], weight[order]
    if np.min(np.diff(means)) < 0.05 * spread or np.min(weight) < 0.01:
        raise InputError(f"{path}: found fewer than three tissue classes in the brain's intensities; "
                         "pass a skull-stripped T1-weighted template")
    resp, _ = _responsibilities(x, means, var, weight)
    return resp[:, 1].astype(np.float32), resp[:, 2].astype(np.float32)


def _responsibilities(x: np.ndarray, means: np.ndarray, var: np.ndarray,
                      weight: np.ndarray) -> tuple[np.ndarray, float]:
    """Posterior class probabilities [n, 3] and the mean log-likelihood of ``x`` under the mixture."""
    log_p = (np.log(weight) - 0.5 * np.log(2 * np.pi * var)
             - 0.5 * (x[:, None] - means) ** 2 / var)  # [n, 3]
    top = log_p.max(1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(log_p - top).sum(1))  # [n]
    return np.exp(log_p - log_norm[:, None]), float(log_norm.mean())
