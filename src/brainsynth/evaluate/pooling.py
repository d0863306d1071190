"""The report of a cross-validated evaluation: every fold's results pooled into one :class:`Report`.

GAN-train rows are pooled from the folds' decision scores (:mod:`brainsynth.evaluate.protocol`):
every test slice of every fold and repeat, each subject tested once per repeat, one set of
cluster-bootstrap resamples over test subjects shared by every row, every interval and every
paired comparison. GAN-test is pooled over the folds' synthetic images. Fidelity numbers are
the mean over folds with their standard deviation, and every fold's own numbers; the privacy
audit is pooled by :func:`brainsynth.evaluate.privacy.summary.pool_folds` (counts summed with
Wilson intervals, the mean headline membership AUC with a joint permutation p-value).
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from brainsynth import LABELS
from brainsynth.config import AuditConfig, EvaluateConfig
from brainsynth.evaluate import protocol
from brainsynth.evaluate.folds import FoldResult, fold_name
from brainsynth.evaluate.gan_train import score_predictions
from brainsynth.evaluate.privacy.summary import pool_folds
from brainsynth.evaluate.report.schema import (
    ClassifierResult,
    Comparison,
    DataSummary,
    FidelityFold,
    FidelityResult,
    FidelitySummary,
    FoldScores,
    Intervals,
    LevelScores,
    PrivacyFold,
    PrivacyPooled,
    Protocol,
    RealData,
    SyntheticData,
)
from brainsynth.evaluate.report.tables import REAL_KEY, REAL_TEST_KEY, SHORTCUT_KEY

IMAGE_FEATURES = "image features (see features)"
SHORTCUT_INPUTS = ("global slice features: brain area, mean and SD of brain intensity, slice position "
                   "(the shortcut baseline)")


def row_names(results: Sequence[FoldResult]) -> list[str]:
    """GAN-train rows in report order: real, the synthetic sets as given, shortcut."""
    sets = list(results[0].report.synthetic)
    return [REAL_KEY, *sets, SHORTCUT_KEY]


def comparison_pairs(rows: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) of every paired comparison: every pair of rows, in report order (real first, shortcut last)."""
    return list(itertools.combinations(rows, 2))


# --- GAN-train ----------------------------------------------------------------------------------

def _intervals(ci: dict[str, list] | None) -> Intervals | None:
    return None if ci is None else Intervals(**{m: tuple(ci[m]) for m in protocol.METRICS})


def _level(numbers: dict[str, Any]) -> LevelScores:
    return LevelScores(sensitivity=_num(numbers["sensitivity"]), specificity=_num(numbers["specificity"]),
                       hm=_num(numbers["hm"]), ci=_intervals(numbers["ci"]), ci_note=numbers["ci_note"],
                       n=numbers["n"], n_groups=numbers["n_groups"], unit=numbers["unit"])


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _fold_scores(rows: pd.DataFrame, repeat: int, fold: int, n_train: int | None, cfg: EvaluateConfig) -> FoldScores:
    units = protocol.units_of(rows)
    note = protocol.ci_note(units, cfg.bootstrap)
    weights = None if note else protocol.resample_weights(units.labels, cfg.bootstrap, cfg.seed)
    counts = protocol.subject_counts(rows, units)
    sl = protocol.pooled_level(counts["slice"], weights, note, level="slice", n=len(rows))
    return FoldScores(repeat=repeat, fold=fold, sensitivity=_num(sl["sensitivity"]),
                      specificity=_num(sl["specificity"]), hm=_num(sl["hm"]), ci=_intervals(sl["ci"]),
                      ci_note=note, subject_hm=_num(protocol.rates(counts["subject"])["hm"]), n=len(rows),
                      n_subjects=units.per_label(), n_train=n_train)


def pool_gan_train(results: Sequence[FoldResult], cfg: EvaluateConfig
                   ) -> tuple[dict[str, ClassifierResult], list[Comparison], protocol.Units]:
    """Pooled GAN-train rows and their paired comparisons, from every fold's predictions."""
    predictions = pd.concat([r.predictions for r in results], ignore_index=True)
    rows = row_names(results)
    units = protocol.units_of(predictions[predictions["set"] == REAL_KEY])
    note = protocol.ci_note(units, cfg.bootstrap)
    # One set of resamples for every row and every comparison: that is what makes them paired.
    weights = None if note else protocol.resample_weights(units.labels, cfg.bootstrap, cfg.seed)
    counts: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, ClassifierResult] = {}
    for name in rows:
        mine = predictions[predictions["set"] == name]
        counts[name] = protocol.subject_counts(mine, units)
        n_units = len(mine.groupby(["repeat", "subject"]))
        per_fold = [_fold_scores(mine[(mine["repeat"] == r.report.repeat) & (mine["fold"] == r.report.fold)],
                                 r.report.repeat, r.report.fold, r.report.n_train.get(name), cfg) for r in results]
        synthetic = name not in (REAL_KEY, SHORTCUT_KEY)
        out[name] = ClassifierResult(
            slice=_level(protocol.pooled_level(counts[name]["slice"], weights, note, level="slice", n=len(mine))),
            subject=_level(protocol.pooled_level(counts[name]["subject"], weights, note, level="subject",
                                                 n=n_units)),
            n_train=sum(r.report.n_train[name] for r in results) if synthetic else None,
            per_fold=per_fold,
            inputs=SHORTCUT_INPUTS if name == SHORTCUT_KEY else IMAGE_FEATURES,
        )
    comparisons = []
    for a, b in comparison_pairs(rows):
        for metric, level in (("hm", "slice"), ("subject_hm", "subject")):
            c = protocol.compare(counts[a][level], counts[b][level], weights, note, "hm")
            comparisons.append(Comparison(
                a=a, b=b, metric=metric, a_value=_num(c["a_value"]), b_value=_num(c["b_value"]),
                diff=_num(c["diff"]), ci=None if c["ci"] is None else tuple(c["ci"]), ci_note=c["ci_note"],
                verdict=c["verdict"], ratio=_num(c["ratio"]),
                ratio_ci=None if c["ratio_ci"] is None else tuple(c["ratio_ci"])))
    return out, comparisons, units


# --- GAN-test -----------------------------------------------------------------------------------

def _image_level(scores: dict[str, Any], n_boot: int) -> LevelScores:
    level = scores["slice"]
    return LevelScores(sensitivity=_num(level["sensitivity"]), specificity=_num(level["specificity"]),
                       hm=_num(level["hm"]), ci=_intervals(level["ci"]),
                       ci_note=None if level["ci"] is not None else "n/a: bootstrap = 0 (no resamples)",
                       n=level["n"], n_groups=level["n_groups"], unit=level["unit"])


def pool_gan_test(results: Sequence[FoldResult], cfg: EvaluateConfig) -> dict[str, ClassifierResult]:
    """GAN-test of each set over every fold's synthetic images (images are the units)."""
    table = pd.concat([r.gan_test for r in results], ignore_index=True)
    out = {}
    for name in results[0].report.synthetic:
        mine = table[table["set"] == name]
        y = np.array([LABELS.index(lbl) for lbl in mine["label"]], dtype=np.int64)
        pooled = _image_level(score_predictions(mine["score"].to_numpy(), y, None, n_boot=cfg.bootstrap,
                                                seed=cfg.seed), cfg.bootstrap)
        per_fold = []
        for r in results:
            part = mine[(mine["repeat"] == r.report.repeat) & (mine["fold"] == r.report.fold)]
            y_part = np.array([LABELS.index(lbl) for lbl in part["label"]], dtype=np.int64)
            level = _image_level(score_predictions(part["score"].to_numpy(), y_part, None, n_boot=cfg.bootstrap,
                                                   seed=cfg.seed), cfg.bootstrap)
            per_fold.append(FoldScores(repeat=r.report.repeat, fold=r.report.fold, sensitivity=level.sensitivity,
                                       specificity=level.specificity, hm=level.hm, ci=level.ci,
                                       ci_note=level.ci_note, subject_hm=level.hm, n=level.n,
                                       n_subjects={lbl: 0 for lbl in LABELS}, n_train=r.report.n_train[REAL_KEY]))
        out[name] = ClassifierResult(slice=pooled, subject=pooled, n_train=None, per_fold=per_fold,
                                     inputs=IMAGE_FEATURES)
    return out


# --- fidelity -----------------------------------------------------------------------------------

def _combine(values: list[Any], how) -> Any:
    """Apply ``how`` to parallel JSON trees (dicts, lists, numbers) leaf by leaf."""
    first = values[0]
    if isinstance(first, dict):
        return {k: _combine([v[k] for v in values], how) for k in first}
    if isinstance(first, list):
        return [_combine([v[i] for v in values], how) for i in range(len(first))]
    return how(values)


def _mean(values: list[Any]) -> Any:
    if isinstance(values[0], int) and not isinstance(values[0], bool):
        return values[0] if len(set(values)) == 1 else int(round(float(np.mean(values))))
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else None


def _sd(values: list[Any]) -> Any:
    if isinstance(values[0], int) and not isinstance(values[0], bool):
        return 0 if len(set(values)) == 1 else int(round(float(np.std(values, ddof=1))))
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.std(finite, ddof=1)) if len(finite) >= 2 else None


def pool_fidelity(results: Sequence[FoldResult]) -> dict[str, FidelitySummary]:
    """Mean and SD over folds of every fidelity number, beside each fold's own (``real-test`` last)."""
    out = {}
    for name in [*results[0].report.synthetic, REAL_TEST_KEY]:
        folds = [r.report.fidelity[name] for r in results]
        trees = [f.to_dict() for f in folds]
        mean = FidelityResult.from_dict(_combine(trees, _mean), source=f"fidelity mean of {name}")
        sd = FidelityResult.from_dict(_combine(trees, _sd), source=f"fidelity sd of {name}") if len(folds) > 1 \
            else None
        per_fold = [FidelityFold(repeat=r.report.repeat, fold=r.report.fold, values=f) for r, f in zip(results, folds)]
        out[name] = FidelitySummary(**{k: getattr(mean, k) for k in FidelityResult.__dataclass_fields__}, sd=sd,
                                    per_fold=per_fold)
    return out


# --- privacy ------------------------------------------------------------------------------------

def pool_privacy(results: Sequence[FoldResult], cfg: AuditConfig) -> dict[str, PrivacyPooled]:
    """Each set's audits pooled over folds (:func:`brainsynth.evaluate.privacy.summary.pool_folds`), beside each
    fold's whole audit."""
    names = [fold_name(r.report.repeat, r.report.fold) for r in results]
    out = {}
    for name in results[0].report.synthetic:
        pooled = pool_folds([r.privacy_pool[name].as_result() for r in results], names, n_perm=cfg.permutations,
                            seed=cfg.seed)
        audits = [PrivacyFold(repeat=r.report.repeat, fold=r.report.fold, audit=r.report.privacy[name]).to_dict()
                  for r in results]
        out[name] = PrivacyPooled.from_dict({"memorization_rate": pooled["memorization"]["rate"], **pooled,
                                             "audits": audits}, source=f"pooled privacy audit of {name}")
    return out


# --- protocol and data --------------------------------------------------------------------------

def protocol_summary(dataset, results: Sequence[FoldResult], units: protocol.Units, cfg: EvaluateConfig) -> Protocol:
    per_repeat: dict[int, set[str]] = {}
    for r in results:
        per_repeat.setdefault(r.report.repeat, set()).update(r.report.data.test_subjects)
    k, n_rep = dataset.n_folds, dataset.n_repeats
    method = (f"{k}-fold cross-validation by subject, stratified by label" if k > 1 else
              "one hold-out split by subject, stratified by label")
    method += (f", {n_rep} repeats" if n_rep > 1 else "") + (
        "; pooled over every test slice of the evaluated folds; 95% intervals from a cluster bootstrap over test "
        "subjects (stratified by label, each drawn subject with all its slices of every repeat); paired "
        "comparisons on the same resamples")
    return Protocol(folds=k, repeats=n_rep, n_subjects=int(len(dataset.subjects)),
                    subjects_tested_per_repeat=min(len(s) for s in per_repeat.values()),
                    folds_evaluated=len(results), test_subjects_per_label=units.per_label(), bootstrap=cfg.bootstrap,
                    ci_level=protocol.CI_LEVEL, min_subjects_for_ci=protocol.MIN_SUBJECTS_FOR_CI, method=method)


def data_summary(dataset, results: Sequence[FoldResult]) -> DataSummary:
    real = RealData(path=str(dataset.root), n_images=len(dataset), n_subjects=int(len(dataset.subjects)),
                    image_size=dataset.image_size, folds=[r.report.data for r in results])
    synthetic = {}
    for name in results[0].report.synthetic:
        first = results[0].report
        synthetic[name] = SyntheticData(
            path=first.synthetic[name].path,
            n_images=sum(r.report.synthetic[name].n_images for r in results),
            counts={lbl: sum(r.report.counts[name][lbl] for r in results) for lbl in LABELS},
            source=first.sources[name],
            per_fold=[r.report.synthetic[name] for r in results])
    return DataSummary(real=real, synthetic=synthetic)


def fold_seconds(results: Iterable[FoldResult]) -> dict[str, float]:
    """Seconds per evaluation step, summed over folds."""
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.report.seconds.items():
            total[k] = total.get(k, 0.0) + v
    return total
