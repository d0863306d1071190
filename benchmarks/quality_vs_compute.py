"""Quality against compute: how long must each generator train before its images are as close to
the real slices as a new real subject's?

For every generator (PGGAN, DCGAN, diffusion model) and every budget factor ``f`` of a geometric
series (default 1/4 .. 8 times the demo's per-fold budget), the script trains one run on one fold
of a prepared DATASET with ``brainsynth train`` in its own process on ONE thread, samples it with
``brainsynth generate`` and scores the samples with the report's own metrics against the fold's
real TRAINING slices, exactly as ``brainsynth evaluate`` does (SWD, FID, precision, recall;
:mod:`brainsynth.evaluate.fidelity`). The ``real-test`` row, the fold's real test slices scored
the same way, is the reference: a new real subject.

Budgets. A run's budget is ``f`` times a base: the PGGAN's ``compute_images`` (its compute
schedule, ``train.schedule: compute``, fits its growth phases to each budget: a PGGAN trained
for 2x the budget is a run of its own, not a snapshot of a longer one) and the DCGAN's and the
diffusion model's ``total_images``. The bases default to budgets of about equal CPU time on the
demo (``--base``). Every point is plotted at its MEASURED CPU seconds (the training process's
user + system time, from ``wait4``), so the bases only need to be roughly equal.

Usage (from the repository root, the project's venv)::

    python benchmarks/quality_vs_compute.py DATASET --out qvc            # train, sample, score, plot
    python benchmarks/quality_vs_compute.py DATASET --out qvc --score anchor=DIR   # score image sets only

Finished runs and sets under OUT are reused, so an interrupted benchmark continues. It writes
``OUT/quality_vs_compute.json`` (every number, the machine and its load) and
``OUT/quality_vs_compute.png`` (SWD, precision and recall against CPU seconds, one line per
generator, the real-test reference as a horizontal line), and prints a Markdown table
(``--json``: the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from brainsynth import LABELS  # noqa: E402
from brainsynth.config import load_config  # noqa: E402
from brainsynth.data.dataset import load_dataset  # noqa: E402
from brainsynth.evaluate import features as extractors  # noqa: E402
from brainsynth.evaluate import fidelity  # noqa: E402
from brainsynth.evaluate.feature_cache import FeatureStore  # noqa: E402
from brainsynth.fsio import atomic_write_bytes, atomic_write_text  # noqa: E402
from brainsynth.imageset import read_image_set  # noqa: E402
from brainsynth.timing import machine_busy_seconds  # noqa: E402

REFERENCE = "real-test"
MODELS = ("pggan", "dcgan", "ddpm")
# The diffusion model's base budget: about the demo DCGAN's CPU seconds (the demo preset's own
# 60,000 images took 1.7x the PGGAN's time, benchmarks/README.md). The PGGAN and the DCGAN take
# their preset's budgets (compute_images, total_images), which cost about the same.
DDPM_BASE_IMAGES = 40_000
DEFAULT_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
METRICS = ("swd", "fid", "precision", "recall")
PLOTTED = ("swd", "precision", "recall")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def default_base(config: str) -> dict[str, int | None]:
    """The base budgets from a preset: the PGGAN's compute_images, the DCGAN's total_images."""
    train = load_config(config).train
    return {"pggan": train["pggan"].compute_images, "dcgan": train["dcgan"].total_images, "ddpm": DDPM_BASE_IMAGES}


def parse_base(items: list[str], config: str = "demo") -> dict[str, int]:
    """``MODEL=IMAGES`` words -> the base budget of each model (the preset's for the others)."""
    base = default_base(config)
    for item in items:
        model, _, value = item.partition("=")
        if model not in MODELS or not value.isdigit() or int(value) < 1:
            raise SystemExit(f"--base {item}: expected MODEL=IMAGES with MODEL one of {', '.join(MODELS)}")
        base[model] = int(value)
    return base


def budget_sets(model: str, images: int) -> list[str]:
    """The ``--set`` keys that give one run its budget."""
    if model == "pggan":
        return [f"train.pggan.schedule=compute", "train.pggan.total_images=null", f"train.pggan.compute_images={images}"]
    return [f"train.{model}.total_images={images}"]


def run_name(model: str, factor: float) -> str:
    return f"{model}-x{factor:g}"


def _finished(run: Path) -> bool:
    progress = run / "progress.json"
    return progress.exists() and json.loads(progress.read_text()).get("finished", False)


def train_run(dataset: Path, out: Path, name: str, model: str, keys: list[str], args) -> dict:
    """Train one run (or reuse a finished one); its timing: CPU and wall seconds, machine load."""
    run = out / "runs" / name
    timing_file = run / "qvc_timing.json"
    if _finished(run) and timing_file.exists() and not args.force:
        return json.loads(timing_file.read_text())
    # An unfinished run starts over: its CPU seconds must be one process's.
    cmd = [sys.executable, "-m", "brainsynth", "train", str(dataset), "--model", model, "--out", str(run),
           "--config", args.config, "--fold", str(args.fold), "--repeat", str(args.repeat), "--force",
           "--set", "train.num_threads=1", "--set", "train.progress_bar=false", "--set", "train.tensorboard=false"]
    for kv in keys + list(args.set):
        cmd += ["--set", kv]
    print(f"training {name}, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    load0, busy0, t0 = os.getloadavg()[0], machine_busy_seconds(), time.perf_counter()
    with open(out / "logs" / f"{name}.train.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"training {name} failed: see {out / 'logs' / (name + '.train.log')}")
    cpu = usage.ru_utime + usage.ru_stime
    # The share of the machine's CPUs that other processes used while this run trained.
    others = max(0.0, machine_busy_seconds() - busy0 - cpu) / (wall * (os.cpu_count() or 1))
    progress = json.loads((run / "progress.json").read_text())
    timing = {"cpu_s": cpu, "wall_s": wall, "load_start": load0, "load_end": os.getloadavg()[0],
              "others_cpu_share": others, "images_shown": progress["images_shown"]}
    atomic_write_text(timing_file, json.dumps(timing))
    return timing


def growing_points(dataset: Path, out: Path, factors: list[float], base: int, args) -> dict[float, dict]:
    """The PGGAN: one run per budget, its compute schedule fitted to that budget."""
    points = {}
    for factor in factors:
        images = max(1, round(factor * base))
        timing = train_run(dataset, out, run_name("pggan", factor), "pggan", budget_sets("pggan", images), args)
        points[factor] = {**timing, "budget_images": images}
    return points


def snapshot_points(dataset: Path, out: Path, model: str, factors: list[float], base: int, args) -> dict[float, dict]:
    """A model that does not grow: one run to the largest budget, a checkpoint at every smaller one.

    Without a growth schedule a run trained for budget b is the first b images of a longer one,
    so each point is a checkpoint of one run, at the CPU seconds its process had used by then
    (``process_cpu_s`` of that tick in ``stats.jsonl``).
    """
    from brainsynth.train import checkpoint as ckpt
    from brainsynth.train.observe import read_stats

    step = min(factors)
    multiples = [factor / step for factor in factors]
    if any(abs(m - round(m)) > 1e-9 for m in multiples):
        raise SystemExit(f"--factors {' '.join(f'{f:g}' for f in factors)}: every factor must be a whole multiple "
                         f"of the smallest, {step:g} (the {model} is checkpointed at its multiples)")
    tick, ticks = max(1, round(step * base)), round(max(multiples))
    keys = budget_sets(model, tick * ticks) + [f"train.{model}.tick_images={tick}",
                                               f"train.{model}.checkpoint_every_ticks=1",
                                               f"train.{model}.checkpoint_keep={ticks + 1}"]
    name = f"{model}-long"
    timing = train_run(dataset, out, name, model, keys, args)
    stats = read_stats(out / "runs" / name)
    points = {}
    for factor, multiple in zip(factors, multiples):
        record = stats[round(multiple) - 1]
        snapshot = out / "runs" / run_name(model, factor) / ckpt.CHECKPOINT_DIR
        snapshot.mkdir(parents=True, exist_ok=True)
        target = snapshot / ckpt.checkpoint_name(record["images_shown"])
        if not target.exists():
            os.link(out / "runs" / name / ckpt.CHECKPOINT_DIR / target.name, target)
        points[factor] = {"cpu_s": record["process_cpu_s"], "wall_s": record["wall_s"],
                          "images_shown": record["images_shown"], "budget_images": round(factor * base),
                          **{k: timing[k] for k in ("load_start", "load_end", "others_cpu_share")}}
    return points


def generate(out: Path, name: str, args) -> Path:
    """``brainsynth generate``'s images of a run (in this process: sampling needs no isolation)."""
    from brainsynth.generate import generate_images

    run, images = out / "runs" / name, out / "sets" / name
    if images.exists() and not args.force:
        return images
    cfg = load_config(args.config, [("generate.images_per_label", args.images_per_label, "--images-per-label")])
    return generate_images(run, images, cfg.generate, device="cpu", force=True)


def score(dataset: Path, sets: dict[str, Path], args, cache: Path) -> dict[str, dict]:
    """Every image set, and the fold's real test slices, against the fold's real training slices."""
    view = load_dataset(dataset, fold=args.fold, repeat=args.repeat)
    train_idx, test_idx = view.indices("train"), view.indices("test")
    labels = view.table["label"].to_numpy().astype(str)
    subjects = view.table["subject"].to_numpy().astype(str)
    cfg = load_config(args.config).evaluate
    store = FeatureStore(extractors.get_extractor(cfg, device="cpu"), cache)
    feats = store.dataset(view)  # [rows, D]
    compared = {REFERENCE: (view.float_images(test_idx), labels[test_idx], feats[test_idx])}
    for name, folder in sets.items():
        synth = read_image_set(folder)
        compared[name] = (synth.images, synth.labels, store.images(synth.images, what=name))
    numbers = fidelity.fidelity_reports(view.float_images(train_idx), labels[train_idx], feats[train_idx], compared,
                                        labels=LABELS, seed=args.eval_seed, real_subjects=subjects[train_idx],
                                        synth_subjects={REFERENCE: subjects[test_idx]})
    return {name: {"swd": n["swd"]["avg"], "swd_levels": n["swd"], "fid": n["fid"], "precision": n["precision"],
                   "recall": n["recall"], "density": n["density"], "coverage": n["coverage"],
                   "background": n["background"]} for name, n in numbers.items()}


def first_within(points: list[dict], reference: dict, key: str = "swd", ratio: float = 1.2) -> float | None:
    """CPU seconds of the cheapest point whose ``key`` is within ``ratio`` x the reference's (lower is better)."""
    good = [p["cpu_s"] for p in points if p.get(key) is not None and p[key] <= ratio * reference[key]]
    return min(good) if good else None


def figure(result: dict) -> bytes:
    """PNG: SWD, precision and recall against CPU seconds, one line per generator, the reference dashed."""
    from matplotlib.figure import Figure

    from brainsynth.evaluate.report.figures import png_bytes

    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, len(PLOTTED))
    ref = result["reference"]
    for ax, key in zip(axes, PLOTTED):
        for model in result["models"]:
            pts = sorted((p for p in result["points"] if p["model"] == model), key=lambda p: p["cpu_s"])
            if pts:
                ax.plot([p["cpu_s"] for p in pts], [p[key] for p in pts], marker="o", label=model)
        for name, p in result.get("extra", {}).items():
            if p.get("cpu_s"):
                ax.plot([p["cpu_s"]], [p[key]], marker="*", markersize=12, linestyle="none", label=name)
        ax.axhline(ref[key], color="black", linestyle="--", label=f"{REFERENCE} (reference)")
        if result.get("demo_cpu_s"):
            ax.axvline(result["demo_cpu_s"], color="grey", linestyle=":", label="demo budget")
        ax.set_xscale("log")
        ax.set_xlabel("training CPU seconds (one thread)")
        ax.set_title(key.upper() if key == "swd" else key)
        if key == "swd":
            ax.set_yscale("log")
            ax.set_ylabel("SWD x1e3 (lower is better)")
        else:
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"{key} (higher is better)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"quality against compute, fold {result['fold']}: {result['machine']}", fontsize=9)
    return png_bytes(fig)


def table(result: dict) -> str:
    lines = ["| generator | budget | images shown | CPU s | wall s | others' CPU share | SWD | FID | precision | recall |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in result["points"]:
        lines.append(f"| {p['model']} | x{p['factor']:g} | {p['images_shown']:,} | {p['cpu_s']:.0f} | {p['wall_s']:.0f} "
                     f"| {p['others_cpu_share']:.2f} | {p['swd']:.2f} | {p['fid']:.3f} | {p['precision']:.3f} "
                     f"| {p['recall']:.3f} |")
    for name, p in result.get("extra", {}).items():
        lines.append(f"| {name} | | | {p.get('cpu_s') or ''} | | | {p['swd']:.2f} | {p['fid']:.3f} "
                     f"| {p['precision']:.3f} | {p['recall']:.3f} |")
    r = result["reference"]
    lines.append(f"| {REFERENCE} (reference) | | | | | | {r['swd']:.2f} | {r['fid']:.3f} | {r['precision']:.3f} "
                 f"| {r['recall']:.3f} |")
    lines.append("")
    for model, cpu in result["swd_within_1_2x_reference_at_cpu_s"].items():
        lines.append(f"{model}: SWD within 1.2x of the reference "
                     + (f"from {cpu:.0f} CPU s" if cpu is not None else "at no budget measured"))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", type=Path, help="prepared DATASET (brainsynth prepare)")
    p.add_argument("--out", type=Path, required=True, help="folder of the runs, sets, logs, JSON and figure")
    p.add_argument("--fold", type=int, default=0)
    p.add_argument("--repeat", type=int, default=0)
    p.add_argument("--config", default="demo", help="preset or YAML file (default demo)")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--factors", type=float, nargs="+", default=list(DEFAULT_FACTORS),
                   help="budget factors of the base budgets (default 1/4 .. 8)")
    p.add_argument("--base", nargs="+", default=[], metavar="MODEL=IMAGES",
                   help="base budget per model: the PGGAN's compute_images and the DCGAN's total_images (default: "
                        f"the preset's), the diffusion model's total_images (default {DDPM_BASE_IMAGES})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config key for every training run (e.g. train.seed=1; repeatable)")
    p.add_argument("--images-per-label", type=int, default=300, help="synthetic images per class and point")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the metrics' subsets and patches")
    p.add_argument("--demo-factor", type=float, default=1.0, help="the factor drawn as the demo's budget")
    p.add_argument("--score", nargs="+", default=[], metavar="NAME=DIR[:CPU_S]",
                   help="only score these image sets (brainsynth generate's layout) beside the reference")
    p.add_argument("--force", action="store_true", help="retrain and resample every point")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    return p.parse_args(argv)


def _machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = parse_base(args.base, args.config)
    missing = [m for m in args.models if not base.get(m)] if not args.score else []
    if missing:
        raise SystemExit(f"--base: the preset gives no budget for {', '.join(missing)}; pass --base MODEL=IMAGES")
    for sub in ("runs", "sets", "logs"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    started = time.time()
    result: dict = {"dataset": str(args.dataset), "fold": args.fold, "repeat": args.repeat, "config": args.config,
                    "machine": _machine(), "models": [], "factors": args.factors, "base": base, "points": [],
                    "extra": {}, "images_per_label": args.images_per_label}
    extra = {}
    for item in args.score:
        name, _, rest = item.partition("=")
        folder, _, cpu = rest.partition(":")
        if not name or not folder:
            raise SystemExit(f"--score {item}: expected NAME=DIR[:CPU_S]")
        extra[name] = (Path(folder), float(cpu) if cpu else None)
    timings = {}
    if not args.score:
        result["models"] = list(args.models)
        factors = sorted(args.factors)
        for model in args.models:
            found = (growing_points(args.dataset, args.out, factors, base[model], args) if model == "pggan" else
                     snapshot_points(args.dataset, args.out, model, factors, base[model], args))
            timings.update({(model, f): t for f, t in found.items()})
    sets = {run_name(m, f): generate(args.out, run_name(m, f), args) for m, f in timings}
    sets.update({name: folder for name, (folder, _) in extra.items()})
    scores = score(args.dataset, sets, args, args.out / "features")
    result["reference"] = scores[REFERENCE]
    for (model, factor), timing in timings.items():
        result["points"].append({"model": model, "factor": factor, **timing, **scores[run_name(model, factor)]})
    for name, (_, cpu) in extra.items():
        result["extra"][name] = {"cpu_s": cpu, **scores[name]}
    demo = [p["cpu_s"] for p in result["points"] if p["factor"] == args.demo_factor and p["model"] == "pggan"]
    result["demo_cpu_s"] = demo[0] if demo else None
    result["swd_within_1_2x_reference_at_cpu_s"] = {
        m: first_within([p for p in result["points"] if p["model"] == m], result["reference"]) for m in result["models"]}
    result["wall_s"] = time.time() - started
    atomic_write_text(args.out / "quality_vs_compute.json", json.dumps(result, indent=1))
    if result["points"]:
        atomic_write_bytes(args.out / "quality_vs_compute.png", figure(result))
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
