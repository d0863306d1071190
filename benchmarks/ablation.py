"""Training ablation: train, sample and score a list of settings, one row per setting.

Each setting is a model and a list of ``train`` keys (the keys of ``brainsynth train --set``).
For every seed, the script trains each setting with ``brainsynth train`` in its own process on
ONE thread, samples it with ``brainsynth generate``, and scores the synthetic set against the
dataset's REAL TEST images with the report's own metrics (:mod:`brainsynth.evaluate.fidelity`):
SWD averaged over the Laplacian levels (Karras et al. 2018), FID (Heusel et al. 2017), KID
(Binkowski et al. 2018), precision/recall (Kynkaanniemi et al. 2019), density/coverage (Naeem
et al. 2020), and the mean background intensity outside the real brains. The row ``real-train``
scores the real train split against the same test images: it is the scale of each metric (two
real samples of different subjects).

Settings run in groups of ``--side-by-side`` processes started together (default 2), in the
order given: put a PGGAN and the DCGAN it is compared with next to each other, so that their wall
times are taken under the same load. The table shows each run's wall time (training alone, from
the run's ``progress.json``, and the whole ``brainsynth train`` process) and the 1-minute load
average when its group started.

Usage (from the repository root, the project's venv)::

    python -m brainsynth phantom C && python -m brainsynth prepare C --out D
    python benchmarks/ablation.py D --out ablation \
        --setting demo pggan \
        --setting dcgan dcgan time_budget_s=150 total_images=1000000 \
        --setting wide pggan "widths={4: 128, 8: 128, 16: 64, 32: 32, 64: 32}" \
        --seeds 0 1 2

Finished runs and synthetic sets under OUT are reused (``--force`` redoes them), so the table
can be rebuilt, or a seed added, without training again. The table is printed as Markdown and
written with every number to ``OUT/ablation.json`` (``--json`` prints the JSON instead).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from brainsynth import LABELS  # noqa: E402
from brainsynth.config import load_config  # noqa: E402
from brainsynth.data.dataset import load_dataset  # noqa: E402
from brainsynth.evaluate import features as extractors  # noqa: E402
from brainsynth.evaluate import fidelity  # noqa: E402
from brainsynth.evaluate.feature_cache import FeatureStore  # noqa: E402
from brainsynth.evaluate.report.figures import figure_samples  # noqa: E402
from brainsynth.fsio import atomic_write_text  # noqa: E402
from brainsynth.imageset import read_image_set  # noqa: E402

REFERENCE = "real-train"
COLUMNS = ("swd", "fid", "kid", "precision", "recall", "density", "coverage", "background", "train_s", "process_s",
           "cpu_s", "images", "load")


def parse_setting(words: list[str]) -> dict:
    """``NAME MODEL [KEY=VALUE ...]`` -> {"name", "model", "sets"}."""
    if len(words) < 2 or words[1] not in ("pggan", "dcgan"):
        raise SystemExit(f"--setting {' '.join(words)}: expected NAME MODEL [KEY=VALUE ...] with MODEL pggan or dcgan")
    bad = [w for w in words[2:] if "=" not in w]
    if bad:
        raise SystemExit(f"--setting {words[0]}: {bad[0]!r} is not KEY=VALUE")
    if words[0] == REFERENCE:
        raise SystemExit(f"--setting {REFERENCE}: the name is reserved for the real reference row")
    return {"name": words[0], "model": words[1], "sets": words[2:]}


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _finished(run: Path) -> bool:
    progress = run / "progress.json"
    return progress.exists() and json.loads(progress.read_text()).get("finished", False)


def train_group(dataset: Path, out: Path, group: list[dict], seed: int, config: str, force: bool) -> None:
    """Train a group of settings side by side, one process and one thread each."""
    todo = [s for s in group if force or not _finished(out / "runs" / f"{s['name']}-s{seed}")]
    if not todo:
        return
    load = os.getloadavg()[0]
    procs = []
    for s in todo:
        run = out / "runs" / f"{s['name']}-s{seed}"
        cmd = [sys.executable, "-m", "brainsynth", "train", str(dataset), "--model", s["model"], "--out", str(run),
               "--config", config, "--force", "--set", f"seed={seed}", "--set", "num_threads=1",
               "--set", "progress_bar=false", "--set", "tensorboard=false"]
        for kv in s["sets"]:
            cmd += ["--set", kv]
        log = open(out / "logs" / f"{s['name']}-s{seed}.train.log", "w")
        procs.append((s, run, time.perf_counter(), subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                                      env=_env()), log))
        print(f"[seed {seed}] training {s['name']} ({s['model']}) load {load:.2f}", file=sys.stderr, flush=True)
    waiting = {proc.pid: (s, run, start, proc, log) for s, run, start, proc, log in procs}
    while waiting:
        # wait4 on whichever run ends first: its own wall time and its CPU time. On a shared
        # machine a run's wall time depends on the others' load, its CPU seconds (one thread)
        # much less: they are the cost to compare.
        pid, status, usage = os.wait4(-1, 0)
        if pid not in waiting:
            continue
        s, run, start, proc, log = waiting.pop(pid)
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        log.close()
        if rc:
            raise SystemExit(f"training {s['name']} seed {seed} failed (exit {rc}): see {log.name}")
        timing = {"process_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime, "load": load,
                  "load_end": os.getloadavg()[0]}
        atomic_write_text(run / "ablation_timing.json", json.dumps(timing))


def generate(out: Path, setting: dict, seed: int, per_label: int, config: str, force: bool) -> Path:
    run, images = out / "runs" / f"{setting['name']}-s{seed}", out / "sets" / f"{setting['name']}-s{seed}"
    if images.exists() and not force:
        return images
    cmd = [sys.executable, "-m", "brainsynth", "generate", str(run), "--out", str(images), "--config", config,
           "--n", str(per_label), "--force"]
    subprocess.run(cmd, check=True, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return images


def score(real_images: np.ndarray, real_labels: np.ndarray, real_feats: np.ndarray,
          sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], seed: int,
          real_subjects: np.ndarray | None = None, set_subjects: dict[str, np.ndarray] | None = None) -> dict[str, dict]:
    """The fidelity numbers and background of every set against the real test images.

    ``real_subjects`` [N] and ``set_subjects`` (name -> [M], for the sets of real images) keep a
    real image's k-NN ball from ending at a slice of its own subject, as in ``brainsynth evaluate``.
    """
    numbers = fidelity.fidelity_reports(real_images, real_labels, real_feats, sets, labels=LABELS, seed=seed,
                                        real_subjects=real_subjects, synth_subjects=set_subjects)
    rows = {}
    for name, n in numbers.items():
        bg = fidelity.background_fidelity(real_images, sets[name][0])
        rows[name] = {"swd": n["swd"]["avg"], "fid": n["fid"], "kid": n["kid_mean"], "precision": n["precision"],
                      "recall": n["recall"], "density": n["density"], "coverage": n["coverage"],
                      "background": bg["synthetic"], "background_real": bg["real"], "swd_levels": n["swd"]}
    return rows


def run_info(run: Path) -> dict:
    progress = json.loads((run / "progress.json").read_text())
    timing = json.loads((run / "ablation_timing.json").read_text()) if (run / "ablation_timing.json").exists() else {}
    stats = (run / "stats.jsonl").read_text().splitlines()
    last = json.loads(stats[-1]) if stats else {}
    return {"train_s": last.get("wall_s"), "images": progress.get("images_shown"),
            "resolution": progress.get("resolution"), "process_s": timing.get("process_s"), "cpu_s": timing.get("cpu_s"),
            "load": timing.get("load"), "load_end": timing.get("load_end")}


def aggregate(rows: list[dict]) -> dict:
    """Mean and sample standard deviation (over seeds) of every numeric column."""
    out = {"seeds": len(rows)}
    for key in COLUMNS:
        values = [r[key] for r in rows if r.get(key) is not None]
        if values:
            out[key] = float(np.mean(values))
            out[key + "_sd"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return out


def table(settings: list[dict], summary: dict, background_real: float) -> str:
    fmt = {"swd": "{:.2f}", "fid": "{:.3g}", "kid": "{:.2e}", "precision": "{:.3f}", "recall": "{:.3f}",
           "density": "{:.3f}", "coverage": "{:.3f}", "background": "{:.3f}", "train_s": "{:.0f}",
           "process_s": "{:.0f}", "cpu_s": "{:.0f}", "images": "{:.0f}", "load": "{:.1f}"}
    head = "| setting | model | keys | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * 3 + "---:|" * len(COLUMNS)]
    meta = {s["name"]: s for s in settings}
    for name, agg in summary.items():
        cells = []
        for key in COLUMNS:
            if key not in agg:
                cells.append("")
                continue
            cell = fmt[key].format(agg[key])
            if agg["seeds"] > 1 and key not in ("images", "load"):
                cell += " ± " + fmt[key].format(agg[key + "_sd"])
            cells.append(cell)
        s = meta.get(name, {"model": "real", "sets": ["train split"]})
        lines.append(f"| {name} | {s['model']} | {' '.join(s['sets']) or '(preset)'} | " + " | ".join(cells) + " |")
    lines.append(f"\nreal test background: {background_real:.4f}; metrics against the real test split; "
                 f"mean ± sd over seeds where more than one")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dataset", type=Path, help="prepared DATASET (brainsynth prepare)")
    p.add_argument("--out", type=Path, required=True, help="folder of the runs, sets, logs and ablation.json")
    p.add_argument("--setting", nargs="+", action="append", required=True, metavar="WORD",
                   help="NAME MODEL [KEY=VALUE ...]: train keys as for brainsynth train --set (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (train.seed)")
    p.add_argument("--side-by-side", type=int, default=2, help="settings trained at once, in the order given")
    p.add_argument("--config", default="demo", help="preset or YAML file (default demo)")
    p.add_argument("--images-per-label", type=int, default=500, help="synthetic images per class")
    p.add_argument("--eval-seed", type=int, default=0, help="seed of the metrics' subsets and patches")
    p.add_argument("--grids", nargs="+", default=[], metavar="NAME",
                   help="write OUT/grids/NAME-sSEED.png: the setting's samples beside real training slices")
    p.add_argument("--score-only", action="store_true", help="score what exists under OUT, train nothing")
    p.add_argument("--force", action="store_true", help="retrain and resample every run")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    args = p.parse_args(argv)

    settings = [parse_setting(words) for words in args.setting]
    if len({s["name"] for s in settings}) != len(settings):
        raise SystemExit("--setting: every setting needs its own NAME")
    for sub in ("runs", "sets", "logs"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)

    started = time.time()
    if not args.score_only:
        for seed in args.seeds:
            for i in range(0, len(settings), args.side_by_side):
                train_group(args.dataset, args.out, settings[i:i + args.side_by_side], seed, args.config, args.force)

    dataset = load_dataset(args.dataset)
    test_idx, train_idx = dataset.indices("test"), dataset.indices("train")
    labels = dataset.table["label"].to_numpy().astype(str)
    test_images, train_images = dataset.float_images(test_idx), dataset.float_images(train_idx)
    cfg = load_config(args.config).evaluate
    store = FeatureStore(extractors.get_extractor(cfg, device="cpu"), args.out / "features")  # reruns reuse them
    feats = store.dataset(dataset)  # [rows, D]
    sets = {REFERENCE: (train_images, labels[train_idx], feats[train_idx])}
    runs: dict[str, dict] = {}
    for seed in args.seeds:
        for s in settings:
            key = f"{s['name']}-s{seed}"
            if not _finished(args.out / "runs" / key):
                print(f"skipping {key}: no finished run", file=sys.stderr)
                continue
            synth = read_image_set(generate(args.out, s, seed, args.images_per_label, args.config, args.force))
            sets[key] = (synth.images, synth.labels, store.images(synth.images, what=key))
            runs[key] = {"setting": s["name"], "seed": seed, **run_info(args.out / "runs" / key)}
    for key, info in runs.items():
        if info["setting"] in args.grids:
            (args.out / "grids").mkdir(exist_ok=True)
            real = SimpleNamespace(images=train_images, labels=labels[train_idx])
            synth = SimpleNamespace(images=sets[key][0], labels=sets[key][1])
            (args.out / "grids" / f"{key}.png").write_bytes(figure_samples(real, synth, info["setting"]))
    subjects = dataset.table["subject"].to_numpy().astype(str)
    rows = score(test_images, labels[test_idx], feats[test_idx], sets, args.eval_seed, real_subjects=subjects[test_idx],
                 set_subjects={REFERENCE: subjects[train_idx]})
    for key, info in runs.items():
        rows[key].update(info)
    summary = {REFERENCE: aggregate([rows[REFERENCE]])}
    for s in settings:
        mine = [rows[k] for k, info in runs.items() if info["setting"] == s["name"]]
        if mine:
            summary[s["name"]] = aggregate(mine)
    result = {"dataset": str(args.dataset), "config": args.config, "seeds": args.seeds, "settings": settings,
              "images_per_label": args.images_per_label, "features": cfg.features, "input_size": cfg.input_size,
              "background_real": rows[REFERENCE]["background_real"], "runs": rows, "summary": summary,
              "wall_s": time.time() - started}
    atomic_write_text(args.out / "ablation.json", json.dumps(result, indent=1))
    print(json.dumps(result, indent=1) if args.json else table(settings, summary, result["background_real"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
