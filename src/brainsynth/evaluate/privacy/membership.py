"""Membership inference against a synthetic set, with an interval and a subject-level p-value.

The attack (GAN-Leaks, Chen et al. 2020, full black-box setting): an attacker holding only the
synthetic images scores each real image by its distance to the nearest synthetic image and
guesses "was in the training set" for the smallest distances. Its success is the AUC of
training members against held-out non-members (0.5 = no better than chance).

Four attacks are computed, and ONE of them, declared before any data is seen, is the headline
(:data:`HEADLINE`): the aligned pixel distance at the slice level. It is the distance the
near-copy detector uses, so the headline and the memorisation rate speak about the same notion of
"close"; taking the best of several attacks afterwards (as brainsynth did before) biases the
headline upwards. The feature-space attack and the subject-level versions (a subject scored by
the mean distance of its slices) are reported beside it.

Uncertainty is carried by subjects, because slices of one subject are not independent:

* the 95 % interval is a percentile bootstrap that resamples member subjects and non-member
  subjects (each with all its slices) with replacement;
* the p-value tests "membership does not change the distances": the member/non-member labels are
  permuted among SUBJECTS (all slices of a subject move together) and the AUC recomputed. Every
  relabelling is enumerated when there are at most ``permutations`` of them (12 subjects, 4 held
  out: 495), otherwise ``permutations`` random ones are drawn. One-sided: large AUCs are leaks.

Both use the count matrix ``U[i, j]`` = number of (slice of subject i, slice of subject j) pairs
with i's distance smaller (ties count half), from which the AUC of any grouping of subjects is
``sum_{i in M, j not in M} U[i, j] / (n_M n_N)``. Resamples and relabellings then cost a few
subject-sized sums instead of a sort of every slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

import numpy as np

HEADLINE = ("pixel", "slice")
"""(space, level) of the pre-declared headline attack."""

LEVELS = ("slice", "subject")


@dataclass
class Attack:
    """One attack's outcome."""

    space: str
    level: str
    auc: float | None
    ci: tuple[float | None, float | None]
    p_value: float | None
    n_members: int  # scored units (slices or subjects)
    n_nonmembers: int
    n_member_subjects: int
    n_nonmember_subjects: int
    exact: bool  # p-value from every relabelling (True) or from random ones
    counts: np.ndarray | None = None  # [S, S] U matrix over member subjects then non-member subjects
    sizes: np.ndarray | None = None  # [S] scored units per subject

    def to_dict(self) -> dict:
        return {"space": self.space, "level": self.level, "auc": self.auc, "ci": list(self.ci),
                "p_value": self.p_value, "n_members": self.n_members, "n_nonmembers": self.n_nonmembers,
                "n_member_subjects": self.n_member_subjects, "n_nonmember_subjects": self.n_nonmember_subjects,
                "p_value_exact": self.exact}


def pair_counts(groups: Sequence[np.ndarray]) -> np.ndarray:
    """``U[i, j]``: pairs (a in group i, b in group j) with ``a < b``, ties counted half; float [G, G]."""
    ordered = [np.sort(np.asarray(g, dtype=np.float64)) for g in groups]
    out = np.zeros((len(ordered), len(ordered)))
    for j, b in enumerate(ordered):
        for i, a in enumerate(ordered):
            if i == j or not len(a) or not len(b):
                continue
            left = np.searchsorted(b, a, side="left")
            right = np.searchsorted(b, a, side="right")
            out[i, j] = np.sum(len(b) - right) + 0.5 * np.sum(right - left)
    return out


def grouping_auc(counts: np.ndarray, sizes: np.ndarray, member: np.ndarray) -> float:
    """AUC of the grouping ``member`` (bool [S]) from the pair counts."""
    n_m, n_n = sizes[member].sum(), sizes[~member].sum()
    return float(counts[np.ix_(member, ~member)].sum() / (n_m * n_n))


def attack(member_scores: np.ndarray, member_subjects: Sequence[str], nonmember_scores: np.ndarray,
           nonmember_subjects: Sequence[str], *, space: str, level: str, n_boot: int, n_perm: int,
           seed: int) -> Attack:
    """AUC, 95 % subject-bootstrap interval and subject-permutation p-value of one attack.

    Parameters
    ----------
    member_scores, nonmember_scores : np.ndarray
        float [Nm], [Nn]: each real image's distance to the nearest synthetic image (smaller =
        guessed member).
    member_subjects, nonmember_subjects : sequence of str
        The subject of each image.
    level : {"slice", "subject"}
        Score each image, or each subject by the mean score of its images.
    n_boot, n_perm : int
        Bootstrap resamples (0: no interval) and the most relabellings (0: no p-value).
    """
    groups, n_member = [], 0
    for scores, subjects in ((member_scores, member_subjects), (nonmember_scores, nonmember_subjects)):
        scores, subjects = np.asarray(scores, dtype=np.float64), np.asarray(subjects, dtype=object)
        for subject in sorted(set(subjects.tolist())):
            values = scores[subjects == subject]
            groups.append(values if level == "slice" else np.array([values.mean()]))
        n_member = n_member or len(groups)
    n_subjects = len(groups)
    member = np.arange(n_subjects) < n_member
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    result = Attack(space=space, level=level, auc=None, ci=(None, None), p_value=None,
                    n_members=int(sizes[member].sum()), n_nonmembers=int(sizes[~member].sum()),
                    n_member_subjects=int(member.sum()), n_nonmember_subjects=int((~member).sum()), exact=False)
    if not member.any() or member.all():
        return result
    counts = pair_counts(groups)
    result.counts, result.sizes = counts, sizes
    result.auc = grouping_auc(counts, sizes, member)
    rng = np.random.default_rng(seed)
    if n_boot > 0:
        result.ci = _bootstrap(counts, sizes, member, n_boot, rng)
    if n_perm > 0:
        result.p_value, result.exact = permutation_p_value([(counts, sizes, member)], n_perm, rng)
    return result


def _bootstrap(counts: np.ndarray, sizes: np.ndarray, member: np.ndarray, n_boot: int,
               rng: np.random.Generator) -> tuple[float, float]:
    members, others = np.flatnonzero(member), np.flatnonzero(~member)
    values = np.empty(n_boot)
    for b in range(n_boot):
        wm = np.bincount(rng.choice(members, len(members)), minlength=len(sizes))[members]  # [Sm] draws
        wn = np.bincount(rng.choice(others, len(others)), minlength=len(sizes))[others]  # [Sn]
        pairs = (wm * sizes[members]).sum() * (wn * sizes[others]).sum()
        values[b] = wm @ counts[np.ix_(members, others)] @ wn / pairs
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def permutation_p_value(folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], n_perm: int,
                        rng: np.random.Generator) -> tuple[float, bool]:
    """One-sided p-value of the mean AUC over ``folds``, membership relabelled among subjects.

    Each fold is ``(counts, sizes, member)``; relabelling happens within each fold (its own
    members and non-members), the statistic is the mean of the folds' AUCs. Every joint
    relabelling is enumerated when there are at most ``n_perm``; otherwise ``n_perm`` random
    ones are drawn and the observed labelling counts as one of them.

    Returns
    -------
    p_value : float
    exact : bool
    """
    observed = np.mean([grouping_auc(c, s, m) for c, s, m in folds])
    sizes = [math.comb(len(m), int(m.sum())) for _, _, m in folds]
    total = math.prod(sizes)
    if total <= n_perm:
        per_fold = []
        for counts, n, member in folds:
            aucs = []
            for chosen in combinations(range(len(member)), int(member.sum())):
                labels = np.zeros(len(member), dtype=bool)
                labels[list(chosen)] = True
                aucs.append(grouping_auc(counts, n, labels))
            per_fold.append(np.asarray(aucs))
        stat = per_fold[0]
        for aucs in per_fold[1:]:
            stat = (stat[:, None] + aucs[None, :]).ravel()  # every combination of the folds' labellings
        stat = stat / len(folds)
        return float(np.mean(stat >= observed - 1e-12)), True
    hits = 0
    for _ in range(n_perm):
        stat = np.mean([grouping_auc(c, s, rng.permutation(m)) for c, s, m in folds])
        hits += stat >= observed - 1e-12
    return float((1 + hits) / (1 + n_perm)), False


def membership_inference(scores: dict[str, tuple[np.ndarray, np.ndarray]], member_subjects: Sequence[str],
                         nonmember_subjects: Sequence[str], *, n_boot: int, n_perm: int,
                         seed: int) -> dict[str, Attack]:
    """Every attack: ``{"pixel/slice": Attack, ...}``, the headline first.

    Parameters
    ----------
    scores : dict
        space -> (member distances [Nm], non-member distances [Nn]).
    """
    out: dict[str, Attack] = {}
    order = [HEADLINE] + [(s, lvl) for s in scores for lvl in LEVELS if (s, lvl) != HEADLINE]
    for space, level in order:
        if space not in scores:
            continue
        members, others = scores[space]
        out[f"{space}/{level}"] = attack(members, member_subjects, others, nonmember_subjects, space=space,
                                         level=level, n_boot=n_boot, n_perm=n_perm, seed=seed)
    return out


def headline_key() -> str:
    return f"{HEADLINE[0]}/{HEADLINE[1]}"


def restricted(attack: Attack, nonmembers: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(counts, sizes, member)`` of ``attack`` with only the non-member subjects in ``nonmembers``.

    ``nonmembers`` is bool [n_nonmember_subjects], in the attack's order of non-member subjects
    (sorted). The pair counts of two subjects do not depend on the others, so a sub-matrix of
    ``attack.counts`` is exactly the attack run on the members and those non-members alone.
    """
    n_m = attack.n_member_subjects
    keep = np.r_[np.ones(n_m, dtype=bool), np.asarray(nonmembers, dtype=bool)]
    return attack.counts[np.ix_(keep, keep)], attack.sizes[keep], np.arange(int(keep.sum())) < n_m


def half_attack(attack: Attack, nonmembers: np.ndarray, *, n_boot: int, n_perm: int, seed: int) -> Attack:
    """``attack`` against the non-member subjects in ``nonmembers`` only (one half of the held-out subjects).

    The AUC, its subject-bootstrap interval and its subject-permutation p-value are those of the
    members against these non-members: the data of the other held-out subjects takes no part.
    """
    out = Attack(space=attack.space, level=attack.level, auc=None, ci=(None, None), p_value=None,
                 n_members=attack.n_members, n_nonmembers=0, n_member_subjects=attack.n_member_subjects,
                 n_nonmember_subjects=int(np.sum(nonmembers)), exact=False)
    if attack.counts is None or not np.any(nonmembers) or attack.n_member_subjects == 0:
        return out
    counts, sizes, member = restricted(attack, nonmembers)
    out.counts, out.sizes = counts, sizes
    out.n_nonmembers = int(sizes[~member].sum())
    out.auc = grouping_auc(counts, sizes, member)
    rng = np.random.default_rng(seed)
    if n_boot > 0:
        out.ci = _bootstrap(counts, sizes, member, n_boot, rng)
    if n_perm > 0:
        out.p_value, out.exact = permutation_p_value([(counts, sizes, member)], n_perm, rng)
    return out
