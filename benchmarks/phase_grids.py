"""One figure of a PGGAN run's growth phases: each phase's G_ema images beside real slices, with its SWD.

Reads the per-phase diagnostics a PGGAN run writes (``RUN_DIR/phases.jsonl`` and
``RUN_DIR/samples/phase-NN-<res>px.png``, :mod:`brainsynth.train.phases`) and stacks, for every
phase, the first row of G_ema images (class ``control``) above the real ``control`` slices pooled
to the same resolution, headed by the phase, the images shown by its end and its SWD.

With ``--dataset`` the real floor is added to each header: the same SWD (same protocol, same
number of images) of the fold's real TEST slices against its training slices, i.e. what a new
real subject scores at that resolution.

Usage (from the repository root, the project's venv)::

    python benchmarks/phase_grids.py RUN_DIR --out phases.png [--dataset DATASET --fold 0] [--scale 0.5]

Prints the phases as a Markdown table (``--json``: JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from brainsynth.fsio import atomic_output_path  # noqa: E402
from brainsynth.train.observe import GAP_PX, LABEL_MARGIN_PX  # noqa: E402
from brainsynth.train.phases import read_phases  # noqa: E402

HEADER_PX = 14
FAKE_ROW, REAL_ROW = 0, 2  # rows of a phase grid: control, adhd (G_ema), real control, real adhd


def grid_rows(path: Path, n_rows: int = 4) -> list[np.ndarray]:
    """The rows of one phase grid PNG, each ``[cell, width]`` uint8 (label margin included)."""
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"))
    cell = (pixels.shape[0] - (n_rows - 1) * GAP_PX) // n_rows
    return [pixels[r * (cell + GAP_PX):r * (cell + GAP_PX) + cell] for r in range(n_rows)]


def real_floors(dataset: Path, fold: int, records: list[dict], seed: int = 0) -> dict[str, float]:
    """SWD avg of the fold's real test slices against its training slices, per (res, alpha) of the records."""
    import torch

    from brainsynth.data.dataset import load_dataset
    from brainsynth.train.phases import PhaseLog, phase_swd
    from brainsynth.train.schedule import Schedule

    view = load_dataset(dataset, fold=fold)
    logs = {}
    for split in ("train", "test"):
        idx = view.indices(split)
        images = torch.from_numpy(np.ascontiguousarray(view.images[idx])).unsqueeze(1)  # [N, 1, S, S] uint8
        logs[split] = PhaseLog(Path("."), Schedule(images.shape[-1]), images, torch.zeros(len(idx), dtype=torch.long),
                               torch.tensor([1.0]), swd_images=0, z_dim=1, seed=seed, enabled=False)
    floors = {}
    for r in records:
        key = f"{r['res']}@{r['alpha']}"
        if key not in floors:
            n = r["swd_images"] or 256
            test = logs["test"].real_images(r["res"], r["alpha"])
            pick = np.random.default_rng(seed).choice(len(test), min(n, len(test)), replace=False)
            floors[key] = phase_swd(logs["train"].real_images(r["res"], r["alpha"]), test[np.sort(pick)], r["res"])["avg"]
    return floors


def header(record: dict, floor: float | None) -> str:
    text = f"phase {record['phase']}: {record['kind']} {record['res']} px, {record['images_shown']:,} images"
    if record.get("swd"):
        text += f", SWD {record['swd']['avg']:.0f}"
        if floor is not None:
            text += f" (real {floor:.0f})"
    return text


def figure(run: Path, records: list[dict], floors: dict[str, float], scale: float) -> "Image.Image":  # noqa: F821
    from PIL import Image, ImageDraw

    blocks = []
    for r in records:
        rows = grid_rows(run / r["grid"])
        body = np.concatenate([rows[FAKE_ROW], np.full((GAP_PX, rows[0].shape[1]), 64, np.uint8), rows[REAL_ROW]])
        body = np.asarray(Image.fromarray(body[:, LABEL_MARGIN_PX:]).resize(
            (max(1, int((body.shape[1] - LABEL_MARGIN_PX) * scale)), max(1, int(body.shape[0] * scale))),
            Image.NEAREST))
        canvas = Image.new("L", (body.shape[1], body.shape[0] + HEADER_PX), 0)
        canvas.paste(Image.fromarray(body), (0, HEADER_PX))
        ImageDraw.Draw(canvas).text((2, 1), header(r, floors.get(f"{r['res']}@{r['alpha']}")), fill=255)
        blocks.append(np.asarray(canvas))
    width = max(b.shape[1] for b in blocks)
    stacked = np.concatenate([np.pad(b, ((0, 4), (0, width - b.shape[1])), constant_values=96) for b in blocks])
    return Image.fromarray(stacked)


def table(records: list[dict], floors: dict[str, float]) -> str:
    lines = ["| phase | kind | res | images at its end | steps | SWD (x1e3) | real floor |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for r in records:
        swd = f"{r['swd']['avg']:.1f}" if r.get("swd") else ""
        floor = floors.get(f"{r['res']}@{r['alpha']}")
        lines.append(f"| {r['phase']} | {r['kind']} | {r['res']} | {r['images_shown']:,} | {r['step']:,} | {swd} | "
                     + (f"{floor:.1f} |" if floor is not None else " |"))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a PGGAN run folder (brainsynth train --model pggan)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--dataset", type=Path, help="its prepared DATASET: add the real test slices' SWD per phase")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--scale", type=float, default=0.5, help="display scale of the grids' cells")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    records = read_phases(args.run)
    if not records:
        raise SystemExit(f"{args.run}: no phases.jsonl records (a PGGAN run writes one per finished growth phase)")
    floors = real_floors(args.dataset, args.fold, records) if args.dataset else {}
    image = figure(args.run, records, floors, args.scale)
    with atomic_output_path(args.out) as tmp:
        image.save(tmp, format="PNG")
    rows = [{**r, "real_floor": floors.get(f"{r['res']}@{r['alpha']}")} for r in records]
    print(json.dumps(rows, indent=1) if args.json else table(records, floors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
