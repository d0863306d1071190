"""What a training run shows while it runs: progress bar, stats.jsonl, sample grids, TensorBoard.

Files in RUN_DIR (written by rank 0 only):

- ``stats.jsonl``: one JSON object per tick (images_shown, kimg, res, alpha, lr, losses and
  scores averaged over the tick, img/s, augment p, wall time);
- ``samples/grid-<images_shown:09d>.png`` and ``samples/latest.png``: G_ema's images from a
  FIXED latent, one row per class (control on top, adhd below, named at the left), at the
  current resolution upscaled (nearest neighbour) to a common cell size;
- ``tb/``: TensorBoard events (``tensorboard --logdir RUN_DIR/tb``) with the same scalars and
  one sample strip per class;
- ``progress.json`` (see :func:`write_progress`);
- ``phases.jsonl`` and ``samples/phase-<NN>-<res>px.png``: the PGGAN's per-phase diagnostics,
  written by :mod:`brainsynth.train.phases`.

Everything here runs at ticks only; :meth:`Observer.step` just advances the bar.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from brainsynth import LABELS
from brainsynth.fsio import atomic_output_path, atomic_write_json, atomic_write_text

log = logging.getLogger("brainsynth.train.observe")

STATS_FILE = "stats.jsonl"
PHASES_FILE = "phases.jsonl"  # one record per finished growth phase (brainsynth.train.phases)
PROGRESS_FILE = "progress.json"
SAMPLES_DIR = "samples"
TB_DIR = "tb"
LABEL_MARGIN_PX = 48  # room for the class name left of each grid row
GAP_PX = 2


def write_progress(run_dir: Path, images_shown: int, target_images: int, resolution: int, alpha: float,
                   finished: bool) -> None:
    """Atomically write ``RUN_DIR/progress.json``."""
    atomic_write_json(run_dir / PROGRESS_FILE, {
        "images_shown": int(images_shown), "target_images": int(target_images), "resolution": int(resolution),
        "alpha": float(alpha), "finished": bool(finished),
    })


def read_stats(run_dir: str | Path, name: str = STATS_FILE) -> list[dict[str, Any]]:
    """The records of ``RUN_DIR/stats.jsonl`` (or of another JSON-lines file ``name``; empty when absent)."""
    path = Path(run_dir) / name
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a kill: its tick is redone after the resume
    return records


def truncate_stats(run_dir: Path, images_shown: int) -> None:
    """Drop stats lines past ``images_shown`` (ticks logged after the checkpoint a run resumes from).

    The per-phase records (``phases.jsonl``, :mod:`brainsynth.train.phases`) are cut the same way:
    the resumed run writes them again when it passes those phase ends.
    """
    for name in (STATS_FILE, PHASES_FILE):
        kept = [r for r in read_stats(run_dir, name) if r.get("images_shown", 0) <= images_shown]
        if (run_dir / name).exists():
            atomic_write_text(run_dir / name, "".join(json.dumps(r) + "\n" for r in kept))


def grid_image(images: torch.Tensor, cell_px: int, row_names: list[str] | None = None) -> "Image.Image":  # noqa: F821
    """Compose a labelled sample grid.

    Parameters
    ----------
    images : Tensor
        ``[n_rows, columns, H, W]`` in [-1, 1], row ``k`` generated with label ``LABELS[k]``.
    cell_px : int
        Display size of one image; smaller images are upscaled by nearest neighbour.
    row_names : list of str, optional
        The name written left of each row (default: the class names ``LABELS``).

    Returns
    -------
    PIL.Image.Image
        8-bit grayscale, rows separated by a gap, each row named at the left.
    """
    from PIL import Image, ImageDraw

    n_rows, n_cols, h, w = images.shape
    scale = max(1, cell_px // max(h, w))
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()  # [R, C, H, W]
    pixels = pixels.repeat(scale, axis=2).repeat(scale, axis=3)  # [R, C, H*s, W*s]
    ch, cw = h * scale, w * scale
    canvas = np.full((n_rows * (ch + GAP_PX) - GAP_PX, LABEL_MARGIN_PX + n_cols * (cw + GAP_PX) - GAP_PX), 64,
                     dtype=np.uint8)
    for r in range(n_rows):
        for c in range(n_cols):
            y, x = r * (ch + GAP_PX), LABEL_MARGIN_PX + c * (cw + GAP_PX)
            canvas[y:y + ch, x:x + cw] = pixels[r, c]
    img = Image.fromarray(canvas, mode="L")
    draw = ImageDraw.Draw(img)
    names = list(row_names) if row_names is not None else list(LABELS)
    for r in range(n_rows):
        draw.text((2, r * (ch + GAP_PX) + max(0, ch // 2 - 5)), names[r] if r < len(names) else str(r), fill=255)
    return img


class Observer:
    """Rank 0's view of a run: progress bar, stats file, sample grids, TensorBoard.

    Parameters
    ----------
    run_dir : Path
    target_images : int
        Total images of the run (the bar's total).
    start_images : int
        Images already shown (non-zero on resume).
    enabled : bool
        False on ranks other than 0: every method is then a no-op.
    progress_bar, tensorboard : bool
        The config switches of the same names.
    cell_px : int
        Display size of one sample-grid cell.
    """

    def __init__(self, run_dir: Path, target_images: int, start_images: int, *, enabled: bool = True,
                 progress_bar: bool = True, tensorboard: bool = True, cell_px: int = 64):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.cell_px = cell_px
        self.bar = None
        self.writer = None
        if not enabled:
            return
        if progress_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=target_images, initial=start_images, unit="img", unit_scale=True,
                            dynamic_ncols=True, desc="train", leave=True, mininterval=1.0)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events a killed run logged after the checkpoint it resumes from.
            self.writer = SummaryWriter(str(self.run_dir / TB_DIR), purge_step=start_images + 1 if start_images else None)

    def step(self, batch: int) -> None:
        """Advance the bar by one step's images (tqdm redraws at most once a second)."""
        if self.bar is not None:
            self.bar.update(batch)

    def tick(self, record: dict[str, Any], samples: torch.Tensor | None) -> None:
        """Write one tick: a stats line, a sample grid, TensorBoard scalars and images.

        Parameters
        ----------
        record : dict
            Plain numbers; must hold ``images_shown``.
        samples : Tensor, optional
            ``[n_classes, columns, H, W]`` in [-1, 1] (see :func:`grid_image`).
        """
        if not self.enabled:
            return
        images_shown = int(record["images_shown"])
        with open(self.run_dir / STATS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if samples is not None:
            grid = grid_image(samples, self.cell_px)
            samples_dir = self.run_dir / SAMPLES_DIR
            for name in (f"grid-{images_shown:09d}.png", "latest.png"):
                with atomic_output_path(samples_dir / name) as tmp:
                    grid.save(tmp, format="PNG")
        if self.writer is not None:
            for key, value in record.items():
                if key != "images_shown" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(_tb_tag(key), value, images_shown)
            if samples is not None:
                for k in range(samples.shape[0]):
                    strip = torch.cat(list(samples[k]), dim=-1)  # [H, columns * W]
                    strip = ((strip.float().clamp(-1, 1) + 1) / 2).unsqueeze(0).cpu()  # [1, H, columns * W]
                    self.writer.add_image(f"samples/{LABELS[k]}", strip, images_shown, dataformats="CHW")
            self.writer.flush()
        # The GANs' loss_d and loss_g, the diffusion model's loss_mse.
        losses = {k[len("loss_"):]: v for k, v in record.items() if k.startswith("loss_")}
        if self.bar is not None:
            self.bar.set_postfix_str(
                f"res {record.get('res')} a {record.get('alpha', 0):.2f} kimg {images_shown / 1000:.1f} "
                f"img/s {record.get('img_per_s', 0):.0f} " + " ".join(f"{k} {v:.3f}" for k, v in losses.items()),
                refresh=True)
        else:
            log.info("kimg %.1f  res %s  alpha %.2f  img/s %.0f  %s", images_shown / 1000, record.get("res"),
                     record.get("alpha", 0), record.get("img_per_s", 0),
                     "  ".join(f"loss_{k} {v:.4f}" for k, v in losses.items()))

    def message(self, text: str) -> None:
        """A status line that does not break the bar."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            log.info("%s", text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _tb_tag(key: str) -> str:
    # Group related curves in TensorBoard's sidebar.
    if key.startswith(("loss_", "score_", "ac_", "gp", "drift", "real_sign")):
        return f"loss/{key}"
    if key in ("res", "alpha", "lr", "augment_p", "kimg"):
        return f"schedule/{key}"
    return f"timing/{key}"

