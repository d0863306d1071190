"""The ``brainsynth evaluate`` command, and the input helpers it shares with ``brainsynth audit``.

``evaluate``: GAN-train (with the real and shortcut baselines), GAN-test, fidelity and privacy
of synthetic sets, one report, by the cross-validated protocol of the DATASET's subject folds:

1. read the real DATASET and every fold's synthetic image sets, and refuse inputs that would
   make the numbers meaningless (subjects on both sides of a fold's split, a class missing on
   one side, other image sizes);
2. per fold (:func:`brainsynth.evaluate.folds.evaluate_fold`): features, classifiers and their
   decision scores, fidelity (with the ``real-test`` reference), the privacy audit; each fold
   is written to ``REPORT_DIR/folds/r<repeat>/f<fold>/``. Features go through one
   :class:`~brainsynth.evaluate.feature_cache.FeatureStore`: the real DATASET's are extracted
   once for every fold (and reused by later commands when given a ``feature_cache`` folder);
3. pool the folds (:mod:`brainsynth.evaluate.pooling`): pooled scores with cluster-bootstrap
   intervals over subjects, paired comparisons and their verdicts;
4. write REPORT_DIR (report.json/.md/.html, predictions.tsv, figures, config.yaml) through a
   staged folder.

One fold (``--fold K --repeat R``, default repeat 0 fold 0) is the single-split evaluation of
earlier versions; ``--all-folds`` evaluates every fold, given each fold's synthetic set.
``brainsynth run`` evaluates each fold as its own cached stage (:func:`evaluate_fold_dir`) and
pools the fold folders (:func:`report_from_fold_dirs`).

``audit`` (the privacy audit of one synthetic set on its own) is :mod:`.audit_command`; it shares
the input helpers of this module. Both check their options first, so a typo fails before minutes
of feature extraction.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from brainsynth import LABELS, __version__
from brainsynth.config import AuditConfig, EvaluateConfig, sections_yaml
from brainsynth.data.dataset import load_dataset
from brainsynth.errors import ConfigError, InputError
from brainsynth.evaluate import features as extractors
from brainsynth.evaluate import pooling
from brainsynth.evaluate.feature_cache import FeatureStore
from brainsynth.evaluate.folds import (MIN_IMAGES_PER_CLASS, FoldResult, evaluate_fold, fold_name,
                                       read_fold, write_fold)
from brainsynth.evaluate.report.privacy_utility import privacy_utility
from brainsynth.evaluate.report.schema import FeaturesInfo, Report, Timings
from brainsynth.evaluate.report.tables import REAL_KEY, REAL_TEST_KEY, SHORTCUT_KEY
from brainsynth.evaluate.report.writers import write_report
from brainsynth.fsio import atomic_write_text, check_output_free, staged_output_dir
from brainsynth.imageset import ImageSet, read_image_set
from brainsynth.timing import Stopwatch

log = logging.getLogger("brainsynth.evaluate")

CPU_FRIENDLY_INPUT = 64  # px; 2,000 + 1,100 images evaluate in under 3 minutes on 2 cores
FOLDS_DIR = "folds"
RESERVED = (REAL_KEY, SHORTCUT_KEY, REAL_TEST_KEY)


# --- inputs, shared by both commands ----------------------------------------------------------

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
    for name in synthetic:
        if name in RESERVED:
            raise ConfigError(f"--synthetic {name}=...: the name {name!r} is reserved for a baseline row "
                              f"({', '.join(RESERVED)}); choose another name")


def fold_paths(synthetic: Mapping[str, str], fold_id: tuple[int, int], all_folds: bool) -> dict[str, str]:
    """Each set's folder for one fold: ``{repeat}`` and ``{fold}`` in a DIR replaced (``--all-folds``)."""
    if not all_folds:
        return dict(synthetic)
    repeat, fold = fold_id
    return {name: path.replace("{repeat}", str(repeat)).replace("{fold}", str(fold)) for name, path in synthetic.items()}


def _check_templates(synthetic: Mapping[str, str], dataset) -> None:
    for name, path in synthetic.items():
        needs = ["{fold}"] * (dataset.n_folds > 1) + ["{repeat}"] * (dataset.n_repeats > 1)
        missing = [n for n in needs if n not in path]
        if missing:
            raise ConfigError(f"--synthetic {name}={path}: with --all-folds each fold has its own set, so DIR must "
                              f"name it with {' and '.join(missing)} (e.g. out/r{{repeat}}/f{{fold}}/synthetic/{name})")


# --- brainsynth evaluate ----------------------------------------------------------------------

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
    fold: int = 0,
    repeat: int = 0,
    all_folds: bool = False,
) -> Report:
    """Evaluate synthetic image sets against a prepared real DATASET and write REPORT_DIR.

    Parameters
    ----------
    real : path
        Prepared DATASET (subject folds, see :mod:`brainsynth.data.dataset`).
    synthetic : dict
        Name -> image-set folder (``brainsynth generate``), e.g. {"pggan": ..., "dcgan": ...},
        each generated by a model trained on the chosen fold's training subjects. With
        ``all_folds``, each folder names every fold's set with ``{fold}`` (and ``{repeat}``).
    out : path
        REPORT_DIR; refused if it exists unless ``force``.
    cfg : EvaluateConfig
        The feature extractor (see :func:`brainsynth.evaluate.features.get_extractor`),
        ``bootstrap`` resamples for the 95% confidence intervals (0: none) and the ``seed`` of the
        classifiers, bootstrap, subset draws and patch sampling.
    audit_cfg : AuditConfig, optional
        The privacy audit's ``percentile``; default ``AuditConfig()``.
    runs : dict, optional
        Name -> training run folder (of the first fold), whose curves go into the report.
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
    fold, repeat : int
        The fold evaluated (without ``all_folds``).
    all_folds : bool
        Evaluate every fold of every repeat and pool them.

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
    dataset = load_dataset(real)
    if all_folds:
        _check_templates(synthetic, dataset)
        fold_ids = dataset.fold_ids()
    else:
        dataset.fold(fold, repeat)  # refuses a fold the dataset does not have, before any work
        fold_ids = [(repeat, fold)]
    with watch.time("load"):
        inputs = {fid: _read_sets(fold_paths(synthetic, fid, all_folds), dataset) for fid in fold_ids}
    extractor = extractors.get_extractor(cfg, device=device)
    _warn_slow_features(extractor, cfg.input_size, len(dataset) + sum(len(s) for v in inputs.values()
                                                                       for s in v.values()))
    store = FeatureStore(extractor, feature_cache)
    with staged_output_dir(out, force=force) as stage:
        results = []
        for fid in fold_ids:
            result = evaluate_fold(dataset.fold(fid[1], fid[0]), inputs[fid], fold_paths(synthetic, fid, all_folds),
                                   cfg, audit_cfg, store)
            write_fold(stage / FOLDS_DIR / fold_name(*fid), result)
            results.append(result)
        report = _write_pooled(stage, dataset, results, cfg, audit_cfg, _features_info(extractor), runs, timings,
                               watch)
    return report


def _read_sets(paths: Mapping[str, str], dataset) -> dict[str, ImageSet]:
    sets = {}
    for name, path in paths.items():
        sets[name] = read_image_set(path)
        _check_synthetic(name, path, sets[name], dataset)
    return sets


def _warn_slow_features(extractor, input_size: int, n_total: int) -> None:
    if extractor.device.type == "cpu" and input_size > CPU_FRIENDLY_INPUT and n_total > 1000:
        # VGG-16 costs ~31 GFLOP per image at 224 px against ~2.6 at 64 px.
        log.warning("VGG-16 at %d px on the CPU for %d images may take a long while; --input-size %d is "
                    "~10x faster (recorded in the report either way)", input_size, n_total, CPU_FRIENDLY_INPUT)


def evaluate_fold_dir(real: str | Path, fold_id: tuple[int, int], synthetic: Mapping[str, str], out: str | Path,
                      cfg: EvaluateConfig, audit_cfg: AuditConfig, *, device: str | None = None, force: bool = False,
                      store: FeatureStore | None = None) -> Path:
    """Evaluate one fold and write its fold folder (``brainsynth run``'s per-fold stage).

    Parameters
    ----------
    real : path
        The prepared DATASET.
    fold_id : (int, int)
        ``(repeat, fold)``.
    synthetic : dict
        Name -> the fold's image-set folder.
    out : path
        The fold folder (:func:`brainsynth.evaluate.folds.write_fold`).
    store : FeatureStore, optional
        The extractor behind a feature store shared with other folds of the same call (and its
        cache folder); None builds one for ``cfg`` in memory only.
    """
    dataset = load_dataset(real)
    view = dataset.fold(fold_id[1], fold_id[0])
    sets = _read_sets(synthetic, dataset)
    store = store or FeatureStore(extractors.get_extractor(cfg, device=device))
    result = evaluate_fold(view, sets, synthetic, cfg, audit_cfg, store)
    with staged_output_dir(out, force=force) as stage:
        write_fold(stage, result)
        atomic_write_text(stage / "config.yaml", sections_yaml(cfg, audit_cfg, what=f"evaluation of fold "
                                                                                    f"{fold_name(*fold_id)}"))
    return Path(out)


def report_from_fold_dirs(real: str | Path, fold_dirs: Sequence[str | Path], out: str | Path, cfg: EvaluateConfig,
                          audit_cfg: AuditConfig, *, runs: dict[str, str] | None = None,
                          timings: dict[str, float] | None = None, force: bool = False) -> Report:
    """Pool fold folders (:func:`evaluate_fold_dir`) into REPORT_DIR."""
    watch = Stopwatch(log=log)
    dataset = load_dataset(real)
    results = [read_fold(d) for d in fold_dirs]
    described = {tuple(sorted(r.report.features.to_dict().items())) for r in results}
    if len(described) > 1:
        raise InputError(f"{', '.join(map(str, fold_dirs))}: the folds were evaluated with different feature "
                         "extractors; evaluate them again with one --config")
    with staged_output_dir(out, force=force) as stage:
        return _write_pooled(stage, dataset, results, cfg, audit_cfg, results[0].report.features, runs, timings,
                             watch)


def _write_pooled(stage: Path, dataset, results: Sequence[FoldResult], cfg: EvaluateConfig, audit_cfg: AuditConfig,
                  features: FeaturesInfo, runs: Mapping[str, str] | None, timings: Mapping[str, float] | None,
                  watch: Stopwatch) -> Report:
    """Pool the folds and write report.json/.md/.html, predictions.tsv, figures and config.yaml into ``stage``."""
    with watch.time("pool"):
        gan_train, comparisons, units = pooling.pool_gan_train(results, cfg)
        sections = dict(protocol=pooling.protocol_summary(dataset, results, units, cfg),
                        data=pooling.data_summary(dataset, results), gan_train=gan_train,
                        gan_test=pooling.pool_gan_test(results, cfg), comparisons=comparisons,
                        fidelity=pooling.pool_fidelity(results), privacy=pooling.pool_privacy(results, audit_cfg))
        sections["privacy_utility"] = privacy_utility(sections["gan_train"], sections["privacy"])
    report = Report(brainsynth_version=__version__, created=_created(),
                    simulated=bool(dataset.manifest.get("simulated", False)), features=features,
                    device=", ".join(sorted({r.report.device for r in results})), **sections,
                    timings=_timings(watch, results, timings))
    predictions = pd.concat([r.predictions for r in results], ignore_index=True)
    write_report(stage, report, predictions=predictions, drawn=results[0].figures,
                 runs={k: Path(v) for k, v in (runs or {}).items()})
    atomic_write_text(stage / "config.yaml", sections_yaml(cfg, audit_cfg, what="evaluation"))
    return report


def _timings(watch: Stopwatch, results: Sequence[FoldResult], earlier: Mapping[str, float] | None) -> Timings:
    """The folds' step times summed, beside the caller's earlier stages (which never overwrite ours)."""
    own = {f for f in Timings.__dataclass_fields__}
    seconds = pooling.fold_seconds(results)
    n_images = sum(r.report.data.n_train + r.report.data.n_test + sum(s.n_images for s in r.report.synthetic.values())
                   for r in results)
    return Timings(
        other_stages={k: float(v) for k, v in (earlier or {}).items() if k not in own},
        evaluate_load=round(seconds.get("load", 0.0) + watch.seconds.get("load", 0.0), 3),
        evaluate_features=round(seconds.get("features", 0.0), 3),
        evaluate_gan_train=round(seconds.get("gan_train", 0.0), 3),
        evaluate_fidelity=round(seconds.get("fidelity", 0.0), 3),
        evaluate_privacy=round(seconds.get("privacy", 0.0), 3),
        evaluate_images_per_s_features=round(n_images / max(seconds.get("features", 0.0), 1e-9), 2),
        evaluate_total=round(max(watch.total(), sum(seconds.values())), 3),
    )

