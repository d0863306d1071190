"""Privacy over training: audit every kept checkpoint of trained runs, and plot the trajectory.

For each run (one generator trained on one fold) and each checkpoint it kept at the dataset's
image size (the snapshots at a geometric series of images shown, ``RUN_DIR/snapshots/``, and the
rolling last ones), the synthetic set is sampled as ``brainsynth generate`` would
(``generate.images_per_label`` per class, the per-image seeds of ``generate.seed``) and measured
against the fold's real images:

* near-copies: the share flagged by the audit, beside the false-flag rate of held-out half B;
* membership: the headline AUC against all held-out subjects, and AUC and p-value against half B
  alone (what the report's membership rule reads) and against half A alone (with half A's flag
  rate: what ``generate.select=private-best`` reads);
* fidelity against the fold's training images: SWD (pixels) and precision / recall (features,
  k-NN balls over other subjects).

The fold's real side (matching, calibration) is built once and shared by every checkpoint.

    .venv/bin/python benchmarks/privacy_trajectory.py DEMO_OUT/dataset --fold 0 \\
        --run pggan=DEMO_OUT/r0/f0/runs/pggan --run dcgan=DEMO_OUT/r0/f0/runs/dcgan \\
        --config demo --out trajectory [--set generate.images_per_label=300] [--json]

Writes OUT/trajectory.json (one row per checkpoint) and OUT/trajectory.png (four panels against
images shown: near-copies, membership AUC on half B, SWD, precision and recall); ``--json`` prints
the object too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from brainsynth.config import load_config
from brainsynth.data.dataset import load_dataset
from brainsynth.devices import resolve_device
from brainsynth.evaluate import fidelity as fidelity_metrics
from brainsynth.evaluate.feature_cache import FeatureStore
from brainsynth.evaluate.folds import image_ids
from brainsynth.evaluate.image_fidelity import laplacian_pyramid, swd_many
from brainsynth.evaluate.privacy.fold import fold_reference
from brainsynth.evaluate.privacy.membership_rule import passes
from brainsynth.fsio import atomic_write_bytes, atomic_write_json
from brainsynth.selection import audit_checkpoint, final_checkpoints


def parse_runs(texts: Sequence[str]) -> dict[str, Path]:
    """``["pggan=DIR", ...]`` -> ``{"pggan": Path(DIR)}``."""
    runs = {}
    for text in texts:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--run {text!r}: expected NAME=RUN_DIR")
        runs[name] = Path(path)
    return runs


def trajectory(dataset: Path, runs: dict[str, Path], config, *, fold: int = 0, repeat: int = 0,
               store: FeatureStore | None = None, device: str | None = None) -> dict[str, Any]:
    """One row per (run, kept checkpoint at the final size): privacy and fidelity, with the settings used."""
    view = load_dataset(dataset, fold=fold, repeat=repeat)
    train_idx, test_idx = view.indices("train"), view.indices("test")
    train_images, test_images = view.float_images(train_idx), view.float_images(test_idx)
    if store is None:
        from brainsynth.evaluate.features import get_extractor

        store = FeatureStore(get_extractor(config.evaluate, device=device), None)
    real_f = store.dataset(view)  # [rows, D]
    train_f = real_f[train_idx]
    clock = time.perf_counter()
    reference = fold_reference(train_images, test_images, train_features=train_f, holdout_features=real_f[test_idx],
                               train_ids=image_ids(view, train_idx), holdout_ids=image_ids(view, test_idx),
                               holdout_labels=view.table["label"].to_numpy()[test_idx].astype(str), cfg=config.audit)
    seconds_reference = time.perf_counter() - clock
    train_subjects = view.table["subject"].to_numpy()[train_idx].astype(str)
    real_pyramid = laplacian_pyramid(train_images)
    rows, dev = [], resolve_device(device)
    for name, run_dir in runs.items():
        for path in final_checkpoints(run_dir, view.image_size):
            clock = time.perf_counter()
            audited = audit_checkpoint(path, config.generate, reference, store, dev)
            result = audited.result
            precision, recall = fidelity_metrics.precision_recall(train_f, audited.features,
                                                                  real_groups=train_subjects)
            swd = swd_many(real_pyramid, {"set": laplacian_pyramid(audited.images)}, seed=config.evaluate.seed)["set"]
            half_a, half_b = result.halves["a"], result.halves["b"]
            rows.append({
                "run": name, "checkpoint": audited.checkpoint, "images_shown": audited.images_shown,
                "near_copies": float(result.flagged.mean()),
                "false_flags_half_b": float(result.holdout_flagged[result.half_b].mean()),
                "mia_auc": result.attacks["pixel/slice"].auc,
                "mia_auc_half_b": half_b.auc, "mia_p_value_half_b": half_b.p_value,
                "membership_rule_fold": passes(half_b.auc, half_b.p_value),
                # What generate.select=private-best reads (half A: it also set the thresholds).
                "half_a_flag_rate": float(result.holdout_flagged[~result.half_b].mean()),
                "mia_auc_half_a": half_a.auc, "mia_p_value_half_a": half_a.p_value,
                "swd": float(swd["avg"]), "precision": float(precision), "recall": float(recall),
                "seconds": round(time.perf_counter() - clock, 2),
            })
            print(f"{name} {audited.checkpoint}: near-copies {100 * rows[-1]['near_copies']:.1f}%, half-B AUC "
                  f"{half_b.auc:.3f}, SWD {rows[-1]['swd']:.2f}", file=sys.stderr)
    return {"dataset": str(dataset), "repeat": repeat, "fold": fold,
            "images_per_label": config.generate.images_per_label, "features": store.extractor.describe(),
            "seconds_fold_reference": round(seconds_reference, 2), "load_avg_1min": os.getloadavg()[0],
            "note": "membership_rule_fold is the rule on this fold's half B alone (2 subjects: its smallest p is "
                    "1/45); the report's verdict pools the folds", "rows": rows}


def plot(result: dict[str, Any]) -> bytes:
    """Four panels against images shown (log scale), one line per run; PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import FuncFormatter, NullFormatter

    panels = [("near_copies", "near-copies (share flagged)"),
              ("mia_auc_half_b", "membership AUC: half B (solid), half A (dashed)"),
              ("swd", "SWD to training images (x1e3)"), ("precision", "precision (solid) / recall (dashed)")]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    runs = sorted({r["run"] for r in result["rows"]}, key=[r["run"] for r in result["rows"]].index)
    for ax, (key, title) in zip(axes.flat, panels):
        for k, run in enumerate(runs):
            mine = sorted((r for r in result["rows"] if r["run"] == run), key=lambda r: r["images_shown"])
            x = [max(1, r["images_shown"]) for r in mine]
            ax.plot(x, [r[key] for r in mine], "o-", color=f"C{k}", label=run)
            if key == "precision":
                ax.plot(x, [r["recall"] for r in mine], "s--", color=f"C{k}")
            if key == "mia_auc_half_b":
                ax.plot(x, [r["mia_auc_half_a"] for r in mine], "s--", color=f"C{k}")
        if key == "near_copies":
            falses = [r["false_flags_half_b"] for r in result["rows"]]
            ax.axhline(np.mean(falses) + 0.01, color="grey", ls=":", label="half-B false flags + 1 pt")
        if key == "mia_auc_half_b":
            ax.axhline(0.6, color="grey", ls=":", label="rule: AUC <= 0.60")
        ax.set_title(title)
        ax.set_xscale("log")
        shown = sorted({max(1, r["images_shown"]) for r in result["rows"]})
        ax.set_xticks(shown)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:.3g}k"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelrotation=60, labelsize=7)
        ax.legend(fontsize=8)
    for ax in axes[1]:
        ax.set_xlabel("images shown (log scale)")
    fig.suptitle(f"privacy over training, repeat {result['repeat']} fold {result['fold']} "
                 f"({result['images_per_label']} images per class per checkpoint)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="the prepared DATASET the runs were trained on")
    parser.add_argument("--run", action="append", required=True, metavar="NAME=RUN_DIR",
                        help="a training run of this fold (repeatable)")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=0)
    parser.add_argument("--config", default="demo", help="preset or YAML: its generate, evaluate and audit sections")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument("--feature-cache", type=Path, help="content-addressed feature cache folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    store = None
    if args.feature_cache is not None:
        from brainsynth.evaluate.features import get_extractor

        store = FeatureStore(get_extractor(config.evaluate), args.feature_cache)
    result = trajectory(args.dataset, parse_runs(args.run), config, fold=args.fold, repeat=args.repeat, store=store)
    atomic_write_json(args.out / "trajectory.json", result)
    atomic_write_bytes(args.out / "trajectory.png", plot(result))
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
