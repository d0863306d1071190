"""Features computed once: a content-addressed cache of extractor outputs.

VGG-16 features are the expensive part of every evaluation, and the same images are read
again and again: ``evaluate`` and ``audit`` both need the real DATASET's features, every fold
of a cross-validated run uses a different subset of the same real images, and a rerun after a
changed bootstrap setting needs exactly the features it had.

:class:`FeatureStore` hands out features by content:

- A DATASET's features are computed for ALL its images at once and indexed by row
  (:meth:`FeatureStore.dataset`), so every split or fold of it is a row selection of one array.
- Any other image array (a synthetic set) is keyed by its own content (:meth:`FeatureStore.images`).
- Within one command, features live in memory; with a cache folder they are also written to
  disk and read back by later commands.

The key is a SHA-256 over the images (dtype, shape and bytes of exactly what the extractor
reads) and everything that changes features: extractor name, weights identity (a weights
file's own SHA-256, or the random network's seed), layer, input size, the precision actually
used, the channel mapping and resize mode, the device type, the extraction code's version
and torch's version. A changed image or setting gives another key; nothing is invalidated
by hand. The batch size is not in the key: it changes features only by float rounding.

On disk, each entry is ``<key>.npy`` (float32 [N, D]) plus ``<key>.json`` (what it holds,
including the SHA-256 of the array), both written atomically. An entry that cannot be read,
has the wrong shape or fails its checksum is recomputed with a warning, never trusted.

The cache lives in the run folder (``brainsynth run`` uses ``OUT/cache/features``);
``brainsynth evaluate`` and ``audit`` use one only when given ``--feature-cache DIR``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainsynth.evaluate.features import EXTRACTOR_VERSION, Extractor
from brainsynth.fsio import atomic_output_path, atomic_write_json
from brainsynth.progress import bar

log = logging.getLogger("brainsynth.evaluate.feature_cache")

CACHE_FORMAT = 1
_HASH_BLOCK = 64 << 20  # bytes hashed per update: bounds the temporary copy of a non-contiguous array
EXTRACT_BLOCK = 2048  # images converted to float32 and extracted per call (whole batches)


class UnitImages:
    """uint8 images [N, H, W] read as float32 in [0, 1] (``x / 255``), a slice at a time.

    Indexing gives float32 arrays; :func:`array_hash` hashes it block by block exactly as it
    hashes the float32 array, so a memory-mapped dataset is never held as floats in full.
    """

    dtype = np.dtype(np.float32)

    def __init__(self, images: np.ndarray):
        self.raw = images

    def __len__(self) -> int:
        return len(self.raw)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)

    def __getitem__(self, rows) -> np.ndarray:
        return np.asarray(self.raw[rows], dtype=np.float32) / 255.0


def array_hash(array: np.ndarray | UnitImages) -> str:
    """SHA-256 (hex) of an array's dtype, shape and bytes."""
    if isinstance(array, UnitImages):
        h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        rows = max(1, _HASH_BLOCK // max(1, 4 * int(np.prod(array.shape[1:]))))
        for lo in range(0, len(array), rows):
            h.update(np.ascontiguousarray(array[lo:lo + rows]).view(np.uint8))
        return h.hexdigest()
    array = np.asarray(array)
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    flat = array.reshape(-1)
    step = max(1, _HASH_BLOCK // max(array.itemsize, 1))
    for start in range(0, len(flat), step):
        h.update(np.ascontiguousarray(flat[start:start + step]).view(np.uint8))
    return h.hexdigest()


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: Path) -> str:
    """SHA-256 (hex) of a file, remembered per (path, size, mtime) for this process."""
    st = path.stat()
    memo = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo not in _FILE_HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        _FILE_HASHES[memo] = h.hexdigest()
    return _FILE_HASHES[memo]


def extractor_identity(extractor: Extractor) -> dict[str, Any]:
    """Everything about ``extractor`` that changes its features (the key's second half)."""
    described = extractor.describe()
    weights = Path(str(described["weights"]))
    if weights.is_file():  # the file's content, not its name, identifies the weights
        described["weights"] = f"sha256:{file_hash(weights)}"
    return {**described, "device": extractor.device.type, "extractor_version": EXTRACTOR_VERSION,
            "torch": torch.__version__}


@dataclass
class FeatureStore:
    """Features of image arrays by content: in memory for this process, on disk under ``folder``.

    Parameters
    ----------
    extractor : Extractor
    folder : path, optional
        The cache folder; None keeps features in memory only (one command).

    Attributes
    ----------
    computed, reused : int
        Images whose features were computed / served from memory or disk (for the log).
    """

    extractor: Extractor
    folder: Path | None = None
    computed: int = 0
    reused: int = 0
    _memory: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _identity: dict[str, Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.folder = None if self.folder is None else Path(self.folder)

    def dataset(self, dataset) -> np.ndarray:
        """Features [N, D] of every image of a prepared DATASET, row ``i`` for ``dataset.images[i]``.

        Callers select rows (``store.dataset(ds)[train_idx]``), so every split and fold of one
        dataset shares one extraction. The dataset's uint8 images are read a block at a time, as
        the float32 images ``dataset.float_images()`` would be (same key, same features), without
        holding them all as floats.
        """
        return self.images(UnitImages(dataset.images), what=f"dataset {dataset.root}")

    def images(self, images: np.ndarray | UnitImages, what: str = "images") -> np.ndarray:
        """Features [N, D] of float32 images [N, H, W] in [0, 1] (computed at most once per key)."""
        if not isinstance(images, UnitImages):
            images = np.asarray(images, dtype=np.float32)
        # In memory the extractor is fixed, so the pixels alone are the key.
        key = self.key(images) if self.folder is not None else array_hash(images)
        if key in self._memory:
            self.reused += len(images)
            return self._memory[key]
        feats = self._read(key, len(images)) if self.folder is not None else None
        if feats is None:
            log.info("features of %s (%d images)", what, len(images))
            feats = self._extract(images, what)
            self.computed += len(images)
            if self.folder is not None:
                self._write(key, feats, what, len(images))
        else:
            log.info("features of %s (%d images) read from the cache %s", what, len(images), self.folder)
            self.reused += len(images)
        self._memory[key] = feats
        return feats

    def _extract(self, images: np.ndarray | UnitImages, what: str) -> np.ndarray:
        """The extractor's features, a block of whole batches at a time (the same batches as one call)."""
        batch = int(getattr(self.extractor, "batch_size", 64))
        rows = batch * max(1, EXTRACT_BLOCK // batch)
        out = None
        with bar(len(images), f"features: {what}") as step:
            for lo in range(0, len(images), rows):
                feats = self.extractor.extract(np.asarray(images[lo:lo + rows], dtype=np.float32))
                if out is None:
                    out = np.empty((len(images), feats.shape[1]), dtype=np.float32)
                out[lo:lo + len(feats)] = feats
                step(len(feats))
        return out if out is not None else self.extractor.extract(np.zeros((0, *images.shape[1:]), np.float32))

    def key(self, images: np.ndarray) -> str:
        """The cache key of ``images`` under this store's extractor."""
        if self._identity is None:
            self._identity = extractor_identity(self.extractor)
        blob = json.dumps({"format": CACHE_FORMAT, "images": array_hash(images), **self._identity}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    # --- disk -----------------------------------------------------------------------------

    def _paths(self, key: str) -> tuple[Path, Path]:
        folder = Path(self.folder or ".")
        return folder / f"{key}.npy", folder / f"{key}.json"

    def _read(self, key: str, n: int) -> np.ndarray | None:
        """The cached features of ``key``, or None when absent or not trustworthy (warned)."""
        data_path, meta_path = self._paths(key)
        if not meta_path.exists() and not data_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            feats = np.load(data_path, allow_pickle=False)
            expected = (n, self.extractor.dim)
            if feats.shape != expected or feats.dtype != np.float32:
                raise ValueError(f"holds {feats.dtype} {feats.shape}, expected float32 {expected}")
            if meta.get("key") != key or meta.get("sha256") != array_hash(feats):
                raise ValueError("its checksum does not match")
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.warning("feature cache entry %s is unusable (%s); recomputing it", data_path, exc)
            return None
        return feats

    def _write(self, key: str, feats: np.ndarray, what: str, n: int) -> None:
        data_path, meta_path = self._paths(key)
        try:
            with atomic_output_path(data_path) as tmp:
                np.save(tmp, feats, allow_pickle=False)
            atomic_write_json(meta_path, {
                "key": key, "what": what, "n_images": n, "dim": int(feats.shape[1]),
                "sha256": array_hash(feats), "extractor": self._identity,
            })
        except OSError as exc:  # a full or read-only disk costs the reuse, not the evaluation
            log.warning("could not write the feature cache entry %s (%s); continuing without it", data_path,
                        os.strerror(exc.errno) if exc.errno else exc)
