"""A folder of 2D images with labels: the one format shared by real and synthetic sets.

``brainsynth generate`` (synthetic) and ``brainsynth export-images`` (real) write it;
``brainsynth evaluate`` and ``brainsynth audit`` read it, so both kinds are treated alike.

Layout of an image-set folder::

    metadata.json        # {"synthetic": bool, "format": ..., "image_size": H, "images": [...], ...}
    <label>/NNNNNN.png   # format "png": one 8-bit grayscale PNG per image
    images.npz           # format "npz": array "images" uint8 [N, H, W]
    <label>.nii.gz       # format "nifti": one stack per label, uint8 [H, W, n]

Each entry of ``metadata["images"]`` has ``file`` and ``label``; stacked formats add
``index`` (position inside the file); synthetic entries add ``seed``, real ones
``subject`` and ``slice``. Pixels are uint8 on disk and float32 in [0, 1] in memory.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainsynth import LABELS
from brainsynth.errors import InputError
from brainsynth.fsio import atomic_output_path, atomic_write_json, atomic_write_text, staged_output_dir

FORMATS = ("png", "npz", "nifti")
METADATA_FILE = "metadata.json"


@dataclass
class ImageSet:
    """Images and labels read from an image-set folder.

    Attributes
    ----------
    images : np.ndarray
        float32 [N, H, W] in [0, 1].
    labels : np.ndarray
        str [N], each one of :data:`brainsynth.LABELS`.
    records : list of dict
        The ``metadata["images"]`` entries, in the same order.
    meta : dict
        The whole ``metadata.json`` minus ``images``.
    root : Path
    """

    images: np.ndarray
    labels: np.ndarray
    records: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def synthetic(self) -> bool:
        return bool(self.meta.get("synthetic", False))

    def subjects(self) -> np.ndarray:
        """Subject id per image (``None`` for synthetic images)."""
        return np.array([r.get("subject") for r in self.records], dtype=object)

    def label_indices(self) -> np.ndarray:
        """int64 [N]: 0 for control, 1 for adhd."""
        return np.array([LABELS.index(lbl) for lbl in self.labels], dtype=np.int64)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8, rounding and clipping."""
    return np.clip(np.rint(np.asarray(images, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def write_image_set(
    out: str | Path,
    images: np.ndarray,
    records: Sequence[dict[str, Any]],
    *,
    synthetic: bool,
    fmt: str = "png",
    extra_meta: dict[str, Any] | None = None,
    force: bool = False,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write an image-set folder atomically.

    Parameters
    ----------
    out : path
        Output folder; refused if it exists unless ``force``.
    images : np.ndarray
        uint8 [N, H, W], or float [N, H, W] in [0, 1].
    records : sequence of dict
        One per image, each with at least ``label``; ``file``/``index`` are filled in here.
    synthetic : bool
        Recorded as ``metadata["synthetic"]``.
    fmt : {"png", "npz", "nifti"}
    extra_meta : dict, optional
        Merged into ``metadata.json`` (provenance: checkpoint hash, config, ...).
    extra_files : dict, optional
        File name -> text written beside the images (e.g. the resolved ``config.yaml``).
    """
    if fmt not in FORMATS:
        raise InputError(f"unknown image format {fmt!r}; choose one of {', '.join(FORMATS)}")
    images = images if images.dtype == np.uint8 else to_uint8(images)
    if images.ndim != 3 or len(images) != len(records):
        raise ValueError(f"images must be [N, H, W] with one record each, got {images.shape} and {len(records)}")
    entries = [dict(r) for r in records]
    with staged_output_dir(out, force=force) as stage:
        if fmt == "png":
            _write_pngs(stage, images, entries)
        elif fmt == "npz":
            _write_npz(stage, images, entries)
        else:
            _write_nifti_stacks(stage, images, entries)
        meta = {
            "synthetic": bool(synthetic),
            "format": fmt,
            "image_size": int(images.shape[-1]),
            "n_images": int(len(images)),
            "counts": {lbl: sum(e["label"] == lbl for e in entries) for lbl in LABELS},
        }
        meta.update(extra_meta or {})
        meta["images"] = entries
        atomic_write_json(stage / METADATA_FILE, meta)
        for name, text in (extra_files or {}).items():
            atomic_write_text(stage / name, text)
    return Path(out)


def _write_pngs(stage: Path, images: np.ndarray, entries: list[dict]) -> None:
    from PIL import Image

    counters: dict[str, int] = {}
    for img, entry in zip(images, entries):
        label = entry["label"]
        n = counters.get(label, 0)
        counters[label] = n + 1
        rel = f"{label}/{n:06d}.png"
        (stage / label).mkdir(exist_ok=True)
        Image.fromarray(img, mode="L").save(stage / rel)
        entry["file"] = rel


def _write_npz(stage: Path, images: np.ndarray, entries: list[dict]) -> None:
    with atomic_output_path(stage / "images.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, images=images)
    for i, entry in enumerate(entries):
        entry["file"], entry["index"] = "images.npz", i


def _write_nifti_stacks(stage: Path, images: np.ndarray, entries: list[dict]) -> None:
    import nibabel as nib

    for label in sorted({e["label"] for e in entries}):
        idx = [i for i, e in enumerate(entries) if e["label"] == label]
        stack = np.ascontiguousarray(np.transpose(images[idx], (1, 2, 0)))  # [H, W, n]
        # A fresh identity affine: nothing from any source header reaches a synthetic file.
        img = nib.Nifti1Image(stack, np.eye(4))
        img.header.set_xyzt_units("mm")
        img.header["descrip"] = b"brainsynth image set"
        nib.save(img, stage / f"{label}.nii.gz")
        for k, i in enumerate(idx):
            entries[i]["file"], entries[i]["index"] = f"{label}.nii.gz", k


def read_image_set(root: str | Path) -> ImageSet:
    """Read an image-set folder written by :func:`write_image_set`.

    Raises
    ------
    InputError
        When the folder, its ``metadata.json`` or an image is missing or unreadable.
    """
    root = Path(root)
    meta_path = root / METADATA_FILE
    if not root.is_dir():
        raise InputError(f"{root}: image folder not found")
    if not meta_path.is_file():
        raise InputError(
            f"{root}: no {METADATA_FILE}; expected the output of 'brainsynth generate' or 'brainsynth export-images'"
        )
    try:
        meta = json.loads(meta_path.read_text())
        entries = list(meta.pop("images"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{meta_path}: unreadable image-set metadata ({exc})") from None
    if not entries:
        raise InputError(f"{root}: the image set is empty")
    bad = sorted({str(e.get("label")) for e in entries} - set(LABELS))
    if bad:
        raise InputError(f"{meta_path}: unknown labels {', '.join(bad)}; expected {', '.join(LABELS)}")
    cache: dict[str, np.ndarray] = {}
    arrays = [_load_entry(root, e, cache) for e in entries]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise InputError(f"{root}: images have different sizes {sorted(shapes)}")
    images = np.stack(arrays).astype(np.float32) / 255.0
    labels = np.array([e["label"] for e in entries])
    return ImageSet(images=images, labels=labels, records=entries, meta=meta, root=root)


def _load_entry(root: Path, entry: dict, cache: dict[str, np.ndarray]) -> np.ndarray:
    rel = entry.get("file")
    path = root / str(rel)
    try:
        if "index" not in entry:
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("L"), dtype=np.uint8)
        if rel not in cache:
            if str(rel).endswith(".npz"):
                with np.load(path) as z:
                    cache[rel] = z["images"]
            else:
                import nibabel as nib

                cache[rel] = np.transpose(np.asarray(nib.load(path).dataobj, dtype=np.uint8), (2, 0, 1))
        return cache[rel][int(entry["index"])]
    except Exception as exc:  # any decoder error means the same thing to the user
        raise InputError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from None
