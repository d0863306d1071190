"""The prepared DATASET folder: the contract between ``prepare`` and every later stage.

Layout (written by :mod:`brainsynth.data.prepare`)::

    images.npy      uint8 [N, H, W], memory-mappable (np.load(mmap_mode="r"))
    images.tsv      one row per image: index, subject, label, split, slice, patch
    subjects.tsv    one row per subject: subject, label, split, n_images, source
    folds.tsv       one row per subject, repeat and fold: subject, repeat, fold, split
    manifest.json   counts, parameters, input file hashes, software version
    preview.png     the paper's Figure 1: volume, slice range, patch, resized image

Pixel values are the robustly normalised intensities scaled to 0..255.

Folds: ``folds.tsv`` says, for every repeat ``r`` and fold ``k`` of the subject-level
cross-validation, which subjects are trained on and which are tested. :meth:`PreparedDataset.fold`
gives the view of one fold, whose ``split`` column is that fold's, so every stage that reads
``split`` (training, evaluation, the audit, export-images) works on any fold. The ``split``
column stored in ``images.tsv`` is repeat 0, fold 0; a dataset without ``folds.tsv`` (written
before folds existed) has that one fold only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from brainsynth import LABELS
from brainsynth.errors import InputError

IMAGES_FILE = "images.npy"
IMAGE_TABLE = "images.tsv"
SUBJECT_TABLE = "subjects.tsv"
MANIFEST_FILE = "manifest.json"
PREVIEW_FILE = "preview.png"
SPLITS = ("train", "test")
IMAGE_COLUMNS = ("index", "subject", "label", "split", "slice", "patch")
FOLDS_TABLE = "folds.tsv"
FOLD_COLUMNS = ("subject", "repeat", "fold", "split")


@dataclass
class PreparedDataset:
    """A prepared DATASET folder, opened lazily.

    Attributes
    ----------
    root : Path
    images : np.ndarray
        uint8 [N, H, W], memory-mapped.
    table : pandas.DataFrame
        One row per image (:data:`IMAGE_COLUMNS`), row ``i`` describes ``images[i]``.
    manifest : dict
    folds : pandas.DataFrame
        One row per (subject, repeat, fold): :data:`FOLD_COLUMNS`.
    fold_id : (int, int)
        ``(repeat, fold)`` whose split ``table["split"]`` holds.
    """

    root: Path
    images: np.ndarray
    table: pd.DataFrame
    manifest: dict[str, Any]
    folds: pd.DataFrame
    fold_id: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def n_folds(self) -> int:
        """K: folds per repeat (1 for a single hold-out split)."""
        return int(self.folds["fold"].max()) + 1

    @property
    def n_repeats(self) -> int:
        return int(self.folds["repeat"].max()) + 1

    def fold_ids(self) -> list[tuple[int, int]]:
        """Every ``(repeat, fold)`` of the dataset, repeat-major."""
        return [(r, k) for r in range(self.n_repeats) for k in range(self.n_folds)]

    def fold(self, fold: int = 0, repeat: int = 0) -> PreparedDataset:
        """The view of one fold: the same images, ``table["split"]`` the fold's train/test.

        Raises
        ------
        InputError
            When the dataset has no such fold or repeat.
        """
        if not (0 <= repeat < self.n_repeats and 0 <= fold < self.n_folds):
            raise InputError(f"{self.root}: no fold {fold} of repeat {repeat}; the dataset has folds 0-"
                             f"{self.n_folds - 1} and repeats 0-{self.n_repeats - 1} (choose --fold and --repeat "
                             "in that range, or re-run 'brainsynth prepare --folds K --repeats R')")
        table = self.table.copy()
        if (repeat, fold) != (0, 0) or self.fold_id != (0, 0):
            # Repeat 0 fold 0 is the stored split column itself (an older dataset's only split).
            rows = self.folds[(self.folds["repeat"] == repeat) & (self.folds["fold"] == fold)]
            table["split"] = table["subject"].map(dict(zip(rows["subject"], rows["split"])))
        if table["split"].isna().any():
            missing = sorted(set(table.loc[table["split"].isna(), "subject"]))
            raise InputError(f"{self.root}: {FOLDS_TABLE} has no row for subject(s) {', '.join(missing[:5])} in "
                             f"repeat {repeat} fold {fold}; re-run 'brainsynth prepare'")
        return PreparedDataset(root=self.root, images=self.images, table=table, manifest=self.manifest,
                               folds=self.folds, fold_id=(repeat, fold))

    def test_subjects(self) -> list[str]:
        """Subjects of this view's test split, sorted."""
        return sorted(set(self.table.loc[self.table["split"] == "test", "subject"]))

    @cached_property
    def subjects(self) -> pd.DataFrame:
        """One row per subject: subject, label, split, n_images."""
        g = self.table.groupby("subject", sort=True)
        return pd.DataFrame(
            {
                "subject": list(g.groups.keys()),
                "label": g["label"].first().values,
                "split": g["split"].first().values,
                "n_images": g.size().values,
            }
        )

    def indices(self, split: str | None = None, label: str | None = None) -> np.ndarray:
        """Row indices of the images in ``split`` and/or with ``label`` (int64 [n])."""
        mask = np.ones(len(self.table), dtype=bool)
        if split is not None:
            mask &= (self.table["split"] == split).to_numpy()
        if label is not None:
            mask &= (self.table["label"] == label).to_numpy()
        return np.flatnonzero(mask)

    def label_indices(self, idx: np.ndarray | None = None) -> np.ndarray:
        """int64 class index per image (0 control, 1 adhd)."""
        labels = self.table["label"].to_numpy() if idx is None else self.table["label"].to_numpy()[idx]
        return np.array([LABELS.index(lbl) for lbl in labels], dtype=np.int64)

    def float_images(self, idx: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, H, W] in [0, 1] for the given rows (all rows by default)."""
        arr = self.images if idx is None else self.images[np.asarray(idx)]
        return np.asarray(arr, dtype=np.float32) / 255.0

    def summary(self) -> dict[str, Any]:
        """The ``brainsynth info --json`` object (``test_fold``: the fold testing each subject in repeat 0)."""
        subjects = self.subjects
        tested = self.folds[(self.folds["repeat"] == 0) & (self.folds["split"] == "test")]
        test_fold = {str(s): int(k) for s, k in zip(tested["subject"], tested["fold"])}
        return {
            "path": str(self.root),
            "n_subjects": int(len(subjects)),
            "n_images": int(len(self)),
            "image_size": self.image_size,
            "labels": {lbl: int((self.table["label"] == lbl).sum()) for lbl in LABELS},
            "splits": {s: int((self.table["split"] == s).sum()) for s in SPLITS},
            "folds": self.n_folds,
            "repeats": self.n_repeats,
            "fold": {"repeat": self.fold_id[0], "fold": self.fold_id[1]},
            "simulated": bool(self.manifest.get("simulated", False)),
            "subjects": [
                {"id": r.subject, "label": r.label, "split": r.split, "n_images": int(r.n_images),
                 "test_fold": test_fold.get(r.subject)}
                for r in subjects.itertuples()
            ],
        }


def load_dataset(root: str | Path, fold: int | None = None, repeat: int = 0) -> PreparedDataset:
    """Open a prepared DATASET folder.

    Parameters
    ----------
    root : path
    fold, repeat : int, optional
        Return the view of this fold (:meth:`PreparedDataset.fold`); by default the stored
        ``split`` column, which is repeat 0, fold 0.

    Raises
    ------
    InputError
        When the folder is not a complete prepared dataset.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: dataset folder not found; create one with 'brainsynth prepare'")
    missing = [f for f in (IMAGES_FILE, IMAGE_TABLE, MANIFEST_FILE) if not (root / f).is_file()]
    if missing:
        raise InputError(
            f"{root}: not a prepared dataset (missing {', '.join(missing)}); create one with 'brainsynth prepare'"
        )
    try:
        images = np.load(root / IMAGES_FILE, mmap_mode="r")
        table = pd.read_csv(root / IMAGE_TABLE, sep="\t", dtype={"subject": str, "label": str, "split": str})
        manifest = json.loads((root / MANIFEST_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{root}: unreadable dataset ({exc})") from None
    if images.ndim != 3 or len(images) != len(table):
        raise InputError(
            f"{root}: {IMAGES_FILE} holds {images.shape} but {IMAGE_TABLE} has {len(table)} rows; re-run 'brainsynth prepare'"
        )
    folds = _read_folds(root, table)
    ds = PreparedDataset(root=root, images=images, table=table, manifest=manifest, folds=folds)
    return ds if fold is None and repeat == 0 else ds.fold(fold or 0, repeat)


def _read_folds(root: Path, table: pd.DataFrame) -> pd.DataFrame:
    """``folds.tsv``, or the one fold of the ``split`` column for a dataset written before folds."""
    path = root / FOLDS_TABLE
    if not path.is_file():
        split = table.groupby("subject", sort=True)["split"].first()
        return pd.DataFrame({"subject": split.index.astype(str), "repeat": 0, "fold": 0, "split": split.values})
    try:
        folds = pd.read_csv(path, sep="\t", dtype={"subject": str, "split": str})
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable ({exc}); re-run 'brainsynth prepare'") from None
    if list(folds.columns) != list(FOLD_COLUMNS) or folds.empty:
        raise InputError(f"{path}: expected the columns {', '.join(FOLD_COLUMNS)}; re-run 'brainsynth prepare'")
    return folds
