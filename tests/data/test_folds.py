"""Subject folds: the assignment prepare records, folds.tsv, and the dataset's view of one fold."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from brainsynth.api import export_images, prepare_dataset
from brainsynth.data.dataset import FOLDS_TABLE, load_dataset
from brainsynth.data.prepare import assign_folds, stratified_folds
from brainsynth.errors import ConfigError, InputError
from brainsynth.imageset import read_image_set

from data_fixtures import SMALL

# 7 controls and 5 ADHD: unequal classes, so a fold layout that only works for 6 + 6 fails here.
LABELS = {**{f"c{i}": "control" for i in range(7)}, **{f"a{i}": "adhd" for i in range(5)}}


def as_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subject", "repeat", "fold", "split"])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_every_subject_is_tested_exactly_once_per_repeat_in_stratified_disjoint_folds(k):
    folds = as_frame(assign_folds(LABELS, k, 3, 1 / 3, seed=4))
    assert sorted(folds["repeat"].unique()) == [0, 1, 2] and sorted(folds["fold"].unique()) == list(range(k))
    tested = folds[folds["split"] == "test"]
    for r in range(3):
        per_subject = tested[tested["repeat"] == r].groupby("subject")["fold"].nunique()
        assert sorted(per_subject.index) == sorted(LABELS) and (per_subject == 1).all()
        for fold in range(k):
            rows = folds[(folds["repeat"] == r) & (folds["fold"] == fold)]
            assert sorted(rows["subject"]) == sorted(LABELS)  # every subject on exactly one side
            test = set(rows.loc[rows["split"] == "test", "subject"])
            assert test.isdisjoint(set(rows.loc[rows["split"] == "train", "subject"]))
            # stratified: each class spread as evenly as the counts allow
            for label, n in (("control", 7), ("adhd", 5)):
                assert sum(LABELS[s] == label for s in test) in (n // k, n // k + 1)


def test_folds_are_seeded_and_each_repeat_draws_anew():
    a = as_frame(assign_folds(LABELS, 3, 2, 1 / 3, seed=0))
    assert a.equals(as_frame(assign_folds(LABELS, 3, 2, 1 / 3, seed=0)))
    assert not a.equals(as_frame(assign_folds(LABELS, 3, 2, 1 / 3, seed=1)))
    test = a[a["split"] == "test"]
    by_repeat = [dict(zip(test.loc[test["repeat"] == r, "subject"], test.loc[test["repeat"] == r, "fold"]))
                 for r in (0, 1)]
    assert by_repeat[0] != by_repeat[1]
    # adding repeats leaves the earlier ones as they were
    three = as_frame(assign_folds(LABELS, 3, 3, 1 / 3, seed=0))
    assert three[three["repeat"] < 2].reset_index(drop=True).equals(a)


def test_fold_sizes_differ_by_at_most_one_subject():
    test_fold = stratified_folds(LABELS, 3, seed=9)
    sizes = np.bincount(list(test_fold.values()))
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 12


def test_one_fold_is_a_single_hold_out_split_of_test_fraction():
    folds = as_frame(assign_folds(LABELS, 1, 2, 0.4, seed=0))
    assert set(folds["fold"]) == {0}
    for r in (0, 1):
        test = folds[(folds["repeat"] == r) & (folds["split"] == "test")]
        assert sorted(LABELS[s] for s in test["subject"]) == ["adhd"] * 2 + ["control"] * 3


def test_more_folds_than_subjects_is_refused_and_too_few_of_a_class_warns(caplog):
    with pytest.raises(ConfigError, match=r"prepare.folds=13 but the cohort has 12 subjects; choose --folds 12 or "
                                          r"fewer .* or --folds 1 for one hold-out split"):
        assign_folds(LABELS, 13, 1, 1 / 3, seed=0)
    with caplog.at_level(logging.WARNING):
        assign_folds(LABELS, 6, 1, 1 / 3, seed=0)
    assert "prepare.folds=6 but only 5 adhd subject(s): some folds test no adhd subject" in caplog.text


def test_prepare_writes_folds_tsv_and_the_dataset_views_each_fold(bids_cohort, tmp_path):
    out = prepare_dataset(bids_cohort, tmp_path / "ds", folds=3, repeats=2, seed=5, **SMALL)
    folds = pd.read_csv(out / FOLDS_TABLE, sep="\t", dtype={"subject": str})
    assert list(folds.columns) == ["subject", "repeat", "fold", "split"] and len(folds) == 6 * 3 * 2
    ds = load_dataset(out)
    assert (ds.n_folds, ds.n_repeats, ds.fold_id) == (3, 2, (0, 0))
    assert ds.fold_ids() == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    seen = []
    for fold in range(3):
        view = ds.fold(fold, repeat=1)
        assert view.fold_id == (1, fold) and view.images is ds.images
        assert (view.table.groupby("subject")["split"].nunique() == 1).all()
        seen += view.test_subjects()
        assert sorted(view.table.loc[view.table["split"] == "test", "label"].unique()) == ["adhd", "control"]
    assert sorted(seen) == sorted(ds.subjects["subject"])  # repeat 1 tests every subject once
    # the stored split column is repeat 0, fold 0
    assert ds.table["split"].tolist() == ds.fold(0, 0).table["split"].tolist()
    assert load_dataset(out, fold=2, repeat=1).table["split"].tolist() == ds.fold(2, 1).table["split"].tolist()
    manifest_split = ds.manifest["split"]
    assert (manifest_split["folds"], manifest_split["repeats"], manifest_split["fold"]) == (3, 2, 0)
    with pytest.raises(InputError, match=r"no fold 3 of repeat 0; the dataset has folds 0-2 and repeats 0-1"):
        ds.fold(3)


def test_export_images_exports_the_chosen_folds_split(bids_cohort, tmp_path):
    out = prepare_dataset(bids_cohort, tmp_path / "ds", folds=3, **SMALL)
    view = load_dataset(out).fold(2)
    exported = read_image_set(export_images(out, tmp_path / "test-f2", split="test", fmt="npz", fold=2))
    assert sorted({r["subject"] for r in exported.records}) == view.test_subjects()
    assert exported.meta["fold"] == 2 and exported.meta["repeat"] == 0


def test_a_dataset_without_folds_tsv_has_the_one_fold_of_its_split_column(bids_cohort, tmp_path):
    out = prepare_dataset(bids_cohort, tmp_path / "ds", **SMALL)
    (out / FOLDS_TABLE).unlink()  # a dataset written before folds existed
    ds = load_dataset(out)
    assert (ds.n_folds, ds.n_repeats) == (1, 1)
    assert ds.fold(0).table["split"].tolist() == ds.table["split"].tolist()


def test_the_fold_flags_reach_prepare_train_and_export_images(bids_cohort, tmp_path, capsys):
    from brainsynth.cli import main

    ds = tmp_path / "ds"
    args = ["prepare", str(bids_cohort), "--out", str(ds), "--slices", "2:20", "--inplane", "40", "--patch", "32",
            "--size", "16", "--folds", "2", "--repeats", "2", "--seed", "3"]
    assert main(args) == 0
    dataset = load_dataset(ds)
    assert (dataset.n_folds, dataset.n_repeats, dataset.manifest["split"]["seed"]) == (2, 2, 3)
    assert main(["export-images", str(ds), "--out", str(tmp_path / "x"), "--split", "test", "--fold", "1",
                 "--repeat", "1", "--format", "npz"]) == 0
    exported = read_image_set(tmp_path / "x")
    assert sorted({r["subject"] for r in exported.records}) == dataset.fold(1, repeat=1).test_subjects()
    capsys.readouterr()
    # A fold the dataset does not have: one line, exit 2, before any training.
    code = main(["train", str(ds), "--out", str(tmp_path / "run"), "--config", "tiny", "--fold", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no fold 2 of repeat 0; the dataset has folds 0-1" in err[0]
