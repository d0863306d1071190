"""benchmarks/membership_power.py: its AUCs and p-values are the audit's, its failure rates are rates."""

import json

import numpy as np
import pytest

from brainsynth.evaluate.privacy import membership as mia


@pytest.fixture(scope="module")
def power(load_benchmark):
    return load_benchmark("membership_power")


def test_its_auc_and_p_value_are_the_audits(power):
    rng = np.random.default_rng(0)
    labels = power.labellings(10, 8)
    assert labels.shape == (45, 10) and labels[0].tolist() == [True] * 8 + [False] * 2
    folds = [power.simulate_fold(rng, 8, 2, 20, 0.3, 0.5, labels) for _ in range(2)]
    groups_rng = np.random.default_rng(1)
    groups = [groups_rng.normal(size=20) for _ in range(10)]
    counts, sizes = mia.pair_counts(groups), np.full(10, 20.0)
    member = labels[0]
    aucs = power.fold_aucs(counts, sizes, labels)
    assert aucs[0] == pytest.approx(mia.grouping_auc(counts, sizes, member))
    p_mine = power.fold_p(aucs)
    p_audit, exact = mia.permutation_p_value([(counts, sizes, member)], 1000, np.random.default_rng(0))
    assert exact and p_mine == pytest.approx(p_audit)
    # Pooled over folds: the exact enumeration and the audit's own agree; the random draw is close.
    pooled_exact = power.pooled_p(folds, exact=10_000, n_perm=0, rng=rng)
    assert 0.0 < pooled_exact <= 1.0
    drawn = power.pooled_p(folds, exact=1, n_perm=4000, rng=np.random.default_rng(2))
    assert drawn == pytest.approx(pooled_exact, abs=0.03)


def test_every_mode_prints_a_table_and_json_of_failure_rates(power, capsys):
    rows = power.main(["--folds", "3", "--nonmembers", "2", "--icc", "0.3", "--auc", "0.5", "0.9", "--sims", "40",
                       "--json"])
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("| folds | held-out per fold | ICC | true AUC | rule fails")
    printed = json.loads(out[-1])
    assert printed == rows and [r["true_auc"] for r in rows] == [0.5, 0.9]
    for r in rows:
        assert 0.0 <= r["fail_p"] <= r["fail_rule"] <= 1.0 and r["fail_auc"] <= r["fail_rule"]
        assert r["smallest_fold_p"] == pytest.approx(1 / 45) and r["sims"] == 40
    assert rows[1]["fail_rule"] > 0.9  # a strong leak (true AUC 0.9) fails the rule
    assert rows[0]["fail_rule"] < 0.5


def test_the_icc_is_the_share_of_variance_between_subjects(power):
    rng = np.random.default_rng(3)
    effects = rng.normal(0, 1, 200)  # ICC 0.5: subject and slice variance equal
    scores = np.concatenate([e + rng.normal(0, 1, 30) for e in effects])
    subjects = np.repeat([f"s{k}" for k in range(200)], 30)
    assert power.icc(scores, subjects) == pytest.approx(0.5, abs=0.08)
    assert power.icc(rng.normal(size=600), subjects[:600]) == pytest.approx(0.0, abs=0.05)


def test_the_icc_of_a_real_audit_is_measured_per_group(power, tmp_path, monkeypatch, capsys):
    from brainsynth.evaluate import features as feat
    from brainsynth.imageset import write_image_set

    from evaluate.privacy_data import RandomProjection, cohort, write_dataset

    monkeypatch.setattr(feat, "get_extractor", lambda cfg, device=None: RandomProjection(16 * 16))
    dataset = write_dataset(tmp_path / "dataset", n_train=6, n_test=4, n_slices=6, size=16)
    novel, _, _ = cohort(9, 2, n_slices=6, size=16)
    synthetic = write_image_set(tmp_path / "synthetic", novel, [{"label": "adhd"}] * len(novel), synthetic=True)
    rows = power.main(["--measure-icc", str(dataset), str(synthetic), "--config", "tiny", "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == rows[0] and printed["fold"] == 0
    assert -1.0 <= printed["icc_members"] <= 1.0 and -1.0 <= printed["icc_nonmembers"] <= 1.0
    assert 0.0 <= printed["mia_auc"] <= 1.0
