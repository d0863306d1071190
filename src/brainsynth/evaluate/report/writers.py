"""The files the evaluation writes, all from typed documents.

``brainsynth evaluate``: ``report.json`` (:meth:`Report.to_dict`), ``report.md``, a
self-contained ``report.html``, ``predictions.tsv`` (every fold's decision scores, from which
the pooled numbers were computed) and ``figures/*.png`` (:func:`write_report`).

``brainsynth audit`` writes through :mod:`brainsynth.evaluate.report.privacy_writers`.

Every file is written atomically into a folder the caller stages.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

from brainsynth.evaluate.report import figures
from brainsynth.evaluate.report.schema import DataSummary, Report
from brainsynth.evaluate.report.tables import (
    Table,
    all_tables,
    features_line,
    protocol_line,
    to_html,
    to_markdown,
)
from brainsynth.evaluate.report.targets import (check_targets, plain_words, privacy_verdicts_table, targets_line,
                                                verdict_lines)
from brainsynth.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("brainsynth.evaluate.report.writers")

SIMULATED_BANNER = (
    "SIMULATED cohort: these numbers come from a simulated cohort (brainsynth phantom), not from patients; "
    "they test the method, not any clinical claim."
)

Figure = tuple[str, str, str, bytes]
"""(section, set name, caption, PNG bytes) of one report figure."""


# --- brainsynth evaluate ------------------------------------------------------------------------

def write_report(
    out_dir: str | Path,
    report: Report,
    *,
    predictions,
    drawn: Sequence[Figure],
    runs: Mapping[str, str | Path],
) -> None:
    """Write ``report.json``, ``report.md``, ``report.html``, ``predictions.tsv`` and ``figures/*.png``.

    Parameters
    ----------
    out_dir : path
        A (staging) folder; files are written atomically.
    report : Report
        The evaluation results.
    predictions : pandas.DataFrame
        Every fold's decision scores (:data:`brainsynth.evaluate.protocol.PREDICTION_COLUMNS`).
    drawn : list of Figure
        Sample grids and nearest pairs (of one fold), shown in the page.
    runs : dict
        name -> training RUN_DIR holding ``stats.jsonl`` (may be empty).
    """
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report.to_dict())
    atomic_write_text(out_dir / "predictions.tsv", predictions.to_csv(sep="\t", index=False))
    tables = report_tables(report)
    atomic_write_text(out_dir / "report.md", render_markdown(report, tables))
    drawn = [*summary_figures(report), *drawn, *training_figures(runs)]
    for section, name, _, png in drawn:
        atomic_write_bytes(out_dir / "figures" / f"{section}_{file_safe(name)}.png", png)
    atomic_write_text(out_dir / "report.html", render_html(report, tables, drawn))


def summary_figures(report: Report) -> list[Figure]:
    """The privacy-utility summary of the pooled report (the page's first figure), when a set was audited."""
    if not report.privacy_utility.points:
        return []
    return [("summary", "privacy_utility", "each generator's GAN-train HM (utility, up) against its memorisation "
             "rate (privacy, left), with 95% intervals, pooled over folds",
             figures.figure_privacy_utility(report.privacy_utility))]


def training_figures(runs: Mapping[str, str | Path]) -> list[Figure]:
    """Training curves of each run that has statistics."""
    drawn: list[Figure] = []
    for name, run_dir in runs.items():
        png = figures.figure_training_curves(figures.read_stats(run_dir), name)
        if png is not None:
            drawn.append(("training", name, f"{name}: training curves ({run_dir})", png))
    return drawn


def file_safe(name: str) -> str:
    """A set name as a file-name part (``figures/samples_<name>.png``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "set"


def data_lines(data: DataSummary) -> list[str]:
    """One line per input: the real dataset and its folds, then each synthetic set's size."""
    real = data.real
    lines = [f"real: {real.path}, {real.n_images} images of {real.n_subjects} subjects, {real.image_size} px"]
    for f in real.folds:
        lines.append(f"fold r{f.repeat}/f{f.fold}: {f.n_train} train / {f.n_test} test images of "
                     f"{len(f.train_subjects)} / {len(f.test_subjects)} subjects (test: {', '.join(f.test_subjects)})")
    for name, s in data.synthetic.items():
        counts = ", ".join(f"{n} {label}" for label, n in s.counts.items())
        where = s.path if len(s.per_fold) == 1 else f"{len(s.per_fold)} folds, first {s.path}"
        lines.append(f"synthetic {name}: {where}, {s.n_images} images ({counts})")
    return lines


def report_tables(report: Report) -> list[Table]:
    """Every table of the report; the privacy verdicts first when a set was audited (they decide what may be shared)."""
    return [privacy_verdicts_table(report), *all_tables(report)] if report.privacy else all_tables(report)


def render_markdown(report: Report, tables: Sequence[Table] | None = None) -> str:
    """``report.md``: banner, inputs, targets, then every table with its features line."""
    tables = report_tables(report) if tables is None else tables
    lines = ["# brainsynth evaluation report", ""]
    if report.simulated:
        lines += [f"> **{SIMULATED_BANNER}**", ""]
    lines += [f"brainsynth {report.brainsynth_version}, created {report.created}  ",
              f"{protocol_line(report)}  ",
              *[f"{line}  " for line in data_lines(report.data)], "", "## Targets", "",
              "Judged on paired verdicts (95% CI of a difference on the same resampled subjects), never on point "
              "estimates.", ""]
    lines += [f"- {v.text}" for v in check_targets(report).values()]
    lines += ["", targets_line(report), "", "## In plain words", ""]
    lines += [f"- {line}" for line in plain_words(report)]
    lines += ["", "## Paired verdicts", ""]
    lines += [f"- {line}" for line in verdict_lines(report)]
    lines += ["", "## Results", ""]
    lines += [to_markdown(t) for t in tables]
    lines += ["Figures (privacy and utility, sample grids, nearest pairs, training curves) are in report.html and "
              "figures/.", ""]
    return "\n".join(lines)


_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.4; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f0f0; }
.note { color: #555; font-size: 0.85em; margin: 0.2em 0; }
.banner { background: #fff3cd; border: 2px solid #e0a800; padding: 0.8em; font-weight: bold; }
.met { color: #1a7f37; } .missed { color: #b42318; font-weight: bold; } .unchecked { color: #777; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #444; }
"""


def _embed_png(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt, quote=True)}">'


def render_html(report: Report, tables: Sequence[Table], drawn: Sequence[Figure]) -> str:
    """A self-contained page: inline CSS, figures as base64 data URIs, no external assets."""
    esc = html.escape
    body = ["<h1>brainsynth evaluation report</h1>"]
    if report.simulated:
        body.append(f'<p class="banner">{esc(SIMULATED_BANNER)}</p>')
    body.append(f"<p>brainsynth {esc(report.brainsynth_version)}, created {esc(report.created)}<br>"
                f"{esc(protocol_line(report))}<br>{esc(features_line(report.features))}</p>")
    body.append("<p>" + "<br>".join(esc(line) for line in data_lines(report.data)) + "</p>")
    body.append("<h2>Targets</h2><p>Judged on paired verdicts (95% CI of a difference on the same resampled "
                "subjects), never on point estimates.</p><ul>")
    for verdict in check_targets(report).values():
        cls = {True: "met", False: "missed"}.get(verdict.ok, "unchecked")
        body.append(f'<li class="{cls}">{esc(verdict.text)}</li>')
    body.append("</ul><h2>In plain words</h2><ul>")
    body += [f"<li>{esc(line)}</li>" for line in plain_words(report)]
    body.append("</ul><h2>Paired verdicts</h2><ul>")
    body += [f"<li>{esc(line)}</li>" for line in verdict_lines(report)]
    body.append("</ul>")
    body.append("<h2>Results</h2>")
    body += [to_html(t) for t in tables]
    sections = {"summary": "Privacy and utility", "samples": "Samples",
                "pairs": "Closest training slices after alignment", "training": "Training curves"}
    for section, heading in sections.items():
        chosen = [(caption, png) for s, _, caption, png in drawn if s == section]
        if not chosen:
            continue
        body.append(f"<h2>{esc(heading)}</h2>")
        body += [f"<figure>{_embed_png(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"
                 for caption, png in chosen]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>brainsynth evaluation report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
