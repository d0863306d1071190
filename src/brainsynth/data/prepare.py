"""``brainsynth prepare``: a cohort of T1 volumes -> a prepared DATASET (see :mod:`dataset`).

Order of work, so that mistakes surface before the heavy part:

1. check the options, the output path and the input folder;
2. find subjects, volumes and labels (:mod:`layouts`), and read every header;
3. stream the volumes through :func:`volume.process_volume`, at most ``workers`` at a time,
   appending each subject's images to the staging folder as it arrives (memory stays
   bounded by ``workers`` volumes, whatever the number of subjects);
4. deal subjects into K test folds per repeat (stratified by label, seeded; K = 1 is one
   train/test split) and write the tables, ``folds.tsv``, ``manifest.json`` and
   ``preview.png``; the folder appears only when complete.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import platform
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from brainsynth import LABELS, __version__
from brainsynth.data import volume as vol
from brainsynth.data.dataset import (FOLD_COLUMNS, FOLDS_TABLE, IMAGE_COLUMNS, IMAGE_TABLE, IMAGES_FILE,
                                     MANIFEST_FILE, PREVIEW_FILE, SPLITS, SUBJECT_TABLE)
from brainsynth.config import PrepareConfig
from brainsynth.data.layouts import Cohort, InputSpec, Subject, discover_cohort
from brainsynth.errors import ConfigError, InputError
from brainsynth.fsio import atomic_output_path, atomic_write_json, atomic_write_text, check_output_free, sha256_file
from brainsynth.options import as_dict
from brainsynth.progress import bar

log = logging.getLogger("brainsynth.prepare")

FORMAT_VERSION = 1
CONFIG_FILE = "config.yaml"
_RAW_ROWS = "images.u8.partial"  # rows appended while streaming, turned into images.npy at the end
_COPY_CHUNK = 1 << 22


# --- options ---------------------------------------------------------------------------

def slice_spec(cfg: PrepareConfig, volume_index: int | None = None) -> vol.SliceSpec:
    """The per-volume part of a checked ``prepare`` section (what each worker needs)."""
    rel = tuple(cfg.relative_slices) if cfg.relative_slices is not None else None
    return vol.SliceSpec(slices=(cfg.slices[0], cfg.slices[1]), relative_slices=rel, inplane=cfg.inplane,
                         patch=cfg.patch, patch_stride=cfg.patch_stride, size=cfg.size, volume_index=volume_index)


def _check_paths(input: Path, out: Path, force: bool) -> None:
    if not input.exists():
        raise InputError(f"{input}: input folder not found")
    inp, dst = input.resolve(), out.resolve()
    if dst == inp or inp in dst.parents or dst in inp.parents:
        raise ConfigError(f"--out {out} overlaps the input folder {input}; write the dataset elsewhere")
    check_output_free(out, force)


# --- split and folds ----------------------------------------------------------------------

def split_subjects(labels: dict[str, str], test_fraction: float, seed: int | Sequence[int]) -> dict[str, str]:
    """Assign each subject to ``train`` or ``test``, stratified by label (one hold-out split).

    Parameters
    ----------
    labels : dict
        ``subject id -> label``.
    test_fraction : float
        Share of each label's subjects held out, in [0, 1).
    seed : int or sequence of int
        Seed of :func:`numpy.random.default_rng`.

    Returns
    -------
    dict
        ``subject id -> "train" | "test"``. A label with >= 2 subjects gets at least one in
        each split (when ``test_fraction`` > 0), so per-label test metrics always exist.
    """
    rng = np.random.default_rng(seed)
    split = {}
    for label in LABELS:
        ids = sorted(s for s, lbl in labels.items() if lbl == label)
        n = len(ids)
        n_test = int(np.floor(n * test_fraction + 0.5))
        if test_fraction > 0 and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        elif test_fraction > 0 and n == 1:
            n_test = 0
            log.warning("only one %s subject (%s): it goes to train, the test split has no %s", label, ids[0], label)
        held_out = {ids[i] for i in rng.permutation(n)[:n_test]}
        split.update({s: "test" if s in held_out else "train" for s in ids})
    missing = [lbl for lbl in LABELS if lbl not in labels.values()]
    if missing:
        log.warning("no %s subjects: a class-conditional model needs both labels", " or ".join(missing))
    return split


def stratified_folds(labels: dict[str, str], folds: int, seed: int | Sequence[int]) -> dict[str, int]:
    """Deal subjects into ``folds`` test folds, stratified by label: each subject in exactly one.

    Each label's subjects are shuffled, the shuffled lists are laid end to end (controls,
    then ADHD) and dealt round robin, so every fold gets ``n_label // folds`` or one more of
    each label, and fold sizes differ by at most one subject overall.

    Parameters
    ----------
    labels : dict
        ``subject id -> label``.
    folds : int
        K >= 2; at most the number of subjects.
    seed : int or sequence of int

    Returns
    -------
    dict
        ``subject id -> fold`` in ``0 .. folds - 1``.
    """
    rng = np.random.default_rng(seed)
    order: list[str] = []
    for label in [*LABELS, *sorted(set(labels.values()) - set(LABELS))]:
        ids = sorted(s for s, lbl in labels.items() if lbl == label)
        order += [ids[i] for i in rng.permutation(len(ids))]
    return {subject: i % folds for i, subject in enumerate(order)}


def assign_folds(labels: dict[str, str], folds: int, repeats: int, test_fraction: float,
                 seed: int) -> list[tuple[str, int, int, str]]:
    """Every repeat's folds: one row per (subject, repeat, fold) saying train or test.

    ``folds`` >= 2 is K-fold cross-validation by subject (:func:`stratified_folds`): each
    subject is tested in exactly one fold of each repeat. ``folds`` = 1 is one hold-out
    split of ``test_fraction`` per repeat (:func:`split_subjects`). Repeat ``r`` draws from
    the seed ``[seed, r]``, so adding repeats leaves the earlier ones unchanged.

    Returns
    -------
    list of tuple
        ``(subject, repeat, fold, "train" | "test")``, sorted by repeat, fold, subject: the
        rows of ``folds.tsv``.

    Raises
    ------
    ConfigError
        When there are fewer subjects than folds.
    """
    if folds > len(labels):
        raise ConfigError(f"prepare.folds={folds} but the cohort has {len(labels)} subjects; choose --folds "
                          f"{max(1, len(labels))} or fewer (every fold needs a test subject), or --folds 1 for one "
                          "hold-out split")
    smallest = min((sum(v == lbl for v in labels.values()), lbl) for lbl in set(labels.values()))
    if folds > 1 and smallest[0] < folds:
        log.warning("prepare.folds=%d but only %d %s subject(s): some folds test no %s subject, so their per-fold "
                    "scores of that class are n/a (the pooled result is unaffected)", folds, smallest[0],
                    smallest[1], smallest[1])
    rows = []
    for r in range(repeats):
        if folds == 1:
            split = split_subjects(labels, test_fraction, [seed, r])
            rows += [(s, r, 0, split[s]) for s in sorted(labels)]
            continue
        test_fold = stratified_folds(labels, folds, [seed, r])
        rows += [(s, r, k, "test" if test_fold[s] == k else "train") for k in range(folds) for s in sorted(labels)]
    return rows


# --- streaming --------------------------------------------------------------------------

def _stream_volumes(subjects: Sequence[Subject], spec: vol.SliceSpec, workers: int) -> Iterator[vol.VolumeResult]:
    """Results in subject order, with at most ``workers`` volumes being processed at once."""
    if workers == 1:
        for i, subject in enumerate(subjects):
            yield vol.process_volume(subject.path, spec, with_preview=i == 0)
        return
    # spawn: workers start clean (no inherited threads or locks from the parent).
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = collections.deque()
        try:
            for i, subject in enumerate(subjects):
                pending.append(pool.submit(vol.process_volume, subject.path, spec, with_preview=i == 0))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _write_npy_from_raw(raw: Path, dest: Path, n: int, size: int) -> None:
    """Prefix the streamed uint8 rows with a .npy header (copied in chunks: no whole-array load)."""
    with open(dest, "wb") as f, open(raw, "rb") as src:
        np.lib.format.write_array_header_1_0(f, {"descr": np.dtype(np.uint8).str, "fortran_order": False,
                                                 "shape": (n, size, size)})
        shutil.copyfileobj(src, f, _COPY_CHUNK)
    raw.unlink()


# --- tables, manifest, preview ----------------------------------------------------------

def _tsv(rows: list[Sequence], columns: Sequence[str]) -> str:
    lines = ["\t".join(columns)] + ["\t".join(str(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def _relative_to(path: Path, root: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


def _manifest(cohort: Cohort, cfg: PrepareConfig, source: InputSpec, records: list[dict], split: dict[str, str],
              n_images: int, image_labels: list[str], image_splits: list[str]) -> dict:
    import nibabel

    table = cohort.label_table
    return {
        "format_version": FORMAT_VERSION,
        "created_by": f"brainsynth {__version__} prepare",
        "simulated": cohort.simulated,
        "software": {"brainsynth": __version__, "numpy": np.__version__, "nibabel": nibabel.__version__,
                     "python": platform.python_version()},
        "counts": {
            "n_subjects": len(records),
            "n_images": n_images,
            "labels": {lbl: image_labels.count(lbl) for lbl in LABELS},
            "splits": {s: image_splits.count(s) for s in SPLITS},
            "subjects_per_label": {lbl: sum(r["label"] == lbl for r in records) for lbl in LABELS},
            "subjects_per_split": {s: sum(r["split"] == s for r in records) for s in SPLITS},
            "skipped_patches": sum(r["n_skipped_patches"] for r in records),
        },
        "parameters": {
            **as_dict(cfg), **as_dict(source),
            "orientation": vol.DISPLAY_CONVENTION, "resize": vol.RESIZE_METHOD,
            "normalise_percentiles": list(vol.NORMALISE_PERCENTILES), "background_level": vol.BACKGROUND_LEVEL,
            "min_brain_fraction": vol.MIN_BRAIN_FRACTION,
        },
        "input": {
            "path": str(cohort.root.resolve()), "layout": cohort.layout,
            "label_table": {"path": _relative_to(table.path, cohort.root), "sha256": sha256_file(table.path),
                            "id_column": table.id_column, "label_column": table.label_column},
            "dropped_subjects": cohort.dropped,
        },
        "split": {"method": (f"{cfg.folds}-fold cross-validation by subject" if cfg.folds > 1 else
                             "one hold-out split by subject") + ", stratified by label, seeded",
                  "folds": cfg.folds, "repeats": cfg.repeats, "seed": cfg.seed,
                  "test_fraction": cfg.test_fraction if cfg.folds == 1 else None,
                  "table": FOLDS_TABLE, "fold": 0, "repeat": 0,
                  **{s: sorted(k for k, v in split.items() if v == s) for s in SPLITS}},
        "subjects": records,
    }


def _write_preview(path: Path, subject: Subject, preview: vol.PreviewData, simulated: bool) -> None:
    """The paper's Figure 1: slice range on a sagittal view, patch box, patch, resized image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(13, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 4)
    a, b = preview.slice_range
    gray = dict(cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[0].imshow(preview.sagittal, origin="lower", aspect=preview.sagittal_aspect, **gray)
    axes[0].axhspan(a - 0.5, b + 0.5, color="tab:orange", alpha=0.25)
    axes[0].axhline(preview.slice_index, color="tab:orange", lw=1)
    axes[0].set_title(f"sagittal: slices {a}-{b} kept")
    h, w = preview.axial.shape
    axes[1].imshow(preview.axial, **gray)
    top, left, side = preview.patch_box
    axes[1].add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="tab:orange", lw=1.5))
    axes[1].set_title(f"axial slice {preview.slice_index} ({h}x{w})")
    axes[2].imshow(preview.patch, **gray)
    axes[2].set_title(f"patch {side}x{side}")
    axes[3].imshow(preview.resized, **gray)
    axes[3].set_title(f"resized {preview.resized.shape[0]}x{preview.resized.shape[1]}")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    tag = "  (SIMULATED cohort)" if simulated else ""
    fig.suptitle(f"{subject.id} ({subject.label}){tag}")
    fig.tight_layout()
    with atomic_output_path(path) as tmp:
        fig.savefig(tmp, format="png")


# --- the stage --------------------------------------------------------------------------

def prepare_dataset(input: str | Path, out: str | Path, cfg: PrepareConfig, source: InputSpec | None = None, *,
                    force: bool = False) -> Path:
    """Prepare a cohort of T1 volumes as a DATASET folder (the paper's preprocessing).

    Parameters
    ----------
    input : path
        BIDS folder, ADHD-200 site folder, or flat folder of ``.nii``/``.nii.gz`` files.
    out : path
        The DATASET folder to write; refused if it exists unless ``force``.
    cfg : PrepareConfig
        The ``prepare`` section: slice range, in-plane size, patch, final size, split, workers.
    source : InputSpec, optional
        How to read ``input``: label table and its columns, unlabelled subjects, 4D volume index.
    force : bool
        Replace an existing ``out``.

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    ConfigError, InputError, OutputExistsError
        One line naming the option, file or subject at fault; nothing is written.
    """
    from brainsynth.config import sections_yaml
    from brainsynth.fsio import staged_output_dir

    cfg.check()
    source = source or InputSpec()
    spec = slice_spec(cfg, source.volume_index)
    if cfg.folds == 1 and cfg.test_fraction == 0:
        log.warning("prepare.test_fraction 0: no test subjects; GAN-train evaluation needs a test split")
    input, out = Path(input), Path(out)
    _check_paths(input, out, force)

    cohort = discover_cohort(input, source)
    for subject in cohort.subjects:  # headers only: a bad file stops the run before any heavy work
        header = vol.read_header(subject.path, spec.volume_index)
        if spec.relative_slices is None:
            vol.check_slice_range(header.shape[2], spec.slices, subject.path)
    log.info("%s: %d subjects (%s layout%s); preparing with %d worker(s)", input, len(cohort.subjects),
             cohort.layout, ", SIMULATED" if cohort.simulated else "", cfg.workers)
    with staged_output_dir(out, force=force) as stage:
        rows, records = [], []
        raw = stage / _RAW_ROWS
        preview = None
        with open(raw, "wb") as sink, bar(len(cohort.subjects), "prepare", unit="volume", min_items=20) as step:
            for subject, result in zip(cohort.subjects, _stream_volumes(cohort.subjects, spec, cfg.workers)):
                step(1)
                preview = preview or result.preview
                if len(result.images) == 0:
                    log.warning("%s: no brain in slices %d-%d; subject dropped", subject.id, *result.slice_range)
                    continue
                sink.write(result.images.tobytes())
                rows += [(subject.id, subject.label, int(z), int(p)) for z, p in zip(result.slices, result.patches)]
                if result.n_skipped_patches:
                    log.info("%s: skipped %d background-only patch(es) (slices %s)", subject.id,
                             result.n_skipped_patches, result.skipped_slices or "none whole")
                records.append(_subject_record(subject, result))
        if not rows:
            raise InputError(f"{input}: no image has brain in the kept slices; check --slices or use --relative-slices")

        fold_rows = assign_folds({r["id"]: r["label"] for r in records}, cfg.folds, cfg.repeats, cfg.test_fraction,
                                 cfg.seed)
        # The split column of images.tsv and subjects.tsv is repeat 0, fold 0 (what --fold 0 reads).
        split = {s: where for s, r, k, where in fold_rows if r == 0 and k == 0}
        for r in records:
            r["split"] = split[r["id"]]
        _write_npy_from_raw(raw, stage / IMAGES_FILE, len(rows), spec.size)
        image_rows = [(i, s, lbl, split[s], z, p) for i, (s, lbl, z, p) in enumerate(rows)]
        atomic_write_text(stage / IMAGE_TABLE, _tsv(image_rows, IMAGE_COLUMNS))
        atomic_write_text(stage / SUBJECT_TABLE, _tsv(
            [(r["id"], r["label"], r["split"], r["n_images"], r["source"]) for r in records],
            ("subject", "label", "split", "n_images", "source")))
        atomic_write_text(stage / FOLDS_TABLE, _tsv(fold_rows, FOLD_COLUMNS))
        atomic_write_json(stage / MANIFEST_FILE, _manifest(
            cohort, cfg, source, records, split, len(rows), [r[2] for r in image_rows], [r[3] for r in image_rows]))
        atomic_write_text(stage / CONFIG_FILE, sections_yaml(cfg, what="prepared dataset"))
        if preview is not None:
            _write_preview(stage / PREVIEW_FILE, cohort.subjects[0], preview, cohort.simulated)

    n_test = sum(v == "test" for v in split.values())
    log.info("prepared %d images of %dx%d from %d subjects (%s; fold 0: %d train, %d test) -> %s", len(rows),
             spec.size, spec.size, len(records), f"{cfg.folds} folds x {cfg.repeats} repeat(s)", len(records) - n_test,
             n_test, out)
    return out


def _subject_record(subject: Subject, result: vol.VolumeResult) -> dict:
    """The manifest's entry for one subject (split filled in later)."""
    return {
        "id": subject.id, "label": subject.label, "split": None, "n_images": int(len(result.images)),
        "source": subject.source, "sha256": result.sha256,
        "file_shape": list(result.header.file_shape), "file_orientation": result.header.orientation,
        "shape_ras": list(result.header.shape), "zooms_mm": [round(z, 6) for z in result.zooms],
        "slice_range": list(result.slice_range), "skipped_slices": result.skipped_slices,
        "n_skipped_patches": result.n_skipped_patches,
    }
