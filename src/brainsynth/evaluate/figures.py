"""Every figure of the evaluation and the privacy audit, as PNG bytes.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with the Agg canvas: no pyplot, so
no global state and no display is needed. Writers (:mod:`.writers`) decide where the bytes go.
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
from brainsynth.evaluate.typed_json import optional_number

if TYPE_CHECKING:  # the maths module imports torch; the type alone does not need it
    from brainsynth.evaluate.privacy import PrivacyResult

log = logging.getLogger("brainsynth.evaluate.figures")

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

    ``pairs`` as from :func:`brainsynth.evaluate.privacy.nearest_pairs` (``synthetic_image``,
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
    """PNG bytes: D and G losses, and resolution (plus augmentation p if logged), vs kimg shown.

    ``None`` when the records hold no losses.
    """
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
