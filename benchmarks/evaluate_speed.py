"""How long ``brainsynth evaluate`` takes, and how close VGG-16 feature extraction gets to the CPU's peak.

Two measurements, each printed as one JSON object on stdout (``--throughput`` also writes each row
to stderr as it is measured):

default: ``evaluate()`` end to end
    A real DATASET (``--dataset``, or a synthesised 12-subject x 91-slice stand-in of ``--size`` px,
    about 1,100 images, the paper's cohort shape; ``--subjects`` and ``--slices`` change it)
    against ``--n-synthetic`` synthetic images split over ``--sets`` sets (default 2 x 1,000, as
    the demo's PGGAN and DCGAN). Reports the wall time per stage, the features' img/s, GFLOP/img
    and GFLOP/s, and the share of the bf16 (or fp32) 3x3-convolution peak measured in the same run.
    ``--feature-cache DIR`` runs it a second time against the same cache and reports that run's
    stages too::

        python benchmarks/evaluate_speed.py --input-size 224 --precision bf16   # the paper's protocol
        python benchmarks/evaluate_speed.py --input-size 64 --precision bf16    # the demo

``--throughput``
    Feature extraction alone: img/s (median of ``--repeats``) per input size, precision and
    batch size (``0`` = the automatic, cache-sized batch), GFLOP/img counted by
    ``torch.utils.flop_counter``, achieved GFLOP/s and the share of the peak at the same
    precision, measured in the same process between the timed passes. ``--variants`` also times
    conv and ReLU as separate calls (``unfused``), ``torch.compile`` of the conv stack
    (``compile``) and a frozen TorchScript graph with oneDNN fusion (``jit``)::

        python benchmarks/evaluate_speed.py --throughput --sizes 64,224 --precisions bf16,fp32

The machine is shared: every result records the 1-minute load average and, per timed pass, the
share of all CPUs that OTHER processes used (``others_cpu_share``; trust a figure when it is ~0).
Figures and their commands are in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import gaussian_filter
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from brainsynth import LABELS
from brainsynth.config import EvaluateConfig
from brainsynth.evaluate import evaluate
from brainsynth.evaluate.features import Extractor, get_extractor
from brainsynth.evaluate.vgg16 import VGG16
from brainsynth.imageset import write_image_set
from brainsynth.timing import machine_busy_seconds

SLICES_PER_SUBJECT = 91  # the paper's slices #30..#120
PEAK_SHAPE = dict(batch=32, channels=256, size=32)  # the same "large convolution" as train_throughput.py


# --- stand-in data ------------------------------------------------------------------------------

def structured_images(label: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [n, size, size]: an elliptic "brain" with smooth texture; ADHD a little smaller."""
    yy, xx = (np.mgrid[:size, :size] - (size - 1) / 2) / (size / 2)
    scale = 0.78 if label == "adhd" else 0.82
    brain = ((yy / 0.9) ** 2 + (xx / 0.75) ** 2 < scale**2).astype(np.float64)
    texture = gaussian_filter(rng.random((n, size, size)), sigma=(0, 2, 2))
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return np.clip(255 * brain * (0.4 + 0.6 * texture), 0, 255).astype(np.uint8)


def write_standin_dataset(root: Path, size: int, subjects: int = 12, seed: int = 0,
                          slices: int = SLICES_PER_SUBJECT) -> Path:
    """A DATASET folder shaped like the paper's cohort (12 subjects x 91 slices, 4 held out)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    images, rows = [], []
    for s in range(subjects):
        label = LABELS[s % 2]
        split = "test" if s >= subjects - subjects // 3 else "train"
        images.append(structured_images(label, slices, size, rng))
        rows += [{"subject": f"sub-{s:02d}", "label": label, "split": split, "slice": 30 + k, "patch": 0}
                 for k in range(slices)]
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


# --- load and peak --------------------------------------------------------------------------------



class Timed:
    """Wall time of a block and the share of all CPUs that other processes used meanwhile."""

    def __enter__(self) -> "Timed":
        self.busy0, self.own0, self.t0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.own0
        others = (machine_busy_seconds() - self.busy0) - self.cpu
        self.others = max(0.0, others) / (self.wall * (os.cpu_count() or 1))


def peak_gflops(precision: str, repeats: int = 3) -> tuple[float, float]:
    """GFLOP/s of a 256-channel 3x3 convolution (batch 32, 32x32, channels_last, forward).

    Returns (per wall second, per CPU second of this process); on a busy machine the second is
    the steadier figure with ``--threads 1``.
    """
    b, c, s = PEAK_SHAPE["batch"], PEAK_SHAPE["channels"], PEAK_SHAPE["size"]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    x = torch.randn(b, c, s, s, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
    flops = 2 * b * c * c * 9 * s * s
    with torch.inference_mode():
        for _ in range(2):
            torch.nn.functional.conv2d(x, w, padding=1)
        walls, cpus = [], []
        for _ in range(max(3, repeats)):
            with Timed() as t:
                for _ in range(3):
                    torch.nn.functional.conv2d(x, w, padding=1)
            walls.append(t.wall / 3)
            cpus.append(t.cpu / 3)
    return flops / statistics.median(walls) / 1e9, flops / statistics.median(cpus) / 1e9


def gflop_per_image(ext: Extractor, image_size: int) -> float:
    """Convolution + matmul GFLOP of one image through ``ext`` (after a warm-up call)."""
    one = np.zeros((1, image_size, image_size), dtype=np.float32)
    ext.extract(one)  # builds the folded fc6 once; that is not per-image work
    fuse, ext.fuse = ext.fuse, False  # the counter sees aten convolutions, not oneDNN's fused call
    try:
        with FlopCounterMode(display=False) as counter:
            ext.extract(one)
    finally:
        ext.fuse = fuse
    return counter.get_total_flops() / 1e9


# --- feature extraction alone ---------------------------------------------------------------------

def _variant(ext: Extractor, variant: str, example: np.ndarray) -> Extractor:
    """``ext`` with conv and ReLU unfused, or its conv stack compiled or frozen into a graph."""
    if variant == "eager":
        return ext
    ext.fuse = False  # the other variants run the plain conv stack (or their own fusion of it)
    if variant == "unfused":
        return ext
    x = ext._to_network_input(torch.from_numpy(example)).to(ext.dtype)  # [B, 3, S, S]
    if variant == "compile":
        features = torch.compile(ext.model.features)
    elif variant == "jit":
        torch.jit.enable_onednn_fusion(True)
        with torch.no_grad():
            features = torch.jit.freeze(torch.jit.trace(ext.model.features.eval(), x))
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    # A new VGG16 around the compiled stack: the fp32 random network is cached and shared.
    twin = VGG16.__new__(VGG16)
    nn.Module.__init__(twin)
    twin.features, twin.avgpool, twin.classifier = features, ext.model.avgpool, ext.model.classifier
    ext.model = twin
    return ext


def throughput(args: argparse.Namespace) -> dict:
    images = np.random.default_rng(0).random((args.n, args.size, args.size)).astype(np.float32)
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        for precision in args.precisions.split(","):
            for batch in [int(b) for b in args.batch_sizes.split(",")]:
                for variant in args.variants.split(","):
                    cfg = EvaluateConfig(features="vgg16-random", input_size=size, precision=precision)
                    ext = get_extractor(cfg, device="cpu", batch_size=batch or None)
                    gflop = gflop_per_image(ext, args.size)
                    with Timed() as setup:
                        ext = _variant(ext, variant, images[:ext.batch_size])
                        ext.extract(images[:ext.batch_size])  # warm-up: kernels, first-touch memory
                    rates, cpu_rates, others, peaks, cpu_peaks = [], [], [], [], []
                    for _ in range(args.repeats):
                        with Timed() as t:
                            ext.extract(images)
                        rates.append(args.n / t.wall)
                        cpu_rates.append(args.n / t.cpu)
                        others.append(round(t.others, 2))
                        peak, cpu_peak = peak_gflops(ext.precision)  # interleaved, so load hits both alike
                        peaks.append(peak)
                        cpu_peaks.append(cpu_peak)
                    img_s, peak = statistics.median(rates), statistics.median(peaks)
                    img_cpu_s, cpu_peak = statistics.median(cpu_rates), statistics.median(cpu_peaks)
                    rows.append({
                        "input_size": size, "precision": ext.precision, "batch": ext.batch_size,
                        "auto_batch": batch == 0, "variant": variant, "img_per_s": round(img_s, 1),
                        "gflop_per_img": round(gflop, 3), "achieved_gflops": round(img_s * gflop, 1),
                        "peak_gflops": round(peak, 1), "pct_of_peak": round(100 * img_s * gflop / peak, 1),
                        # Per CPU second of this process: steadier than wall time on a busy machine.
                        "img_per_cpu_s": round(img_cpu_s, 2),
                        "pct_of_peak_per_cpu_s": round(100 * img_cpu_s * gflop / cpu_peak, 1),
                        "setup_s": round(setup.wall, 1), "img_per_s_all": [round(r, 1) for r in rates],
                        "others_cpu_share": others,
                    })
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress; stdout: the result
    return {"mode": "throughput", "images": args.n, "image_size": args.size, "repeats": args.repeats,
            "rows": rows, **_machine()}


# --- evaluate end to end --------------------------------------------------------------------------

def end_to_end(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="brainsynth-bench-") as tmp:
        tmp = Path(tmp)
        dataset = Path(args.dataset) if args.dataset else write_standin_dataset(
            tmp / "dataset", args.size, subjects=args.subjects, slices=args.slices)
        size = int(np.load(dataset / "images.npy", mmap_mode="r").shape[-1])
        if args.synthetic:
            synthetic = dict(item.split("=", 1) for item in args.synthetic)
        else:
            per_set = args.n_synthetic // args.sets
            synthetic = {f"set{i}": str(write_standin_synthetic(tmp / f"synthetic{i}", per_set, size, seed=1 + i))
                         for i in range(args.sets)}
        cfg = EvaluateConfig(features="vgg16-random", input_size=args.input_size, precision=args.precision,
                             bootstrap=args.bootstrap, seed=0)
        runs = []
        for attempt in range(2 if args.feature_cache else 1):
            with Timed() as t:
                report = evaluate(dataset, synthetic, tmp / f"report{attempt}", cfg, feature_cache=args.feature_cache)
            runs.append((t, report))
        ext = get_extractor(cfg, device="cpu")
        gflop = gflop_per_image(ext, size)
        peak = statistics.median(peak_gflops(report.features.precision)[0] for _ in range(3))
    t, report = runs[0]
    real = report.data.real
    n_synthetic = sum(s.n_images for s in report.data.synthetic.values())
    n_images = real.n_images + n_synthetic  # every real image of the dataset is featurised, whatever the fold
    stages = report.timings.to_dict()
    img_s = n_images / stages["evaluate_features"]
    result = {
        "mode": "evaluate", "real_images": real.n_images, "synthetic_images": n_synthetic,
        "synthetic_sets": len(report.data.synthetic), "image_size": size, "input_size": args.input_size,
        "precision": report.features.precision, "batch": ext.batch_size, "wall_s": round(t.wall, 1),
        "cpu_s": round(t.cpu, 1),
        "stages_s": {k.removeprefix("evaluate_"): v for k, v in stages.items() if k != "other_stages"},
        "features_img_per_s": round(img_s, 1), "gflop_per_img": round(gflop, 3),
        "features_gflops": round(img_s * gflop, 1), "peak_gflops": round(peak, 1),
        "features_pct_of_peak": round(100 * img_s * gflop / peak, 1), "others_cpu_share": round(t.others, 2),
    }
    if len(runs) > 1:
        t2, report2 = runs[1]
        result["cached_rerun"] = {"wall_s": round(t2.wall, 1), "cpu_s": round(t2.cpu, 1),
                                  "others_cpu_share": round(t2.others, 2),
                                  "stages_s": {k.removeprefix("evaluate_"): v for k, v in
                                               report2.timings.to_dict().items() if k != "other_stages"}}
    return {**result, **_machine()}


def _machine() -> dict:
    return {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", help="a prepared DATASET (default: a synthesised 12 x 91-slice stand-in)")
    p.add_argument("--size", type=int, default=64, help="image size of the stand-in data (px)")
    p.add_argument("--subjects", type=int, default=12, help="subjects of the stand-in data (a third held out)")
    p.add_argument("--slices", type=int, default=SLICES_PER_SUBJECT, help="slices per subject of the stand-in data")
    p.add_argument("--n-synthetic", type=int, default=2000, help="synthetic images in all (split over --sets)")
    p.add_argument("--sets", type=int, default=2, help="synthetic sets (the demo: pggan and dcgan)")
    p.add_argument("--synthetic", action="append", metavar="NAME=DIR",
                   help="real synthetic image sets instead of stand-ins (repeatable; e.g. a demo run's)")
    p.add_argument("--input-size", type=int, default=224, help="extractor input (px); the paper's is 224")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples (the demo preset's 500)")
    p.add_argument("--feature-cache", metavar="DIR", help="run twice against this feature cache")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--throughput", action="store_true", help="feature extraction img/s and share of peak only")
    p.add_argument("--sizes", default="64,224", help="input sizes (--throughput)")
    p.add_argument("--precisions", default="bf16,fp32", help="(--throughput)")
    p.add_argument("--batch-sizes", default="0", help="images per pass, 0 = automatic (--throughput)")
    p.add_argument("--variants", default="eager", help="eager,unfused,compile,jit (--throughput)")
    p.add_argument("--n", type=int, default=128, help="images per timed pass (--throughput)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--log", action="store_true", help="show brainsynth's INFO log")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO if args.log else logging.WARNING,
                        format="%(asctime)s %(name)s: %(message)s")
    result = throughput(args) if args.throughput else end_to_end(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
