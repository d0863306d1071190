"""From one fold's audit arrays to the JSON summary, the figures' pairs, and several folds pooled.

* :func:`privacy_audit`: audit one fold and summarise it (what ``evaluate`` and ``audit`` call;
  with cross-validation, call it once per fold: training subjects vs that fold's held-out
  subjects, calibration inside the fold).
* :func:`pool_folds`: combine the folds' :class:`~brainsynth.evaluate.privacy.fold.PrivacyResult`
  (counts summed with Wilson intervals, membership AUC averaged with a joint permutation test).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from brainsynth.config import AuditConfig
from brainsynth.evaluate.privacy import membership as mia
from brainsynth.evaluate.privacy import membership_rule
from brainsynth.evaluate.privacy import registration as reg
from brainsynth.evaluate.privacy.calibration import share, subject_of
from brainsynth.evaluate.privacy.distances import FEATURE_DEFINITION, pixel_definition
from brainsynth.evaluate.privacy.fold import LIMITS, SPACES, FoldReference, PrivacyResult, audit_fold
from brainsynth.evaluate.privacy.nearest import Nearest

N_NEAREST_PAIRS = 8
"""How many of the synthetic images most like a copy are shown with their training slice."""

RULES = {
    "flagged": "in pixel (aligned) OR feature space, the distance to the nearest training image divided by the "
               "distance to the nearest training image of ANOTHER subject is strictly below the threshold of the "
               "image's brain-area band: the image is much closer to one person's slice than to anybody else's",
    "calibration": "held-out subjects split in two by subject (seeded, stratified by label); the calibration images "
                   "are half A plus (calibrate_with_training) every training image scored against the OTHER training "
                   "subjects; each brain-area band's ratios divided by their median; one threshold per space at the "
                   "quantile of those rescaled ratios at which the rule flags at most `percentile` % of them",
    "false_flags": "share of half-B held-out images (never used to set the thresholds) flagged by the same rule, "
                   "with a 95% Wilson interval",
    "authenticity": "share of synthetic images at least as far from their nearest training image as that image is "
                    "from its nearest training image of another subject (pixel space)",
    "membership": "GAN-Leaks full black-box: real images scored by the aligned pixel distance to the nearest "
                  "synthetic image, AUC of training vs held-out slices (declared in advance as the headline), 95% "
                  "interval by resampling subjects, p-value by permuting membership among subjects",
}


def _authentic_share(nearest: Nearest, train_neighbour: np.ndarray) -> float:
    """Share of queries at least as far from their nearest training image as it is from another subject's."""
    return float(np.mean(nearest.distance >= train_neighbour[nearest.index]))


def summarise_privacy(result: PrivacyResult, *, synth_files: Sequence[str],
                      n_pairs: int = N_NEAREST_PAIRS) -> dict[str, Any]:
    """The JSON-ready summary of an :func:`~brainsynth.evaluate.privacy.fold.audit_fold` result (the keys of
    :class:`~brainsynth.evaluate.report.schema_privacy.PrivacySummary`)."""
    if result.attacks is None:
        raise ValueError("the result has no membership inference; run audit_fold(..., membership=True)")
    pix = result.spaces["pixel"]
    n_synth, n_train = len(pix.synth), len(result.train_ids)
    memorisation, false_flags = share(result.flagged), share(result.holdout_flagged[result.half_b])
    headline, attacks = result.attacks[mia.headline_key()], result.attacks
    return {
        # repeated for readers of schema 2 (PrivacySummary.derived_keys)
        "holdout_flag_rate": false_flags["rate"],
        "calibration_quantile": float(result.calibration.level),
        "mia_auc_by_space": {s: attacks[f"{s}/slice"].auc for s in SPACES},
        "mia_auc_subject": attacks[f"{mia.HEADLINE[0]}/subject"].auc,
        "mia_auc_subject_by_space": {s: attacks[f"{s}/subject"].auc for s in SPACES},
        "memorization_rate": memorisation["rate"],
        "memorization": memorisation,
        "memorization_rate_by_space": {s: float(result.synth_flags[s].mean()) for s in SPACES},
        "false_flags": false_flags,
        "excess_memorization": (memorisation["rate"] - false_flags["rate"]) if false_flags["n"] else None,
        "percentile": result.calibration.percentile,
        "calibration": calibration_summary(result),
        "transforms": result.family.describe(result.side),
        "mia_auc": headline.auc,
        "mia_ci": list(headline.ci),
        "mia_p_value": headline.p_value,
        "membership": {"headline": mia.headline_key(), "attacks": {k: a.to_dict() for k, a in result.attacks.items()},
                       "half_a": result.halves["a"].to_dict(), "half_b": result.halves["b"].to_dict()},
        "authenticity": _authentic_share(pix.synth, pix.train_neighbour),
        "authenticity_by_space": {
            s: {"synthetic": _authentic_share(result.spaces[s].synth, result.spaces[s].train_neighbour),
                "holdout": _authentic_share(result.spaces[s].holdout, result.spaces[s].train_neighbour)}
            for s in SPACES
        },
        "nearest_distance_median": {
            s: {"synthetic": float(np.median(result.spaces[s].synth_nearest)),
                "holdout": float(np.median(result.spaces[s].holdout_nearest))}
            for s in SPACES
        },
        "ratio_median": {
            s: {"synthetic": float(np.median(result.spaces[s].synth_ratio)),
                "holdout": float(np.median(result.spaces[s].holdout_ratio))}
            for s in SPACES
        },
        "flagged": _flagged_entries(result, synth_files),
        "nearest_pairs": [{k: v for k, v in p.items() if k not in ("synthetic_index", "train_index")}
                          for p in _pairs(result, synth_files, n_pairs)],
        "n_synthetic": int(n_synth),
        "n_train": int(n_train),
        "n_holdout": len(result.holdout_ids),
        "distances": {"pixel": pixel_definition(result.family, result.side, result.work_size),
                      "feature": FEATURE_DEFINITION},
        "rules": dict(RULES),
        "limits": list(LIMITS),
    }


def calibration_summary(result: PrivacyResult) -> dict[str, Any]:
    """The thresholds and the held-out split (a :class:`~brainsynth.evaluate.report.schema_privacy.Calibration`)."""
    cal, ids = result.calibration, result.holdout_ids
    return {
        "percentile": cal.percentile,
        "seed": result.seed,
        "half_a_subjects": sorted({subject_of(ids[k]) for k in np.flatnonzero(cal.half_a)}),
        "half_b_subjects": sorted({subject_of(ids[k]) for k in np.flatnonzero(result.half_b)}),
        "half_a_flag_rate": float(result.holdout_flagged[cal.half_a].mean()),
        "n_calibration": cal.n_calibration,
        "training_images": cal.n_extra,
        "relative_threshold": {s: float(cal.thresholds[s]) for s in SPACES},
        "quantile_level": float(cal.level),
        "bands": bands_summary(result),
    }


def bands_summary(result: PrivacyResult) -> list[dict[str, Any]]:
    """One entry per brain-area band (a :class:`~brainsynth.evaluate.report.schema_privacy.CalibrationBand`)."""
    cal = result.calibration
    hold_band, synth_band = cal.band(result.holdout_area), cal.band(result.synth_area)
    edges = [None, *[float(e) for e in cal.edges], None]
    out = []
    for b in range(len(cal.edges) + 1):
        in_a, in_b = cal.half_a & (hold_band == b), result.half_b & (hold_band == b)
        out.append({
            "area_low": edges[b], "area_high": edges[b + 1],
            "median": {s: float(cal.medians[s][b]) for s in SPACES},
            "threshold": {s: float(cal.band_thresholds(s)[b]) for s in SPACES},
            "n_calibration": int(cal.counts[b]), "n_half_a": int(in_a.sum()), "n_half_b": int(in_b.sum()),
            "half_b_flagged": int(result.holdout_flagged[in_b].sum()),
            "n_synthetic": int((synth_band == b).sum()),
            "synthetic_flagged": int(result.flagged[synth_band == b].sum()),
        })
    return out


def _flagged_entries(result: PrivacyResult, synth_files: Sequence[str]) -> list[dict]:
    pix, feat = result.spaces["pixel"], result.spaces["feature"]
    band = result.calibration.band(result.synth_area)
    thresholds = result.calibration.band_thresholds("pixel")
    entries = []
    for i in np.flatnonzero(result.flagged):
        j_pix, j_feat = int(pix.synth.index[i]), int(feat.synth.index[i])
        entries.append({
            "file": str(synth_files[i]),
            "train_id": result.train_ids[j_pix],
            "distance": float(pix.synth.distance[i]),
            "other_distance": float(pix.synth.other[i]),
            "ratio": float(pix.synth_ratio[i]),
            "threshold": float(thresholds[band[i]]),
            "band": int(band[i]),
            "transform": result.pixel_matches.transform(int(i), j_pix),
            "feature_train_id": result.train_ids[j_feat],
            "feature_distance": float(feat.synth.distance[i]),
            "feature_ratio": float(feat.synth_ratio[i]),
            "spaces": [s for s in SPACES if result.synth_flags[s][i]],
        })
    return sorted(entries, key=lambda e: (e["ratio"], e["distance"]))


def _pairs(result: PrivacyResult, synth_files: Sequence[str], k: int) -> list[dict[str, Any]]:
    pix = result.spaces["pixel"]
    nearest = pix.synth.index  # [N]
    band = result.calibration.band(result.synth_area)
    thresholds = result.calibration.band_thresholds("pixel")
    out = []
    for i in np.lexsort((pix.synth_nearest, pix.synth_ratio))[:k]:  # smallest ratio first, then distance
        j = int(nearest[i])
        out.append({"synthetic_index": int(i), "train_index": j, "synthetic_file": str(synth_files[i]),
                    "train_id": result.train_ids[j], "distance": float(pix.synth.distance[i]),
                    "ratio": float(pix.synth_ratio[i]), "threshold": float(thresholds[band[i]]),
                    "flagged": bool(result.flagged[i]), "transform": result.pixel_matches.transform(int(i), j)})
    return out


def nearest_pairs(result: PrivacyResult, train_images: np.ndarray, synth_images: np.ndarray,
                  synth_files: Sequence[str], k: int = N_NEAREST_PAIRS) -> list[dict[str, Any]]:
    """The ``k`` synthetic images most like a copy (smallest pixel distance ratio), for figures.

    Each pair: ``synthetic_image``, ``train_image`` and ``aligned_image`` (the training image
    re-acquired by the transform found), float32 [H, W]; ``distance``, ``ratio``, ``threshold``,
    ``transform``, ``synthetic_file``, ``train_id``, ``flagged``.
    """
    pairs = _pairs(result, synth_files, k)
    for p in pairs:
        p["synthetic_image"] = np.asarray(synth_images[p.pop("synthetic_index")], dtype=np.float32)
        p["train_image"] = np.asarray(train_images[p.pop("train_index")], dtype=np.float32)
        p["aligned_image"] = reg.align_image(p["train_image"], p["transform"])
    return pairs


def privacy_audit(
    train_images: np.ndarray,
    holdout_images: np.ndarray | None,
    synth_images: np.ndarray,
    *,
    train_features: np.ndarray | None = None,
    holdout_features: np.ndarray | None = None,
    synth_features: np.ndarray,
    synth_files: Sequence[str],
    train_ids: Sequence[str] | None = None,
    holdout_ids: Sequence[str] | None = None,
    holdout_labels: Sequence[str] | None = None,
    cfg: AuditConfig | None = None,
    reference: FoldReference | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]], PrivacyResult]:
    """Audit one fold and summarise it (:func:`~brainsynth.evaluate.privacy.fold.audit_fold`,
    :func:`summarise_privacy`, :func:`nearest_pairs`); parameters as for ``audit_fold``.

    With several synthetic sets per fold, build the fold's real side once
    (:func:`~brainsynth.evaluate.privacy.fold.fold_reference`) and pass it as ``reference``; the
    training images are still needed for the figures' aligned slices.

    Returns
    -------
    summary : dict
        JSON-ready (the keys of :class:`~brainsynth.evaluate.report.schema_privacy.PrivacySummary`).
    pairs : list of dict
        The pairs most like a copy, with their images, for figures.
    result : PrivacyResult
        The arrays, for :func:`pool_folds` and per-image tables.
    """
    result = audit_fold(train_images, holdout_images, synth_images, train_features=train_features,
                        holdout_features=holdout_features, synth_features=synth_features, train_ids=train_ids,
                        holdout_ids=holdout_ids, holdout_labels=holdout_labels, cfg=cfg, reference=reference)
    summary = summarise_privacy(result, synth_files=synth_files)
    return summary, nearest_pairs(result, train_images, synth_images, synth_files), result


def pool_folds(results: Sequence[PrivacyResult], names: Sequence[str] | None = None, *, n_perm: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """Pool the audits of several folds (each calibrated on its own half A).

    Memorisation and half-B false flags are summed over folds (Wilson intervals on the sums); the
    membership headline is the mean of the folds' headline AUCs, its p-value from relabelling
    subjects within every fold at once (:func:`~brainsynth.evaluate.privacy.membership.permutation_p_value`).

    Returns
    -------
    dict
        The keys of :class:`~brainsynth.evaluate.report.schema_privacy.PooledPrivacy`.
    """
    if not results:
        raise ValueError("no folds to pool")
    names = list(names) if names is not None else [f"fold {k}" for k in range(len(results))]
    memorisation = share(np.concatenate([r.flagged for r in results]))
    false_flags = share(np.concatenate([r.holdout_flagged[r.half_b] for r in results]))
    headlines = [r.attacks[mia.headline_key()] if r.attacks else None for r in results]
    usable = [a for a in headlines if a is not None and a.counts is not None]
    auc = float(np.mean([a.auc for a in usable])) if usable and len(usable) == len(results) else None
    p_value, exact = None, False
    if auc is not None and n_perm > 0:
        folds = [(a.counts, a.sizes, np.arange(len(a.sizes)) < a.n_member_subjects) for a in usable]
        p_value, exact = mia.permutation_p_value(folds, n_perm, np.random.default_rng(seed))
    half_b = [mia.restricted(a, ~r.nonmember_in_a)
              if a is not None and a.counts is not None and getattr(r, "nonmember_in_a", None) is not None else None
              for r, a in zip(results, headlines)]
    verdict = membership_rule.judge([h for h in half_b if h is not None], "b", n_perm=n_perm, seed=seed)
    per_fold_b = [_fold_half(h, n_perm, seed) for h in half_b]
    return {
        "n_folds": len(results),
        "memorization": memorisation,
        "false_flags": false_flags,
        "excess_memorization": (memorisation["rate"] - false_flags["rate"]) if false_flags["n"] else None,
        "mia_auc": auc,
        "mia_p_value": p_value,
        "mia_p_value_exact": exact,
        "membership_rule": verdict.to_dict(),
        "per_fold": [{"fold": str(name), "memorization_rate": float(r.flagged.mean()),
                      "false_flag_rate": float(r.holdout_flagged[r.half_b].mean()) if r.half_b.any() else None,
                      "mia_auc": a.auc if a is not None else None, "mia_auc_half_b": b[0], "mia_p_value_half_b": b[1]}
                     for name, r, a, b in zip(names, results, headlines, per_fold_b)],
    }


def _fold_half(restricted: tuple[np.ndarray, np.ndarray, np.ndarray] | None, n_perm: int,
               seed: int) -> tuple[float | None, float | None]:
    """(AUC, p-value) of one fold's headline attack restricted to one half's non-members."""
    if restricted is None or not restricted[2].any() or restricted[2].all():
        return None, None
    auc = mia.grouping_auc(*restricted)
    p_value = mia.permutation_p_value([restricted], n_perm, np.random.default_rng(seed))[0] if n_perm > 0 else None
    return auc, p_value
