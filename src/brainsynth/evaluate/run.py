"""``brainsynth evaluate``: GAN-train, GAN-test, fidelity and privacy of synthetic sets, one report.

Stages, each logged and timed:

1. read the real DATASET and every synthetic image set, and refuse inputs that would make the
   numbers meaningless (subjects on both sides of the split, a missing class, other sizes);
2. extract features once per set (real train, real test, each synthetic set);
3. the real baseline, then per synthetic set GAN-train, GAN-test, fidelity (against the real
   TRAIN split, the distribution the generator learned) and the privacy audit (held-out = the
   real TEST split);
4. write REPORT_DIR (report.json/.md/.html) through a staged folder.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from brainsynth import LABELS, __version__
from brainsynth.errors import ConfigError, InputError
from brainsynth.fsio import check_output_free, staged_output_dir
from brainsynth.imageset import ImageSet, read_image_set

log = logging.getLogger("brainsynth.evaluate.run")

REAL_KEY = "real"
MIN_IMAGES_PER_CLASS = 3  # the SVM needs 2 per class, the k-NN metrics more than k=5 in all
PRIVACY_PERCENTILE = 1.0
CPU_FRIENDLY_INPUT = 64  # px; 2,000 + 1,100 images evaluate in under 3 minutes on 2 cores


# --- inputs -----------------------------------------------------------------------------

def _check_split(dataset) -> None:
    """Refuse a dataset whose subjects straddle the split or whose splits lack a class."""
    table = dataset.table
    straddling = table.groupby("subject")["split"].nunique()
    straddling = sorted(straddling[straddling > 1].index)
    if straddling:
        raise InputError(
            f"{dataset.root}: subjects {', '.join(map(str, straddling[:5]))} have images in both the train and the "
            "test split, so test scores would leak; re-run 'brainsynth prepare' (it splits by subject)"
        )
    for split in ("train", "test"):
        for label in LABELS:
            n = len(dataset.indices(split, label))
            if n < MIN_IMAGES_PER_CLASS:
                raise InputError(
                    f"{dataset.root}: the {split} split has {n} {label} images (need at least "
                    f"{MIN_IMAGES_PER_CLASS}); re-run 'brainsynth prepare' with more subjects or another "
                    "--test-fraction/--seed so both classes are on both sides"
                )


def _check_synthetic(name: str, path: str, synth: ImageSet, size: tuple[int, int], dataset_root: Path) -> None:
    for label in LABELS:
        n = int(np.sum(synth.labels == label))
        if n < MIN_IMAGES_PER_CLASS:
            raise InputError(
                f"{path}: synthetic set {name!r} has {n} {label} images (need at least {MIN_IMAGES_PER_CLASS}); "
                "generate both classes with 'brainsynth generate --label both'"
            )
    if synth.images.shape[1:] != size:
        raise InputError(
            f"{path}: synthetic set {name!r} holds {synth.images.shape[2]}x{synth.images.shape[1]} px images but "
            f"the dataset {dataset_root} holds {size[1]}x{size[0]} px; regenerate (or prepare) at the same size"
        )


def _check_options(synthetic: dict[str, str], bootstrap: int) -> None:
    if not synthetic:
        raise ConfigError("--synthetic NAME=DIR is required at least once")
    if REAL_KEY in synthetic:
        raise ConfigError(f"--synthetic {REAL_KEY}=...: the name {REAL_KEY!r} is reserved for the real baseline; "
                          "choose another name")
    if bootstrap < 0:
        raise ConfigError(f"--bootstrap {bootstrap}: must be 0 (no intervals) or more")


def _real_train_set(dataset, idx: np.ndarray) -> ImageSet:
    """The dataset's train split as an :class:`ImageSet` (for the report's figures)."""
    rows = dataset.table.iloc[idx]
    records = [{"label": r.label, "subject": r.subject, "slice": int(r.slice)} for r in rows.itertuples()]
    return ImageSet(images=dataset.float_images(idx), labels=rows["label"].to_numpy().astype(str), records=records,
                    meta={"synthetic": False}, root=dataset.root)


def _label_index(labels: np.ndarray) -> np.ndarray:
    return np.array([LABELS.index(str(lbl)) for lbl in labels], dtype=np.int64)


# --- the stages -------------------------------------------------------------------------

class _Stopwatch:
    """Collects wall seconds per named stage, logging each."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        log.info("evaluate: %s ...", name)
        t0 = time.perf_counter()
        yield
        dt = time.perf_counter() - t0
        self.seconds[name] = self.seconds.get(name, 0.0) + dt
        log.info("evaluate: %s done in %.1f s", name, dt)


def _privacy(dataset, train_idx, test_idx, synth: ImageSet, real_train: ImageSet, test_images: np.ndarray,
             feats: dict[str, np.ndarray], name: str) -> tuple[dict, list[dict]]:
    from brainsynth.evaluate.privacy import image_ids, record_name, privacy_audit

    return privacy_audit(
        real_train.images, test_images, synth.images,
        train_features=feats["train"], holdout_features=feats["test"], synth_features=feats[name],
        synth_files=[record_name(r, i) for i, r in enumerate(synth.records)],
        train_ids=image_ids(dataset, train_idx), holdout_ids=image_ids(dataset, test_idx),
        percentile=PRIVACY_PERCENTILE,
    )


def evaluate(
    real: str | Path,
    synthetic: dict[str, str],
    out: str | Path,
    *,
    runs: dict[str, str] | None = None,
    features: str = "vgg16-random",
    weights: str | None = None,
    feature_layer: str = "fc7",
    input_size: int = 224,
    precision: str = "fp32",
    device: str | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    force: bool = False,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Evaluate synthetic image sets against a prepared real DATASET and write REPORT_DIR.

    Parameters
    ----------
    real : path
        Prepared DATASET (train/test split by subject).
    synthetic : dict
        Name -> image-set folder (``brainsynth generate``), e.g. {"pggan": ..., "dcgan": ...}.
    out : path
        REPORT_DIR; refused if it exists unless ``force``.
    runs : dict, optional
        Name -> training run folder, whose curves go into the report.
    features, weights, feature_layer, input_size, precision, device
        Feature extractor (see :func:`brainsynth.evaluate.features.get_extractor`).
    bootstrap : int
        Resamples for the 95% confidence intervals (0: none).
    seed : int
        Seeds the classifiers, bootstrap, subset draws and patch sampling.
    force : bool
        Replace an existing ``out``.
    timings : dict, optional
        Wall seconds of earlier stages (e.g. from ``brainsynth run``), stored in the report
        beside this command's own ``evaluate_*`` timings.

    Returns
    -------
    dict
        The report (as written to ``report.json``).
    """
    from brainsynth.data.dataset import load_dataset
    from brainsynth.evaluate import fidelity, gan_train
    from brainsynth.evaluate.features import check_extractor_name, get_extractor

    # Cheap checks first, so a typo fails before minutes of feature extraction.
    _check_options(synthetic, bootstrap)
    check_extractor_name(features)
    check_output_free(out, force)
    watch = _Stopwatch()
    t_start = time.perf_counter()

    # --- inputs ---
    with watch.time("load"):
        dataset = load_dataset(real)
        _check_split(dataset)
        train_idx, test_idx = dataset.indices("train"), dataset.indices("test")
        real_train = _real_train_set(dataset, train_idx)
        test_images = dataset.float_images(test_idx)
        test_labels = dataset.table["label"].to_numpy()[test_idx].astype(str)
        test_subjects = dataset.table["subject"].to_numpy()[test_idx].astype(str)
        sets: dict[str, ImageSet] = {}
        for name, path in synthetic.items():
            sets[name] = read_image_set(path)
            _check_synthetic(name, path, sets[name], tuple(dataset.images.shape[1:]), dataset.root)

    # --- features, once per set ---
    with watch.time("features"):
        extractor = get_extractor(features, weights=weights, layer=feature_layer, input_size=input_size,
                                  precision=precision, device=device)
        n_total = len(real_train) + len(test_images) + sum(len(x) for x in sets.values())
        if extractor.device.type == "cpu" and input_size > CPU_FRIENDLY_INPUT and n_total > 1000:
            # VGG-16 costs ~15 GFLOP per image at 224 px against ~1.3 at 64 px.
            log.warning("VGG-16 at %d px on the CPU for %d images may take a long while; --input-size %d is "
                        "~10x faster (recorded in the report either way)", input_size, n_total, CPU_FRIENDLY_INPUT)
        feats = {"train": extractor.extract(real_train.images), "test": extractor.extract(test_images)}
        for name, synth in sets.items():
            feats[name] = extractor.extract(synth.images)
    n_images = sum(len(f) for f in feats.values())
    log.info("features: %d images in %.1f s (%.1f img/s)", n_images, watch.seconds["features"],
             n_images / max(watch.seconds["features"], 1e-9))

    y_train, y_test = real_train.label_indices(), _label_index(test_labels)

    # --- classifiers ---
    with watch.time("gan_train"):
        gt = {REAL_KEY: gan_train.real_baseline(feats["train"], y_train, feats["test"], y_test, test_subjects,
                                                n_boot=bootstrap, seed=seed)}
        gs = {}
        for name, synth in sets.items():
            gt[name] = gan_train.gan_train(feats[name], synth.label_indices(), feats["test"], y_test, test_subjects,
                                           n_boot=bootstrap, seed=seed)
            gs[name] = gan_train.gan_test(feats["train"], y_train, feats[name], synth.label_indices(),
                                          n_boot=bootstrap, seed=seed)

    # --- fidelity ---
    with watch.time("fidelity"):
        fid = {
            name: fidelity.fidelity_report(real_train.images, real_train.labels, feats["train"], synth.images,
                                           synth.labels, feats[name], labels=LABELS, seed=seed,
                                           ms_ssim_pairs=fidelity.MS_SSIM_PAIRS)
            for name, synth in sets.items()
        }

    # --- privacy ---
    privacy: dict[str, Any] = {}
    pairs: dict[str, list[dict]] = {}
    with watch.time("privacy"):
        for name, synth in sets.items():
            privacy[name], pairs[name] = _privacy(dataset, train_idx, test_idx, synth, real_train, test_images,
                                                  feats, name)

    report = _build_report(dataset, real_train, test_subjects, sets, extractor.describe(), gt, gs, fid, privacy)
    own = {f"evaluate_{k}": round(v, 3) for k, v in watch.seconds.items()}
    own["evaluate_images_per_s_features"] = round(n_images / max(watch.seconds["features"], 1e-9), 2)

    # --- write ---
    with watch.time("write"):
        with staged_output_dir(out, force=force) as stage:
            own["evaluate_total"] = round(time.perf_counter() - t_start, 3)
            report["timings"] = {**(timings or {}), **own}
            _write(stage, report, real_train, sets, pairs, runs)
    return report


def _build_report(dataset, real_train: ImageSet, test_subjects: np.ndarray, sets: dict[str, ImageSet],
                  features: dict, gt: dict, gs: dict, fid: dict, privacy: dict) -> dict[str, Any]:
    return {
        "brainsynth_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "simulated": bool(dataset.manifest.get("simulated", False)),
        "features": features,
        "data": {
            "real": {
                "path": str(dataset.root),
                "n_train": int(len(real_train)),
                "n_test": int(len(test_subjects)),
                "train_subjects": sorted({str(r["subject"]) for r in real_train.records}),
                "test_subjects": sorted(set(test_subjects.tolist())),
                "image_size": dataset.image_size,
            },
            "synthetic": {
                name: {
                    "path": str(s.root),
                    "n_images": int(len(s)),
                    "counts": {lbl: int(np.sum(s.labels == lbl)) for lbl in LABELS},
                    "source": s.meta.get("generator", {k: v for k, v in s.meta.items() if k != "counts"}),
                }
                for name, s in sets.items()
            },
        },
        "gan_train": gt,
        "gan_test": gs,
        "fidelity": fid,
        "privacy": privacy,
        "timings": {},
    }


def _write(stage: Path, report: dict, real_train: ImageSet, sets: dict[str, ImageSet], pairs: dict,
           runs: dict[str, str] | None) -> None:
    from brainsynth.evaluate.report import write_report

    write_report(stage, report, real_train=real_train, synthetic=sets, nearest_pairs=pairs,
                 runs={k: Path(v) for k, v in (runs or {}).items()})
