"""The report's tables and target verdicts, read from a typed :class:`~brainsynth.evaluate.report.schema.Report`.

Every table is built once as a :class:`Table` of plain strings and rendered three ways: plain
text for the terminal (:func:`to_text`), Markdown (:func:`to_markdown`) and HTML
(:func:`to_html`). The paper's numbers live in :data:`PAPER_TABLE1` (the targets in
:data:`brainsynth.evaluate.report.targets.TARGETS`); nothing else restates them. A number the report does not have (an ``Optional``
field holding ``None``) is shown as ``n/a``; an interval that is ``n/a`` has its reason in the
table's notes.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from brainsynth import LABELS
from brainsynth.evaluate.report.schema import (
    Bounds,
    ClassifierResult,
    FeaturesInfo,
    Intervals,
    Report,
    Transform,
)
from brainsynth.evaluate.report.typed_json import optional_number

PAPER_TABLE1 = {
    "PGGAN": {"sensitivity": 0.762, "specificity": 0.712, "hm": 0.736},
    "DCGAN": {"sensitivity": 0.584, "specificity": 0.613, "hm": 0.598},
    "Real data": {"sensitivity": 0.883, "specificity": 0.885, "hm": 0.883},
}
"""GAN-train results of Alam, Hossain & Kobashi, Table 1 (SVM on VGG-16 features, ADHD positive)."""


REAL_KEY = "real"
"""Key of the real-on-real baseline in ``Report.gan_train``."""
SHORTCUT_KEY = "shortcut"
"""Key of the shortcut baseline (the SVM on four global numbers per slice) in ``Report.gan_train``."""
REAL_TEST_KEY = "real-test"
"""Key of the real-versus-real reference in ``Report.fidelity``."""

METRICS = ("sensitivity", "specificity", "hm")
METRIC_HEADERS = {"sensitivity": "Sen", "specificity": "Spe", "hm": "HM"}


# --- names and numbers ----------------------------------------------------------------------

def display_name(key: str) -> str:
    """``"pggan"`` -> ``"PGGAN"``, ``"real"`` -> ``"Real data"`` (the paper's row names)."""
    special = {REAL_KEY: "Real data", SHORTCUT_KEY: "Shortcut", REAL_TEST_KEY: "Real test (reference)"}
    if key.lower() in special:
        return special[key.lower()]
    upper = key.upper()
    return upper if upper in PAPER_TABLE1 else key


def ordered_names(names: Iterable[str]) -> list[str]:
    """PGGAN first, DCGAN second, other synthetic sets as given, then real, shortcut, real-test."""
    keys = list(names)

    def rank(key: str) -> int:
        return {"pggan": 0, "dcgan": 1, REAL_KEY: 3, SHORTCUT_KEY: 4, REAL_TEST_KEY: 5}.get(key.lower(), 2)

    return sorted(keys, key=lambda k: (rank(k), keys.index(k)))


def _find_key(section: Mapping[str, object], wanted: str) -> str | None:
    """The key of ``section`` equal to ``wanted`` ignoring case, or ``None``."""
    for key in section:
        if key.lower() == wanted.lower():
            return key
    return None


def fmt(value: Optional[float], digits: int = 3) -> str:
    """A number with ``digits`` decimals, or ``n/a`` for ``None`` (or NaN)."""
    x = optional_number(value)
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_kid(value: Optional[float]) -> str:
    """KID with 4 decimals, or 3 significant digits below 0.001 (where 4 decimals would read 0.0000)."""
    x = optional_number(value)
    return fmt(x, 4) if x is None or x == 0 or abs(x) >= 1e-3 else f"{x:.2e}"


def fmt_pct(value: Optional[float]) -> str:
    """``0.005`` -> ``"0.5%"``, or ``n/a``."""
    x = optional_number(value)
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_ci(value: Optional[float], bounds: Optional[Bounds], digits: int = 3, *, na: bool = False) -> str:
    """``"0.762 [0.700, 0.810]"``; without an interval the number alone, or ``"0.762 [CI n/a]"`` with ``na``."""
    text = fmt(value, digits)
    if bounds is not None and all(optional_number(b) is not None for b in bounds):
        text += f" [{fmt(bounds[0], digits)}, {fmt(bounds[1], digits)}]"
    elif na and value is not None:
        text += " [CI n/a]"
    return text


def fmt_sd(value: Optional[float], sd: Optional[float], digits: int = 3) -> str:
    """``"41.23 +/- 3.10"`` (mean over folds +/- SD), or the mean alone with one fold."""
    text = fmt(value, digits)
    return text + (f" +/- {fmt(sd, digits)}" if optional_number(sd) is not None and text != "n/a" else "")


def _ci_notes(notes: Iterable[Optional[str]]) -> list[str]:
    """Each distinct reason for an n/a interval, once."""
    seen: list[str] = []
    for note in notes:
        if note and note not in seen:
            seen.append(note)
    return [f"CI {n}" for n in seen]


def _bounds(ci: Optional[Intervals], metric: str) -> Optional[Bounds]:
    return None if ci is None else getattr(ci, metric)


def features_line(features: FeaturesInfo) -> str:
    """One line saying how images became features (every feature-based number depends on it)."""
    name = features.name + (f" (weights {features.weights})" if features.weights else "")
    parts = [name, f"layer {features.layer}"]
    if features.input_size:
        parts.append(f"input {features.input_size} px")
    parts += [f"{features.resize} resize", f"channels: {features.channel_mapping}", features.precision]
    return "features: " + ", ".join(p for p in parts if p)


# --- tables ---------------------------------------------------------------------------------

@dataclass
class Table:
    """A table of plain strings, rendered by :func:`to_text`, :func:`to_markdown`, :func:`to_html`."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _classifier_table(section: Mapping[str, ClassifierResult], title: str, *, with_paper: bool) -> Table:
    headers = ["Training data" if with_paper else "Synthetic set"]
    headers += [f"{METRIC_HEADERS[m]} [95% CI]" for m in METRICS]
    if with_paper:
        headers += [f"paper {METRIC_HEADERS[m]}" for m in METRICS]
    headers += [f"subject {METRIC_HEADERS[m]}" for m in METRICS] + ["n"]
    rows = []
    for key in ordered_names(section):
        sl, subj = section[key].slice, section[key].subject
        row = [display_name(key)]
        row += [fmt_ci(getattr(sl, m), _bounds(sl.ci, m), na=sl.ci_note is not None) for m in METRICS]
        if with_paper:
            paper = PAPER_TABLE1.get(display_name(key), {})
            row += [fmt(paper.get(m)) for m in METRICS]  # only the paper's own rows have numbers
        row += [fmt(getattr(subj, m)) for m in METRICS]
        row.append(f"{sl.n} / {subj.n_groups}")
        rows.append(row)
    notes = _ci_notes(section[k].slice.ci_note for k in ordered_names(section))
    return Table(title, headers, rows, notes)


def protocol_line(report: Report) -> str:
    """One sentence: folds, repeats, subjects tested, intervals."""
    p = report.protocol
    tested = ", ".join(f"{n} {lbl}" for lbl, n in p.test_subjects_per_label.items())
    return (f"protocol: {p.method}. {p.folds_evaluated} fold(s) evaluated of {p.folds} x {p.repeats}; "
            f"{p.subjects_tested_per_repeat} of {p.n_subjects} subjects tested per repeat ({tested}).")


def table1(report: Report) -> Table:
    """GAN-train in the layout of the paper's Table 1, with the paper's numbers beside ours (pooled over folds)."""
    t = _classifier_table(report.gan_train, "GAN-train (paper Table 1): SVM trained on each set, tested on real "
                          "test subjects, pooled over folds", with_paper=True)
    t.notes = [
        "Slice level, with 95% cluster-bootstrap CIs over test subjects; subject level = mean SVM decision score per "
        "subject and repeat. n = test images / subjects. ADHD is the positive class. Shortcut = the same SVM on "
        "brain area, mean and SD of brain intensity and slice position of the real training slices: a row near it "
        "learned little beyond such trivia.",
        protocol_line(report),
        *t.notes,
        features_line(report.features),
    ]
    return t


def per_fold_table(report: Report) -> Table:
    """Each GAN-train row's HM (Sen / Spe) in each fold, slice level."""
    names = ordered_names(report.gan_train)
    folds = [(f.repeat, f.fold) for f in report.gan_train[names[0]].per_fold] if names else []
    headers = ["Training data"] + [f"r{r}/f{k} HM (Sen / Spe)" for r, k in folds]
    rows = []
    for key in names:
        by_fold = {(f.repeat, f.fold): f for f in report.gan_train[key].per_fold}
        row = [display_name(key)]
        for fid in folds:
            f = by_fold.get(fid)
            row.append("n/a" if f is None else f"{fmt_ci(f.hm, _bounds(f.ci, 'hm'))} ({fmt(f.sensitivity, 2)} / "
                                               f"{fmt(f.specificity, 2)})")
        rows.append(row)
    notes = ["Each fold's SVM scored only that fold's test subjects; the pooled rows above combine the folds."]
    first = report.gan_train[names[0]].per_fold if names else []
    if first:
        counts = "; ".join(f"r{f.repeat}/f{f.fold}: " + ", ".join(f"{n} {lbl}" for lbl, n in f.n_subjects.items())
                           for f in first)
        notes.append(f"test subjects per fold: {counts}.")
    notes += _ci_notes(f.ci_note for key in names for f in report.gan_train[key].per_fold)
    return Table("GAN-train per fold", headers, rows, notes)


def comparisons_table(report: Report) -> Table:
    """Every paired comparison with its interval and verdict."""
    headers = ["a", "b", "metric", "a", "b", "a - b [95% CI]", "a / b [95% CI]", "verdict"]
    rows = [[display_name(c.a), display_name(c.b), "slice HM" if c.metric == "hm" else "subject HM",
             fmt(c.a_value), fmt(c.b_value), fmt_ci(c.diff, c.ci, na=c.ci_note is not None),
             fmt_ci(c.ratio, c.ratio_ci), c.verdict] for c in report.comparisons]
    notes = ["Paired cluster bootstrap: the same resampled test subjects (stratified by label, each with all its "
             "slices of every fold and repeat) for both rows. 'better' / 'worse': the CI of a - b excludes 0; "
             "'not distinguishable': it holds 0, so the data cannot order the two rows.",
             *_ci_notes(c.ci_note for c in report.comparisons)]
    return Table("Paired comparisons (GAN-train HM)", headers, rows, notes)


def gan_test_table(report: Report) -> Table:
    t = _classifier_table(report.gan_test, "GAN-test: SVM trained on real training images, tested on each "
                          "synthetic set", with_paper=False)
    t.notes = ["Far above the real-data GAN-train score hints at memorisation; far below at unrealistic images.",
               features_line(report.features)]
    return t


def fidelity_table(report: Report) -> Table:
    headers = ["Compared set", "FID", "KID (mean +/- std)", "SWD avg (x1e3)"]
    headers += [f"MS-SSIM {lbl} (set / real)" for lbl in LABELS]
    headers += ["Precision", "Recall", "Density", "Coverage", "Background (set / real)"]
    rows = []
    for key in ordered_names(report.fidelity):
        e = report.fidelity[key]
        sd = e.sd
        kid = fmt_kid(e.kid_mean)
        if optional_number(e.kid_std) is not None:
            kid += f" +/- {fmt_kid(e.kid_std)}"
        row = [display_name(key), fmt_sd(e.fid, sd and sd.fid, 2), kid, fmt_sd(e.swd.avg, sd and sd.swd.avg, 2)]
        row += [f"{fmt(e.ms_ssim.synthetic[lbl])} / {fmt(e.ms_ssim.real[lbl])}" for lbl in LABELS]
        row += [fmt_sd(getattr(e, m), sd and getattr(sd, m)) for m in ("precision", "recall", "density", "coverage")]
        row.append(f"{fmt(e.background, 3)} / {fmt(e.background_real, 3)}")
        rows.append(row)
    n_folds = max((len(e.per_fold) for e in report.fidelity.values()), default=0)
    return Table("Fidelity and diversity", headers, rows, [
        f"Mean over {n_folds} fold(s) +/- SD over folds. Each set against the real training images of its fold; "
        "Real test (reference) = the fold's real TEST subjects against the same training images: the scale to "
        "read the synthetic rows on (a set as close as other real subjects matches it).",
        "FID/KID/P/R/D/C on the features below (k-NN balls over other subjects' images); SWD on pixels (Laplacian "
        "pyramid, 7x7 patches); MS-SSIM between random pairs within a class (lower = more diverse). Background: "
        "mean intensity in [0, 1] outside every real brain (0 = black), the set beside the real training images.",
        features_line(report.features),
    ])


def fidelity_per_fold_table(report: Report) -> Table:
    """The headline fidelity numbers of every fold."""
    headers = ["Compared set", "fold", "FID", "KID", "SWD avg", "Precision", "Recall", "Density", "Coverage"]
    rows = []
    for key in ordered_names(report.fidelity):
        for f in report.fidelity[key].per_fold:
            v = f.values
            rows.append([display_name(key), f"r{f.repeat}/f{f.fold}", fmt(v.fid, 2), fmt_kid(v.kid_mean),
                         fmt(v.swd.avg, 2), fmt(v.precision), fmt(v.recall), fmt(v.density), fmt(v.coverage)])
    return Table("Fidelity per fold", headers, rows, [features_line(report.features)])


def fmt_rate_ci(rate: Optional[float], bounds: Optional[Bounds]) -> str:
    """``"1.2% [0.4%, 3.1%]"``; the interval is left out when absent."""
    text = fmt_pct(rate)
    if bounds is not None and all(optional_number(b) is not None for b in bounds):
        text += f" [{fmt_pct(bounds[0])}, {fmt_pct(bounds[1])}]"
    return text


def fmt_p(p: Optional[float]) -> str:
    """A p-value: ``p=0.034``, ``p<0.001``, or ``p=n/a``."""
    x = optional_number(p)
    if x is None:
        return "p=n/a"
    return "p<0.001" if x < 0.001 else f"p={x:.3f}"


def _audit_row(name: str, e) -> list[str]:
    """One audit (a fold's :class:`PrivacySummary`) as a row of the privacy table."""
    subject = e.membership.attacks.get(f"{e.membership.headline.split('/')[0]}/subject")
    return [
        name,
        fmt_rate_ci(e.memorization.rate, e.memorization.ci),
        f"{e.memorization.k} of {e.memorization.n}",
        fmt_rate_ci(e.false_flags.rate, e.false_flags.ci) + f" ({e.false_flags.k} of {e.false_flags.n})",
        fmt_pct(e.excess_memorization),
        f"{fmt_ci(e.mia_auc, e.mia_ci)} {fmt_p(e.mia_p_value)}",
        f"{fmt(e.membership.half_b.auc)} {fmt_p(e.membership.half_b.p_value)}",
        "n/a" if subject is None else f"{fmt(subject.auc)} {fmt_p(subject.p_value)}",
        f"{fmt_pct(e.authenticity)} ({fmt_pct(e.authenticity_by_space.pixel.holdout)})",
    ]


def privacy_table(report: Report) -> Table:
    headers = ["Synthetic set", "near-copies [95% CI]", "flagged", "false flags, held-out half B [95% CI]",
               "excess", "MIA AUC [95% CI]", "MIA AUC half B", "MIA AUC subject", "authentic share (held-out ref.)"]
    rows = []
    for key in ordered_names(report.privacy):
        e = report.privacy[key]
        rows.append([
            f"{display_name(key)} (pooled)" if len(e.audits) > 1 else display_name(key),
            fmt_rate_ci(e.memorization.rate, e.memorization.ci),
            f"{e.memorization.k} of {e.memorization.n}",
            fmt_rate_ci(e.false_flags.rate, e.false_flags.ci) + f" ({e.false_flags.k} of {e.false_flags.n})",
            fmt_pct(e.excess_memorization),
            f"{fmt(e.mia_auc)} (mean of {e.n_folds}) {fmt_p(e.mia_p_value)}",
            f"{fmt(e.membership_rule.auc)} {fmt_p(e.membership_rule.p_value)}",
            "per fold",
            "per fold",
        ])
        if len(e.audits) > 1:
            rows += [_audit_row(f"{display_name(key)} r{f.repeat}/f{f.fold}", f.audit) for f in e.audits]
    percentiles = {f"{f.audit.percentile:g}" for e in report.privacy.values() for f in e.audits}
    return Table("Privacy audit", headers, rows, [
        "First each set pooled over folds (counts summed; MIA AUC the mean of the folds' headline AUCs, p from "
        "permuting membership among subjects within every fold at once), then each fold's own audit: its generator "
        "against its own training subjects, calibrated on its own held-out subjects.",
        "Near-copy: in aligned pixels or in features, the distance to the nearest training image over the distance to "
        "the nearest image of another training subject is below a threshold set per brain-area band at percentile "
        f"{'/'.join(sorted(percentiles)) or 'n/a'} of held-out half A; false flags: "
        "the same rule on held-out half B (never used to set it), the rate a generator that copies nothing would "
        "score; excess = near-copies minus false flags. CIs are Wilson intervals (they treat slices as "
        "independent). MIA AUC: the pre-declared headline attack (aligned pixel distance to the nearest synthetic "
        "image, per slice), 95% CI over subjects, p from permuting membership among subjects; 0.5 = no leak. "
        "MIA AUC half B: the same attack with held-out half B's subjects as the only non-members (what the "
        "membership rule is judged on).",
        features_line(report.features),
    ])


def transform_text(t: Transform) -> str:
    """The re-acquisition found, in words: ``"mirrored, rotated +3.1 deg, scaled x1.04, shifted (+2.0, -1.0) px"``."""
    parts = ["mirrored"] if t.mirrored else []
    if abs(t.rotation_deg) >= 0.05:
        parts.append(f"rotated {t.rotation_deg:+.1f} deg")
    if abs(t.scale - 1.0) >= 0.0005:
        parts.append(f"scaled x{t.scale:.3f}")
    if any(abs(d) >= 0.05 for d in t.shift_px):
        parts.append(f"shifted ({t.shift_px[0]:+.1f}, {t.shift_px[1]:+.1f}) px")
    c0, c1, c2 = t.brightness
    parts.append(f"brightness {c0:+.2f} {c1:+.2f}x {c2:+.2f}x^2")
    return ", ".join(parts)


def closest_pairs_table(report: Report) -> Table:
    """The closest synthetic-training pairs of every set and fold after alignment, and what the audit does not prove."""
    rows = []
    for key in ordered_names(report.privacy):
        for f in report.privacy[key].audits:
            where = f" r{f.repeat}/f{f.fold}" if len(report.privacy[key].audits) > 1 else ""
            for p in f.audit.nearest_pairs:
                rows.append([display_name(key) + where, p.synthetic_file, p.train_id, fmt(p.distance, 4),
                             fmt(p.ratio, 3), fmt(p.threshold, 3), "yes" if p.flagged else "no",
                             transform_text(p.transform)])
    audits = [f.audit for e in report.privacy.values() for f in e.audits]
    limits = audits[0].limits if audits else []
    return Table("Closest pairs after alignment", ["Synthetic set", "synthetic", "training slice", "distance", "ratio",
                                                   "ratio threshold", "flagged", "transform found"], rows,
                 ["What the privacy audit does not prove: " + " ".join(limits)] if limits else [])


def privacy_utility_table(report: Report) -> Table:
    pu = report.privacy_utility
    rows = [[display_name(key), fmt_ci(p.hm, p.hm_ci), fmt_rate_ci(p.memorization_rate, p.memorization_ci),
             fmt_rate_ci(p.false_flag_rate, p.false_flag_ci)]
            for key in ordered_names(pu.points) for p in [pu.points[key]]]
    if pu.real_hm is not None:
        rows.append([display_name(REAL_KEY), fmt_ci(pu.real_hm, pu.real_hm_ci), "", ""])
    return Table("Privacy and utility", ["Training data", "GAN-train HM (95% CI)", "memorisation rate (95% CI)",
                                         "held-out false flags (95% CI)"], rows, [
        "Utility up, privacy left: a useful and private generator has a high HM and a memorisation rate near the "
        "held-out false-flag rate (what a generator that copies nothing shows). " + pu.ci_method + ".",
    ])


def timings_table(report: Report) -> Table:
    seconds = report.timings.to_dict()  # earlier stages first, then this command's
    return Table("Timings", ["stage", "seconds"], [[k, fmt(v, 1)] for k, v in seconds.items()])


def all_tables(report: Report) -> list[Table]:
    return [table1(report), per_fold_table(report), comparisons_table(report), gan_test_table(report),
            fidelity_table(report), fidelity_per_fold_table(report), privacy_table(report),
            closest_pairs_table(report), privacy_utility_table(report), timings_table(report)]


# --- renderers ------------------------------------------------------------------------------

def to_text(table: Table) -> str:
    """Fixed-width plain text for the terminal."""
    widths = [max(len(h), *(len(r[i]) for r in table.rows)) if table.rows else len(h)
              for i, h in enumerate(table.headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(table.headers, widths))
    out = [table.title, line, "-" * len(line)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in table.rows]
    if not table.rows:
        out.append("(no results)")
    return "\n".join(out + table.notes)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", ""]
    if table.rows:
        lines.append("| " + " | ".join(_md_cell(h) for h in table.headers) + " |")
        lines.append("|" + "---|" * len(table.headers))
        lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in table.rows]
    else:
        lines.append("(no results)")
    lines.append("")
    lines += [f"_{_md_cell(n)}_  " for n in table.notes]
    return "\n".join(lines) + "\n"


def to_html(table: Table) -> str:
    esc = html.escape
    parts = [f"<h3>{esc(table.title)}</h3>"]
    if table.rows:
        parts.append("<table><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in table.headers) + "</tr></thead><tbody>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table.rows]
        parts.append("</tbody></table>")
    else:
        parts.append("<p>(no results)</p>")
    parts += [f'<p class="note">{esc(n)}</p>' for n in table.notes]
    return "\n".join(parts)
