"""A SIMULATED neonatal ADHD / control cohort, built offline from an adult brain template.

No public neonatal MRI set carries ADHD labels, so this is brainsynth's default dataset.
Every subject is an adult template in MNI space (by default the MNI ICBM152 2009 grey-matter,
white-matter and brain maps that nilearn ships; any skull-stripped T1 template with
``cohort.template``, see :mod:`brainsynth.data.template`) put through:

1. **a neonatal size**: the brain is scaled down in world millimetres so that its volume is
   :data:`NEONATAL_VOLUME_RATIO` (1/3) of the adult template, times a per-subject
   intracranial-volume (ICV) factor. The voxel size stays a neonatal-like 0.6 mm, so the
   brain fills a 320 x 320 x 200 grid much as the paper's scans do.
2. **a smooth random deformation**: a coarse grid of random displacements
   (:data:`DEFORMATION_SD_MM`) interpolated by cubic splines.
3. **regional volumes**: caudate, putamen, accumbens, amygdala and hippocampus (left and
   right) are approximate ellipsoids at their MNI coordinates
   (:data:`~brainsynth.data.phantom_render.REGIONS`; no atlas ships offline), each grown or
   shrunk by a local radial deformation. The frontal lobes (the brain anterior to MNI
   y = 10 mm) are lengthened or shortened front to back with all their tissues, which
   models a change of frontal surface area without changing what the lobes are made of.
   Each axial level of the brain is then rescaled in-plane so that it keeps the brain area
   it had without these changes: the ICV stays the subject's own factor, and no slice's
   brain area tells the groups apart (``phantom_render.icv_compensated``).
4. **tissue contrast**: "neonatal" T1 (unmyelinated white matter darker than grey matter,
   CSF darkest) or "adult" T1 (white matter brightest), with per-subject jitter.
5. **a smooth multiplicative bias field and Rician noise** inside the brain; the
   background is exactly zero, as in skull-stripped ("segmented") data.

Group difference: focal, no global shortcut
-------------------------------------------
Every simulated volume (each structure, the frontal lobes, ICV) varies between subjects with
a relative standard deviation of :data:`NATURAL_SD` (8 %). An ADHD subject's volumes are, in
addition, changed by ``effect * EXAGGERATION[s] * d[s] * NATURAL_SD * severity``, where
``d[s]`` is the ENIGMA-ADHD Cohen's d of structure ``s`` (:data:`ENIGMA_D`, Hoogman et al.
2017; the frontal lobes use the d of about -0.2 reported for children's frontal surface
area) and ``severity`` is drawn per ADHD subject from N(1, :data:`SEVERITY_SD`) (clipped at
0), so the groups overlap. A simulated Cohen's d is therefore about
``effect * EXAGGERATION[s]`` times the real one. At the default ``effect=1``
(:data:`EXAGGERATION`; an ADHD subject of severity 1; no factor below
:data:`VOLUME_FLOOR`):

    structure        ENIGMA d   exaggeration   volume change
    caudate          -0.11      25x            -22 %
    putamen          -0.14      25x            -28 %
    accumbens        -0.15      25x            -30 %
    amygdala         -0.19      25x            -38 %
    hippocampus      -0.11      25x            -22 %
    frontal lobes    -0.20      25x            -40 % (by front-to-back length)
    ICV              -0.10      1x (real)      -0.8 %

ENIGMA reports differences of about 1 %; 12 subjects cannot show those. (The in-plane
rescaling of step 3 enlarges the levels where the frontal lobes lost area by up to about
8 %, so the structures at those levels end up somewhat less shrunk than the table says.)
The ICV is NOT exaggerated, and no change alters what the brain is made of on average: the frontal
lobes are compressed with all their tissues rather than losing grey matter to CSF, so the
mean brain intensity does not move (a paired difference of about 0.004 between-subject
SDs, ``tests/data/test_phantom.py``). Brain area and mean brain intensity per slice
therefore overlap between the groups; a linear SVM on such global per-slice features
(:mod:`brainsynth.evaluate.shortcut`) stays near chance, while one on image features
learns the focal differences (``benchmarks/phantom_effect.py``; its table is in
``docs/cohorts.md``). ``effect=0`` gives two groups drawn from the same distribution.
A subject's anatomy is drawn from its own random stream, so changing ``effect`` changes
ADHD subjects only and leaves controls byte-identical.

Geometry
--------
:data:`GRID_SHAPE` voxels of :data:`~brainsynth.data.phantom_render.VOXEL_SIZE_MM` mm, RAS+
orientation (axis 0 left->right, axis 1 posterior->anterior, axis 2 inferior->superior; the
third axis indexes axial slices), brain centred, stored as uint8 ``.nii.gz``, in a BIDS
folder or an ADHD-200 site folder (``cohort.layout``).
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from brainsynth import __version__
from brainsynth.config import CohortConfig, sections_yaml
from brainsynth.data.phantom_render import (
    FIELD_OF_VIEW_MM, GRID_SHAPE, REGIONS, SampledTissues, Subject, TissueContrast, grid_affine, icv_compensated,
    region_masks, render_subject, sample_tissues)
from brainsynth.data.template import Template, load_template
from brainsynth.fsio import atomic_write_json, atomic_write_text, staged_output_dir

__all__ = [  # the simulation's public names, with those of phantom_render and template it re-exports
    "ENIGMA_D", "EXAGGERATION", "FIELD_OF_VIEW_MM", "GRID_SHAPE", "REGIONS", "SampledTissues", "Subject",
    "Template", "TissueContrast", "assign_diagnoses", "draw_subject", "grid_affine", "icv_compensated",
    "load_template", "make_cohort", "region_masks", "render_subject", "sample_tissues", "typical_change",
]

log = logging.getLogger("brainsynth.phantom")

NEONATAL_VOLUME_RATIO = 1.0 / 3.0
"""Newborn brain volume relative to the adult template (about 1/3; e.g. Knickmeyer et al. 2008)."""


# --- what is random about a subject ---------------------------------------------------------

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
GZIP_LEVEL = 1
"""Fast compression: the background is zero, so level 1 is already compact."""


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

This {layout} dataset was written by `brainsynth phantom`. Every T1w image is a simulation:
an adult brain template scaled to neonatal size, randomly deformed, given {contrast} T1w
contrast, a bias field and Rician noise.
Template: {template}

Diagnoses are simulated. "ADHD" subjects have smaller caudate, putamen, accumbens, amygdala
and hippocampus and shorter frontal lobes. Each difference is the real ENIGMA-ADHD effect
size (Cohen's d) times an exaggeration factor, so that {subjects} subjects can show it:
  {factors}
Intracranial volume differs only at the real effect size (factor {icv:g}), and the mean brain
intensity is not changed.

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
