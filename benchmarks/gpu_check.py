"""The paper preset on one GPU, end to end and bounded: train, generate, evaluate, and a projection.

    python benchmarks/gpu_check.py --out gpu-check                 # CUDA when present (not yet timed)
    python benchmarks/gpu_check.py --out gpu-check --dataset DATASET --images 9600
    python benchmarks/gpu_check.py --out /tmp/check --tiny --device cpu   # seconds: the CPU test's run

What it runs (all in this process, so the GPU memory counters see every stage):

1. a DATASET: ``--dataset``, or a small SIMULATED cohort (``--subjects``, the paper preset's
   ``cohort`` otherwise) prepared with the preset's ``prepare`` section (256 px for ``paper``);
2. the preset's PGGAN with bf16 autocast and channels_last, grown 4 -> 256 px within
   ``--images`` images by the preset's own schedule rule (``schedule: fit``, its
   ``final_share``), ticks aligned with the phases so that each resolution has its own
   throughput figure;
3. ``generate`` (``--per-label`` images per class) and the sampling rate of G_ema alone;
4. the preset's diffusion model (``train.ddpm``, bf16) for ``--ddpm-images`` images, its
   ``generate`` (DDIM at ``generate.steps``, bf16) and its DDIM sampling rate alone at 25 and
   50 steps (``--no-ddpm`` skips this);
5. ``evaluate`` of every synthetic set at the preset's feature input size (224 px for
   ``paper``), ``--bootstrap`` resamples (the preset's 1000 would only add CPU minutes). The
   features and the privacy audit's distances run on the device (``report.json``'s ``device``,
   copied into the JSON with the seconds of features, fidelity and privacy).

It writes OUT/gpu_check.json (and prints it): img/s of training (per resolution and overall),
generation and feature extraction; ``torch.cuda.max_memory_allocated`` per stage; and the
projected wall time of the preset's FULL training budget (80,000 images for ``paper``): the
images its schedule spends at each resolution divided by the rate measured at that
resolution (ticks after the first at each resolution, so kernel selection is not counted
as throughput), plus its number of ticks times the measured cost of a tick that writes a
checkpoint; for the diffusion model, its ``total_images`` at its steady rate plus its ticks.
OUT also gets the training stats, the last sample grids and the report summary.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from brainsynth import __version__
from brainsynth.config import PRESETS, RunConfig, load_config
from brainsynth.devices import resolve_device
from brainsynth.fsio import atomic_write_json, staged_output_dir
from brainsynth.train.loop import build_schedule

log = logging.getLogger("gpu_check")

TICKS_PER_PHASE = 2  # ticks per growth phase: a throughput figure per phase, few sample grids
CHECKPOINT_EVERY_TICKS = 8  # a few checkpoints, to time one (a 256 px PGGAN checkpoint is ~0.6 GB)
DDPM_TICKS = 4  # the diffusion model's ticks (its first has the kernel selection; one checkpoint at the end)
DDPM_STEPS = (25, 50)  # DDIM steps whose sampling rate is measured


# --- the stages ------------------------------------------------------------------------------

class Meter:
    """Wall time and peak GPU memory of each stage."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.stages: dict[str, dict[str, Any]] = {}

    def run(self, name: str, body):
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        out = body()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        wall = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(self.device) if self.cuda else None
        self.stages[name] = {"wall_s": round(wall, 3), "peak_gpu_memory_bytes": peak,
                             "peak_gpu_memory_gib": None if peak is None else round(peak / 2**30, 3)}
        log.info("%s: %.1f s%s", name, wall, "" if peak is None else f", peak GPU memory {peak / 2**30:.2f} GiB")
        return out


def check_config(preset: str, images: int, per_label: int, bootstrap: int, subjects: int | None,
                 overrides: list[str], ddpm_images: int = 0) -> RunConfig:
    """The preset with the check's bounds: a bf16 + channels_last PGGAN grown within ``images`` images,
    and a bf16 diffusion model trained on ``ddpm_images`` images (sampled in bf16)."""
    bounds = [
        "train.pggan.precision=bf16", "train.pggan.channels_last=true", "train.pggan.schedule=fit",
        f"train.pggan.total_images={images}", "train.pggan.progress_bar=false",
        f"train.pggan.checkpoint_every_ticks={CHECKPOINT_EVERY_TICKS}",
        f"generate.images_per_label={per_label}", f"evaluate.bootstrap={bootstrap}", "run.models=[pggan]",
    ]
    if ddpm_images:
        bounds += ["train.ddpm.precision=bf16", f"train.ddpm.total_images={ddpm_images}",
                   f"train.ddpm.tick_images={max(1, ddpm_images // DDPM_TICKS)}", "train.ddpm.progress_bar=false",
                   f"train.ddpm.checkpoint_every_ticks={DDPM_TICKS}", "generate.precision=bf16",
                   "run.models=[pggan,ddpm]"]
    if subjects is not None:
        bounds.append(f"cohort.subjects={subjects}")
    return load_config(preset, bounds + list(overrides))


def with_aligned_ticks(config: RunConfig, size: int) -> RunConfig:
    """Ticks of half a growth phase, so that no tick straddles two resolutions."""
    cfg = config.train["pggan"]
    n_res = sum(1 for k in range(2, 16) if cfg.start_resolution <= 2 ** k <= size)
    growth = 2 * (n_res - 1)  # growth phases: start stable, then a fade and a stable per step
    if growth:
        tick = int(cfg.total_images * (1.0 - cfg.final_share)) // growth // TICKS_PER_PHASE
    else:
        tick = cfg.total_images // 8
    return load_config(config, [f"train.pggan.tick_images={max(1, tick)}"])


def build_dataset(config: RunConfig, work: Path) -> Path:
    """A SIMULATED cohort prepared by the config's ``prepare`` section."""
    from brainsynth.data.layouts import InputSpec
    from brainsynth.data.phantom import make_cohort
    from brainsynth.data.prepare import prepare_dataset

    cohort = make_cohort(work / "cohort", config.cohort)
    return prepare_dataset(cohort, work / "dataset", config.prepare, InputSpec())


def sampling_rate(run_dir: Path, device: torch.device, n: int) -> float:
    """Images/s of G_ema alone (inference mode, the generate stage's batch size), after a warm-up."""
    from brainsynth.generate import load_generator_from_checkpoint, sample_images
    from brainsynth.train import checkpoint as ckpt

    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    G = load_generator_from_checkpoint(state)
    res, alpha, z_dim = int(state["progress"]["resolution"]), float(state["progress"]["alpha"]), int(state["config"]["z_dim"])
    labels, seeds = [i % 2 for i in range(n)], list(range(n))
    sample_images(G, labels[:8], seeds[:8], res, alpha, z_dim, device)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    sample_images(G, labels, seeds, res, alpha, z_dim, device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return n / (time.perf_counter() - t0)


def ddpm_sampling_rates(run_dir: Path, device: torch.device, n: int, precision: str) -> dict[str, float]:
    """Images/s of the diffusion model's DDIM chain alone at each of :data:`DDPM_STEPS`, guidance 0."""
    from brainsynth.generate import image_seed, load_generator_from_checkpoint, sample_diffusion
    from brainsynth.train import checkpoint as ckpt

    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))
    sampler = load_generator_from_checkpoint(state)
    res = int(state["progress"]["resolution"])
    labels, seeds = [i % 2 for i in range(n)], [image_seed(0, i % 2, i) for i in range(n)]
    sample_diffusion(sampler, labels[:8], seeds[:8], res, 2, 0.0, precision, device)  # warm-up
    rates = {}
    for steps in DDPM_STEPS:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        sample_diffusion(sampler, labels, seeds, res, steps, 0.0, precision, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates[str(steps)] = round(n / (time.perf_counter() - t0), 2)
    return rates


def project_ddpm(preset: str, size: int, stats: list[dict[str, Any]]) -> dict[str, Any]:
    """Projected wall time of the preset's full diffusion budget at the measured steady rate."""
    full = load_config(preset).train["ddpm"]
    full.resolution = size
    total = build_schedule(full).total_images
    steady = stats[1:] or stats
    rate = sum(float(s["img_per_s"]) * float(s["sec_per_tick"]) for s in steady) / max(
        1e-9, sum(float(s["sec_per_tick"]) for s in steady))
    work = tick_work(stats, 1)["with_checkpoint_s"] or 0.0  # every tick here writes a grid; the last a checkpoint
    n_ticks = -(-total // full.tick_images)
    seconds = total / rate + n_ticks * work
    return {"total_images": total, "steady_img_per_s": round(rate, 2), "ticks": n_ticks,
            "total_s": round(seconds, 1), "total_h": round(seconds / 3600, 3)}


# --- reading the training run -------------------------------------------------------------------

def read_stats(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines() if line.strip()]


def rates_by_resolution(stats: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Training img/s per resolution: all its ticks, and the steady rate (after its first tick)."""
    out: dict[int, dict[str, float]] = {}
    previous = 0
    by_res: dict[int, list[tuple[int, float]]] = {}
    for s in stats:
        by_res.setdefault(int(s["res"]), []).append((int(s["images_shown"]) - previous, float(s["sec_per_tick"])))
        previous = int(s["images_shown"])
    for res, ticks in sorted(by_res.items()):
        steady = ticks[1:] or ticks
        out[res] = {
            "ticks": len(ticks),
            "images": sum(n for n, _ in ticks),
            "img_per_s": sum(n for n, _ in ticks) / max(1e-9, sum(t for _, t in ticks)),
            "steady_img_per_s": sum(n for n, _ in steady) / max(1e-9, sum(t for _, t in steady)),
        }
    return out


def tick_work(stats: list[dict[str, Any]], every: int) -> dict[str, float | None]:
    """Mean seconds of tick work (sample grid, stats, checkpoint) with and without a checkpoint.

    A tick's work is what lies between one tick's record and the next one's steps:
    ``wall_s[k+1] - sec_per_tick[k+1] - wall_s[k]``.
    """
    with_ckpt, without = [], []
    for a, b in zip(stats, stats[1:]):
        work = float(b["wall_s"]) - float(b["sec_per_tick"]) - float(a["wall_s"])
        (with_ckpt if int(a["tick"]) % every == 0 else without).append(work)
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return {"with_checkpoint_s": mean(with_ckpt), "without_checkpoint_s": mean(without)}


def images_by_resolution(schedule) -> dict[int, int]:
    """Images the schedule spends at each resolution (a fade counts at the new resolution)."""
    bounds = schedule.boundaries() + [(schedule.total_images, "end", schedule.final_res)]
    out: dict[int, int] = {}
    for (start, _, res), (stop, _, _) in zip(bounds, bounds[1:]):
        stop = min(stop, schedule.total_images)
        if stop > start:
            out[res] = out.get(res, 0) + stop - start
    return out


def project(preset: str, size: int, rates: dict[int, dict[str, float]], work: dict[str, float | None]) -> dict[str, Any]:
    """Projected wall time of the preset's full PGGAN budget at the measured rates."""
    full = load_config(preset).train["pggan"]
    full.resolution = size
    schedule = build_schedule(full)
    images = images_by_resolution(schedule)
    missing = sorted(r for r in images if r not in rates)
    if missing:
        return {"total_images": schedule.total_images, "missing_resolutions": missing}
    steps_s = {r: n / rates[r]["steady_img_per_s"] for r, n in images.items()}
    n_ticks = -(-schedule.total_images // full.tick_images)
    # Every k-th tick writes a checkpoint, and the last one always does.
    n_ckpt = n_ticks // full.checkpoint_every_ticks + (1 if n_ticks % full.checkpoint_every_ticks else 0)
    per_ckpt = work["with_checkpoint_s"] or work["without_checkpoint_s"] or 0.0
    per_tick = work["without_checkpoint_s"] or per_ckpt
    ticks_s = n_ckpt * per_ckpt + (n_ticks - n_ckpt) * per_tick
    total = sum(steps_s.values()) + ticks_s
    return {
        "total_images": schedule.total_images,
        "images_by_resolution": {str(r): n for r, n in images.items()},
        "train_steps_s_by_resolution": {str(r): round(s, 1) for r, s in steps_s.items()},
        "ticks": n_ticks,
        "tick_work_s": round(ticks_s, 1),
        "total_s": round(total, 1),
        "total_h": round(total / 3600, 3),
    }


# --- main ---------------------------------------------------------------------------------------

def run_check(args: argparse.Namespace) -> dict[str, Any]:
    """The check itself; returns the result (also written to OUT/gpu_check.json)."""
    from brainsynth.evaluate import evaluate
    from brainsynth.generate import generate_images
    from brainsynth.train.loop import train

    device = resolve_device(args.device)
    preset = "tiny" if args.tiny else args.preset
    images = args.images or (256 if args.tiny else 9600)
    per_label = args.per_label or (12 if args.tiny else 500)
    bootstrap = args.bootstrap if args.bootstrap is not None else (10 if args.tiny else 100)
    ddpm_images = 0 if args.no_ddpm else (args.ddpm_images or (64 if args.tiny else 9600))
    config = check_config(preset, images, per_label, bootstrap, args.subjects, args.set, ddpm_images)
    meter = Meter(device)
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work) as tmp, \
            staged_output_dir(out, force=args.force) as stage:
        work = Path(tmp)
        if args.dataset:
            dataset = Path(args.dataset)
        else:
            dataset = meter.run("dataset", lambda: build_dataset(config, work))
        from brainsynth.data.dataset import load_dataset

        size = load_dataset(dataset).image_size
        config = with_aligned_ticks(config, size)
        tcfg = config.train["pggan"]
        run_dir = work / "run"
        meter.run("train", lambda: train(dataset, run_dir, tcfg, launch=config.source, device=str(device)))
        synthetic = work / "synthetic"
        meter.run("generate", lambda: generate_images(run_dir, synthetic, config.generate, device=str(device)))
        n_sample = 2 * per_label
        sample_img_s = meter.run("sample", lambda: sampling_rate(run_dir, device, n_sample))
        sets, runs = {"pggan": str(synthetic)}, {"pggan": str(run_dir)}
        ddpm_result = None
        if ddpm_images:
            ddpm_dir, ddpm_syn = work / "run_ddpm", work / "synthetic_ddpm"
            meter.run("train_ddpm", lambda: train(dataset, ddpm_dir, config.train["ddpm"], launch=config.source,
                                                  device=str(device)))
            meter.run("generate_ddpm", lambda: generate_images(ddpm_dir, ddpm_syn, config.generate,
                                                               device=str(device)))
            ddpm_rates = meter.run("sample_ddpm", lambda: ddpm_sampling_rates(ddpm_dir, device, n_sample,
                                                                              config.generate.precision))
            ddpm_stats = read_stats(ddpm_dir)
            ddpm_shown = int(ddpm_stats[-1]["images_shown"])
            ddpm_result = {
                "images": ddpm_shown,
                "img_per_s": round(ddpm_shown / meter.stages["train_ddpm"]["wall_s"], 2),
                "img_per_s_steps_only": round(ddpm_shown / sum(float(s["sec_per_tick"]) for s in ddpm_stats), 2),
                "generate": {"images": 2 * per_label, "steps": config.generate.steps,
                             "img_per_s_stage": round(2 * per_label / meter.stages["generate_ddpm"]["wall_s"], 2)},
                "img_per_s_sampling_by_steps": ddpm_rates,
                "projection": project_ddpm(preset, size, ddpm_stats),
            }
            sets["ddpm"], runs["ddpm"] = str(ddpm_syn), str(ddpm_dir)
        report = meter.run("evaluate", lambda: evaluate(dataset, sets, work / "report", config.evaluate, config.audit,
                                                        runs=runs, device=str(device)))
        stats = read_stats(run_dir)
        rates = rates_by_resolution(stats)
        work_s = tick_work(stats, tcfg.checkpoint_every_ticks)
        shown = int(stats[-1]["images_shown"])
        result = {
            "what": f"brainsynth {__version__} gpu_check: preset {preset!r}, PGGAN bf16 + channels_last",
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__,
            "python": platform.python_version(),
            "config": config.source,
            "dataset": {"path": str(dataset), "image_size": size, "built": not args.dataset},
            "train": {
                "images": shown,
                "img_per_s": round(shown / meter.stages["train"]["wall_s"], 2),
                "img_per_s_steps_only": round(shown / sum(float(s["sec_per_tick"]) for s in stats), 2),
                "img_per_s_by_resolution": {str(r): {k: round(v, 2) for k, v in d.items()} for r, d in rates.items()},
                "tick_images": tcfg.tick_images,
                "tick_work": {k: None if v is None else round(v, 3) for k, v in work_s.items()},
            },
            "generate": {"images": 2 * per_label,
                         "img_per_s_stage": round(2 * per_label / meter.stages["generate"]["wall_s"], 1),
                         "img_per_s_sampling": round(sample_img_s, 1)},
            "evaluate": {"input_size": config.evaluate.input_size, "features": config.evaluate.features,
                         "precision": config.evaluate.precision, "bootstrap": bootstrap,
                         "features_img_per_s": round(report.timings.evaluate_images_per_s_features, 1),
                         # features, the audit's distances (search, refinement, feature nearest neighbours)
                         # and generation all run on the device; the report records which one
                         "device": report.device, "features_s": round(report.timings.evaluate_features, 2),
                         "fidelity_s": round(report.timings.evaluate_fidelity, 2),
                         "privacy_s": round(report.timings.evaluate_privacy, 2)},
            "stages": meter.stages,
            "peak_gpu_memory_gib": max((s["peak_gpu_memory_gib"] or 0.0) for s in meter.stages.values())
            if device.type == "cuda" else None,
            "projection": project(preset, size, rates, work_s),
            "ddpm": ddpm_result,
        }
        atomic_write_json(stage / "gpu_check.json", result)
        shutil.copyfile(run_dir / "stats.jsonl", stage / "train_stats.jsonl")
        if (run_dir / "samples" / "latest.png").is_file():
            shutil.copyfile(run_dir / "samples" / "latest.png", stage / "samples.png")
        if ddpm_images and (work / "run_ddpm" / "samples" / "latest.png").is_file():
            shutil.copyfile(work / "run_ddpm" / "samples" / "latest.png", stage / "samples_ddpm.png")
        if (work / "report" / "report.md").is_file():
            shutil.copyfile(work / "report" / "report.md", stage / "report.md")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for gpu_check.json and the run's stats (refused if it exists)")
    p.add_argument("--force", action="store_true", help="replace --out")
    p.add_argument("--dataset", help="a prepared DATASET at the preset's size (default: build a simulated one)")
    p.add_argument("--preset", default="paper", choices=PRESETS)
    p.add_argument("--tiny", action="store_true", help="the tiny preset and budgets: seconds on a CPU (the test)")
    p.add_argument("--images", type=int, help="training images (default 9600; tiny 256)")
    p.add_argument("--per-label", type=int, help="generated images per class (default 500; tiny 12)")
    p.add_argument("--bootstrap", type=int, help="evaluation bootstrap resamples (default 100; tiny 10)")
    p.add_argument("--subjects", type=int, default=6, help="subjects of the simulated cohort (default 6)")
    p.add_argument("--ddpm-images", type=int, help="diffusion-model training images (default 9600; tiny 64)")
    p.add_argument("--no-ddpm", action="store_true", help="skip the diffusion model")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="any config override")
    p.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    p.add_argument("--work", default=None, help="parent of the temporary work folder (default: the system's)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    result = run_check(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
