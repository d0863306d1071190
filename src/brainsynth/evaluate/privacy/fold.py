"""Privacy audit of one fold: does a synthetic image set copy the images its generator trained on?

One call (:func:`audit_fold`) audits one fold: the generator's training images against the real
images of subjects it never saw (*held-out*); :func:`pool_folds` combines folds.

**Near-copies (memorisation).** A synthetic image is a near-copy when it is much closer to one
training person's slice than to any slice of every other training person. Distances are measured
twice: the *aligned pixel distance* (:mod:`brainsynth.evaluate.privacy.registration`: the training slice may be mirrored,
rotated, scaled, shifted and given another brightness curve before comparing) and the *feature
distance* (cosine distance of CNN features). In each space the score is the nearest-neighbour
distance ratio (:func:`distance_ratio`; Lowe 2004 for matching, NNDR in synthetic-data privacy
evaluation): the distance to the nearest training image over the distance to the nearest training
image of another subject. An image is flagged when either space's ratio is below its threshold.

**Calibration that can be checked** (:mod:`brainsynth.evaluate.privacy.calibration`). The held-out subjects are split in
two, by subject, seeded and stratified by label. Half A sets the thresholds: the quantile of half
A's ratios at which the OR-rule flags at most ``percentile`` % of half A, per brain-area band (a
small low slice would otherwise set the threshold for every slice; synthetic images have no slice
number, so their own brain area places them in a band). Half B, never used to set them, is then
flagged by the same rule: its flagged share is the *false-flag rate*, the memorisation rate a
generator that copies nothing would score, with a 95 % Wilson interval.

Why a ratio and not the plain distance: people differ in how close they are to everybody (a brain
near the average is near everyone), so thresholds on plain distances set on two or three held-out
people do not carry over to others. On the demo cohort they flagged 38 % of half B instead of about
1 %; the ratio divides that out.

**Authenticity** (Alaa et al. 2022): a synthetic image is unauthentic when it is closer to its
nearest training image than that training image is to its nearest training image of another
subject (slices of one subject are near-duplicates of each other).

**Membership inference**: :mod:`brainsynth.evaluate.privacy.membership`.

This module is the maths (arrays in, numbers out); :mod:`brainsynth.evaluate.privacy.summary` turns it into the report's
numbers and pools folds. The command is :mod:`.audit_command`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from brainsynth.config import AuditConfig
from brainsynth.errors import InputError
from brainsynth.evaluate.privacy import membership as mia
from brainsynth.evaluate.privacy.calibration import Calibration, calibrate, split_holdout, subject_of
from brainsynth.evaluate.privacy import registration as reg
from brainsynth.evaluate.privacy.distances import feature_nearest, unit_features
from brainsynth.evaluate.privacy.nearest import Nearest
from brainsynth.evaluate.privacy.search import match
from brainsynth.progress import bar

log = logging.getLogger("brainsynth.privacy")

SUBJECTS_PER_QUERY = 3
"""Training subjects whose best slice joins every image's candidates (for its distance ratio)."""

SPACES = ("pixel", "feature")

LIMITS = (
    "It is not differential privacy: it gives no mathematical bound on what any person's data can reveal. Only "
    "a differentially private training method gives one.",
    "A low near-copy rate shows that no synthetic image is a (re-acquired) copy of a whole training slice. "
    "Copying of a small region, of one person's distinctive anatomy inside otherwise new images, or of "
    "information spread over many images is not measured.",
    "Transforms outside the searched family (larger rotations, non-rigid warps, other contrasts) are not "
    "forgiven, so copies made that way are not found by the pixel distance.",
    "The false-flag rate and the membership test rest on few held-out subjects; slices of one person are "
    "correlated, so intervals that count slices are too narrow.",
    "Training and held-out subjects may differ for reasons unrelated to the generator (diagnosis mix, scanner), "
    "which moves the membership AUC away from 0.5 on its own.",
)
"""What the audit does not show, in plain words (written into every privacy report)."""


# --- one fold -----------------------------------------------------------------------------------------

def distance_ratio(query_to_train: np.ndarray, train_subjects: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Each query's nearest-neighbour distance ratio: nearest training image over nearest image of ANOTHER subject.

    A copy of one person's slice is much closer to that slice than to anybody else's, so its
    ratio is small (0 for an exact copy); a new image is about as close to several people, so its
    ratio is near 1. Dividing by the query's own second-person distance removes what makes plain
    distances differ between people (a brain close to the average is close to everyone), which a
    threshold set on a few held-out subjects cannot otherwise carry over to others.

    Returns
    -------
    ratio : np.ndarray
        float [Nq] in [0, 1]; NaN where no image of another subject was a candidate (never flagged).
    other : np.ndarray
        float [Nq]: the distance to the nearest training image of another subject than the nearest.
    """
    subjects = np.asarray([str(x) for x in train_subjects], dtype=object)
    nearest = query_to_train.argmin(axis=1)  # [Nq]
    closest = query_to_train[np.arange(len(nearest)), nearest]  # [Nq]
    others = subjects[None, :] != subjects[nearest][:, None]  # [Nq, M]
    other = np.where(others, query_to_train, np.inf).min(axis=1)  # [Nq]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(other > 0, closest / other, 1.0)  # 0 / 0: two identical people, no copy of one
    # No image of another subject among the candidates (only with a single usable subject): undefined.
    return np.where(np.isfinite(other), np.clip(ratio, 0.0, 1.0), np.nan), other


@dataclass
class SpaceDistances:
    """Nearest-neighbour facts in one space (:class:`~brainsynth.evaluate.privacy.nearest.Nearest` per query set;
    no query x training matrix is kept)."""

    synth: Nearest  # synthetic (query) vs training (reference)
    holdout: Nearest  # held-out vs training
    train_neighbour: np.ndarray | None = None  # [M] each training image's nearest training image of another subject
    train_to_synth: np.ndarray | None = None  # [M] each training image's nearest synthetic image (membership)
    holdout_to_synth: np.ndarray | None = None  # [H] each held-out image's nearest synthetic image (membership)

    @property
    def synth_ratio(self) -> np.ndarray:
        return self.synth.ratio  # [N] nearest-neighbour distance ratio (see distance_ratio)

    @property
    def holdout_ratio(self) -> np.ndarray:
        return self.holdout.ratio  # [H]

    @property
    def synth_nearest(self) -> np.ndarray:
        return self.synth.distance  # [N]

    @property
    def holdout_nearest(self) -> np.ndarray:
        return self.holdout.distance  # [H]


@dataclass
class PrivacyResult:
    """Everything :func:`audit_fold` measured, as arrays (the JSON summary keeps less)."""

    spaces: dict[str, SpaceDistances]
    calibration: Calibration
    synth_area: np.ndarray  # [N] brain-area share
    holdout_area: np.ndarray  # [H]
    synth_flags: dict[str, np.ndarray]  # space -> bool [N]
    holdout_flags: dict[str, np.ndarray]  # space -> bool [H]
    pixel_matches: reg.Matches  # synthetic vs training: the transforms found
    train_ids: list[str]
    holdout_ids: list[str]
    family: reg.Family
    side: int  # image side (px)
    work_size: int
    seed: int  # of the half-A / half-B split
    attacks: dict[str, mia.Attack] | None = None
    halves: dict[str, mia.Attack] | None = None  # "a"/"b" -> the headline attack against that half's subjects only
    device: str = "cpu"  # where the distances were computed

    @property
    def flagged(self) -> np.ndarray:
        return np.logical_or.reduce([self.synth_flags[s] for s in SPACES])  # [N]

    @property
    def holdout_flagged(self) -> np.ndarray:
        return np.logical_or.reduce([self.holdout_flags[s] for s in SPACES])  # [H]

    @property
    def half_b(self) -> np.ndarray:
        return ~self.calibration.half_a  # [H]

    @property
    def nonmember_in_a(self) -> np.ndarray:
        return nonmember_half_a(self.holdout_ids, self.calibration.half_a)  # bool [held-out subjects, sorted]


def family_of(cfg: AuditConfig) -> reg.Family:
    """The search bounds of an ``audit`` section."""
    return reg.Family(max_shift=cfg.max_shift, max_rotation=cfg.max_rotation, max_scale=cfg.max_scale, flip=cfg.flip)


def neighbour_distance_excluding_subject(train_to_train: np.ndarray, subjects: Sequence[str]) -> np.ndarray:
    """Each training image's distance to its nearest training image of ANOTHER subject; float32 [M].

    Adjacent slices of one subject are nearly identical, so "nearest other image" would be tiny
    and every synthetic image would pass as authentic. With a single subject only the image itself
    is excluded (``inf`` for a single image). (A dense matrix, for small cases; the audit gets the
    same numbers from :func:`~brainsynth.evaluate.privacy.search.match` with ``query_groups``.)
    """
    return np.where(same_subject(subjects), np.inf, train_to_train).min(axis=1).astype(np.float32)


def same_subject(subjects: Sequence[str]) -> np.ndarray:
    """bool [M, M]: pairs of one subject (the diagonal only, when there is a single subject)."""
    subj = np.asarray([str(s) for s in subjects], dtype=object)
    if len(set(subj.tolist())) < 2:
        return np.eye(len(subj), dtype=bool)
    return subj[:, None] == subj[None, :]


@dataclass
class FoldReference:
    """The real images' side of one fold, shared by every synthetic set audited against it.

    Built by :func:`fold_reference`: the images prepared for matching, held-out and training
    images matched against the training set, the half-A / half-B split and the calibrated
    thresholds. None of it depends on a synthetic set, so ``evaluate`` computes it once per fold.
    """

    cfg: AuditConfig
    family: reg.Family
    train_p: reg.Prepared
    hold_p: reg.Prepared
    train_ids: list[str]
    holdout_ids: list[str]
    subjects: list[str]  # [M] subject of each training image
    groups: np.ndarray  # [M] subject index of each training image
    centre: np.ndarray  # [D] training features' mean
    train_unit: torch.Tensor  # [M, D] training features centred on ``centre``, unit length (on the device)
    holdout_unit: torch.Tensor  # [H, D]
    pixel: SpaceDistances  # holdout and train_neighbour (synthetic fields empty)
    feature: SpaceDistances
    calibration: Calibration
    side: int

    @property
    def device(self) -> torch.device:
        return self.train_p.device


def fold_reference(train_images: np.ndarray, holdout_images: np.ndarray, *, train_features: np.ndarray,
                   holdout_features: np.ndarray, train_ids: Sequence[str], holdout_ids: Sequence[str],
                   holdout_labels: Sequence[str] | None = None, cfg: AuditConfig | None = None,
                   half_a: np.ndarray | None = None, device: str | torch.device | None = None) -> FoldReference:
    """Match the fold's real images and set its thresholds (see :func:`audit_fold` for the parameters).

    ``half_a`` (bool [H]) overrides the split of the held-out images: all True when they ARE half A
    (checkpoint selection passes half A alone, so half B is not even loaded). The training images
    are scored as if held out (for calibration and authenticity) in ONE search against the
    training set with each image's own subject left out, not once per subject.
    """
    cfg = AuditConfig() if cfg is None else cfg
    cfg.check()
    _check_inputs(train_images, holdout_images, train_features, holdout_features, train_ids, holdout_ids)
    if half_a is None:
        half_a = split_holdout([subject_of(i) for i in holdout_ids], holdout_labels, cfg.seed)
    subjects = [subject_of(i) for i in train_ids]
    groups = np.unique(np.asarray(subjects), return_inverse=True)[1]  # [M] subject index per training image
    family, k = family_of(cfg), cfg.candidates
    train_p = reg.prepare(train_images, cfg.work_size, device)
    hold_p = reg.prepare(holdout_images, cfg.work_size, device)
    search = dict(k_groups=SUBJECTS_PER_QUERY, prefilter=cfg.prefilter)
    with bar(len(hold_p), "privacy: held-out vs training") as step:
        m_ht = match(hold_p, train_p, family, k_rows=k, groups=groups, progress=step, **search)
    # Every training image against the OTHER training subjects: its nearest other-subject neighbour
    # (authenticity) and, as if it were held out, its distance ratio (calibration).
    with bar(len(train_p), "privacy: training vs other training subjects") as step:
        m_tt = match(train_p, train_p, family, k_rows=k, query_groups=groups, groups=groups, progress=step, **search)
    centre = np.asarray(train_features, dtype=np.float32).mean(axis=0)  # [D]
    train_unit = unit_features(train_features, centre, train_p.device)
    holdout_unit = unit_features(holdout_features, centre, train_p.device)
    pix_ht, pix_tt = m_ht.nearest(groups)[0], m_tt.nearest(groups)[0]
    feat_ht = feature_nearest(holdout_unit, train_unit, groups)[0]
    feat_tt = feature_nearest(train_unit, train_unit, groups, query_groups=groups)[0]
    empty = Nearest(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.float32))
    pixel = SpaceDistances(empty, pix_ht, train_neighbour=pix_tt.distance)
    feature = SpaceDistances(empty, feat_ht, train_neighbour=feat_tt.distance)
    extra = None
    if cfg.calibrate_with_training and len(set(subjects)) >= 3:  # a left-out subject leaves >= 2 to compare
        extra = {"pixel": pix_tt.ratio, "feature": feat_tt.ratio}
    calibration = calibrate({"pixel": pixel.holdout_ratio, "feature": feature.holdout_ratio}, hold_p.area, half_a,
                            cfg.percentile, cfg.bands, extra, train_p.area if extra else None)
    _warn_coarse_calibration(calibration.n_calibration, cfg.percentile)
    return FoldReference(cfg=cfg, family=family, train_p=train_p, hold_p=hold_p,
                         train_ids=[str(i) for i in train_ids], holdout_ids=[str(i) for i in holdout_ids],
                         subjects=subjects, groups=groups, centre=centre, train_unit=train_unit,
                         holdout_unit=holdout_unit, pixel=pixel, feature=feature, calibration=calibration,
                         side=int(train_images.shape[-1]))


def audit_fold(
    train_images: np.ndarray | None,
    holdout_images: np.ndarray | None,
    synth_images: np.ndarray,
    *,
    train_features: np.ndarray | None = None,
    holdout_features: np.ndarray | None = None,
    synth_features: np.ndarray,
    train_ids: Sequence[str] | None = None,
    holdout_ids: Sequence[str] | None = None,
    holdout_labels: Sequence[str] | None = None,
    cfg: AuditConfig | None = None,
    membership: bool = True,
    reference: FoldReference | None = None,
    device: str | torch.device | None = None,
) -> PrivacyResult:
    """Audit one fold: distances, calibration on half A, flags, authenticity and membership inference.

    Parameters
    ----------
    train_images, holdout_images, synth_images : np.ndarray
        float32 [M, H, W], [Hn, H, W], [N, H, W] in [0, 1]: the generator's training images, real
        images of subjects it never saw, and the synthetic images.
    train_features, holdout_features, synth_features : np.ndarray
        [M, D], [Hn, D], [N, D] features of the same images, from one extractor.
    train_ids, holdout_ids : sequence of str
        ``"<subject>:<slice>"`` per image; subjects split the held-out images and group slices.
    holdout_labels : sequence of str, optional
        Label per held-out image, to stratify the half-A / half-B split.
    cfg : AuditConfig
        Calibration level, bands, search bounds, prefilter, seed, resamples (default ``AuditConfig()``).
    membership : bool
        Also measure membership inference (the self-test does not need it).
    reference : FoldReference, optional
        The fold's real side from :func:`fold_reference`, to audit several synthetic sets against
        one fold without matching the real images again; the real-image arguments and ``cfg``
        are then taken from it (pass ``None`` for them).
    device : str or torch.device, optional
        Where the distances are computed (the CPU by default; ignored with ``reference``, which has one).

    Returns
    -------
    PrivacyResult
    """
    if reference is None:
        reference = fold_reference(train_images, holdout_images, train_features=train_features,
                                   holdout_features=holdout_features, train_ids=train_ids, holdout_ids=holdout_ids,
                                   holdout_labels=holdout_labels, cfg=cfg, device=device)
    ref, cfg = reference, reference.cfg
    _check_synthetic(synth_images, synth_features, ref)
    k = cfg.candidates
    synth_p = reg.prepare(synth_images, cfg.work_size, ref.device)
    with bar(len(synth_p), "privacy: synthetic vs training") as step:
        m_st = match(synth_p, ref.train_p, ref.family, k_rows=k, k_cols=k if membership else 0, groups=ref.groups,
                     k_groups=SUBJECTS_PER_QUERY, prefilter=cfg.prefilter, progress=step)
    synth_unit = unit_features(synth_features, ref.centre, ref.device)
    pix_st, pix_train_min = m_st.nearest(ref.groups)
    feat_st, feat_train_min = feature_nearest(synth_unit, ref.train_unit, ref.groups)
    spaces = {
        "pixel": dataclasses.replace(ref.pixel, synth=pix_st),
        "feature": dataclasses.replace(ref.feature, synth=feat_st),
    }
    if membership:
        hold_groups = np.zeros(len(ref.hold_p), np.int64)  # only each held-out image's nearest synthetic is read
        with bar(len(synth_p), "privacy: synthetic vs held-out") as step:
            m_sh = match(synth_p, ref.hold_p, ref.family, k_rows=0, k_cols=k, groups=hold_groups,
                         prefilter=cfg.prefilter, progress=step)
        spaces["pixel"].train_to_synth, spaces["pixel"].holdout_to_synth = pix_train_min, m_sh.nearest(hold_groups)[1]
        spaces["feature"].train_to_synth = feat_train_min
        spaces["feature"].holdout_to_synth = feature_nearest(synth_unit, ref.holdout_unit, hold_groups)[1]
    calibration = ref.calibration
    result = PrivacyResult(
        spaces=spaces, calibration=calibration, synth_area=synth_p.area, holdout_area=ref.hold_p.area,
        synth_flags=calibration.flags({s: spaces[s].synth_ratio for s in SPACES}, synth_p.area),
        holdout_flags=calibration.flags({s: spaces[s].holdout_ratio for s in SPACES}, ref.hold_p.area),
        pixel_matches=m_st, train_ids=ref.train_ids, holdout_ids=ref.holdout_ids,
        family=ref.family, side=ref.side, work_size=ref.train_p.size, seed=cfg.seed, device=str(ref.device),
    )
    if membership:
        scores = {s: (spaces[s].train_to_synth, spaces[s].holdout_to_synth) for s in SPACES}
        result.attacks = mia.membership_inference(scores, ref.subjects, [subject_of(i) for i in ref.holdout_ids],
                                                  n_boot=cfg.bootstrap, n_perm=cfg.permutations, seed=cfg.seed)
        result.halves = half_attacks(result.attacks[mia.headline_key()], ref.holdout_ids, calibration.half_a, cfg)
    return result


def nonmember_half_a(holdout_ids: Sequence[str], half_a: np.ndarray) -> np.ndarray:
    """bool [held-out subjects, sorted]: which held-out subject is in half A (the attacks' order of non-members)."""
    in_a = {subject_of(i): bool(a) for i, a in zip(holdout_ids, half_a)}
    return np.array([in_a[s] for s in sorted(in_a)], dtype=bool)


def half_attacks(headline: mia.Attack, holdout_ids: Sequence[str], half_a: np.ndarray,
                 cfg: AuditConfig) -> dict[str, mia.Attack]:
    """The headline attack against half A's and against half B's subjects alone.

    Half A is what a choice among checkpoints may read (it also set the near-copy thresholds);
    half B is what the report's membership verdict is judged on, and nothing was chosen on it.
    """
    in_a = nonmember_half_a(holdout_ids, half_a)
    return {half: mia.half_attack(headline, mask, n_boot=cfg.bootstrap, n_perm=cfg.permutations, seed=cfg.seed)
            for half, mask in (("a", in_a), ("b", ~in_a))}


def _check_synthetic(synth_images: np.ndarray, synth_features: np.ndarray, ref: FoldReference) -> None:
    if tuple(synth_images.shape[1:]) != (ref.side, ref.side):
        raise InputError(f"image sizes differ (training {ref.side}x{ref.side}, synthetic "
                         f"{synth_images.shape[2]}x{synth_images.shape[1]}); generate synthetic images at the "
                         "dataset's size")
    if len(synth_images) < 1:
        raise InputError("the privacy audit needs >= 1 synthetic image, got 0")
    if len(synth_features) != len(synth_images):
        raise ValueError(f"synthetic: {len(synth_images)} images but {len(synth_features)} feature rows")


def _check_inputs(train_images, holdout_images, train_features, holdout_features, train_ids, holdout_ids) -> None:
    if train_images.shape[1:] != holdout_images.shape[1:]:
        raise InputError(f"image sizes differ (training {train_images.shape[2]}x{train_images.shape[1]}, held-out "
                         f"{holdout_images.shape[2]}x{holdout_images.shape[1]}); prepare both at one size")
    if len(train_images) < 2 or len(holdout_images) < 2:
        raise InputError(f"the privacy audit needs >= 2 training and >= 2 held-out images, got {len(train_images)} "
                         f"and {len(holdout_images)}")
    if train_images.shape[-1] != train_images.shape[-2]:
        raise InputError(f"the audit compares square images; got {train_images.shape[-1]}x{train_images.shape[-2]} px")
    for name, imgs, feats in (("training", train_images, train_features),
                              ("held-out", holdout_images, holdout_features)):
        if len(feats) != len(imgs):
            raise ValueError(f"{name}: {len(imgs)} images but {len(feats)} feature rows")
    for name, imgs, ids in (("training", train_images, train_ids), ("held-out", holdout_images, holdout_ids)):
        if len(ids) != len(imgs):
            raise ValueError(f"{len(imgs)} {name} images but {len(ids)} ids")
    if len({subject_of(i) for i in train_ids}) < 2:
        raise InputError("the training images come from 1 subject; a near-copy is an image much closer to one "
                         "person's slice than to any other person's, so the audit needs at least 2 training subjects")


def _warn_coarse_calibration(n_calibration: int, percentile: float) -> None:
    if n_calibration * percentile / 100.0 < 1.0:
        log.warning(
            "only %d calibration images: the %.3g%% threshold is their smallest rescaled ratio; more held-out "
            "images make the near-copy threshold finer", n_calibration, percentile,
        )
