"""``brainsynth run``: the whole method end to end, as cached, resumable stages.

Stages (each writes one folder under OUT)::

    cohort/            the SIMULATED cohort (only when no --input is given)
    dataset/           the paper's preprocessing            (brainsynth prepare)
    runs/pggan/        conditional PGGAN training           (brainsynth train --model pggan)
    runs/dcgan/        DCGAN baseline, same image budget    (brainsynth train --model dcgan)
    synthetic/<model>/ balanced synthetic sets              (brainsynth generate)
    report/            GAN-train/GAN-test, fidelity, privacy (brainsynth evaluate)

``OUT/pipeline.json`` records, per stage, a fingerprint of everything the stage depends on
(its parameters and the fingerprints of the stages before it) and its wall time. A rerun
skips a finished stage whose fingerprint is unchanged, resumes an interrupted training run
from its last checkpoint, and redoes a stage (and everything after it) whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from brainsynth import __version__
from brainsynth.errors import ConfigError, InputError
from brainsynth.fsio import atomic_write_json

log = logging.getLogger("brainsynth.pipeline")

STATE_FILE = "pipeline.json"
MODELS = ("pggan", "dcgan")

# One row per `--preset`: what each stage is given. The training presets themselves live in
# configs/<name>.yaml; this table only says how the rest of the pipeline fits around them.
PIPELINE_PRESETS: dict[str, dict[str, Any]] = {
    "demo": {
        "phantom": {"subjects": 12},
        "prepare": {"size": 64},
        "train_config": "demo",
        "parallel_training": True,  # one thread per run, PGGAN and DCGAN side by side on 2 cores
        "images_per_label": 500,
        "evaluate": {"input_size": 64, "bootstrap": 500},
    },
    "paper": {
        "phantom": {"subjects": 12},
        "prepare": {"size": 256},
        "train_config": "paper",
        "parallel_training": False,  # one GPU: one run at a time
        "images_per_label": 1000,
        "evaluate": {"input_size": 224, "bootstrap": 1000},
    },
    "tiny": {
        "phantom": {"subjects": 6, "shape": (96, 96, 60)},
        "prepare": {"size": 16, "inplane": 64, "patch": 48, "relative_slices": (0.3, 0.7)},
        "train_config": "tiny",
        "parallel_training": False,
        # The tiny training preset stops at 8 px; the evaluation needs 16 px for SWD.
        "train_overrides": ["resolution=16", "widths={4: 8, 8: 8, 16: 8}"],
        "images_per_label": 24,
        "evaluate": {"input_size": 32, "bootstrap": 50},
    },
}


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
        elif any(out.iterdir()):
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

    def begin(self, name: str, fingerprint: str, output: Path) -> bool:
        """Record that ``name`` starts; return ``restart`` (an earlier attempt had other inputs).

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
        log.info("[%s] running", name)
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
        start = time.perf_counter()
        body(restart)
        return self.finish(name, time.perf_counter() - start)


@dataclass
class TrainJob:
    """One model's training stage."""

    model: str
    run_dir: Path
    fingerprint: str
    overrides: list[str]

    @property
    def stage_name(self) -> str:
        return f"train_{self.model}"


def _train_one(dataset: Path, job: TrainJob, config: str, restart: bool, device: str | None,
               log_level: int | None = None) -> float:
    """Train one model (resuming an interrupted run); return the wall time. Runs in a worker too."""
    from brainsynth.train.loop import train

    if log_level is not None:  # a spawned worker starts with logging unconfigured
        from brainsynth.cli import setup_logging

        setup_logging(log_level)
    start = time.perf_counter()
    resume = not restart and (job.run_dir / "checkpoints").is_dir()
    train(dataset, job.run_dir, model=job.model, config=config, overrides=job.overrides, resume=resume,
          device=device, force=not resume)
    return time.perf_counter() - start


def train_models(pipe: Pipeline, dataset: Path, jobs: list[TrainJob], config: str, device: str | None,
                 parallel: bool) -> dict[str, float]:
    """Run the training stages that are not up to date, side by side when ``parallel``.

    Side by side is for the CPU demo: each run uses one thread (one fast core beats two
    contended ones for these small networks), so two runs use the machine's two cores.
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
            times[job.stage_name] = pipe.finish(job.stage_name, _train_one(dataset, job, config, restart, device))
        return times

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    restarts = {job.stage_name: pipe.begin(job.stage_name, job.fingerprint, job.run_dir) for job in pending}
    # Two progress bars would overwrite each other on one terminal: only the first job shows one.
    for job in pending[1:]:
        job.overrides = [*job.overrides, "progress_bar=false"]
    level = logging.getLogger("brainsynth").getEffectiveLevel()
    with ProcessPoolExecutor(len(pending), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {job.stage_name: pool.submit(_train_one, dataset, job, config, restarts[job.stage_name], device,
                                               level) for job in pending}
        for name, future in futures.items():
            times[name] = pipe.finish(name, future.result())
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


def run(out: str | os.PathLike, *, input: str | None = None, preset: str = "demo", labels: str | None = None,
        id_column: str | None = None, label_column: str | None = None, skip_unlabeled: bool = False,
        volume_index: int | None = None, slices: tuple[float, float] | None = None,
        relative_slices: tuple[float, float] | None = None, workers: int = 1,
        device: str | None = None, seed: int = 0,
        features: str = "vgg16-random", weights: str | None = None) -> dict:
    """Run the whole method: prepare, train PGGAN and DCGAN, generate, evaluate, report.

    Parameters
    ----------
    out : path
        Output folder; rerunning with the same folder continues or skips finished stages.
    input : path, optional
        The user's cohort (BIDS, ADHD-200 site folder, or flat folder with ``labels``).
        Without it, a SIMULATED cohort is generated.
    labels, id_column, label_column, skip_unlabeled, volume_index, slices, relative_slices, workers
        As for ``brainsynth prepare``; ``slices``/``relative_slices`` override the preset's range.
    preset : {"demo", "paper", "tiny"}
        ``demo`` (CPU, 64 px), ``paper`` (GPU, 256 px, the paper's settings), ``tiny`` (tests).
    features, weights
        Feature extractor for the evaluation (see ``brainsynth evaluate``).

    Returns
    -------
    dict
        The evaluation report (``report/report.json``).
    """
    if preset not in PIPELINE_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PIPELINE_PRESETS)}")
    p = PIPELINE_PRESETS[preset]
    started = time.perf_counter()
    out = Path(out)
    pipe = Pipeline.open(out)
    timings: dict[str, float] = {}

    # --- cohort ---------------------------------------------------------------------
    if input is None:
        from brainsynth.data.phantom import make_cohort

        cohort = out / "cohort"
        cohort_args = {**p["phantom"], "seed": seed}
        fp_cohort = fingerprint("cohort", cohort_args)
        timings["cohort"] = pipe.stage("cohort", fp_cohort, cohort,
                                       lambda restart: make_cohort(cohort, **cohort_args, force=True))
        log.info("using the SIMULATED cohort in %s (not real patients)", cohort)
    else:
        cohort = Path(input)
        if not cohort.exists():
            raise InputError(f"{cohort}: input folder not found")
        fp_cohort = fingerprint("input", str(cohort.resolve()), input_fingerprint(cohort))

    # --- prepare ----------------------------------------------------------------------
    from brainsynth.data.prepare import prepare_dataset

    dataset = out / "dataset"
    slice_range = {k: v for k, v in (("slices", slices), ("relative_slices", relative_slices)) if v is not None}
    prep_args = {**p["prepare"], **slice_range, "labels": labels, "id_column": id_column,
                 "label_column": label_column, "skip_unlabeled": skip_unlabeled, "volume_index": volume_index,
                 "seed": seed}
    fp_data = fingerprint("prepare", fp_cohort, prep_args)
    timings["prepare"] = pipe.stage("prepare", fp_data, dataset,
                                    lambda restart: prepare_dataset(cohort, dataset, **prep_args, workers=workers,
                                                                   force=True))

    # --- train, then generate, per model ----------------------------------------------
    from brainsynth.generate import generate_images
    from brainsynth.train.config import config_to_dict, resolve_config

    overrides = [*p.get("train_overrides", []), f"seed={seed}"]
    # The fingerprint holds the resolved config, so an edited preset file retrains too.
    jobs = [TrainJob(model, out / "runs" / model,
                     fingerprint("train", fp_data, config_to_dict(resolve_config(model, p["train_config"], overrides))),
                     list(overrides)) for model in MODELS]
    timings.update(train_models(pipe, dataset, jobs, p["train_config"], device, p["parallel_training"]))

    synthetic: dict[str, str] = {}
    run_dirs: dict[str, str] = {}
    for job in jobs:
        syn_dir = out / "synthetic" / job.model
        fp_gen = fingerprint("generate", job.fingerprint, p["images_per_label"], seed)
        timings[f"generate_{job.model}"] = pipe.stage(
            f"generate_{job.model}", fp_gen, syn_dir,
            lambda restart, run_dir=job.run_dir, syn_dir=syn_dir: generate_images(
                run_dir, syn_dir, n=p["images_per_label"], label="both", seed=seed, device=device, force=True),
        )
        synthetic[job.model] = str(syn_dir)
        run_dirs[job.model] = str(job.run_dir)

    # --- evaluate + report ------------------------------------------------------------
    from brainsynth.evaluate import evaluate
    from brainsynth.evaluate.report import format_table1

    report_dir = out / "report"
    eval_args = {**p["evaluate"], "features": features, "weights": weights, "seed": seed}
    fp_eval = fingerprint("evaluate", fp_data, [pipe.stages[f"generate_{m}"].fingerprint for m in MODELS],
                          eval_args)
    stage_times = dict(timings)
    timings["evaluate"] = pipe.stage(
        "evaluate", fp_eval, report_dir,
        lambda restart: evaluate(dataset, synthetic, report_dir, runs=run_dirs, device=device,
                                 timings=stage_times, force=True, **eval_args),
    )
    report = json.loads((report_dir / "report.json").read_text())
    report.setdefault("timings", {}).update(timings)
    atomic_write_json(out / "timings.json", timings)
    print(format_table1(report))
    # Training stages overlap when they run side by side, so the total is measured, not summed.
    print("wall time per stage: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f"; this invocation {time.perf_counter() - started:.0f} s")
    print(f"report: {report_dir / 'report.html'}")
    return report
