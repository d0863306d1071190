"""The prepared DATASET folder: the contract between ``prepare`` and every later stage.

Layout (written by :mod:`brainsynth.data.prepare`)::

    images.npy      uint8 [N, H, W], memory-mappable (np.load(mmap_mode="r"))
    images.tsv      one row per image: index, subject, label, split, slice, patch
    subjects.tsv    one row per subject: subject, label, split, n_images, source
    manifest.json   counts, parameters, input file hashes, software version
    preview.png     the paper's Figure 1: volume, slice range, patch, resized image

Pixel values are the robustly normalised intensities scaled to 0..255.
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
    """

    root: Path
    images: np.ndarray
    table: pd.DataFrame
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

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
        """The ``brainsynth info --json`` object."""
        subjects = self.subjects
        return {
            "path": str(self.root),
            "n_subjects": int(len(subjects)),
            "n_images": int(len(self)),
            "image_size": self.image_size,
            "labels": {lbl: int((self.table["label"] == lbl).sum()) for lbl in LABELS},
            "splits": {s: int((self.table["split"] == s).sum()) for s in SPLITS},
            "simulated": bool(self.manifest.get("simulated", False)),
            "subjects": [
                {"id": r.subject, "label": r.label, "split": r.split, "n_images": int(r.n_images)}
                for r in subjects.itertuples()
            ],
        }


def load_dataset(root: str | Path) -> PreparedDataset:
    """Open a prepared DATASET folder.

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
    return PreparedDataset(root=root, images=images, table=table, manifest=manifest)
