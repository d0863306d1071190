"""Every stage's cost against cohort size: wall time, CPU time and peak memory of one fold's evaluation.

Simulated cohorts of increasing size (``--subjects 12 48 120 240``) are rendered ONCE as the
largest cohort (the phantom code called directly, so the 99-subject cap of ``brainsynth phantom``,
which exists for its two-digit ids, does not apply); each smaller cohort is the first half of each
class of it, linked, not copied. Each cohort is prepared at every ``--sizes`` side with the
preset's ``prepare`` section (3 subject folds in the demo preset). The synthetic side is FIXED so
that training does not dominate and every cohort is compared against the same images: two sets
of ``--synthetic`` images (half per class), slices of a separate simulated cohort (seed 1) each
re-acquired by a random transform of the audit's ``combined`` family.

Each measurement runs in its own process, one at a time:

- ``prepare``: ``brainsynth prepare`` of the cohort (wall, CPU and peak memory from ``wait4``);
- ``evaluate``: ``brainsynth evaluate`` of fold 0 against both sets, with the preset's evaluate
  and audit sections; its stages (the Stopwatch's ``load``, ``features``, ``gan_train``,
  ``fidelity``, ``privacy``, ``pool``, plus ``figures`` and ``report``) each get wall seconds,
  CPU seconds of the process and the peak resident memory sampled every 10 ms while the stage
  ran; the whole process's peak comes from ``wait4``.

The load is recorded beside every measurement: the 1-minute load average and the share of all
CPUs used by OTHER processes while it ran (``/proc/stat`` minus the child's own CPU time).

Afterwards, per image size and stage, the growth exponent ``b`` of ``cost = a * slices^b`` is
fitted by least squares in log-log over all cohorts (``slices`` = the fold's training slices),
of wall seconds (``features``...) and of CPU seconds (``features_cpu``...: what to compare on a
shared machine), and the local exponent between the two largest cohorts is given beside it; the
extrapolation to ``--extrapolate`` subjects (960: ADHD-200) uses the larger of the two, so growth
that steepens is not hidden by the small cohorts. A log-log figure of CPU seconds per stage and of
peak memory (``cohort_scale.png``) and ``cohort_scale.json`` go to OUT.

    PYTHONPATH=src .venv/bin/python benchmarks/cohort_scale.py --out /tmp/scale --subjects 12 48 120 240 \\
        --sizes 32 64 --threads 1
    .venv/bin/python benchmarks/cohort_scale.py --out /tmp/scale --fit-only   # refit and redraw saved results

``--tiny`` is the test's scale: a coarse phantom grid, the tiny preset (16 px, pool5 features), a
4-subject stand-in cohort.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("load", "features", "gan_train", "fidelity", "privacy", "figures", "pool", "report")
TINY_GRID = (96, 96, 60)


# --- cohorts and datasets ----------------------------------------------------------------------

def render_cohort(root: Path, subjects: int, seed: int, grid: tuple[int, int, int] | None) -> Path:
    """A BIDS folder of ``subjects`` simulated subjects (ids sub-001...), rendered once and resumable."""
    import pandas as pd

    from brainsynth.data.phantom import (GRID_SHAPE, _nifti_bytes, assign_diagnoses, draw_subject, grid_affine,
                                         load_template, render_subject)

    shape = tuple(grid) if grid else GRID_SHAPE
    done = root / "participants.tsv"
    if done.is_file() and len(pd.read_csv(done, sep="\t")) == subjects:
        return root
    diagnoses = assign_diagnoses(subjects, 0.5, seed)
    template, affine = load_template("mni152-2009"), grid_affine(shape)
    rows = []
    for i, diagnosis in enumerate(diagnoses):
        sid = f"sub-{i + 1:03d}"
        path = root / sid / "anat" / f"{sid}_T1w.nii.gz"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            volume = render_subject(draw_subject(seed, i, diagnosis, 1.0, "neonatal"), shape, template)
            part = path.with_name(path.name + ".part")
            part.write_bytes(_nifti_bytes(volume, affine))
            part.rename(path)
        rows.append({"participant_id": sid, "diagnosis": diagnosis})
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "brainsynth cohort_scale benchmark (SIMULATED)", "BIDSVersion": "1.9.0", "Simulated": True}))
    pd.DataFrame(rows).to_csv(done, sep="\t", index=False)
    return root


def sub_cohort(full: Path, root: Path, subjects: int) -> Path:
    """The first ``subjects / 2`` subjects of each class of ``full``, as links (a BIDS folder)."""
    import pandas as pd

    table = pd.read_csv(full / "participants.tsv", sep="\t")
    if subjects >= len(table):
        return full
    half = subjects // 2
    keep = pd.concat([g.head(half if label == "adhd" else subjects - half)
                      for label, g in table.groupby("diagnosis")]).sort_values("participant_id")
    if (root / "participants.tsv").is_file():
        return root
    root.mkdir(parents=True, exist_ok=True)
    for sid in keep["participant_id"]:
        if not (root / sid).exists():
            (root / sid).symlink_to((full / sid).resolve(), target_is_directory=True)
    (root / "dataset_description.json").write_text((full / "dataset_description.json").read_text())
    keep.to_csv(root / "participants.tsv", sep="\t", index=False)
    return root


def stand_in_sets(source: Path, out: Path, n_images: int, n_sets: int, seed: int) -> list[Path]:
    """``n_sets`` image sets of ``n_images`` (half per class): slices of ``source`` re-acquired at random."""
    from brainsynth.data.dataset import load_dataset
    from brainsynth.evaluate.privacy.planting import apply_plant, draw_plant
    from brainsynth.evaluate.privacy.registration import Family
    from brainsynth.imageset import write_image_set

    paths = []
    ds = load_dataset(source)
    for k in range(n_sets):
        path = out / f"set{k}"
        paths.append(path)
        if (path / "metadata.json").is_file():
            continue
        rng = np.random.default_rng([seed, k])
        images, records = [], []
        for label in ("control", "adhd"):
            rows = ds.indices(label=label)
            for j in rng.choice(rows, n_images // 2, replace=n_images // 2 > len(rows)):
                image = ds.float_images([j])[0]
                images.append(apply_plant(image, draw_plant("combined", rng, Family(), image.shape[-1]), rng))
                records.append({"label": label, "seed": int(j)})
        write_image_set(path, np.stack(images), records, synthetic=True, fmt="npz",
                        extra_meta={"stand_in": f"re-acquired slices of {source}"})
    return paths


# --- measuring a child process ---------------------------------------------------------------------

def _busy() -> float:
    sys.path.insert(0, str(SRC))
    from brainsynth.timing import machine_busy_seconds

    return machine_busy_seconds()


def run_measured(args: list[str], env: dict) -> dict:
    """Run a command; its wall time, the load while it ran, and its last stdout line (JSON: its CPU and memory)."""
    busy0, load0, t0 = _busy(), os.getloadavg()[0], time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    payload = json.loads(lines[-1]) if lines else {}
    others = (_busy() - busy0 - payload.get("cpu_s", 0.0)) / max(wall * (os.cpu_count() or 1), 1e-9)
    return {**payload, "process_wall_s": round(wall, 2),
            "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
            "others_cpu_share": round(min(max(others, 0.0), 1.0), 3)}


def own_usage() -> dict:
    """This process's CPU seconds (children included) and peak resident memory (the largest of it and its children)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"cpu_s": round(me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime, 2),
            "maxrss_gb": round(max(me.ru_maxrss, kids.ru_maxrss) * 1024 / 2**30, 3)}


def child_env(threads: int, source: Path) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               PYTHONPATH=str(source))
    return env


# --- inside the child ------------------------------------------------------------------------------

class StageMeter:
    """Peak resident memory and CPU seconds per Stopwatch stage, sampled from a thread every 10 ms."""

    def __init__(self):
        import threading

        self.current = "-"
        self.stages: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            entry = self.stages.get(self.current)
            if entry is not None:
                entry["peak_rss"] = max(entry["peak_rss"], self.rss())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def enter(self, name: str):
        import contextlib

        @contextlib.contextmanager
        def timed():
            previous, self.current = self.current, name
            entry = self.stages.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "peak_rss": 0})
            entry["peak_rss"] = max(entry["peak_rss"], self.rss())
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                yield
            finally:
                entry["wall_s"] += time.perf_counter() - t0
                entry["cpu_s"] += time.process_time() - c0
                entry["peak_rss"] = max(entry["peak_rss"], self.rss())
                self.current = previous
        return timed()


def hook_stages(meter: StageMeter) -> None:
    """Meter every Stopwatch stage, plus the fold's figures and the report's writing."""
    import functools

    from brainsynth import timing
    from brainsynth.evaluate import commands, folds

    inner = timing.Stopwatch.time

    def time_stage(self, name):
        import contextlib

        @contextlib.contextmanager
        def both():
            with meter.enter(name), inner(self, name):
                yield
        return both()

    timing.Stopwatch.time = time_stage
    for module, name, stage in ((folds, "fold_figures", "figures"), (commands, "write_report", "report")):
        original = getattr(module, name)

        def metered(*a, _original=original, _stage=stage, **k):
            with meter.enter(_stage):
                return _original(*a, **k)
        setattr(module, name, functools.wraps(original)(metered))


def child_evaluate(ns: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(ns.threads)
    from brainsynth.config import load_config
    from brainsynth.data.dataset import load_dataset
    from brainsynth.evaluate.commands import evaluate

    meter = StageMeter()
    hook_stages(meter)
    cfg = load_config(ns.config, [(k, v, "--set") for k, v in (s.split("=", 1) for s in ns.set or [])])
    view = load_dataset(ns.dataset).fold(0)
    sets = {f"g{k}": str(p) for k, p in enumerate(ns.sets)}
    meter.start()
    t0, c0 = time.perf_counter(), time.process_time()
    report = evaluate(ns.dataset, sets, ns.report, cfg.evaluate, cfg.audit, device=ns.device, force=True)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    meter.stop()
    print(json.dumps({
        "train_slices": int((view.table["split"] == "train").sum()),
        "holdout_slices": int((view.table["split"] == "test").sum()),
        "slices": int(len(view.table)), "subjects": int(view.table["subject"].nunique()),
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "maxrss_gb": own_usage()["maxrss_gb"],
        "stages": {k: {"wall_s": round(v["wall_s"], 2), "cpu_s": round(v["cpu_s"], 2),
                       "peak_gb": round(v["peak_rss"] / 2**30, 3)} for k, v in meter.stages.items()},
        "gan_train_hm": {k: v.slice.hm for k, v in report.gan_train.items()},
        "memorization": {k: v.memorization.k for k, v in report.privacy.items()},
    }))


def child_prepare(ns: argparse.Namespace) -> None:
    from brainsynth.config import load_config
    from brainsynth.data.prepare import prepare_dataset

    cfg = load_config(ns.config, [("prepare.size", ns.size, "--size")]
                      + [(k, v, "--set") for k, v in (s.split("=", 1) for s in ns.set or []) if k.startswith("prep")])
    t0 = time.perf_counter()
    prepare_dataset(ns.cohort, ns.dataset, cfg.prepare, force=True)
    print(json.dumps({"wall_s": round(time.perf_counter() - t0, 2), **own_usage()}))


# --- fits, extrapolation, figure -----------------------------------------------------------------

def exponent(x: list[float], y: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x); None with fewer than 2 usable points."""
    pts = [(math.log(a), math.log(b)) for a, b in zip(x, y) if a > 0 and b > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    lx, ly = np.array(pts).T
    return float(np.polyfit(lx, ly, 1)[0])


def fit(records: list[dict], target_subjects: int) -> dict:
    """Per image size and stage: fitted and local exponents in training slices, and the extrapolation."""
    out: dict[str, dict] = {}
    for size in sorted({r["size"] for r in records}):
        rows = sorted((r for r in records if r["size"] == size), key=lambda r: r["train_slices"])
        slices = [r["train_slices"] for r in rows]
        per_subject = rows[-1]["train_slices"] / rows[-1]["subjects_train"]
        target = target_subjects * (rows[-1]["subjects_train"] / rows[-1]["subjects"]) * per_subject
        series = {stage: [r["stages"].get(stage, {}).get("wall_s", 0.0) for r in rows] for stage in STAGES}
        # CPU seconds too: on a shared machine the wall time of a 1-thread stage follows the others' load.
        series.update({f"{stage}_cpu": [r["stages"].get(stage, {}).get("cpu_s", 0.0) for r in rows]
                       for stage in STAGES})
        series["evaluate"] = [r["wall_s"] for r in rows]
        series["evaluate_cpu"] = [r["cpu_s"] for r in rows]
        series["peak_memory_gb"] = [r["peak_gb"] for r in rows]
        series["prepare"] = [r["prepare"]["wall_s"] for r in rows]
        series["prepare_cpu"] = [r["prepare"]["cpu_s"] for r in rows]
        fits = {}
        for name, values in series.items():
            b_all = exponent(slices, values)
            b_local = exponent(slices[-2:], values[-2:]) if len(rows) >= 2 else None
            b = max(v for v in (b_all, b_local, 0.0) if v is not None)
            fits[name] = {"exponent": None if b_all is None else round(b_all, 3),
                          "exponent_last_two": None if b_local is None else round(b_local, 3),
                          "exponent_used": round(b, 3),
                          "measured_at_largest": values[-1],
                          "extrapolated": round(values[-1] * (target / slices[-1]) ** b, 2)}
        out[str(size)] = {"train_slices": slices, "target_train_slices": round(target), "stages": fits}
    return out


def figure(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = {32: "o", 64: "s", 16: "^"}
    for size in sorted({r["size"] for r in records}):
        rows = sorted((r for r in records if r["size"] == size), key=lambda r: r["train_slices"])
        x = [r["train_slices"] for r in rows]
        for k, stage in enumerate(("features", "gan_train", "fidelity", "privacy", "pool", "report")):
            y = [max(r["stages"].get(stage, {}).get("cpu_s", 0.0), 1e-2) for r in rows]
            axes[0].plot(x, y, marker=markers.get(size, "x"), color=f"C{k}", ls="-" if size == 64 else "--",
                         label=f"{stage} ({size} px)")
        axes[0].plot(x, [r["cpu_s"] for r in rows], marker=markers.get(size, "x"), color="k",
                     ls="-" if size == 64 else "--", label=f"whole evaluation ({size} px)")
        axes[1].plot(x, [r["peak_gb"] for r in rows], marker=markers.get(size, "x"), color="k",
                     ls="-" if size == 64 else "--", label=f"peak memory ({size} px)")
    threads = "/".join(str(t) for t in sorted({r.get("threads", 1) for r in records}))  # older records: 1
    for ax, title, unit in ((axes[0], f"CPU time per stage, one fold ({threads} thread(s))", "CPU seconds"),
                            (axes[1], "peak resident memory, one fold", "GB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training slices of the fold")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- driver ------------------------------------------------------------------------------------------

def measure(ns: argparse.Namespace) -> list[dict]:
    out = ns.out
    grid = TINY_GRID if ns.tiny else None
    env = child_env(ns.threads, ns.source)
    sys.path.insert(0, str(SRC))
    import torch

    torch.set_num_threads(ns.threads)
    biggest = max(ns.subjects)
    full = render_cohort(out / f"cohort{biggest}", biggest, 0, grid)
    source_cohort = render_cohort(out / "standin_cohort", 12 if not ns.tiny else 4, 1, grid)
    extra = [f"--set={s}" for s in ns.set or []]
    records = []
    done_path = out / "records.jsonl"
    done = [json.loads(ln) for ln in done_path.read_text().splitlines()] if done_path.is_file() else []
    for size in ns.sizes:
        source_ds = out / f"standin_{size}"
        if not (source_ds / "images.npy").is_file():
            run_measured([sys.executable, __file__, "--child-prepare", str(source_cohort), str(source_ds),
                          "--size", str(size), "--config", ns.config, *extra], env)
        sets = stand_in_sets(source_ds, out / f"sets_{size}", ns.synthetic, 2, seed=1)
        for n in sorted(ns.subjects):
            old = [r for r in done if (r["subjects"], r["size"], r["label"]) == (n, size, ns.label)]
            if old:
                records.append(old[-1])
                continue
            cohort = sub_cohort(full, out / f"cohort{n}", n)
            dataset = out / f"dataset{n}_{size}"
            prep = run_measured([sys.executable, __file__, "--child-prepare", str(cohort), str(dataset), "--size",
                                 str(size), "--config", ns.config, *extra], env)
            result = run_measured([sys.executable, __file__, "--child-evaluate", str(dataset), *map(str, sets),
                                   "--report", str(out / f"report{n}_{size}"), "--threads", str(ns.threads),
                                   "--config", ns.config, *extra, *(["--device", ns.device] if ns.device else [])],
                                  env)
            record = {"label": ns.label, "subjects": n, "size": size, "threads": ns.threads, "subjects_train": None,
                      **result,
                      "peak_gb": round(result.pop("maxrss_gb", 0.0) or 0.0, 3), "prepare": prep}
            record["subjects_train"] = _train_subjects(dataset)
            record["peak_gb"] = max(record["peak_gb"], max(s["peak_gb"] for s in record["stages"].values()))
            records.append(record)
            with open(done_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{n} subjects, {size} px: {record['train_slices']} training slices, evaluate {record['wall_s']} s "
                  f"wall / {record['cpu_s']} CPU s, peak {record['peak_gb']} GB (load {record['load_avg_1min']}, "
                  f"others {record['others_cpu_share']})", file=sys.stderr, flush=True)
    return records


def _train_subjects(dataset: Path) -> int:
    from brainsynth.data.dataset import load_dataset

    table = load_dataset(dataset).fold(0).table
    return int(table.loc[table["split"] == "train", "subject"].nunique())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, help="folder of cohorts, datasets, sets, records.jsonl and the results")
    p.add_argument("--subjects", type=int, nargs="+", default=[12, 48, 120, 240], help="cohort sizes")
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64], help="image sides (px)")
    p.add_argument("--synthetic", type=int, default=600, help="images per synthetic set (two sets)")
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each measured process")
    p.add_argument("--config", default="demo", help="preset or YAML file (default demo)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override (repeatable)")
    p.add_argument("--device", default=None, help="--device of the evaluation (default: cuda when present)")
    p.add_argument("--source", type=Path, default=SRC, help="source tree the children import (default: this one)")
    p.add_argument("--label", default="", help="tag of this series in records.jsonl (e.g. before/after)")
    p.add_argument("--extrapolate", type=int, default=960, help="subjects to extrapolate to (ADHD-200: 960)")
    p.add_argument("--tiny", action="store_true", help="test scale: coarse phantom grid, tiny preset")
    p.add_argument("--fit-only", action="store_true", help="refit and redraw OUT/records.jsonl, measure nothing")
    p.add_argument("--json", action="store_true", help="print the result JSON")
    p.add_argument("--child-prepare", nargs=2, metavar=("COHORT", "DATASET"), help=argparse.SUPPRESS)
    p.add_argument("--child-evaluate", nargs="+", metavar="DATASET SET", help=argparse.SUPPRESS)
    p.add_argument("--report", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, help=argparse.SUPPRESS)
    ns = p.parse_args(argv)
    if ns.child_prepare:
        ns.cohort, ns.dataset = ns.child_prepare
        child_prepare(ns)
        return 0
    if ns.child_evaluate:
        ns.dataset, ns.sets = ns.child_evaluate[0], ns.child_evaluate[1:]
        child_evaluate(ns)
        return 0
    if ns.out is None:
        p.error("--out is required")
    if ns.tiny:
        ns.config = "tiny"
        ns.set = (ns.set or []) + ["audit.bootstrap=20", "audit.permutations=20", "evaluate.feature_layer=pool5"]
    ns.out.mkdir(parents=True, exist_ok=True)
    if ns.fit_only:
        records = [json.loads(ln) for ln in (ns.out / "records.jsonl").read_text().splitlines()]
        records = [r for r in records if r["label"] == ns.label]
    else:
        records = measure(ns)
    result = {"machine": {"cpus": os.cpu_count(), "threads": ns.threads}, "label": ns.label,
              "records": records, "fit": fit(records, ns.extrapolate), "extrapolate_subjects": ns.extrapolate}
    (ns.out / "cohort_scale.json").write_text(json.dumps(result, indent=1))
    figure(records, ns.out / "cohort_scale.png")
    if ns.json:
        print(json.dumps(result))
    else:
        for size, f in result["fit"].items():
            print(f"{size} px: training slices {f['train_slices']} -> {f['target_train_slices']} "
                  f"({ns.extrapolate} subjects)")
            for name, v in f["stages"].items():
                print(f"  {name:15s} exponent {v['exponent']} (last two {v['exponent_last_two']}), "
                      f"{v['measured_at_largest']} at the largest -> {v['extrapolated']} extrapolated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
