"""The ``brainsynth evaluate`` command, and the input helpers it shares with ``brainsynth audit``.

``evaluate``: GAN-train, GAN-test, fidelity and privacy of synthetic sets, one report. Stages,
each logged and timed:

1. read the real DATASET and every synthetic image set, and refuse inputs that would make the
   numbers meaningless (subjects on both sides of the split, a missing class, other sizes);
2. features: the real DATASET's once for all its rows, then each synthetic set's, through a
   :class:`~brainsynth.evaluate.feature_cache.FeatureStore` (shared with later commands when
   given a ``feature_cache`` folder);
3. the real baseline, then per synthetic set GAN-train, GAN-test, fidelity (against the real
   TRAIN split, the distribution the generator learned) and the privacy audit (held-out = the
   real TEST split);
4. write REPORT_DIR (report.json/.md/.html, figures, config.yaml) through a staged folder.

``audit`` (the privacy audit of one synthetic set on its own) is :mod:`.audit_command`; it shares
the input helpers of this module. Both check their options first, so a typo fails before minutes
of feature extraction.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from brainsynth import LABELS, __version__
from brainsynth.config import AuditConfig, EvaluateConfig, sections_yaml
from brainsynth.data.dataset import load_dataset
from brainsynth.errors import ConfigError, InputError
from brainsynth.evaluate import features as extractors
from brainsynth.evaluate import fidelity as fidelity_metrics
from brainsynth.evaluate import gan_train as classifiers
from brainsynth.evaluate.feature_cache import FeatureStore
from brainsynth.evaluate.privacy import FoldReference, fold_reference
from brainsynth.evaluate.privacy_summary import privacy_audit
from brainsynth.evaluate.schema import (
    ClassifierResult,
    DataSummary,
    FeaturesInfo,
    FidelityResult,
    PrivacySummary,
    RealData,
    Report,
    SyntheticData,
    Timings,
)
from brainsynth.evaluate.tables import REAL_KEY
from brainsynth.evaluate.writers import write_report
from brainsynth.fsio import atomic_write_text, check_output_free, staged_output_dir
from brainsynth.imageset import ImageSet, read_image_set
from brainsynth.timing import Stopwatch

log = logging.getLogger("brainsynth.evaluate")

MIN_IMAGES_PER_CLASS = 3  # the SVM needs 2 per class, the k-NN metrics more than k=5 in all
CPU_FRIENDLY_INPUT = 64  # px; 2,000 + 1,100 images evaluate in under 3 minutes on 2 cores


# --- inputs, shared by both commands ----------------------------------------------------------

def record_name(record: Mapping[str, Any], position: int) -> str:
    """``"adhd/000003.png"``, or ``"images.npz#3"`` for an image inside a stacked file."""
    name = str(record.get("file", position))  # an image set's record names its file unless stacked
    return f"{name}#{record['index']}" if "index" in record else name


def image_ids(dataset, idx: np.ndarray) -> list[str]:
    """``"sub-01:45"`` per dataset row (``":p2"`` added when slices were cut into several patches).

    The one naming of real images shared by ``audit`` and ``evaluate``, so their reports agree.
    """
    rows = dataset.table.iloc[np.asarray(idx)]
    several_patches = "patch" in rows and rows["patch"].nunique(dropna=True) > 1
    ids = []
    for r in rows.itertuples():
        image_id = f"{r.subject}:{r.slice}"
        ids.append(f"{image_id}:p{r.patch}" if several_patches else image_id)
    return ids


def check_same_size(name: str, path: str | Path, synth: ImageSet, dataset) -> None:
    """Refuse a synthetic set whose images are not the dataset's size (distances and features need one size)."""
    if synth.images.shape[1:] != dataset.images.shape[1:]:
        raise InputError(
            f"{path}: synthetic set {name!r} holds {synth.images.shape[2]}x{synth.images.shape[1]} px images but "
            f"the dataset {dataset.root} holds {dataset.images.shape[2]}x{dataset.images.shape[1]} px; regenerate "
            "(or prepare) at the same size"
        )


def _created() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _features_info(extractor) -> FeaturesInfo:
    return FeaturesInfo.from_dict(extractor.describe(), source="feature extractor")


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


def _check_synthetic(name: str, path: str, synth: ImageSet, dataset) -> None:
    for label in LABELS:
        n = int(np.sum(synth.labels == label))
        if n < MIN_IMAGES_PER_CLASS:
            raise InputError(
                f"{path}: synthetic set {name!r} has {n} {label} images (need at least {MIN_IMAGES_PER_CLASS}); "
                "generate both classes with 'brainsynth generate --label both'"
            )
    check_same_size(name, path, synth, dataset)


def _check_names(synthetic: Mapping[str, str]) -> None:
    if not synthetic:
        raise ConfigError("--synthetic NAME=DIR is required at least once")
    if REAL_KEY in synthetic:
        raise ConfigError(f"--synthetic {REAL_KEY}=...: the name {REAL_KEY!r} is reserved for the real baseline; "
                          "choose another name")


def _real_train_set(dataset, idx: np.ndarray) -> ImageSet:
    """The dataset's train split as an :class:`ImageSet` (for the report's figures)."""
    rows = dataset.table.iloc[idx]
    records = [{"label": r.label, "subject": r.subject, "slice": int(r.slice)} for r in rows.itertuples()]
    return ImageSet(images=dataset.float_images(idx), labels=rows["label"].to_numpy().astype(str), records=records,
                    meta={"synthetic": False}, root=dataset.root)


def _label_index(labels: np.ndarray) -> np.ndarray:
    return np.array([LABELS.index(str(lbl)) for lbl in labels], dtype=np.int64)


# --- brainsynth evaluate ----------------------------------------------------------------------

@dataclass
class _Inputs:
    """The real dataset, split, and the synthetic sets, read and checked."""

    dataset: Any  # brainsynth.data.dataset.Dataset
    train_idx: np.ndarray  # [N] dataset rows of the train split
    test_idx: np.ndarray  # [M] dataset rows of the test split
    real_train: ImageSet  # the train split, float [N, H, W] in [0, 1]
    test_images: np.ndarray  # float [M, H, W] in [0, 1]
    sets: dict[str, ImageSet]  # name -> synthetic set


@dataclass
class _Features:
    """One extractor's features of every image.

    Real and synthetic features are kept apart, so no synthetic set's name can stand for a real split.
    """

    train: np.ndarray  # [N, D]
    test: np.ndarray  # [M, D]
    synthetic: dict[str, np.ndarray]  # name -> [S, D]

    def count(self) -> int:
        return len(self.train) + len(self.test) + sum(len(f) for f in self.synthetic.values())


def evaluate(
    real: str | Path,
    synthetic: dict[str, str],
    out: str | Path,
    cfg: EvaluateConfig,
    audit_cfg: AuditConfig | None = None,
    *,
    runs: dict[str, str] | None = None,
    device: str | None = None,
    timings: dict[str, float] | None = None,
    feature_cache: str | Path | None = None,
    force: bool = False,
) -> Report:
    """Evaluate synthetic image sets against a prepared real DATASET and write REPORT_DIR.

    Parameters
    ----------
    real : path
        Prepared DATASET (train/test split by subject).
    synthetic : dict
        Name -> image-set folder (``brainsynth generate``), e.g. {"pggan": ..., "dcgan": ...}.
    out : path
        REPORT_DIR; refused if it exists unless ``force``.
    cfg : EvaluateConfig
        The feature extractor (see :func:`brainsynth.evaluate.features.get_extractor`),
        ``bootstrap`` resamples for the 95% confidence intervals (0: none) and the ``seed`` of the
        classifiers, bootstrap, subset draws and patch sampling.
    audit_cfg : AuditConfig, optional
        The privacy audit's ``percentile``; default ``AuditConfig()``.
    runs : dict, optional
        Name -> training run folder, whose curves go into the report.
    device : str, optional
        Where features are extracted ("cpu", "cuda", "cuda:N"; default cuda when available).
    timings : dict, optional
        Wall seconds of earlier stages (e.g. from ``brainsynth run``), stored in the report
        beside this command's own ``evaluate_*`` timings.
    feature_cache : path, optional
        Folder of the content-addressed feature cache (:mod:`brainsynth.evaluate.feature_cache`)
        shared with other commands on the same images; None computes features in memory only.
    force : bool
        Replace an existing ``out``.

    Returns
    -------
    Report
        The report, as written to ``report.json``.
    """
    audit_cfg = AuditConfig() if audit_cfg is None else audit_cfg
    cfg.check()
    audit_cfg.check()
    _check_names(synthetic)
    extractors.check_extractor_name(cfg.features)
    check_output_free(out, force)
    watch = Stopwatch(log=log)

    with watch.time("load"):
        inputs = _load_inputs(real, synthetic)
    with watch.time("features"):
        extractor = extractors.get_extractor(cfg, device=device)
        feats = _extract(FeatureStore(extractor, feature_cache), inputs, cfg.input_size)
    log.info("features: %d images in %.1f s (%.1f img/s)", feats.count(), watch.seconds["features"],
             feats.count() / max(watch.seconds["features"], 1e-9))
    with watch.time("gan_train"):
        gan_train, gan_test = _classifiers(inputs, feats, cfg)
    with watch.time("fidelity"):
        fidelity = _fidelity(inputs, feats, cfg.seed)
    pairs: dict[str, list[dict]] = {}
    privacy: dict[str, PrivacySummary] = {}
    with watch.time("privacy"):
        reference = None  # the real images' side of the audit, shared by every synthetic set
        for name in inputs.sets:
            privacy[name], pairs[name], reference = _privacy(inputs, feats, name, audit_cfg, reference)

    with watch.time("write"):
        with staged_output_dir(out, force=force) as stage:
            report = Report(
                brainsynth_version=__version__,
                created=_created(),
                simulated=bool(inputs.dataset.manifest.get("simulated", False)),
                features=_features_info(extractor),
                data=_data_summary(inputs),
                gan_train=gan_train,
                gan_test=gan_test,
                fidelity=fidelity,
                privacy=privacy,
                timings=_timings(watch, feats.count(), timings),
            )
            write_report(stage, report, real_train=inputs.real_train, synthetic=inputs.sets, nearest_pairs=pairs,
                         runs={k: Path(v) for k, v in (runs or {}).items()})
            atomic_write_text(stage / "config.yaml", sections_yaml(cfg, audit_cfg, what="evaluation"))
    return report


def _load_inputs(real: str | Path, synthetic: Mapping[str, str]) -> _Inputs:
    dataset = load_dataset(real)
    _check_split(dataset)
    train_idx, test_idx = dataset.indices("train"), dataset.indices("test")
    sets: dict[str, ImageSet] = {}
    for name, path in synthetic.items():
        sets[name] = read_image_set(path)
        _check_synthetic(name, path, sets[name], dataset)
    return _Inputs(dataset=dataset, train_idx=train_idx, test_idx=test_idx,
                   real_train=_real_train_set(dataset, train_idx), test_images=dataset.float_images(test_idx),
                   sets=sets)


def _extract(store: FeatureStore, inputs: _Inputs, input_size: int) -> _Features:
    n_total = len(inputs.real_train) + len(inputs.test_images) + sum(len(x) for x in inputs.sets.values())
    if store.extractor.device.type == "cpu" and input_size > CPU_FRIENDLY_INPUT and n_total > 1000:
        # VGG-16 costs ~31 GFLOP per image at 224 px against ~2.6 at 64 px.
        log.warning("VGG-16 at %d px on the CPU for %d images may take a few minutes; --input-size %d is "
                    "~10x faster (recorded in the report either way)", input_size, n_total, CPU_FRIENDLY_INPUT)
    real = store.dataset(inputs.dataset)  # [rows, D]: every split and fold selects rows of one extraction
    synthetic = {name: store.images(s.images, what=f"synthetic set {name!r}") for name, s in inputs.sets.items()}
    log.info("features: %d images computed, %d reused", store.computed, store.reused)
    return _Features(train=real[inputs.train_idx], test=real[inputs.test_idx], synthetic=synthetic)


def _classifiers(inputs: _Inputs, feats: _Features,
                 cfg: EvaluateConfig) -> tuple[dict[str, ClassifierResult], dict[str, ClassifierResult]]:
    """GAN-train (with the real baseline first) and GAN-test of every synthetic set."""
    table = inputs.dataset.table
    y_train = inputs.real_train.label_indices()
    y_test = _label_index(table["label"].to_numpy()[inputs.test_idx].astype(str))
    test_subjects = table["subject"].to_numpy()[inputs.test_idx].astype(str)
    boot = {"n_boot": cfg.bootstrap, "seed": cfg.seed}
    gan_train = {REAL_KEY: ClassifierResult.from_scores(
        classifiers.real_baseline(feats.train, y_train, feats.test, y_test, test_subjects, **boot))}
    gan_test = {}
    for name, synth in inputs.sets.items():
        synth_f, synth_y = feats.synthetic[name], synth.label_indices()
        gan_train[name] = ClassifierResult.from_scores(
            classifiers.gan_train(synth_f, synth_y, feats.test, y_test, test_subjects, **boot))
        gan_test[name] = ClassifierResult.from_scores(
            classifiers.gan_test(feats.train, y_train, synth_f, synth_y, **boot))
    return gan_train, gan_test


def _fidelity(inputs: _Inputs, feats: _Features, seed: int) -> dict[str, FidelityResult]:
    """Every synthetic set against the real train split (its real side computed once for all sets)."""
    real = inputs.real_train
    sets = {name: (s.images, s.labels, feats.synthetic[name]) for name, s in inputs.sets.items()}
    numbers = fidelity_metrics.fidelity_reports(real.images, real.labels, feats.train, sets, labels=LABELS, seed=seed,
                                                ms_ssim_pairs=fidelity_metrics.MS_SSIM_PAIRS)
    return {name: FidelityResult.from_dict(numbers[name], source=f"fidelity of {name}") for name in inputs.sets}


def _privacy(inputs: _Inputs, feats: _Features, name: str, cfg: AuditConfig,
             reference: FoldReference | None) -> tuple[PrivacySummary, list[dict], FoldReference]:
    if reference is None:
        dataset, test_idx = inputs.dataset, inputs.test_idx
        reference = fold_reference(
            inputs.real_train.images, inputs.test_images, train_features=feats.train, holdout_features=feats.test,
            train_ids=image_ids(dataset, inputs.train_idx), holdout_ids=image_ids(dataset, test_idx),
            holdout_labels=dataset.table["label"].to_numpy()[test_idx].astype(str), cfg=cfg)
    synth = inputs.sets[name]
    summary, pairs, _ = privacy_audit(inputs.real_train.images, None, synth.images,
                                      synth_features=feats.synthetic[name], reference=reference,
                                      synth_files=[record_name(r, i) for i, r in enumerate(synth.records)])
    return PrivacySummary.from_dict(summary, source=f"privacy audit of {name}"), pairs, reference


def _data_summary(inputs: _Inputs) -> DataSummary:
    dataset = inputs.dataset
    test_subjects = dataset.table["subject"].to_numpy()[inputs.test_idx].astype(str)
    real = RealData(
        path=str(dataset.root),
        n_train=len(inputs.real_train),
        n_test=len(inputs.test_idx),
        train_subjects=sorted({str(r["subject"]) for r in inputs.real_train.records}),
        test_subjects=sorted(set(test_subjects.tolist())),
        image_size=dataset.image_size,
    )
    synthetic = {
        name: SyntheticData(
            path=str(s.root),
            n_images=len(s),
            counts={lbl: int(np.sum(s.labels == lbl)) for lbl in LABELS},
            # Generated sets record their generator; other image sets only their own metadata.
            source=s.meta.get("generator", {k: v for k, v in s.meta.items() if k != "counts"}),
        )
        for name, s in inputs.sets.items()
    }
    return DataSummary(real=real, synthetic=synthetic)


def _timings(watch: Stopwatch, n_images: int, earlier: Mapping[str, float] | None) -> Timings:
    """This command's stage times beside the caller's (which never overwrite ours)."""
    own = {f.name for f in dataclasses.fields(Timings)}
    seconds = watch.seconds
    return Timings(
        other_stages={k: float(v) for k, v in (earlier or {}).items() if k not in own},
        evaluate_load=round(seconds["load"], 3),
        evaluate_features=round(seconds["features"], 3),
        evaluate_gan_train=round(seconds["gan_train"], 3),
        evaluate_fidelity=round(seconds["fidelity"], 3),
        evaluate_privacy=round(seconds["privacy"], 3),
        evaluate_images_per_s_features=round(n_images / max(seconds["features"], 1e-9), 2),
        evaluate_total=round(watch.total(), 3),
    )
