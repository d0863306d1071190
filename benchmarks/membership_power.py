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

Which ICC is realistic is measured on a real audit (``--measure-icc``): the headline scores of one
fold's training and held-out slices against one synthetic set, the ICC within each group
(one-way random effects, ICC(1)):

    .venv/bin/python benchmarks/membership_power.py --measure-icc DEMO_OUT/dataset \\
        DEMO_OUT/r0/f0/synthetic/dcgan --fold 0 --config demo --json
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


def icc(scores: np.ndarray, subjects: Sequence[str]) -> float:
    """One-way random-effects ICC(1) of ``scores`` grouped by subject (unequal group sizes: k0 of Searle)."""
    scores, subjects = np.asarray(scores, dtype=np.float64), np.asarray(subjects)
    groups = [scores[subjects == s] for s in sorted(set(subjects.tolist()))]
    n, g = len(scores), len(groups)
    sizes = np.array([len(x) for x in groups], dtype=np.float64)
    grand = scores.mean()
    ms_between = sum(len(x) * (x.mean() - grand) ** 2 for x in groups) / (g - 1)
    ms_within = sum(((x - x.mean()) ** 2).sum() for x in groups) / (n - g)
    k0 = (n - (sizes ** 2).sum() / n) / (g - 1)
    return float((ms_between - ms_within) / (ms_between + (k0 - 1) * ms_within))


def measure_icc(dataset: str, synthetic: str, *, fold: int, repeat: int, config: str) -> dict[str, Any]:
    """ICC of the headline attack's slice scores (aligned pixel distance to the nearest synthetic image)
    among one fold's training subjects and among its held-out subjects."""
    from brainsynth.config import load_config
    from brainsynth.data.dataset import load_dataset
    from brainsynth.evaluate.feature_cache import FeatureStore
    from brainsynth.evaluate.features import get_extractor
    from brainsynth.evaluate.folds import image_ids
    from brainsynth.evaluate.privacy.calibration import subject_of
    from brainsynth.evaluate.privacy.fold import audit_fold
    from brainsynth.imageset import read_image_set

    cfg = load_config(config)
    view = load_dataset(dataset, fold=fold, repeat=repeat)
    train_idx, test_idx = view.indices("train"), view.indices("test")
    synth = read_image_set(synthetic)
    store = FeatureStore(get_extractor(cfg.evaluate), None)
    real_f = store.dataset(view)
    result = audit_fold(view.float_images(train_idx), view.float_images(test_idx), synth.images,
                        train_features=real_f[train_idx], holdout_features=real_f[test_idx],
                        synth_features=store.images(synth.images), train_ids=image_ids(view, train_idx),
                        holdout_ids=image_ids(view, test_idx),
                        holdout_labels=view.table["label"].to_numpy()[test_idx].astype(str), cfg=cfg.audit)
    pixel = result.spaces["pixel"]
    members = pixel.train_to_synth  # [M] each training slice's distance to the nearest synthetic
    others = pixel.holdout_to_synth  # [H]
    return {"dataset": str(dataset), "synthetic": str(synthetic), "fold": fold, "repeat": repeat,
            "icc_members": icc(members, [subject_of(i) for i in result.train_ids]),
            "icc_nonmembers": icc(others, [subject_of(i) for i in result.holdout_ids]),
            "mia_auc": result.attacks["pixel/slice"].auc}


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
    parser.add_argument("--measure-icc", nargs=2, metavar=("DATASET", "SYNTHETIC_SET"),
                        help="instead: the ICC of a real audit's slice scores (one fold, one synthetic set)")
    parser.add_argument("--fold", type=int, default=0, help="--measure-icc: the fold")
    parser.add_argument("--repeat", type=int, default=0, help="--measure-icc: the repeat")
    parser.add_argument("--config", default="demo", help="--measure-icc: preset or YAML (evaluate, audit)")
    args = parser.parse_args(argv)
    if args.measure_icc:
        measured = measure_icc(*args.measure_icc, fold=args.fold, repeat=args.repeat, config=args.config)
        print(f"ICC among training subjects {measured['icc_members']:.3f}, among held-out subjects "
              f"{measured['icc_nonmembers']:.3f} (headline AUC {measured['mia_auc']:.3f})")
        if args.json:
            print(json.dumps(measured))
        return [measured]
    rows = [power(f, h, icc, auc, members=args.members, slices=args.slices, sims=args.sims, exact=args.exact,
                  n_perm=args.perm, seed=args.seed)
            for f in args.folds for h in args.nonmembers for icc in args.icc for auc in args.auc]
    print(table(rows))
    if args.json:
        print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
