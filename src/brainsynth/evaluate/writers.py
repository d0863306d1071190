"""The files the evaluation and the privacy audit write, all from typed documents.

``brainsynth evaluate``: ``report.json`` (:meth:`Report.to_dict`), ``report.md``, a
self-contained ``report.html``, ``predictions.tsv`` (every fold's decision scores, from which
the pooled numbers were computed) and ``figures/*.png`` (:func:`write_report`).

``brainsynth audit``: ``privacy.json``, ``privacy.md``, ``distances.tsv`` and two figures
(:func:`write_audit`), plus ``filtered/`` on request (:func:`write_filtered_set`).

Every file is written atomically into a folder the caller stages.
"""

from __future__ import annotations

import base64
import html
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brainsynth import __version__
from brainsynth.evaluate import figures
from brainsynth.evaluate.distances import MAX_SHIFT
from brainsynth.evaluate.schema import AuditReport, DataSummary, PrivacySummary, Report
from brainsynth.evaluate.tables import (
    Table,
    all_tables,
    features_line,
    fmt,
    fmt_pct,
    protocol_line,
    to_html,
    to_markdown,
)
from brainsynth.evaluate.targets import check_targets, plain_words, targets_line, verdict_lines
from brainsynth.evaluate.privacy import PrivacyResult
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
    tables = all_tables(report)
    atomic_write_text(out_dir / "report.md", render_markdown(report, tables))
    drawn = [*drawn, *training_figures(runs)]
    for section, name, _, png in drawn:
        atomic_write_bytes(out_dir / "figures" / f"{section}_{file_safe(name)}.png", png)
    atomic_write_text(out_dir / "report.html", render_html(report, tables, drawn))


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


def render_markdown(report: Report, tables: Sequence[Table] | None = None) -> str:
    """``report.md``: banner, inputs, targets, then every table with its features line."""
    tables = all_tables(report) if tables is None else tables
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
    sections = {"samples": "Samples", "pairs": "Nearest training neighbours", "training": "Training curves"}
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


# --- brainsynth audit ---------------------------------------------------------------------------

def write_audit(out_dir: str | Path, document: AuditReport, result: PrivacyResult, pairs: Sequence[Mapping[str, Any]],
                synth_files: Sequence[str], train_ids: Sequence[str], filtered_note: str | None = None) -> None:
    """Write ``privacy.json``, ``distances.tsv``, ``nearest_pairs.png``, ``distance_histogram.png``, ``privacy.md``.

    Parameters
    ----------
    out_dir : path
        A (staging) folder; files are written atomically.
    document : AuditReport
        The audit's results and provenance.
    result : PrivacyResult
        The distances behind them (for the per-image table and the histogram).
    pairs : list of dict
        The closest pairs, from :func:`brainsynth.evaluate.privacy.nearest_pairs`.
    synth_files, train_ids : sequence of str
        [N] synthetic file names and [M] training image ids, in the order of ``result``'s rows/columns.
    filtered_note : str, optional
        One line about ``filtered/`` for ``privacy.md``.
    """
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "privacy.json", document.to_dict())
    atomic_write_text(out_dir / "distances.tsv", distances_tsv(result, synth_files, train_ids))
    atomic_write_bytes(out_dir / "nearest_pairs.png", figures.figure_nearest_pairs(pairs))
    atomic_write_bytes(out_dir / "distance_histogram.png", figures.figure_distance_histogram(result))
    atomic_write_text(out_dir / "privacy.md", privacy_markdown(document, filtered_note))


def distances_tsv(result: PrivacyResult, synth_files: Sequence[str], train_ids: Sequence[str]) -> str:
    """One row per synthetic image: nearest training image and distance in each space, and the flag."""
    pix, feat = result.spaces["pixel"], result.spaces["feature"]
    lines = ["file\tnearest_train_pixel\tpixel_distance\tnearest_train_feature\tfeature_distance\tflagged"]
    for i, name in enumerate(synth_files):
        jp, jf = int(pix.synth_to_train[i].argmin()), int(feat.synth_to_train[i].argmin())
        lines.append(f"{name}\t{train_ids[jp]}\t{pix.synth_to_train[i, jp]:.6f}\t{train_ids[jf]}\t"
                     f"{feat.synth_to_train[i, jf]:.6f}\t{int(result.flagged[i])}")
    return "\n".join(lines) + "\n"


def write_filtered_set(out_dir: Path, synth, flagged: np.ndarray, synth_files: Sequence[str], source: str | Path,
                       percentile: float) -> str:
    """Write ``out_dir/filtered``: the synthetic set minus the flagged images. Returns a one-line note.

    Parameters
    ----------
    synth : ImageSet
        The audited set.
    flagged : np.ndarray
        bool [N], the near-copies to leave out.
    synth_files : sequence of str
        [N] names of the images (recorded as each kept image's ``source_file``).
    source : path
        The audited folder, recorded in the filtered set's metadata.
    percentile : float
        The audit's percentile, recorded too.
    """
    from brainsynth.imageset import write_image_set

    keep = np.flatnonzero(~flagged)
    removed = [synth_files[i] for i in np.flatnonzero(flagged)]
    if len(keep) == 0:
        log.warning("every synthetic image was flagged; no filtered set written")
        return "Every synthetic image was flagged, so no filtered set was written."
    records = []
    for i in keep:
        rec = {k: v for k, v in synth.records[i].items() if k not in ("file", "index")}
        rec["source_file"] = synth_files[i]
        records.append(rec)
    # Keep the generator's provenance, drop what write_image_set recomputes, and say what was done.
    meta = {k: v for k, v in synth.meta.items() if k not in ("synthetic", "format", "image_size", "n_images", "counts")}
    meta["privacy_filter"] = {
        "tool": f"brainsynth {__version__} audit",
        "source": str(Path(source)),
        "percentile": float(percentile),
        "n_removed": len(removed),
        "removed": removed,
    }
    write_image_set(out_dir / "filtered", synth.images[keep], records, synthetic=synth.synthetic,
                    fmt=synth.meta.get("format", "png"), extra_meta=meta)
    return f"`filtered/` holds the {len(keep)} synthetic images that were not flagged ({len(removed)} removed)."


def summary_paragraph(summary: PrivacySummary, out: str | Path | None = None) -> str:
    """One paragraph for the terminal."""
    text = (
        f"Privacy audit of {summary.n_synthetic} synthetic images against {summary.n_train} training and "
        f"{summary.n_holdout} held-out real images: {len(summary.flagged)} flagged as near-copies "
        f"(memorisation rate {fmt_pct(summary.memorization_rate)}; threshold = percentile {summary.percentile:g} of "
        f"the held-out distances, which {fmt_pct(summary.holdout_flag_rate)} of held-out images fall below). "
        f"Authentic share {fmt_pct(summary.authenticity)} (held-out reference "
        f"{fmt_pct(summary.authenticity_by_space.pixel.holdout)}); membership-inference AUC "
        f"{fmt(summary.mia_auc)} (0.5 = no leak)."
    )
    return text + (f" Details in {out}." if out is not None else "")


N_FLAGGED_LISTED = 20
"""Flagged images named in ``privacy.md``; the rest are in ``privacy.json``."""


def privacy_markdown(document: AuditReport, filtered_note: str | None = None) -> str:
    """``privacy.md``: what was measured, the numbers, and what they do and do not prove."""
    s = document.privacy
    lines = ["# Privacy audit of a synthetic image set", ""]
    if document.simulated:
        lines += ["> **SIMULATED cohort**: these images come from a simulated cohort, not from patients.", ""]
    lines += [
        "## What was measured",
        "",
        f"The generator was trained on {s.n_train} real training images. We compared each of the "
        f"{s.n_synthetic} synthetic images with every training image and asked: is it closer to some training "
        f"image than real images of *other people* are? As the reference we used {s.n_holdout} real images "
        "the generator never saw (held-out subjects).",
        "",
        f"- **Near-copies (memorisation).** A synthetic image is flagged when it is closer to a training image than "
        f"all but {s.percentile:g}% of the held-out images are. Closeness is measured on the pixels (allowing a "
        f"shift of up to {MAX_SHIFT} pixels) and on image features ({features_line(document.features)}); "
        "either one is enough to flag.",
        "- **Authenticity.** The share of synthetic images that are not closer to their nearest training image than "
        "that image is to other subjects' images.",
        "- **Membership inference.** Could an attacker holding the synthetic set tell which real images were used for "
        "training? We score each real image by how close the nearest synthetic image is; an AUC of 0.5 means "
        "training and held-out images cannot be told apart, 1.0 means they can always be told apart.",
        "",
        "## Results",
        "",
        "| measure | value | reading |",
        "|---|---|---|",
        f"| near-copies flagged | {len(s.flagged)} of {s.n_synthetic} ({fmt_pct(s.memorization_rate)}) | "
        f"by chance about {s.percentile:g}% (held-out images flagged by the same rule: "
        f"{fmt_pct(s.holdout_flag_rate)}) |",
        f"| authentic share | {fmt_pct(s.authenticity)} | held-out real images score "
        f"{fmt_pct(s.authenticity_by_space.pixel.holdout)}; much lower means copying |",
        f"| membership-inference AUC | {fmt(s.mia_auc)} | 0.5 = no leak |",
        f"| subject-level AUC | {fmt(s.mia_auc_subject)} | per person; few subjects, so coarse |",
        "",
    ]
    if s.flagged:
        lines += ["Flagged images (closest first):", ""]
        lines += [f"- `{e.file}`: nearest training image `{e.train_id}`, pixel distance {e.distance:.4f}"
                  for e in s.flagged[:N_FLAGGED_LISTED]]
        if len(s.flagged) > N_FLAGGED_LISTED:
            lines.append(f"- ... and {len(s.flagged) - N_FLAGGED_LISTED} more (see privacy.json)")
        lines.append("")
    if filtered_note:
        lines += [filtered_note, ""]
    lines += [
        "## What this does and does not prove",
        "",
        "- A low near-copy rate shows the synthetic images are not pixel or feature copies of training slices. It "
        "does **not** prove that no individual can be recognised: copying of a small region, of anatomy that is "
        "unique to one person, or of information spread over many images is not measured.",
        "- The threshold is calibrated on held-out real images, so about "
        f"{s.percentile:g}% of innocent images are expected to be flagged too.",
        "- Slices of one person are strongly correlated: per-image numbers count each person many times, and the "
        "per-subject AUC rests on very few subjects.",
        "- Training and held-out subjects may differ for reasons unrelated to the generator (diagnosis mix, scanner), "
        "which moves the AUC away from 0.5 on its own.",
        "- Formal guarantees require a differentially private training method; this audit is an empirical check.",
        "",
        "Figures: `nearest_pairs.png` (the closest synthetic-training pairs), `distance_histogram.png`. "
        "Per-image distances: `distances.tsv`. All numbers: `privacy.json`.",
        "",
    ]
    return "\n".join(lines)
