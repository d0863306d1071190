"""The one training loop: setup, resume, then per step the family's step and G_ema; tick work.

Every model family runs through this loop; what differs (networks, the step, the sample grid)
is the family's :class:`~brainsynth.train.steps.TrainingStep`: the GANs' in
:mod:`brainsynth.train.gan_step`, the diffusion model's in :mod:`brainsynth.train.diffusion`.

Progress is counted in images shown; the resolution, fade weight, batch size and learning
rate are a pure function of it (:class:`~brainsynth.train.schedule.Schedule`), so a run
resumed from a checkpoint continues at exactly the same position. A checkpoint holds
every piece of state (networks, optimisers, augmentation, counters, every RNG), so on the
CPU with fixed seeds a run killed (even by SIGKILL) and resumed ends with weights
identical to an uninterrupted one. A run folder has one writer: the process that trains in
it holds its lock (:mod:`brainsynth.folder_lock`), and a second one is refused.

RUN_DIR layout::

    config.yaml                      the resolved train section (reusable with --config RUN_DIR/config.yaml)
    checkpoints/ckpt-<images>.pt     last ``checkpoint_keep`` checkpoints
    progress.json                    images_shown, target_images, resolution, alpha, finished
    stats.jsonl, samples/, tb/       see :mod:`brainsynth.train.observe`; phases.jsonl: the PGGAN's growth phases
    .brainsynth.lock                 held by the process training in the folder

Batches are drawn with replacement from a seeded generator (stylegan2-ada's infinite
sampler, simplified), so every batch is complete: the minibatch-stddev layer never sees a
batch of one. Real images: :mod:`brainsynth.train.reals`.

Multi-process (torchrun) training: see :mod:`brainsynth.train.distributed`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from brainsynth import LABELS
from brainsynth.config import Override, TrainConfig, sections_yaml
from brainsynth.errors import CheckpointError, ConfigError, TrainingDivergedError
from brainsynth.folder_lock import folder_lock
from brainsynth.fsio import atomic_write_text
from brainsynth.models import build_models, network_kwargs
from brainsynth.timing import Stopwatch
from brainsynth.train import checkpoint as ckpt
from brainsynth.train import distributed as ddp
from brainsynth.train.augment import Augment
from brainsynth.train.ema import ema_beta, ema_bn_mode, update_ema
from brainsynth.train.observe import Observer, truncate_stats, write_progress
from brainsynth.train.reals import RealImages
from brainsynth.train.run_dir import (CONFIG_FILE, check_run_dir, clear_run_dir, config_of_checkpoint, print_dry_run,
                                     resume_config)
from brainsynth.train.phases import PhaseLog
from brainsynth.train.schedule import build_schedule
from brainsynth.train.steps import step_class

log = logging.getLogger("brainsynth.train.loop")

GRID_SEED_OFFSET = 104_729  # the sample grid's fixed latent comes from its own seed
ROLLBACK_SEED_STRIDE = 1_000_003  # a rollback reseeds the batch stream away from the one that diverged


# --- entry point -------------------------------------------------------------------------------

def train(dataset: str | Path, out: str | Path, cfg: TrainConfig, *, resume: bool = False,
          changes: Iterable[Override] = (), launch: Iterable[str] = (), dry_run: bool = False,
          device: str | None = None, force: bool = False, fold: int = 0, repeat: int = 0) -> Path:
    """Train a PGGAN, DCGAN or diffusion model on a prepared DATASET's train split (``brainsynth train``);
    returns the run folder.

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
        cfg = resume_config(run_dir, cfg.model, changes) if resume else copy.deepcopy(cfg)
        print_dry_run(cfg, Path(dataset))
        return run_dir
    info = ddp.init_distributed(device)
    try:
        # Rank 0 writes the folder, so it alone holds it (the other ranks follow its barriers).
        with folder_lock(run_dir, "training run") if info.is_main else contextlib.nullcontext():
            trainer = Trainer(dataset, run_dir, cfg, changes=changes, launch=list(launch), resume=resume,
                              force=force, info=info, fold=(repeat, fold))
            trainer.run(stop_after_images=stop_after_images)
    finally:
        ddp.shutdown(info)
    return run_dir


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
        cfg = config_of_checkpoint(state, cfg.model, changes, run_dir) if state else copy.deepcopy(cfg)
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
        # Checkpoints kept for good at a geometric series of images (privacy and quality over training).
        self.snapshot_points = (ckpt.geometric_points(cfg.snapshot_first, cfg.snapshot_factor, self.target)
                                if cfg.snapshot_first else [])
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
        self.augment = Augment(cfg.augment, p=cfg.augment_p, target=cfg.augment_target,
                               interval=cfg.augment_interval, speed_images=cfg.augment_speed_images,
                               batch_size=self.schedule.at(0).batch_size, seed=cfg.seed * 7919 + info.rank)
        if cfg.augment != "off" and self.D is None:
            log.warning("%s.augment=%s is ignored: it augments what a GAN's discriminator sees, and the %s has none",
                        cfg.name, cfg.augment, cfg.model)
        self.family = step_class(cfg.model)(cfg, self.G, self.D, self.G_fwd, self.G_ema, self.data, self.augment,
                                            info, self.gen)
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
        self.grid_input = self.family.grid_input(
            cfg.grid_columns, torch.Generator().manual_seed(cfg.seed + GRID_SEED_OFFSET))  # [cols, ...]
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
        self.phase_log = PhaseLog.for_run(cfg, run_dir, self.schedule, self.data, enabled=self.main)
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
        cfg = self.cfg
        self.net_kwargs = network_kwargs(cfg)
        G, D = build_models(cfg.model, **self.net_kwargs)  # D is None for the diffusion model
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.G = G.to(self.device, memory_format=memory_format).train()
        self.D = D.to(self.device, memory_format=memory_format).train() if D is not None else None
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.ema_bn = ema_bn_mode(cfg)
        self.G_fwd = self._maybe_compile(self.G)

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
            with torch.no_grad():  # compile now (as the first step calls it), so that a failure shows here
                compiled(*step_class(self.cfg.model).probe(self.cfg, n, phase, self.device))
                for b, s in zip(G.buffers(), saved):
                    b.copy_(s)  # the warm-up must not move batch-norm statistics
            return compiled
        except Exception as exc:  # a missing compiler must not stop training
            log.warning("torch.compile unavailable (%s: %s); training uncompiled", type(exc).__name__,
                        str(exc).splitlines()[0] if str(exc) else "")
            return G

    def _adam_segment(self, phase) -> int:
        """Adam is reset whenever this number changes (``train.adam_reset``).

        ``resolution``: the growth step (it changes when a fade starts). ``lod``: the official
        rule, a reset whenever floor or ceil of the level of detail changes, i.e. when a fade
        starts AND when it ends: 0 stable, 1 fade, 2 stable, 3 fade, ...
        """
        if self.cfg.grows and self.cfg.adam_reset == "lod":
            return 2 * phase.index - int(phase.fading)
        return phase.index

    def _new_optimisers(self) -> None:
        # Fresh Adam state at the start and at every reset point of train.adam_reset.
        self.family.new_optimisers()

    def _restore(self, state: dict[str, Any]) -> float:
        """Load a checkpoint's state into this trainer; return the wall time it had run."""
        try:
            self.G.load_state_dict(state["G"])
            self.G_ema.load_state_dict(state["G_ema"])
            self._new_optimisers()
            self.family.opt_G.load_state_dict(state["opt_G"])
            if self.D is not None:
                self.D.load_state_dict(state["D"])
                self.family.opt_D.load_state_dict(state["opt_D"])
            if state["augment"] is not None:
                self.augment.load_state_dict(state["augment"])
            self.family.load_state_dict(state.get("family"))  # checkpoints before it have none
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
                    self.phase_log.after_step(phase, self.images_shown, self.step, self.clock.total(),
                                              self.family.sample_at)
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
        for opt in self.family.optimisers():
            for group in opt.param_groups:
                group["lr"] = lr
        gb = phase.batch_size
        ddp.per_rank_batch(gb, self.info)
        stats, losses = self.family.step(phase, gb, self.step)
        self._check_finite(*losses)
        update_ema(self.G_ema, self.G, ema_beta(cfg, gb), self.ema_bn)

        # --- bookkeeping, as device tensors (read once per tick: no per-step host sync)
        for key, value in stats.items():
            self._acc[key] = self._acc.get(key, 0.0) + value.float()
        self._acc_steps += 1
        self.images_shown += gb
        self.step += 1
        self.observer.step(gb)

    def _check_finite(self, *losses: torch.Tensor) -> None:
        """Fold the losses just optimised into the tick's finite flag (a device tensor: no host sync).

        The losses themselves, not their entries in the stats: a loss may report other stats.
        """
        for loss in losses:
            self._finite = self._finite & torch.isfinite(loss.detach())

    def _prepare_ema_for_sampling(self) -> None:
        self.family.prepare_for_sampling(self.images_shown, self.schedule.at(self.images_shown).batch_size)

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
            **self.family.tick_record(),
        }
        self._prepare_ema_for_sampling()  # tick work, after the training throughput was taken
        self.observer.tick(record, self._samples(phase) if self.main else None)
        saved = (self._finished() or self.tick_index % cfg.checkpoint_every_ticks == 0
                 or ckpt.snapshot_due(self.run_dir, self.images_shown, self.snapshot_points))
        if saved:
            self._save_checkpoint()
        self._reset_tick_accumulators()
        return saved

    @torch.inference_mode()
    def _samples(self, phase) -> torch.Tensor:
        """G_ema's images of the fixed latent: ``[n_classes, columns, res, res]``."""
        n_classes, cols = len(LABELS), self.cfg.grid_columns
        grid = self.grid_input
        z = grid.repeat(n_classes, *[1] * (grid.dim() - 1)).to(self.device)  # [C*cols, ...]; same input per row
        labels = torch.arange(n_classes, device=self.device).repeat_interleave(cols)  # [C*cols]
        images = self.family.samples(z, labels, phase)  # [C*cols, 1, res, res]
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
                "config": self.cfg.to_dict(), "data": self.data.summary, "launch": self.launch,
                "G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.family.opt_G.state_dict(),
                # A family without a discriminator (the diffusion model) saves None.
                "D": self.D.state_dict() if self.D is not None else None,
                "opt_D": self.family.opt_D.state_dict() if self.family.opt_D is not None else None,
                "augment": self.augment.state_dict(), "family": self.family.state_dict(),
                "progress": self._progress(), "rng": ckpt.capture_rng({"data": self.gen}),
            }
            path = ckpt.save_checkpoint(self.run_dir, state, keep=self.cfg.checkpoint_keep)
            ckpt.keep_snapshot(self.run_dir, path, self.snapshot_points)
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
