"""The files of ``brainsynth audit`` and of its self-test, all from typed documents.

``brainsynth audit``: ``privacy.json``, ``privacy.md``, ``distances.tsv`` and two figures
(:func:`write_audit`), plus ``filtered/`` on request (:func:`write_filtered_set`).
``brainsynth audit --selftest``: the terminal table (:func:`selftest_table`) and ``selftest.md``.

``privacy.md`` is written for an ethics board: what was measured, the numbers with their
intervals, the closest pairs after alignment with the transform found, and what the audit does
not prove. Every file is written atomically into a folder the caller stages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from brainsynth import __version__
from brainsynth.evaluate.report import figures
from brainsynth.evaluate.privacy.fold import PrivacyResult
from brainsynth.evaluate.report.schema import AuditReport, PrivacySummary, SelfTestReport
from brainsynth.evaluate.report.tables import (
    Table,
    features_line,
    fmt,
    fmt_ci,
    fmt_p,
    fmt_pct,
    fmt_rate_ci,
    to_markdown,
    to_text,
    transform_text,
)
from brainsynth.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text
from brainsynth.shareable import strip_local_paths

N_FLAGGED_LISTED = 20
"""Flagged images named in ``privacy.md``; the rest are in ``privacy.json``."""

SIMULATED_NOTE = "> **SIMULATED cohort**: these images come from a simulated cohort, not from patients."


def write_audit(out_dir: str | Path, document: AuditReport, result: PrivacyResult, pairs: Sequence[Mapping[str, Any]],
                synth_files: Sequence[str], filtered_note: str | None = None) -> None:
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
        The closest pairs with their images, from :func:`brainsynth.evaluate.privacy.fold.nearest_pairs`.
    synth_files : sequence of str
        [N] synthetic file names, in the order of ``result``'s rows.
    filtered_note : str, optional
        One line about ``filtered/`` for ``privacy.md``.
    """
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "privacy.json", document.to_dict())
    atomic_write_text(out_dir / "distances.tsv", distances_tsv(result, synth_files))
    atomic_write_bytes(out_dir / "nearest_pairs.png", figures.figure_nearest_pairs(pairs))
    atomic_write_bytes(out_dir / "distance_histogram.png", figures.figure_distance_histogram(result))
    atomic_write_text(out_dir / "privacy.md", privacy_markdown(document, filtered_note))


def distances_tsv(result: PrivacyResult, synth_files: Sequence[str]) -> str:
    """One row per synthetic image: band, nearest training image, distance, ratio and threshold per space, the flag."""
    band = result.calibration.band(result.synth_area)
    header = ["file", "band"]
    for space in ("pixel", "feature"):
        header += [f"nearest_train_{space}", f"{space}_distance", f"{space}_ratio", f"{space}_threshold"]
    lines = ["\t".join(header + ["flagged"])]
    for i, name in enumerate(synth_files):
        row = [name, str(int(band[i]))]
        for space in ("pixel", "feature"):
            d = result.spaces[space]
            j = int(d.synth.index[i])
            row += [result.train_ids[j], f"{d.synth.distance[i]:.6f}", f"{d.synth_ratio[i]:.6f}",
                    f"{result.calibration.band_thresholds(space)[band[i]]:.6f}"]
        lines.append("\t".join(row + [str(int(result.flagged[i]))]))
    return "\n".join(lines) + "\n"


FILTER_LIMIT = ("The filter removes the synthetic images that look like a (re-acquired) copy of a training slice. It "
                "does not stop membership inference: the images kept were made by the same generator, and can still "
                "let someone tell who was in its training set (see the membership result of the audit); nor does it "
                "give any differential-privacy guarantee.")
"""What the near-copy filter does and does not do, written into every filtered set and report."""


def write_filtered_set(out_dir: Path, synth, flagged: np.ndarray, synth_files: Sequence[str], source_sha256: str,
                       summary: PrivacySummary) -> str:
    """Write ``out_dir/filtered``: the synthetic set minus EVERY flagged image. Returns a one-line note.

    The filtered set is what gets shared, so its metadata names the audited set by the SHA-256 of
    its pixels, never by its path (:mod:`brainsynth.shareable`), and says what was dropped, by
    which rule, and what the filter does not do (:data:`FILTER_LIMIT`).

    Parameters
    ----------
    synth : ImageSet
        The audited set.
    flagged : np.ndarray
        bool [N], the near-copies to leave out.
    synth_files : sequence of str
        [N] names of the images (recorded as each kept image's ``source_file``).
    source_sha256 : str
        Fingerprint of the audited images.
    summary : PrivacySummary
        The audit of the set: its rule, calibration level and membership result are recorded.
    """
    from brainsynth.imageset import write_image_set

    keep = np.flatnonzero(~flagged)
    removed = [synth_files[i] for i in np.flatnonzero(flagged)]
    if len(keep) == 0:
        return "Every synthetic image was flagged, so no filtered set was written."
    records = []
    for i in keep:
        rec = {k: v for k, v in synth.records[i].items() if k not in ("file", "index")}
        rec["source_file"] = synth_files[i]
        records.append(rec)
    half_b = summary.membership.half_b
    # Keep the generator's provenance, drop what write_image_set recomputes, and say what was done.
    meta = {k: v for k, v in synth.meta.items() if k not in ("synthetic", "format", "image_size", "n_images", "counts")}
    meta["privacy_filter"] = {
        "tool": f"brainsynth {__version__} audit",
        "source_images_sha256": source_sha256,
        "rule": summary.rules.flagged,
        "percentile": float(summary.percentile),
        "n_source": len(flagged),
        "n_removed": len(removed),
        "n_kept": len(keep),
        "removed": removed,
        "membership_of_source_half_b": {"auc": half_b.auc, "p_value": half_b.p_value},
        "does_not": FILTER_LIMIT,
    }
    write_image_set(out_dir / "filtered", synth.images[keep], records, synthetic=synth.synthetic,
                    fmt=synth.meta.get("format", "png"), extra_meta=strip_local_paths(meta))
    return (f"`filtered/` holds the {len(keep)} synthetic images that were not flagged ({len(removed)} removed). "
            + FILTER_LIMIT)


def summary_paragraph(summary: PrivacySummary, out: str | Path | None = None) -> str:
    """One paragraph for the terminal."""
    text = (
        f"Privacy audit of {summary.n_synthetic} synthetic images against {summary.n_train} training and "
        f"{summary.n_holdout} held-out real images: {summary.memorization.k} flagged as near-copies (memorisation "
        f"rate {fmt_rate_ci(summary.memorization.rate, summary.memorization.ci)}); held-out half B, which did not "
        f"set the thresholds, has {fmt_rate_ci(summary.false_flags.rate, summary.false_flags.ci)} false flags. "
        f"Membership-inference AUC {fmt_ci(summary.mia_auc, summary.mia_ci)}, {fmt_p(summary.mia_p_value)} "
        "(0.5 = no leak)."
    )
    return text + (f" Details in {out}." if out is not None else "")


def _pairs_table(s: PrivacySummary) -> Table:
    rows = [[p.synthetic_file, p.train_id, fmt(p.distance, 4), fmt(p.ratio, 3), fmt(p.threshold, 3),
             "yes" if p.flagged else "no", transform_text(p.transform)] for p in s.nearest_pairs]
    return Table("The closest pairs after alignment", ["synthetic", "training slice", "distance", "ratio",
                                                       "ratio threshold", "flagged", "transform found"], rows)


def _membership_table(s: PrivacySummary) -> Table:
    rows = []
    for key, a in s.membership.attacks.items():
        name = key + (" (headline)" if key == s.membership.headline else "")
        rows.append([name, fmt_ci(a.auc, a.ci), fmt_p(a.p_value) + ("" if a.p_value_exact else " (random)"),
                     f"{a.n_members} / {a.n_nonmembers}", f"{a.n_member_subjects} / {a.n_nonmember_subjects}"])
    return Table("Membership inference", ["attack", "AUC [95% CI]", "p (subjects permuted)",
                                          "scored: members / non-members", "subjects"], rows)


def _calibration_words(cal) -> str:
    """``"80 calibration images: held-out half A (s5) and 60 training images ..."``."""
    text = f"{cal.n_calibration} calibration images: held-out half A ({', '.join(cal.half_a_subjects)})"
    if cal.training_images:
        text += f" and {cal.training_images} training images, each scored against the other training subjects"
    return text


def calibration_table(bands, title: str = "Thresholds per brain-area band") -> Table:
    rows = []
    for k, b in enumerate(bands):
        area = f"{fmt_pct(b.area_low) if b.area_low is not None else '0%'} - " \
               f"{fmt_pct(b.area_high) if b.area_high is not None else '100%'}"
        rows.append([str(k), area, fmt(b.threshold.pixel, 3), fmt(b.threshold.feature, 3), str(b.n_calibration),
                     f"{b.half_b_flagged} of {b.n_half_b}", f"{b.synthetic_flagged} of {b.n_synthetic}"])
    return Table(title, ["band", "brain area", "pixel ratio threshold", "feature ratio threshold", "calibration images",
                         "half B flagged", "synthetic flagged"], rows)


def privacy_markdown(document: AuditReport, filtered_note: str | None = None) -> str:
    """``privacy.md``: what was measured, the numbers, the closest pairs, and what they do not prove."""
    s, cal = document.privacy, document.privacy.calibration
    lines = ["# Privacy audit of a synthetic image set", ""]
    if document.simulated:
        lines += [SIMULATED_NOTE, ""]
    lines += [
        "## What was measured",
        "",
        f"The generator was trained on {s.n_train} real training images. Each of the {s.n_synthetic} synthetic "
        "images was compared with every training image, asking: is it closer to some training image than real images "
        f"of *other people* are? The reference is {s.n_holdout} real images of people the generator never saw "
        f"(held-out subjects), split in two halves by person: half A ({', '.join(cal.half_a_subjects)}) sets the "
        f"thresholds, half B ({', '.join(cal.half_b_subjects)}) checks them.",
        "",
        "- **Near-copies (memorisation).** A synthetic image is flagged when it is much closer to one training "
        "person's slice than to any slice of every other training person: the distance to its nearest training "
        "image divided by the distance to the nearest image of another person (the distance ratio) is smaller than "
        f"for all but {s.percentile:g}% of the calibration images (per brain-area band). An exact copy has ratio 0, "
        f"a new image a ratio near 1. The thresholds were set on {_calibration_words(cal)}. Distance on the pixels: "
        f"{s.distances.pixel}. Distance on image features: "
        f"{s.distances.feature} ({features_line(document.features)}). Either space is enough to flag.",
        "- **False flags.** The same rule applied to half B, real images that played no part in setting it: the "
        "share a generator that copies nothing would score.",
        "- **Authenticity.** The share of synthetic images not closer to their nearest training image than that image "
        "is to other people's images.",
        "- **Membership inference.** Could someone holding the synthetic set tell which people were in the training "
        "set? Each real image is scored by how close the nearest synthetic image is; AUC 0.5 means training and "
        "held-out people cannot be told apart, 1.0 that they always can. The headline attack was fixed before "
        "looking at the data; the p-value comes from shuffling who counts as a training subject.",
        "",
        "## Results",
        "",
        "| measure | value | reading |",
        "|---|---|---|",
        f"| near-copies flagged | {s.memorization.k} of {s.memorization.n}, "
        f"{fmt_rate_ci(s.memorization.rate, s.memorization.ci)} | compare with the false flags below |",
        f"| false flags on half B | {s.false_flags.k} of {s.false_flags.n}, "
        f"{fmt_rate_ci(s.false_flags.rate, s.false_flags.ci)} | what copying nothing scores |",
        f"| near-copies beyond chance | {fmt_pct(s.excess_memorization)} | near-copies minus false flags |",
        f"| membership-inference AUC (headline) | {fmt_ci(s.mia_auc, s.mia_ci)}, {fmt_p(s.mia_p_value)} | 0.5 = no "
        "leak |",
        f"| authentic share | {fmt_pct(s.authenticity)} | held-out real images score "
        f"{fmt_pct(s.authenticity_by_space.pixel.holdout)}; much lower means copying |",
        "",
        "Intervals: 95% Wilson score intervals for shares (they count images as independent; slices of one person "
        "are not, so the true uncertainty is larger); 95% bootstrap over subjects for AUCs.",
        "",
        to_markdown(_membership_table(s)),
        to_markdown(calibration_table(cal.bands)),
        "A synthetic image has no slice number, so its own brain area places it in a band. Bands keep small low "
        "slices, which are close to everything, from setting the threshold for every slice.",
        "",
        to_markdown(_pairs_table(s)),
        f"Each training slice was re-acquired ({s.transforms}) and given a brightness curve before comparing. "
        "`nearest_pairs.png` shows each pair: the synthetic image, the training slice as aligned, and their "
        "difference.",
        "",
    ]
    if s.flagged:
        lines += ["Flagged images (closest first):", ""]
        lines += [f"- `{e.file}`: training image `{e.train_id}`, distance {e.distance:.4f}, ratio {e.ratio:.3f} "
                  f"(threshold {e.threshold:.3f}), {transform_text(e.transform)}; flagged by {', '.join(e.spaces)}"
                  for e in s.flagged[:N_FLAGGED_LISTED]]
        if len(s.flagged) > N_FLAGGED_LISTED:
            lines.append(f"- ... and {len(s.flagged) - N_FLAGGED_LISTED} more (see privacy.json)")
        lines.append("")
    if filtered_note:
        lines += [filtered_note, ""]
    lines += ["## What this does and does not prove", ""]
    lines += [f"- {text}" for text in s.limits]
    lines += [
        "",
        "Check the audit on this dataset with `brainsynth audit --selftest DATASET`: it plants transformed copies of "
        "training slices and reports how many are found.",
        "",
        "Figures: `nearest_pairs.png`, `distance_histogram.png`. Per-image distances and thresholds: `distances.tsv`. "
        "All numbers: `privacy.json`.",
        "",
    ]
    return "\n".join(lines)


# --- the self-test -----------------------------------------------------------------------------------

def selftest_rows(report: SelfTestReport) -> Table:
    """The self-test table: detection per family, then the false flags of held-out half B."""
    rows = []
    for f in report.families:
        ok = f.detection.rate is not None and f.detection.rate >= report.target
        rows.append([f.family, f"{f.detection.k} of {f.detection.n}", fmt_rate_ci(f.detection.rate, f.detection.ci),
                     fmt_pct(f.source_found), fmt(f.median_distance, 3), fmt(f.median_ratio, 3),
                     "ok" if ok else "BELOW TARGET"])
    ff = report.false_flags
    ok = ff.rate is not None and ff.rate <= report.max_false_flags
    rows.append(["held-out half B (false flags)", f"{ff.k} of {ff.n}", fmt_rate_ci(ff.rate, ff.ci), "", "", "",
                 "ok" if ok else "ABOVE MAXIMUM"])
    return Table("Privacy self-test: planted copies flagged per transform family",
                 ["family", "flagged", "rate [95% CI]", "source found", "median distance", "median ratio",
                  "verdict"], rows,
                 [f"Target: at least {fmt_pct(report.target)} of the copies of every family flagged; at most "
                  f"{fmt_pct(report.max_false_flags)} false flags on held-out half B. "
                  f"{'PASSED' if report.passed else 'FAILED'}.",
                  f"Search: {report.transforms}. Thresholds at percentile {report.calibration.percentile:g} of "
                  f"{_calibration_words(report.calibration)}, rescaled per brain-area band; half B: "
                  f"{', '.join(report.calibration.half_b_subjects)}. Wilson intervals.",
                  features_line(report.features)])


def selftest_table(report: SelfTestReport) -> str:
    """The self-test table for the terminal."""
    return to_text(selftest_rows(report))


def selftest_markdown(report: SelfTestReport) -> str:
    """``selftest.md``: the table, what each family is, and the calibration."""
    lines = ["# Privacy self-test", ""]
    if report.simulated:
        lines += [SIMULATED_NOTE, ""]
    lines += [f"Dataset `{report.dataset}`, brainsynth {report.brainsynth_version}, {report.created}.", "",
              to_markdown(selftest_rows(report)), "## The families", ""]
    lines += [f"- **{f.family}**: {f.description}" for f in report.families]
    lines += ["", to_markdown(calibration_table(report.calibration.bands)),
              f"Pixel distance: {report.distances.pixel}.", "", f"Feature distance: {report.distances.feature}.", ""]
    return "\n".join(lines)
