"""Train, sample and score generators side by side: the diffusion model's settings against the GANs'.

Each run of a spec file is trained on a prepared DATASET's train split (``brainsynth train``),
sampled (``brainsynth generate``), and scored against the real TEST images with the report's
fidelity maths: SWD (average over levels, x1e3), FID, KID, precision/recall (k=3),
density/coverage (k=5) on the evaluation features, and the background intensity outside the
brain. A ``real-train`` row (the real training images against the same test images) gives
the scale. One row per run, as a table and as JSON::

    python benchmarks/ddpm_sweep.py --dataset DATASET --out OUT --spec spec.yaml [--reuse] [--json]

``--json`` prints one JSON object (the rows and the load before and after) instead of the
lines and the table, which then go to stderr.

``spec.yaml``::

    preset: demo                      # the config every run starts from
    images_per_label: 500             # synthetic images per class for scoring
    runs:
      - {name: pggan, model: pggan}
      - name: ddpm-p4
        model: ddpm
        set: {patch: 4, total_images: 40000}      # train.ddpm keys
        generate: {steps: 25, guidance: 0.0, precision: bf16}

``--reuse`` keeps a finished run's training (and its wall time) and only samples and scores
again, e.g. to compare sampler settings. Wall times are the loop's own (``wall_s`` of the last
tick): compare them only between runs taken under the same load (``uptime`` is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from brainsynth.config import load_config  # noqa: E402
from brainsynth.evaluate.features import get_extractor  # noqa: E402
from brainsynth.evaluate.fidelity import background_fidelity, fid, kid, density_coverage, precision_recall, swd  # noqa: E402
from brainsynth.fsio import atomic_write_json  # noqa: E402
from brainsynth.generate import generate_images  # noqa: E402
from brainsynth.imageset import read_image_set  # noqa: E402
from brainsynth.train.loop import train  # noqa: E402
from brainsynth.train.observe import read_stats  # noqa: E402

COLUMNS = ("name", "train_s", "images", "train_img_s", "sample_s", "swd", "fid", "kid", "precision", "recall",
           "density", "coverage", "background")


def _real(dataset: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from brainsynth.data.dataset import load_dataset

    ds = load_dataset(dataset)
    idx = ds.indices(split=split)
    return ds.images[idx].astype(np.float32) / 255.0, np.asarray(ds.table.iloc[idx]["label"])


def score(test: np.ndarray, test_feats: np.ndarray, images: np.ndarray, feats: np.ndarray) -> dict[str, float]:
    """The fidelity numbers of one image set against the real test images."""
    out = {"swd": swd(test, images)["avg"], "fid": fid(test_feats, feats), "kid": kid(test_feats, feats)[0]}
    out["precision"], out["recall"] = precision_recall(test_feats, feats)
    out["density"], out["coverage"] = density_coverage(test_feats, feats)
    out["background"] = background_fidelity(test, images)["difference"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--spec", required=True, type=Path)
    ap.add_argument("--reuse", action="store_true", help="keep finished training runs; sample and score again")
    ap.add_argument("--only", nargs="*", help="run only these names")
    ap.add_argument("--json", action="store_true", help="print one JSON object (the lines and table go to stderr)")
    args = ap.parse_args(argv)
    text = sys.stderr if args.json else sys.stdout
    spec = yaml.safe_load(args.spec.read_text())
    preset = spec.get("preset", "demo")
    per_label = int(spec.get("images_per_label", 500))
    load_before = os.getloadavg()
    print(f"# load: {load_before}", file=text, flush=True)

    config = load_config(preset)
    extractor = get_extractor(config.evaluate, device="cpu")
    test, _ = _real(args.dataset, "test")
    train_images, _ = _real(args.dataset, "train")
    test_feats = extractor.extract(test)
    rows = [{"name": "real-train", **score(test, test_feats, train_images, extractor.extract(train_images))}]
    print(json.dumps(rows[0]), file=text, flush=True)
    for run in spec["runs"]:
        if args.only and run["name"] not in args.only:
            continue
        model = run["model"]
        overrides = [(f"train.{model}.{k}", v, f"spec {k}") for k, v in (run.get("set") or {}).items()]
        overrides += [(f"generate.{k}", v, f"spec {k}") for k, v in (run.get("generate") or {}).items()]
        overrides.append(("generate.images_per_label", per_label, "spec images_per_label"))
        cfg = load_config(preset, overrides)
        run_dir = args.out / "runs" / run["name"]
        finished = (run_dir / "progress.json").is_file() and json.loads((run_dir / "progress.json").read_text())[
            "finished"]
        if not (args.reuse and finished):
            train(args.dataset, run_dir, cfg.train[model], force=True, launch=[f"preset {preset!r}", "ddpm_sweep"])
        stats = read_stats(run_dir)
        t0 = time.perf_counter()
        syn = generate_images(run_dir, args.out / "synthetic" / run["name"], cfg.generate, device="cpu", force=True)
        sample_s = time.perf_counter() - t0
        images = read_image_set(syn).images
        row = {"name": run["name"], "train_s": stats[-1]["wall_s"], "images": stats[-1]["images_shown"],
               "train_img_s": float(np.mean([s["img_per_s"] for s in stats])), "sample_s": sample_s,
               **score(test, test_feats, images, extractor.extract(images))}
        rows.append(row)
        print(json.dumps(row), file=text, flush=True)
    load_after = os.getloadavg()
    print(f"# load: {load_after}", file=text)
    print("| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS), file=text)
    for row in rows:
        print("| " + " | ".join(_fmt(row.get(c)) for c in COLUMNS) + " |", file=text)
    atomic_write_json(args.out / "sweep.json", rows)
    if args.json:
        print(json.dumps({"preset": preset, "images_per_label": per_label, "load_before": load_before,
                          "load_after": load_after, "rows": rows}))
    return 0


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
