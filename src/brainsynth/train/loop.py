"""The training loop: setup, resume, then per step fetch, D step, G step, EMA; tick work.

The diffusion model (``--model ddpm``) runs through the same loop with its own step: fetch,
one denoising step (:mod:`brainsynth.train.diffusion`), EMA. It has no discriminator: its
checkpoints hold ``D`` and ``opt_D`` as None, and its sample grid is DDIM-sampled from
fixed noise.

Progress is counted in images shown; the resolution, fade weight, batch size and learning
rate are a pure function of it (:class:`~brainsynth.train.schedule.Schedule`), so a run
resumed from a checkpoint continues at exactly the same position. A checkpoint holds
every piece of state (networks, optimisers, augmentation, counters, every RNG), so on the
CPU with fixed seeds a run killed (even by SIGKILL) and resumed ends with weights
identical to an uninterrupted one.

RUN_DIR layout::

    config.yaml                      the resolved train section (reusable with --config RUN_DIR/config.yaml)
    checkpoints/ckpt-<images>.pt     last ``checkpoint_keep`` checkpoints
    progress.json                    images_shown, target_images, resolution, alpha, finished
    stats.jsonl, samples/, tb/       see :mod:`brainsynth.train.observe`

Batches are drawn with replacement from a seeded generator (stylegan2-ada's infinite
sampler, simplified), so every batch is complete: the minibatch-stddev layer never sees a
batch of one. Real images: the DATASET's train split is read once; the config's resolution
is the dataset's image size unless ``train.resolution`` says otherwise (then the images are
resized once (a power-of-two ratio by 2x2 average
pooling, any other downscale by area interpolation; an image SMALLER than the resolution
is refused, since upsampling would only invent detail)), and kept as uint8. At each
resolution change it is pooled down once to a float tensor in [-1, 1] on the device; a
step only indexes that tensor.

Multi-process (torchrun) training: see :mod:`brainsynth.train.distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainsynth import LABELS
from brainsynth.config import Override, TrainConfig, apply_train_overrides, sections_yaml, train_config_from_dict
from brainsynth.errors import CheckpointError, ConfigError, InputError, OutputExistsError, TrainingDivergedError
from brainsynth.fsio import atomic_write_text
from brainsynth.models import network_kwargs
from brainsynth.options import as_dict
from brainsynth.timing import Stopwatch
from brainsynth.train import checkpoint as ckpt
from brainsynth.train import distributed as ddp
from brainsynth.train.ema import ema_beta, ema_bn_mode, recompute_statistics, update_ema
from brainsynth.train.ema import sample as sample_ema
from brainsynth.train.observe import Observer, truncate_stats, write_progress

log = logging.getLogger("brainsynth.train.loop")

CONFIG_FILE = "config.yaml"
POOL_CHUNK = 512  # images pooled at once when changing resolution (bounds peak memory)
GRID_SEED_OFFSET = 104_729  # the sample grid's fixed latent comes from its own seed
ROLLBACK_SEED_STRIDE = 1_000_003  # a rollback reseeds the batch stream away from the one that diverged


# --- entry point -------------------------------------------------------------------------------

def train(dataset: str | Path, out: str | Path, cfg: TrainConfig, *, resume: bool = False,
          changes: Iterable[Override] = (), launch: Iterable[str] = (), dry_run: bool = False,
          device: str | None = None, force: bool = False, fold: int = 0, repeat: int = 0) -> Path:
    """Train a PGGAN, DCGAN or diffusion model on a prepared DATASET's train split (``brainsynth train``).

    Parameters
    ----------
    dataset : path
        Prepared DATASET folder (:mod:`brainsynth.data.dataset`).
    out : path
        RUN_DIR. Refused when it already holds a run, unless ``resume`` or ``force``.
    cfg : TrainConfig
        The resolved ``train`` section of the model (``cfg.model``); on resume the run's own
        config is used instead, and only its model is checked against ``cfg.model``.
    resume : bool
        Continue from the newest checkpoint in ``out``.
    changes : iterable of (key, value, label)
        On resume, ``train.KEY`` overrides applied to the run's own config (e.g. to extend
        ``total_images``); ignored otherwise (they are already part of ``cfg``).
    launch : iterable of str
        Where the config came from (preset or file, then the overrides), kept in the
        checkpoints and the exported model card.
    dry_run : bool
        Print the resolved config as YAML and return without writing anything.
    device : str, optional
        ``cpu``, ``cuda`` or ``cuda:N``; default CUDA when present.
    force : bool
        Delete an existing run in ``out`` and start over (ignored with ``resume``).
    fold, repeat : int
        Train on the training subjects of this fold of the dataset's cross-validation
        (:meth:`brainsynth.data.dataset.PreparedDataset.fold`); repeat 0, fold 0 by default.

    Returns
    -------
    Path
        The run folder.
    """
    return run_training(dataset, out, cfg, resume=resume, changes=changes, launch=launch, dry_run=dry_run,
                        device=device, force=force, fold=fold, repeat=repeat)


def run_training(dataset: str | Path, out: str | Path, cfg: TrainConfig, *, resume: bool = False,
                 changes: Iterable[Override] = (), launch: Iterable[str] = (), dry_run: bool = False,
                 device: str | None = None, force: bool = False, stop_after_images: int | None = None,
                 fold: int = 0, repeat: int = 0) -> Path:
    """:func:`train` plus a test hook: ``stop_after_images`` returns after the first
    checkpoint at or beyond that many images, as if the process had been killed there."""
    changes, run_dir = list(changes), Path(out)
    if dry_run:
        cfg = _resume_config(run_dir, cfg.model, changes) if resume else copy.deepcopy(cfg)
        _print_dry_run(cfg, Path(dataset))
        return run_dir
    info = ddp.init_distributed(device)
    try:
        trainer = Trainer(dataset, run_dir, cfg, changes=changes, launch=list(launch), resume=resume, force=force,
                          info=info, fold=(repeat, fold))
        trainer.run(stop_after_images=stop_after_images)
    finally:
        ddp.shutdown(info)
    return run_dir


def _print_dry_run(cfg: TrainConfig, dataset: Path) -> None:
    if cfg.resolution is None and dataset.is_dir():
        from brainsynth.data.dataset import load_dataset

        cfg.resolution = load_dataset(dataset).image_size
    print(sections_yaml(cfg, what=f"{cfg.model} training run"), end="")
    if cfg.resolution is None:
        print("# schedule: set by the dataset's image size (resolution: null)")
    else:
        print(f"# schedule: {build_schedule(cfg)!r}")


# --- run folder and config ------------------------------------------------------------------------

def _looks_like_run(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in (CONFIG_FILE, ckpt.CHECKPOINT_DIR, "progress.json"))


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Refuse a RUN_DIR that cannot be used as asked (read-only, so every rank can run it)."""
    if resume:
        if not ckpt.list_checkpoints(run_dir):
            raise CheckpointError(f"{run_dir}: no checkpoint to resume from; start the run without --resume")
        return
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        if not force:
            raise OutputExistsError(
                f"{run_dir} already exists; pass --resume to continue that run, --force to start over, or choose another --out"
            )
        if not run_dir.is_dir() or not _looks_like_run(run_dir):
            raise OutputExistsError(
                f"{run_dir} exists and is not a brainsynth run folder; --force only replaces a run, choose another --out"
            )


def clear_run_dir(run_dir: Path) -> None:
    """Remove an old run (``--force``): renamed aside first, so a crash leaves no mixture."""
    if not run_dir.exists():
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".old", dir=run_dir.parent))
    os.replace(run_dir, trash / "old")
    shutil.rmtree(trash, ignore_errors=True)


def _resume_config(run_dir: Path, model: str, changes: list[Override]) -> TrainConfig:
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    return _config_of_checkpoint(state, model, changes, run_dir)


def _config_of_checkpoint(state: dict[str, Any], model: str, changes: list[Override], run_dir: Path) -> TrainConfig:
    cfg = train_config_from_dict(state["config"], source=f"{run_dir} checkpoint config")
    if cfg.model != model:
        raise ConfigError(f"{run_dir} trains a {cfg.model}; pass --model {cfg.model} to resume it")
    changed = apply_train_overrides(cfg, changes)
    if changed:
        log.warning("resuming %s with changed settings: %s", run_dir, ", ".join(changed))
    return cfg


def build_schedule(cfg: TrainConfig):
    """The run's :class:`~brainsynth.train.schedule.Schedule`.

    DCGAN and the diffusion model do not grow: one phase at the final resolution. Without
    ``total_images`` they show as many images as the PGGAN schedule of the same config, a
    like-for-like budget.
    """
    from brainsynth.train.schedule import Schedule

    if cfg.schedule == "compute" and cfg.model == "pggan":
        from brainsynth.train.schedule import image_costs

        growth = Schedule.fit_compute(cfg.resolution, cfg.compute_images, image_costs(cfg), cfg.start_resolution,
                                      cfg.batch_sizes, cfg.lr, cfg.final_share)
    elif cfg.schedule == "compute":  # a model that does not grow: the budget is its images
        growth = Schedule(cfg.resolution, cfg.resolution, batch_sizes=cfg.batch_sizes, lr=cfg.lr,
                          total_images=cfg.total_images or cfg.compute_images)
    elif cfg.schedule == "fit":
        growth = Schedule.fit_budget(cfg.resolution, cfg.total_images, cfg.start_resolution, cfg.batch_sizes, cfg.lr,
                                     cfg.final_share)
    else:
        growth = Schedule(cfg.resolution, cfg.start_resolution, cfg.stable_images, cfg.fade_images, cfg.batch_sizes,
                          cfg.lr, cfg.total_images)
    if cfg.model == "pggan":
        return growth
    total = growth.total_images
    return Schedule(cfg.resolution, cfg.resolution, stable_images=total, fade_images=1, batch_sizes=cfg.batch_sizes,
                    lr=cfg.lr, total_images=total)


# --- real images ---------------------------------------------------------------------------------

def pool_to(x: torch.Tensor, res: int) -> torch.Tensor:
    """Downscale ``[N, 1, S, S]`` float images to ``res`` by repeated 2x2 average pooling."""
    while x.shape[-1] > res:
        x = F.avg_pool2d(x, 2)  # [N, 1, S/2, S/2]
    return x


class RealImages:
    """The train split, resident at the current resolution.

    Parameters
    ----------
    dataset : path
        Prepared DATASET folder.
    resolution : int or None
        The config's final resolution; None takes the dataset's image size.
    device : torch.device
    fold : (int, int)
        ``(repeat, fold)`` of the dataset's cross-validation whose train split is used.
    """

    def __init__(self, dataset: str | Path, resolution: int | None, device: torch.device,
                 fold: tuple[int, int] = (0, 0)):
        from brainsynth.data.dataset import load_dataset

        ds = load_dataset(dataset, fold=fold[1], repeat=fold[0])
        idx = ds.indices(split="train")
        if len(idx) == 0:
            raise InputError(f"{ds.root}: the dataset has no 'train' images; re-run 'brainsynth prepare'")
        labels = ds.label_indices(idx)
        base = torch.from_numpy(np.ascontiguousarray(ds.images[idx])).unsqueeze(1)  # [N, 1, S, S] uint8
        self.source_size = ds.image_size
        resolution = resolution or ds.image_size
        self.resolution = int(resolution)
        self.base = self._resize_once(base, resolution, ds.root)  # [N, 1, R, R] uint8
        self.labels = torch.from_numpy(labels).to(device)  # [N] int64
        counts = np.bincount(labels, minlength=len(LABELS))
        # Fake labels follow the data's label distribution (official AC-GAN setup).
        self.class_probs = torch.tensor(counts / counts.sum(), dtype=torch.float64)  # [C]
        self.device = device
        self.n = len(idx)
        self.res = 0
        self.images: torch.Tensor | None = None  # [N, 1, res, res] float in [-1, 1] on device
        table = ds.table.iloc[idx]
        self.summary = {
            "dataset": str(Path(ds.root).resolve()),
            "simulated": bool(ds.manifest.get("simulated", False)),
            "split": "train",
            "repeat": int(fold[0]),
            "fold": int(fold[1]),
            "image_size": int(ds.image_size),
            "resolution": int(resolution),
            "n_images": int(self.n),
            "n_images_per_label": {lbl: int(c) for lbl, c in zip(LABELS, counts)},
            "n_subjects_per_label": {lbl: int(table.loc[table["label"] == lbl, "subject"].nunique()) for lbl in LABELS},
            # The subjects too: the fingerprint of each fold's training data differs.
            "fingerprint": hashlib.sha256(self.base.numpy().tobytes() + labels.tobytes()
                                          + ",".join(sorted(set(table["subject"]))).encode()).hexdigest(),
        }

    @staticmethod
    def _resize_once(base: torch.Tensor, resolution: int, root: Path) -> torch.Tensor:
        size = base.shape[-1]
        if size == resolution:
            return base
        if size < resolution:
            raise ConfigError(f"{root}: images are {size} px but the config's train.resolution is {resolution}; "
                              f"prepare the dataset with --size {resolution}, or set train.resolution to null")
        log.warning("%s: resizing %d px images to %d px once at load", root, size, resolution)
        out = []
        for chunk in base.split(POOL_CHUNK):
            x = chunk.float()
            if size % resolution == 0 and (size // resolution) & (size // resolution - 1) == 0:
                x = pool_to(x, resolution)
            else:
                x = F.interpolate(x, size=(resolution, resolution), mode="area")
            out.append(x.round().clamp(0, 255).to(torch.uint8))
        return torch.cat(out)

    def set_resolution(self, res: int) -> None:
        """Pool the resident images down to ``res`` (once per resolution change)."""
        if res == self.res:
            return
        self.images = None  # free the previous resolution first
        parts = [pool_to(c.float(), res).mul_(2.0 / 255.0).sub_(1.0) for c in self.base.split(POOL_CHUNK)]
        self.images = torch.cat(parts).to(self.device)  # [N, 1, res, res]
        self.res = res

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 1, res, res]`` and labels ``[B]`` of the given rows."""
        idx = idx.to(self.device)
        return self.images[idx], self.labels[idx]


# --- the trainer ---------------------------------------------------------------------------------

class Trainer:
    """One training run; see the module docstring. Use :func:`train`."""

    def __init__(self, dataset: str | Path, run_dir: Path, cfg: TrainConfig, *, changes: list[Override],
                 launch: list[str], resume: bool, force: bool, info: ddp.DistInfo, fold: tuple[int, int] = (0, 0)):
        # --- setup: run folder, config, data, networks, loss, optimisers
        self.run_dir = run_dir
        self.info = info
        self.main = info.is_main
        check_run_dir(run_dir, resume, force)
        state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir)) if resume else None
        cfg = _config_of_checkpoint(state, cfg.model, changes, run_dir) if state else copy.deepcopy(cfg)
        self.cfg = cfg
        # How the run was started (preset or file, then overrides), kept across resumes for the model card.
        self.launch = state.get("launch") if state and state.get("launch") else {"config": list(launch)}
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.device = info.device
        self.data = RealImages(dataset, cfg.resolution, self.device, fold)
        if cfg.resolution is None:  # the dataset's image size, fixed from now on (and in the checkpoints)
            cfg.resolution = self.data.resolution
            cfg.check()
        self.schedule = build_schedule(cfg)
        self.target = self.schedule.total_images
        if state and state["data"].get("fingerprint") != self.data.summary["fingerprint"]:
            was = state["data"]
            raise ConfigError(f"{dataset} (repeat {fold[0]}, fold {fold[1]}) is not the training data {run_dir} was "
                              f"trained on ({was.get('dataset')}, repeat {was.get('repeat', 0)}, fold "
                              f"{was.get('fold', 0)}); resume with that DATASET, --fold and --repeat")
        self._seed_all(cfg.seed)
        self._build_networks()
        # From here on the global RNG (gradient-penalty mixing) is per rank; batches, latents
        # and labels come from `gen`, identical on every rank (each keeps its own slice).
        torch.manual_seed(cfg.seed * 7919 + info.rank + 1)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self._build_loss()
        self.images_shown = 0
        self.step = 0
        self.phase_index = -1
        self.adam_segment = -1
        self.out_of_time = False
        self.last_tick_images = 0
        self.tick_index = 0
        self.lr_scale = 1.0
        self.rollbacks = 0
        wall_offset = 0.0
        if state:
            wall_offset = self._restore(state)
        else:
            self._new_optimisers()
            self.phase_index = self.schedule.at(0).index
            self.adam_segment = self._adam_segment(self.schedule.at(0))
        for net in self._networks():
            ddp.broadcast_module(net, info)  # every rank starts from rank 0's weights, whatever happened above
        self.clock = Stopwatch(wall_offset)
        grid_shape = (1, cfg.resolution, cfg.resolution) if self.D is None else (cfg.z_dim,)  # ddpm: initial noise
        self.grid_z = torch.randn(cfg.grid_columns, *grid_shape,
                                  generator=torch.Generator().manual_seed(cfg.seed + GRID_SEED_OFFSET))  # [cols, ...]
        # --- files: only rank 0 writes; the others wait until the folder is ready
        if self.main:
            if not resume and run_dir.exists():
                clear_run_dir(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run_dir / CONFIG_FILE, sections_yaml(cfg, what=f"{cfg.model} training run"))
            if resume:
                truncate_stats(run_dir, self.images_shown)
        ddp.barrier(info)
        self.observer = Observer(run_dir, self.target, self.images_shown, enabled=self.main,
                                 progress_bar=cfg.progress_bar, tensorboard=cfg.tensorboard, cell_px=cfg.grid_cell_px)
        self.phase_log = self._phase_log()
        if not state:
            self._prepare_ema_for_sampling()
            self._save_checkpoint()  # images 0: a rollback target from the very start

    # --- setup helpers

    @staticmethod
    def _seed_all(seed: int) -> None:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)

    def _build_networks(self) -> None:
        from brainsynth.models import build_models

        cfg = self.cfg
        self.net_kwargs = network_kwargs(cfg)
        G, D = build_models(cfg.model, **self.net_kwargs)  # D is None for the diffusion model
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.G = G.to(self.device, memory_format=memory_format).train()
        self.D = D.to(self.device, memory_format=memory_format).train() if D is not None else None
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.ema_bn = ema_bn_mode(cfg)
        self.G_fwd = self._maybe_compile(self.G)
        self.sampler = None
        if self.D is None:
            from brainsynth.models import diffusion_kwargs
            from brainsynth.models.ddpm import Sampler

            self.sampler = Sampler(self.G_ema, **diffusion_kwargs(cfg))  # the tick grid's DDIM sampler

    def _phase_log(self):
        """The PGGAN's per-phase grids and SWD (:mod:`brainsynth.train.phases`); None for the other models."""
        from brainsynth.train.phases import PhaseLog

        if self.cfg.model != "pggan":
            return None
        return PhaseLog(self.run_dir, self.schedule, self.data.base, self.data.labels, self.data.class_probs,
                        swd_images=self.cfg.phase_swd_images, z_dim=self.cfg.z_dim, seed=self.cfg.seed,
                        columns=self.cfg.grid_columns, cell_px=self.cfg.grid_cell_px, enabled=self.main)

    def _phase_sample(self, z: torch.Tensor, labels: torch.Tensor, res: int, alpha: float) -> torch.Tensor:
        return sample_ema(self.G_ema, z.to(self.device), labels.to(self.device), res, alpha, self.ema_bn)

    def _networks(self) -> list[nn.Module]:
        return [net for net in (self.G, self.D, self.G_ema) if net is not None]

    def _maybe_compile(self, G: nn.Module) -> nn.Module:
        # Only G: the gradient penalty's double backward through D is not supported by compiled graphs.
        if not self.cfg.compile:
            return G
        try:
            compiled = torch.compile(G)
            phase = self.schedule.at(0)
            n = ddp.per_rank_batch(phase.batch_size, self.info)
            saved = [b.detach().clone() for b in G.buffers()]
            labels = torch.zeros(n, dtype=torch.long, device=self.device)
            with torch.no_grad():  # compile now (as the first step calls it), so that a failure shows here
                if self.cfg.model == "ddpm":
                    compiled(torch.zeros(n, 1, phase.res, phase.res, device=self.device), labels, labels)
                else:
                    compiled(torch.zeros(n, self.cfg.z_dim, device=self.device), labels, phase.res, phase.alpha)
                for b, s in zip(G.buffers(), saved):
                    b.copy_(s)  # the warm-up must not move batch-norm statistics
            return compiled
        except Exception as exc:  # a missing compiler must not stop training
            log.warning("torch.compile unavailable (%s: %s); training uncompiled", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
            return G

    def _build_loss(self) -> None:
        from brainsynth.train.augment import Augment
        from brainsynth.train.losses import DCGANLoss, WGANGPLoss

        cfg = self.cfg
        self.augment = Augment(cfg.augment, p=cfg.augment_p, target=cfg.augment_target, interval=cfg.augment_interval,
                               speed_images=cfg.augment_speed_images, batch_size=self.schedule.at(0).batch_size,
                               seed=cfg.seed * 7919 + self.info.rank)
        augment = self.augment if cfg.augment != "off" else None
        if cfg.model == "ddpm":
            from brainsynth.train.diffusion import DiffusionLoss

            if cfg.augment != "off":
                log.warning("train.ddpm.augment=%s is ignored: it augments what a GAN's discriminator sees, and the "
                            "diffusion model has none", cfg.augment)
            self.loss = DiffusionLoss(self.G_fwd, cfg, null_label=len(LABELS))
        elif cfg.model == "pggan":
            self.loss = WGANGPLoss(self.G_fwd, self.D, augment=augment, gp_lambda=cfg.gp_lambda, drift=cfg.drift,
                                   ac_weight=cfg.ac_weight, label_flip_every=cfg.label_flip_every)
        else:
            self.loss = DCGANLoss(self.G_fwd, self.D, augment=augment, label_flip_every=cfg.label_flip_every)

    def _adam_segment(self, phase) -> int:
        """Adam is reset whenever this number changes (``train.adam_reset``).

        ``resolution``: the growth step (it changes when a fade starts). ``lod``: the official
        rule, a reset whenever floor or ceil of the level of detail changes, i.e. when a fade
        starts AND when it ends: 0 stable, 1 fade, 2 stable, 3 fade, ...
        """
        if self.cfg.adam_reset == "lod":
            return 2 * phase.index - int(phase.fading)
        return phase.index

    def _new_optimisers(self) -> None:
        # Fresh Adam state at the start and at every reset point of train.adam_reset.
        cfg = self.cfg
        kwargs = {"lr": 0.0, "betas": (cfg.betas[0], cfg.betas[1]), "eps": cfg.eps}
        self.opt_G = torch.optim.Adam(self.G.parameters(), **kwargs)
        self.opt_D = torch.optim.Adam(self.D.parameters(), **kwargs) if self.D is not None else None

    def _optimisers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.opt_G, self.opt_D) if opt is not None]

    def _restore(self, state: dict[str, Any]) -> float:
        """Load a checkpoint's state into this trainer; return the wall time it had run."""
        try:
            self.G.load_state_dict(state["G"])
            self.G_ema.load_state_dict(state["G_ema"])
            self._new_optimisers()
            self.opt_G.load_state_dict(state["opt_G"])
            if self.D is not None:
                self.D.load_state_dict(state["D"])
                self.opt_D.load_state_dict(state["opt_D"])
            if state["augment"] is not None:
                self.augment.load_state_dict(state["augment"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.run_dir}: checkpoint does not match this config's networks "
                                  f"({str(exc).splitlines()[0]})") from None
        p = state["progress"]
        self.images_shown = int(p["images_shown"])
        self.step = int(p["step"])
        self.phase_index = int(p["phase_index"])
        # Checkpoints older than train.adam_reset were written under the resolution rule.
        self.adam_segment = int(p.get("adam_segment", self.phase_index))
        self.last_tick_images = int(p["last_tick_images"])
        self.tick_index = int(p["tick"])
        self.lr_scale = float(p["lr_scale"])
        self.rollbacks = max(self.rollbacks, int(p["rollbacks"]))
        ckpt.restore_rng(state["rng"], {"data": self.gen})
        if self.info.rank:
            # Rank 0's global RNG was saved; the others continue on their own stream.
            torch.manual_seed(hash((self.cfg.seed, self.info.rank, self.images_shown)) % 2**63)
        return float(p.get("wall_s", 0.0))

    def _autocast(self):
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # --- the loop

    def run(self, stop_after_images: int | None = None) -> None:
        """Train to the target image count (or to the test hook's stop)."""
        cfg = self.cfg
        try:
            if self.images_shown >= self.target:
                self.observer.message(f"{self.run_dir}: already trained to {self.images_shown} images")
                self._write_progress(finished=True)
                return
            if cfg.time_budget_s is not None and self.clock.offset_s >= cfg.time_budget_s:  # the checkpoint's wall time
                self.observer.message(f"{self.run_dir}: already trained for its time budget "
                                      f"({cfg.time_budget_s:g} s, {self.images_shown} images)")
                self._write_progress(finished=True)
                return
            self.observer.message(f"training {cfg.model} on {self.data.n} images ({self.device}, "
                                  f"{self.info.world_size} process(es)) to {self.target} images: {self.schedule!r}")
            self._reset_tick_accumulators()
            while not self._finished():
                phase = self.schedule.at(self.images_shown)
                self._train_step(phase)
                if self.phase_log is not None:
                    self.phase_log.after_step(phase, self.images_shown, self.step, self.clock.total(), self._phase_sample)
                if self.images_shown >= self.last_tick_images + cfg.tick_images or self.images_shown >= self.target:
                    saved = self._tick(phase)
                    if saved and stop_after_images is not None and self.images_shown >= stop_after_images:
                        return
            if self.out_of_time:
                self.observer.message(f"time budget of {cfg.time_budget_s:g} s reached after {self.images_shown} "
                                      f"of {self.target} images")
                if self.schedule.at(self.images_shown).res < cfg.resolution:
                    log.warning("%s stopped by its time budget below its final resolution (%d px); generation "
                                "and evaluation need the final one", self.run_dir, cfg.resolution)
        finally:
            self.observer.close()

    def _finished(self) -> bool:
        return self.images_shown >= self.target or self.out_of_time

    def _over_time_budget(self) -> bool:
        """True once the run's wall time (resumed runs included) reaches ``train.time_budget_s``.

        Every rank stops together: the decision is the same everywhere (any rank over).
        """
        budget = self.cfg.time_budget_s
        if budget is None:
            return False
        over = torch.tensor(0.0 if self.clock.total() >= budget else 1.0, device=self.device)
        return bool(ddp.all_min(over, self.info).item() == 0.0)

    def _train_step(self, phase) -> None:
        cfg = self.cfg
        # Adam reset point (train.adam_reset): fresh state; new resolution: reals pooled down once.
        segment = self._adam_segment(phase)
        if segment != self.adam_segment:
            self._new_optimisers()
            self.adam_segment = segment
        self.phase_index = phase.index
        self.data.set_resolution(phase.res)
        lr = phase.lr * self.lr_scale
        for opt in self._optimisers():
            for group in opt.param_groups:
                group["lr"] = lr
        gb = phase.batch_size
        ddp.per_rank_batch(gb, self.info)
        if self.D is None:
            stats = self._denoiser_step(phase, gb)
        else:
            stats = self._gan_step(phase, gb)

        # --- bookkeeping, as device tensors (read once per tick: no per-step host sync)
        for key, value in stats.items():
            self._acc[key] = self._acc.get(key, 0.0) + value.float()
        self._acc_steps += 1
        self.images_shown += gb
        self.step += 1
        self.observer.step(gb)

    def _denoiser_step(self, phase, gb: int) -> dict[str, torch.Tensor]:
        """The diffusion model's step: fetch, denoising loss, Adam (clipped), EMA."""
        # --- fetch: the GLOBAL batch's draws, identical on every rank; each keeps its slice
        idx, noise, t, drop = self.loss.draw(gb, self.data.n, phase.res, self.gen)
        reals, labels = self.data.batch(ddp.shard(idx, self.info))  # [b, 1, res, res], [b]
        noise, t, drop = (ddp.shard(x, self.info).to(self.device) for x in (noise, t, drop))

        # --- denoising step
        self.opt_G.zero_grad(set_to_none=True)
        with self._autocast():
            loss, stats = self.loss.loss(reals, labels, noise, t, drop)
        loss.backward()
        self._check_finite(loss)
        ddp.average_gradients(self.G, self.info)
        if self.cfg.ddpm_grad_clip > 0:
            stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.G.parameters(), self.cfg.ddpm_grad_clip)
        self.opt_G.step()

        # --- EMA
        self._update_ema(gb)
        return stats

    def _gan_step(self, phase, gb: int) -> dict[str, torch.Tensor]:
        """A GAN's step: fetch, D step, G step, EMA, augmentation probability."""
        cfg = self.cfg
        # --- fetch: the GLOBAL batch's draws, identical on every rank; each keeps its slice
        g = self.gen
        idx = torch.randint(self.data.n, (gb,), generator=g)  # [B]
        z_d = torch.randn(gb, cfg.z_dim, generator=g)  # [B, z]
        z_g = torch.randn(gb, cfg.z_dim, generator=g)  # [B, z]
        # The G step's labels follow the data's label distribution (official).
        labels_g = torch.multinomial(self.data.class_probs, gb, replacement=True, generator=g)  # [B]
        reals, real_labels = self.data.batch(ddp.shard(idx, self.info))  # [b, 1, res, res], [b]
        if phase.fading:
            from brainsynth.train.schedule import blend_reals

            reals = blend_reals(reals, phase.alpha)
        z_d, z_g, labels_g = (ddp.shard(t, self.info).to(self.device) for t in (z_d, z_g, labels_g))

        # --- D step. The fakes take the REAL batch's labels (official D_wgangp_acgan): each
        # gradient-penalty interpolate then blends a real and a fake of one class, and is scored as it.
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self._autocast():
            loss_d, stats_d = self.loss.d_loss(reals, real_labels, z_d, real_labels, phase.res, phase.alpha, self.step)
        loss_d.backward()
        ddp.average_gradients(self.D, self.info)
        self.opt_D.step()

        # --- G step (D frozen: no parameter gradients wasted on it)
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        with self._autocast():
            loss_g, stats_g = self.loss.g_loss(z_g, labels_g, phase.res, phase.alpha)
        loss_g.backward()
        ddp.average_gradients(self.G, self.info)
        self.opt_G.step()
        self.D.requires_grad_(True)
        self._check_finite(loss_d, loss_g)

        # --- EMA of G, augmentation probability
        self._update_ema(gb)
        if cfg.augment == "adaptive":
            self.augment.update(ddp.all_mean(stats_d["real_sign"], self.info), batch_size=gb)
        stats = dict(stats_d)
        stats.update({key if key == "loss_g" else f"g_{key}": value for key, value in stats_g.items()})
        return stats

    def _check_finite(self, *losses: torch.Tensor) -> None:
        """Fold the losses just optimised into the tick's finite flag (a device tensor: no host sync).

        The losses themselves, not their entries in the stats: a loss may report other stats.
        """
        for loss in losses:
            self._finite = self._finite & torch.isfinite(loss.detach())

    def _update_ema(self, batch: int) -> None:
        update_ema(self.G_ema, self.G, ema_beta(self.cfg, batch), self.ema_bn)

    def _prepare_ema_for_sampling(self) -> None:
        """``dcgan_ema_bn=recompute``: G_ema's own batch-norm statistics, before it is sampled or saved."""
        if self.ema_bn == "recompute":
            recompute_statistics(self.G_ema, self.cfg, self.data.class_probs,
                                 self.schedule.at(self.images_shown).batch_size, self.images_shown, self.device)

    def _reset_tick_accumulators(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_steps = 0
        self._finite = torch.ones((), dtype=torch.bool, device=self.device)
        self._tick_images0 = self.images_shown
        self._tick_t0 = self.clock.total()

    # --- tick work

    def _all_finite(self) -> bool:
        flags = [self._finite] + [p.detach().isfinite().all() for net in self._networks() for p in net.parameters()]
        ok = torch.stack(flags).all().float()
        return bool(ddp.all_min(ok, self.info).item() > 0)

    def _tick(self, phase) -> bool:
        """Status, stats, sample grid and (every k ticks) a checkpoint; True if one was saved."""
        cfg = self.cfg
        if not self._all_finite():
            self._rollback()
            return False
        keys = sorted(self._acc)
        values = ddp.all_mean(torch.stack([self._acc[k] for k in keys]), self.info) / max(1, self._acc_steps)
        means = dict(zip(keys, values.tolist()))  # the tick's one host sync
        self.out_of_time = self._over_time_budget()
        self.tick_index += 1
        self.last_tick_images = self.images_shown
        elapsed = max(1e-9, self.clock.total() - self._tick_t0)
        record = {
            "images_shown": self.images_shown, "kimg": round(self.images_shown / 1000, 3), "tick": self.tick_index,
            "res": phase.res, "alpha": round(phase.alpha, 6), "batch": phase.batch_size,
            "lr": phase.lr * self.lr_scale, **means,
            "img_per_s": (self.images_shown - self._tick_images0) / elapsed, "sec_per_tick": elapsed,
            "augment_p": float(self.augment.p), "wall_s": self.clock.total(),
            "process_cpu_s": time.process_time(),  # this process's CPU seconds (not carried over a resume)
        }
        self._prepare_ema_for_sampling()  # tick work, after the training throughput was taken
        self.observer.tick(record, self._samples(phase) if self.main else None)
        saved = self._finished() or self.tick_index % cfg.checkpoint_every_ticks == 0
        if saved:
            self._save_checkpoint()
        self._reset_tick_accumulators()
        return saved

    @torch.inference_mode()
    def _samples(self, phase) -> torch.Tensor:
        """G_ema's images of the fixed latent: ``[n_classes, columns, res, res]``."""
        n_classes, cols = len(LABELS), self.cfg.grid_columns
        z = self.grid_z.repeat(n_classes, *[1] * (self.grid_z.dim() - 1)).to(self.device)  # [C*cols, ...]; same z per row
        labels = torch.arange(n_classes, device=self.device).repeat_interleave(cols)  # [C*cols]
        if self.sampler is not None:  # ddpm: DDIM from fixed noise, conditional model alone
            images = self.sampler(z, labels, steps=self.cfg.ddpm_grid_steps, guidance=0.0,
                                  precision=self.cfg.precision)  # [C*cols, 1, res, res]
        else:
            images = sample_ema(self.G_ema, z, labels, phase.res, phase.alpha, self.ema_bn)  # [C*cols, 1, res, res]
        return images.float().view(n_classes, cols, phase.res, phase.res)

    def _progress(self) -> dict[str, Any]:
        phase = self.schedule.at(self.images_shown)
        return {"images_shown": self.images_shown, "target_images": self.target, "step": self.step,
                "phase_index": self.phase_index, "resolution": phase.res, "alpha": phase.alpha,
                "adam_segment": self.adam_segment, "last_tick_images": self.last_tick_images,
                "tick": self.tick_index, "lr_scale": self.lr_scale,
                "rollbacks": self.rollbacks, "wall_s": self.clock.total()}

    def _save_checkpoint(self) -> None:
        if self.main:
            state = {
                "config": as_dict(self.cfg), "data": self.data.summary, "launch": self.launch,
                "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "opt_G": self.opt_G.state_dict(),
                # The diffusion model has no discriminator.
                "D": self.D.state_dict() if self.D is not None else None,
                "opt_D": self.opt_D.state_dict() if self.opt_D is not None else None,
                "augment": self.augment.state_dict(), "progress": self._progress(),
                "rng": ckpt.capture_rng({"data": self.gen}),
            }
            ckpt.save_checkpoint(self.run_dir, state, keep=self.cfg.checkpoint_keep)
            self._write_progress(finished=self._finished())
        ddp.barrier(self.info)  # a later rollback on any rank reads this file

    def _write_progress(self, finished: bool) -> None:
        if self.main:
            phase = self.schedule.at(self.images_shown)
            write_progress(self.run_dir, self.images_shown, self.target, phase.res, phase.alpha, finished)

    def _rollback(self) -> None:
        """NaN/Inf: back to the last checkpoint with a lower learning rate and a new batch stream."""
        self.rollbacks += 1
        if self.rollbacks > self.cfg.nan_retries:
            raise TrainingDivergedError(
                f"{self.run_dir}: losses became NaN/Inf again after {self.cfg.nan_retries} rollbacks; lower the "
                f"learning rate (--set train.lr=...) or use precision fp32, then restart with --force"
            )
        lr_scale = self.lr_scale * self.cfg.nan_lr_factor
        path = ckpt.latest_checkpoint(self.run_dir)
        self._restore(ckpt.load_checkpoint(path))
        self.lr_scale = lr_scale
        self.gen.manual_seed(self.cfg.seed + ROLLBACK_SEED_STRIDE * self.rollbacks)
        torch.manual_seed(self.cfg.seed + ROLLBACK_SEED_STRIDE * self.rollbacks + self.info.rank)
        self.data.res = 0  # the restored phase may be at another resolution
        if self.main:
            truncate_stats(self.run_dir, self.images_shown)
        self.observer.message(f"NaN/Inf in the losses or weights: rolled back to {path.name}, learning rate x"
                              f"{lr_scale:g} (rollback {self.rollbacks} of {self.cfg.nan_retries})")
        log.warning("rolled back to %s after NaN/Inf (lr scale %g)", path, lr_scale)
        self._reset_tick_accumulators()
