"""Small real NIfTI cohorts written with nibabel, for the prepare / layout / bad-input tests.

Volumes have unequal sides (40 x 48 x 36) because equal sides hide axis bugs. The brain is
an ellipsoid with a smooth intensity ramp; a bright marker sits in the anterior-left part so
tests can check that reorientation puts anatomy where it belongs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

# The test modules import these helpers as ``data_fixtures``: several test folders have a
# conftest.py, and pytest keeps only the last one imported under the name ``conftest``.
sys.modules.setdefault("data_fixtures", sys.modules[__name__])

SHAPE = (40, 48, 36)  # X (left->right), Y (posterior->anterior), Z (inferior->superior) in RAS
MARKER = (slice(4, 10), slice(38, 44), slice(8, 28))  # anterior-left, through the middle slices
SMALL = dict(slices=(2, 20), inplane=40, patch=32, size=16)  # fast prepare options (19 slices)


def brain_volume(shape=SHAPE, seed: int = 0, z_range: tuple[int, int] | None = None, marker: bool = True) -> np.ndarray:
    """float32 [X, Y, Z] in RAS: an ellipsoid "brain" (values 40..100) on a zero background.

    ``z_range`` limits the brain to slices z0..z1 (inclusive); ``marker`` adds a block of 200.
    """
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    r2 = sum(g**2 for g in grids) / 0.95**2
    vol = np.where(r2 < 1, 40 + 60 * (1 - r2), 0).astype(np.float32)
    vol += np.where(r2 < 1, rng.normal(0, 2, shape), 0).astype(np.float32)
    if z_range is not None:
        vol[:, :, : z_range[0]] = 0
        vol[:, :, z_range[1] + 1:] = 0
    if marker:
        vol[MARKER] = 200
    return vol


def ras_affine(zooms=(1.0, 1.0, 1.0)) -> np.ndarray:
    return np.diag([*zooms, 1.0])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Write ``data`` as a NIfTI file (``.nii`` or ``.nii.gz`` from the name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), ras_affine() if affine is None else affine), path)
    return path


def as_lps(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same anatomy stored in LPS order: axes 0 and 1 flipped, with the matching affine."""
    nx, ny = data.shape[:2]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[0, 3], affine[1, 3] = nx - 1, ny - 1  # voxel (0,0,z) sits where RAS voxel (nx-1, ny-1, z) was
    return np.ascontiguousarray(data[::-1, ::-1, :]), affine


def write_table(path: Path, header: list[str], rows: list[list], sep: str = "\t") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [sep.join(header)] + [sep.join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def make_bids(root: Path, labels: dict[str, str], sessions: dict[str, int] | None = None,
              description: dict | None = None) -> Path:
    """A BIDS folder: participants.tsv + sub-<id>/[ses-<n>/]anat/sub-<id>[_ses-<n>]_T1w.nii.gz."""
    import json

    for i, (sid, label) in enumerate(sorted(labels.items())):
        n_sessions = (sessions or {}).get(sid, 0)
        if n_sessions:
            for s in range(1, n_sessions + 1):
                write_nifti(root / f"sub-{sid}/ses-{s}/anat/sub-{sid}_ses-{s}_T1w.nii.gz",
                            brain_volume(seed=10 * i + s))
        else:
            write_nifti(root / f"sub-{sid}/anat/sub-{sid}_T1w.nii.gz", brain_volume(seed=i))
    write_table(root / "participants.tsv", ["participant_id", "diagnosis", "age"],
                [[f"sub-{sid}", label, 10 + i] for i, (sid, label) in enumerate(sorted(labels.items()))])
    if description is not None:
        (root / "dataset_description.json").write_text(json.dumps(description))
    return root


def make_flat(root: Path, labels: dict[str, str], sep: str = ",",
              header: tuple[str, str] = ("subject", "diagnosis")) -> tuple[Path, Path]:
    """A flat folder of <id>.nii.gz plus a label table beside it (not inside)."""
    for i, sid in enumerate(sorted(labels)):
        write_nifti(root / "volumes" / f"{sid}.nii.gz", brain_volume(seed=i))
    table = write_table(root / ("labels.csv" if sep == "," else "labels.tsv"), list(header),
                        [[sid, lbl] for sid, lbl in sorted(labels.items())], sep=sep)
    return root / "volumes", table


SIX = {"01": "adhd", "02": "control", "03": "adhd", "04": "control", "05": "adhd", "06": "control"}


@pytest.fixture
def bids_cohort(tmp_path) -> Path:
    """Six subjects (3 ADHD, 3 control); sub-02 has two sessions."""
    return make_bids(tmp_path / "bids", SIX, sessions={"02": 2})


@pytest.fixture
def flat_cohort(tmp_path) -> tuple[Path, Path]:
    """Four subjects as <id>.nii.gz with a labels CSV (subject, diagnosis)."""
    return make_flat(tmp_path, {"s1": "adhd", "s2": "control", "s3": "ADHD", "s4": "HC"})
