"""Shared fixtures of the training-engine tests: a tiny prepared DATASET written with numpy."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from brainsynth.config import TrainConfig, load_config


def write_dataset(root: Path, size: int = 8, per_subject: int = 10, n_subjects: int = 6, seed: int = 0) -> Path:
    """A prepared DATASET in the documented layout (images.npy, images.tsv, manifest.json).

    Subjects alternate control/adhd; the last two are the test split. ADHD images have a
    larger bright disk, so the classes differ. 4 train subjects x ``per_subject`` images.
    """
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    rows, images = [], []
    for s in range(n_subjects):
        label = ("control", "adhd")[s % 2]
        split = "test" if s >= n_subjects - 2 else "train"
        radius = size / 4 + (size / 8 if label == "adhd" else 0)
        disk = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < radius ** 2) * 180.0
        for k in range(per_subject):
            images.append(np.clip(disk + rng.normal(30, 15, (size, size)), 0, 255).astype(np.uint8))
            rows.append({"index": len(rows), "subject": f"sub-{s:02d}", "label": label, "split": split,
                         "slice": 30 + k, "patch": 0})
    np.save(root / "images.npy", np.stack(images))
    pd.DataFrame(rows).to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True}))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 px images: 40 train (20 per label), 20 test."""
    return write_dataset(tmp_path_factory.mktemp("data") / "dataset", size=8)


@pytest.fixture(scope="session")
def make_dataset():
    """The :func:`write_dataset` function, for tests that need other sizes."""
    return write_dataset


def tiny_train_config(model: str = "pggan", **settings) -> TrainConfig:
    """The tiny preset's ``train`` section of ``model``, with ``settings`` as ``train.<model>`` keys."""
    overrides = [(f"train.{model}.{k}", v, f"test {k}={v!r}") for k, v in settings.items()]
    return load_config("tiny", overrides).train[model]


@pytest.fixture(scope="session")
def tiny_cfg():
    """:func:`tiny_train_config`, for tests."""
    return tiny_train_config
