"""Benchmark scripts are not a package: tests load each one from its file."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: the module ``benchmarks/<name>.py``, executed once per call."""
    return _load


def write_dataset(root: Path, size: int = 16, per_subject: int = 8) -> Path:
    """A prepared DATASET: 6 subjects (the last two held out), bright discs, larger for adhd."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    rows, images = [], []
    for s in range(6):
        label = ("control", "adhd")[s % 2]
        disk = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4 + s % 2) ** 2) * 180.0
        for k in range(per_subject):
            images.append(np.clip(disk + rng.normal(30, 15, (size, size)), 0, 255).astype(np.uint8))
            rows.append({"index": len(rows), "subject": f"sub-{s:02d}", "label": label,
                         "split": "test" if s >= 4 else "train", "slice": 30 + k, "patch": 0})
    np.save(root / "images.npy", np.stack(images))
    pd.DataFrame(rows).to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True}))
    return root


@pytest.fixture(scope="session")
def disc_dataset(tmp_path_factory) -> Path:
    """:func:`write_dataset` once per session: 16 px, 4 training and 2 test subjects of 8 slices."""
    return write_dataset(tmp_path_factory.mktemp("benchmark-data") / "dataset")
