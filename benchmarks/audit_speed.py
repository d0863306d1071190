"""Wall time of the privacy audit's maths: N synthetic images against every training slice.

The synthetic stand-ins are held-out real slices re-acquired by random transforms (as a generator
that copies nothing would produce new but realistic slices), at the dataset's size or upsampled
to a larger one (``--sizes 64,256``: the aligned distance is computed at ``audit.work_size`` px
whatever the input size, so only the blur and the reduction grow with it). Features come from a
fixed random projection: feature extraction is the extractor's cost (``benchmarks/evaluate_speed.py``),
not the audit's.

    PYTHONPATH=src python benchmarks/audit_speed.py DATASET --n 2000 --sizes 64,256 --threads 1,2

Prints one line per (size, threads): wall and CPU seconds, and the wall seconds of each stage (the
four matches, then the rest). On a shared machine the CPU seconds of a 1-thread run are the better
estimate of the wall time on a quiet core.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from brainsynth.config import AuditConfig
from brainsynth.data.dataset import load_dataset
from brainsynth.evaluate.privacy import fold as privacy
from brainsynth.evaluate.privacy import registration as reg
from brainsynth.evaluate.folds import image_ids
from brainsynth.evaluate.privacy.planting import apply_plant, draw_plant


def stand_ins(holdout: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` held-out slices, each re-acquired by a random transform of the ``combined`` family."""
    rng = np.random.default_rng(seed)
    family, side = reg.Family(), holdout.shape[-1]
    picks = rng.integers(0, len(holdout), n)
    return np.stack([apply_plant(holdout[j], draw_plant("combined", rng, family, side), rng) for j in picks])


def upsample(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return images
    x = F.interpolate(torch.from_numpy(images)[:, None], size=(size, size), mode="bicubic", align_corners=False)
    return x[:, 0].clamp(0, 1).numpy()


class Timed:
    """Wraps the audit's search (privacy.fold.match) to add up its wall time per call."""

    def __init__(self):
        self.calls: list[float] = []
        self.pairs = 0
        self.inner = privacy.match

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.calls.append(time.perf_counter() - t0)
        self.pairs += len(out.pairs)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--n", type=int, default=2000, help="synthetic images")
    parser.add_argument("--sizes", default="64", help="image sides to time, comma-separated")
    parser.add_argument("--threads", default="1,2", help="torch CPU threads, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    ds = load_dataset(args.dataset)
    tr, te = ds.indices("train"), ds.indices("test")
    train0, hold0 = ds.float_images(tr), ds.float_images(te)
    synth0 = stand_ins(hold0, args.n, args.seed)
    labels = ds.table["label"].to_numpy()[te].astype(str)
    print(f"load: {os.getloadavg()[0]:.2f} (1-min average) on {os.cpu_count()} CPUs; {len(train0)} training, "
          f"{len(hold0)} held-out, {len(synth0)} synthetic images")
    for size in [int(s) for s in args.sizes.split(",")]:
        train, hold, synth = upsample(train0, size), upsample(hold0, size), upsample(synth0, size)
        proj = np.random.default_rng(0).normal(size=(size * size, 64)).astype(np.float32)

        def feats(x: np.ndarray) -> np.ndarray:
            return np.maximum(x.reshape(len(x), -1) @ proj, 0.0)

        f_train, f_hold, f_synth = feats(train), feats(hold), feats(synth)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            timer = Timed()
            privacy.match = timer
            try:
                t0, c0 = time.perf_counter(), time.process_time()
                result = privacy.audit_fold(train, hold, synth, train_features=f_train, holdout_features=f_hold,
                                            synth_features=f_synth, train_ids=image_ids(ds, tr),
                                            holdout_ids=image_ids(ds, te), holdout_labels=labels, cfg=AuditConfig())
                total, cpu = time.perf_counter() - t0, time.process_time() - c0
            finally:
                privacy.match = timer.inner
            names = ["holdout-train", "train-train", "synth-train", "synth-holdout"]
            stages = ", ".join(f"{n} {t:.1f}" for n, t in zip(names, timer.calls))
            print(f"{size} px, {threads} thread(s): {total:.1f} s wall, {cpu:.1f} s CPU (match: {stages}; rest "
                  f"{total - sum(timer.calls):.1f}; {timer.pairs} candidate pairs); load now {os.getloadavg()[0]:.2f}; "
                  f"{int(result.flagged.sum())} of {len(synth)} flagged", flush=True)


if __name__ == "__main__":
    main()
