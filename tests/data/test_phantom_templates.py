"""The simulated cohort from another brain template, and in the ADHD-200 site layout."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainsynth.api import make_cohort, prepare_dataset
from brainsynth.cli import main
from brainsynth.data.dataset import load_dataset
from brainsynth.data.template import load_template, template_from_t1, tissue_posteriors
from brainsynth.errors import ConfigError, InputError

SMALL = (40, 48, 32)  # unequal sides; the field of view is fixed, so these are ~4 mm voxels
TEMPLATE_VOXEL_MM = 4.0
TISSUE = {"csf": 30.0, "gm": 70.0, "wm": 110.0}  # adult T1: CSF < grey < white


def write_template(path, seed: int = 0) -> np.ndarray:
    """A tiny skull-stripped "T1 template" in MNI space, stored LAS (x flipped), 4 mm voxels.

    An ellipsoid brain over the MNI brain's box: white matter inside (r < 0.55), grey matter
    (r < 0.8), CSF to the edge; a little noise. Returns the true label map [X, Y, Z]
    (0 background, 1 CSF, 2 grey, 3 white) in storage order.
    """
    lo, hi = np.array([-72.0, -107.0, -72.0]), np.array([72.0, 73.0, 82.0])
    shape = tuple(int(n) for n in np.ceil((hi - lo + 16) / TEMPLATE_VOXEL_MM))  # (40, 49, 43)
    affine = np.diag([-TEMPLATE_VOXEL_MM, TEMPLATE_VOXEL_MM, TEMPLATE_VOXEL_MM, 1.0])
    affine[:3, 3] = [hi[0] + 8, lo[1] - 8, lo[2] - 8]
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
    mm = (affine[:3, :3] @ idx + affine[:3, 3:4]).reshape(3, *shape)
    centre, radii = (lo + hi) / 2, (hi - lo) / 2
    r = np.sqrt(sum(((mm[a] - centre[a]) / radii[a]) ** 2 for a in range(3)))
    labels = np.select([r < 0.55, r < 0.8, r < 1.0], [3, 2, 1], 0)
    values = np.choose(labels, [0.0, TISSUE["csf"], TISSUE["gm"], TISSUE["wm"]])
    values = values + np.where(labels > 0, np.random.default_rng(seed).normal(0, 3, shape), 0)
    nib.save(nib.Nifti1Image(values.astype(np.float32), affine), path)
    return labels


@pytest.fixture(scope="module")
def template_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "my_T1_brain.nii.gz"
    write_template(path)
    return path


# --- a template from a T1 file ------------------------------------------------------------

def test_tissue_posteriors_recover_a_known_mixture():
    rng = np.random.default_rng(1)
    truth = np.repeat([0, 1, 2], [3000, 5000, 4000])
    values = np.array([20.0, 60.0, 100.0])[truth] + rng.normal(0, 5, truth.size)
    gm, wm = tissue_posteriors(values)
    assert gm.dtype == wm.dtype == np.float32 and gm.shape == truth.shape
    assert np.all((gm >= 0) & (gm + wm <= 1 + 1e-6))
    predicted = np.select([wm > 0.5, gm > 0.5], [2, 1], 0)
    assert (predicted == truth).mean() > 0.99
    # Deterministic: the same intensities give the same maps.
    np.testing.assert_array_equal(tissue_posteriors(values)[0], gm)


def test_template_from_t1_file_finds_brain_tissues_and_mni_box(template_file):
    truth = write_template(template_file.with_name("again.nii.gz"))
    t = template_from_t1(template_file)
    gm, wm, brain = (t.tissues[0, i].numpy() for i in range(3))
    assert t.tissues.shape == (1, 3, *truth.shape)
    np.testing.assert_array_equal(brain > 0, truth > 0)
    assert gm[truth == 2].mean() > 0.9 and wm[truth == 3].mean() > 0.9
    assert gm[truth == 1].mean() < 0.1 and wm[truth == 1].mean() < 0.1  # CSF is the rest
    # The box is in MNI mm whichever way the file stores x (this one is LAS).
    np.testing.assert_allclose(t.brain_lo_mm, [-72, -107, -72], atol=TEMPLATE_VOXEL_MM + 0.1)
    np.testing.assert_allclose(t.brain_hi_mm, [72, 73, 82], atol=TEMPLATE_VOXEL_MM + 0.1)
    assert "my_T1_brain.nii.gz" in t.name and "Gaussian mixture" in t.name


def test_cohort_from_another_template(template_file, tmp_path):
    root = make_cohort(tmp_path / "other", subjects=2, seed=1, shape=SMALL, template=str(template_file))
    vol = np.asarray(nib.load(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").dataobj)
    assert vol.shape == SMALL and vol.max() > 100 and (vol > 0).mean() > 0.1
    desc = json.loads((root / "dataset_description.json").read_text())
    assert "my_T1_brain.nii.gz" in desc["Simulation"]["template"]
    assert "my_T1_brain.nii.gz" in (root / "README").read_text()
    default = make_cohort(tmp_path / "mni", subjects=2, seed=1, shape=SMALL)
    other = np.asarray(nib.load(default / "sub-01" / "anat" / "sub-01_T1w.nii.gz").dataobj)
    assert not np.array_equal(vol, other)


def test_default_template_is_nilearns_mni152_2009():
    t = load_template()
    assert t.tissues.shape == (1, 3, 197, 233, 189) and "ICBM152 2009" in t.name


@pytest.mark.parametrize("content, message", [
    (None, "template file not found; pass a skull-stripped T1 NIfTI in MNI space or --template mni152-2009"),
    (b"not a nifti", "not a readable NIfTI template"),
    (np.zeros((20, 20, 20, 2), dtype=np.float32), "a template must be one 3D volume, got shape (20, 20, 20, 2)"),
    (np.zeros((20, 20, 20), dtype=np.float32), "the template has fewer than 1000 brain voxels above background"),
    (np.pad(np.full((12, 12, 12), 50.0, dtype=np.float32), 4), "do not vary enough to tell CSF, grey and white"),
])
def test_unusable_template_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "t1.nii.gz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        nib.save(nib.Nifti1Image(content, np.eye(4)), path)
    with pytest.raises(InputError, match=re.escape(message)) as info:
        make_cohort(tmp_path / "out", subjects=1, shape=SMALL, template=str(path))
    assert "\n" not in str(info.value) and not (tmp_path / "out").exists()


# --- the ADHD-200 layout ------------------------------------------------------------------

@pytest.fixture(scope="module")
def adhd200(tmp_path_factory, template_file):
    root = tmp_path_factory.mktemp("site") / "Site"
    return make_cohort(root, subjects=6, seed=2, shape=SMALL, layout="adhd200", template=str(template_file))


def test_adhd200_layout_files_and_participants(adhd200):
    ids = [f"sub-99{i:05d}" for i in range(1, 9)]  # 6 labelled + 2 unlabelled
    for sid in ids:
        assert [p.name for p in (adhd200 / sid).iterdir()] == ["ses-1"]
        assert [p.name for p in (adhd200 / sid / "ses-1" / "anat").iterdir()] == [f"{sid}_ses-1_T1w.nii.gz"]
    table = pd.read_csv(adhd200 / "participants.tsv", sep="\t", dtype=str)
    assert list(table.columns) == ["participant_id", "gender", "age", "dx"]
    assert table.participant_id.tolist() == ids
    assert table.dx.tolist()[-2:] == ["pending", "-999"]
    labelled = table.dx.tolist()[:6]
    assert labelled.count("0") == 3 and set(labelled) - {"0"} <= {"1", "3"}
    assert set(table.gender) <= {"0", "1"} and table.age.astype(float).between(0, 28 / 365.25).all()
    levels = json.loads((adhd200 / "participants.json").read_text())["dx"]["Levels"]
    assert set(levels) == {"0", "1", "3", "pending", "-999"}
    assert json.loads((adhd200 / "dataset_description.json").read_text())["Simulation"]["layout"] == "adhd200"


def test_adhd200_volumes_equal_the_bids_layouts(adhd200, template_file, tmp_path):
    bids = make_cohort(tmp_path / "bids", subjects=6, seed=2, shape=SMALL, template=str(template_file))
    diagnoses = pd.read_csv(bids / "participants.tsv", sep="\t").diagnosis.tolist()
    dx = pd.read_csv(adhd200 / "participants.tsv", sep="\t", dtype=str).dx.tolist()
    for i in range(6):
        assert (dx[i] == "0") == (diagnoses[i] == "control")
        a = (adhd200 / f"sub-99{i + 1:05d}" / "ses-1" / "anat" / f"sub-99{i + 1:05d}_ses-1_T1w.nii.gz").read_bytes()
        assert a == (bids / f"sub-{i + 1:02d}" / "anat" / f"sub-{i + 1:02d}_T1w.nii.gz").read_bytes()


def test_prepare_reads_the_adhd200_layout_with_skip_unlabeled(adhd200, tmp_path):
    small = dict(relative_slices=[0.3, 0.7], inplane=40, patch=32, size=16)
    with pytest.raises(InputError, match="pending|-999|--skip-unlabeled"):
        prepare_dataset(adhd200, tmp_path / "strict", **small)
    ds = load_dataset(prepare_dataset(adhd200, tmp_path / "ds", skip_unlabeled=True, **small))
    subjects = ds.subjects
    assert len(subjects) == 6 and subjects.label.value_counts().to_dict() == {"adhd": 3, "control": 3}
    assert ds.manifest["simulated"] is True and ds.images.shape[1:] == (16, 16)


# --- options ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"template": "brain.png"}, "cohort.template='brain.png' must be mni152-2009 or the path of a .nii/.nii.gz"),
    ({"layout": "flat"}, "cohort.layout must be one of bids, adhd200, got 'flat'"),
])
def test_bad_template_and_layout_options(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_cohort(tmp_path / "out", subjects=1, shape=SMALL, **kwargs)


def test_cli_template_and_layout_flags(tmp_path, template_file, capsys):
    out = tmp_path / "site"
    assert main(["phantom", str(out), "--subjects", "2", "--layout", "adhd200", "--template", str(template_file),
                 "--set", "cohort.shape=[40,48,32]"]) == 0
    written = phantom_config(out)
    assert (written["layout"], written["template"], written["subjects"]) == ("adhd200", str(template_file), 2)
    capsys.readouterr()
    assert main(["phantom", str(tmp_path / "x"), "--template", str(tmp_path / "missing.nii.gz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.nii.gz: template file not found" in err


def phantom_config(root):
    import yaml

    return yaml.safe_load((root / "code" / "config.yaml").read_text())["cohort"]
