"""Every figure of the evaluation and the privacy audit, as PNG bytes.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, so
no global state and no display is needed. Writers (:mod:`brainsynth.evaluate.report.writers`) decide where the bytes go.
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from brainsynth import LABELS
from brainsynth.evaluate.report.typed_json import optional_number

if TYPE_CHECKING:  # the maths module imports torch; the type alone does not need it
    from brainsynth.evaluate.privacy.fold import PrivacyResult
    from brainsynth.evaluate.report.schema import PrivacyUtility

log = logging.getLogger("brainsynth.evaluate.report.figures")

N_SAMPLES_PER_CLASS = 8
"""Images per class and source in a sample grid."""


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


# --- samples ------------------------------------------------------------------------------

def _pick(images: np.ndarray, labels: np.ndarray, label: str, n: int, seed: int = 0) -> np.ndarray:
    idx = np.flatnonzero(np.asarray(labels) == label)
    if len(idx) > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, n, replace=False))
    return np.asarray(images[idx], dtype=np.float32)  # [<=n, H, W]


def figure_samples(real, synth, name: str, n: int = N_SAMPLES_PER_CLASS) -> bytes:
    """PNG bytes: per class, real training slices (left) beside synthetic images (right).

    ``real`` and ``synth`` are :class:`brainsynth.imageset.ImageSet` (float [N, H, W] in [0, 1]).
    """
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


# --- privacy ------------------------------------------------------------------------------

def _short_transform(t: Mapping[str, Any]) -> str:
    parts = ["mirror"] if t["mirrored"] else []
    if abs(t["rotation_deg"]) >= 0.05:
        parts.append(f"{t['rotation_deg']:+.1f}deg")
    if abs(t["scale"] - 1) >= 0.0005:
        parts.append(f"x{t['scale']:.2f}")
    if any(abs(d) >= 0.05 for d in t["shift_px"]):
        parts.append(f"({t['shift_px'][0]:+.0f},{t['shift_px'][1]:+.0f})px")
    return " ".join(parts) or "no move"


def figure_nearest_pairs(pairs: Sequence[Mapping[str, Any]], title: str = "closest synthetic-training pairs") -> bytes:
    """PNG bytes: each pair as a column: synthetic, its training slice as aligned, and their difference.

    ``pairs`` as from :func:`brainsynth.evaluate.privacy.fold.nearest_pairs` (``synthetic_image``,
    ``aligned_image``, ``transform``, ``distance``, ``threshold``, ...). The difference is
    synthetic minus aligned, red where the synthetic image is brighter.
    """
    from matplotlib.figure import Figure

    n = max(1, len(pairs))
    fig = Figure(figsize=(1.7 * n, 5.6))
    fig.suptitle(title, fontsize=9)
    axes = fig.subplots(3, n, squeeze=False)
    for col in range(n):
        for row in range(3):
            axes[row, col].set_axis_off()
        if col >= len(pairs):
            continue
        p = pairs[col]
        diff = np.asarray(p["synthetic_image"]) - np.asarray(p["aligned_image"])  # [H, W]
        axes[0, col].imshow(p["synthetic_image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[0, col].set_title(f"{p['synthetic_file']}\nd={p['distance']:.3f} (thr {p['threshold']:.3f})"
                               + (" FLAG" if p["flagged"] else ""), fontsize=6)
        axes[1, col].imshow(p["aligned_image"], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, col].set_title(f"train {p['train_id']}\n{_short_transform(p['transform'])}", fontsize=6)
        axes[2, col].imshow(diff, cmap="RdBu_r", vmin=-0.5, vmax=0.5, interpolation="nearest")
        axes[2, col].set_title(f"difference (max {np.abs(diff).max():.2f})", fontsize=6)
    return png_bytes(fig)


def figure_distance_histogram(result: PrivacyResult) -> bytes:
    """PNG bytes: distance ratios (nearest training image / nearest of another subject) of synthetic vs
    held-out half-B images, per space, with each brain-area band's threshold marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    half_b = result.half_b
    for ax, (space, d) in zip(fig.subplots(1, len(result.spaces)), result.spaces.items()):
        synth, check = d.synth_ratio, d.holdout_ratio[half_b]
        values = np.r_[synth, check]
        values = values[np.isfinite(values)]
        bins = np.linspace(float(values.min()), float(values.max()) + 1e-9, 40) if len(values) else 10
        ax.hist(check[np.isfinite(check)], bins=bins, alpha=0.6, density=True,
                label=f"held-out half B (n={len(check)})")
        ax.hist(synth[np.isfinite(synth)], bins=bins, alpha=0.6, density=True, label=f"synthetic (n={len(synth)})")
        for b, threshold in enumerate(result.calibration.band_thresholds(space)):
            ax.axvline(threshold, color="red", linestyle="--", linewidth=0.8,
                       label="band thresholds" if b == 0 else None)
        ax.set_xlabel(f"{space} distance ratio: nearest training image / nearest of another subject")
        ax.set_ylabel("density")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)


# --- privacy and utility -----------------------------------------------------------------

def _error(value: float, bounds) -> list[list[float]] | None:
    """Matplotlib's asymmetric ``[[below], [above]]`` from an interval, or None without one."""
    if bounds is None or bounds[0] is None or bounds[1] is None:
        return None
    return [[max(0.0, value - bounds[0])], [max(0.0, bounds[1] - value)]]


def figure_privacy_utility(summary: PrivacyUtility) -> bytes:
    """PNG bytes of :func:`draw_privacy_utility`."""
    return png_bytes(draw_privacy_utility(summary))


def draw_privacy_utility(summary: PrivacyUtility):
    """A Figure: each generator at (memorisation rate in %, GAN-train HM), both with 95% intervals.

    Up is more useful, left is more private. The real training images' HM is the dashed
    horizontal line (its interval shaded); the audit's held-out false-flag rate, what a generator
    that copies nothing would show, the dotted vertical line. A set without a GAN-train HM (or
    with no audited image) is named in a note rather than drawn at a made-up place. Returned
    undrawn so that tests can read the plotted values back.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    if summary.real_hm is not None:
        ax.axhline(summary.real_hm, color="0.3", linestyle="--", linewidth=1,
                   label=f"real training images (HM {summary.real_hm:.3f})")
        lo_hi = summary.real_hm_ci
        if lo_hi and lo_hi[0] is not None and lo_hi[1] is not None:
            ax.axhspan(lo_hi[0], lo_hi[1], color="0.85", zorder=0)
    false_flags = [p.false_flag_rate for p in summary.points.values() if p.false_flag_rate is not None]
    if false_flags:  # the rule is calibrated on real images alone, so the sets share one rate; the largest if not
        ax.axvline(100 * max(false_flags), color="0.3", linestyle=":", linewidth=1,
                   label=f"held-out false-flag rate ({100 * max(false_flags):.1f}%)")
    notes = 0
    for i, (name, p) in enumerate(summary.points.items()):
        color = f"C{i}"
        missing = "GAN-train HM" if p.hm is None else "audited images" if p.memorization_rate is None else None
        if missing:
            ax.annotate(f"{name}: no {missing}", (0.02, 0.04 + 0.06 * notes), xycoords="axes fraction", fontsize=8,
                        color=color)
            notes += 1
            continue
        x = 100 * p.memorization_rate
        xerr = _error(x, tuple(None if b is None else 100 * b for b in p.memorization_ci))
        ax.errorbar([x], [p.hm], xerr=xerr, yerr=_error(p.hm, p.hm_ci), fmt="o", color=color, capsize=4,
                    markersize=7, label=f"{name} ({p.flagged}/{p.n_synthetic} flagged)")
        ax.annotate(name, (x, p.hm), xytext=(6, 6), textcoords="offset points", fontsize=9, color=color)
    ax.set_xlabel("memorisation rate: synthetic images flagged as near-copies (%)  ← more private")
    ax.set_ylabel("GAN-train HM (SVM trained on synthetic, tested on real)  ↑ more useful")
    right = ax.get_xlim()[1]
    ax.set_xlim(-0.03 * right, right)  # a point at 0 % stays visible
    ax.set_ylim(0, 1.02)
    ax.set_title("privacy and utility of each generator (95% intervals)", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# --- training curves ----------------------------------------------------------------------

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
        # A tick record is free-form JSON written by training: a key may be absent or hold null.
        y = optional_number(rec.get(key))
        if y is None:
            continue
        x = optional_number(rec.get("images_shown"))
        xs.append((x if x is not None else i) / 1000.0)
        ys.append(y)
    return np.asarray(xs), np.asarray(ys)


def figure_training_curves(records: Sequence[Mapping[str, Any]], name: str) -> bytes | None:
    """PNG bytes: D and G losses (the diffusion model's denoising loss), and resolution (plus
    augmentation p if logged), vs kimg shown.

    ``None`` when the records hold no losses.
    """
    from matplotlib.figure import Figure

    losses = {k: _series(records, k) for k in ("loss_d", "loss_g", "loss_mse")}
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
