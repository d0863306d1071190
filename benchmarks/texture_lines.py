"""Grid texture of generated slices: how much of their fine detail is horizontal and vertical lines.

The demo PGGAN's 64 px images showed a grid of lines inside the brain (docs/training.md, "The
remaining gap at 64 px"). This script puts a number on it for image sets and for run checkpoints,
beside the real training slices of a fold:

- ``line_share``: the share of an image's high-pass residual (the image minus its 3x3 box blur,
  inside the brain: pixels > 0.15) that lies in full-width rows and full-height columns, averaged
  over images. A grid of lines gives nearly 1, a texture without lines about 2 / size.
- ``fixed_pattern_share``: the energy of the MEAN residual over the images against the mean energy
  of one image's residual. A texture at the same place in every image keeps its energy in the mean;
  independent textures average out (about 1 / N). Images that all look alike raise it too.
- ``hp_rms``: the residual's root mean square (fine detail of any kind).

Usage (from the repository root, the project's venv)::

    python benchmarks/texture_lines.py DATASET --fold 0 SOURCE...

SOURCE is an image set folder (``brainsynth generate``'s layout) or ``ckpt:RUN_DIR[@IMAGES][:G]``,
a run's checkpoint (the latest, or the one at IMAGES images shown) sampled from its G_ema (``:G``:
its raw G) with ``--images`` images, alternating labels, seeds 0..N-1. Prints a Markdown table
(``--json``: the rows as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

BRAIN_LEVEL = 0.15  # pixels brighter than this (in [0, 1]) are inside the brain


def highpass(images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` images minus their 3x3 box blur (edges replicated)."""
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = images.shape[1:]
    blur = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9.0
    return images - blur


def texture_stats(images: np.ndarray) -> dict[str, float]:
    """line_share, fixed_pattern_share and hp_rms of ``[N, H, W]`` images in [0, 1]."""
    images = np.asarray(images, dtype=np.float64)
    residual = highpass(images)
    inside = residual * (images > BRAIN_LEVEL)
    h, w = images.shape[1:]
    # Energy of each row's mean (x its length) plus each column's: the part that is full lines.
    lines = (inside.mean(axis=2) ** 2).sum(axis=1) * w + (inside.mean(axis=1) ** 2).sum(axis=1) * h
    energy = (inside ** 2).sum(axis=(1, 2))
    per_image = (residual ** 2).sum(axis=(1, 2)).mean()
    return {"line_share": float(lines.mean() / max(energy.mean(), 1e-12)),
            "fixed_pattern_share": float((residual.mean(axis=0) ** 2).sum() / max(per_image, 1e-12)),
            "hp_rms": float(np.sqrt((residual ** 2).mean()))}


def checkpoint_images(source: str, n: int) -> tuple[str, np.ndarray]:
    """Images of ``RUN_DIR[@IMAGES][:G]``'s checkpoint, and the row's name."""
    import torch

    from brainsynth.config import train_config_from_dict
    from brainsynth.generate import sample_images
    from brainsynth.models import build_models, network_kwargs
    from brainsynth.train import checkpoint as ckpt

    net = "G_ema"
    if source.endswith(":G"):
        source, net = source[:-2], "G"
    run, _, at = source.partition("@")
    path = ckpt.latest_checkpoint(Path(run)) if not at else Path(run) / ckpt.CHECKPOINT_DIR / ckpt.checkpoint_name(int(at))
    state = ckpt.load_checkpoint(path)
    cfg = train_config_from_dict(state["config"])
    G, _ = build_models(cfg.model, **network_kwargs(cfg))
    G.load_state_dict(state[net])
    G.eval().requires_grad_(False)
    progress = state["progress"]
    with torch.no_grad():
        images = sample_images(G, [i % 2 for i in range(n)], list(range(n)), progress["resolution"], progress["alpha"],
                               cfg.z_dim)
    return f"{Path(run).name}@{progress['images_shown']}:{net}", np.asarray(images)


def real_images(dataset: Path, fold: int, limit: int) -> np.ndarray:
    from brainsynth.data.dataset import load_dataset

    view = load_dataset(dataset, fold=fold)
    return np.asarray(view.images[view.indices("train")[:limit]], dtype=np.float64) / 255.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path, help="prepared DATASET (the real training slices of --fold)")
    p.add_argument("sources", nargs="*", help="image set folders or ckpt:RUN_DIR[@IMAGES][:G]")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--images", type=int, default=400, help="images per checkpoint, and real slices at most")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from brainsynth.imageset import read_image_set

    rows = [{"source": "real training slices", **texture_stats(real_images(args.dataset, args.fold, args.images))}]
    for source in args.sources:
        if source.startswith("ckpt:"):
            name, images = checkpoint_images(source[len("ckpt:"):], args.images)
        else:
            name, images = source, read_image_set(source).images
        rows.append({"source": name, **texture_stats(images)})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| images | line share | fixed-pattern share | high-pass RMS |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['source']} | {r['line_share']:.3f} | {r['fixed_pattern_share']:.3f} | {r['hp_rms']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
