"""Benchmark scripts are not a package: tests load each one from its file."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses with string annotations look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: the module ``benchmarks/<name>.py``, executed once per call."""
    return _load


def write_tiny_dataset(root: Path, size: int = 16, subjects: int = 8, per_subject: int = 6) -> Path:
    """A prepared DATASET: ``subjects`` subjects, the second half held out; noisy discs on black (adhd larger)."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    rows, images = [], []
    for s in range(subjects):
        label = ("control", "adhd")[s % 2]
        disk = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 4 + s % 2) ** 2  # [H, W] the "brain"
        for k in range(per_subject):
            images.append((disk * np.clip(rng.normal(180, 30, (size, size)), 1, 255)).astype(np.uint8))
            rows.append({"index": len(rows), "subject": f"sub-{s:02d}", "label": label,
                         "split": "test" if s >= subjects // 2 else "train", "slice": 30 + k, "patch": 0})
    np.save(root / "images.npy", np.stack(images))
    pd.DataFrame(rows).to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True}))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 16 px DATASET of 8 subjects x 6 slices: 4 subjects (24 images) train, 4 test. Read-only."""
    return write_tiny_dataset(tmp_path_factory.mktemp("benchmarks") / "dataset")
