"""Input layouts (BIDS, ADHD-200 site, flat folder + table) and the label vocabulary."""

from __future__ import annotations

import logging

import pytest

from brainsynth.data.labels import parse_label, read_label_table, subject_key, unsafe_id_reason
from brainsynth.data.layouts import InputSpec, discover_cohort, is_simulated
from brainsynth.api import prepare_dataset
from brainsynth.data.dataset import load_dataset
from brainsynth.errors import InputError

from data_fixtures import SMALL, brain_volume, make_flat, write_nifti, write_table


@pytest.mark.parametrize("raw, expected", [
    ("adhd", "adhd"), ("ADHD", "adhd"), ("ADHD-Combined", "adhd"), ("ADHD-Inattentive", "adhd"),
    ("ADHD-Hyperactive/Impulsive", "adhd"), ("1", "adhd"), ("2", "adhd"), ("3", "adhd"), ("1.0", "adhd"),
    ("control", "control"), ("Control", "control"), ("HC", "control"), ("td", "control"),
    ("Typically Developing", "control"), ("typically_developing", "control"), ("0", "control"),
    ("pending", None), ("-999", None), ("-999.0", None), ("", None), ("n/a", None), ("NaN", None),
])
def test_parse_label(raw, expected):
    assert parse_label(raw) == expected


@pytest.mark.parametrize("raw", ["patient", "4", "autism", "0.5"])
def test_parse_label_refuses_unknown_values(raw):
    with pytest.raises(ValueError, match="unknown label"):
        parse_label(raw)


def test_subject_keys_ignore_prefix_and_leading_zeros():
    assert subject_key("sub-0010001") == subject_key("0010001") == subject_key("10001") == "10001"
    assert subject_key("sub-ab01") == "ab01" and subject_key("sub-000") == "0"
    assert unsafe_id_reason("../x") and unsafe_id_reason("a/b") and unsafe_id_reason("  ")
    assert unsafe_id_reason("sub-01") is None


def test_bids_with_sessions_takes_first_and_logs(bids_cohort, caplog):
    caplog.set_level(logging.INFO, logger="brainsynth")
    cohort = discover_cohort(bids_cohort)
    assert cohort.layout == "bids" and cohort.simulated is False
    assert [s.id for s in cohort.subjects] == ["sub-01", "sub-02", "sub-03", "sub-04", "sub-05", "sub-06"]
    assert [s.label for s in cohort.subjects][:2] == ["adhd", "control"]
    assert cohort.subjects[1].source == "sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz"
    assert "using the first, sub-02/ses-1/anat/sub-02_ses-1_T1w.nii.gz" in caplog.text


def _adhd200_site(root):
    """An ADHD-200-style site: sub-<7 digits>/ses-1/anat/..._run-1_T1w.nii.gz, numeric and text dx."""
    ids = ["0010001", "0010002", "0010003", "0010004", "0010005", "0010006"]
    for i, sid in enumerate(ids):
        write_nifti(root / f"sub-{sid}/ses-1/anat/sub-{sid}_ses-1_run-1_T1w.nii.gz", brain_volume(seed=i))
    # ids stored as integers (leading zeros lost) and dx mixing codes and text; 0010005 is pending,
    # 0010006 is -999, and 0010007 has a row but no scan.
    write_table(root / "participants.tsv", ["participant_id", "gender", "age", "DX"], [
        ["10001", "M", 9, "0"], ["10002", "F", 11, "ADHD-Combined"], ["10003", "M", 8, "Typically Developing"],
        ["10004", "F", 12, "3"], ["10005", "M", 10, "pending"], ["10006", "F", 10, "-999"],
        ["10007", "M", 9, "1"],
    ])
    return root


def test_adhd200_site_needs_skip_unlabeled_and_names_subjects(tmp_path):
    root = _adhd200_site(tmp_path / "KKI")
    with pytest.raises(InputError) as err:
        discover_cohort(root)
    msg = str(err.value)
    assert "missing/pending: sub-0010005, sub-0010006" in msg
    assert "without a volume: 10007" in msg and "--skip-unlabeled" in msg


def test_adhd200_site_with_skip_unlabeled(tmp_path, caplog):
    root = _adhd200_site(tmp_path / "KKI")
    cohort = discover_cohort(root, InputSpec(skip_unlabeled=True))
    assert {s.id: s.label for s in cohort.subjects} == {
        "sub-0010001": "control", "sub-0010002": "adhd", "sub-0010003": "control", "sub-0010004": "adhd"}
    assert cohort.dropped == {"no_label": [], "unlabelled": ["sub-0010005", "sub-0010006"], "no_image": ["10007"]}
    assert "dropped" in caplog.text
    out = prepare_dataset(root, tmp_path / "ds", skip_unlabeled=True, **SMALL)
    summary = load_dataset(out).summary()
    assert summary["n_subjects"] == 4 and {s["split"] for s in summary["subjects"]} == {"train", "test"}


def test_flat_folder_with_csv_labels(flat_cohort):
    folder, table = flat_cohort
    cohort = discover_cohort(folder, InputSpec(labels=table))
    assert cohort.layout == "flat"
    assert {s.id: s.label for s in cohort.subjects} == {"s1": "adhd", "s2": "control", "s3": "adhd", "s4": "control"}
    assert cohort.subjects[0].source == "s1.nii.gz"


def test_flat_folder_with_phenotypic_tsv_and_sub_prefix(tmp_path):
    # ADHD-200 phenotypic columns ('ScanDir ID', 'DX'), tab-separated, ids without 'sub-'
    for i, name in enumerate(["sub-0010001.nii", "sub-0010002.nii.gz"]):
        write_nifti(tmp_path / "vols" / name, brain_volume(seed=i))
    write_table(tmp_path / "pheno.txt", ["ScanDir ID", "Site", "DX"], [["10001", "5", "1"], ["10002", "5", "0"]])
    table = read_label_table(tmp_path / "pheno.txt")
    assert (table.id_column, table.label_column) == ("ScanDir ID", "DX")
    cohort = discover_cohort(tmp_path / "vols", InputSpec(labels=tmp_path / "pheno.txt"))
    assert {s.id: s.label for s in cohort.subjects} == {"sub-0010001": "adhd", "sub-0010002": "control"}


def test_explicit_columns_override_detection(tmp_path):
    folder, _ = make_flat(tmp_path, {"a": "adhd", "b": "control"})
    write_table(tmp_path / "t.csv", ["subject", "diagnosis", "scan", "status"],
                [["x", "control", "a", "ADHD"], ["y", "adhd", "b", "control"]], sep=",")
    cohort = discover_cohort(folder, InputSpec(labels=tmp_path / "t.csv", id_column="scan", label_column="Status"))
    assert {s.id: s.label for s in cohort.subjects} == {"a": "adhd", "b": "control"}


def test_simulated_detection(tmp_path):
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "Simulated": true}')
    assert is_simulated(tmp_path)
    (tmp_path / "dataset_description.json").write_text('{"Name": "x (SIMULATED)"}')
    assert is_simulated(tmp_path)
    (tmp_path / "dataset_description.json").write_text('{"Name": "x", "Simulated": false}')
    assert not is_simulated(tmp_path)
    (tmp_path / "dataset_description.json").write_text('{"Name": "real scans"}')
    assert not is_simulated(tmp_path)
