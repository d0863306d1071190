"""Wall time of the privacy audit's maths: N synthetic images against every training slice.

The synthetic stand-ins are held-out real slices re-acquired by random transforms (as a generator
that copies nothing would produce new but realistic slices), at the dataset's size or upsampled
to a larger one (``--sizes 64,256``: the aligned distance is computed at ``audit.work_size`` px
whatever the input size, so only the blur and the reduction grow with it). Features come from a
fixed random projection: feature extraction is the extractor's cost (``benchmarks/evaluate_speed.py``),
not the audit's.

    PYTHONPATH=src python benchmarks/audit_speed.py DATASET --n 2000 --sizes 64,256 --threads 1,2 [--json]

Prints one line per (size, threads): wall and CPU seconds, and the wall seconds of each stage (the
four matches, then the rest). On a shared machine the CPU seconds of a 1-thread run are the better
estimate of the wall time on a quiet core. ``--json`` prints the same figures as one JSON object
(the lines go to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    """Wraps registration.prepare and the audit's search (privacy.fold.match): each match's queries and
    references, and its wall time."""

    def __init__(self, images: dict[str, np.ndarray]):
        self.images = images  # name (synth, holdout, train) -> the array handed to the audit
        self.prepared: list[tuple[object, str]] = []  # (Prepared, name of its images)
        self.calls: list[dict] = []
        self.pairs = 0
        self.inner_prepare, self.inner_match = reg.prepare, privacy.match

    def __enter__(self) -> "Timed":
        reg.prepare, privacy.match = self.prepare, self.match
        return self

    def __exit__(self, *exc) -> None:
        reg.prepare, privacy.match = self.inner_prepare, self.inner_match

    def prepare(self, images, *args, **kwargs):
        out = self.inner_prepare(images, *args, **kwargs)
        self.prepared += [(out, name) for name, x in self.images.items() if x is images]
        return out

    def match(self, queries, refs, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner_match(queries, refs, *args, **kwargs)
        # Named by the images matched, not by the call order, which is the audit's to change.
        self.calls.append({"match": f"{self._name(queries)}-{self._name(refs)}", "queries": len(queries),
                           "references": len(refs), "wall_s": round(time.perf_counter() - t0, 3)})
        self.pairs += len(out.pairs)
        return out

    def _name(self, prepared) -> str:
        return next((name for p, name in self.prepared if p is prepared), "?")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--n", type=int, default=2000, help="synthetic images")
    parser.add_argument("--sizes", default="64", help="image sides to time, comma-separated")
    parser.add_argument("--threads", default="1,2", help="torch CPU threads, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object (the lines go to stderr)")
    args = parser.parse_args(argv)
    text = sys.stderr if args.json else sys.stdout

    ds = load_dataset(args.dataset)
    tr, te = ds.indices("train"), ds.indices("test")
    train0, hold0 = ds.float_images(tr), ds.float_images(te)
    synth0 = stand_ins(hold0, args.n, args.seed)
    labels = ds.table["label"].to_numpy()[te].astype(str)
    result = {"dataset": str(args.dataset), "load_avg_1min": round(os.getloadavg()[0], 2), "cpus": os.cpu_count(),
              "train_images": len(train0), "holdout_images": len(hold0), "synthetic_images": len(synth0),
              "image_size": int(train0.shape[-1]), "rows": []}
    print(f"load: {result['load_avg_1min']:.2f} (1-min average) on {os.cpu_count()} CPUs; {len(train0)} training, "
          f"{len(hold0)} held-out, {len(synth0)} synthetic images", file=text)
    for size in [int(s) for s in args.sizes.split(",")]:
        train, hold, synth = upsample(train0, size), upsample(hold0, size), upsample(synth0, size)
        proj = np.random.default_rng(0).normal(size=(size * size, 64)).astype(np.float32)

        def feats(x: np.ndarray) -> np.ndarray:
            return np.maximum(x.reshape(len(x), -1) @ proj, 0.0)

        f_train, f_hold, f_synth = feats(train), feats(hold), feats(synth)
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            with Timed({"synth": synth, "holdout": hold, "train": train}) as timer:
                t0, c0 = time.perf_counter(), time.process_time()
                audit = privacy.audit_fold(train, hold, synth, train_features=f_train, holdout_features=f_hold,
                                           synth_features=f_synth, train_ids=image_ids(ds, tr),
                                           holdout_ids=image_ids(ds, te), holdout_labels=labels, cfg=AuditConfig())
                total, cpu = time.perf_counter() - t0, time.process_time() - c0
            matched = sum(c["wall_s"] for c in timer.calls)
            row = {"size": size, "threads": threads, "wall_s": round(total, 3), "cpu_s": round(cpu, 3),
                   "matches": timer.calls, "rest_s": round(total - matched, 3), "candidate_pairs": timer.pairs,
                   "flagged": int(audit.flagged.sum()), "load_avg_1min_after": round(os.getloadavg()[0], 2)}
            result["rows"].append(row)
            stages = ", ".join(f"{c['match']} {c['wall_s']:.1f}" for c in timer.calls)
            print(f"{size} px, {threads} thread(s): {total:.1f} s wall, {cpu:.1f} s CPU (match: {stages}; rest "
                  f"{row['rest_s']:.1f}; {timer.pairs} candidate pairs); load now {row['load_avg_1min_after']:.2f}; "
                  f"{row['flagged']} of {len(synth)} flagged", file=text, flush=True)
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
