"""Power of the membership rule on held-out half B, by simulation with the exact permutation test.

How often does the pre-declared membership rule (pooled over folds: mean headline AUC <= 0.60 and
subject-permutation p >= 0.05; :mod:`brainsynth.evaluate.privacy.membership_rule`) FAIL a
generator, as a function of how much it truly leaks? At a true AUC of 0.5 that is the false-fail
rate; above it, the power to catch a leak.

Each simulated fold has ``members`` training subjects and ``nonmembers`` held-out subjects (2:
half B of the demo's 4), ``slices`` slices each. A slice's score (its distance to the nearest
synthetic image) is a subject effect plus slice noise, total variance 1, ``icc`` of it between
subjects; members' scores are shifted down by ``sqrt(2) * Phi^-1(true AUC)``, so that a random
member slice is closer than a random non-member slice with probability = the true slice AUC.
The AUC and the p-value are computed exactly as the audit does (the subject-level pair counts of
:func:`~brainsynth.evaluate.privacy.membership.pair_counts`; relabelling membership among subjects
within each fold); every joint relabelling is enumerated when there are at most ``--exact``
(45**3 = 91,125 for 3 folds of 8 + 2), otherwise ``--perm`` are drawn.

Also shown: the rule the issue gave as an example, "p >= 0.05 in EVERY fold" (with the pooled AUC
bound), whose false-fail rate grows with the number of folds.

    .venv/bin/python benchmarks/membership_power.py --folds 3 9 --nonmembers 2 4 --icc 0.1 0.3 0.5 \\
        --auc 0.5 0.55 0.6 0.65 0.7 0.8 --sims 1000 --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import norm

from brainsynth.evaluate.privacy.membership import pair_counts
from brainsynth.evaluate.privacy.membership_rule import MAX_AUC, MIN_P


def labellings(n_subjects: int, n_members: int) -> np.ndarray:
    """bool [L, S]: every way to call ``n_members`` of ``n_subjects`` subjects members (the observed one first)."""
    rows = [np.isin(np.arange(n_subjects), chosen) for chosen in itertools.combinations(range(n_subjects), n_members)]
    return np.array(rows)


def fold_aucs(counts: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """[L]: the AUC of every labelling (members = True), from the subject pair counts."""
    m = labels.astype(np.float64)  # [L, S]
    pairs = np.einsum("ls,st,lt->l", m, counts, 1.0 - m)
    return pairs / ((m @ sizes) * ((1.0 - m) @ sizes))


def simulate_fold(rng: np.random.Generator, members: int, nonmembers: int, slices: int, icc: float,
                  shift: float, labels: np.ndarray) -> np.ndarray:
    """[L] AUCs of every relabelling of one simulated fold; entry 0 is the true labelling."""
    n = members + nonmembers
    effect = rng.normal(0.0, math.sqrt(icc), n) - shift * (np.arange(n) < members)  # [S]
    groups = [effect[s] + rng.normal(0.0, math.sqrt(1.0 - icc), slices) for s in range(n)]
    return fold_aucs(pair_counts(groups), np.full(n, float(slices)), labels)


def pooled_p(per_fold: Sequence[np.ndarray], exact: int, n_perm: int, rng: np.random.Generator) -> float:
    """One-sided p of the mean AUC over folds, relabelled within every fold (as the audit does)."""
    observed = np.mean([a[0] for a in per_fold])
    total = math.prod(len(a) for a in per_fold)
    if total <= exact:
        stat = per_fold[0]
        for aucs in per_fold[1:]:
            stat = (stat[:, None] + aucs[None, :]).ravel()
        return float(np.mean(stat / len(per_fold) >= observed - 1e-12))
    draws = np.stack([a[rng.integers(0, len(a), n_perm)] for a in per_fold]).mean(axis=0)  # [n_perm]
    return float((1 + np.sum(draws >= observed - 1e-12)) / (1 + n_perm))


def fold_p(aucs: np.ndarray) -> float:
    """Exact one-sided p of one fold's AUC over its relabellings."""
    return float(np.mean(aucs >= aucs[0] - 1e-12))


def power(folds: int, nonmembers: int, icc: float, true_auc: float, *, members: int = 8, slices: int = 90,
          sims: int = 500, exact: int = 100_000, n_perm: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Failure rates of the rule (and of the every-fold variant) over ``sims`` simulated evaluations."""
    rng = np.random.default_rng([seed, folds, nonmembers, int(1000 * icc), int(1000 * true_auc)])
    labels = labellings(members + nonmembers, members)  # the true labelling is row 0
    shift = math.sqrt(2.0) * norm.ppf(true_auc)
    fail, fail_p, fail_auc, fail_every = 0, 0, 0, 0
    for _ in range(sims):
        per_fold = [simulate_fold(rng, members, nonmembers, slices, icc, shift, labels) for _ in range(folds)]
        auc = float(np.mean([a[0] for a in per_fold]))
        p = pooled_p(per_fold, exact, n_perm, rng)
        big_auc, small_p = auc > MAX_AUC + 1e-12, p < MIN_P - 1e-12
        fail += big_auc or small_p
        fail_p += small_p
        fail_auc += big_auc
        fail_every += big_auc or any(fold_p(a) < MIN_P - 1e-12 for a in per_fold)
    return {"folds": folds, "nonmembers": nonmembers, "members": members, "slices": slices, "icc": icc,
            "true_auc": true_auc, "sims": sims, "fail_rule": fail / sims, "fail_p": fail_p / sims,
            "fail_auc": fail_auc / sims, "fail_every_fold_variant": fail_every / sims,
            "smallest_fold_p": 1.0 / len(labels)}


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| folds | held-out per fold | ICC | true AUC | rule fails | pooled p < 0.05 | pooled AUC > 0.60 | "
             "'every fold' variant fails |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['folds']} | {r['nonmembers']} | {r['icc']:g} | {r['true_auc']:.2f} | "
                     f"{100 * r['fail_rule']:.1f}% | {100 * r['fail_p']:.1f}% | {100 * r['fail_auc']:.1f}% | "
                     f"{100 * r['fail_every_fold_variant']:.1f}% |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folds", type=int, nargs="+", default=[3, 9], help="folds pooled (3 folds x repeats)")
    parser.add_argument("--nonmembers", type=int, nargs="+", default=[2], help="held-out subjects per fold judged")
    parser.add_argument("--members", type=int, default=8, help="training subjects per fold")
    parser.add_argument("--slices", type=int, default=90, help="slices per subject")
    parser.add_argument("--icc", type=float, nargs="+", default=[0.1, 0.3, 0.5],
                        help="share of a slice score's variance between subjects")
    parser.add_argument("--auc", type=float, nargs="+", default=[0.5, 0.55, 0.6, 0.65, 0.7, 0.8],
                        help="true slice-level AUCs")
    parser.add_argument("--sims", type=int, default=500)
    parser.add_argument("--exact", type=int, default=100_000, help="enumerate up to this many joint relabellings")
    parser.add_argument("--perm", type=int, default=2000, help="relabellings drawn beyond that")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = [power(f, h, icc, auc, members=args.members, slices=args.slices, sims=args.sims, exact=args.exact,
                  n_perm=args.perm, seed=args.seed)
            for f in args.folds for h in args.nonmembers for icc in args.icc for auc in args.auc]
    print(table(rows))
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
