"""Tests of the simulated neonatal ADHD cohort (brainsynth.data.phantom)."""

import json
import re

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from brainsynth.cli import main
from brainsynth.data import phantom
from brainsynth.api import make_cohort
from brainsynth.errors import ConfigError, OutputExistsError

# Unequal sizes on purpose: identical sizes hide axis bugs. The field of view is fixed,
# so these are just coarse (about 3-5 mm) voxels.
SMALL = (40, 48, 32)
REGION_GRID = (56, 64, 40)


def _volume(root, subject_id):
    return np.asarray(nib.load(root / subject_id / "anat" / f"{subject_id}_T1w.nii.gz").dataobj)


def _file_bytes(root, subject_id):
    return (root / subject_id / "anat" / f"{subject_id}_T1w.nii.gz").read_bytes()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """5 subjects, 2 ADHD (round(5 * 0.4)), small grid."""
    out = tmp_path_factory.mktemp("cohort") / "bids"
    return make_cohort(out, subjects=5, adhd_fraction=0.4, seed=3, shape=SMALL)


def test_bids_layout_and_participants(cohort):
    ids = [f"sub-{i:02d}" for i in range(1, 6)]
    assert sorted(p.name for p in cohort.iterdir()) == sorted(
        ids + ["README", "code", "dataset_description.json", "participants.json", "participants.tsv"])
    written = yaml.safe_load((cohort / "code" / "config.yaml").read_text())["cohort"]
    assert (written["subjects"], written["seed"], written["shape"]) == (5, 3, list(SMALL))
    for sid in ids:
        assert [p.name for p in (cohort / sid / "anat").iterdir()] == [f"{sid}_T1w.nii.gz"]
    table = pd.read_csv(cohort / "participants.tsv", sep="\t")
    assert list(table.columns) == ["participant_id", "diagnosis", "age", "sex"]
    assert table.participant_id.tolist() == ids
    assert table.diagnosis.value_counts().to_dict() == {"control": 3, "adhd": 2}
    assert table.age.between(*phantom.AGE_DAYS_RANGE).all()
    assert set(table.sex) <= {"M", "F"}
    assert set(json.loads((cohort / "participants.json").read_text())) == set(table.columns)
    # No leftover staging folders beside the output.
    assert [p.name for p in cohort.parent.iterdir()] == ["bids"]


def test_description_and_readme_say_simulated(cohort):
    desc = json.loads((cohort / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "raw" and desc["BIDSVersion"] and desc["Simulated"] is True
    assert "SIMULATED" in desc["Name"] and "No real patient data" in desc["Statement"]
    sim = desc["Simulation"]
    assert (sim["seed"], sim["effect"], sim["contrast"]) == (3, 1.0, "neonatal")
    assert sim["exaggeration_factor"] == phantom.EXAGGERATION and sim["exaggeration_factor"]["icv"] == 1.0
    assert sim["enigma_cohens_d"]["icv"] == -0.10 and sim["layout"] == "bids"
    # An average ADHD subject: ICV -0.8 % (ENIGMA's d = -0.10 times the natural SD of 8 %).
    assert sim["typical_adhd_volume_change"]["icv"] == pytest.approx(-0.008)
    assert sim["typical_adhd_volume_change"]["frontal_cortex"] == pytest.approx(
        -0.2 * 0.08 * phantom.EXAGGERATION["frontal_cortex"])
    assert sim["grid_shape"] == list(SMALL) and "ICBM152 2009" in sim["template"]
    readme = (cohort / "README").read_text()
    assert readme.startswith("SIMULATED DATA - NOT REAL PATIENTS")
    assert f"frontal_cortex {phantom.EXAGGERATION['frontal_cortex']:g}x" in readme


def test_volume_geometry_dtype_and_ras_affine(cohort):
    img = nib.load(cohort / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    assert img.shape == SMALL and img.get_data_dtype() == np.uint8
    assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
    voxel = np.array(phantom.FIELD_OF_VIEW_MM) / np.array(SMALL)
    np.testing.assert_allclose(img.header.get_zooms(), voxel, rtol=1e-6)
    # World origin at the grid centre; the brain is centred in it and the border is background.
    np.testing.assert_allclose(img.affine @ [*(np.array(SMALL) - 1) / 2, 1], [0, 0, 0, 1], atol=1e-4)
    vol = np.asarray(img.dataobj)
    centre = np.argwhere(vol > 0).mean(axis=0)
    assert np.all(np.abs(centre - (np.array(SMALL) - 1) / 2) < np.array(SMALL) * 0.1)
    assert vol[0].max() == vol[-1].max() == vol[:, :, 0].max() == vol[:, :, -1].max() == 0


def test_default_geometry_constants():
    assert phantom.GRID_SHAPE == (320, 320, 200)
    np.testing.assert_allclose(phantom.FIELD_OF_VIEW_MM, (192.0, 192.0, 120.0))
    affine = phantom.grid_affine(phantom.GRID_SHAPE)
    np.testing.assert_allclose(np.diag(affine)[:3], [0.6, 0.6, 0.6])


def test_same_seed_gives_identical_bytes_other_seed_differs(cohort, tmp_path):
    again = make_cohort(tmp_path / "again", subjects=5, adhd_fraction=0.4, seed=3, shape=SMALL)
    other = make_cohort(tmp_path / "other", subjects=2, adhd_fraction=0.4, seed=4, shape=SMALL)
    for name in ("participants.tsv", "dataset_description.json", *(f"sub-{i:02d}/anat/sub-{i:02d}_T1w.nii.gz"
                                                                   for i in range(1, 6))):
        assert (again / name).read_bytes() == (cohort / name).read_bytes()
    for sid in ("sub-01", "sub-02"):
        assert not np.array_equal(_volume(other, sid), _volume(cohort, sid))
    # No two subjects look alike, and each has its own brain size.
    vols = [_volume(cohort, f"sub-{i:02d}") for i in range(1, 6)]
    assert len({v.tobytes() for v in vols}) == 5
    assert len({int((v > 0).sum()) for v in vols}) == 5


def test_adhd_assignment_is_exact_and_random():
    labels = [phantom.assign_diagnoses(12, 0.5, seed) for seed in range(4)]
    assert all(lbl.count("adhd") == 6 for lbl in labels)
    assert len({tuple(lbl) for lbl in labels}) > 1
    assert phantom.assign_diagnoses(7, 0.3, 0).count("adhd") == 2
    assert phantom.assign_diagnoses(3, 0.0, 0) == ["control"] * 3


@pytest.mark.parametrize("contrast, wm_darker", [("neonatal", True), ("adult", False)])
def test_tissue_contrast(tmp_path, contrast, wm_darker):
    root = make_cohort(tmp_path / contrast, subjects=1, seed=1, contrast=contrast, shape=SMALL)
    vol = _volume(root, "sub-01").astype(np.float64)
    diagnosis = pd.read_csv(root / "participants.tsv", sep="\t").diagnosis[0]
    subject = phantom.draw_subject(1, 0, diagnosis, 1.0, contrast)
    t = phantom.sample_tissues(subject, SMALL)
    box = vol[t.lo[0]:t.hi[0] + 1, t.lo[1]:t.hi[1] + 1, t.lo[2]:t.hi[2] + 1]
    wm = box[(t.wm > 0.8).numpy()].mean()
    gm = box[(t.gm > 0.8).numpy()].mean()
    csf = box[(t.csf > 0.8).numpy()].mean()
    assert (wm < gm) == wm_darker
    assert csf < min(wm, gm)
    assert abs(wm - gm) > 20  # on the 0..255 scale, clearly visible


def test_effect_changes_adhd_brains_and_leaves_controls_alone(tmp_path):
    kwargs = dict(subjects=4, adhd_fraction=0.5, seed=5, shape=REGION_GRID)
    none = make_cohort(tmp_path / "e0", effect=0.0, **kwargs)
    strong = make_cohort(tmp_path / "e2", effect=2.0, **kwargs)
    table = pd.read_csv(none / "participants.tsv", sep="\t")
    for index, row in enumerate(table.itertuples()):
        sid = row.participant_id
        if row.diagnosis == "control":
            assert _file_bytes(strong, sid) == _file_bytes(none, sid)
            continue
        # (The subcortical shrinkage is measured in grey matter below, where the masks can follow
        # the subject's geometry.) Shorter frontal lobes: the brain ends further back. The ICV barely changes.
        front = [np.flatnonzero(_volume(root, sid).any(axis=(0, 2))).max() for root in (none, strong)]
        assert front[1] <= front[0] - 3
        icv = [(_volume(root, sid) > 0).sum() for root in (none, strong)]
        assert 0.96 < icv[1] / icv[0] < 1.0


def test_effect_zero_makes_labels_irrelevant(tmp_path):
    a = make_cohort(tmp_path / "all_adhd", subjects=2, adhd_fraction=1.0, effect=0.0, seed=2, shape=SMALL)
    c = make_cohort(tmp_path / "all_ctrl", subjects=2, adhd_fraction=0.0, effect=0.0, seed=2, shape=SMALL)
    for sid in ("sub-01", "sub-02"):
        assert _file_bytes(a, sid) == _file_bytes(c, sid)


def _brain_and_mean_signal(subject, shape):
    """Brain volume (voxels) and the noise-free mean T1 signal inside it."""
    t = phantom.sample_tissues(subject, shape)
    c = subject.contrast
    signal = t.gm * c.gm + t.wm * c.wm + t.csf * c.csf
    return float(t.brain.sum()), float((signal * t.brain).sum() / t.brain.sum())


def test_icv_and_mean_intensity_change_only_at_realistic_sizes():
    # The same ADHD subjects with and without the effect: paired, so the change is the effect's.
    paired = [[_brain_and_mean_signal(phantom.draw_subject(4, i, "adhd", e, "neonatal"), SMALL)
               for e in (0.0, 1.0)] for i in range(5)]
    icv_change = np.array([b[0] / a[0] - 1.0 for a, b in paired])
    signal_change = np.array([b[1] - a[1] for a, b in paired])
    # ENIGMA's ICV d = -0.10 with a natural SD of 8 %: about -0.8 % for an average subject.
    assert np.all(icv_change < 0) and -0.016 < icv_change.mean() < -0.004
    # Natural between-subject SD of the mean signal (controls): the change is far below 0.1 SD.
    natural = np.std([_brain_and_mean_signal(phantom.draw_subject(4, i, "control", 0.0, "neonatal"), SMALL)[1]
                      for i in range(5, 10)])
    assert natural > 0.01 and abs(signal_change.mean()) < 0.1 * natural


def test_icv_compensation_gives_each_axial_level_its_area_back():
    subject = phantom.draw_subject(0, 1, "adhd", 1.0, "neonatal")
    assert subject.frontal_volume < 0.9 and subject.inplane_scale is None  # a clearly shorter frontal lobe
    template = phantom.load_template()
    compensated = phantom.icv_compensated(subject, template)
    z, scale = compensated.inplane_scale
    assert z.shape == scale.shape and scale.min() >= 1.0 and 1.02 < scale.max() < 1.2  # grown in-plane only
    assert phantom.icv_compensated(compensated, template) is compensated  # not twice

    def area_per_level(s):
        t = phantom.sample_tissues(s, REGION_GRID)
        area = np.zeros(REGION_GRID[2])
        area[t.lo[2]:t.hi[2] + 1] = t.brain.sum(dim=(0, 1)).numpy()
        return area

    without = phantom.Subject(**{**subject.__dict__, "region_volume": {}, "frontal_volume": 1.0})
    pulled, plain = area_per_level(subject), area_per_level(without)
    assert pulled.sum() == pytest.approx(plain.sum(), rel=0.01)
    levels = plain > 0.3 * plain.max()
    np.testing.assert_allclose(pulled[levels], plain[levels], rtol=0.04)
    # Without it (a scale of 1 everywhere) the shorter frontal lobes cost several % of the volume.
    bare = phantom.Subject(**{**subject.__dict__, "inplane_scale": np.stack([z, np.ones_like(z)])})
    assert area_per_level(bare).sum() < 0.97 * plain.sum()


def _grey_matter_mm3(subject, shape, names=("caudate", "putamen", "accumbens")):
    """Grey matter inside the subject's (unchanged) region masks, in mm^3."""
    t = phantom.sample_tissues(subject, shape)
    masks = phantom.region_masks(subject, shape)
    gm = np.zeros(shape, dtype=np.float32)
    gm[t.lo[0]:t.hi[0] + 1, t.lo[1]:t.hi[1] + 1, t.lo[2]:t.hi[2] + 1] = t.gm.numpy()
    voxel_mm3 = float(np.prod(np.array(phantom.FIELD_OF_VIEW_MM) / np.array(shape)))
    return sum(float(gm[masks[n]].sum()) for n in names) * voxel_mm3


def test_adhd_group_has_less_basal_ganglia_grey_matter_on_average():
    diagnoses = phantom.assign_diagnoses(6, 0.5, seed=11)
    at_effect = {e: [_grey_matter_mm3(phantom.draw_subject(11, i, d, e, "neonatal"), REGION_GRID)
                     for i, d in enumerate(diagnoses)] for e in (0.0, 1.0)}

    def group_mean(effect, label):
        return np.mean([v for v, d in zip(at_effect[effect], diagnoses) if d == label])

    assert group_mean(1.0, "adhd") < 0.9 * group_mean(1.0, "control")
    assert group_mean(1.0, "control") == group_mean(0.0, "control")
    # The difference is the simulated effect, not the luck of the draw: at effect 0 the
    # label changes nothing, and the ADHD/control ratio drops clearly from effect 0 to 1.
    as_controls = [_grey_matter_mm3(phantom.draw_subject(11, i, "control", 0.0, "neonatal"), REGION_GRID)
                   if d == "adhd" else None for i, d in enumerate(diagnoses)]
    assert [v for v in as_controls if v is not None] == [v for v, d in zip(at_effect[0.0], diagnoses) if d == "adhd"]
    ratio = {e: group_mean(e, "adhd") / group_mean(e, "control") for e in (0.0, 1.0)}
    assert ratio[1.0] < 0.95 * ratio[0.0]


def test_existing_output_refused_without_force(cohort, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match=r"taken already exists; choose another OUT_DIR or pass --force"):
        make_cohort(out, subjects=1, shape=SMALL)
    assert (out / "mine.txt").read_text() == "keep"
    make_cohort(out, subjects=1, shape=SMALL, force=True)
    assert not (out / "mine.txt").exists() and (out / "sub-01").is_dir()


@pytest.mark.parametrize("kwargs, message", [
    ({"subjects": 0}, "argument subjects=0: cohort.subjects=0 must be between 1 and 99"),
    ({"subjects": 100}, "cohort.subjects=100 must be between 1 and 99 (ids are sub-01..sub-99)"),
    ({"adhd_fraction": 1.5}, "cohort.adhd_fraction=1.5 must be between 0 and 1"),
    ({"seed": -1}, "cohort.seed=-1 must be >= 0"),
    ({"effect": -0.5}, "cohort.effect=-0.5 must be a finite number >= 0"),
    ({"effect": float("nan")}, "cohort.effect=nan must be a finite number >= 0"),
    ({"contrast": "t2"}, "cohort.contrast must be one of neonatal, adult, got 't2'"),
    ({"shape": (4, 40, 40)}, "cohort.shape=[4, 40, 40] must be three sizes >= 8 voxels"),
])
def test_bad_options_rejected(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        make_cohort(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_cli_reports_an_existing_folder_in_one_line(tmp_path, capsys):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    assert main(["phantom", str(tmp_path / "c"), "--subjects", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--force" in err


def test_default_geometry_two_subjects(tmp_path):
    root = make_cohort(tmp_path / "full", subjects=2, seed=0)
    img = nib.load(root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    assert img.shape == (320, 320, 200) and img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img.header.get_zooms(), (0.6, 0.6, 0.6), rtol=1e-6)
    vol = np.asarray(img.dataobj)
    # The paper keeps axial slices 30..120: all of them must show brain.
    assert all(vol[:, :, k].any() for k in range(30, 121))
    # The brain fits the 256 x 256 centre patch the paper cuts.
    assert not vol[:32].any() and not vol[-32:].any() and not vol[:, :32].any() and not vol[:, -32:].any()
