"""How hard is the simulated cohort? Real-data and shortcut baselines against ``cohort.effect``.

    python benchmarks/phantom_effect.py --effect 0 0.5 1 1.5 2 3 --seeds 0 1 2 [--json]

For every (effect, cohort seed) this builds the default 12-subject cohort (``brainsynth
phantom``), prepares it with the demo preset's ``prepare`` section (64 px) and scores two
baselines under subject-level stratified K-fold cross-validation (K = 3: every subject is tested
exactly once):

real
    the linear SVM of GAN-train (:func:`brainsynth.evaluate.gan_train.fit_and_score`) on the
    demo preset's features (``vgg16-random`` fc7 at 64 px), trained on the fold's training
    subjects' real slices;
shortcut
    the same SVM on :func:`brainsynth.evaluate.shortcut.global_slice_features` (brain area,
    mean and SD of brain intensity, slice position).

The folds are the prepared dataset's own (``folds.tsv``, repeat 0, dealt by ``prepare`` with
the config's ``prepare.folds`` and ``prepare.seed``), and the SVM is seeded by ``evaluate.seed``,
as in the report's cross-validated protocol (:mod:`brainsynth.evaluate.folds`). The test
predictions of the K folds are pooled and scored at slice level (sensitivity, specificity, HM,
ADHD positive; :func:`brainsynth.evaluate.gan_train.confusion_metrics`). The table gives the
mean, min and max of each HM over the cohort seeds.

``--shape X Y Z`` (``cohort.shape``) and ``--config tiny`` make a cohort of seconds (the tests');
the figures in benchmarks/README.md use the default grid and the demo preset.

Control subjects do not change with ``effect`` (byte-identical volumes), so their features are
computed once per seed and reused. Every cohort is written under a temporary folder (removed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from brainsynth.config import load_config
from brainsynth.data.dataset import load_dataset
from brainsynth.data.layouts import InputSpec
from brainsynth.data.phantom import make_cohort
from brainsynth.data.prepare import prepare_dataset
from brainsynth.errors import ConfigError
from brainsynth.evaluate.features import get_extractor
from brainsynth.evaluate.gan_train import confusion_metrics, fit_and_score
from brainsynth.evaluate.shortcut import global_slice_features, relative_slice_positions

LABEL_INDEX = {"control": 0, "adhd": 1}


class FeatureCache:
    """The extractor's features of one subject's images, keyed by the images' bytes."""

    def __init__(self, extractor) -> None:
        self.extractor = extractor
        self.store: dict[str, np.ndarray] = {}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        key = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
        if key not in self.store:
            self.store[key] = self.extractor.extract(images.astype(np.float32) / 255.0)  # [n, D]
        return self.store[key]


def cross_validate(features: np.ndarray, labels: np.ndarray, subjects: np.ndarray, folds: dict[str, int],
                   k: int, seed: int) -> dict[str, float]:
    """Pooled slice-level Sen/Spe/HM of the SVM over ``k`` subject folds (each subject tested once)."""
    fold_of = np.array([folds[s] for s in subjects])  # [N]
    predicted = np.full(len(labels), -1, dtype=np.int64)
    for fold in range(k):
        test = fold_of == fold
        scores = fit_and_score(features[~test], labels[~test], features[test], seed=seed)  # [n_test]
        predicted[test] = (scores > 0).astype(np.int64)
    return confusion_metrics(labels, predicted)


def group_ranges(cohort: Path, dataset: Path) -> dict[str, dict[str, list[float]]]:
    """Per-group [min, max] over subjects of three global measures, as the issue measured them.

    ``area``: the subject's mean over slices of its brain area / the control mean at that slice;
    ``intensity``: its mean brain intensity over slices (prepared images, [0, 1]);
    ``icv_cc``: its brain volume (non-zero voxels of the written volume), cm^3.
    """
    ds = load_dataset(dataset)
    table = ds.table
    feats = global_slice_features(np.asarray(ds.images), np.zeros(len(table)))  # [N, 4]
    frame = table.assign(area=feats[:, 0], intensity=feats[:, 1])
    control_area = frame[frame.label == "control"].groupby("slice")["area"].mean()
    frame["rel_area"] = frame["area"] / frame["slice"].map(control_area)
    per_subject = frame.groupby("subject").agg(label=("label", "first"), area=("rel_area", "mean"),
                                              intensity=("intensity", "mean"))
    icv = {}
    for path in sorted(cohort.glob("sub-*/**/*_T1w.nii.gz")):  # both layouts
        img = nib.load(path)
        icv[path.name.split("_")[0]] = float(np.count_nonzero(np.asarray(img.dataobj))
                                             * np.prod(img.header.get_zooms()) / 1000.0)
    per_subject["icv_cc"] = per_subject.index.map(icv)
    out = {}
    for label, rows in per_subject.groupby("label"):
        out[label] = {m: [round(float(rows[m].min()), 3), round(float(rows[m].max()), 3)]
                      for m in ("area", "intensity", "icv_cc")}
    return out


def dataset_folds(ds) -> tuple[dict[str, int], int]:
    """Subject -> its test fold in repeat 0 of the dataset's ``folds.tsv``, and K."""
    tests = ds.folds[(ds.folds["repeat"] == 0) & (ds.folds["split"] == "test")]
    return dict(zip(tests["subject"].astype(str), tests["fold"].astype(int))), ds.n_folds


def score_cohort(dataset: Path, cache: FeatureCache, seed: int) -> dict[str, dict[str, float]]:
    ds = load_dataset(dataset)
    table = ds.table
    subjects = table["subject"].astype(str).to_numpy()
    labels = table["label"].map(LABEL_INDEX).to_numpy(dtype=np.int64)
    images = np.asarray(ds.images)  # uint8 [N, H, W]
    deep = np.zeros((len(images), cache.extractor.dim), dtype=np.float32)
    for subject in np.unique(subjects):
        rows = np.flatnonzero(subjects == subject)
        deep[rows] = cache(images[rows])
    position = relative_slice_positions(subjects, table["slice"].to_numpy())
    shallow = global_slice_features(images, position)  # [N, 4]
    folds, k = dataset_folds(ds)
    return {"real": cross_validate(deep, labels, subjects, folds, k, seed),
            "shortcut": cross_validate(shallow, labels, subjects, folds, k, seed)}


def run_one(effect: float, seed: int, subjects: int, cache: FeatureCache, config, overlap: bool = False) -> dict:
    cohort_cfg = load_config(config, [("cohort.effect", effect, "--effect"), ("cohort.seed", seed, "--seeds"),
                                      ("cohort.subjects", subjects, "--subjects")]).cohort
    # An ADHD-200 site folder lists subjects without a usable diagnosis: drop them, as a user would.
    source = InputSpec(skip_unlabeled=cohort_cfg.layout == "adhd200")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phantom-effect-") as tmp:
        cohort = make_cohort(Path(tmp) / "cohort", cohort_cfg)
        dataset = prepare_dataset(cohort, Path(tmp) / "dataset", config.prepare, source)
        scores = score_cohort(dataset, cache, config.evaluate.seed)
        if overlap:
            scores["groups"] = group_ranges(cohort, dataset)
    return {"effect": effect, "seed": seed, **scores, "seconds": round(time.perf_counter() - start, 1)}


def summarise(rows: list[dict], effects: list[float]) -> list[dict]:
    table = []
    for effect in effects:
        at = [r for r in rows if r["effect"] == effect]
        entry = {"effect": effect, "seeds": [r["seed"] for r in at]}
        for which in ("real", "shortcut"):
            hm = [r[which]["hm"] for r in at]
            entry[which] = {"hm_mean": round(statistics.fmean(hm), 3),
                            "hm_sd": round(statistics.stdev(hm), 3) if len(hm) > 1 else 0.0,
                            "hm_min": round(min(hm), 3), "hm_max": round(max(hm), 3), "hm": [round(h, 3) for h in hm]}
        table.append(entry)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--effect", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0, 3.0],
                        help="cohort.effect values (default 0 0.5 1 1.5 2 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="cohort seeds (default 0 1 2)")
    parser.add_argument("--subjects", type=int, default=12, help="subjects per cohort (default 12)")
    parser.add_argument("--folds", type=int, help="prepare.folds: subject folds K (default: the config's, 3)")
    parser.add_argument("--config", default="demo", help="preset or YAML whose cohort/prepare/evaluate "
                        "sections are used (default demo)")
    parser.add_argument("--template", help="cohort.template: a skull-stripped T1 NIfTI in MNI space "
                        "(default: the config's, mni152-2009)")
    parser.add_argument("--layout", choices=("bids", "adhd200"), help="cohort.layout (default: the config's)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="cohort.shape: voxel grid of each volume (default: the config's)")
    parser.add_argument("--overlap", action="store_true", help="also print each group's range of brain area, "
                        "mean brain intensity and brain volume")
    parser.add_argument("--json", action="store_true", help="print one JSON object (the lines and table go to stderr)")
    args = parser.parse_args(argv)
    overrides = [(f"{'prepare' if key == 'folds' else 'cohort'}.{key}", getattr(args, key), f"--{key}")
                 for key in ("template", "layout", "shape", "folds") if getattr(args, key) is not None]
    try:
        config = load_config(args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    extractor = get_extractor(config.evaluate, device="cpu")
    text = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON object alone
    rows = []
    for seed in args.seeds:
        cache = FeatureCache(extractor)  # one seed's controls at a time
        for effect in args.effect:
            row = run_one(effect, seed, args.subjects, cache, config, args.overlap)
            rows.append(row)
            print(f"effect {effect:<4g} seed {seed}: real HM {row['real']['hm']:.3f} "
                  f"(sen {row['real']['sensitivity']:.3f}, spe {row['real']['specificity']:.3f}), "
                  f"shortcut HM {row['shortcut']['hm']:.3f}  [{row['seconds']:.0f} s]", file=text, flush=True)
            for label, ranges in row.get("groups", {}).items():
                print(f"    {label:<8} " + "  ".join(f"{m} {lo:g}..{hi:g}" for m, (lo, hi) in ranges.items()),
                      file=text, flush=True)
    table = summarise(rows, args.effect)
    print(f"\n{args.subjects} subjects, template {config.cohort.template}, layout {config.cohort.layout}, "
          f"{config.prepare.folds}-fold subject CV, seeds {args.seeds}, pooled slice-level HM", file=text)
    print("| effect | real HM mean (SD) | real min..max | shortcut HM mean (SD) | shortcut min..max |", file=text)
    print("|---:|---:|---:|---:|---:|", file=text)
    for t in table:
        r, s = t["real"], t["shortcut"]
        print(f"| {t['effect']:g} | {r['hm_mean']:.3f} ({r['hm_sd']:.3f}) | {r['hm_min']:.3f}..{r['hm_max']:.3f} | "
              f"{s['hm_mean']:.3f} ({s['hm_sd']:.3f}) | {s['hm_min']:.3f}..{s['hm_max']:.3f} |", file=text)
    if args.json:
        print(json.dumps({"subjects": args.subjects, "folds": config.prepare.folds, "seeds": args.seeds,
                          "template": config.cohort.template, "layout": config.cohort.layout,
                          "shape": config.cohort.shape, "features": extractor.describe(), "rows": rows,
                          "table": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
