"""The Python API: the same stages as the command line, with plain keyword calls, for notebooks.

>>> from brainsynth import api
>>> api.make_cohort("cohort")                                   # brainsynth phantom
>>> api.prepare_dataset("cohort", "dataset", size=64)           # brainsynth prepare
>>> api.load_dataset("dataset").summary()                       # brainsynth info
>>> api.train("dataset", "runs/pggan", model="pggan", lr=2e-4)
>>> api.generate_images("runs/pggan", "synthetic", images_per_label=500)
>>> api.evaluate("dataset", {"pggan": "synthetic"}, "report", input_size=64)
>>> api.run("demo-output")                                      # brainsynth run

Every function takes ``config=`` (a preset name, a YAML file or a :class:`~brainsynth.config.RunConfig`;
default ``demo``, as on the command line) and the keys of its own config section as keyword
arguments (``size=64`` for ``prepare``, ``lr=2e-4`` for ``train``); they are type-checked like
``--set``. The stage functions behind them take the section objects themselves.
Imports are lazy, so importing this module stays cheap.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from brainsynth.config import DEFAULT_PRESET, RunConfig, load_config

PathLike = str | os.PathLike
ConfigLike = str | os.PathLike | RunConfig


def _config(config: ConfigLike, section: str, settings: dict[str, Any]) -> RunConfig:
    """``config`` with ``settings`` applied as keys of ``section`` (labelled as arguments in errors)."""
    overrides = [(f"{section}.{k}", v, f"argument {k}={v!r}") for k, v in settings.items()]
    return load_config(config, overrides)


def make_cohort(out: PathLike, *, config: ConfigLike = DEFAULT_PRESET, force: bool = False, **settings: Any) -> Path:
    """Write the SIMULATED cohort (``brainsynth phantom``); keywords are ``cohort`` keys (subjects, effect, ...)."""
    from brainsynth.data.phantom import make_cohort as stage

    return stage(out, _config(config, "cohort", settings).cohort, force=force)


def prepare_dataset(input: PathLike, out: PathLike, *, config: ConfigLike = DEFAULT_PRESET, labels: PathLike | None = None,
                    id_column: str | None = None, label_column: str | None = None, skip_unlabeled: bool = False,
                    volume_index: int | None = None, force: bool = False, **settings: Any) -> Path:
    """The paper's preprocessing (``brainsynth prepare``); keywords are ``prepare`` keys (size, slices, ...)."""
    from brainsynth.data.layouts import InputSpec
    from brainsynth.data.prepare import prepare_dataset as stage

    source = InputSpec(labels=labels, id_column=id_column, label_column=label_column, skip_unlabeled=skip_unlabeled,
                       volume_index=volume_index)
    return stage(input, out, _config(config, "prepare", settings).prepare, source, force=force)


def load_dataset(root: PathLike):
    """Open a prepared DATASET (``brainsynth info``)."""
    from brainsynth.data.dataset import load_dataset as load

    return load(root)


def train(dataset: PathLike, out: PathLike, *, model: str = "pggan", config: ConfigLike = DEFAULT_PRESET,
          resume: bool = False, device: str | None = None, force: bool = False, fold: int = 0, repeat: int = 0,
          **settings: Any) -> Path:
    """Train one model (``brainsynth train``); keywords are ``train`` keys of that model (lr, total_images, ...).

    With ``resume=True`` the run's own config is used and the keywords change it. ``fold`` and
    ``repeat`` choose the training subjects (the dataset's cross-validation; 0, 0 by default).
    """
    from brainsynth.train.loop import train as stage

    section = f"train.{model}"
    resolved = _config(config, section, settings)
    changes = [(f"{section}.{k}", v, f"argument {k}={v!r}") for k, v in settings.items()]
    return stage(dataset, out, resolved.train[model], resume=resume, changes=changes, launch=resolved.source,
                 device=device, force=force, fold=fold, repeat=repeat)


def generate_images(run_dir: PathLike, out: PathLike, *, config: ConfigLike = DEFAULT_PRESET, label: str = "both",
                    device: str | None = None, force: bool = False, dataset: PathLike | None = None,
                    **settings: Any) -> Path:
    """Sample synthetic images (``brainsynth generate``); keywords are ``generate`` keys (images_per_label,
    select, ...). With ``select="private-best"``, ``dataset`` is the run's DATASET (default: the one its
    checkpoint names)."""
    from brainsynth.selection import generate_selected

    return generate_selected(run_dir, out, _config(config, "generate", settings), label=label, device=device,
                             force=force, dataset=dataset)[0]


def export_generator(run_dir: PathLike, out: PathLike, *, force: bool = False) -> Path:
    """The generator alone as safetensors with a model card (``brainsynth export``)."""
    from brainsynth.export import export_generator as stage

    return stage(run_dir, out, force=force)


def export_images(dataset: PathLike, out: PathLike, *, split: str = "train", fmt: str = "png",
                  force: bool = False, fold: int = 0, repeat: int = 0) -> Path:
    """A DATASET's real images of one fold's split as an image set (``brainsynth export-images``)."""
    from brainsynth.data.export_images import export_images as stage

    return stage(dataset, out, split=split, fmt=fmt, force=force, fold=fold, repeat=repeat)


def read_image_set(root: PathLike):
    """Read an image-set folder (synthetic or real)."""
    from brainsynth.imageset import read_image_set as read

    return read(root)


def evaluate(real: PathLike, synthetic: dict[str, PathLike], out: PathLike, *, config: ConfigLike = DEFAULT_PRESET,
             runs: dict[str, PathLike] | None = None, device: str | None = None,
             feature_cache: PathLike | None = None, force: bool = False,
             fold: int = 0, repeat: int = 0, all_folds: bool = False, **settings: Any):
    """GAN-train, GAN-test, fidelity and privacy (``brainsynth evaluate``); keywords are ``evaluate`` keys.

    One fold (``fold``, ``repeat``), or with ``all_folds`` every fold pooled (each synthetic
    folder then names its fold with ``{fold}`` and ``{repeat}``).
    """
    from brainsynth.evaluate import evaluate as stage

    resolved = _config(config, "evaluate", settings)
    return stage(real, {k: str(v) for k, v in synthetic.items()}, out, resolved.evaluate, resolved.audit,
                 runs={k: str(v) for k, v in (runs or {}).items()}, device=device, feature_cache=feature_cache,
                 force=force, fold=fold, repeat=repeat, all_folds=all_folds)


def audit(train: PathLike, synthetic: PathLike, out: PathLike, *, config: ConfigLike = DEFAULT_PRESET,
          filter_flagged: bool = False, device: str | None = None, feature_cache: PathLike | None = None,
          force: bool = False, fold: int = 0, repeat: int = 0, **settings: Any) -> dict:
    """The privacy audit alone (``brainsynth audit``); keywords are ``audit`` keys (percentile)."""
    from brainsynth.evaluate import audit as stage

    resolved = _config(config, "audit", settings)
    return stage(train, synthetic, out, resolved.audit, resolved.evaluate, filter_flagged=filter_flagged,
                 device=device, feature_cache=feature_cache, force=force, fold=fold, repeat=repeat)


def fetch_adhd200(out: PathLike, *, sites: list[str] | None = None, max_subjects: int | None = None,
                  endpoint_url: str | None = None) -> dict:
    """Download public ADHD-200 T1 scans and diagnoses (``brainsynth fetch adhd200``)."""
    from brainsynth.data.fetch import fetch_adhd200 as fetch

    return fetch(out, sites=sites, max_subjects=max_subjects, endpoint_url=endpoint_url)


def run(out: PathLike, *, config: ConfigLike = DEFAULT_PRESET, input: PathLike | None = None,
        labels: PathLike | None = None, id_column: str | None = None, label_column: str | None = None,
        skip_unlabeled: bool = False, volume_index: int | None = None, device: str | None = None,
        set: list[str] | tuple[str, ...] = ()):
    """The whole method end to end (``brainsynth run``); ``set`` holds ``SECTION.KEY=VALUE`` strings."""
    from brainsynth.data.layouts import InputSpec
    from brainsynth.pipeline import run as stage

    source = InputSpec(labels=labels, id_column=id_column, label_column=label_column, skip_unlabeled=skip_unlabeled,
                       volume_index=volume_index)
    return stage(out, load_config(config, list(set)), input=input, source=source, device=device)


__all__ = ["audit", "evaluate", "export_generator", "export_images", "fetch_adhd200", "generate_images",
           "load_dataset", "make_cohort", "prepare_dataset", "read_image_set", "run", "train"]
