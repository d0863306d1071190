"""The membership rule, declared before any generator was judged by it (docs/privacy.md).

A synthetic set passes when, on held-out **half B** (the subjects that set nothing and chose
nothing), pooled over every fold:

* the mean of the folds' headline AUCs (aligned pixel distance to the nearest synthetic image,
  per slice) is at most :data:`MAX_AUC`, and
* its one-sided p-value, from relabelling membership among subjects within every fold at once,
  is at least :data:`MIN_P`.

The AUC bound says "an attacker gains little"; the p-value says "these subjects cannot show a
leak at all". Both are needed: with few subjects a large AUC can be chance (the p-value stops a
verdict built on it), and with many a tiny but real leak is significant (the AUC bound lets it
pass as small). Pooling over folds keeps the chance of failing a generator that leaks nothing at
5 % however many folds and repeats there are; a rule "p >= 0.05 in every fold" would fail such a
generator in 12.7 % of 3-fold evaluations and 33 % of 9-fold ones (each fold's exact test with 8
training and 2 half-B subjects rejects with probability 2/45).

The same rule judged on half A, within one fold, is what checkpoint selection may read
(:mod:`brainsynth.selection`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from brainsynth.evaluate.privacy import membership as mia

MAX_AUC = 0.60
"""Largest pooled headline AUC a set may show on the judged half."""
MIN_P = 0.05
"""Smallest pooled subject-permutation p-value a set may show on the judged half."""

RULE_TEXT = (f"on held-out half B, pooled over folds: mean headline membership AUC <= {MAX_AUC:.2f} and its "
             f"subject-permutation p-value >= {MIN_P:g} (declared before any generator was judged; docs/privacy.md)")


@dataclass
class RuleVerdict:
    """The membership rule applied to one set's folds on one half."""

    half: str  # "a" or "b"
    auc: Optional[float]  # mean over folds of the half's headline AUC
    p_value: Optional[float]  # pooled subject-permutation p-value
    exact: bool  # every joint relabelling enumerated
    n_folds: int  # folds with members and non-members on this half
    smallest_p: Optional[float]  # the smallest p-value these group sizes allow (the test's resolution)
    passed: Optional[bool]  # None: not measurable (no fold with subjects on this half, or no permutations)

    def to_dict(self) -> dict[str, Any]:
        return {"half": self.half, "auc": self.auc, "p_value": self.p_value, "p_value_exact": self.exact,
                "n_folds": self.n_folds, "smallest_p_value": self.smallest_p, "passed": self.passed,
                "max_auc": MAX_AUC, "min_p_value": MIN_P, "rule": RULE_TEXT.replace("half B", f"half {self.half.upper()}")}


def passes(auc: Optional[float], p_value: Optional[float]) -> Optional[bool]:
    """The rule on one (AUC, p) pair; ``None`` when either is missing."""
    if auc is None or p_value is None:
        return None
    return bool(auc <= MAX_AUC + 1e-12 and p_value >= MIN_P - 1e-12)


def judge(folds: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], half: str, *, n_perm: int,
          seed: int) -> RuleVerdict:
    """The rule on the half-restricted headline attacks of several folds.

    Parameters
    ----------
    folds : sequence of (counts, sizes, member)
        Per fold: the headline attack's pair counts over the members and this half's
        non-member subjects (:func:`brainsynth.evaluate.privacy.membership.restricted`).
    half : {"a", "b"}
    n_perm : int
        Most relabellings for the p-value (all of them when fewer exist; 0: no p-value).
    """
    usable = [(c, s, m) for c, s, m in folds if m.any() and (~m).any()]
    if not usable:
        return RuleVerdict(half, None, None, False, 0, None, None)
    auc = float(np.mean([mia.grouping_auc(c, s, m) for c, s, m in usable]))
    p_value, exact = (None, False)
    if n_perm > 0:
        p_value, exact = mia.permutation_p_value(usable, n_perm, np.random.default_rng(seed))
    total = math.prod(math.comb(len(m), int((~m).sum())) for _, _, m in usable)
    smallest = (1.0 / total if total <= n_perm else 1.0 / (1 + n_perm)) if n_perm > 0 else None
    return RuleVerdict(half, auc, p_value, exact, len(usable), smallest, passes(auc, p_value))
