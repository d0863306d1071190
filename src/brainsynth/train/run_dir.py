"""A training run's folder: may it be used as asked, clearing it for ``--force``, its config on resume.

Read-only checks, so that every rank of a multi-process run can make them; only the process
that holds the folder (:mod:`brainsynth.folder_lock`) clears or writes it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from brainsynth.config import Override, TrainConfig, apply_train_overrides, sections_yaml, train_config_from_dict
from brainsynth.errors import CheckpointError, ConfigError, OutputExistsError
from brainsynth.folder_lock import folder_contents
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.schedule import build_schedule

log = logging.getLogger("brainsynth.train.run_dir")

CONFIG_FILE = "config.yaml"


def _looks_like_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (CONFIG_FILE, ckpt.CHECKPOINT_DIR, "progress.json"))


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse a RUN_DIR that cannot be used as asked (read-only, so every rank can run it)."""
    if resume:
        if not ckpt.list_checkpoints(run_dir):
            raise CheckpointError(f"{run_dir}: no checkpoint to resume from; start the run without --resume")
        return
    if run_dir.exists() and (not run_dir.is_dir() or folder_contents(run_dir)):
        if not force:
            raise OutputExistsError(
                f"{run_dir} already exists; pass --resume to continue that run, --force to start over, or choose another --out"
            )
        if not run_dir.is_dir() or not _looks_like_run(run_dir):
            raise OutputExistsError(
                f"{run_dir} exists and is not a brainsynth run folder; --force only replaces a run, choose another --out"
            )


def clear_run_dir(run_dir: Path) -> None:
    """Remove an old run (``--force``), keeping the folder and its lock (held by this process).

    Its entries move aside first, checkpoints before the rest: a crash midway leaves a run
    that a resume refuses ("no checkpoint") rather than a mixture of two runs.
    """
    entries = sorted(folder_contents(run_dir), key=lambda p: p.name != ckpt.CHECKPOINT_DIR)
    if not entries:
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".old", dir=run_dir.parent))
    for entry in entries:
        os.replace(entry, trash / entry.name)
    shutil.rmtree(trash, ignore_errors=True)


def resume_config(run_dir: Path, model: str, changes: list[Override]) -> TrainConfig:
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    return config_of_checkpoint(state, model, changes, run_dir)


def config_of_checkpoint(state: dict[str, Any], model: str, changes: list[Override], run_dir: Path) -> TrainConfig:
    cfg = train_config_from_dict(state["config"], source=f"{run_dir} checkpoint config")
    if cfg.model != model:
        raise ConfigError(f"{run_dir} trains a {cfg.model}; pass --model {cfg.model} to resume it")
    changed = apply_train_overrides(cfg, changes)
    if changed:
        log.warning("resuming %s with changed settings: %s", run_dir, ", ".join(changed))
    return cfg


def print_dry_run(cfg: TrainConfig, dataset: Path) -> None:
    """Print the resolved config a run would use, and its schedule (``--dry-run``: nothing is written)."""
    if cfg.resolution is None and dataset.is_dir():
        from brainsynth.data.dataset import load_dataset

        cfg.resolution = load_dataset(dataset).image_size
    print(sections_yaml(cfg, what=f"{cfg.model} training run"), end="")
    if cfg.resolution is None:
        print("# schedule: set by the dataset's image size (resolution: null)")
    else:
        print(f"# schedule: {build_schedule(cfg)!r}")
