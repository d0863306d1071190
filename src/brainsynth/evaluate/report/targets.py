"""The reproduction targets and the plain-words summary, judged on paired verdicts; the console table.

Targets are judged on the paired comparisons' verdicts (the 95% interval of a difference on the
same resampled subjects, :mod:`brainsynth.evaluate.protocol`), never on point estimates: two
HMs 0.01 apart are "not distinguishable", not an ordering. The targets live in
:data:`TARGETS`; nothing else restates them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from brainsynth.evaluate.privacy.membership_rule import MAX_AUC, MIN_P, RULE_TEXT
from brainsynth.evaluate.report.schema import Comparison, Report
from brainsynth.evaluate.report.typed_json import optional_number
from brainsynth.evaluate.report.tables import (
    REAL_KEY,
    SHORTCUT_KEY,
    Table,
    display_name,
    fmt,
    fmt_ci,
    fmt_p,
    fmt_pct,
    fmt_rate_ci,
    ordered_names,
    table1,
    to_text,
)

TARGETS = {
    "pggan_share_of_real_hm": 0.85,  # PGGAN HM must reach this share of the real-data HM
    # Near-copies beyond chance: the synthetic set's flagged share minus the false-flag rate of
    # held-out half B (real images of subjects never seen, never used to set the thresholds).
    "max_excess_memorization": 0.01,
}


# --- targets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """Whether one reproduction target holds.

    ``ok`` is ``None`` when a number needed for the check is missing (not measured is not the
    same as missed); ``text`` says what was compared.
    """

    ok: Optional[bool]
    text: str


def find_comparison(report: Report, a: str, b: str, metric: str = "hm") -> Comparison | None:
    """The comparison of rows ``a`` and ``b`` (either order, names ignoring case), oriented as a vs b."""
    for c in report.comparisons:
        if c.metric != metric:
            continue
        if (c.a.lower(), c.b.lower()) == (a.lower(), b.lower()):
            return c
        if (c.a.lower(), c.b.lower()) == (b.lower(), a.lower()):
            flip = {"better": "worse", "worse": "better"}
            return Comparison(a=c.b, b=c.a, metric=c.metric, a_value=c.b_value, b_value=c.a_value,
                              diff=None if c.diff is None else -c.diff,
                              ci=None if c.ci is None else (_neg(c.ci[1]), _neg(c.ci[0])), ci_note=c.ci_note,
                              verdict=flip.get(c.verdict, c.verdict),
                              ratio=None if not c.ratio else 1.0 / c.ratio,
                              ratio_ci=None if c.ratio_ci is None else (_inv(c.ratio_ci[1]), _inv(c.ratio_ci[0])))
    return None


def _neg(x: Optional[float]) -> Optional[float]:
    return None if x is None else -x


def _inv(x: Optional[float]) -> Optional[float]:
    # 1/x is monotone for x > 0, so the bootstrap percentiles of a/b invert into those of b/a.
    return None if x is None or x <= 0 else 1.0 / x


def verdict_text(c: Comparison) -> str:
    """``"PGGAN vs DCGAN: better (HM 0.812 - 0.701 = 0.111 [0.020, 0.190])"``."""
    head = f"{display_name(c.a)} vs {display_name(c.b)}: {c.verdict}"
    detail = f"HM {fmt(c.a_value)} - {fmt(c.b_value)} = {fmt_ci(c.diff, c.ci)}"
    return f"{head} ({detail}{'; CI ' + c.ci_note if c.ci_note else ''})"


def check_targets(report: Report) -> dict[str, Verdict]:
    """Whether the reproduction targets hold, judged on paired verdicts, never on point estimates.

    Returns
    -------
    dict
        name -> :class:`Verdict`. Names: ``"ordering"`` (the paper's real >= PGGAN > DCGAN: met
        when the verdict of real vs PGGAN is not ``worse``, i.e. PGGAN is not shown better than
        real, and PGGAN vs DCGAN is ``better``), ``"pggan_vs_real"`` (PGGAN HM >= 0.85 x real
        HM: met when the paired 95% interval of PGGAN / real HM lies at or above 0.85, missed when
        it lies below, not shown when it straddles 0.85), ``"shortcut"`` (the real baseline is
        ``better`` than the shortcut: the classifier learns more than global trivia),
        ``"memorization"`` (every audited set: pooled near-copies at most 1 point above the pooled
        false-flag rate of held-out half B, the real images that did not set the thresholds; the
        text lists all sets and names those over the limit), ``"membership"`` (every audited set:
        the pre-declared membership rule, :mod:`brainsynth.evaluate.privacy.membership_rule`,
        judged on held-out half B; the text names the sets that break it). A comparison without
        an interval (``n/a``) leaves its target not checked.
    """
    out: dict[str, Verdict] = {}
    real_pggan, pggan_dcgan = find_comparison(report, REAL_KEY, "pggan"), find_comparison(report, "pggan", "dcgan")
    goal = "real >= PGGAN > DCGAN (paired verdicts on pooled HM)"
    if real_pggan is None or pggan_dcgan is None:
        out["ordering"] = Verdict(None, f"{goal}: not checked (needs the GAN-train rows real, pggan and dcgan)")
    elif "n/a" in (real_pggan.verdict, pggan_dcgan.verdict):
        out["ordering"] = Verdict(None, f"{goal}: not checked, CI n/a ({verdict_text(real_pggan)}; "
                                        f"{verdict_text(pggan_dcgan)})")
    else:
        ok = real_pggan.verdict != "worse" and pggan_dcgan.verdict == "better"
        out["ordering"] = Verdict(ok, f"{goal}: {'met' if ok else 'MISSED'} ({verdict_text(real_pggan)}; "
                                      f"{verdict_text(pggan_dcgan)})")

    share = TARGETS["pggan_share_of_real_hm"]
    goal = f"PGGAN HM >= {share:g} x real HM (paired CI of PGGAN / real HM)"
    c = find_comparison(report, "pggan", REAL_KEY)
    if c is None:
        out["pggan_vs_real"] = Verdict(None, f"{goal}: not checked (needs the GAN-train rows real and pggan)")
    elif c.ratio_ci is None or None in c.ratio_ci:
        out["pggan_vs_real"] = Verdict(None, f"{goal}: not checked, CI n/a (PGGAN / real = {fmt(c.ratio)}"
                                             f"{'; ' + c.ci_note if c.ci_note else ''})")
    else:
        lo, hi = c.ratio_ci
        state = "met" if lo >= share else "MISSED" if hi < share else f"MISSED: not distinguishable from {share:g}"
        out["pggan_vs_real"] = Verdict(lo >= share, f"{goal}: {state} (PGGAN / real = {fmt_ci(c.ratio, c.ratio_ci)})")

    c = find_comparison(report, REAL_KEY, SHORTCUT_KEY)
    goal = "real baseline better than the shortcut (global slice features)"
    if c is None:
        out["shortcut"] = Verdict(None, f"{goal}: not checked (needs the GAN-train rows real and shortcut)")
    elif c.verdict == "n/a":
        out["shortcut"] = Verdict(None, f"{goal}: not checked, CI n/a ({verdict_text(c)})")
    else:
        ok = c.verdict == "better"
        out["shortcut"] = Verdict(ok, f"{goal}: {'met' if ok else 'MISSED'} ({verdict_text(c)})")

    limit = TARGETS["max_excess_memorization"]
    title = f"near-copies <= held-out half-B false flags + {100 * limit:g} pt (pooled over folds)"
    excess = {display_name(k): (optional_number(v.excess_memorization), v) for k, v in report.privacy.items()}
    measured = {k: v for k, v in excess.items() if v[0] is not None}
    if not measured:
        out["memorization"] = Verdict(None, f"{title}: not checked (no privacy audit with a half B)")
    else:
        # Every audited set is judged, not only the reproduced method: any of them may be the set
        # that leaves the hospital, and a baseline that copies patients must not pass unnoticed.
        over = [k for k, (x, _) in measured.items() if x > limit + 1e-12]
        listing = ", ".join(f"{k} {fmt_pct(e.memorization.rate)} vs {fmt_rate_ci(e.false_flags.rate, e.false_flags.ci)}"
                            for k, (_, e) in measured.items())
        state = "met" if not over else f"MISSED by {', '.join(over)}"
        out["memorization"] = Verdict(not over, f"{title}: {state} ({listing})")
    out["membership"] = membership_verdict(report)
    return out


def membership_verdict(report: Report) -> Verdict:
    """The membership rule for every audited set (judged on held-out half B, pooled over folds)."""
    title = (f"membership on held-out half B: AUC <= {MAX_AUC:.2f} and p >= {MIN_P:g} (pooled over folds, "
             "rule declared in advance)")
    rules = {display_name(k): v.membership_rule for k, v in report.privacy.items()}
    judged = {k: r for k, r in rules.items() if r.passed is not None}
    if not judged:
        return Verdict(None, f"{title}: not checked (no privacy audit with half-B subjects)")
    failed = [k for k, r in judged.items() if not r.passed]
    listing = ", ".join(f"{k} AUC {fmt(r.auc)} {fmt_p(r.p_value)}" for k, r in judged.items())
    unjudged = [k for k in rules if k not in judged]
    state = "met" if not failed else f"MISSED by {', '.join(failed)}"
    note = f"; not measured for {', '.join(unjudged)}" if unjudged else ""
    ok = False if failed else (None if unjudged else True)  # a set not measured is not a pass
    return Verdict(ok, f"{title}: {state} ({listing}{note})")


def privacy_verdicts_table(report: Report) -> Table:
    """One row per audited set: does it meet the near-copy target and the membership rule?"""
    limit = TARGETS["max_excess_memorization"]
    rows = []
    for key in ordered_names(report.privacy):
        e, rule = report.privacy[key], report.privacy[key].membership_rule
        excess = optional_number(e.excess_memorization)
        copies = "n/a" if excess is None else ("pass" if excess <= limit + 1e-12 else "FAIL")
        member = "n/a" if rule.passed is None else ("pass" if rule.passed else "FAIL")
        both = "yes" if copies == member == "pass" else ("no" if "FAIL" in (copies, member) else "not checked")
        rows.append([display_name(key), f"{fmt_pct(e.memorization.rate)} vs {fmt_pct(e.false_flags.rate)}: {copies}",
                     f"AUC {fmt(rule.auc)} {fmt_p(rule.p_value)}: {member}", both])
    return Table("Privacy verdicts (pooled over folds)", ["Synthetic set", "near-copies vs half-B false flags",
                                                          "membership, half B", "private by both rules"], rows, [
        f"Near-copies: at most {100 * limit:g} point above the false-flag rate of held-out half B. Membership: "
        f"{RULE_TEXT}. The near-copy filter (brainsynth audit --filter) removes look-alikes; it does not stop "
        "membership inference."])


def targets_line(report: Report) -> str:
    """One sentence: which targets hold, which are missed, which could not be checked."""
    verdicts = check_targets(report)
    missed = [k for k, v in verdicts.items() if v.ok is False]
    head = "All targets met." if not missed and all(v.ok for v in verdicts.values()) else (
        f"Targets missed: {len(missed)} of {len(verdicts)}." if missed else "Some targets could not be checked.")
    return head + " " + "; ".join(v.text for v in verdicts.values()) + "."


def plain_words(report: Report) -> list[str]:
    """What the verdicts say, one sentence per row compared with real, then the shortcut check.

    A "not distinguishable" verdict is stated as what it is: these test subjects cannot tell
    the two rows apart, which is neither "as good as" nor "worse than".
    """
    n = report.protocol.test_subjects_per_label
    subjects = " and ".join(f"{v} {k}" for k, v in n.items())
    lines = []
    for key in ordered_names(report.gan_train):
        if key in (REAL_KEY, SHORTCUT_KEY):
            continue
        c = find_comparison(report, key, REAL_KEY)
        if c is None:
            continue
        name = display_name(key)
        if c.verdict == "n/a":
            lines.append(f"{name} vs real data: no verdict ({c.ci_note}).")
        elif c.verdict == "not distinguishable":
            lines.append(f"{name} vs real data: NOT DISTINGUISHABLE with these {subjects} test subjects (HM "
                         f"{fmt(c.a_value)} vs {fmt(c.b_value)}, difference {fmt_ci(c.diff, c.ci)}): this evaluation "
                         "cannot tell whether the synthetic images carry less of the diagnosis signal than the real "
                         "ones; more subjects (or --repeats) narrow the interval.")
        else:
            lines.append(f"{name} vs real data: {c.verdict.upper()} (HM {fmt(c.a_value)} vs {fmt(c.b_value)}, "
                         f"difference {fmt_ci(c.diff, c.ci)}).")
    c = find_comparison(report, REAL_KEY, SHORTCUT_KEY)
    if c is not None and c.verdict == "better":
        lines.append(f"The real-data classifier beats the shortcut (brain area, intensity, slice position; HM "
                     f"{fmt(c.b_value)}): it uses more than such global trivia.")
    elif c is not None and c.verdict != "n/a":
        lines.append(f"The real-data classifier is {c.verdict.upper()} compared with the shortcut (HM {fmt(c.a_value)} "
                     f"vs {fmt(c.b_value)}): simple global features (brain area, intensity, slice position) may "
                     "explain its score, so GAN-train scores here say little about anatomy.")
    return lines


def verdict_lines(report: Report, metric: str = "hm") -> list[str]:
    """One line per paired comparison of ``metric``: its verdict, difference and interval."""
    return [verdict_text(c) for c in report.comparisons if c.metric == metric]


def format_table1(report: Report) -> str:
    """The GAN-train table for the terminal, the paper's numbers beside ours, the paired verdicts, the targets."""
    lines = [to_text(table1(report)), "Paired verdicts on pooled slice HM (a vs b: CI of a - b above 0 = better):"]
    lines += [f"  {line}" for line in verdict_lines(report)]
    lines += ["In plain words:", *[f"  {line}" for line in plain_words(report)]]
    if report.privacy:
        lines.append(to_text(privacy_verdicts_table(report)))
    return "\n".join(lines + [targets_line(report)])
