"""The files the evaluation writes, all from typed documents.

``brainsynth evaluate``: ``report.json`` (:meth:`Report.to_dict`), ``report.md``, a
self-contained ``report.html`` and ``figures/*.png`` (:func:`write_report`).

``brainsynth audit`` writes through :mod:`.privacy_writers`.

Every file is written atomically into a folder the caller stages.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from brainsynth.evaluate import figures
from brainsynth.evaluate.schema import DataSummary, Report
from brainsynth.evaluate.tables import (
    Table,
    all_tables,
    check_targets,
    features_line,
    targets_line,
    to_html,
    to_markdown,
)
from brainsynth.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("brainsynth.evaluate.writers")

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
    real_train,
    synthetic: Mapping[str, Any],
    nearest_pairs: Mapping[str, Sequence[Mapping[str, Any]]],
    runs: Mapping[str, str | Path],
) -> None:
    """Write ``report.json``, ``report.md``, ``report.html`` and ``figures/*.png`` into ``out_dir``.

    Parameters
    ----------
    out_dir : path
        A (staging) folder; files are written atomically.
    report : Report
        The evaluation results.
    real_train : ImageSet
        Real training images (float [N, H, W] in [0, 1]) and labels, shown beside the synthetic ones.
    synthetic : dict
        name -> :class:`brainsynth.imageset.ImageSet`.
    nearest_pairs : dict
        name -> pair dicts from :func:`brainsynth.evaluate.privacy.nearest_pairs`.
    runs : dict
        name -> training RUN_DIR holding ``stats.jsonl`` (may be empty).
    """
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", report.to_dict())
    tables = all_tables(report)
    atomic_write_text(out_dir / "report.md", render_markdown(report, tables))
    drawn = report_figures(real_train, synthetic, nearest_pairs, runs)
    for section, name, _, png in drawn:
        atomic_write_bytes(out_dir / "figures" / f"{section}_{_file_safe(name)}.png", png)
    atomic_write_text(out_dir / "report.html", render_html(report, tables, drawn))


def report_figures(real_train, synthetic: Mapping[str, Any], nearest_pairs: Mapping[str, Sequence[Mapping[str, Any]]],
                   runs: Mapping[str, str | Path]) -> list[Figure]:
    """Sample grids, nearest pairs and training curves, in the order the page shows them."""
    drawn: list[Figure] = []
    for name, images in synthetic.items():
        drawn.append(("samples", name, f"{name}: samples per class beside real training slices",
                      figures.figure_samples(real_train, images, name)))
    for name, pairs in nearest_pairs.items():
        if pairs:
            drawn.append(("pairs", name, f"{name}: the closest synthetic-training pairs after alignment (top: "
                                         "synthetic; middle: its nearest training slice as aligned, with the "
                                         "transform found; bottom: their difference; d = aligned pixel distance)",
                          figures.figure_nearest_pairs(pairs, title=f"{name}: closest synthetic-training pairs")))
    for name, run_dir in runs.items():
        png = figures.figure_training_curves(figures.read_stats(run_dir), name)
        if png is not None:
            drawn.append(("training", name, f"{name}: training curves ({run_dir})", png))
    return drawn


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "set"


def data_lines(data: DataSummary) -> list[str]:
    """One line per input: the real dataset's split, then each synthetic set's size."""
    real = data.real
    lines = [f"real: {real.path}, {real.n_train} train / {real.n_test} test images of {len(real.train_subjects)} / "
             f"{len(real.test_subjects)} subjects, {real.image_size} px"]
    for name, s in data.synthetic.items():
        counts = ", ".join(f"{n} {label}" for label, n in s.counts.items())
        lines.append(f"synthetic {name}: {s.path}, {s.n_images} images ({counts})")
    return lines


def render_markdown(report: Report, tables: Sequence[Table] | None = None) -> str:
    """``report.md``: banner, inputs, targets, then every table with its features line."""
    tables = all_tables(report) if tables is None else tables
    lines = ["# brainsynth evaluation report", ""]
    if report.simulated:
        lines += [f"> **{SIMULATED_BANNER}**", ""]
    lines += [f"brainsynth {report.brainsynth_version}, created {report.created}  ",
              *[f"{line}  " for line in data_lines(report.data)], "", "## Targets", ""]
    lines += [f"- {v.text}" for v in check_targets(report).values()]
    lines += ["", targets_line(report), "", "## Results", ""]
    lines += [to_markdown(t) for t in tables]
    lines += ["Figures (sample grids, nearest pairs, training curves) are in report.html and figures/.", ""]
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
                f"{esc(features_line(report.features))}</p>")
    body.append("<p>" + "<br>".join(esc(line) for line in data_lines(report.data)) + "</p>")
    body.append("<h2>Targets</h2><ul>")
    for verdict in check_targets(report).values():
        cls = {True: "met", False: "missed"}.get(verdict.ok, "unchecked")
        body.append(f'<li class="{cls}">{esc(verdict.text)}</li>')
    body.append("</ul>")
    body.append("<h2>Results</h2>")
    body += [to_html(t) for t in tables]
    sections = {"samples": "Samples", "pairs": "Closest training slices after alignment", "training": "Training curves"}
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
