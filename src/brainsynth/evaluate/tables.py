"""The report's tables and target verdicts, read from a typed :class:`~brainsynth.evaluate.schema.Report`.

Every table is built once as a :class:`Table` of plain strings and rendered three ways: plain
text for the terminal (:func:`to_text`), Markdown (:func:`to_markdown`) and HTML
(:func:`to_html`). The paper's numbers live in :data:`PAPER_TABLE1` and the targets in
:data:`TARGETS`; nothing else restates them. A number the report does not have (an ``Optional``
field holding ``None``) is shown as ``n/a``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from brainsynth import LABELS
from brainsynth.evaluate.schema import (
    Bounds,
    ClassifierResult,
    FeaturesInfo,
    Intervals,
    Report,
    Transform,
)
from brainsynth.evaluate.typed_json import optional_number

PAPER_TABLE1 = {
    "PGGAN": {"sensitivity": 0.762, "specificity": 0.712, "hm": 0.736},
    "DCGAN": {"sensitivity": 0.584, "specificity": 0.613, "hm": 0.598},
    "Real data": {"sensitivity": 0.883, "specificity": 0.885, "hm": 0.883},
}
"""GAN-train results of Alam, Hossain & Kobashi, Table 1 (SVM on VGG-16 features, ADHD positive)."""

TARGETS = {
    "pggan_share_of_real_hm": 0.85,  # PGGAN HM must reach this share of the real-data HM
    # Near-copies beyond chance: the synthetic set's flagged share minus the false-flag rate of
    # held-out half B (real images of subjects never seen, never used to set the thresholds).
    "max_excess_memorization": 0.01,
}

REAL_KEY = "real"
"""Key of the real-on-real baseline in ``Report.gan_train``."""

METRICS = ("sensitivity", "specificity", "hm")
METRIC_HEADERS = {"sensitivity": "Sen", "specificity": "Spe", "hm": "HM"}


# --- names and numbers ----------------------------------------------------------------------

def display_name(key: str) -> str:
    """``"pggan"`` -> ``"PGGAN"``, ``"real"`` -> ``"Real data"`` (the paper's row names)."""
    if key.lower() == REAL_KEY:
        return "Real data"
    upper = key.upper()
    return upper if upper in PAPER_TABLE1 else key


def ordered_names(names: Iterable[str]) -> list[str]:
    """PGGAN first, DCGAN second, other synthetic sets as given, the real baseline last."""
    keys = list(names)

    def rank(key: str) -> int:
        return {"pggan": 0, "dcgan": 1, REAL_KEY: 3}.get(key.lower(), 2)

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


def fmt_pct(value: Optional[float]) -> str:
    """``0.005`` -> ``"0.5%"``, or ``n/a``."""
    x = optional_number(value)
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_ci(value: Optional[float], bounds: Optional[Bounds], digits: int = 3) -> str:
    """``"0.762 [0.700, 0.810]"``; the interval is left out when absent."""
    text = fmt(value, digits)
    if bounds is not None and all(optional_number(b) is not None for b in bounds):
        text += f" [{fmt(bounds[0], digits)}, {fmt(bounds[1], digits)}]"
    return text


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
        row += [fmt_ci(getattr(sl, m), _bounds(sl.ci, m)) for m in METRICS]
        if with_paper:
            paper = PAPER_TABLE1.get(display_name(key), {})
            row += [fmt(paper.get(m)) for m in METRICS]  # only the paper's own rows have numbers
        row += [fmt(getattr(subj, m)) for m in METRICS]
        row.append(f"{sl.n} / {subj.n_groups}")
        rows.append(row)
    return Table(title, headers, rows)


def table1(report: Report) -> Table:
    """GAN-train in the layout of the paper's Table 1, with the paper's numbers beside ours."""
    t = _classifier_table(report.gan_train, "GAN-train (paper Table 1): SVM trained on each set, tested on the "
                          "real test split", with_paper=True)
    t.notes = [
        "Slice level, with 95% bootstrap CIs over test subjects; subject level = mean SVM decision score per "
        "subject. n = test images / subjects. ADHD is the positive class.",
        features_line(report.features),
    ]
    return t


def gan_test_table(report: Report) -> Table:
    t = _classifier_table(report.gan_test, "GAN-test: SVM trained on real training images, tested on each "
                          "synthetic set", with_paper=False)
    t.notes = ["Far above the real-data GAN-train score hints at memorisation; far below at unrealistic images.",
               features_line(report.features)]
    return t


def fidelity_table(report: Report) -> Table:
    headers = ["Synthetic set", "FID", "KID (mean +/- std)", "SWD avg (x1e3)"]
    headers += [f"MS-SSIM {lbl} (synth / real)" for lbl in LABELS]
    headers += ["Precision", "Recall", "Density", "Coverage"]
    rows = []
    for key in ordered_names(report.fidelity):
        e = report.fidelity[key]
        kid = fmt(e.kid_mean, 4)
        if optional_number(e.kid_std) is not None:
            kid += f" +/- {fmt(e.kid_std, 4)}"
        row = [display_name(key), fmt(e.fid, 2), kid, fmt(e.swd.avg, 2)]
        row += [f"{fmt(e.ms_ssim.synthetic[lbl])} / {fmt(e.ms_ssim.real[lbl])}" for lbl in LABELS]
        row += [fmt(e.precision), fmt(e.recall), fmt(e.density), fmt(e.coverage)]
        rows.append(row)
    return Table("Fidelity and diversity", headers, rows, [
        "FID/KID/P/R/D/C on the features below, against the real training images; SWD on pixels (Laplacian "
        "pyramid, 7x7 patches); MS-SSIM between random pairs within a class (lower = more diverse).",
        features_line(report.features),
    ])


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


def privacy_table(report: Report) -> Table:
    headers = ["Synthetic set", "near-copies [95% CI]", "flagged", "false flags, held-out half B [95% CI]",
               "excess", "MIA AUC [95% CI]", "MIA AUC subject", "authentic share (held-out ref.)"]
    rows = []
    for key in ordered_names(report.privacy):
        e = report.privacy[key]
        subject = e.membership.attacks.get(f"{e.membership.headline.split('/')[0]}/subject")
        rows.append([
            display_name(key),
            fmt_rate_ci(e.memorization.rate, e.memorization.ci),
            f"{e.memorization.k} of {e.memorization.n}",
            fmt_rate_ci(e.false_flags.rate, e.false_flags.ci) + f" ({e.false_flags.k} of {e.false_flags.n})",
            fmt_pct(e.excess_memorization),
            f"{fmt_ci(e.mia_auc, e.mia_ci)} {fmt_p(e.mia_p_value)}",
            "n/a" if subject is None else f"{fmt(subject.auc)} {fmt_p(subject.p_value)}",
            f"{fmt_pct(e.authenticity)} ({fmt_pct(e.authenticity_by_space.pixel.holdout)})",
        ])
    percentiles = {f"{e.percentile:g}" for e in report.privacy.values()}
    return Table("Privacy audit", headers, rows, [
        "Near-copy: in aligned pixels or in features, the distance to the nearest training image over the distance to "
        "the nearest image of another training subject is below a threshold set per brain-area band at percentile "
        f"{'/'.join(sorted(percentiles)) or 'n/a'} of held-out half A; false flags: "
        "the same rule on held-out half B (never used to set it), the rate a generator that copies nothing would "
        "score; excess = near-copies minus false flags. CIs are Wilson intervals (they treat slices as "
        "independent). MIA AUC: the pre-declared headline attack (aligned pixel distance to the nearest synthetic "
        "image, per slice), 95% CI over subjects, p from permuting membership among subjects; 0.5 = no leak.",
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
    """The closest synthetic-training pairs of every set after alignment, and what the audit does not prove."""
    rows = []
    for key in ordered_names(report.privacy):
        for p in report.privacy[key].nearest_pairs:
            rows.append([display_name(key), p.synthetic_file, p.train_id, fmt(p.distance, 4), fmt(p.ratio, 3),
                         fmt(p.threshold, 3), "yes" if p.flagged else "no", transform_text(p.transform)])
    limits = next(iter(report.privacy.values())).limits if report.privacy else []
    return Table("Closest pairs after alignment", ["Synthetic set", "synthetic", "training slice", "distance", "ratio",
                                                   "ratio threshold", "flagged", "transform found"], rows,
                 ["What the privacy audit does not prove: " + " ".join(limits)] if limits else [])


def timings_table(report: Report) -> Table:
    seconds = report.timings.to_dict()  # earlier stages first, then this command's
    return Table("Timings", ["stage", "seconds"], [[k, fmt(v, 1)] for k, v in seconds.items()])


def all_tables(report: Report) -> list[Table]:
    return [table1(report), gan_test_table(report), fidelity_table(report), privacy_table(report),
            closest_pairs_table(report), timings_table(report)]


# --- targets --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """Whether one reproduction target holds.

    ``ok`` is ``None`` when a number needed for the check is missing (not measured is not the
    same as missed); ``text`` says what was compared.
    """

    ok: Optional[bool]
    text: str


def _hm(report: Report, name: str) -> float | None:
    key = _find_key(report.gan_train, name)
    return None if key is None else optional_number(report.gan_train[key].hm)


def check_targets(report: Report) -> dict[str, Verdict]:
    """Whether the reproduction targets hold.

    Returns
    -------
    dict
        name -> :class:`Verdict`. Names: ``"ordering"`` (real HM >= PGGAN HM > DCGAN HM),
        ``"pggan_vs_real"`` (PGGAN HM >= 0.85 x real HM), ``"memorization"`` (PGGAN, the method
        reproduced: near-copies at most 1 point above the false-flag rate of held-out half B, the
        real images that did not set the thresholds; every audited set when there is no PGGAN
        entry; the text lists all sets).
    """
    real, pggan, dcgan = _hm(report, REAL_KEY), _hm(report, "pggan"), _hm(report, "dcgan")
    out: dict[str, Verdict] = {}

    if None in (real, pggan, dcgan):
        out["ordering"] = Verdict(None, "real HM >= PGGAN HM > DCGAN HM: not checked (needs GAN-train HM of real, "
                                        "pggan and dcgan)")
    else:
        ok = real >= pggan > dcgan
        out["ordering"] = Verdict(ok, f"real HM >= PGGAN HM > DCGAN HM: {'met' if ok else 'MISSED'} "
                                      f"({real:.3f}, {pggan:.3f}, {dcgan:.3f})")

    share = TARGETS["pggan_share_of_real_hm"]
    if None in (real, pggan):
        out["pggan_vs_real"] = Verdict(None, f"PGGAN HM >= {share:g} x real HM: not checked (needs GAN-train HM of "
                                             "real and pggan)")
    else:
        ok = pggan >= share * real
        out["pggan_vs_real"] = Verdict(ok, f"PGGAN HM >= {share:g} x real HM: {'met' if ok else 'MISSED'} "
                                           f"({pggan:.3f} vs {share * real:.3f})")

    limit = TARGETS["max_excess_memorization"]
    title = f"near-copies <= held-out half-B false flags + {100 * limit:g} pt"
    excess = {display_name(k): (optional_number(v.excess_memorization), v) for k, v in report.privacy.items()}
    measured = {k: v for k, v in excess.items() if v[0] is not None}
    judged = {k: v for k, v in measured.items() if k == "PGGAN"} or measured
    if not measured:
        out["memorization"] = Verdict(None, f"{title}: not checked (no privacy audit with a half B)")
    else:
        ok = all(x <= limit + 1e-12 for x, _ in judged.values())
        listing = ", ".join(f"{k} {fmt_pct(e.memorization.rate)} vs {fmt_rate_ci(e.false_flags.rate, e.false_flags.ci)}"
                            for k, (_, e) in measured.items())
        out["memorization"] = Verdict(ok, f"{title}: {'met' if ok else 'MISSED'} ({listing})")
    return out


def targets_line(report: Report) -> str:
    """One sentence: which targets hold, which are missed, which could not be checked."""
    verdicts = check_targets(report)
    missed = [k for k, v in verdicts.items() if v.ok is False]
    head = "All targets met." if not missed and all(v.ok for v in verdicts.values()) else (
        f"Targets missed: {len(missed)} of {len(verdicts)}." if missed else "Some targets could not be checked.")
    return head + " " + "; ".join(v.text for v in verdicts.values()) + "."


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


def format_table1(report: Report) -> str:
    """The GAN-train table for the terminal, the paper's numbers beside ours, then the targets."""
    return to_text(table1(report)) + "\n" + targets_line(report)


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
