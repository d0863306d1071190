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
* **Membership inference** (GAN-Leaks style, full black box). Each real image is scored by its
  distance to the nearest SYNTHETIC image; if training members are systematically closer than
  held-out non-members, the synthetic set leaks membership. AUC 0.5 means no leak.

Caveats the numbers cannot escape: training slices of one subject are correlated, so the
slice-level AUC counts one subject many times (the subject-level AUC, when held-out ids are
given, has very few samples); held-out and training subjects may differ in ways unrelated to
the generator (label mix, scanner), which moves the AUC away from 0.5 by itself; and passing
this audit does not prove that no individual can be re-identified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from brainsynth import __version__
from brainsynth.errors import ConfigError, InputError
from brainsynth.evaluate.report import features_line, png_bytes
from brainsynth.fsio import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_output_free,
    staged_output_dir,
)

log = logging.getLogger("brainsynth.privacy")

MAX_SHIFT = 2
"""Largest translation (pixels, each axis) the pixel distance forgives."""

PIXEL_BLUR_SIGMA = 1.0
"""Gaussian blur (pixels) applied before pixel distances. Independent pixel noise, such as a GAN's
texture or added noise, shrinks by about 3.5x at sigma 1 while the anatomy that identifies a copy
is several pixels wide, so a noisy copy stays close to its source."""

N_NEAREST_PAIRS = 8
"""How many of the closest synthetic-training pairs are shown."""

SPACES = ("pixel", "feature")

DISTANCE_DEFINITIONS = {
    "pixel": (
        f"root-mean-square intensity difference (images in [0, 1], both blurred by a Gaussian of sigma "
        f"{PIXEL_BLUR_SIGMA:g} px) over the central crop, minimised over integer translations of up to "
        f"+/-{MAX_SHIFT} px of the reference image"
    ),
    "feature": "cosine distance (1 - cos) between feature vectors centred on the training-set mean",
}

_QUERY_BATCH = 1024  # queries per matmul block: bounds memory at [1024, N_ref] floats per shift


# --- distances ----------------------------------------------------------------------------

def shift_tolerant_distances(queries: np.ndarray, refs: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """Pixel distance between every query and every reference, forgiving small translations.

    Both image sets are first smoothed (:data:`PIXEL_BLUR_SIGMA`). The query's central crop
    (``max_shift`` px cut from each border) is then compared with every crop of the reference
    shifted by ``(dy, dx)``, ``|dy|, |dx| <= max_shift``; the smallest root-mean-square
    difference wins. Comparing crops, rather than padding or rolling, keeps border fill values
    out of the distance.

    Parameters
    ----------
    queries : np.ndarray
        float32 [Nq, H, W] in [0, 1].
    refs : np.ndarray
        float32 [Nr, H, W] in [0, 1].
    max_shift : int
        Largest translation in pixels per axis; reduced for images too small to crop.

    Returns
    -------
    np.ndarray
        float32 [Nq, Nr], RMS intensity difference at the best shift.
    """
    h, w = queries.shape[1:]
    if refs.shape[1:] != (h, w):
        raise InputError(f"images of different sizes cannot be compared: {queries.shape[1:]} vs {refs.shape[1:]}")
    m = _usable_shift(h, w, max_shift)
    # Centring by one scalar leaves distances unchanged but shrinks the norms, so the
    # |q|^2 + |r|^2 - 2 q.r expansion loses less to float32 cancellation near zero distance.
    centre = float(np.mean(refs)) if len(refs) else 0.0
    q_all = torch.from_numpy(_smooth(queries)) - centre  # [Nq, H, W]
    r_all = torch.from_numpy(_smooth(refs)) - centre  # [Nr, H, W]
    q_flat = q_all[:, m:h - m, m:w - m].reshape(len(q_all), -1)  # [Nq, P]
    n_pix = q_flat.shape[1]
    best = torch.full((len(q_all), len(r_all)), float("inf"))  # [Nq, Nr], min over shifts of |r|^2 - 2 q.r
    with torch.no_grad():
        for dy, dx in _shifts(m):
            r_flat = r_all[:, m + dy:h - m + dy, m + dx:w - m + dx].reshape(len(r_all), -1)  # [Nr, P]
            r_sq = (r_flat * r_flat).sum(1)[None, :]  # [1, Nr]
            for start in range(0, len(q_flat), _QUERY_BATCH):
                rows = best[start:start + _QUERY_BATCH]  # a view: updated in place
                partial = torch.addmm(r_sq, q_flat[start:start + _QUERY_BATCH], r_flat.T, alpha=-2.0)  # [B, Nr]
                torch.minimum(rows, partial, out=rows)
        d2 = best + (q_flat * q_flat).sum(1, keepdim=True)  # [Nq, Nr]; |q|^2 does not depend on the shift
    return torch.sqrt(d2.clamp_min(0.0) / n_pix).numpy().astype(np.float32)


def best_shift(query: np.ndarray, ref: np.ndarray, max_shift: int = MAX_SHIFT) -> tuple[int, int]:
    """The offset ``(dy, dx)`` at which :func:`shift_tolerant_distances` matched ``query`` [H, W] to ``ref`` [H, W].

    ``query[y, x]`` is compared with ``ref[y + dy, x + dx]``.
    """
    h, w = query.shape
    m = _usable_shift(h, w, max_shift)
    q, r = _smooth(query[None])[0], _smooth(ref[None])[0]
    crop = q[m:h - m, m:w - m]
    errors = [float(np.sum((crop - r[m + dy:h - m + dy, m + dx:w - m + dx]) ** 2)) for dy, dx in _shifts(m)]
    return _shifts(m)[int(np.argmin(errors))]


def _usable_shift(h: int, w: int, max_shift: int) -> int:
    return max(0, min(max_shift, (min(h, w) - 2) // 4))  # keep at least half of each axis in the crop


def _shifts(m: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-m, m + 1) for dx in range(-m, m + 1)]


def _smooth(images: np.ndarray) -> np.ndarray:
    """float32 [N, H, W] blurred in-plane by :data:`PIXEL_BLUR_SIGMA` px."""
    from scipy.ndimage import gaussian_filter

    images = np.asarray(images, dtype=np.float32)
    if PIXEL_BLUR_SIGMA <= 0:
        return np.ascontiguousarray(images)
    return np.ascontiguousarray(gaussian_filter(images, sigma=(0, PIXEL_BLUR_SIGMA, PIXEL_BLUR_SIGMA), mode="nearest"))


def feature_distances(queries: np.ndarray, refs: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Cosine distance between feature vectors after subtracting ``centre``.

    Centring on the training mean matters: ReLU features of brain slices share a large common
    component, which makes raw cosines all close to 1 and hides the differences.

    Parameters
    ----------
    queries : np.ndarray
        [Nq, D] features.
    refs : np.ndarray
        [Nr, D] features.
    centre : np.ndarray
        [D], usually the training features' mean.

    Returns
    -------
    np.ndarray
        float32 [Nq, Nr] in [0, 2].
    """
    q = _unit_rows(np.asarray(queries, dtype=np.float32) - centre)  # [Nq, D]
    r = _unit_rows(np.asarray(refs, dtype=np.float32) - centre)  # [Nr, D]
    return np.clip(1.0 - q @ r.T, 0.0, 2.0).astype(np.float32)  # [Nq, Nr]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


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
    """Refuse a percentile that is not a sensible false-positive rate (in %)."""
    if not 0.0 < float(percentile) <= 50.0:
        raise ConfigError(f"--percentile must be above 0 and at most 50 (a false-positive rate in %), got {percentile}")


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
        "mia_auc_subject": None,
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


# --- figures ------------------------------------------------------------------------------

def figure_nearest_pairs(pairs: Sequence[dict[str, Any]], title: str = "closest synthetic-training pairs") -> bytes:
    """PNG bytes: each pair as a column, synthetic on top, its nearest training image below."""
    from matplotlib.figure import Figure

    n = max(1, len(pairs))
    fig = Figure(figsize=(1.6 * n, 3.6))
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(2, n, squeeze=False)
    for col in range(n):
        for row in range(2):
            axes[row, col].set_axis_off()
        if col >= len(pairs):
            continue
        p = pairs[col]
        axes[0, col].imshow(p["synthetic_image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, col].set_title(f"{p['synthetic_file']}\nd={p['distance']:.3f}"
                               + (" FLAG" if p.get("flagged") else ""), fontsize=7)
        axes[1, col].imshow(p["train_image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, col].set_title(f"train {p['train_id']}", fontsize=7)
    return png_bytes(fig)


def figure_distance_histogram(result: PrivacyResult) -> bytes:
    """PNG bytes: nearest-training distances of synthetic vs held-out images, per space, threshold marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    for ax, space in zip(fig.subplots(1, len(SPACES)), SPACES):
        d = result.spaces[space]
        values = np.r_[d.synth_nearest, d.holdout_nearest]
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 40)
        ax.hist(d.holdout_nearest, bins=bins, alpha=0.6, density=True,
                label=f"held-out real (n={len(d.holdout_nearest)})")
        ax.hist(d.synth_nearest, bins=bins, alpha=0.6, density=True, label=f"synthetic (n={len(d.synth_nearest)})")
        ax.axvline(result.thresholds[space], color="red", linestyle="--", label="near-copy threshold")
        ax.set_xlabel(f"{space} distance to nearest training image")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


# --- the `brainsynth audit` command -------------------------------------------------------

def audit(
    train: str | Path,
    synthetic: str | Path,
    out: str | Path,
    *,
    filter_flagged: bool = False,
    percentile: float = 1.0,
    features: str = "vgg16-random",
    weights: str | None = None,
    feature_layer: str = "fc7",
    input_size: int = 224,
    precision: str = "fp32",
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
        ``distance_histogram.png`` and, with ``filter_flagged``, ``filtered/``.
    filter_flagged : bool
        Also write the synthetic set minus the flagged images to ``OUT/filtered``.
    percentile : float
        Held-out percentile (in %) defining a near-copy.
    features, weights, feature_layer, input_size, precision, device
        Feature extractor options (see :func:`brainsynth.evaluate.features.get_extractor`).
    force : bool
        Replace an existing ``out``.

    Returns
    -------
    dict
        The privacy summary (as in ``privacy.json["privacy"]``) plus ``out``.
    """
    from brainsynth.data.dataset import load_dataset
    from brainsynth.imageset import read_image_set

    check_output_free(out, force)  # fail before the expensive part
    check_percentile(percentile)
    dataset = load_dataset(train)
    train_idx, hold_idx = dataset.indices("train"), dataset.indices("test")
    if len(train_idx) < 2:
        raise InputError(f"{dataset.root}: the train split has {len(train_idx)} images; the audit needs at least 2")
    if len(hold_idx) == 0:
        raise InputError(
            f"{dataset.root}: no test split, so there are no held-out real images to calibrate against; "
            "re-run 'brainsynth prepare' with --test-fraction above 0"
        )
    synth = read_image_set(synthetic)
    if synth.images.shape[1:] != dataset.images.shape[1:]:
        raise InputError(
            f"{synthetic}: synthetic images are {synth.images.shape[2]}x{synth.images.shape[1]} px but the dataset "
            f"{dataset.root} holds {dataset.images.shape[2]}x{dataset.images.shape[1]} px; "
            "generate (or prepare) at the same size"
        )
    train_images, hold_images = dataset.float_images(train_idx), dataset.float_images(hold_idx)
    train_ids, hold_ids = image_ids(dataset, train_idx), image_ids(dataset, hold_idx)
    synth_files = [record_name(r, i) for i, r in enumerate(synth.records)]

    extractor = _extractor(features, weights=weights, layer=feature_layer, input_size=input_size,
                           precision=precision, device=device)
    log.info("extracting features of %d training, %d held-out and %d synthetic images",
             len(train_images), len(hold_images), len(synth))
    train_f, hold_f, synth_f = (extractor.extract(x) for x in (train_images, hold_images, synth.images))

    result = compute_privacy(train_images, hold_images, synth.images, train_features=train_f,
                             holdout_features=hold_f, synth_features=synth_f, train_ids=train_ids,
                             percentile=percentile)
    summary, pairs = summarise_privacy(result, train_images=train_images, synth_images=synth.images,
                                       synth_files=synth_files, train_ids=train_ids, holdout_ids=hold_ids)
    document = {
        "brainsynth_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "simulated": bool(dataset.manifest.get("simulated", False)),
        "privacy": summary,
        "features": extractor.describe(),
        "inputs": {"train": str(Path(train)), "synthetic": str(Path(synthetic)),
                   "synthetic_provenance": {k: v for k, v in synth.meta.items() if k != "images"}},
    }
    with staged_output_dir(out, force=force) as stage:
        atomic_write_json(stage / "privacy.json", document)
        atomic_write_text(stage / "distances.tsv", _distances_table(result, synth_files, train_ids))
        atomic_write_bytes(stage / "nearest_pairs.png", figure_nearest_pairs(pairs))
        atomic_write_bytes(stage / "distance_histogram.png", figure_distance_histogram(result))
        filtered_note = None
        if filter_flagged:
            filtered_note = _write_filtered(stage, synth, result.flagged, synth_files, synthetic, percentile)
        atomic_write_text(stage / "privacy.md", privacy_markdown(document, filtered_note))
    print(summary_paragraph(summary, out))
    return {**summary, "out": str(out)}


def _extractor(name: str, **kwargs: Any):
    from brainsynth.evaluate.features import get_extractor

    return get_extractor(name, **kwargs)


def record_name(record: dict[str, Any], position: int) -> str:
    """``"adhd/000003.png"``, or ``"images.npz#3"`` for an image inside a stacked file."""
    name = str(record.get("file", position))
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


def _distances_table(result: PrivacyResult, synth_files: Sequence[str], train_ids: Sequence[str]) -> str:
    pix, feat = result.spaces["pixel"], result.spaces["feature"]
    lines = ["file\tnearest_train_pixel\tpixel_distance\tnearest_train_feature\tfeature_distance\tflagged"]
    for i, name in enumerate(synth_files):
        jp, jf = int(pix.synth_to_train[i].argmin()), int(feat.synth_to_train[i].argmin())
        lines.append(f"{name}\t{train_ids[jp]}\t{pix.synth_to_train[i, jp]:.6f}\t{train_ids[jf]}\t"
                     f"{feat.synth_to_train[i, jf]:.6f}\t{int(result.flagged[i])}")
    return "\n".join(lines) + "\n"


def _write_filtered(stage: Path, synth, flagged: np.ndarray, synth_files: Sequence[str], source: str | Path,
                    percentile: float) -> str:
    """Write ``stage/filtered``: the synthetic set minus flagged images. Returns a one-line note."""
    from brainsynth.imageset import write_image_set

    keep = np.flatnonzero(~flagged)
    removed = [synth_files[i] for i in np.flatnonzero(flagged)]
    if len(keep) == 0:
        log.warning("every synthetic image was flagged; no filtered set written")
        return "Every synthetic image was flagged, so no filtered set was written."
    records = []
    for i in keep:
        rec = {k: v for k, v in synth.records[i].items() if k not in ("file", "index")}
        rec["source_file"] = synth_files[i]
        records.append(rec)
    # Keep the generator's provenance, drop what write_image_set recomputes, and say what was done.
    meta = {k: v for k, v in synth.meta.items() if k not in ("synthetic", "format", "image_size", "n_images", "counts")}
    meta["privacy_filter"] = {
        "tool": f"brainsynth {__version__} audit",
        "source": str(Path(source)),
        "percentile": float(percentile),
        "n_removed": len(removed),
        "removed": removed,
    }
    write_image_set(stage / "filtered", synth.images[keep], records, synthetic=synth.synthetic,
                    fmt=synth.meta.get("format", "png"), extra_meta=meta)
    return f"`filtered/` holds the {len(keep)} synthetic images that were not flagged ({len(removed)} removed)."


# --- plain-language outputs ---------------------------------------------------------------

def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f}%"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None else format(x, fmt)


def summary_paragraph(summary: dict[str, Any], out: str | Path | None = None) -> str:
    """One paragraph for the terminal."""
    text = (
        f"Privacy audit of {summary['n_synthetic']} synthetic images against {summary['n_train']} training and "
        f"{summary['n_holdout']} held-out real images: {len(summary['flagged'])} flagged as near-copies "
        f"(memorisation rate {_pct(summary['memorization_rate'])}; threshold = percentile {summary['percentile']:g} of the "
        f"held-out distances, which {_pct(summary['holdout_flag_rate'])} of held-out images fall below). "
        f"Authentic share {_pct(summary['authenticity'])} (held-out reference "
        f"{_pct(summary['authenticity_by_space']['pixel']['holdout'])}); membership-inference AUC "
        f"{_num(summary['mia_auc'])} (0.5 = no leak)."
    )
    return text + (f" Details in {out}." if out is not None else "")


def privacy_markdown(document: dict[str, Any], filtered_note: str | None = None) -> str:
    """``privacy.md``: what was measured, the numbers, and what they do and do not prove."""
    s = document["privacy"]
    feat_line = features_line(document)
    lines = [
        "# Privacy audit of a synthetic image set",
        "",
    ]
    if document.get("simulated"):
        lines += ["> **SIMULATED cohort**: these images come from a simulated cohort, not from patients.", ""]
    lines += [
        "## What was measured",
        "",
        f"The generator was trained on {s['n_train']} real training images. We compared each of the "
        f"{s['n_synthetic']} synthetic images with every training image and asked: is it closer to some training "
        f"image than real images of *other people* are? As the reference we used {s['n_holdout']} real images "
        "the generator never saw (held-out subjects).",
        "",
        f"- **Near-copies (memorisation).** A synthetic image is flagged when it is closer to a training image than "
        f"all but {s['percentile']:g}% of the held-out images are. Closeness is measured on the pixels (allowing a "
        f"shift of up to {MAX_SHIFT} pixels) and on image features ({feat_line}); "
        "either one is enough to flag.",
        "- **Authenticity.** The share of synthetic images that are not closer to their nearest training image than "
        "that image is to other subjects' images.",
        "- **Membership inference.** Could an attacker holding the synthetic set tell which real images were used for "
        "training? We score each real image by how close the nearest synthetic image is; an AUC of 0.5 means "
        "training and held-out images cannot be told apart, 1.0 means they can always be told apart.",
        "",
        "## Results",
        "",
        "| measure | value | reading |",
        "|---|---|---|",
        f"| near-copies flagged | {len(s['flagged'])} of {s['n_synthetic']} ({_pct(s['memorization_rate'])}) | "
        f"by chance about {s['percentile']:g}% (held-out images flagged by the same rule: "
        f"{_pct(s['holdout_flag_rate'])}) |",
        f"| authentic share | {_pct(s['authenticity'])} | held-out real images score "
        f"{_pct(s['authenticity_by_space']['pixel']['holdout'])}; much lower means copying |",
        f"| membership-inference AUC | {_num(s['mia_auc'])} | 0.5 = no leak |",
        f"| subject-level AUC | {_num(s.get('mia_auc_subject'))} | per person; few subjects, so coarse |",
        "",
    ]
    if s["flagged"]:
        lines += ["Flagged images (closest first):", ""]
        lines += [f"- `{e['file']}`: nearest training image `{e['train_id']}`, pixel distance {e['distance']:.4f}"
                  for e in s["flagged"][:20]]
        if len(s["flagged"]) > 20:
            lines.append(f"- ... and {len(s['flagged']) - 20} more (see privacy.json)")
        lines.append("")
    if filtered_note:
        lines += [filtered_note, ""]
    lines += [
        "## What this does and does not prove",
        "",
        "- A low near-copy rate shows the synthetic images are not pixel or feature copies of training slices. It "
        "does **not** prove that no individual can be recognised: copying of a small region, of anatomy that is "
        "unique to one person, or of information spread over many images is not measured.",
        "- The threshold is calibrated on held-out real images, so about "
        f"{s['percentile']:g}% of innocent images are expected to be flagged too.",
        "- Slices of one person are strongly correlated: per-image numbers count each person many times, and the "
        "per-subject AUC rests on very few subjects.",
        "- Training and held-out subjects may differ for reasons unrelated to the generator (diagnosis mix, scanner), "
        "which moves the AUC away from 0.5 on its own.",
        "- Formal guarantees require a differentially private training method; this audit is an empirical check.",
        "",
        "Figures: `nearest_pairs.png` (the closest synthetic-training pairs), `distance_histogram.png`. "
        "Per-image distances: `distances.tsv`. All numbers: `privacy.json`.",
        "",
    ]
    return "\n".join(lines)
