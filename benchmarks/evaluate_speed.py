"""How long ``brainsynth evaluate`` takes, and how fast VGG-16 features are on this machine.

Two measurements:

``--throughput``
    images per second of feature extraction (fc7) at several input sizes, fp32 and bf16,
    measured side by side in one process (median of ``--repeats`` timed passes after a warm-up).
default
    ``evaluate()`` end to end: a real DATASET (``--dataset``, or a synthesised 12-subject,
    91-slice, 64 px stand-in) against ``--n-synthetic`` synthetic images, with wall time per
    stage. The target is under 3 minutes on 2 CPU cores at 64 px.

    python benchmarks/evaluate_speed.py --throughput
    python benchmarks/evaluate_speed.py --input-size 64 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter

from brainsynth import LABELS
from brainsynth.config import EvaluateConfig
from brainsynth.evaluate import evaluate
from brainsynth.evaluate.features import get_extractor
from brainsynth.imageset import write_image_set

SLICES_PER_SUBJECT = 91  # the paper's slices #30..#120


def structured_images(label: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, size, size]: an elliptic "brain" with smooth texture; ADHD a little smaller."""
    yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2) / (size / 2)
    scale = 0.78 if label == "adhd" else 0.82
    brain = ((yy / 0.9) ** 2 + (xx / 0.75) ** 2 < scale**2).astype(np.float64)
    texture = gaussian_filter(rng.random((n, size, size)), sigma=(0, 2, 2))
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return np.clip(255 * brain * (0.4 + 0.6 * texture), 0, 255).astype(np.uint8)


def write_standin_dataset(root: Path, size: int, subjects: int = 12, seed: int = 0) -> Path:
    """A DATASET folder shaped like the paper's cohort (12 subjects x 91 slices)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    images, rows = [], []
    for s in range(subjects):
        label = LABELS[s % 2]
        split = "test" if s >= subjects - subjects // 3 else "train"
        images.append(structured_images(label, SLICES_PER_SUBJECT, size, rng))
        rows += [{"subject": f"sub-{s:02d}", "label": label, "split": split, "slice": 30 + k, "patch": 0}
                 for k in range(SLICES_PER_SUBJECT)]
    table = pd.DataFrame(rows)
    table.insert(0, "index", np.arange(len(table)))
    np.save(root / "images.npy", np.concatenate(images))
    table.to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True, "note": "benchmark stand-in"}))
    return root


def write_standin_synthetic(root: Path, n: int, size: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    per = {lbl: n // 2 for lbl in LABELS}
    images = np.concatenate([structured_images(lbl, k, size, rng) for lbl, k in per.items()])
    records = [{"label": lbl, "seed": i} for lbl, k in per.items() for i in range(k)]
    return write_image_set(root, images, records, synthetic=True, fmt="npz",
                           extra_meta={"generator": {"model": "benchmark stand-in"}})


def throughput(sizes: list[int], precisions: list[str], n: int, repeats: int, batch_size: int) -> None:
    """Print fc7 extraction images/s per (input size, precision)."""
    images = np.random.default_rng(0).random((n, 64, 64)).astype(np.float32)
    print(f"{'input px':>8} {'precision':>9} {'img/s':>8}   (fc7, {n} images x {repeats}, median)")
    for size in sizes:
        for precision in precisions:
            ext = get_extractor(EvaluateConfig(features="vgg16-random", input_size=size, precision=precision),
                                device="cpu", batch_size=batch_size)
            ext.extract(images[:batch_size])  # warm-up: kernel selection, first-touch memory
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                ext.extract(images)
                times.append(time.perf_counter() - t0)
            print(f"{size:>8} {precision:>9} {n / statistics.median(times):>8.1f}", flush=True)


def end_to_end(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="brainsynth-bench-") as tmp:
        tmp = Path(tmp)
        dataset = Path(args.dataset) if args.dataset else write_standin_dataset(tmp / "dataset", args.size)
        size = int(np.load(dataset / "images.npy", mmap_mode="r").shape[-1])
        synth = write_standin_synthetic(tmp / "synthetic", args.n_synthetic, size)
        t0 = time.perf_counter()
        cfg = EvaluateConfig(features="vgg16-random", input_size=args.input_size, precision=args.precision,
                             bootstrap=args.bootstrap, seed=0)
        report = evaluate(dataset, {"standin": str(synth)}, tmp / "report", cfg)
        wall = time.perf_counter() - t0
    real = report.data.real
    print(f"\nevaluate: {real.n_train + real.n_test} real + {args.n_synthetic} synthetic images at "
          f"{size} px, features at {args.input_size} px {args.precision}: {wall:.1f} s wall")
    for key, value in report.timings.to_dict().items():
        print(f"  {key:<36} {value:>8.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="a prepared DATASET (default: a synthesised 12 x 91-slice stand-in)")
    p.add_argument("--size", type=int, default=64, help="image size of the stand-in dataset")
    p.add_argument("--n-synthetic", type=int, default=2000)
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--throughput", action="store_true", help="measure feature extraction img/s only")
    p.add_argument("--sizes", default="64,112,224")
    p.add_argument("--n", type=int, default=64, help="images per timed pass (--throughput)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.throughput:
        throughput([int(s) for s in args.sizes.split(",")], ["fp32", "bf16"], args.n, args.repeats, args.batch_size)
    else:
        end_to_end(args)


if __name__ == "__main__":
    main()
