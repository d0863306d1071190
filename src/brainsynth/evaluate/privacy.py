"""Privacy audit: does a synthetic image set copy its training images?

Three complementary measurements, all against real images the generator never saw
(the dataset's TEST split, here called *held-out*):

* **Memorisation rate.** Each synthetic image's distance to its nearest training image is
  compared with the same distance for held-out real images. A synthetic image closer to the
  training set than almost every held-out image (below the ``percentile``-th percentile) is a
  near-copy. Distances are measured twice: in pixel space, tolerant to small translations
  (catches copies, noisy copies and shifted copies), and in feature space (catches copies that
  differ in pixels but not in content). An image is flagged when EITHER space says so; the two
  thresholds are calibrated jointly so that the OR-rule flags at most ``percentile`` % of the
  held-out images (the false-positive rate stays at the level the user asked for instead of
  doubling).
* **Authenticity** (Alaa et al., 2022). A synthetic image is unauthentic when it is closer to
  its nearest training image than that training image is to its own nearest training neighbour.
  Slices of one subject are near-duplicates of each other, so the neighbour is searched among
  OTHER subjects' images (falls back to "any other image" with a single subject). The held-out
  images' authentic share is reported beside it as the reference a perfect generator would reach.
* **Membership inference** (GAN-Leaks, Chen et al. 2020, full black-box setting). Each real
  image is scored by its distance to the nearest SYNTHETIC image; if training members are
  systematically closer than held-out non-members, the synthetic set leaks membership. AUC 0.5
  means no leak.

Caveats the numbers cannot escape: training slices of one subject are correlated, so the
slice-level AUC counts one subject many times (the subject-level AUC, when held-out ids are
given, has very few samples); held-out and training subjects may differ in ways unrelated to
the generator (label mix, scanner), which moves the AUC away from 0.5 by itself; and passing
this audit does not prove that no individual can be re-identified.

This module is the maths only (arrays in, numbers out). The ``brainsynth audit`` command is
:func:`brainsynth.evaluate.commands.audit`; its figures are in :mod:`.figures` and its files in
:mod:`.writers`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from brainsynth.config import AuditConfig
from brainsynth.errors import InputError
from brainsynth.evaluate.distances import (
    DISTANCE_DEFINITIONS,
    best_shift,
    feature_distances,
    shift_tolerant_distances,
)

log = logging.getLogger("brainsynth.privacy")

N_NEAREST_PAIRS = 8
"""How many of the closest synthetic-training pairs are shown."""

SPACES = ("pixel", "feature")


# --- the audit maths ----------------------------------------------------------------------

@dataclass
class SpaceDistances:
    """Nearest-neighbour facts in one space (pixel or feature)."""

    synth_to_train: np.ndarray  # [N, M] synthetic (query) vs training (reference)
    holdout_to_train: np.ndarray  # [H, M]
    synth_to_holdout: np.ndarray  # [N, H]
    train_neighbour: np.ndarray  # [M] each training image's distance to its nearest other-subject neighbour

    @property
    def synth_nearest(self) -> np.ndarray:
        return self.synth_to_train.min(axis=1)  # [N]

    @property
    def holdout_nearest(self) -> np.ndarray:
        return self.holdout_to_train.min(axis=1)  # [H]


@dataclass
class PrivacyResult:
    """Everything :func:`privacy_audit` measured, as arrays (the JSON summary drops most)."""

    spaces: dict[str, SpaceDistances]
    thresholds: dict[str, float]
    calibration_level: float  # quantile of the held-out distances used in each space
    synth_flags: dict[str, np.ndarray]  # space -> bool [N]
    holdout_flags: dict[str, np.ndarray]  # space -> bool [H]
    percentile: float

    @property
    def flagged(self) -> np.ndarray:
        return np.logical_or.reduce([self.synth_flags[s] for s in SPACES])  # [N]

    @property
    def holdout_flagged(self) -> np.ndarray:
        return np.logical_or.reduce([self.holdout_flags[s] for s in SPACES])  # [H]


def subject_of(image_id: str) -> str:
    """``"sub-01:45"`` -> ``"sub-01"`` (the part before the first colon)."""
    return str(image_id).split(":", 1)[0]


def neighbour_distance_excluding_subject(train_to_train: np.ndarray, subjects: Sequence[str]) -> np.ndarray:
    """Each training image's distance to its nearest training image of ANOTHER subject.

    Adjacent slices of one subject are nearly identical, so "nearest other image" would be tiny
    and every synthetic image would pass as authentic. With a single subject we can only exclude
    the image itself.

    Parameters
    ----------
    train_to_train : np.ndarray
        [M, M] distances, query row vs reference column.
    subjects : sequence of str
        [M] subject id per training image.

    Returns
    -------
    np.ndarray
        float32 [M]; ``inf`` only when there is a single training image.
    """
    subj = np.asarray(subjects, dtype=object)
    same = subj[:, None] == subj[None, :]  # [M, M]
    if len(set(subj.tolist())) < 2:
        same = np.eye(len(subj), dtype=bool)
    masked = np.where(same, np.inf, train_to_train)
    return masked.min(axis=1).astype(np.float32)


def calibrate_thresholds(holdout_nearest: dict[str, np.ndarray], rate: float) -> tuple[dict[str, float], float]:
    """Per-space thresholds whose OR-rule flags at most ``rate`` of the held-out images.

    Every space uses the same quantile level ``t`` of its own held-out distances; ``t`` is the
    largest level in ``[0, rate]`` at which "below the threshold in ANY space" flags no more
    than ``rate`` of the held-out set. Fully correlated spaces give ``t = rate``, independent
    ones about ``rate / 2``.

    Parameters
    ----------
    holdout_nearest : dict
        space -> float [H], held-out images' nearest-training distances.
    rate : float
        Target false-positive rate on held-out images, in [0, 1].

    Returns
    -------
    thresholds : dict
        space -> distance; an image is flagged in a space when strictly below it.
    level : float
        The quantile level ``t`` used.
    """
    def thresholds_at(t: float) -> dict[str, float]:
        return {s: float(np.quantile(d, t)) for s, d in holdout_nearest.items()}

    def or_rate(t: float) -> float:
        thr = thresholds_at(t)
        below = np.logical_or.reduce([holdout_nearest[s] < thr[s] for s in holdout_nearest])
        return float(np.mean(below))

    if or_rate(rate) <= rate:
        return thresholds_at(rate), rate
    lo, hi = 0.0, rate  # or_rate(lo) == 0 <= rate; or_rate is non-decreasing in t
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if or_rate(mid) <= rate else (lo, mid)
    return thresholds_at(lo), lo


def compute_privacy(
    train_images: np.ndarray,
    holdout_images: np.ndarray,
    synth_images: np.ndarray,
    *,
    train_features: np.ndarray,
    holdout_features: np.ndarray,
    synth_features: np.ndarray,
    train_ids: Sequence[str],
    percentile: float = 1.0,
) -> PrivacyResult:
    """The distance matrices, thresholds and flags behind :func:`privacy_audit` (see there)."""
    _check_audit_inputs(train_images, holdout_images, synth_images, train_features, holdout_features,
                        synth_features, train_ids, percentile)
    subjects = [subject_of(i) for i in train_ids]
    pix_st = shift_tolerant_distances(synth_images, train_images)
    pix_ht = shift_tolerant_distances(holdout_images, train_images)
    pix_sh = shift_tolerant_distances(synth_images, holdout_images)
    pix_tt = shift_tolerant_distances(train_images, train_images)
    centre = np.asarray(train_features, dtype=np.float32).mean(axis=0)  # [D]
    feat_st = feature_distances(synth_features, train_features, centre)
    feat_ht = feature_distances(holdout_features, train_features, centre)
    feat_sh = feature_distances(synth_features, holdout_features, centre)
    feat_tt = feature_distances(train_features, train_features, centre)
    spaces = {
        "pixel": SpaceDistances(pix_st, pix_ht, pix_sh, neighbour_distance_excluding_subject(pix_tt, subjects)),
        "feature": SpaceDistances(feat_st, feat_ht, feat_sh, neighbour_distance_excluding_subject(feat_tt, subjects)),
    }
    thresholds, level = calibrate_thresholds({s: spaces[s].holdout_nearest for s in SPACES}, percentile / 100.0)
    _warn_coarse_calibration(len(holdout_images), percentile)
    return PrivacyResult(
        spaces=spaces,
        thresholds=thresholds,
        calibration_level=level,
        synth_flags={s: spaces[s].synth_nearest < thresholds[s] for s in SPACES},
        holdout_flags={s: spaces[s].holdout_nearest < thresholds[s] for s in SPACES},
        percentile=float(percentile),
    )


def check_percentile(percentile: float) -> None:
    """Refuse a percentile that is not a sensible false-positive rate (in %), as ``audit.percentile`` would be."""
    AuditConfig(percentile=float(percentile)).check()


def _check_audit_inputs(train_images, holdout_images, synth_images, train_features, holdout_features,
                        synth_features, train_ids, percentile) -> None:
    check_percentile(percentile)
    sizes = {"training": train_images.shape[1:], "held-out": holdout_images.shape[1:],
             "synthetic": synth_images.shape[1:]}
    if len(set(sizes.values())) != 1:
        listing = ", ".join(f"{k} {v[1]}x{v[0]}" for k, v in sizes.items())  # width x height, as image sizes are read
        raise InputError(f"image sizes differ ({listing}); generate synthetic images at the dataset's size")
    if len(train_images) < 2 or len(holdout_images) < 1 or len(synth_images) < 1:
        raise InputError(
            f"the privacy audit needs >= 2 training, >= 1 held-out and >= 1 synthetic images, got "
            f"{len(train_images)}, {len(holdout_images)} and {len(synth_images)}"
        )
    for name, imgs, feats in (("training", train_images, train_features), ("held-out", holdout_images, holdout_features),
                              ("synthetic", synth_images, synth_features)):
        if len(feats) != len(imgs):
            raise ValueError(f"{name}: {len(imgs)} images but {len(feats)} feature rows")
    if len(train_ids) != len(train_images):
        raise ValueError(f"{len(train_images)} training images but {len(train_ids)} train_ids")


def membership_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float | None:
    """AUC of telling members from non-members, members predicted by SMALLER distance.

    Returns ``None`` when either group is empty (the AUC is undefined).
    """
    from sklearn.metrics import roc_auc_score

    if len(member_scores) == 0 or len(nonmember_scores) == 0:
        return None
    y = np.r_[np.ones(len(member_scores)), np.zeros(len(nonmember_scores))]
    return float(roc_auc_score(y, -np.r_[member_scores, nonmember_scores]))


def _subject_means(scores: np.ndarray, ids: Sequence[str]) -> np.ndarray:
    subj = np.array([subject_of(i) for i in ids], dtype=object)
    return np.array([scores[subj == s].mean() for s in sorted(set(subj.tolist()))])


def _authentic_share(query_to_train: np.ndarray, train_neighbour: np.ndarray) -> float:
    nearest = query_to_train.argmin(axis=1)  # [Nq]
    closest = query_to_train[np.arange(len(nearest)), nearest]  # [Nq]
    return float(np.mean(closest >= train_neighbour[nearest]))


def summarise_privacy(
    result: PrivacyResult,
    *,
    train_images: np.ndarray,
    synth_images: np.ndarray,
    synth_files: Sequence[str],
    train_ids: Sequence[str],
    holdout_ids: Sequence[str] | None = None,
    n_pairs: int = N_NEAREST_PAIRS,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The JSON-ready summary and the closest pairs of a :class:`PrivacyResult`."""
    pix = result.spaces["pixel"]
    n_synth, n_train, n_hold = pix.synth_to_train.shape[0], pix.synth_to_train.shape[1], pix.holdout_to_train.shape[0]
    mia = {s: membership_auc(result.spaces[s].synth_to_train.min(axis=0), result.spaces[s].synth_to_holdout.min(axis=0))
           for s in SPACES}
    summary: dict[str, Any] = {
        "memorization_rate": float(result.flagged.mean()),
        "memorization_rate_by_space": {s: float(result.synth_flags[s].mean()) for s in SPACES},
        "holdout_flag_rate": float(result.holdout_flagged.mean()),
        "percentile": result.percentile,
        "threshold": dict(result.thresholds),
        "calibration_quantile": result.calibration_level,
        # The attacker may pick either space, so the headline is the more revealing one.
        "mia_auc": max(v for v in mia.values() if v is not None),
        "mia_auc_by_space": mia,
        "mia_auc_subject": None,  # both subject-level AUCs need the held-out ids (below)
        "authenticity": _authentic_share(pix.synth_to_train, pix.train_neighbour),
        "authenticity_by_space": {
            s: {"synthetic": _authentic_share(result.spaces[s].synth_to_train, result.spaces[s].train_neighbour),
                "holdout": _authentic_share(result.spaces[s].holdout_to_train, result.spaces[s].train_neighbour)}
            for s in SPACES
        },
        "nearest_distance_median": {
            s: {"synthetic": float(np.median(result.spaces[s].synth_nearest)),
                "holdout": float(np.median(result.spaces[s].holdout_nearest))}
            for s in SPACES
        },
        "flagged": _flagged_entries(result, synth_files, train_ids),
        "n_synthetic": int(n_synth),
        "n_train": int(n_train),
        "n_holdout": int(n_hold),
        "distances": dict(DISTANCE_DEFINITIONS),
        "rules": {
            "flagged": "nearest-training distance below the threshold in pixel OR feature space; thresholds are "
                       "held-out quantiles chosen so that the same rule flags at most `percentile` % of held-out images",
            "authenticity": "share of synthetic images at least as far from their nearest training image as that "
                            "image is from its nearest training image of another subject (pixel space)",
            "mia_auc": "AUC of training vs held-out real images scored by distance to the nearest synthetic image "
                       "(smaller = member); the larger of the pixel and feature AUCs; 0.5 = no leak",
        },
        "mia_auc_subject_by_space": None,
    }
    if holdout_ids is not None and len(holdout_ids) == n_hold:
        mia_subject = {
            s: membership_auc(_subject_means(result.spaces[s].synth_to_train.min(axis=0), train_ids),
                              _subject_means(result.spaces[s].synth_to_holdout.min(axis=0), holdout_ids))
            for s in SPACES
        }
        valid = [v for v in mia_subject.values() if v is not None]
        summary["mia_auc_subject"] = max(valid) if valid else None
        summary["mia_auc_subject_by_space"] = mia_subject
    pairs = nearest_pairs(result, train_images, synth_images, synth_files, train_ids, n_pairs)
    return summary, pairs


def _flagged_entries(result: PrivacyResult, synth_files: Sequence[str], train_ids: Sequence[str]) -> list[dict]:
    pix, feat = result.spaces["pixel"], result.spaces["feature"]
    entries = []
    for i in np.flatnonzero(result.flagged):
        j_pix, j_feat = int(pix.synth_to_train[i].argmin()), int(feat.synth_to_train[i].argmin())
        entries.append({
            "file": str(synth_files[i]),
            "train_id": str(train_ids[j_pix]),
            "distance": float(pix.synth_to_train[i, j_pix]),
            "feature_train_id": str(train_ids[j_feat]),
            "feature_distance": float(feat.synth_to_train[i, j_feat]),
            "spaces": [s for s in SPACES if result.synth_flags[s][i]],
        })
    return sorted(entries, key=lambda e: e["distance"])


def nearest_pairs(
    result: PrivacyResult,
    train_images: np.ndarray,
    synth_images: np.ndarray,
    synth_files: Sequence[str],
    train_ids: Sequence[str],
    k: int = N_NEAREST_PAIRS,
) -> list[dict[str, Any]]:
    """The ``k`` synthetic images closest (pixel space) to a training image, each with its match.

    Each pair: ``synthetic_image`` and ``train_image`` (float32 [H, W]), ``distance`` (pixel),
    ``feature_distance``, ``shift`` (``[dy, dx]``, see :func:`best_shift`), ``synthetic_file``,
    ``train_id``, ``flagged``.
    """
    pix, feat = result.spaces["pixel"], result.spaces["feature"]
    nearest = pix.synth_to_train.argmin(axis=1)  # [N]
    dist = pix.synth_to_train[np.arange(len(nearest)), nearest]  # [N]
    pairs = []
    for i in np.argsort(dist, kind="stable")[:k]:
        j = int(nearest[i])
        pairs.append({
            "synthetic_image": np.asarray(synth_images[i], dtype=np.float32),
            "train_image": np.asarray(train_images[j], dtype=np.float32),
            "distance": float(dist[i]),
            "feature_distance": float(feat.synth_to_train[i, j]),
            "shift": list(best_shift(synth_images[i], train_images[j])),
            "synthetic_file": str(synth_files[i]),
            "train_id": str(train_ids[j]),
            "flagged": bool(result.flagged[i]),
        })
    return pairs


def privacy_audit(
    train_images: np.ndarray,
    holdout_images: np.ndarray,
    synth_images: np.ndarray,
    *,
    train_features: np.ndarray,
    holdout_features: np.ndarray,
    synth_features: np.ndarray,
    synth_files: Sequence[str],
    train_ids: Sequence[str],
    percentile: float = 1.0,
    holdout_ids: Sequence[str] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Memorisation, authenticity and membership inference of one synthetic set.

    Parameters
    ----------
    train_images, holdout_images, synth_images : np.ndarray
        float32 [M, H, W], [Hn, H, W], [N, H, W] in [0, 1]. Held-out images are real images
        never used in training (the dataset's TEST split).
    train_features, holdout_features, synth_features : np.ndarray
        [M, D], [Hn, D], [N, D] features of the same images, from one extractor.
    synth_files : sequence of str
        [N] file names of the synthetic images (reported for flagged images).
    train_ids : sequence of str
        [M] ``"<subject>:<slice>"`` per training image.
    percentile : float
        Held-out percentile (in %, default 1) below which a synthetic image is a near-copy;
        it is also the false-positive rate the rule allows on held-out images.
    holdout_ids : sequence of str, optional
        [Hn] ids of the held-out images; enables the subject-level membership AUC.

    Returns
    -------
    summary : dict
        JSON-ready: ``memorization_rate``, ``mia_auc``, ``threshold`` (per space),
        ``percentile``, ``authenticity``, ``flagged`` (file, nearest train id, distances),
        ``n_synthetic``, ``n_train``, ``n_holdout``, ``distances`` (definitions) and more.
    pairs : list of dict
        The closest synthetic-training pairs (see :func:`nearest_pairs`).
    """
    result = compute_privacy(
        train_images, holdout_images, synth_images, train_features=train_features,
        holdout_features=holdout_features, synth_features=synth_features, train_ids=train_ids,
        percentile=percentile,
    )
    return summarise_privacy(result, train_images=train_images, synth_images=synth_images, synth_files=synth_files,
                             train_ids=train_ids, holdout_ids=holdout_ids)


def _warn_coarse_calibration(n_holdout: int, percentile: float) -> None:
    if n_holdout * percentile / 100.0 < 1.0:
        log.warning(
            "only %d held-out images: the %.3g%% threshold is the smallest held-out distance; "
            "more held-out images make the memorisation threshold finer", n_holdout, percentile,
        )

