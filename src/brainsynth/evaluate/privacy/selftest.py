"""``brainsynth audit --selftest DATASET``: does the audit find copies on this dataset?

Copies of training slices are planted, each re-acquired by one transform family (and all at
once, ``combined``; :mod:`brainsynth.evaluate.privacy.planting`), among the real images of held-out half B, which play the
synthetic set that copies nothing. The audit then runs as it would on a generator's output
(thresholds set on half A), and the self-test reports, per family, the share of planted copies
flagged (with a 95 % Wilson interval), and the share of the half-B images flagged (false flags).

It passes when every family reaches ``audit.selftest_target`` (0.95) and the false flags stay at
or below ``audit.max_false_flags`` (0.05); otherwise it fails with one line and exit status 1.
Because the thresholds, bands and search bounds are the audit's own, a pass says that an audit of
this dataset with this configuration catches these copies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from brainsynth import __version__
from brainsynth.config import AuditConfig, EvaluateConfig, sections_yaml
from brainsynth.data.dataset import load_dataset
from brainsynth.errors import SelfTestFailed
from brainsynth.evaluate import features as extractors
from brainsynth.evaluate.audit_command import real_split
from brainsynth.evaluate.privacy.calibration import share, split_holdout, subject_of
from brainsynth.evaluate.commands import _created, _features_info
from brainsynth.evaluate.privacy.distances import FEATURE_DEFINITION, pixel_definition
from brainsynth.evaluate.privacy.planting import FAMILIES, apply_plant, draw_plant, family_text
from brainsynth.evaluate.privacy.fold import audit_fold, family_of
from brainsynth.evaluate.privacy.summary import calibration_summary
from brainsynth.evaluate.report.schema import SCHEMA_VERSION, SelfTestReport
from brainsynth.evaluate.report.privacy_writers import selftest_markdown, selftest_table
from brainsynth.fsio import atomic_write_json, atomic_write_text, check_output_free, staged_output_dir

log = logging.getLogger("brainsynth.selftest")


def plant_copies(train_images: np.ndarray, cfg: AuditConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``selftest_copies`` planted copies per family, sources drawn without replacement where possible.

    Returns
    -------
    images : np.ndarray
        float32 [F * n, H, W].
    families : np.ndarray
        str [F * n], the family of each copy.
    sources : np.ndarray
        int [F * n], the training image each copy was made from.
    """
    rng = np.random.default_rng(cfg.seed)
    bounds, side, n = family_of(cfg), train_images.shape[-1], cfg.selftest_copies
    images, families, sources = [], [], []
    for family in FAMILIES:
        chosen = rng.choice(len(train_images), n, replace=n > len(train_images))
        for j in chosen:
            images.append(apply_plant(train_images[j], draw_plant(family, rng, bounds, side), rng))
            families.append(family)
            sources.append(int(j))
    return np.stack(images), np.array(families), np.array(sources)


def selftest(dataset: str | Path, cfg: AuditConfig, features: EvaluateConfig, *, out: str | Path | None = None,
             device: str | None = None, force: bool = False) -> SelfTestReport:
    """Plant copies among held-out images, audit them, print one table; raise when a target is missed.

    Parameters
    ----------
    dataset : path
        Prepared DATASET: its train split is what copies are made of, its test split the held-out
        reference (half A calibrates, half B is the innocent set).
    cfg : AuditConfig
        The audit's settings, plus ``selftest_copies``, ``selftest_target`` and ``max_false_flags``.
    features : EvaluateConfig
        The feature extractor of the second detector.
    out : path, optional
        Also write ``selftest.json``, ``selftest.md`` and ``config.yaml`` there.

    Raises
    ------
    SelfTestFailed
        When some family's detection is below the target or the false flags above their maximum
        (after the table is printed and ``out`` written).
    """
    cfg.check()
    features.check()
    extractors.check_extractor_name(features.features)
    if out is not None:
        check_output_free(out, force)
    data = load_dataset(dataset)
    real = real_split(data)
    train, hold = real["train_images"], real["holdout_images"]
    half_a = split_holdout([subject_of(i) for i in real["holdout_ids"]], real["holdout_labels"], cfg.seed)
    planted, families, sources = plant_copies(train, cfg)
    innocent = np.flatnonzero(~half_a)
    stand_in = np.concatenate([planted, hold[innocent]])  # [P + B, H, W]: the "synthetic set"
    log.info("self-test: %d planted copies (%d per family) among %d held-out half-B images", len(planted),
             cfg.selftest_copies, len(innocent))

    extractor = extractors.get_extractor(features, device=device)
    train_f, hold_f, stand_f = (extractor.extract(x) for x in (train, hold, stand_in))
    result = audit_fold(train, hold, stand_in, train_features=train_f, holdout_features=hold_f,
                        synth_features=stand_f, train_ids=real["train_ids"], holdout_ids=real["holdout_ids"],
                        holdout_labels=real["holdout_labels"], cfg=cfg, membership=False, device=getattr(extractor, "device", None))
    flagged, pix = result.flagged[:len(planted)], result.spaces["pixel"]
    nearest = pix.synth.index[:len(planted)]  # [P]
    rows = []
    for family in FAMILIES:
        chosen = families == family
        rows.append({
            "family": family,
            "description": family_text(family, family_of(cfg), train.shape[-1]),
            "detection": share(flagged[chosen]),
            "source_found": float(np.mean(nearest[chosen] == sources[chosen])),
            "median_distance": float(np.median(pix.synth_nearest[:len(planted)][chosen])),
            "median_ratio": float(np.median(pix.synth_ratio[:len(planted)][chosen])),
        })
    false_flags = share(result.holdout_flagged[result.half_b])
    missed = [r["family"] for r in rows if r["detection"]["rate"] < cfg.selftest_target]
    too_many = false_flags["rate"] is not None and false_flags["rate"] > cfg.max_false_flags
    report = SelfTestReport.from_dict({
        "schema_version": SCHEMA_VERSION,
        "brainsynth_version": __version__,
        "created": _created(),
        "simulated": bool(data.manifest.get("simulated", False)),
        "dataset": str(Path(dataset)),
        "target": cfg.selftest_target,
        "max_false_flags": cfg.max_false_flags,
        "passed": not missed and not too_many,
        "families": rows,
        "false_flags": false_flags,
        "calibration": calibration_summary(result),
        "transforms": result.family.describe(result.side),
        "distances": {"pixel": pixel_definition(result.family, result.side, result.work_size),
                      "feature": FEATURE_DEFINITION},
        "features": _features_info(extractor).to_dict(),
    }, source="self-test")
    print(selftest_table(report))
    if out is not None:
        with staged_output_dir(out, force=force) as stage:
            atomic_write_json(stage / "selftest.json", report.to_dict())
            atomic_write_text(stage / "selftest.md", selftest_markdown(report))
            atomic_write_text(stage / "config.yaml", sections_yaml(features, cfg, what="privacy self-test"))
    if not report.passed:
        reasons = []
        if missed:
            reasons.append(f"detection below {cfg.selftest_target:.0%} for {', '.join(missed)} (raise audit.percentile, "
                           "or widen the search bounds audit.max_shift / max_rotation / max_scale)")
        if too_many:
            reasons.append(f"{false_flags['rate']:.1%} false flags on held-out half B, at most "
                           f"{cfg.max_false_flags:.0%} allowed (lower audit.percentile, or hold out more subjects)")
        raise SelfTestFailed(f"privacy self-test failed on {dataset}: {'; '.join(reasons)}; see docs/privacy.md")
    return report
