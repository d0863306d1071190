"""``brainsynth run``: the whole method end to end, cross-validated by subject, as cached, resumable stages.

Stages (each writes one folder under OUT; ``OUT/config.yaml`` is the resolved configuration)::

    cohort/                  the SIMULATED cohort (only when no --input is given)
    dataset/                 the paper's preprocessing and the subject folds  (brainsynth prepare)
    r<R>/f<K>/runs/pggan/    conditional PGGAN on the fold's training subjects (brainsynth train --fold K)
    r<R>/f<K>/runs/dcgan/    DCGAN baseline, same image budget
    r<R>/f<K>/synthetic/<m>/ balanced synthetic sets                           (brainsynth generate)
    r<R>/f<K>/evaluation/    the fold's predictions, fidelity, privacy
    report/                  every fold pooled: CIs, paired verdicts         (brainsynth evaluate --all-folds)
    cache/features/          VGG-16 features by content, reused by every later evaluation of the same images

Stage names carry the fold: ``r0/f1/train_pggan``, ``r0/f1/generate_dcgan``, ``r0/f1/evaluate``.
``OUT/pipeline.json`` records, per stage, a fingerprint of everything the stage depends on
(its parameters and the fingerprints of its inputs) and its wall time. A rerun skips a finished
stage whose fingerprint is unchanged, resumes an interrupted training run from its last
checkpoint, and redoes a stage (and everything after it) whose inputs changed. A training
stage depends on its fold's training subjects, not on the fold assignment as a whole: adding a
repeat (``--repeats``) keeps every finished fold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from brainsynth import __version__
from brainsynth.config import RunConfig, TrainConfig, config_to_yaml
from brainsynth.data.layouts import InputSpec
from brainsynth.errors import ConfigError, InputError
from brainsynth.folder_lock import folder_contents, folder_lock
from brainsynth.fsio import atomic_write_json, atomic_write_text
from brainsynth.logs import current_level, setup_logging
from brainsynth.options import as_dict
from brainsynth.timing import Stopwatch

if TYPE_CHECKING:
    from brainsynth.evaluate.report.schema import Report

log = logging.getLogger("brainsynth.pipeline")

STATE_FILE = "pipeline.json"
CONFIG_FILE = "config.yaml"
FEATURE_CACHE = "cache/features"  # inside OUT: the run folder holds everything the run computed


@dataclass
class StageState:
    """What ``pipeline.json`` remembers about one stage."""

    fingerprint: str
    done: bool = False
    seconds: float = 0.0


@dataclass
class Pipeline:
    """Bookkeeping for the cached stages of one ``brainsynth run`` output folder."""

    out: Path
    stages: dict[str, StageState] = field(default_factory=dict)

    @classmethod
    def open(cls, out: Path) -> "Pipeline":
        out.mkdir(parents=True, exist_ok=True)
        state_path = out / STATE_FILE
        stages: dict[str, StageState] = {}
        if state_path.is_file():
            try:
                raw = json.loads(state_path.read_text())["stages"]
                stages = {name: StageState(**s) for name, s in raw.items()}
            except (ValueError, KeyError, TypeError):
                log.warning("%s is unreadable; every stage will be redone", state_path)
        elif folder_contents(out):
            raise InputError(f"{out} exists and is not a brainsynth run folder; choose another --out")
        return cls(out=out, stages=stages)

    def save(self) -> None:
        atomic_write_json(
            self.out / STATE_FILE,
            {"brainsynth_version": __version__,
             "stages": {n: vars(s) for n, s in self.stages.items()}},
        )

    def up_to_date(self, name: str, fingerprint: str, output: Path) -> bool:
        """True when ``name`` finished with this fingerprint and its output is still there."""
        prev = self.stages.get(name)
        return bool(prev and prev.done and prev.fingerprint == fingerprint and output.exists())

    def begin(self, name: str, fingerprint: str, output: Path, state: str = "running") -> bool:
        """Record that ``name`` starts (or is ``queued``); return ``restart`` (an earlier attempt had other inputs).

        Output left behind by an attempt with other inputs is removed; output of an
        interrupted attempt with the same inputs is kept, so that training can resume.
        """
        prev = self.stages.get(name)
        restart = prev is None or prev.fingerprint != fingerprint
        if restart and output.exists():
            log.info("[%s] inputs changed; starting this stage over", name)
            shutil.rmtree(output) if output.is_dir() else output.unlink()
        self.stages[name] = StageState(fingerprint=fingerprint, done=False,
                                       seconds=prev.seconds if prev and not restart else 0.0)
        self.save()
        log.info("[%s] %s", name, state)
        return restart

    def finish(self, name: str, seconds: float) -> float:
        """Record that ``name`` finished after ``seconds`` more of wall time; return its total."""
        state = self.stages[name]
        state.seconds += seconds
        state.done = True
        self.save()
        log.info("[%s] done in %.0f s", name, state.seconds)
        return state.seconds

    def stage(self, name: str, fingerprint: str, output: Path, body: Callable[[bool], None]) -> float:
        """Run ``body(restart)`` unless the stage already finished with the same fingerprint.

        Returns the stage's wall time (the recorded one when skipped).
        """
        if self.up_to_date(name, fingerprint, output):
            log.info("[%s] up to date, skipped (%.0f s when it ran)", name, self.stages[name].seconds)
            return self.stages[name].seconds
        restart = self.begin(name, fingerprint, output)
        clock = Stopwatch()
        body(restart)
        return self.finish(name, clock.total())


PARALLEL_JOBS = 2  # training runs side by side on the CPU demo: one thread each on 2 cores


def fold_prefix(repeat: int, fold: int) -> str:
    """``"r0/f1"``: the stage-name prefix and the folder of one fold under OUT."""
    return f"r{repeat}/f{fold}"


@dataclass
class TrainJob:
    """One model's training stage on one fold."""

    cfg: TrainConfig
    run_dir: Path
    fingerprint: str
    repeat: int = 0
    fold: int = 0

    @property
    def model(self) -> str:
        return self.cfg.model

    @property
    def stage_name(self) -> str:
        return f"{fold_prefix(self.repeat, self.fold)}/train_{self.model}"


def _train_one(dataset: Path, job: TrainJob, restart: bool, device: str | None, launch: list[str],
               log_level: int | None = None) -> float:
    """Train one model on one fold (resuming an interrupted run); return the wall time. Runs in a worker too."""
    from brainsynth.train.loop import train

    if log_level is not None:  # a spawned worker starts with logging unconfigured
        setup_logging(log_level)
        log.info("[%s] running", job.stage_name)
    clock = Stopwatch()
    resume = not restart and (job.run_dir / "checkpoints").is_dir()
    train(dataset, job.run_dir, job.cfg, resume=resume, launch=launch, device=device, force=not resume,
          fold=job.fold, repeat=job.repeat)
    return clock.total()


def train_models(pipe: Pipeline, dataset: Path, jobs: list[TrainJob], device: str | None, parallel: bool,
                 launch: list[str]) -> dict[str, float]:
    """Run the training stages that are not up to date, :data:`PARALLEL_JOBS` at a time when ``parallel``.

    Side by side is for the CPU demo: each run uses one thread (one fast core beats two
    contended ones for these small networks), so two runs use the machine's two cores. Jobs
    start in the given order (fold by fold) as workers free up; each is recorded as finished
    the moment it ends, so an interrupted run keeps every finished fold.
    Returns the wall time per stage name.
    """
    times: dict[str, float] = {}
    pending = []
    for job in jobs:
        if pipe.up_to_date(job.stage_name, job.fingerprint, job.run_dir):
            log.info("[%s] up to date, skipped", job.stage_name)
            times[job.stage_name] = pipe.stages[job.stage_name].seconds
        else:
            pending.append(job)
    if not (parallel and len(pending) > 1):
        for job in pending:
            restart = pipe.begin(job.stage_name, job.fingerprint, job.run_dir)
            times[job.stage_name] = pipe.finish(job.stage_name, _train_one(dataset, job, restart, device, launch))
        return times

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    restarts = {job.stage_name: pipe.begin(job.stage_name, job.fingerprint, job.run_dir, "queued") for job in pending}
    # Two progress bars would overwrite each other on one terminal: only the first job shows one.
    for job in pending[1:]:
        job.cfg = dataclasses.replace(job.cfg, progress_bar=False)
    pool = ProcessPoolExecutor(min(PARALLEL_JOBS, len(pending)), mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {pool.submit(_train_one, dataset, job, restarts[job.stage_name], device, launch,
                               current_level()): job.stage_name for job in pending}
        for future in as_completed(futures):
            times[futures[future]] = pipe.finish(futures[future], future.result())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a failed job stops the queue; running ones finish
    return times


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able parts (parameters and upstream fingerprints)."""
    blob = json.dumps([__version__, *parts], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def input_fingerprint(root: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and modification times of the user's input files (cheap; no reading)."""
    files = []
    for dirpath, _, names in os.walk(root):
        for name in names:  # the whole list is sorted below
            p = Path(dirpath) / name
            st = p.stat()
            files.append((str(p.relative_to(root)), st.st_size, int(st.st_mtime)))
    return sorted(files)


def _check_sizes_agree(config: RunConfig) -> None:
    """Refuse a training resolution other than the prepared size: evaluation compares images at one size."""
    for model in config.run.models:
        cfg = config.train[model]
        if cfg.resolution is not None and cfg.resolution != config.prepare.size:
            raise ConfigError(f"train.{model}.resolution={cfg.resolution} differs from prepare.size="
                              f"{config.prepare.size}; synthetic and real images must have one size: set "
                              f"train.{model}.resolution to null (the dataset's size) or change prepare.size")


def run(out: str | os.PathLike, config: RunConfig, *, input: str | os.PathLike | None = None,
        source: InputSpec | None = None, device: str | None = None) -> Report:
    """Run the whole method, cross-validated by subject: prepare, then per fold train every model,
    generate and evaluate, then pool the folds into one report.

    Parameters
    ----------
    out : path
        Output folder; rerunning with the same folder continues or skips finished stages.
    config : RunConfig
        The resolved configuration (:func:`brainsynth.config.load_config`); every stage reads
        its own section, ``prepare.folds`` and ``prepare.repeats`` the cross-validation, and
        ``run.models`` names the generators.
    input : path, optional
        The user's cohort (BIDS, ADHD-200 site folder, or flat folder with ``source.labels``).
        Without it, a SIMULATED cohort is generated from the ``cohort`` section.
    source : InputSpec, optional
        How to read ``input`` (label table, columns, unlabelled subjects, 4D volume index).
    device : str, optional
        ``cpu``, ``cuda`` or ``cuda:N``; default CUDA when present.

    Returns
    -------
    Report
        The pooled evaluation report (``report/report.json``), with every stage's wall time.
    """
    from brainsynth.evaluate.features import check_extractor_name

    # Cheap checks first, so a typo fails before minutes of work.
    _check_sizes_agree(config)
    check_extractor_name(config.evaluate.features)
    source = source or InputSpec()
    out = Path(out)
    # One `brainsynth run` per folder: a second one (another terminal, a scheduler's retry)
    # would train, evaluate and record stages over the first one's.
    with folder_lock(out, "run folder"):
        return _run_stages(out, config, input, source, device)


def _run_stages(out: Path, config: RunConfig, input: str | os.PathLike | None, source: InputSpec,
                device: str | None) -> Report:
    """The stages of :func:`run`, in a folder this process holds."""
    clock = Stopwatch()
    pipe = Pipeline.open(out)
    atomic_write_text(out / CONFIG_FILE, config_to_yaml(config))
    timings: dict[str, float] = {}

    # --- cohort ---------------------------------------------------------------------
    if input is None:
        from brainsynth.data.phantom import make_cohort

        cohort = out / "cohort"
        fp_cohort = fingerprint("cohort", as_dict(config.cohort))
        timings["cohort"] = pipe.stage("cohort", fp_cohort, cohort,
                                       lambda restart: make_cohort(cohort, config.cohort, force=True))
        log.info("using the SIMULATED cohort in %s (not real patients)", cohort)
    else:
        cohort = Path(input)
        if not cohort.exists():
            raise InputError(f"{cohort}: input folder not found")
        fp_cohort = fingerprint("input", str(cohort.resolve()), input_fingerprint(cohort))

    # --- prepare ----------------------------------------------------------------------
    from brainsynth.data.dataset import load_dataset
    from brainsynth.data.prepare import prepare_dataset

    dataset = out / "dataset"
    # workers changes how fast, not what: it stays out of the fingerprint.
    prep_args = {k: v for k, v in as_dict(config.prepare).items() if k != "workers"}
    fp_data = fingerprint("prepare", fp_cohort, prep_args, as_dict(source))
    # The images alone (no fold assignment): what a fold's training data is cut from.
    fp_images = fingerprint("images", fp_cohort, {k: v for k, v in prep_args.items() if k not in SPLIT_KEYS},
                            as_dict(source))
    timings["prepare"] = pipe.stage("prepare", fp_data, dataset,
                                    lambda restart: prepare_dataset(cohort, dataset, config.prepare, source, force=True))
    data = load_dataset(dataset)
    folds = data.fold_ids()
    views = {fid: data.fold(fid[1], fid[0]) for fid in folds}
    log.info("%d fold(s) x %d repeat(s): %s", data.n_folds, data.n_repeats,
             "; ".join(f"{fold_prefix(*fid)} tests {', '.join(v.test_subjects())}" for fid, v in views.items()))

    # --- train every model on every fold ----------------------------------------------
    # The fingerprint holds the fold's training subjects and the resolved config, so an edited
    # preset file retrains too, and a fold whose training subjects did not change does not.
    jobs = [TrainJob(config.train[m], out / fold_prefix(*fid) / "runs" / m,
                     fingerprint("train", fp_images, _subjects(views[fid], "train"), as_dict(config.train[m])),
                     repeat=fid[0], fold=fid[1])
            for fid in folds for m in config.run.models]
    timings.update(train_models(pipe, dataset, jobs, device, config.run.parallel_training, config.source))

    # --- generate, per fold and model -------------------------------------------------
    shared = _SharedExtractor(config, device, out / FEATURE_CACHE)
    selecting = config.generate.select != "last"
    synthetic: dict[tuple[int, int], dict[str, str]] = {fid: {} for fid in folds}
    fp_gen: dict[tuple[int, int], list[str]] = {fid: [] for fid in folds}
    for job in jobs:
        fid = (job.repeat, job.fold)
        syn_dir = out / fold_prefix(*fid) / "synthetic" / job.model
        name = f"{fold_prefix(*fid)}/generate_{job.model}"
        # Selection audits the checkpoints on held-out half A with the evaluate extractor: both count.
        fp = fingerprint("generate", job.fingerprint, as_dict(config.generate),
                         *((as_dict(config.audit), as_dict(config.evaluate)) if selecting else ()))
        timings[name] = pipe.stage(name, fp, syn_dir, lambda restart, run_dir=job.run_dir, syn_dir=syn_dir:
                                   _generate(run_dir, syn_dir, config, dataset, device, shared))
        synthetic[fid][job.model] = str(syn_dir)
        fp_gen[fid].append(fp)

    # --- evaluate each fold, then pool --------------------------------------------------
    from brainsynth.evaluate.commands import evaluate_fold_dir, report_from_fold_dirs
    from brainsynth.evaluate.report.schema import read_report
    from brainsynth.evaluate.report.targets import format_table1

    fold_dirs, fp_folds = [], []
    for fid in folds:
        fold_dir = out / fold_prefix(*fid) / "evaluation"
        name = f"{fold_prefix(*fid)}/evaluate"
        fp = fingerprint("evaluate", fp_images, _subjects(views[fid], "train"), _subjects(views[fid], "test"),
                         fp_gen[fid], as_dict(config.evaluate), as_dict(config.audit))
        timings[name] = pipe.stage(name, fp, fold_dir, lambda restart, fid=fid, fold_dir=fold_dir: evaluate_fold_dir(
            dataset, fid, synthetic[fid], fold_dir, config.evaluate, config.audit, force=True,
            store=shared.get()))
        fold_dirs.append(fold_dir)
        fp_folds.append(fp)

    report_dir = out / "report"
    first = fold_prefix(*folds[0])
    runs = {m: str(out / first / "runs" / m) for m in config.run.models}
    stage_times = dict(timings)
    timings["report"] = pipe.stage(
        "report", fingerprint("report", fp_folds, as_dict(config.evaluate), as_dict(config.audit)), report_dir,
        lambda restart: report_from_fold_dirs(dataset, fold_dirs, report_dir, config.evaluate, config.audit,
                                              runs=runs, timings=stage_times, force=True),
    )
    report = read_report(report_dir)
    report.timings.other_stages.update(timings)
    atomic_write_json(out / "timings.json", timings)
    print(format_table1(report))
    # Training stages overlap when they run side by side, so the total is measured, not summed.
    print("wall time per stage (summed over folds): " + ", ".join(f"{k} {v:.0f} s" for k, v in
                                                                   stage_kinds(timings).items())
          + f"; this invocation {clock.total():.0f} s")
    print(f"report: {report_dir / 'report.html'}")
    return report


def _generate(run_dir: Path, syn_dir: Path, config: RunConfig, dataset: Path, device: str | None,
              shared: "_SharedExtractor") -> None:
    """One synthetic set: the checkpoint chosen by ``generate.select`` (on held-out half A), then sampled."""
    from brainsynth.selection import generate_selected

    generate_selected(run_dir, syn_dir, config, device=device, force=True, dataset=dataset,
                      store=shared.get() if config.generate.select != "last" else None)


SPLIT_KEYS = ("folds", "repeats", "test_fraction", "seed")
"""``prepare`` keys that choose the subject folds, not the images."""


def _subjects(view, split: str) -> list[str]:
    return sorted(set(view.table.loc[view.table["split"] == split, "subject"]))


def stage_kinds(timings: dict[str, float]) -> dict[str, float]:
    """Stage seconds summed over folds: ``r0/f1/train_pggan`` counts as ``train_pggan``."""
    out: dict[str, float] = {}
    for name, seconds in timings.items():
        kind = name.rsplit("/", 1)[-1]
        out[kind] = out.get(kind, 0.0) + seconds
    return out


class _SharedExtractor:
    """One feature store (extractor, memory, ``OUT/cache/features``) for every fold evaluated in
    this call, built when the first fold needs it (a rerun that skips every fold builds none)."""

    def __init__(self, config: RunConfig, device: str | None, folder: Path):
        self.config, self.device, self.folder = config, device, folder
        self._store = None

    def get(self):
        if self._store is None:
            from brainsynth.evaluate.feature_cache import FeatureStore
            from brainsynth.evaluate.features import get_extractor

            self._store = FeatureStore(get_extractor(self.config.evaluate, device=self.device), self.folder)
        return self._store
