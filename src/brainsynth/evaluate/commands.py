"""The two commands of this package: ``brainsynth evaluate`` and ``brainsynth audit``.

``evaluate``: GAN-train, GAN-test, fidelity and privacy of synthetic sets, one report. Stages,
each logged and timed:

1. read the real DATASET and every synthetic image set, and refuse inputs that would make the
   numbers meaningless (subjects on both sides of the split, a missing class, other sizes);
2. extract features once per set (real train, real test, each synthetic set);
3. the real baseline, then per synthetic set GAN-train, GAN-test, fidelity (against the real
   TRAIN split, the distribution the generator learned) and the privacy audit (held-out = the
   real TEST split);
4. write REPORT_DIR (report.json/.md/.html, figures, config.yaml) through a staged folder.

``audit``: the privacy audit of one synthetic set on its own (OUT/privacy.json/.md, ...).

Both check their options first, so a typo fails before minutes of feature extraction.
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
from brainsynth.evaluate.privacy import compute_privacy, privacy_audit, summarise_privacy
from brainsynth.evaluate.schema import (
    AuditInputs,
    AuditReport,
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
from brainsynth.evaluate.privacy_utility import privacy_utility
from brainsynth.evaluate.tables import REAL_KEY
from brainsynth.evaluate.writers import summary_paragraph, write_audit, write_filtered_set, write_report
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
        feats = _extract(extractor, inputs, cfg.input_size)
    log.info("features: %d images in %.1f s (%.1f img/s)", feats.count(), watch.seconds["features"],
             feats.count() / max(watch.seconds["features"], 1e-9))
    with watch.time("gan_train"):
        gan_train, gan_test = _classifiers(inputs, feats, cfg)
    with watch.time("fidelity"):
        fidelity = {name: _fidelity(inputs, feats, name, cfg.seed) for name in inputs.sets}
    pairs: dict[str, list[dict]] = {}
    privacy: dict[str, PrivacySummary] = {}
    with watch.time("privacy"):
        for name in inputs.sets:
            privacy[name], pairs[name] = _privacy(inputs, feats, name, audit_cfg.percentile)

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
                privacy_utility=privacy_utility(gan_train, privacy),
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


def _extract(extractor, inputs: _Inputs, input_size: int) -> _Features:
    n_total = len(inputs.real_train) + len(inputs.test_images) + sum(len(x) for x in inputs.sets.values())
    if extractor.device.type == "cpu" and input_size > CPU_FRIENDLY_INPUT and n_total > 1000:
        # VGG-16 costs ~15 GFLOP per image at 224 px against ~1.3 at 64 px.
        log.warning("VGG-16 at %d px on the CPU for %d images may take a long while; --input-size %d is "
                    "~10x faster (recorded in the report either way)", input_size, n_total, CPU_FRIENDLY_INPUT)
    return _Features(train=extractor.extract(inputs.real_train.images), test=extractor.extract(inputs.test_images),
                     synthetic={name: extractor.extract(s.images) for name, s in inputs.sets.items()})


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


def _fidelity(inputs: _Inputs, feats: _Features, name: str, seed: int) -> FidelityResult:
    real, synth = inputs.real_train, inputs.sets[name]
    numbers = fidelity_metrics.fidelity_report(real.images, real.labels, feats.train, synth.images, synth.labels,
                                               feats.synthetic[name], labels=LABELS, seed=seed,
                                               ms_ssim_pairs=fidelity_metrics.MS_SSIM_PAIRS)
    return FidelityResult.from_dict(numbers, source=f"fidelity of {name}")


def _privacy(inputs: _Inputs, feats: _Features, name: str, percentile: float) -> tuple[PrivacySummary, list[dict]]:
    synth = inputs.sets[name]
    summary, pairs = privacy_audit(
        inputs.real_train.images, inputs.test_images, synth.images,
        train_features=feats.train, holdout_features=feats.test, synth_features=feats.synthetic[name],
        synth_files=[record_name(r, i) for i, r in enumerate(synth.records)],
        train_ids=image_ids(inputs.dataset, inputs.train_idx), holdout_ids=image_ids(inputs.dataset, inputs.test_idx),
        percentile=percentile,
    )
    return PrivacySummary.from_dict(summary, source=f"privacy audit of {name}"), pairs


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


# --- brainsynth audit -------------------------------------------------------------------------

def audit(
    train: str | Path,
    synthetic: str | Path,
    out: str | Path,
    cfg: AuditConfig,
    features: EvaluateConfig,
    *,
    filter_flagged: bool = False,
    device: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Audit a synthetic image set for copies of a prepared dataset's training images.

    Parameters
    ----------
    train : path
        Prepared DATASET; its ``train`` split is what the generator saw, its ``test`` split the
        held-out reference.
    synthetic : path
        Image-set folder (``brainsynth generate``).
    out : path
        Output folder: ``privacy.json``, ``privacy.md``, ``distances.tsv``, ``nearest_pairs.png``,
        ``distance_histogram.png``, ``config.yaml`` and, with ``filter_flagged``, ``filtered/``.
    cfg : AuditConfig
        ``percentile``: the held-out percentile (in %) defining a near-copy.
    features : EvaluateConfig
        The feature extractor (see :func:`brainsynth.evaluate.features.get_extractor`); its
        ``bootstrap`` and ``seed`` are not used here.
    filter_flagged : bool
        Also write the synthetic set minus the flagged images to ``OUT/filtered``.
    device : str, optional
        Where features are extracted.
    force : bool
        Replace an existing ``out``.

    Returns
    -------
    dict
        The privacy summary (as in ``privacy.json["privacy"]``) plus ``out``.
    """
    cfg.check()
    features.check()
    extractors.check_extractor_name(features.features)
    check_output_free(out, force)  # fail before the expensive part
    dataset = load_dataset(train)
    train_idx, hold_idx = dataset.indices("train"), dataset.indices("test")
    _check_audit_split(dataset, train_idx, hold_idx)
    synth = read_image_set(synthetic)
    check_same_size(Path(synthetic).name, synthetic, synth, dataset)
    train_images, hold_images = dataset.float_images(train_idx), dataset.float_images(hold_idx)
    train_ids, hold_ids = image_ids(dataset, train_idx), image_ids(dataset, hold_idx)
    synth_files = [record_name(r, i) for i, r in enumerate(synth.records)]

    extractor = extractors.get_extractor(features, device=device)
    log.info("extracting features of %d training, %d held-out and %d synthetic images",
             len(train_images), len(hold_images), len(synth))
    train_f, hold_f, synth_f = (extractor.extract(x) for x in (train_images, hold_images, synth.images))

    result = compute_privacy(train_images, hold_images, synth.images, train_features=train_f,
                             holdout_features=hold_f, synth_features=synth_f, train_ids=train_ids,
                             percentile=cfg.percentile)
    summary, pairs = summarise_privacy(result, train_images=train_images, synth_images=synth.images,
                                       synth_files=synth_files, train_ids=train_ids, holdout_ids=hold_ids)
    document = AuditReport(
        brainsynth_version=__version__,
        created=_created(),
        simulated=bool(dataset.manifest.get("simulated", False)),
        privacy=PrivacySummary.from_dict(summary, source="privacy audit"),
        features=_features_info(extractor),
        inputs=AuditInputs(train=str(Path(train)), synthetic=str(Path(synthetic)),
                           synthetic_provenance={k: v for k, v in synth.meta.items() if k != "images"}),
    )
    with staged_output_dir(out, force=force) as stage:
        note = None
        if filter_flagged:
            note = write_filtered_set(stage, synth, result.flagged, synth_files, synthetic, cfg.percentile)
        write_audit(stage, document, result, pairs, synth_files, train_ids, filtered_note=note)
        atomic_write_text(stage / "config.yaml", sections_yaml(features, cfg, what="privacy audit"))
    print(summary_paragraph(document.privacy, out))
    return {**document.privacy.to_dict(), "out": str(out)}


def _check_audit_split(dataset, train_idx: np.ndarray, hold_idx: np.ndarray) -> None:
    if len(train_idx) < 2:
        raise InputError(f"{dataset.root}: the train split has {len(train_idx)} images; the audit needs at least 2")
    if len(hold_idx) == 0:
        raise InputError(
            f"{dataset.root}: no test split, so there are no held-out real images to calibrate against; "
            "re-run 'brainsynth prepare' with --test-fraction above 0"
        )
