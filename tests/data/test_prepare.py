"""prepare: the paper's preprocessing on small real NIfTI files, the DATASET it writes, export-images."""

from __future__ import annotations

import json
import logging

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from brainsynth.data import volume as vol
from brainsynth.data.dataset import load_dataset
from brainsynth.api import export_images, prepare_dataset
from brainsynth.config import PrepareConfig, section_from
from brainsynth.data.prepare import slice_spec, split_subjects
from brainsynth.errors import OutputExistsError
from brainsynth.fsio import sha256_file
from brainsynth.imageset import read_image_set

from data_fixtures import MARKER, SHAPE, SMALL, as_lps, brain_volume, make_bids, ras_affine, write_nifti


def spec(volume_index=None, **kw) -> vol.SliceSpec:
    return slice_spec(section_from(PrepareConfig, {**SMALL, **kw}), volume_index)


# --- the DATASET ------------------------------------------------------------------------

def test_bids_dataset_files_tables_and_manifest(bids_cohort, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="brainsynth")
    out = prepare_dataset(bids_cohort, tmp_path / "ds", **SMALL)
    ds = load_dataset(out)
    assert ds.images.dtype == np.uint8 and ds.images.shape == (6 * 19, 16, 16)
    assert list(ds.table.columns) == ["index", "subject", "label", "split", "slice", "patch"]
    assert ds.table["slice"].tolist()[:19] == list(range(2, 21))
    assert (ds.table["patch"] == 0).all()
    # every image has contrast: normalised brain, black background
    assert ds.images.max() == 255 and ds.images.min() == 0
    # the split is by subject, stratified: each label on both sides, no subject on both
    per_subject = ds.table.groupby("subject")["split"].nunique()
    assert (per_subject == 1).all()
    assert set(ds.table.groupby(["label", "split"]).size().index) == {
        ("adhd", "train"), ("adhd", "test"), ("control", "train"), ("control", "test")}

    subjects = pd.read_csv(out / "subjects.tsv", sep="\t", dtype=str)
    assert list(subjects.columns) == ["subject", "label", "split", "n_images", "source"]
    assert subjects["subject"].tolist() == [f"sub-0{i}" for i in range(1, 7)]
    # sub-02 has two sessions: the first in sorted order is used, and logged
    assert subjects.set_index("subject").loc["sub-02", "source"] == "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"
    assert "sub-02: 2 T1w volumes" in caplog.text

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["simulated"] is False
    assert manifest["counts"]["n_images"] == 114 and manifest["counts"]["n_subjects"] == 6
    assert manifest["parameters"]["slices"] == [2, 20] and manifest["parameters"]["size"] == 16
    first = manifest["subjects"][0]
    assert first["sha256"] == sha256_file(bids_cohort / first["source"])
    assert manifest["input"]["label_table"] == {
        "path": "participants.tsv", "sha256": sha256_file(bids_cohort / "participants.tsv"),
        "id_column": "participant_id", "label_column": "diagnosis"}
    assert sorted(manifest["split"]["train"] + manifest["split"]["test"]) == subjects["subject"].tolist()
    assert {"numpy", "nibabel", "brainsynth"} <= set(manifest["software"])
    assert (out / "preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".ds*"))  # no staging leftovers


def test_summary_fields(bids_cohort, tmp_path):
    summary = load_dataset(prepare_dataset(bids_cohort, tmp_path / "ds", **SMALL)).summary()
    assert summary["n_subjects"] == 6 and summary["n_images"] == 114 and summary["image_size"] == 16
    assert summary["labels"] == {"control": 57, "adhd": 57}
    assert summary["splits"]["train"] + summary["splits"]["test"] == 114 and summary["splits"]["test"] == 38
    assert [s["id"] for s in summary["subjects"]] == [f"sub-0{i}" for i in range(1, 7)]
    assert all(s["n_images"] == 19 for s in summary["subjects"])


def test_simulated_flag_read_from_dataset_description(tmp_path):
    root = make_bids(tmp_path / "c", {"1": "adhd", "2": "control"}, description={"Name": "x", "Simulated": True})
    out = prepare_dataset(root, tmp_path / "ds", folds=1, **SMALL)
    assert load_dataset(out).summary()["simulated"] is True


def test_flat_folder_and_workers_give_identical_bytes(flat_cohort, tmp_path):
    folder, table = flat_cohort
    one = prepare_dataset(folder, tmp_path / "w1", labels=table, **SMALL)
    two = prepare_dataset(folder, tmp_path / "w2", labels=table, workers=2, **SMALL)
    assert (one / "images.npy").read_bytes() == (two / "images.npy").read_bytes()
    assert (one / "images.tsv").read_text() == (two / "images.tsv").read_text()
    assert load_dataset(one).summary()["labels"] == {"control": 38, "adhd": 38}


def test_split_is_seeded_and_stratified():
    labels = {f"a{i}": "adhd" for i in range(6)} | {f"c{i}": "control" for i in range(6)}
    split = split_subjects(labels, 1 / 3, seed=0)
    assert split == split_subjects(labels, 1 / 3, seed=0)
    assert split != split_subjects(labels, 1 / 3, seed=1)
    for label in ("a", "c"):
        assert sum(split[f"{label}{i}"] == "test" for i in range(6)) == 2
    # a tiny label still gets one subject on each side
    small = split_subjects({"a0": "adhd", "a1": "adhd", "c0": "control", "c1": "control", "c2": "control"}, 0.1, 0)
    assert sorted(small.values()).count("test") == 2


def test_split_warns_for_single_subject_label(caplog):
    split = split_subjects({"a0": "adhd", "c0": "control", "c1": "control"}, 0.5, 0)
    assert split["a0"] == "train" and "only one adhd subject" in caplog.text


# --- geometry ---------------------------------------------------------------------------

def test_lps_storage_gives_the_same_images_as_ras(tmp_path):
    data = brain_volume()
    ras = write_nifti(tmp_path / "ras.nii.gz", data)
    lps_data, lps_affine = as_lps(data)
    lps = write_nifti(tmp_path / "lps.nii.gz", lps_data, lps_affine)
    assert nib.aff2axcodes(nib.load(lps).affine) == ("L", "P", "S")
    a = vol.process_volume(ras, spec(slices=(10, 12)))
    b = vol.process_volume(lps, spec(slices=(10, 12)))
    assert b.header.orientation == "LPS" and b.header.shape == SHAPE
    np.testing.assert_array_equal(a.images, b.images)


def test_marker_lands_anterior_left(tmp_path):
    # The marker is at small x (left) and large y (anterior): in the image it must be top-left.
    lps_data, lps_affine = as_lps(brain_volume())
    path = write_nifti(tmp_path / "lps.nii", lps_data, lps_affine)
    z = (MARKER[2].start + MARKER[2].stop) // 2
    result = vol.process_volume(path, spec(slices=(z, z), inplane=0, patch=48, size=48))
    image = result.images[0]  # [48, 48]: the 48 x 40 slice padded by 4 columns each side
    rows, cols = np.nonzero(image == 255)
    y0, y1, x0, x1 = MARKER[1].start, MARKER[1].stop, MARKER[0].start, MARKER[0].stop
    assert rows.min() == SHAPE[1] - y1 and rows.max() == SHAPE[1] - 1 - y0  # anterior at the top
    assert cols.min() == 4 + x0 and cols.max() == 4 + x1 - 1  # subject's left on the left


def test_anisotropic_voxels_keep_physical_aspect(tmp_path):
    iso = brain_volume(marker=False)  # 1 mm
    aniso = (iso[0::2] + iso[1::2]) / 2  # [20, 48, 36] at 2 x 1 x 1 mm: same anatomy
    a = vol.process_volume(write_nifti(tmp_path / "iso.nii", iso), spec(slices=(18, 18), patch=40, size=40))
    b = vol.process_volume(write_nifti(tmp_path / "aniso.nii", aniso, ras_affine((2.0, 1.0, 1.0))),
                           spec(slices=(18, 18), patch=40, size=40))
    assert b.zooms == (2.0, 1.0, 1.0)
    # The same anatomy: brain outlines agree and intensities correlate (partial-volume blur
    # shifts the percentiles a little, so pixel values are not compared one by one).
    mask_a, mask_b = a.images[0] > 0, b.images[0] > 0
    assert (mask_a != mask_b).mean() < 0.05
    assert np.corrcoef(a.images[0].ravel(), b.images[0].ravel())[0, 1] > 0.95
    # brain bounding boxes agree in width (columns); stretching 20 columns to the slice would not
    widths = [np.ptp(np.nonzero(m)[1]) for m in (mask_a, mask_b)]
    assert abs(widths[0] - widths[1]) <= 1 and widths[0] < 36


def test_pad_to_square_fov_and_patch_starts():
    img = np.ones((48, 20), np.float32)
    padded = vol.pad_to_square_fov(img, row_mm=1.0, col_mm=2.0)
    assert padded.shape == (48, 24) and padded[:, :2].sum() == 0 and padded[:, 2:22].all()
    assert vol.patch_starts(40, 32, None) == [4]
    assert vol.patch_starts(24, 32, None) == [-4]  # smaller than the patch: centred with padding
    assert vol.patch_starts(40, 32, 5) == [0, 5, 8]  # the last patch is flush with the edge
    patch = vol.cut_patch(np.ones((24, 24), np.float32), -4, -4, 32)
    assert patch.shape == (32, 32) and patch.sum() == 24 * 24 and patch[:4].sum() == 0


def test_patch_stride_cuts_overlapping_patches(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", brain_volume())
    result = vol.process_volume(path, spec(slices=(18, 18), patch_stride=8))
    # 40 px slice, 32 px patches, stride 8: starts 0 and 8 on each axis -> 4 patches
    assert result.patches.tolist() == [0, 1, 2, 3] and result.slices.tolist() == [18] * 4
    assert result.images.shape == (4, 16, 16)
    assert not np.array_equal(result.images[0], result.images[3])


def test_relative_slices_follow_the_brain_extent(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", brain_volume(z_range=(6, 30), marker=False))
    whole = vol.process_volume(path, spec(relative_slices=(0.0, 1.0)))
    assert whole.slice_range == (6, 30) and len(whole.images) == 25
    middle = vol.process_volume(path, spec(relative_slices=(0.5, 0.5)))
    assert middle.slice_range == (18, 18)


def test_background_slices_are_skipped_and_recorded(tmp_path):
    root = tmp_path / "c"
    for sid, label in (("a", "adhd"), ("b", "control")):
        write_nifti(root / f"{sid}.nii.gz", brain_volume(z_range=(10, 30), marker=False))
    (tmp_path / "labels.csv").write_text("id,dx\na,1\nb,0\n")
    out = prepare_dataset(root, tmp_path / "ds", labels=tmp_path / "labels.csv", folds=1, test_fraction=0, **SMALL)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["subjects"][0]["skipped_slices"] == list(range(2, 10))
    assert manifest["counts"]["skipped_patches"] == 16
    assert load_dataset(out).summary()["n_images"] == 2 * 11


def test_normalisation_maps_brain_percentiles_to_unit_range():
    data = np.zeros((10, 10, 10), np.float32)
    data[2:8, 2:8, 2:8] = np.linspace(100, 300, 216).reshape(6, 6, 6)
    mask = vol.brain_mask(data)
    assert mask.sum() == 216
    lo, hi = np.percentile(data[mask], (0.5, 99.5))
    inside = data[4, 4, 4]
    norm = vol.normalise_intensity(data, mask, path=None)
    assert norm.min() == 0 and norm.max() == 1 and norm[0, 0, 0] == 0
    assert norm[4, 4, 4] == pytest.approx((inside - lo) / (hi - lo), rel=1e-5)


def test_mni_template_is_a_realistic_volume(tmp_path):
    from nilearn.datasets import load_mni152_template

    path = tmp_path / "mni.nii.gz"
    nib.save(load_mni152_template(resolution=2), path)  # 99 x 117 x 95 at 2 mm
    result = vol.process_volume(path, spec(relative_slices=(0.2, 0.6), inplane=64, patch=48, size=16))
    a, b = result.slice_range
    assert 5 < a < b < 80 and len(result.images) == b - a + 1 and result.n_skipped_patches == 0
    assert result.images.max() >= 250 and (result.images == 0).mean() > 0.1  # bright tissue, black background


# --- export-images ----------------------------------------------------------------------

@pytest.fixture
def dataset(bids_cohort, tmp_path):
    return prepare_dataset(bids_cohort, tmp_path / "ds", **SMALL)


@pytest.mark.parametrize("fmt", ["png", "npz"])
def test_export_images_round_trip(dataset, tmp_path, fmt):
    ds = load_dataset(dataset)
    out = export_images(dataset, tmp_path / f"real-{fmt}", split="test", fmt=fmt)
    images = read_image_set(out)
    idx = ds.indices("test")
    assert len(images) == len(idx) == 38 and images.synthetic is False
    np.testing.assert_array_equal(np.rint(images.images * 255).astype(np.uint8), ds.images[idx])
    record = images.records[0]
    assert {k: record[k] for k in ("label", "subject", "slice", "patch", "split")} == {
        "label": ds.table["label"].iloc[idx[0]], "subject": ds.table["subject"].iloc[idx[0]],
        "slice": 2, "patch": 0, "split": "test"}
    assert set(images.subjects()) == set(ds.table["subject"].iloc[idx])


def test_export_all_and_refusal_to_overwrite(dataset, tmp_path):
    out = export_images(dataset, tmp_path / "all", split="all", fmt="npz")
    assert len(read_image_set(out)) == 114
    with pytest.raises(OutputExistsError, match="pass --force"):
        export_images(dataset, out, split="train", fmt="npz")
    export_images(dataset, out, split="train", fmt="npz", force=True)
    assert len(read_image_set(out)) == 76
