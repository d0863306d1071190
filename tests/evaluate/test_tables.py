"""Tables and target verdicts read from the typed report: paper numbers, verdicts, n/a and its reason."""

from __future__ import annotations

import dataclasses

import pytest
from sample_reports import FOLD_NOTE, classifier, comparison, full_report

from brainsynth.evaluate.report.tables import (
    PAPER_TABLE1,
    all_tables,
    comparisons_table,
    fidelity_table,
    per_fold_table,
    privacy_table,
    table1,
    to_html,
    to_markdown,
    to_text,
)
from brainsynth.evaluate.report.targets import check_targets, find_comparison, format_table1, plain_words, targets_line


def test_table1_puts_the_paper_beside_ours_in_the_papers_row_order():
    text = format_table1(full_report(0.86, 0.70, 0.60))
    lines = text.splitlines()
    assert [line.split()[0] for line in lines[3:7]] == ["PGGAN", "DCGAN", "Real", "Shortcut"]
    pggan = next(line for line in lines if line.startswith("PGGAN"))
    # ours with CI, then the paper's Sen/Spe/HM, then the subject level, then n = images / subjects
    for cell in ("0.800 [0.750, 0.850]", "0.700 [0.650, 0.750]", "0.700 [0.660, 0.740]", "0.762", "0.712", "0.736",
                 "1.000", "0.500", "0.701", "120 / 4"):
        assert cell in pggan, cell
    assert "features: vgg16-random (weights random(seed=0)), layer fc7, input 224 px, bilinear resize" in text
    assert "protocol: 2-fold cross-validation by subject, stratified by label. 2 fold(s) evaluated of 2 x 1; 4 of 4 " \
           "subjects tested per repeat (2 control, 2 adhd)." in text


def test_the_console_table_states_verdicts_not_orderings_of_point_estimates():
    # PGGAN 0.03 above DCGAN: the CI (+/- 0.05) holds 0, so no ordering is claimed.
    text = format_table1(full_report(0.86, 0.63, 0.60))
    assert "PGGAN vs DCGAN: not distinguishable (HM 0.630 - 0.600 = 0.030 [-0.020, 0.080])" in text
    assert "Real data vs PGGAN: better (HM 0.860 - 0.630 = 0.230 [0.180, 0.280])" in text
    assert "real >= PGGAN > DCGAN (paired verdicts on pooled HM): MISSED" in text


def test_absent_numbers_and_absent_intervals_show_as_n_a_with_the_reason():
    report = full_report()
    pggan = report.gan_train["pggan"]
    no_ci = dataclasses.replace(pggan.slice, ci=None, ci_note="n/a: bootstrap = 0 (no resamples)", specificity=None)
    report.gan_train["pggan"] = dataclasses.replace(pggan, slice=no_ci)
    report.fidelity["pggan"] = dataclasses.replace(report.fidelity["pggan"], coverage=None, kid_std=None)
    report.fidelity["pggan"].ms_ssim.real["adhd"] = None
    audit = report.privacy["pggan"].audits[0].audit
    attacks = {k: v for k, v in audit.membership.attacks.items() if k != "pixel/subject"}
    report.privacy["pggan"].audits[0] = dataclasses.replace(report.privacy["pggan"].audits[0], audit=dataclasses.replace(
        audit, mia_p_value=None, membership=dataclasses.replace(audit.membership, attacks=attacks)))
    t = table1(report)
    pggan_row = next(r for r in t.rows if r[0] == "PGGAN")
    assert pggan_row[1:3] == ["0.800 [CI n/a]", "n/a"]
    assert "CI n/a: bootstrap = 0 (no resamples)" in t.notes
    fid_row = next(r for r in fidelity_table(report).rows if r[0] == "PGGAN")
    assert fid_row[2] == "0.0123" and fid_row[-2] == "n/a" and fid_row[5] == "0.332 / n/a"
    row = next(r for r in privacy_table(report).rows if r[0] == "PGGAN r0/f0")
    assert row[5] == "0.521 [0.411, 0.611] p=n/a" and row[7] == "n/a"


def test_per_fold_rows_have_no_interval_and_say_why():
    t = per_fold_table(full_report())
    assert t.headers == ["Training data", "r0/f0 HM (Sen / Spe)", "r0/f1 HM (Sen / Spe)"]
    assert t.rows[0] == ["PGGAN", "0.748 (0.76 / 0.74)", "0.746 (0.77 / 0.72)"]
    assert f"CI {FOLD_NOTE}" in t.notes
    assert "test subjects per fold: r0/f0: 1 control, 1 adhd; r0/f1: 1 control, 1 adhd." in t.notes
    assert FOLD_NOTE in to_markdown(t) and FOLD_NOTE in to_html(t)


def test_comparisons_table_lists_each_pair_with_its_interval_and_verdict():
    t = comparisons_table(full_report(0.86, 0.75, 0.6))
    rows = {(r[0], r[1], r[2]): r for r in t.rows}
    assert len(t.rows) == 12  # 6 pairs of real, pggan, dcgan, shortcut; slice and subject HM
    assert rows[("PGGAN", "DCGAN", "slice HM")][3:] == ["0.750", "0.600", "0.150 [0.100, 0.200]",
                                                       "1.250 [1.200, 1.300]", "better"]
    report = full_report()
    report.comparisons[0] = dataclasses.replace(report.comparisons[0], ci=None, ratio_ci=None, verdict="n/a",
                                                ci_note=FOLD_NOTE)
    t = comparisons_table(report)
    assert t.rows[0][5:] == ["0.110 [CI n/a]", "1.147", "n/a"] and f"CI {FOLD_NOTE}" in t.notes


def test_small_kid_values_keep_their_digits():
    from brainsynth.evaluate.report.tables import fmt_kid

    assert [fmt_kid(x) for x in (0.0123, 2.1e-05, -3.456e-06, 0.0, None)] == ["0.0123", "2.10e-05", "-3.46e-06",
                                                                               "0.0000", "n/a"]


def test_fidelity_and_privacy_tables_read_each_field():
    t = fidelity_table(full_report())
    fid = {r[0]: r for r in t.rows}
    assert fid["PGGAN"] == ["PGGAN", "41.23 +/- 1.41", "0.0123 +/- 0.0021", "12.50 +/- 1.50", "0.311 / 0.293",
                            "0.332 / 0.274", "0.712 +/- 0.021", "0.523 +/- 0.022", "0.934 +/- 0.023",
                            "0.645 +/- 0.024", "0.019 / 0.004"]
    assert fid["DCGAN"][1] == "87.65 +/- 1.41"
    assert [r[0] for r in t.rows] == ["PGGAN", "DCGAN", "Real test (reference)"]  # the reference scale last
    assert fid["Real test (reference)"][1] == "3.21 +/- 1.41" and "Mean over 2 fold(s)" in t.notes[0]
    priv = privacy_table(full_report(rates=(0.005, 0.0)))
    rows = {r[0]: r for r in priv.rows}
    # pooled over the two folds first, then each fold's whole audit
    assert rows["PGGAN (pooled)"] == ["PGGAN (pooled)", "0.5% [0.2%, 2.2%]", "2 of 400", "2.5% [0.7%, 8.7%] (2 of 80)",
                                      "-2.0%", "0.521 (mean of 2) p=0.044", "0.534 p=0.083", "per fold", "per fold"]
    assert rows["PGGAN r0/f1"] == ["PGGAN r0/f1", "0.5% [0.1%, 3.2%]", "1 of 200", "2.5% [0.7%, 8.7%] (1 of 40)",
                                   "-2.0%", "0.521 [0.411, 0.611] p=0.067", "0.534 p=0.067", "0.583 p=0.067",
                                   "55.1% (60.4%)"]
    assert rows["DCGAN (pooled)"][1:3] == ["0.0% [0.0%, 1.7%]", "0 of 400"]
    assert rows["DCGAN (pooled)"][5].startswith("0.612 ")
    assert "First each set pooled over folds" in priv.notes[0]
    assert "percentile 1 of held-out half A" in priv.notes[1] and "pre-declared headline" in priv.notes[1]


def test_every_table_renders_three_ways():
    tables = all_tables(full_report())
    assert [t.title.split(":")[0] for t in tables] == [
        "GAN-train (paper Table 1)", "GAN-train per fold", "Paired comparisons (GAN-train HM)", "GAN-test",
        "Fidelity and diversity", "Fidelity per fold", "Privacy audit", "Closest pairs after alignment",
        "Privacy and utility", "Timings"]
    timings = {r[0]: r[1] for r in tables[-1].rows}
    assert list(timings)[0] == "train_pggan" and timings["train_pggan"] == "1234.5"
    assert timings["evaluate_total"] == "23.4"
    for t in tables:
        assert t.rows[0][0] in to_text(t) and f"| {t.rows[0][0]} |" in to_markdown(t)
        assert f"<td>{t.rows[0][0]}</td>" in to_html(t)


def with_comparisons(report, *found):
    """The report with these comparisons replacing the ones of the same (a, b, metric)."""
    keep = [c for c in report.comparisons if not any((c.a, c.b, c.metric) == (f.a, f.b, f.metric) for f in found)]
    return dataclasses.replace(report, comparisons=[*keep, *found])


@pytest.mark.parametrize("rates, ok", [
    ((0.005, 0.0), True),
    # Checked against held-out half B (2.5% in the sample): 3.5% passes, 4% does not.
    ((0.04, 0.0), False),
    ((0.035, 0.0), True),
    # Every audited set is judged: a memorising baseline fails the target too, and is named.
    ((0.0, 0.05), False),
])
def test_the_memorisation_target_reads_the_pooled_excess_over_half_b(rates, ok):
    verdict = check_targets(full_report(0.86, 0.75, 0.6, rates))["memorization"]
    assert verdict.ok is ok and ("MISSED" in verdict.text) == (not ok)
    assert verdict.text.startswith("near-copies <= held-out half-B false flags + 1 pt (pooled over folds): ")
    assert f"PGGAN {100 * rates[0]:.1f}% vs 2.5% [0.7%, 8.7%]" in verdict.text and "DCGAN" in verdict.text
    assert ("MISSED by DCGAN" in verdict.text) == (rates[1] > 0.035)


@pytest.mark.parametrize("real_pggan, pggan_dcgan, ok", [
    ("better", "better", True),
    ("not distinguishable", "better", True),  # real >= PGGAN is not contradicted
    ("worse", "better", False),  # PGGAN shown better than real
    ("better", "not distinguishable", False),  # PGGAN > DCGAN not shown
    ("better", "worse", False),
    ("n/a", "better", None),  # no interval: not checked
])
def test_the_ordering_target_reads_the_verdicts(real_pggan, pggan_dcgan, ok):
    report = with_comparisons(full_report(0.86, 0.75, 0.6), comparison("real", "pggan", 0.86, 0.75, real_pggan),
                              comparison("pggan", "dcgan", 0.75, 0.6, pggan_dcgan))
    verdict = check_targets(report)["ordering"]
    assert verdict.ok is ok
    assert ("MISSED" in verdict.text) == (ok is False) and ("not checked" in verdict.text) == (ok is None)
    assert f"PGGAN vs DCGAN: {pggan_dcgan}" in verdict.text


@pytest.mark.parametrize("ratio_ci, ok, state", [
    ((0.9, 1.1), True, "met"),
    ((0.5, 0.8), False, "MISSED"),
    ((0.8, 0.95), False, "MISSED: not distinguishable from 0.85"),
])
def test_the_share_target_reads_the_paired_interval_of_the_ratio(ratio_ci, ok, state):
    # Stored as real vs pggan (a / b = real / PGGAN): the target inverts it.
    c = dataclasses.replace(comparison("real", "pggan", 0.8, 0.8), ratio=1.0,
                            ratio_ci=(1 / ratio_ci[1], 1 / ratio_ci[0]))
    verdict = check_targets(with_comparisons(full_report(), c))["pggan_vs_real"]
    assert verdict.ok is ok and f": {state} (PGGAN / real = 1.000 [{ratio_ci[0]:.3f}, {ratio_ci[1]:.3f}])" in verdict.text


def test_the_shortcut_target():
    verdict = check_targets(full_report(0.86, 0.75, 0.6, shortcut_hm=0.55))["shortcut"]
    assert verdict.ok is True and "Real data vs Shortcut: better" in verdict.text
    verdict = check_targets(full_report(0.86, 0.75, 0.6, shortcut_hm=0.83))["shortcut"]
    assert verdict.ok is False and "MISSED" in verdict.text and "not distinguishable" in verdict.text


def test_a_comparison_is_found_in_either_order_and_flipped():
    c = find_comparison(full_report(0.86, 0.75, 0.6), "pggan", "real")
    assert (c.a, c.b, c.verdict) == ("pggan", "real", "worse")
    assert c.diff == pytest.approx(-0.11) and c.ci == pytest.approx((-0.16, -0.06))
    assert c.ratio == pytest.approx(0.75 / 0.86)


def test_check_targets_says_not_checked_when_rows_are_missing():
    report = dataclasses.replace(full_report(), gan_train={"pggan": classifier(0.8, 0.7, 0.75)}, privacy={},
                                 comparisons=[])
    verdicts = check_targets(report)
    assert all(v.ok is None and "not checked" in v.text for v in verdicts.values())
    assert targets_line(report).startswith("Some targets could not be checked.")


def test_paper_rows_only_for_the_papers_models():
    rows = {r[0]: r for r in table1(dataclasses.replace(full_report(), gan_train={
        "ours": classifier(0.5, 0.5, 0.5), "real": classifier(0.9, 0.9, 0.9)})).rows}
    assert rows["ours"][4:7] == ["n/a"] * 3
    assert rows["Real data"][4:7] == [f"{PAPER_TABLE1['Real data'][m]:.3f}" for m in ("sensitivity", "specificity",
                                                                                      "hm")]


def test_plain_words_say_not_distinguishable_as_what_it_means():
    # PGGAN 0.03 below real (CI +/- 0.05 holds 0), DCGAN 0.26 below; the shortcut 0.02 below real.
    lines = plain_words(full_report(0.86, 0.83, 0.60, shortcut_hm=0.84))
    assert lines[0].startswith("PGGAN vs real data: NOT DISTINGUISHABLE with these 2 control and 2 adhd test "
                               "subjects (HM 0.830 vs 0.860, difference -0.030 [-0.080, 0.020]): this evaluation "
                               "cannot tell")
    assert lines[1] == "DCGAN vs real data: WORSE (HM 0.600 vs 0.860, difference -0.260 [-0.310, -0.210])."
    assert lines[2].startswith("The real-data classifier is NOT DISTINGUISHABLE compared with the shortcut")
    assert "In plain words:\n  PGGAN vs real data: NOT DISTINGUISHABLE" in format_table1(
        full_report(0.86, 0.83, 0.60, shortcut_hm=0.84))
