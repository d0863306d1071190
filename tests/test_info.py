"""``brainsynth info``: the summary of a prepared DATASET, as text and as JSON."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from brainsynth.cli import main


@pytest.fixture
def dataset(tmp_path):
    """A 4-subject BIDS cohort (ellipsoid "brains", 24 x 28 x 20 voxels), prepared via the CLI."""
    root = tmp_path / "cohort"
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in (24, 28, 20)], indexing="ij")
    brain = np.clip(1 - sum(g**2 for g in grids), 0, None).astype(np.float32) * 100  # [X, Y, Z]
    rows = ["participant_id\tdx"]
    for i, label in enumerate(["ADHD-Combined", "Typically Developing", "1", "0"], start=1):
        path = root / f"sub-{i:02d}" / "anat" / f"sub-{i:02d}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(brain + i, np.eye(4)), path)
        rows.append(f"sub-{i:02d}\t{label}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n")
    (root / "dataset_description.json").write_text('{"Name": "tiny", "Simulated": true}')
    out = tmp_path / "ds"
    args = ["-q", "prepare", str(root), "--out", str(out), "--slices", "5:14", "--inplane", "24", "--patch", "16",
            "--size", "8", "--test-fraction", "0.5"]
    assert main(args) == 0
    return out


def test_info_json(dataset, capsys):
    capsys.readouterr()
    assert main(["info", str(dataset), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_subjects"] == 4 and summary["n_images"] == 40 and summary["image_size"] == 8
    assert summary["labels"] == {"control": 20, "adhd": 20}
    assert summary["splits"] == {"train": 20, "test": 20}
    assert summary["simulated"] is True
    subjects = {s["id"]: s for s in summary["subjects"]}
    assert {k: v["label"] for k, v in subjects.items()} == {
        "sub-01": "adhd", "sub-02": "control", "sub-03": "adhd", "sub-04": "control"}
    assert all(s["n_images"] == 10 for s in subjects.values())
    # each label has one subject on each side, and no subject is on both
    for label in ("adhd", "control"):
        assert sorted(s["split"] for s in subjects.values() if s["label"] == label) == ["test", "train"]


def test_info_text(dataset, capsys):
    capsys.readouterr()
    assert main(["info", str(dataset)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("(SIMULATED cohort)")
    assert out[1].strip() == "subjects 4, images 40, size 8x8"
    assert out[2].strip() == "per label: control 20, adhd 20"
    assert out[3].strip() == "folds 3 x repeats 1; split shown: repeat 0 fold 0"
    assert len(out) == 5 + 4 and out[5].split()[:2] == ["sub-01", "adhd"]
    assert sum(line.endswith("tested in fold 0") for line in out[5:]) == 2  # one of each label


def test_info_on_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert main(["info", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a prepared dataset (missing images.npy, images.tsv, manifest.json)" in err[0]
