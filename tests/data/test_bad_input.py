"""Every bad input to ``prepare`` fails with one line naming the file/subject/option, and leaves nothing.

Each case builds a flat folder with two good subjects (one per label) plus whatever is wrong,
runs ``prepare_dataset`` and checks the error type, the message and that no output (not even
a staging folder) is left behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainsynth.cli import main
from brainsynth.data import prepare as prepare_module
from brainsynth.api import prepare_dataset
from brainsynth.errors import ConfigError, InputError, OutputExistsError

from data_fixtures import SMALL, brain_volume, make_bids, write_nifti, write_table

GOOD = {"good1": "adhd", "good2": "control"}
SMALL = {**SMALL, "folds": 1}  # two subjects: one hold-out split, not cross-validation


def cohort(tmp_path: Path, bad: dict[str, object] | None = None, rows: dict[str, str] | None = None) -> dict:
    """Flat folder ``vols`` with the good subjects plus ``bad`` (file name -> array, bytes or callable).

    Returns prepare keyword arguments (input, labels) for it; ``rows`` replaces the label rows.
    """
    folder = tmp_path / "vols"
    for i, sid in enumerate(GOOD):
        write_nifti(folder / f"{sid}.nii.gz", brain_volume(seed=i))
    for name, content in (bad or {}).items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        elif callable(content):
            content(folder / name)
        else:
            write_nifti(folder / name, content)
    if rows is None:
        rows = dict(GOOD)
        rows.update({name.split(".")[0]: "adhd" for name in (bad or {})})
    labels = write_table(tmp_path / "labels.csv", ["subject", "diagnosis"], [[k, v] for k, v in rows.items()], sep=",")
    return {"input": folder, "labels": labels}


def truncated_gz(path: Path) -> None:
    write_nifti(path, brain_volume())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def huge_header(path: Path) -> None:
    """A valid header claiming 4096^3 float32 voxels (256 GiB), with no data behind it."""
    header = nib.Nifti1Header()
    header.set_data_shape((4096, 4096, 4096))
    header.set_data_dtype(np.float32)
    with open(path, "wb") as f:
        header.write_to(f)
        f.write(b"\0" * 4)


def nan_volume() -> np.ndarray:
    v = brain_volume()
    v[3, 4, 5] = np.nan
    v[6, 7, 8] = np.inf
    return v


CASES = {
    # name: (bad files, label rows or None, extra prepare kwargs, error type, message fragments)
    "corrupt gzip": ({"bad.nii.gz": os.urandom(300)}, None, {}, InputError,
                     ["bad.nii.gz: not a readable NIfTI file", "not a gzip file"]),
    "not nifti": ({"bad.nii": b"hello, not an image\n" * 30}, None, {}, InputError,
                  ["bad.nii: not a readable NIfTI file"]),
    "truncated": ({"bad.nii.gz": truncated_gz}, None, {}, InputError,
                  ["bad.nii.gz: cannot read the voxel data", "truncated or corrupt"]),
    "2D": ({"bad.nii.gz": np.ones((40, 48), np.float32)}, None, {}, InputError,
           ["bad.nii.gz: a 2D image of shape (40, 48)", "needs a 3D volume"]),
    "4D": ({"bad.nii.gz": np.stack([brain_volume()] * 3, axis=-1)}, None, {}, InputError,
           ["bad.nii.gz: a 4D image with 3 volumes", "pass --volume-index K (0..2)"]),
    "4D index out of range": ({"bad.nii.gz": np.stack([brain_volume()] * 3, axis=-1)}, None, {"volume_index": 5},
                              InputError, ["bad.nii.gz: --volume-index 5 is out of range", "3 volumes"]),
    "NaN voxels": ({"bad.nii.gz": nan_volume()}, None, {}, InputError, ["bad.nii.gz: 2 NaN/Inf voxels"]),
    "constant": ({"bad.nii.gz": np.full((40, 48, 36), 7, np.float32)}, None, {}, InputError,
                 ["bad.nii.gz: the volume is constant (every voxel is 7)"]),
    "empty": ({"bad.nii.gz": np.zeros((40, 48, 36), np.float32)}, None, {}, InputError,
              ["bad.nii.gz: the volume is empty (every voxel is 0)"]),
    "too few slices": ({"bad.nii.gz": brain_volume(shape=(40, 48, 12))}, None, {}, InputError,
                       ["bad.nii.gz: has 12 axial slices (0..11)", "--slices 2:20 needs 21", "--relative-slices"]),
    "absurd header": ({"bad.nii": huge_header}, None, {}, InputError,
                      ["bad.nii: header shape (4096, 4096, 4096) would need 256.0 GiB", "limit 2 GiB"]),
    "volume without label": ({"extra.nii.gz": brain_volume()}, GOOD, {}, InputError,
                             ["volumes without a row in labels.csv: extra", "--skip-unlabeled"]),
    "label without volume": ({}, {**GOOD, "ghost": "adhd"}, {}, InputError,
                             ["rows in labels.csv without a volume: ghost", "--skip-unlabeled"]),
    "pending label": ({"late.nii.gz": brain_volume()}, {**GOOD, "late": "pending"}, {}, InputError,
                      ["diagnosis is missing/pending: late"]),
    "unknown labels": ({}, {"good1": "patient", "good2": "autism"}, {}, InputError,
                       ["labels.csv: unknown values in column 'diagnosis': 'autism', 'patient'"]),
    "duplicate id in table": ({}, None, {}, InputError, ["labels.csv: subject 'sub-good1' appears twice"]),
    "same subject twice": ({"sub-good1.nii": brain_volume()}, GOOD, {}, InputError,
                           ["subjects 'good1' and 'sub-good1' are the same subject id"]),
    "unsafe id": ({}, {**GOOD, "../x": "adhd"}, {}, InputError, ["labels.csv line 4: subject id '../x' contains a path separator"]),
    "dot-dot id": ({}, {**GOOD, "..": "adhd"}, {}, InputError, ["labels.csv line 4: subject id '..' is a relative path"]),
    "path separator id": ({}, {**GOOD, "a/b": "adhd"}, {}, InputError, ["subject id 'a/b' contains a path separator"]),
    "empty id": ({}, {**GOOD, "": "adhd"}, {}, InputError, ["labels.csv line 4: subject id '' is empty"]),
    "slices reversed": ({}, None, {"slices": (20, 2)}, ConfigError,
                        ["prepare.slices=[20, 2] must be two slice numbers A <= B"]),
    "patch larger than inplane": ({}, None, {"patch": 64}, ConfigError,
                                  ["prepare.patch=64 is larger than inplane (40); choose a patch <= inplane"]),
    "size zero": ({}, None, {"size": 0}, ConfigError, ["argument size=0: prepare.size=0 must be >= 1"]),
    "size fractional": ({}, None, {"size": 2.5}, ConfigError, ["prepare.size must be an int, got 2.5"]),
    "stride zero": ({}, None, {"patch_stride": 0}, ConfigError, ["prepare.patch_stride=0 must be >= 1"]),
    "relative slices": ({}, None, {"relative_slices": (0.8, 0.2)}, ConfigError,
                        ["prepare.relative_slices=[0.8, 0.2] must be two fractions 0 <= FA <= FB <= 1"]),
    "test fraction one": ({}, None, {"test_fraction": 1.0}, ConfigError, ["prepare.test_fraction=1.0 must be in [0, 1)"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_case(tmp_path, name):
    bad, rows, extra, error, fragments = CASES[name]
    kwargs = cohort(tmp_path, bad, rows)
    if name == "duplicate id in table":
        (tmp_path / "labels.csv").write_text("subject,diagnosis\ngood1,adhd\ngood2,control\nsub-good1,control\n")
    options = {**SMALL, **extra}
    with pytest.raises(error) as err:
        prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], **options)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*"))  # no staging folder left behind


def test_skip_unlabeled_lets_the_run_proceed(tmp_path, caplog):
    kwargs = cohort(tmp_path, {"extra.nii.gz": brain_volume()}, {**GOOD, "ghost": "adhd", "late": "n/a"})
    out = prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], skip_unlabeled=True, **SMALL)
    assert (out / "images.npy").is_file()
    subjects = (out / "subjects.tsv").read_text()
    assert "good1" in subjects and "extra" not in subjects
    assert "dropped volumes without a row in labels.csv: extra" in caplog.text
    assert "dropped rows in labels.csv without a volume: ghost, late" in caplog.text


def test_4d_with_volume_index_uses_that_volume(tmp_path):
    frames = np.stack([brain_volume(seed=0), brain_volume(marker=False)], axis=-1)
    kwargs = cohort(tmp_path, {"four.nii.gz": frames})
    out = prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], volume_index=1, **SMALL)
    from brainsynth.data.dataset import load_dataset

    ds = load_dataset(out)
    four = ds.images[ds.indices()[ds.table["subject"] == "four"]]
    good = ds.images[ds.indices()[ds.table["subject"] == "good1"]]
    assert len(four) == 19 and not np.array_equal(four, good)  # volume 1 has no marker; good1 has one


@pytest.mark.parametrize("name, setup, fragments", [
    ("missing input", lambda p: p / "nope", ["nope: input folder not found"]),
    ("empty folder", lambda p: (p / "e").mkdir() or p / "e", ["no volumes found"]),
    ("bids without T1w", lambda p: (p / "b" / "sub-01" / "anat").mkdir(parents=True) or p / "b",
     ["no T1w volumes found"]),
])
def test_missing_or_empty_input(tmp_path, name, setup, fragments):
    with pytest.raises(InputError) as err:
        prepare_dataset(setup(tmp_path), tmp_path / "out", **SMALL)
    assert all(f in str(err.value) for f in fragments)
    assert not (tmp_path / "out").exists()


def test_label_table_problems(tmp_path):
    kwargs = cohort(tmp_path)
    run = lambda **kw: prepare_dataset(kwargs["input"], tmp_path / "out", **{**SMALL, **kw})  # noqa: E731
    with pytest.raises(InputError, match="missing.csv: label table not found"):
        run(labels=tmp_path / "missing.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x81subject,dx\n\x00\xff")
    with pytest.raises(InputError, match="binary.csv: cannot read the label table"):
        run(labels=tmp_path / "binary.csv")
    write_table(tmp_path / "noid.csv", ["foo", "diagnosis"], [["good1", "adhd"]], sep=",")
    with pytest.raises(InputError, match=r"noid.csv: no subject-id column found .*columns found: 'foo', 'diagnosis'"):
        run(labels=tmp_path / "noid.csv")
    write_table(tmp_path / "nolabel.tsv", ["subject", "age"], [["good1", "3"]])
    with pytest.raises(InputError, match=r"nolabel.tsv: no diagnosis column found .*'subject', 'age'.*--label-column"):
        run(labels=tmp_path / "nolabel.tsv")
    with pytest.raises(InputError, match=r"no subject-id column 'scan' .*fix --id-column"):
        run(labels=kwargs["labels"], id_column="scan")
    with pytest.raises(InputError, match="needs a label table; pass --labels FILE"):
        run()  # a flat folder has no participants.tsv
    bids = make_bids(tmp_path / "bids", GOOD)
    (bids / "participants.tsv").unlink()
    with pytest.raises(InputError, match="participants.tsv: not found"):
        prepare_dataset(bids, tmp_path / "out", **SMALL)


def test_existing_out_is_never_overwritten_without_force(tmp_path):
    kwargs = cohort(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="out already exists; .*--force"):
        prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], **SMALL)
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    # a failing run with --force keeps the old folder too
    with pytest.raises(ConfigError):
        prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], force=True, **{**SMALL, "size": 0})
    assert (tmp_path / "out" / "keep.txt").exists()
    prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], force=True, **SMALL)
    assert not (tmp_path / "out" / "keep.txt").exists() and (tmp_path / "out" / "images.npy").exists()


def test_out_inside_input_is_refused(tmp_path):
    kwargs = cohort(tmp_path)
    with pytest.raises(ConfigError, match="overlaps the input folder"):
        prepare_dataset(kwargs["input"], kwargs["input"] / "ds", labels=kwargs["labels"], **SMALL)


def test_headers_are_checked_before_any_volume_is_processed(tmp_path, monkeypatch):
    kwargs = cohort(tmp_path, {"zz.nii.gz": np.ones((40, 48), np.float32)})  # sorted last
    calls = []
    monkeypatch.setattr(prepare_module.vol, "process_volume", lambda *a, **k: calls.append(a))
    with pytest.raises(InputError, match="zz.nii.gz: a 2D image"):
        prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], **SMALL)
    assert calls == []


def test_bad_volume_in_a_worker_fails_with_its_name(tmp_path):
    kwargs = cohort(tmp_path, {"nan.nii.gz": nan_volume()})
    with pytest.raises(InputError, match="nan.nii.gz: 2 NaN/Inf voxels"):
        prepare_dataset(kwargs["input"], tmp_path / "out", labels=kwargs["labels"], workers=2, **SMALL)
    assert not list(tmp_path.glob(".out*")) and not (tmp_path / "out").exists()


# --- through the command line: exit status 2, one line, no traceback ----------------------

def _cli(args, capsys) -> tuple[int, list[str]]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_cli_missing_input(tmp_path, capsys):
    code, err = _cli(["prepare", str(tmp_path / "nope"), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and err == [f"brainsynth: error: {tmp_path / 'nope'}: input folder not found"]


def test_cli_4d_volume(tmp_path, capsys):
    kwargs = cohort(tmp_path, {"bad.nii.gz": np.stack([brain_volume()] * 2, axis=-1)})
    code, err = _cli(["-q", "prepare", str(kwargs["input"]), "--out", str(tmp_path / "out"), "--labels",
                      str(kwargs["labels"]), "--inplane", "40", "--patch", "32", "--size", "16", "--slices", "2:20"],
                     capsys)
    assert code == 2 and len(err) == 1 and "--volume-index K (0..1)" in err[0] and "Traceback" not in err[0]


def test_cli_bad_options(tmp_path, capsys):
    kwargs = cohort(tmp_path)
    base = ["prepare", str(kwargs["input"]), "--out", str(tmp_path / "out"), "--labels", str(kwargs["labels"])]
    code, err = _cli(base + ["--slices", "120:30"], capsys)
    assert code == 2 and err == ["brainsynth: error: --slices 120:30: prepare.slices=[120, 30] must be two slice "
                                 "numbers A <= B, both >= 0 (fix it with --set prepare.slices=...)"]
    code, err = _cli(base + ["--patch", "400"], capsys)
    assert code == 2 and err == ["brainsynth: error: --patch 400: prepare.patch=400 is larger than inplane (320); "
                                 "choose a patch <= inplane (fix it with --set prepare.patch=...)"]
    code, err = _cli(base + ["--size", "0"], capsys)
    assert code == 2 and len(err) == 1 and "--size 0: prepare.size=0 must be >= 1" in err[0]
    assert not (tmp_path / "out").exists()
