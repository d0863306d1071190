"""``brainsynth export-images``: a DATASET's real images as an image-set folder.

The result has the same layout as ``brainsynth generate``'s output (:mod:`brainsynth.imageset`),
so evaluation and audit read real and synthetic images the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from brainsynth.data.dataset import SPLITS, load_dataset
from brainsynth.errors import ConfigError, InputError
from brainsynth.fsio import check_output_free
from brainsynth.imageset import FORMATS, write_image_set

log = logging.getLogger("brainsynth.export_images")

SPLIT_CHOICES = (*SPLITS, "all")


def export_images(dataset, out, *, split: str = "train", fmt: str = "png", force: bool = False, fold: int = 0,
                  repeat: int = 0) -> Path:
    """Write the prepared real images of one split (or all) as an image-set folder.

    Parameters
    ----------
    dataset : path
        A DATASET folder written by ``brainsynth prepare``.
    out : path
        The image-set folder to write; refused if it exists unless ``force``.
    split : {"train", "test", "all"}
        Which subjects' images to export.
    fmt : {"png", "npz", "nifti"}
        Image-set storage format.
    force : bool
        Replace an existing ``out``.
    fold, repeat : int
        Whose split: the fold of the dataset's cross-validation (repeat 0, fold 0 by default).

    Returns
    -------
    Path
        ``out``. Each record has label, subject, slice, patch and split.
    """
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"--split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    check_output_free(out, force)  # before reading anything
    ds = load_dataset(dataset, fold=fold, repeat=repeat)
    idx = ds.indices(None if split == "all" else split)
    if len(idx) == 0:
        raise InputError(f"{dataset}: no images in the {split} split; choose another --split")
    table = ds.table.iloc[idx]
    records = [
        {"label": str(r.label), "subject": str(r.subject), "slice": int(r.slice), "patch": int(r.patch),
         "split": str(r.split)}
        for r in table.itertuples(index=False)
    ]
    images = np.asarray(ds.images[idx])  # uint8 [n, H, W]
    extra = {"source": str(Path(dataset).resolve()), "split": split, "repeat": repeat, "fold": fold,
             "simulated": bool(ds.manifest.get("simulated", False))}
    path = write_image_set(out, images, records, synthetic=False, fmt=fmt, extra_meta=extra, force=force)
    log.info("exported %d real images (%s split) to %s", len(records), split, path)
    return path
