"""Small brain-like cohorts for the privacy tests: subjects of slowly changing slices.

Each subject is a smooth random volume inside an ellipsoid of its own size; its axial slices
change slowly (neighbours are near-duplicates, as real slices are) and the brain shrinks towards
the first and last slice. Different subjects share the layout but not the texture, so a copy of a
slice is much closer to its source than to any other subject's slice, as in real data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter


def subject_slices(rng: np.random.Generator, n_slices: int, size: int) -> np.ndarray:
    """float32 [n_slices, size, size] in [0, 1]: one subject's axial slices."""
    volume = gaussian_filter(rng.random((n_slices + 6, size, size)), sigma=(2.0, 1.5, 1.5))[3:-3]
    volume = (volume - volume.min()) / (volume.max() - volume.min())  # [n, size, size]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    ry, rx = size * rng.uniform(0.36, 0.42), size * rng.uniform(0.28, 0.34)
    out = np.empty((n_slices, size, size), np.float32)
    for k in range(n_slices):
        shrink = 0.65 + 0.35 * np.sin(np.pi * (k + 1) / (n_slices + 1))  # smaller at the ends
        inside = (yy / (ry * shrink)) ** 2 + (xx / (rx * shrink)) ** 2 < 1
        img = inside * (0.35 + 0.65 * volume[k])
        out[k] = np.clip(gaussian_filter(img.astype(np.float64), 0.6), 0, 1)
    return out


def cohort(seed: int, n_subjects: int, n_slices: int = 10, size: int = 32, prefix: str = "sub"):
    """Images float32 [S * n, size, size], ids ``"<subject>:<slice>"`` and labels (alternating)."""
    rng = np.random.default_rng(seed)
    images, ids, labels = [], [], []
    for s in range(n_subjects):
        images.append(subject_slices(rng, n_slices, size))
        ids += [f"{prefix}-{s:02d}:{30 + k}" for k in range(n_slices)]
        labels += [("control", "adhd")[s % 2]] * n_slices
    return np.concatenate(images), ids, np.array(labels)


class RandomProjection:
    """A fixed random ReLU projection standing in for a CNN feature extractor."""

    def __init__(self, n_pixels: int, dim: int = 48, seed: int = 0):
        self.matrix = np.random.default_rng(seed).normal(size=(n_pixels, dim)).astype(np.float32)

    def extract(self, images: np.ndarray) -> np.ndarray:
        return np.maximum(images.reshape(len(images), -1) @ self.matrix, 0.0)

    def describe(self) -> dict:
        return {"name": "random-projection", "layer": "relu", "input_size": 0, "channel_mapping": "none",
                "resize": "none", "weights": "normal(seed=0)", "precision": "fp32"}


def write_dataset(root: Path, n_train: int = 6, n_test: int = 4, n_slices: int = 10, size: int = 32,
                  seed: int = 0) -> Path:
    """A prepared DATASET (images.npy, images.tsv, manifest.json): train subjects first, then test."""
    images, ids, labels = cohort(seed, n_train + n_test, n_slices, size)
    root.mkdir(parents=True)
    np.save(root / "images.npy", np.round(images * 255).astype(np.uint8))
    subjects = [i.split(":")[0] for i in ids]
    splits = ["train" if k < n_train * n_slices else "test" for k in range(len(ids))]
    pd.DataFrame({"index": range(len(ids)), "subject": subjects, "label": labels, "split": splits,
                  "slice": [int(i.split(":")[1]) for i in ids], "patch": 0}).to_csv(root / "images.tsv", sep="\t",
                                                                                      index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True, "n_images": len(ids)}))
    return root
