"""Per-phase diagnostics of a growing PGGAN: what each growth phase ends with.

A progressive GAN that ends in poor images may have gone wrong at any of its phases (4 px
stable, 8 px fade, 8 px stable, ...). At the end of every phase this module writes, into the
run folder (rank 0 only):

- ``samples/phase-<NN>-<res>px.png``: G_ema's images at that phase's own resolution and fade
  weight (rows ``control``, ``adhd``), above real training slices pooled down the same way and
  blended as D saw them (rows ``real c``, ``real a``);
- one line of ``phases.jsonl``: the phase (number, ``stable`` or ``fade``, resolution, fade
  weight, its scheduled start and end in images), where training was (images shown, steps,
  wall seconds), and the SWD (x1e3, per Laplacian level and ``avg``) of ``phase_swd_images``
  G_ema images against every real training slice at that resolution. The official progressive
  GAN reports SWD per pyramid level for the same reason: each level says how well one scale
  has been learnt.

SWD at low resolution. The protocol's pyramid stops at 16 px and reads 7x7 patches; a phase
below 16 px is scored on one level, the image itself, with 7x7 patches at 8 px and 3x3 at
4 px (a 7x7 patch does not fit in a 4 px image). Numbers of different phases are therefore
comparable within one resolution, not across resolutions.

Determinism: the latents, labels and the SWD's random numbers come from their own seeded
generators, so the diagnostics draw nothing from the training's random streams, and a
resumed run trains exactly as an uninterrupted one. A resumed run passes again the phase
ends it logged after its checkpoint; :func:`brainsynth.train.observe.truncate_stats` drops
those records first.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth import LABELS
from brainsynth.fsio import atomic_output_path
from brainsynth.train.observe import PHASES_FILE, SAMPLES_DIR, grid_image

PHASE_SEED_OFFSET = 7_368_787  # the diagnostics' latents come from their own seed
SAMPLE_BATCH = 256  # G_ema images per forward pass
Sampler = Callable[[torch.Tensor, torch.Tensor, int, float], torch.Tensor]
"""``(z [N, z_dim], labels [N], res, alpha) -> images [N, 1, res, res]`` in [-1, 1]."""


@dataclass(frozen=True)
class PhaseSpan:
    """One growth phase of a schedule: number, kind, resolution, first and last image."""

    number: int
    kind: str  # "stable" or "fade"
    res: int
    start_images: int
    end_images: int


def phase_number(index: int, fading: bool) -> int:
    """The phase's place in the timeline: 0 stable at the start, 1 fade, 2 stable, 3 fade, ..."""
    return 2 * index - int(fading)


def phase_spans(schedule) -> list[PhaseSpan]:
    """Every phase a :class:`~brainsynth.train.schedule.Schedule` reaches before its end."""
    bounds = schedule.boundaries()
    total = schedule.total_images
    spans = []
    for k, (start, kind, res) in enumerate(bounds):
        if start >= total:
            break
        end = bounds[k + 1][0] if k + 1 < len(bounds) else total
        spans.append(PhaseSpan(k, kind, res, start, min(end, total)))
    return spans


def swd_settings(res: int) -> tuple[int, int]:
    """``(min_res, patch)`` of the SWD at ``res`` (see the module notes)."""
    from brainsynth.evaluate.image_fidelity import SWD_MIN_RES, SWD_PATCH

    if res >= SWD_MIN_RES:
        return SWD_MIN_RES, SWD_PATCH
    patch = min(SWD_PATCH, res - 1 if res % 2 == 0 else res - 2)  # odd, and leaves room for centres
    return res, max(1, patch)


class PhaseLog:
    """Writes the per-phase grids and ``phases.jsonl`` of one run (see the module notes).

    Parameters
    ----------
    run_dir : Path
    schedule : Schedule
        The run's growth schedule.
    reals : Tensor
        ``[N, 1, R, R]`` uint8 training images at the final resolution.
    labels : Tensor
        ``[N]`` their class indices.
    class_probs : Tensor
        ``[C]`` the data's label distribution (the fakes' labels follow it).
    swd_images : int
        G_ema images scored by SWD per phase; 0 writes the grids only.
    z_dim : int
        G's latent size.
    seed : int
        The run's seed.
    columns, cell_px : int
        Grid images per row and display size of one cell.
    enabled : bool
        False on ranks other than 0: nothing is computed or written.
    upsample : {"nearest", "bilinear"}
        G's upsampling: the reals of a fade are blended as the training step blends them.
    """

    @classmethod
    def for_run(cls, cfg: Any, run_dir: Path, schedule, data: Any, *, enabled: bool) -> "PhaseLog | None":
        """The diagnostics of a growing model's run (``cfg.grows``), from its config and
        :class:`~brainsynth.train.reals.RealImages`; None for a model trained at one resolution."""
        if not cfg.grows:
            return None
        return cls(run_dir, schedule, data.base, data.labels, data.class_probs, swd_images=cfg.phase_swd_images,
                   z_dim=cfg.z_dim, seed=cfg.seed, columns=cfg.grid_columns, cell_px=cfg.grid_cell_px,
                   enabled=enabled, upsample=cfg.upsample)

    def __init__(self, run_dir: Path, schedule, reals: torch.Tensor, labels: torch.Tensor, class_probs: torch.Tensor,
                 *, swd_images: int, z_dim: int, seed: int, columns: int = 8, cell_px: int = 64,
                 enabled: bool = True, upsample: str = "nearest"):
        self.run_dir = Path(run_dir)
        self.upsample = upsample
        self.schedule = schedule
        self.spans = {s.number: s for s in phase_spans(schedule)}
        self.reals = reals.cpu()
        self.labels = labels.cpu()
        self.swd_images = int(swd_images)
        self.columns = int(columns)
        self.cell_px = int(cell_px)
        self.enabled = enabled
        g = torch.Generator().manual_seed(seed + PHASE_SEED_OFFSET)
        # The same latents at every phase: the grids show how the same images develop.
        self.grid_z = torch.randn(columns, z_dim, generator=g).repeat(len(LABELS), 1)  # [C * cols, z]
        self.grid_labels = torch.arange(len(LABELS)).repeat_interleave(columns)  # [C * cols]
        self.swd_z = torch.randn(self.swd_images, z_dim, generator=g)  # [n, z]
        self.swd_labels = torch.multinomial(class_probs.float(), self.swd_images, replacement=True,
                                            generator=g) if self.swd_images else torch.zeros(0, dtype=torch.long)
        # The grid's real rows: the first `columns` training slices of each class, in order of an own shuffle.
        order = torch.randperm(len(self.labels), generator=g)
        self.grid_reals = [order[self.labels[order] == k][:columns] for k in range(len(LABELS))]

    def after_step(self, phase, images_shown: int, step: int, wall_s: float, sample: Sampler) -> dict[str, Any] | None:
        """Log the phase that the step at ``phase`` ended, if it ended one; return its record.

        A phase ends when the next step belongs to another phase, or when training reaches
        the schedule's end.
        """
        if not self.enabled:
            return None
        number = phase_number(phase.index, phase.fading)
        after = self.schedule.at(images_shown)
        if images_shown < self.schedule.total_images and phase_number(after.index, after.fading) == number:
            return None
        return self.log_phase(phase, images_shown, step, wall_s, sample)

    def log_phase(self, phase, images_shown: int, step: int, wall_s: float, sample: Sampler) -> dict[str, Any]:
        """Write the grid and the ``phases.jsonl`` record of the phase that ``phase`` belongs to."""
        t0, c0 = time.perf_counter(), time.process_time()
        number = phase_number(phase.index, phase.fading)
        span = self.spans.get(number)
        reals = self.real_images(phase.res, phase.alpha)  # [N, 1, res, res] in [-1, 1]
        grid_fakes = self._sample(sample, self.grid_z, self.grid_labels, phase)  # [C * cols, 1, res, res]
        name = f"phase-{number:02d}-{phase.res}px.png"
        self._write_grid(name, grid_fakes, reals)
        record: dict[str, Any] = {
            "phase": number, "kind": "fade" if phase.fading else "stable", "res": phase.res,
            "alpha": round(float(phase.alpha), 6),
            "start_images": span.start_images if span else None, "end_images": span.end_images if span else None,
            "images_shown": int(images_shown), "step": int(step), "wall_s": float(wall_s),
            "grid": f"{SAMPLES_DIR}/{name}", "swd_images": self.swd_images, "swd": None,
        }
        if self.swd_images:
            fakes = self._sample(sample, self.swd_z, self.swd_labels, phase)
            record["swd"] = phase_swd(reals, fakes, phase.res)
        record["diagnostic_s"] = time.perf_counter() - t0
        record["diagnostic_cpu_s"] = time.process_time() - c0
        with open(self.run_dir / PHASES_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return record

    def real_images(self, res: int, alpha: float) -> torch.Tensor:
        """The training slices as D sees them at ``res`` and fade weight ``alpha``: ``[N, 1, res, res]``."""
        from brainsynth.train.schedule import blend_reals

        x = self.reals.float()
        while x.shape[-1] > res:
            x = F.avg_pool2d(x, 2)
        return blend_reals(x.mul_(2.0 / 255.0).sub_(1.0), alpha, self.upsample)

    @staticmethod
    @torch.inference_mode()
    def _sample(sample: Sampler, z: torch.Tensor, labels: torch.Tensor, phase) -> torch.Tensor:
        parts = [sample(zc, lc, phase.res, phase.alpha).float().cpu()
                 for zc, lc in zip(z.split(SAMPLE_BATCH), labels.split(SAMPLE_BATCH))]
        return torch.cat(parts).clamp_(-1.0, 1.0)  # [n, 1, res, res]

    def _write_grid(self, name: str, fakes: torch.Tensor, reals: torch.Tensor) -> None:
        res = fakes.shape[-1]
        rows = [fakes[k * self.columns:(k + 1) * self.columns, 0] for k in range(len(LABELS))]
        rows += [reals[idx, 0] for idx in self.grid_reals]
        width = max(len(r) for r in rows)
        pad = [torch.cat([r, r.new_full((width - len(r), res, res), -1.0)]) for r in rows]  # a class with few slices
        names = list(LABELS) + [f"real {lbl[0]}" for lbl in LABELS]
        image = grid_image(torch.stack(pad), self.cell_px, row_names=names)
        with atomic_output_path(self.run_dir / SAMPLES_DIR / name) as tmp:
            image.save(tmp, format="PNG")


def phase_swd(reals: torch.Tensor, fakes: torch.Tensor, res: int, seed: int = 0) -> dict[str, float]:
    """SWD (x1e3, per level and ``avg``) of fakes against reals ``[N, 1, res, res]`` in [-1, 1]."""
    from brainsynth.evaluate.image_fidelity import swd

    min_res, patch = swd_settings(res)
    to_unit = lambda x: ((x[:, 0].float() + 1.0) / 2.0).numpy()  # noqa: E731  [N, res, res] in [0, 1]
    return swd(to_unit(reals), to_unit(fakes), seed=seed, min_res=min_res, patch=patch)


def read_phases(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/phases.jsonl`` (empty when absent)."""
    from brainsynth.train.observe import read_stats

    return read_stats(run_dir, PHASES_FILE)
