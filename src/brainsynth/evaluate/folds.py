"""One fold of the cross-validated evaluation, and the fold folder it writes.

A fold (:meth:`brainsynth.data.dataset.PreparedDataset.fold`) has training subjects, which its
generators learned, and test subjects, which nothing in the fold has seen. Per fold:

GAN-train rows
    a linear SVM fit on each synthetic set (every class subsampled to the smallest), on the
    fold's real training images (``real``) and on four global numbers per real training slice
    (``shortcut``: brain area, mean and SD of brain intensity, slice position;
    :func:`brainsynth.evaluate.shortcut.global_slice_features`), each scoring every test slice;
GAN-test
    the ``real`` SVM scoring each synthetic set;
fidelity
    each synthetic set, and the real test images (``real-test``, the reference scale), against
    the real training images, k-NN balls over other subjects;
privacy
    each synthetic set against the training images, calibrated on the test subjects.

The decision scores are kept (``predictions.tsv``), so that pooling over folds
(:mod:`brainsynth.evaluate.pooling`) works from predictions, not from per-fold summaries.

A fold folder holds ``fold.json`` (:class:`~brainsynth.evaluate.report.schema.FoldReport`),
``predictions.tsv`` (:data:`~brainsynth.evaluate.protocol.PREDICTION_COLUMNS`), ``gan_test.tsv``,
``privacy_pool.npz`` (what :func:`brainsynth.evaluate.privacy.summary.pool_folds` needs of each
set's audit: its flags and the headline membership attack's pair counts) and ``figures/``
(sample grids and nearest pairs of this fold).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from brainsynth import LABELS
from brainsynth.config import AuditConfig, EvaluateConfig
from brainsynth.devices import describe_device
from brainsynth.errors import InputError
from brainsynth.evaluate import fidelity as fidelity_metrics
from brainsynth.evaluate.report import figures
from brainsynth.evaluate.feature_cache import FeatureStore
from brainsynth.evaluate.gan_train import balanced_subsample, fit_classifier
from brainsynth.evaluate.privacy import membership
from brainsynth.evaluate.privacy.fold import fold_reference
from brainsynth.evaluate.privacy.summary import privacy_audit
from brainsynth.evaluate.protocol import PREDICTION_COLUMNS
from brainsynth.evaluate.report.schema import (FeaturesInfo, FidelityResult, FoldData, FoldReport, PrivacySummary,
                                       SyntheticFold)
from brainsynth.evaluate.shortcut import global_slice_features
from brainsynth.evaluate.report.tables import REAL_KEY, REAL_TEST_KEY, SHORTCUT_KEY
from brainsynth.evaluate.report.writers import Figure, file_safe
from brainsynth.fsio import atomic_output_path, atomic_write_bytes, atomic_write_json, atomic_write_text
from brainsynth.imageset import ImageSet
from brainsynth.memory import map_large_blocks, release_freed_memory
from brainsynth.timing import Stopwatch

log = logging.getLogger("brainsynth.evaluate.folds")

FOLD_FILE = "fold.json"
POOL_FILE = "privacy_pool.npz"
PREDICTIONS_FILE = "predictions.tsv"
GAN_TEST_FILE = "gan_test.tsv"
GAN_TEST_COLUMNS = ("set", "repeat", "fold", "image", "label", "score")
FIGURES_DIR = "figures"
MIN_IMAGES_PER_CLASS = 3  # the SVM needs 2 per class, the k-NN metrics more than k=5 in all


def fold_name(repeat: int, fold: int) -> str:
    """``"r0/f1"``: the prefix of a fold's stage names and folders."""
    return f"r{repeat}/f{fold}"


# --- names shared by evaluate and audit ---------------------------------------------------------

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


def slice_positions(table: pd.DataFrame) -> np.ndarray:
    """Each row's slice position in its subject's kept range, 0 (first) .. 1 (last) [N]."""
    z = table["slice"].to_numpy(dtype=np.float64)
    first = table.groupby("subject")["slice"].transform("min").to_numpy(dtype=np.float64)
    last = table.groupby("subject")["slice"].transform("max").to_numpy(dtype=np.float64)
    return np.where(last > first, (z - first) / np.where(last > first, last - first, 1.0), 0.0)


def check_fold(view) -> None:
    """Refuse a fold whose subjects straddle its split or whose train or test side lacks a class."""
    table = view.table
    straddling = table.groupby("subject")["split"].nunique()
    straddling = sorted(straddling[straddling > 1].index)
    if straddling:
        raise InputError(
            f"{view.root}: subjects {', '.join(map(str, straddling[:5]))} have images in both the train and the "
            "test split, so test scores would leak; re-run 'brainsynth prepare' (it splits by subject)"
        )
    repeat, fold = view.fold_id
    for split in ("train", "test"):
        for label in LABELS:
            n = len(view.indices(split, label))
            if n < MIN_IMAGES_PER_CLASS:
                raise InputError(
                    f"{view.root}: repeat {repeat} fold {fold}: the {split} split has {n} {label} images (need at "
                    f"least {MIN_IMAGES_PER_CLASS}); re-run 'brainsynth prepare' with more subjects, fewer --folds "
                    "or another --test-fraction/--seed so both classes are on both sides of every fold"
                )


# --- one fold -----------------------------------------------------------------------------------

@dataclass
class PoolInputs:
    """What pooling a set's privacy audit over folds needs of one fold's
    :class:`~brainsynth.evaluate.privacy.fold.PrivacyResult` (it is pooled from arrays, not from summaries)."""

    flagged: np.ndarray  # bool [N] synthetic images flagged
    holdout_flagged: np.ndarray  # bool [H] held-out images flagged
    half_b: np.ndarray  # bool [H] held-out images that did not set the thresholds
    auc: float | None = None  # the headline membership attack of the fold
    counts: np.ndarray | None = None  # [S, S] its pair counts over subjects
    sizes: np.ndarray | None = None  # [S] its scored units per subject
    n_member_subjects: int = 0
    nonmember_in_a: np.ndarray | None = None  # bool [held-out subjects, sorted]: in half A (else half B)

    @classmethod
    def of(cls, result) -> PoolInputs:
        attack = (result.attacks or {}).get(membership.headline_key())
        keep = attack is not None and attack.counts is not None
        return cls(flagged=np.asarray(result.flagged), holdout_flagged=np.asarray(result.holdout_flagged),
                   half_b=np.asarray(result.half_b), auc=attack.auc if attack else None,
                   counts=attack.counts if keep else None, sizes=attack.sizes if keep else None,
                   n_member_subjects=attack.n_member_subjects if attack else 0,
                   nonmember_in_a=np.asarray(result.nonmember_in_a) if attack else None)

    def as_result(self) -> SimpleNamespace:
        """The attributes of a ``PrivacyResult`` that ``pool_folds`` reads."""
        attack = None if self.auc is None and self.counts is None else SimpleNamespace(
            auc=self.auc, counts=self.counts, sizes=self.sizes, n_member_subjects=self.n_member_subjects)
        return SimpleNamespace(flagged=self.flagged, holdout_flagged=self.holdout_flagged, half_b=self.half_b,
                               attacks={membership.headline_key(): attack} if attack else None,
                               nonmember_in_a=self.nonmember_in_a)

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        out = {f"{name}/flagged": self.flagged, f"{name}/holdout_flagged": self.holdout_flagged,
               f"{name}/half_b": self.half_b, f"{name}/n_member_subjects": np.array(self.n_member_subjects)}
        if self.auc is not None:
            out[f"{name}/auc"] = np.array(self.auc)
        if self.counts is not None:
            out[f"{name}/counts"], out[f"{name}/sizes"] = self.counts, self.sizes
        if self.nonmember_in_a is not None:
            out[f"{name}/nonmember_in_a"] = self.nonmember_in_a
        return out

    @classmethod
    def from_arrays(cls, data, name: str) -> PoolInputs:
        get = (lambda key: data[f"{name}/{key}"] if f"{name}/{key}" in data else None)
        auc = get("auc")
        return cls(flagged=get("flagged").astype(bool), holdout_flagged=get("holdout_flagged").astype(bool),
                   half_b=get("half_b").astype(bool), auc=None if auc is None else float(auc), counts=get("counts"),
                   sizes=get("sizes"), n_member_subjects=int(get("n_member_subjects")),
                   nonmember_in_a=None if get("nonmember_in_a") is None else get("nonmember_in_a").astype(bool))


@dataclass
class FoldResult:
    """One fold's evaluation, in memory (:func:`write_fold` / :func:`read_fold` for its folder)."""

    report: FoldReport
    predictions: pd.DataFrame  # PREDICTION_COLUMNS, every GAN-train row's scores of the fold's test slices
    gan_test: pd.DataFrame  # GAN_TEST_COLUMNS, the real SVM's scores of each synthetic image
    privacy_pool: dict[str, PoolInputs] = field(default_factory=dict)  # set -> what pooling the audit needs
    figures: list[Figure] = field(default_factory=list)

    @property
    def fold_id(self) -> tuple[int, int]:
        return self.report.repeat, self.report.fold


def evaluate_fold(view, sets: Mapping[str, ImageSet], paths: Mapping[str, str], cfg: EvaluateConfig,
                  audit_cfg: AuditConfig, store: FeatureStore) -> FoldResult:
    """Evaluate every synthetic set of one fold against that fold's real subjects.

    Parameters
    ----------
    view : PreparedDataset
        The dataset's view of one fold (``view.fold_id``), its ``split`` column the fold's.
    sets : dict
        name -> the fold's synthetic :class:`~brainsynth.imageset.ImageSet`, trained on the
        fold's training subjects only.
    paths : dict
        name -> the image-set folder (recorded).
    cfg, audit_cfg : EvaluateConfig, AuditConfig
        Bootstrap and seed (classifiers, subsets), the near-copy percentile.
    store : FeatureStore
        The feature extractor behind a content-addressed store: the dataset's real features
        are extracted once for all its folds (and reused from its folder by later commands).
    """
    repeat, fold = view.fold_id
    map_large_blocks()  # the stages' large temporaries unmapped when freed, not kept in the C heap
    watch = Stopwatch(log=log)
    device = getattr(store.extractor, "device", torch.device("cpu"))  # the audit runs where the features do
    with watch.time("load"):
        check_fold(view)
        train_idx, test_idx = view.indices("train"), view.indices("test")
        table = view.table
        train_set = _real_set(view, train_idx)
        test_set = _real_set(view, test_idx)
    with watch.time("features"):
        real_f = store.dataset(view)  # [N_all, D]: every fold selects rows of one extraction
        train_f, test_f = real_f[train_idx], real_f[test_idx]  # [N, D], [M, D]
        synth_f = {name: store.images(s.images, what=f"synthetic set {name!r}") for name, s in sets.items()}
    release_freed_memory()  # the earlier stages' freed blocks, back to the OS before this one
    with watch.time("gan_train"):
        predictions, gan_test, n_train = _classifiers(view, train_idx, test_idx, train_f, test_f, sets, synth_f,
                                                      cfg.seed)
    release_freed_memory()
    with watch.time("fidelity"):
        fidelity = _fidelity(train_set, train_f, sets, synth_f, test_set, test_f, cfg.seed)
    pairs: dict[str, list[dict]] = {}
    privacy: dict[str, PrivacySummary] = {}
    pool: dict[str, PoolInputs] = {}
    release_freed_memory()
    with watch.time("privacy"):
        # The fold's real side (matching, half-A/half-B split, thresholds) once for every set.
        reference = fold_reference(
            train_set.images, test_set.images, train_features=train_f, holdout_features=test_f,
            train_ids=image_ids(view, train_idx), holdout_ids=image_ids(view, test_idx),
            holdout_labels=test_set.labels, cfg=audit_cfg, device=device) if sets else None
        for name, synth in sets.items():
            summary, pairs[name], result = privacy_audit(
                train_set.images, None, synth.images, synth_features=synth_f[name], reference=reference,
                synth_files=[record_name(r, i) for i, r in enumerate(synth.records)])
            privacy[name] = PrivacySummary.from_dict(summary, source=f"privacy audit of {name}")
            pool[name] = PoolInputs.of(result)
    subjects = table["subject"].to_numpy().astype(str)
    report = FoldReport(
        repeat=repeat, fold=fold, features=FeaturesInfo.from_dict(store.extractor.describe(),
                                                                  source="feature extractor"),
        device=describe_device(device),
        data=FoldData(repeat=repeat, fold=fold, n_train=len(train_idx), n_test=len(test_idx),
                      train_subjects=sorted(set(subjects[train_idx])), test_subjects=sorted(set(subjects[test_idx]))),
        synthetic={name: SyntheticFold(repeat=repeat, fold=fold, path=str(paths[name]), n_images=len(s))
                   for name, s in sets.items()},
        counts={name: {lbl: int(np.sum(s.labels == lbl)) for lbl in LABELS} for name, s in sets.items()},
        # Generated sets record their generator; other image sets only their own metadata.
        sources={name: s.meta.get("generator", {k: v for k, v in s.meta.items() if k != "counts"})
                 for name, s in sets.items()},
        n_train=n_train, fidelity=fidelity, privacy=privacy,
        seconds={k: round(v, 3) for k, v in watch.seconds.items()},
    )
    drawn = fold_figures(train_set, sets, pairs, f"repeat {repeat}, fold {fold}")
    log.info("fold %s evaluated in %.1f s", fold_name(repeat, fold), watch.total())
    return FoldResult(report=report, predictions=predictions, gan_test=gan_test, privacy_pool=pool, figures=drawn)


def _real_set(view, idx: np.ndarray) -> ImageSet:
    """Some rows of the dataset as an :class:`ImageSet` (images float [n, H, W] in [0, 1])."""
    rows = view.table.iloc[idx]
    records = [{"label": r.label, "subject": r.subject, "slice": int(r.slice)} for r in rows.itertuples()]
    return ImageSet(images=view.float_images(idx), labels=rows["label"].to_numpy().astype(str), records=records,
                    meta={"synthetic": False}, root=view.root)


def _classifiers(view, train_idx: np.ndarray, test_idx: np.ndarray, train_f: np.ndarray, test_f: np.ndarray,
                 sets: Mapping[str, ImageSet], synth_f: Mapping[str, np.ndarray],
                 seed: int) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Every GAN-train row's decision scores of the test slices, and GAN-test's of each set."""
    repeat, fold = view.fold_id
    table = view.table
    y_train, test_rows = view.label_indices(train_idx), table.iloc[test_idx]

    def rows(name: str, scores: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"set": name, "repeat": repeat, "fold": fold, "subject": test_rows["subject"].to_numpy(),
                             "slice": test_rows["slice"].to_numpy(), "patch": test_rows["patch"].to_numpy(),
                             "label": test_rows["label"].to_numpy(), "score": scores})[list(PREDICTION_COLUMNS)]

    real_svm = fit_classifier(train_f, y_train, seed)
    parts = [rows(REAL_KEY, real_svm.decision_function(test_f))]
    n_train = {REAL_KEY: len(train_idx)}
    gan_test = []
    for name, synth in sets.items():
        y_synth = synth.label_indices()
        keep = balanced_subsample(y_synth, seed)
        svm = fit_classifier(synth_f[name][keep], y_synth[keep], seed)
        parts.append(rows(name, svm.decision_function(test_f)))
        n_train[name] = len(keep)
        gan_test.append(pd.DataFrame({
            "set": name, "repeat": repeat, "fold": fold,
            "image": [record_name(r, i) for i, r in enumerate(synth.records)], "label": synth.labels.astype(str),
            "score": real_svm.decision_function(synth_f[name])})[list(GAN_TEST_COLUMNS)])
    # The shortcut: the same SVM on four numbers per slice that any scanner or head-size confound moves.
    position = slice_positions(table)
    shortcut = fit_classifier(global_slice_features(view.images[train_idx], position[train_idx]), y_train, seed)
    parts.append(rows(SHORTCUT_KEY, shortcut.decision_function(
        global_slice_features(view.images[test_idx], position[test_idx]))))
    n_train[SHORTCUT_KEY] = len(train_idx)
    empty = pd.DataFrame(columns=list(GAN_TEST_COLUMNS))
    return pd.concat(parts, ignore_index=True), pd.concat(gan_test, ignore_index=True) if gan_test else empty, n_train


def _fidelity(train: ImageSet, train_f: np.ndarray, sets: Mapping[str, ImageSet], synth_f: Mapping[str, np.ndarray],
              test: ImageSet, test_f: np.ndarray, seed: int) -> dict[str, FidelityResult]:
    """Every synthetic set, and the real test slices (the ``real-test`` scale), against the real
    training slices; the real side is computed once for all of them."""
    def subjects(images: ImageSet) -> np.ndarray:
        return np.array([r["subject"] for r in images.records])

    compared = {name: (s.images, s.labels, synth_f[name]) for name, s in sets.items()}
    compared[REAL_TEST_KEY] = (test.images, test.labels, test_f)
    numbers = fidelity_metrics.fidelity_reports(
        train.images, train.labels, train_f, compared, labels=LABELS, seed=seed,
        ms_ssim_pairs=fidelity_metrics.MS_SSIM_PAIRS, real_subjects=subjects(train),
        synth_subjects={REAL_TEST_KEY: subjects(test)})
    return {name: FidelityResult.from_dict(values, source=f"fidelity of {name}") for name, values in numbers.items()}


def fold_figures(real_train: ImageSet, sets: Mapping[str, ImageSet], pairs: Mapping[str, list[dict]],
                 where: str) -> list[Figure]:
    """Sample grids and the closest synthetic-training pairs of one fold."""
    drawn: list[Figure] = []
    for name, images in sets.items():
        drawn.append(("samples", name, f"{name} ({where}): samples per class beside real training slices",
                      figures.figure_samples(real_train, images, name)))
    for name, found in pairs.items():
        if found:
            drawn.append(("pairs", name, f"{name} ({where}): the closest synthetic-training pairs after alignment "
                                         "(top: synthetic; middle: its nearest training slice as aligned, with the "
                                         "transform found; bottom: their difference; d = aligned pixel distance)",
                          figures.figure_nearest_pairs(found, title=f"{name}: closest synthetic-training pairs")))
    return drawn


# --- the fold folder ----------------------------------------------------------------------------

def write_fold(out_dir: str | Path, result: FoldResult) -> None:
    """Write ``fold.json``, ``predictions.tsv``, ``gan_test.tsv`` and ``figures/`` into a (staged) folder."""
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / FOLD_FILE, result.report.to_dict())
    atomic_write_text(out_dir / PREDICTIONS_FILE, result.predictions.to_csv(sep="\t", index=False))
    atomic_write_text(out_dir / GAN_TEST_FILE, result.gan_test.to_csv(sep="\t", index=False))
    arrays = {k: v for name, p in result.privacy_pool.items() for k, v in p.arrays(name).items()}
    with atomic_output_path(out_dir / POOL_FILE) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    captions = []
    for section, name, caption, png in result.figures:
        atomic_write_bytes(out_dir / FIGURES_DIR / f"{section}_{file_safe(name)}.png", png)
        captions.append({"section": section, "set": name, "caption": caption,
                         "file": f"{section}_{file_safe(name)}.png"})
    atomic_write_json(out_dir / FIGURES_DIR / "captions.json", captions)


def read_fold(fold_dir: str | Path) -> FoldResult:
    """Read a fold folder back (:func:`write_fold`)."""
    fold_dir = Path(fold_dir)
    try:
        report = FoldReport.from_dict(json.loads((fold_dir / FOLD_FILE).read_text()), source=str(fold_dir / FOLD_FILE))
        kinds = {"subject": str, "label": str, "set": str, "image": str}
        predictions = pd.read_csv(fold_dir / PREDICTIONS_FILE, sep="\t", dtype=kinds, keep_default_na=False)
        gan_test = pd.read_csv(fold_dir / GAN_TEST_FILE, sep="\t", dtype=kinds, keep_default_na=False)
        with np.load(fold_dir / POOL_FILE) as data:
            pool = {name: PoolInputs.from_arrays(data, name) for name in report.privacy}
        captions = json.loads((fold_dir / FIGURES_DIR / "captions.json").read_text())
        drawn = [(c["section"], c["set"], c["caption"], (fold_dir / FIGURES_DIR / c["file"]).read_bytes())
                 for c in captions]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{fold_dir}: unreadable fold folder ({type(exc).__name__}: {exc}); evaluate the fold "
                         "again") from None
    return FoldResult(report=report, predictions=predictions, gan_test=gan_test, privacy_pool=pool, figures=drawn)

