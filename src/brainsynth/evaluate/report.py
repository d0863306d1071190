"""The human-readable evaluation report: ``report.json``, ``report.md`` and ``report.html``.

Every table is built once as a :class:`Table` (plain strings) and rendered three ways: plain
text for the terminal, Markdown and HTML. The paper's numbers live in :data:`PAPER_TABLE1`
and the targets in :data:`TARGETS`; nothing else restates them.

The report dict is written by :func:`brainsynth.evaluate.evaluate`; every key below the top
level is read defensively and a missing number is shown as ``n/a``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brainsynth import LABELS
from brainsynth.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text

log = logging.getLogger("brainsynth.report")

PAPER_TABLE1 = {
    "PGGAN": {"sensitivity": 0.762, "specificity": 0.712, "hm": 0.736},
    "DCGAN": {"sensitivity": 0.584, "specificity": 0.613, "hm": 0.598},
    "Real data": {"sensitivity": 0.883, "specificity": 0.885, "hm": 0.883},
}
"""GAN-train results of Alam, Hossain & Kobashi, Table 1 (SVM on VGG-16 features, ADHD positive)."""

TARGETS = {
    "pggan_share_of_real_hm": 0.85,  # PGGAN HM must reach this share of the real-data HM
    "max_memorization_rate": 0.01,  # share of synthetic images flagged as near-copies
}

REAL_KEY = "real"
"""Key of the real-on-real baseline in ``report["gan_train"]``."""

METRICS = ("sensitivity", "specificity", "hm")
METRIC_HEADERS = {"sensitivity": "Sen", "specificity": "Spe", "hm": "HM"}
SIMULATED_BANNER = (
    "SIMULATED cohort: these numbers come from a simulated cohort (brainsynth phantom), not from patients; "
    "they test the method, not any clinical claim."
)
N_SAMPLES_PER_CLASS = 8


# --- reading the report dict ----------------------------------------------------------------

def display_name(key: str) -> str:
    """``"pggan"`` -> ``"PGGAN"``, ``"real"`` -> ``"Real data"`` (the paper's row names)."""
    if key.lower() == REAL_KEY:
        return "Real data"
    upper = key.upper()
    return upper if upper in PAPER_TABLE1 else key


def _find_key(section: Mapping[str, Any], wanted: str) -> str | None:
    """The key of ``section`` equal to ``wanted`` ignoring case, or ``None``."""
    for key in section:
        if key.lower() == wanted.lower():
            return key
    return None


def ordered_names(section: Mapping[str, Any]) -> list[str]:
    """PGGAN first, DCGAN second, other synthetic sets as given, the real baseline last."""
    keys = list(section)

    def rank(key: str) -> int:
        return {"pggan": 0, "dcgan": 1, REAL_KEY: 3}.get(key.lower(), 2)

    return sorted(keys, key=lambda k: (rank(k), keys.index(k)))


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` for anything missing, non-numeric or NaN."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, or ``n/a``."""
    x = _number(value)
    return "n/a" if x is None else f"{x:.{digits}f}"


def fmt_pct(value: Any) -> str:
    x = _number(value)
    return "n/a" if x is None else f"{100 * x:.1f}%"


def fmt_ci(value: Any, ci: Any, digits: int = 3) -> str:
    """``"0.762 [0.700, 0.810]"``; the interval is left out when absent."""
    text = fmt(value, digits)
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_number(c) is not None for c in ci):
        text += f" [{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"
    return text


def features_line(report: Mapping[str, Any]) -> str:
    """One line saying how images became features (every feature-based number depends on it)."""
    f = report.get("features")
    if not isinstance(f, Mapping):
        return "features: n/a"
    parts = [f"{f.get('name', 'n/a')}"]
    if f.get("weights"):
        parts[0] += f" (weights {f['weights']})"
    if f.get("layer"):
        parts.append(f"layer {f['layer']}")
    if f.get("input_size"):
        parts.append(f"input {f['input_size']} px")
    if f.get("resize"):
        parts.append(f"{f['resize']} resize")
    if f.get("channel_mapping"):
        parts.append(f"channels: {f['channel_mapping']}")
    if f.get("precision"):
        parts.append(str(f["precision"]))
    return "features: " + ", ".join(parts)


# --- tables ---------------------------------------------------------------------------------

@dataclass
class Table:
    """A table of plain strings, rendered by :func:`to_text`, :func:`to_markdown`, :func:`to_html`."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def _level(entry: Mapping[str, Any], level: str) -> Mapping[str, Any]:
    """The slice- or subject-level block of a GAN-train entry (slice falls back to the top level)."""
    block = entry.get(level)
    if isinstance(block, Mapping):
        return block
    return entry if level == "slice" else {}


def _classifier_table(section: Mapping[str, Any], title: str, *, with_paper: bool) -> Table:
    headers = ["Training data" if with_paper else "Synthetic set"]
    headers += [f"{METRIC_HEADERS[m]} [95% CI]" for m in METRICS]
    if with_paper:
        headers += [f"paper {METRIC_HEADERS[m]}" for m in METRICS]
    headers += [f"subject {METRIC_HEADERS[m]}" for m in METRICS] + ["n"]
    rows = []
    for key in ordered_names(section):
        entry = section[key] if isinstance(section[key], Mapping) else {}
        sl, subj = _level(entry, "slice"), _level(entry, "subject")
        row = [display_name(key)]
        row += [fmt_ci(sl.get(m), _get(sl, "ci", m)) for m in METRICS]
        if with_paper:
            paper = PAPER_TABLE1.get(display_name(key), {})
            row += [fmt(paper.get(m)) for m in METRICS]
        row += [fmt(subj.get(m)) for m in METRICS]
        n_subjects = subj.get("n_groups", subj.get("n"))
        row.append(f"{sl.get('n', 'n/a')}" + (f" / {n_subjects}" if n_subjects is not None else ""))
        rows.append(row)
    return Table(title, headers, rows)


def table1(report: Mapping[str, Any]) -> Table:
    """GAN-train in the layout of the paper's Table 1, with the paper's numbers beside ours."""
    t = _classifier_table(report.get("gan_train") or {}, "GAN-train (paper Table 1): SVM trained on each set, "
                          "tested on the real test split", with_paper=True)
    t.notes = [
        "Slice level, with 95% bootstrap CIs over test subjects; subject level = mean SVM decision score per "
        "subject. n = test images / subjects. ADHD is the positive class.",
        features_line(report),
    ]
    return t


def gan_test_table(report: Mapping[str, Any]) -> Table:
    t = _classifier_table(report.get("gan_test") or {}, "GAN-test: SVM trained on real training images, tested "
                          "on each synthetic set", with_paper=False)
    t.notes = ["Far above the real-data GAN-train score hints at memorisation; far below at unrealistic images.",
               features_line(report)]
    return t


def fidelity_table(report: Mapping[str, Any]) -> Table:
    section = report.get("fidelity") or {}
    labels_shown = [lbl for lbl in LABELS]
    headers = ["Synthetic set", "FID", "KID (mean +/- std)", "SWD avg (x1e3)"]
    headers += [f"MS-SSIM {lbl} (synth / real)" for lbl in labels_shown]
    headers += ["Precision", "Recall", "Density", "Coverage"]
    rows = []
    for key in ordered_names(section):
        e = section[key] if isinstance(section[key], Mapping) else {}
        kid = fmt(e.get("kid_mean"), 4)
        if _number(e.get("kid_std")) is not None:
            kid += f" +/- {fmt(e.get('kid_std'), 4)}"
        row = [display_name(key), fmt(e.get("fid"), 2), kid, fmt(_get(e, "swd", "avg"), 2)]
        row += [f"{fmt(_get(e, 'ms_ssim', 'synthetic', lbl))} / {fmt(_get(e, 'ms_ssim', 'real', lbl))}"
                for lbl in labels_shown]
        row += [fmt(e.get(m)) for m in ("precision", "recall", "density", "coverage")]
        rows.append(row)
    return Table("Fidelity and diversity", headers, rows, [
        "FID/KID/P/R/D/C on the features below, against the real training images; SWD on pixels (Laplacian "
        "pyramid, 7x7 patches); MS-SSIM between random pairs within a class (lower = more diverse).",
        features_line(report),
    ])


def privacy_table(report: Mapping[str, Any]) -> Table:
    section = report.get("privacy") or {}
    headers = ["Synthetic set", "memorisation rate", "flagged", "threshold pixel / feature", "authentic share "
               "(held-out ref.)", "MIA AUC", "MIA AUC subject"]
    rows = []
    for key in ordered_names(section):
        e = section[key] if isinstance(section[key], Mapping) else {}
        flagged = e.get("flagged")
        n_flagged = len(flagged) if isinstance(flagged, list) else None
        rows.append([
            display_name(key),
            fmt_pct(e.get("memorization_rate")),
            f"{n_flagged if n_flagged is not None else 'n/a'} of {e.get('n_synthetic', 'n/a')}",
            f"{fmt(_get(e, 'threshold', 'pixel'), 4)} / {fmt(_get(e, 'threshold', 'feature'), 4)}",
            f"{fmt_pct(e.get('authenticity'))} ({fmt_pct(_get(e, 'authenticity_by_space', 'pixel', 'holdout'))})",
            fmt(e.get("mia_auc")),
            fmt(e.get("mia_auc_subject")),
        ])
    percentiles = {fmt(_get(section[k], "percentile"), 2).rstrip("0").rstrip(".")
                   for k in section if isinstance(section[k], Mapping)}
    return Table("Privacy audit", headers, rows, [
        f"Near-copy: nearest-training distance below percentile {'/'.join(sorted(percentiles)) or 'n/a'} of the "
        "held-out real images' distances, in pixel (shift-tolerant) or feature space. MIA AUC 0.5 = no membership "
        "leak. Slices of one subject are correlated: per-image numbers count each subject many times.",
        features_line(report),
    ])


def timings_table(report: Mapping[str, Any]) -> Table | None:
    timings = report.get("timings")
    if not isinstance(timings, Mapping) or not timings:
        return None
    return Table("Timings", ["stage", "seconds"], [[str(k), fmt(v, 1)] for k, v in timings.items()])


def all_tables(report: Mapping[str, Any]) -> list[Table]:
    tables = [table1(report), gan_test_table(report), fidelity_table(report), privacy_table(report)]
    extra = timings_table(report)
    return tables + ([extra] if extra else [])


# --- targets --------------------------------------------------------------------------------

def _hm(report: Mapping[str, Any], name: str) -> float | None:
    section = report.get("gan_train") or {}
    key = _find_key(section, name)
    if key is None or not isinstance(section[key], Mapping):
        return None
    return _number(_level(section[key], "slice").get("hm"))


def check_targets(report: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Whether the reproduction targets hold.

    Returns
    -------
    dict
        name -> ``{"ok": bool or None, "text": str}``; ``ok`` is ``None`` when a number needed for
        the check is missing (not measured is not the same as missed). Names: ``"ordering"``
        (real HM >= PGGAN HM > DCGAN HM), ``"pggan_vs_real"`` (PGGAN HM >= 0.85 x real HM),
        ``"memorization"`` (PGGAN, the method reproduced, <= 1% near-copies; every audited set when
        there is no PGGAN entry; the text lists all sets).
    """
    real, pggan, dcgan = _hm(report, REAL_KEY), _hm(report, "pggan"), _hm(report, "dcgan")
    out: dict[str, dict[str, Any]] = {}

    if None in (real, pggan, dcgan):
        out["ordering"] = {"ok": None, "text": "real HM >= PGGAN HM > DCGAN HM: not checked (needs GAN-train HM of "
                                               "real, pggan and dcgan)"}
    else:
        ok = real >= pggan > dcgan
        out["ordering"] = {"ok": ok, "text": f"real HM >= PGGAN HM > DCGAN HM: {'met' if ok else 'MISSED'} "
                                             f"({real:.3f}, {pggan:.3f}, {dcgan:.3f})"}

    share = TARGETS["pggan_share_of_real_hm"]
    if None in (real, pggan):
        out["pggan_vs_real"] = {"ok": None, "text": f"PGGAN HM >= {share:g} x real HM: not checked "
                                                    "(needs GAN-train HM of real and pggan)"}
    else:
        ok = pggan >= share * real
        out["pggan_vs_real"] = {"ok": ok, "text": f"PGGAN HM >= {share:g} x real HM: {'met' if ok else 'MISSED'} "
                                                  f"({pggan:.3f} vs {share * real:.3f})"}

    limit = TARGETS["max_memorization_rate"]
    rates = {display_name(k): _number(_get(v, "memorization_rate"))
             for k, v in (report.get("privacy") or {}).items()}
    measured = {k: v for k, v in rates.items() if v is not None}
    judged = {k: v for k, v in measured.items() if k == "PGGAN"} or measured
    if not measured:
        out["memorization"] = {"ok": None, "text": f"memorisation rate <= {limit:.0%}: not checked (no privacy audit)"}
    else:
        ok = all(v <= limit for v in judged.values())
        listing = ", ".join(f"{k} {100 * v:.1f}%" for k, v in measured.items())
        out["memorization"] = {"ok": ok, "text": f"memorisation rate <= {limit:.0%}: {'met' if ok else 'MISSED'} "
                                                 f"({listing})"}
    return out


def targets_line(report: Mapping[str, Any]) -> str:
    """One sentence: which targets hold, which are missed, which could not be checked."""
    verdicts = check_targets(report)
    missed = [k for k, v in verdicts.items() if v["ok"] is False]
    head = "All targets met." if not missed and all(v["ok"] for v in verdicts.values()) else (
        f"Targets missed: {len(missed)} of {len(verdicts)}." if missed else "Some targets could not be checked.")
    return head + " " + "; ".join(v["text"] for v in verdicts.values()) + "."


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


def format_table1(report: Mapping[str, Any]) -> str:
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


# --- figures --------------------------------------------------------------------------------

def png_bytes(fig) -> bytes:
    """A matplotlib Figure rendered to PNG bytes (Agg, no global pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def montage(images: np.ndarray, cols: int = 4, gap: int = 1) -> np.ndarray:
    """Tile float [n, H, W] images into one [rows*(H+gap)-gap, cols*(W+gap)-gap] array (gaps white)."""
    n, h, w = images.shape
    rows = max(1, math.ceil(n / cols))
    canvas = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = img
    return canvas


def _pick(images: np.ndarray, labels: np.ndarray, label: str, n: int, seed: int = 0) -> np.ndarray:
    idx = np.flatnonzero(np.asarray(labels) == label)
    if len(idx) > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    return np.asarray(images[idx], dtype=np.float32)  # [<=n, H, W]


def figure_samples(real, synth, name: str, n: int = N_SAMPLES_PER_CLASS) -> bytes:
    """PNG bytes: per class, real training slices (left) beside synthetic images (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.3 * len(LABELS)))
    axes = fig.subplots(len(LABELS), 2, squeeze=False)
    for row, label in enumerate(LABELS):
        for col, (source, title) in enumerate(((real, f"real {label} (training)"), (synth, f"{name} {label}"))):
            ax = axes[row, col]
            ax.set_axis_off()
            chosen = _pick(source.images, source.labels, label, n)
            ax.set_title(title + f" ({len(chosen)} shown)", fontsize=9)
            if len(chosen):
                ax.imshow(montage(chosen), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.text(0.5, 0.5, "no images", ha="center", va="center")
    fig.tight_layout()
    return png_bytes(fig)


def read_stats(run_dir: str | Path) -> list[dict[str, Any]]:
    """The tick records of a run's ``stats.jsonl``; unreadable lines are skipped with a warning."""
    path = Path(run_dir) / "stats.jsonl"
    if not path.is_file():
        log.warning("%s: no stats.jsonl; the report has no training curves for this run", run_dir)
        return []
    records, bad = [], 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
    if bad:
        log.warning("%s: skipped %d unreadable lines (an interrupted write?)", path, bad)
    return records


def _series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(kimg shown, value) for the records that hold a number under ``key``."""
    xs, ys = [], []
    for i, rec in enumerate(records):
        y = _number(rec.get(key))
        if y is None:
            continue
        x = _number(rec.get("images_shown"))
        xs.append((x if x is not None else i) / 1000.0)
        ys.append(y)
    return np.asarray(xs), np.asarray(ys)


def figure_training_curves(records: Sequence[Mapping[str, Any]], name: str) -> bytes | None:
    """PNG bytes: D and G losses, and resolution (plus augmentation p if logged), vs kimg shown."""
    from matplotlib.figure import Figure

    losses = {k: _series(records, k) for k in ("loss_d", "loss_g")}
    if not any(len(x) for x, _ in losses.values()):
        return None
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_res = fig.subplots(1, 2)
    for key, (x, y) in losses.items():
        if len(x):
            ax_loss.plot(x, y, label=key, linewidth=1)
    ax_loss.set_xlabel("thousands of images shown")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title(f"{name}: losses", fontsize=9)
    ax_loss.legend(fontsize=7)
    x, res = _series(records, "res")
    if len(x):
        ax_res.step(x, res, where="post", label="resolution (px)")
        ax_res.set_yscale("log", base=2)
    ax_res.set_xlabel("thousands of images shown")
    ax_res.set_ylabel("resolution (px)")
    ax_res.set_title(f"{name}: growth", fontsize=9)
    x, p = _series(records, "augment_p")
    if len(x):
        twin = ax_res.twinx()
        twin.plot(x, p, color="tab:orange", linewidth=1, label="augment p")
        twin.set_ylabel("augmentation p")
    fig.tight_layout()
    return png_bytes(fig)


# --- writing --------------------------------------------------------------------------------

def _json_safe(obj: Any) -> Any:
    """Plain JSON types: numpy scalars and arrays converted, NaN/inf -> null (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "set"


def _data_lines(report: Mapping[str, Any]) -> list[str]:
    data = report.get("data")
    if not isinstance(data, Mapping):
        return []
    return [f"{k}: {v}" for k, v in data.items() if isinstance(v, (str, int, float, bool))]


def write_report(
    out_dir: str | Path,
    report: Mapping[str, Any],
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
    report : dict
        The evaluation results (see the module docstring of :mod:`brainsynth.evaluate`).
    real_train : ImageSet
        Real training images (float [N, H, W] in [0, 1]) and labels, shown beside the synthetic ones.
    synthetic : dict
        name -> :class:`brainsynth.imageset.ImageSet`.
    nearest_pairs : dict
        name -> pair dicts from :func:`brainsynth.evaluate.privacy.privacy_audit`.
    runs : dict
        name -> training RUN_DIR holding ``stats.jsonl`` (may be empty).
    """
    from brainsynth.evaluate.privacy import figure_nearest_pairs

    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "report.json", _json_safe(report))
    tables = all_tables(report)
    atomic_write_text(out_dir / "report.md", render_markdown(report, tables))

    figures: list[tuple[str, str, str, bytes]] = []  # (section, set name, caption, png)
    for name, images in synthetic.items():
        figures.append(("samples", name, f"{name}: samples per class beside real training slices",
                        figure_samples(real_train, images, name)))
    for name, pairs in nearest_pairs.items():
        if pairs:
            figures.append(("pairs", name, f"{name}: the closest synthetic-training pairs (top: synthetic, bottom: its "
                                     "nearest training slice; d = pixel distance)",
                            figure_nearest_pairs(pairs, title=f"{name}: closest synthetic-training pairs")))
    for name, run_dir in runs.items():
        png = figure_training_curves(read_stats(run_dir), name)
        if png is not None:
            figures.append(("training", name, f"{name}: training curves ({run_dir})", png))
    for section, name, _, png in figures:
        atomic_write_bytes(out_dir / "figures" / f"{section}_{_file_safe(name)}.png", png)
    atomic_write_text(out_dir / "report.html", render_html(report, tables, figures))


def render_markdown(report: Mapping[str, Any], tables: Sequence[Table] | None = None) -> str:
    """``report.md``: banner, targets, then every table with its features line."""
    tables = all_tables(report) if tables is None else tables
    lines = ["# brainsynth evaluation report", ""]
    if report.get("simulated"):
        lines += [f"> **{SIMULATED_BANNER}**", ""]
    lines += [f"brainsynth {report.get('brainsynth_version', 'n/a')}, created {report.get('created', 'n/a')}  ",
              *[f"{line}  " for line in _data_lines(report)], "", "## Targets", ""]
    lines += [f"- {v['text']}" for v in check_targets(report).values()]
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


def render_html(report: Mapping[str, Any], tables: Sequence[Table],
                figures: Sequence[tuple[str, str, str, bytes]]) -> str:
    """A self-contained page: inline CSS, figures as base64 data URIs, no external assets."""
    esc = html.escape
    body = ["<h1>brainsynth evaluation report</h1>"]
    if report.get("simulated"):
        body.append(f'<p class="banner">{esc(SIMULATED_BANNER)}</p>')
    body.append(f"<p>brainsynth {esc(str(report.get('brainsynth_version', 'n/a')))}, created "
                f"{esc(str(report.get('created', 'n/a')))}<br>{esc(features_line(report))}</p>")
    if _data_lines(report):
        body.append("<p>" + "<br>".join(esc(line) for line in _data_lines(report)) + "</p>")
    body.append("<h2>Targets</h2><ul>")
    for verdict in check_targets(report).values():
        cls = {True: "met", False: "missed"}.get(verdict["ok"], "unchecked")
        body.append(f'<li class="{cls}">{esc(verdict["text"])}</li>')
    body.append("</ul>")
    body.append("<h2>Results</h2>")
    body += [to_html(t) for t in tables]
    sections = {"samples": "Samples", "pairs": "Nearest training neighbours", "training": "Training curves"}
    for section, heading in sections.items():
        chosen = [(caption, png) for s, _, caption, png in figures if s == section]
        if not chosen:
            continue
        body.append(f"<h2>{esc(heading)}</h2>")
        body += [f"<figure>{_embed_png(png, caption)}<figcaption>{esc(caption)}</figcaption></figure>"
                 for caption, png in chosen]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<title>brainsynth evaluation report</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
