"""How much of the exhaustive search's result the privacy audit's prefilter keeps (``audit.prefilter``).

The audit aligns each image with a few candidate training slices. ``prefilter: 0`` ranks EVERY
training slice by the coarse grid (50 transforms); ``prefilter: P`` ranks each image's P best
slices by a 2-transform thumbnail score first, and the grid only on those (docs/privacy.md,
"Where the search is approximate"). For each ``--prefilter`` value, fold 0 of DATASET is audited
(calibration on held-out half A and the training subjects, exactly as ``brainsynth evaluate``)
against:

- ``selftest``: the planted copies of ``brainsynth audit --selftest`` (``audit.selftest_copies``
  per transform family, re-acquired training slices) among the held-out half-B images;
- each ``--synthetic NAME=DIR`` image set (a generator's output).

Against the first value (the reference, 0 = exhaustive by default) it reports: the share of the
reference's flags kept and the flags added, the half-B false-flag rate, the planted families'
detection, the share of images whose nearest training slice (pixel space) and aligned distance
are unchanged, the membership AUC, and the audit's wall and CPU seconds. Features come from the
preset's extractor (``--projection``: a fixed random projection, for the test), computed once.

    PYTHONPATH=src .venv/bin/python benchmarks/prefilter_recall.py DATASET --synthetic dcgan=DIR \\
        --prefilter 0 16 32 64 --threads 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def _features(images: dict[str, np.ndarray], config: str, projection: bool) -> dict[str, np.ndarray]:
    if projection:
        side = next(iter(images.values())).shape[-1]
        matrix = np.random.default_rng(0).normal(size=(side * side, 64)).astype(np.float32)
        return {k: np.maximum(v.reshape(len(v), -1) @ matrix, 0.0) for k, v in images.items()}
    from brainsynth.config import load_config
    from brainsynth.evaluate.feature_cache import FeatureStore
    from brainsynth.evaluate.features import get_extractor

    store = FeatureStore(get_extractor(load_config(config, []).evaluate, device="cpu"))
    return {k: store.images(v, what=k) for k, v in images.items()}


def _audit(real: dict, synth: np.ndarray, feats: np.ndarray, real_f: dict, cfg, membership: bool):
    from brainsynth.evaluate.privacy.fold import audit_fold

    t0, c0 = time.perf_counter(), time.process_time()
    result = audit_fold(real["train_images"], real["holdout_images"], synth, train_features=real_f["train"],
                        holdout_features=real_f["holdout"], synth_features=feats, train_ids=real["train_ids"],
                        holdout_ids=real["holdout_ids"], holdout_labels=real["holdout_labels"], cfg=cfg,
                        membership=membership)
    return result, time.perf_counter() - t0, time.process_time() - c0


def compare(result, reference, families: np.ndarray | None) -> dict:
    """The numbers of one audit beside those of the reference audit."""
    flags, ref_flags = result.flagged, reference.flagged
    pix, ref_pix = result.spaces["pixel"].synth, reference.spaces["pixel"].synth
    half_b = result.half_b
    out = {
        "images": int(len(flags)),
        "flagged": int(flags.sum()),
        "reference_flagged": int(ref_flags.sum()),
        "kept": None if not ref_flags.any() else float((flags & ref_flags).sum() / ref_flags.sum()),
        "added": int((flags & ~ref_flags).sum()),
        "false_flags": float(result.holdout_flagged[half_b].mean()),
        "reference_false_flags": float(reference.holdout_flagged[half_b].mean()),
        "holdout_flags_kept": None if not reference.holdout_flagged.any() else float(
            (result.holdout_flagged & reference.holdout_flagged).sum() / reference.holdout_flagged.sum()),
        "same_nearest": float(np.mean(pix.index == ref_pix.index)),
        "same_distance": float(np.mean(np.isclose(pix.distance, ref_pix.distance, rtol=1e-5, atol=1e-6))),
        "larger_distance": float(np.mean(pix.distance > ref_pix.distance * (1 + 1e-5) + 1e-6)),
    }
    if result.attacks:
        out["mia_auc"] = result.attacks["pixel/slice"].auc
        out["reference_mia_auc"] = reference.attacks["pixel/slice"].auc
    if families is not None:
        planted = np.isin(np.arange(len(flags)), np.flatnonzero(families != ""))
        out["detection"] = {f: float(flags[families == f].mean()) for f in np.unique(families[planted])}
        out["reference_detection"] = {f: float(ref_flags[families == f].mean()) for f in np.unique(families[planted])}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", type=Path, help="prepared DATASET (fold 0 is audited)")
    p.add_argument("--synthetic", action="append", default=[], metavar="NAME=DIR", help="image set to audit")
    p.add_argument("--prefilter", type=int, nargs="+", default=[0, 16, 32, 64],
                   help="audit.prefilter values; the first is the reference (default: 0, exhaustive)")
    p.add_argument("--config", default="demo", help="preset or YAML (audit section and feature extractor)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--projection", action="store_true", help="random-projection features instead of the extractor")
    p.add_argument("--json", action="store_true", help="print the JSON object only")
    ns = p.parse_args(argv)

    import dataclasses

    import torch

    from brainsynth.config import load_config
    from brainsynth.data.dataset import load_dataset
    from brainsynth.evaluate.audit_command import real_split
    from brainsynth.evaluate.privacy.calibration import split_holdout, subject_of
    from brainsynth.evaluate.privacy.selftest import plant_copies
    from brainsynth.imageset import read_image_set
    from brainsynth.timing import machine_busy_seconds

    torch.set_num_threads(ns.threads)
    config = load_config(ns.config, [(k, v, "--set") for k, v in (s.split("=", 1) for s in ns.set)])
    base = config.audit
    real = real_split(load_dataset(ns.dataset).fold(0))
    half_a = split_holdout([subject_of(i) for i in real["holdout_ids"]], real["holdout_labels"], base.seed)
    planted, families, _ = plant_copies(real["train_images"], base)
    cases = {"selftest": np.concatenate([planted, real["holdout_images"][~half_a]])}
    labels = {"selftest": np.r_[families, np.full(int((~half_a).sum()), "")]}
    for entry in ns.synthetic:
        name, _, path = entry.partition("=")
        cases[name] = read_image_set(path).images
    feats = _features({"train": real["train_images"], "holdout": real["holdout_images"], **cases}, ns.config,
                      ns.projection)
    busy0, t0 = machine_busy_seconds(), time.perf_counter()
    runs, reference = [], {}
    cpu_total = 0.0
    for prefilter in ns.prefilter:
        cfg = dataclasses.replace(base, prefilter=prefilter)
        for name, images in cases.items():
            result, wall, cpu = _audit(real, images, feats[name], feats, cfg, membership=name != "selftest")
            cpu_total += cpu
            reference.setdefault(name, result)
            row = {"prefilter": prefilter, "case": name, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                   **compare(result, reference[name], labels.get(name))}
            runs.append(row)
            if not ns.json:
                kept = "n/a" if row["kept"] is None else f"{100 * row['kept']:.1f}%"
                print(f"prefilter {prefilter:>3} {name:>10}: {row['flagged']} flagged (reference {row['reference_flagged']}, "
                      f"kept {kept}, +{row['added']}), false flags {100 * row['false_flags']:.2f}% "
                      f"(reference {100 * row['reference_false_flags']:.2f}%), same nearest "
                      f"{100 * row['same_nearest']:.1f}%, {row['wall_s']} s", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    others = (machine_busy_seconds() - busy0 - cpu_total) / max(wall * (os.cpu_count() or 1), 1e-9)
    out = {"dataset": str(ns.dataset), "n_train": int(len(real["train_images"])),
           "n_holdout": int(len(real["holdout_images"])), "threads": ns.threads,
           "load_avg_1min": round(os.getloadavg()[0], 2), "others_cpu_share": round(min(max(others, 0.0), 1.0), 3),
           "runs": runs}
    print(json.dumps(out, indent=None if ns.json else 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
