"""Membership per held-out half and the pre-declared membership rule (judged on half B)."""

import math

import numpy as np
import pytest

from brainsynth.evaluate.privacy import membership as mia
from brainsynth.evaluate.privacy import membership_rule as rule
from brainsynth.evaluate.privacy.fold import nonmember_half_a
from brainsynth.evaluate.report.targets import check_targets, privacy_verdicts_table

from sample_reports import full_report, membership_verdict


def _scores(rng, shifts, n=6):
    return [rng.normal(shift, 1.0, n) for shift in shifts]


def test_a_half_attack_equals_the_attack_run_on_that_half_alone():
    rng = np.random.default_rng(0)
    members = _scores(rng, [0.0, 0.2, -0.1, 0.1])  # 4 training subjects
    others = _scores(rng, [1.0, 0.5, 0.8, 0.2])  # 4 held-out subjects: h0..h3
    m_subj = [f"m{i}" for i in range(4) for _ in range(6)]
    o_subj = [f"h{i}" for i in range(4) for _ in range(6)]
    full = mia.attack(np.concatenate(members), m_subj, np.concatenate(others), o_subj, space="pixel", level="slice",
                      n_boot=50, n_perm=500, seed=0)
    keep = np.array([True, False, False, True])  # h0 and h3
    half = mia.half_attack(full, keep, n_boot=50, n_perm=500, seed=0)
    alone = mia.attack(np.concatenate(members), m_subj, np.r_[others[0], others[3]], ["h0"] * 6 + ["h3"] * 6,
                       space="pixel", level="slice", n_boot=50, n_perm=500, seed=0)
    assert half.auc == pytest.approx(alone.auc) and half.p_value == pytest.approx(alone.p_value)
    assert half.ci == pytest.approx(alone.ci)
    assert (half.n_nonmember_subjects, half.n_nonmembers, half.n_members) == (2, 12, 24)
    assert half.exact and half.p_value >= 1 / math.comb(6, 2)  # 15 relabellings at most


def test_the_half_mask_follows_the_sorted_subjects_of_the_attack():
    ids = ["h2:1", "h0:1", "h2:2", "h1:1", "h0:2"]
    half_a = np.array([True, False, True, True, False])
    np.testing.assert_array_equal(nonmember_half_a(ids, half_a), [False, True, True])  # h0, h1, h2


def _fold(member_shift: float, rng, n_members=8, n_half=2, n=20):
    groups = _scores(rng, [-member_shift] * n_members + [0.0] * n_half, n)
    counts = mia.pair_counts(groups)
    sizes = np.array([len(g) for g in groups], float)
    return counts, sizes, np.arange(n_members + n_half) < n_members


def test_the_rule_fails_a_clear_leak_and_passes_no_leak():
    rng = np.random.default_rng(1)
    leak = rule.judge([_fold(2.0, rng) for _ in range(3)], "b", n_perm=2000, seed=0)
    assert leak.auc > 0.9 and leak.p_value < 0.05 and leak.passed is False and leak.n_folds == 3
    assert leak.smallest_p == pytest.approx(1 / 2001)  # 45**3 relabellings: drawn, not enumerated
    quiet = np.random.default_rng(3)  # no leak: p is uniform, so a seed is fixed (p < 0.05 for 5.5% of 200 seeds)
    none = rule.judge([_fold(0.0, quiet) for _ in range(3)], "b", n_perm=2000, seed=0)
    assert none.passed is True and none.auc <= rule.MAX_AUC and none.p_value >= rule.MIN_P
    one = rule.judge([_fold(2.0, rng)], "b", n_perm=2000, seed=0)
    assert one.exact and one.smallest_p == pytest.approx(1 / 45) and one.p_value == pytest.approx(1 / 45)


@pytest.mark.parametrize("auc, p, passed", [(0.60, 0.05, True), (0.601, 0.5, False), (0.55, 0.049, False),
                                            (None, 0.5, None)])
def test_the_rule_needs_both_a_small_auc_and_a_large_p(auc, p, passed):
    assert rule.passes(auc, p) is passed


def test_no_half_b_subject_leaves_the_rule_unmeasured():
    counts, sizes, member = _fold(1.0, np.random.default_rng(2))
    verdict = rule.judge([(counts[:8, :8], sizes[:8], member[:8])], "b", n_perm=100, seed=0)
    assert verdict.passed is None and verdict.auc is None and verdict.n_folds == 0


def test_the_membership_target_names_every_set_that_breaks_the_rule():
    report = full_report()  # pggan's half-B AUC 0.534 passes, dcgan's 0.625 does not
    verdict = check_targets(report)["membership"]
    assert verdict.ok is False and "MISSED by DCGAN" in verdict.text and "PGGAN AUC 0.534 p=0.083" in verdict.text
    table = privacy_verdicts_table(report)
    rows = {r[0]: r for r in table.rows}
    assert rows["PGGAN"][2] == "AUC 0.534 p=0.083: pass" and rows["DCGAN"][2] == "AUC 0.625 p=0.083: FAIL"
    assert rows["DCGAN"][3] == "no" and "does not stop membership inference" in table.notes[0]
    report.privacy["dcgan"].membership_rule = membership_verdict(0.58)
    assert check_targets(report)["membership"].ok is True
    report.privacy["dcgan"].membership_rule = membership_verdict(0.58, p_value=0.01)
    assert "MISSED by DCGAN" in check_targets(report)["membership"].text
