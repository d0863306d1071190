"""Training checkpoints: the whole state, written atomically, read without running pickled code.

A checkpoint is ``RUN_DIR/checkpoints/ckpt-<images_shown:09d>.pt``, a ``torch.save`` of
one dict of tensors and plain Python values:

==================  ==========================================================
``format``          :data:`FORMAT` (a foreign file is refused)
``version``         brainsynth version that wrote it
``config``          the resolved :class:`~brainsynth.train.config.TrainConfig` as a dict
``data``            summary of the training data (dataset path, counts per label)
``G``/``D``/``G_ema``  state dicts (the diffusion model: ``G`` is its denoiser, ``D`` None)
``opt_G``/``opt_D``    Adam state dicts (of the current growth phase; ``opt_D`` None without a D)
``augment``         augmentation state dict (or ``None``)
``progress``        images_shown, step, phase index/resolution/alpha, Adam reset segment, ticks, ...
``rng``             torch CPU (+ CUDA), numpy, python ``random`` and the loop's generators
==================  ==========================================================

Beside the rolling last ``K`` checkpoints, a run can keep **snapshots** at a geometric series of
images shown (``RUN_DIR/snapshots/``, :func:`keep_snapshot`): the first checkpoint at or after
each point of :func:`geometric_points` is kept (a hard link, else a copy) and never pruned. They
are what the privacy trajectory and checkpoint selection read (:func:`kept_checkpoints`).

Every value is a tensor or a plain type, so :func:`load_checkpoint` can use
``torch.load(weights_only=True)``: a file holding any other object (for instance a
pickle whose ``__reduce__`` would run code) is refused before anything executes.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from brainsynth import __version__
from brainsynth.errors import CheckpointError
from brainsynth.fsio import atomic_output_path

log = logging.getLogger("brainsynth.train.checkpoint")

FORMAT = "brainsynth-checkpoint-v1"
CHECKPOINT_DIR = "checkpoints"
SNAPSHOT_DIR = "snapshots"
_NAME = re.compile(r"^ckpt-(\d{9})\.pt$")
REQUIRED_KEYS = ("format", "version", "config", "data", "G", "D", "G_ema", "opt_G", "opt_D", "augment",
                 "progress", "rng")
PROGRESS_KEYS = ("images_shown", "step", "phase_index", "resolution", "alpha", "last_tick_images", "tick",
                 "lr_scale", "rollbacks")


def checkpoint_name(images_shown: int) -> str:
    """File name of the checkpoint taken after ``images_shown`` images."""
    return f"ckpt-{int(images_shown):09d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint files of a run, oldest first (by images shown)."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def latest_checkpoint(run_dir: str | Path) -> Path:
    """The newest checkpoint of ``run_dir``.

    Raises
    ------
    CheckpointError
        When the run has no checkpoint.
    """
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(
            f"{Path(run_dir) / CHECKPOINT_DIR}: no checkpoint found; is {run_dir} a training run "
            "('brainsynth train ... --out RUN_DIR')?"
        )
    return found[-1]


def images_of(path: str | Path) -> int:
    """Images shown of a checkpoint file, from its name (``ckpt-000012000.pt`` -> 12000)."""
    match = _NAME.match(Path(path).name)
    if match is None:
        raise CheckpointError(f"{path}: not a checkpoint file name (ckpt-<9 digits>.pt)")
    return int(match.group(1))


# --- snapshots at a geometric series of images shown ------------------------------------------

def geometric_points(first: int, factor: float, total: int) -> list[int]:
    """``first, first * factor, first * factor**2, ...`` (rounded) up to ``total``, and ``total`` itself.

    A geometric series spends as many snapshots on the first thousands of images, where a
    generator changes fastest, as on the last hundred thousands.
    """
    if first < 1 or factor <= 1.0 or total < 1:
        raise ValueError("first and total must be >= 1 and factor > 1")
    points, x = [], float(first)
    while round(x) < total:
        if not points or round(x) > points[-1]:
            points.append(int(round(x)))
        x *= factor
    return points + [int(total)]


def list_snapshots(run_dir: str | Path) -> list[Path]:
    """Snapshot files of a run, oldest first."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def snapshot_due(run_dir: str | Path, images_shown: int, points: Sequence[int]) -> bool:
    """Whether a checkpoint taken now would be kept as a snapshot: a point lies after the last snapshot and
    at or before ``images_shown`` (the loop may take a checkpoint at such a tick even off its schedule)."""
    kept = list_snapshots(run_dir)
    last = images_of(kept[-1]) if kept else 0
    return any(last < p <= images_shown for p in points)


def keep_snapshot(run_dir: str | Path, checkpoint: str | Path, points: Sequence[int]) -> Path | None:
    """Keep ``checkpoint`` in ``RUN_DIR/snapshots/`` when it is the first checkpoint at or after a point.

    Stateless (it reads the snapshots already kept), so it is right after a resume: a point is
    covered once a snapshot at or after it exists. Several points between two checkpoints are
    covered by one snapshot. The file is hard-linked (no copy; pruning the rolling checkpoint
    then leaves it), else copied, atomically.

    Returns
    -------
    Path or None
        The snapshot, or None when no point fell due.
    """
    checkpoint = Path(checkpoint)
    if not snapshot_due(run_dir, images_of(checkpoint), points):
        return None
    target = Path(run_dir) / SNAPSHOT_DIR / checkpoint.name
    with atomic_output_path(target) as tmp:
        tmp.unlink()  # the temporary name is free again for the link
        try:
            os.link(checkpoint, tmp)
        except OSError:  # another file system, or no hard links: a copy
            shutil.copyfile(checkpoint, tmp)
    log.debug("snapshot %s", target)
    return target


def kept_checkpoints(run_dir: str | Path) -> list[Path]:
    """Every checkpoint a run still has, snapshots and the rolling last ones, oldest first (one per images shown)."""
    by_images = {images_of(p): p for p in list_snapshots(run_dir)}
    by_images.update({images_of(p): p for p in list_checkpoints(run_dir)})
    return [by_images[k] for k in sorted(by_images)]


# --- random number generators ----------------------------------------------------------------

def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """All global RNG states plus the given generators', as tensors and plain types."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        # numpy: ("MT19937", uint32[624], pos, has_gauss, cached_gaussian); int64 keeps uint32 exact.
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "generators": {name: g.get_state() for name, g in (generators or {}).items()},
    }
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    npd = state["numpy"]
    np.random.set_state(("MT19937", npd["keys"].numpy().astype(np.uint32), npd["pos"], npd["has_gauss"],
                         npd["cached_gaussian"]))
    pyd = state["python"]
    random.setstate((pyd["version"], tuple(int(v) for v in pyd["internal"].tolist()), pyd["gauss"]))
    for name, g in (generators or {}).items():
        if name not in state["generators"]:
            raise CheckpointError(f"checkpoint has no state for random generator {name!r}")
        g.set_state(state["generators"][name])


# --- save / load -----------------------------------------------------------------------------

def save_checkpoint(run_dir: str | Path, state: dict[str, Any], keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of its images-shown count; prune old ones.

    Parameters
    ----------
    run_dir : path
        The run folder; the file goes to ``run_dir/checkpoints/``.
    state : dict
        Holds every key of :data:`REQUIRED_KEYS` except ``format``/``version`` (added here).
    keep : int
        How many of the newest checkpoints to keep (>= 1).

    Returns
    -------
    Path
        The checkpoint file.
    """
    state = {"format": FORMAT, "version": __version__, **state}
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    path = Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(state["progress"]["images_shown"])
    with atomic_output_path(path) as tmp:
        torch.save(state, tmp)
    for old in list_checkpoints(run_dir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    log.debug("checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint written by :func:`save_checkpoint`.

    Only tensors and plain types are unpickled (``weights_only=True``); nothing in the
    file is executed.

    Raises
    ------
    CheckpointError
        When the file is missing, truncated, not a torch file, holds forbidden objects,
        or lacks a key brainsynth needs.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's own notes on odd pickle protocols: the refusal below says it
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # every failure mode (pickle, zip, EOF) means the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable brainsynth checkpoint, refused without loading it ({reason[:200]})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a brainsynth checkpoint (format {FORMAT} expected)")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    progress = state.get("progress")
    if not missing and isinstance(progress, dict):
        missing = [f"progress.{k}" for k in PROGRESS_KEYS if k not in progress]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing {', '.join(missing)}; use an earlier one")
    if state["version"] != __version__:
        log.warning("%s was written by brainsynth %s, this is %s", path, state["version"], __version__)
    return state
