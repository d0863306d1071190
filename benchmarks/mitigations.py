"""Mitigations of membership leakage, measured: one ``brainsynth run`` per setting, one table row each.

Each *setting* is one generator (``run.models=[MODEL]``) with its own ``--set`` overrides (a
config key per mitigation: capacity, augmentation, image budget, checkpoint selection, DP-SGD).
It is run as ``brainsynth run --out OUT/<name> --config PRESET --set ...`` would run it (the same
function, in this process), and its pooled report gives one row:

* utility: the GAN-train HM against real (the paired verdict, the HM with its 95% interval), the
  verdict against the shortcut row, precision and recall (and SWD);
* privacy: near-copies against the false flags of held-out half B, the pre-declared membership
  rule on half B (pooled AUC and p, pass or fail), the headline AUC on all held-out people, and
  epsilon (per fold, from the synthetic set's ``generator.differential_privacy``) where DP;
* the issue's four targets (GAN-train not worse than real by the paired verdict; near-copies
  within half-B false flags + 1 pt; the membership rule on half B; precision >= 0.5) and which
  of them the setting misses. The two privacy verdicts are the report's own (``check_targets``).

Nothing here judges anything itself beyond reading the report: the rules are the report's.

A setting's folder is seeded, by hard links, with what an earlier setting already computed and
does not depend on the setting: the cohort, the prepared dataset, the feature cache, and, for a
setting that names a ``base``, the base's training runs. ``brainsynth run`` then decides from its
fingerprints what is up to date (a training run whose resolved section differs is retrained; the
linked copy is removed, the base's files stay), so seeding can save time but never change a result.

    .venv/bin/python benchmarks/mitigations.py --out MIT [--config demo] [--only NAME ...] \\
        [--settings FILE.yaml] [--set run.parallel_training=false] [--collect-only] [--json]

Without ``--settings`` the settings are :data:`DEMO_SETTINGS`; ``--only`` runs some of them (one
at a time is kinder to a shared machine) and every invocation collects every setting whose report
exists into OUT/mitigations.json, OUT/mitigations.md, OUT/mitigations.png (the report's
privacy-utility figure with one point per setting and the shortcut row) and
OUT/mitigations_membership.png (GAN-train HM against the half-B membership AUC).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from brainsynth.config import load_config
from brainsynth.errors import BrainsynthError
from brainsynth.evaluate.report.figures import draw_privacy_utility, png_bytes
from brainsynth.evaluate.report.schema import PrivacyUtility, Report, read_report
from brainsynth.evaluate.report.tables import REAL_KEY, SHORTCUT_KEY
from brainsynth.evaluate.report.targets import check_targets, find_comparison
from brainsynth.fsio import atomic_write_bytes, atomic_write_json, atomic_write_text
from brainsynth.pipeline import stage_kinds

MIN_PRECISION = 0.5  # issue 21's fourth target: the images must look like brains
REQUIREMENTS = ("gan_train_not_worse_than_real", "near_copies", "membership_rule_half_b", "precision")
"""Issue 21's four targets, in its order (``misses`` lists the failed ones in this order)."""
SNAPSHOTS = "train.snapshot_first=2000"  # kept checkpoints for private-best; they do not change the training
PGGAN_FINAL_SNAPSHOTS = ["train.snapshot_first=38000", "train.snapshot_factor=1.05"]
"""The demo PGGAN's 64 px stable phase runs from 37,323 to 45,603 images: keep its checkpoints there only (the
selection audits final-resolution checkpoints only), every tick (factor 1.05 < the ticks' ratio)."""
DP_PGGAN = ["train.pggan.mbstd_group=1", "train.pggan.precision=fp32", "train.pggan.channels_last=false",
            "train.pggan.augment=off", "train.pggan.gp_every=1"]
"""What a private PGGAN run requires (docs/privacy.md): per-sample-safe D, fp32, no adaptive augmentation, the
penalty on every step."""


@dataclass
class Setting:
    """One mitigation: a generator and the config keys that differ from the preset."""

    name: str
    model: str
    overrides: list[str] = field(default_factory=list)
    base: Optional[str] = None  # a setting whose training runs this one reuses where the fingerprints agree
    note: str = ""

    def sets(self) -> list[str]:
        return [f"run.models=[{self.model}]", *self.overrides]


DEMO_SETTINGS = [
    Setting("dcgan-default", "dcgan", [SNAPSHOTS], note="the demo's DCGAN (snapshots kept for the next row)"),
    Setting("dcgan-private-best", "dcgan", [SNAPSHOTS, "generate.select=private-best"], base="dcgan-default",
            note="early stopping by selection: the best SWD among kept checkpoints meeting both rules on half A"),
    Setting("dcgan-width16", "dcgan", [SNAPSHOTS, "train.dcgan.width=16"], note="capacity: half the channels"),
    Setting("dcgan-width8", "dcgan", [SNAPSHOTS, "train.dcgan.width=8"], note="capacity: a quarter of the channels"),
    Setting("dcgan-ada-target0.3", "dcgan", [SNAPSHOTS, "train.augment_target=0.3"],
            note="augmentation: adaptive, a lower target (stronger augmentation)"),
    Setting("dcgan-ada-speed10k", "dcgan", [SNAPSHOTS, "train.augment_speed_images=10000"],
            note="augmentation: adaptive, free to move within the budget (p 0 to 1 in 10,000 images, not 500,000)"),
    Setting("dcgan-augment-fixed0.5", "dcgan", [SNAPSHOTS, "train.augment=fixed", "train.augment_p=0.5"],
            note="augmentation: fixed probability 0.5"),
    Setting("dcgan-augment-fixed0.5-private-best", "dcgan",
            [SNAPSHOTS, "train.augment=fixed", "train.augment_p=0.5", "generate.select=private-best"],
            base="dcgan-augment-fixed0.5", note="fixed augmentation 0.5 and early stopping by selection (half A)"),
    Setting("dcgan-augment-fixed0.5-width16", "dcgan", [SNAPSHOTS, "train.augment=fixed", "train.augment_p=0.5",
                                                        "train.dcgan.width=16"],
            note="fixed augmentation 0.5 and half the channels"),
    Setting("dcgan-16k", "dcgan", [SNAPSHOTS, "train.dcgan.total_images=16000"], note="early stopping by budget"),
    Setting("dcgan-24k", "dcgan", [SNAPSHOTS, "train.dcgan.total_images=24000"], note="early stopping by budget"),
    Setting("pggan-private-best", "pggan", [*PGGAN_FINAL_SNAPSHOTS, "generate.select=private-best"],
            note="early stopping by selection among the 64 px checkpoints (38,000 images on), rules on half A"),
    Setting("ddpm-private-best", "ddpm", [SNAPSHOTS, "generate.select=private-best"],
            note="the diffusion model at its preset budget, the best SWD among kept checkpoints meeting both rules on half A"),
    *[Setting(f"pggan-dp-noise{s:g}", "pggan", [*DP_PGGAN, f"train.pggan.dp_noise={s:g}"],
              note=f"DP-SGD of D by person, sigma {s:g}") for s in (0.5, 1.0, 2.0)],
]


def load_settings(path: Path) -> list[Setting]:
    """A YAML list of ``{name, model, overrides, base, note}``; names unique, a base named before its user."""
    try:
        raw = yaml.safe_load(path.read_text())
        settings = [Setting(**item) for item in raw]
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise SystemExit(f"--settings {path}: expected a YAML list of {{name, model, overrides, base, note}} ({exc})")
    check_settings(settings)
    return settings


def check_settings(settings: Sequence[Setting]) -> None:
    seen: set[str] = set()
    for s in settings:
        if s.name in seen or not s.name or "/" in s.name:
            raise SystemExit(f"setting {s.name!r}: names must be unique folder names")
        if s.base is not None and s.base not in seen:
            raise SystemExit(f"setting {s.name!r}: its base {s.base!r} must be listed before it")
        seen.add(s.name)


def command(setting: Setting, out: Path, preset: str, global_sets: Sequence[str]) -> str:
    """The ``brainsynth run`` command line this setting is."""
    sets = [*global_sets, *setting.sets()]
    return shlex.join(["brainsynth", "run", "--out", str(out / setting.name), "--config", preset,
                       *[a for s in sets for a in ("--set", s)]])


# --- seeding a setting's folder from earlier ones ---------------------------------------------------

def stage_folder(stage: str) -> str:
    """Where ``brainsynth run`` writes a stage (pipeline.py): cohort, dataset, r<R>/f<K>/runs/<model>."""
    if stage in ("cohort",):
        return "cohort"
    if stage == "prepare":
        return "dataset"
    prefix, _, task = stage.rpartition("/")
    return f"{prefix}/runs/{task.removeprefix('train_')}"


def seed_folder(source: Path, target: Path, stages: Sequence[str]) -> list[str]:
    """Hard-link ``source``'s finished ``stages`` (and its feature cache) into the new folder ``target``.

    Writes ``target/pipeline.json`` with those stages' entries, so that ``brainsynth run`` checks
    their fingerprints instead of starting over. Returns the stages seeded.
    """
    state = json.loads((source / "pipeline.json").read_text())
    seeded = {}
    target.mkdir(parents=True)
    for name in stages:
        entry = state["stages"].get(name)
        if entry and entry.get("done") and (source / stage_folder(name)).exists():
            shutil.copytree(source / stage_folder(name), target / stage_folder(name), copy_function=os.link)
            seeded[name] = entry
    cache = source / "cache" / "features"  # content-addressed, written atomically: safe to share
    if cache.is_dir():
        shutil.copytree(cache, target / "cache" / "features", copy_function=os.link)
    atomic_write_json(target / "pipeline.json", {"brainsynth_version": state.get("brainsynth_version"),
                                                 "stages": seeded})
    return list(seeded)


def seed_source(out: Path, settings: Sequence[Setting], setting: Setting) -> tuple[Path | None, list[str]]:
    """The folder to seed ``setting`` from and which stages: its base (with training), else any prepared one."""
    if setting.base is not None and (out / setting.base / "pipeline.json").is_file():
        state = json.loads((out / setting.base / "pipeline.json").read_text())["stages"]
        return out / setting.base, ["cohort", "prepare", *[s for s in state if s.endswith(f"/train_{setting.model}")]]
    for other in settings:
        if other is not setting and (out / other.name / "dataset").is_dir() and (out / other.name / "pipeline.json").is_file():
            return out / other.name, ["cohort", "prepare"]
    return None, []


# --- running one setting ---------------------------------------------------------------------------

class LoadSampler:
    """The 1-minute load average every ``every`` seconds while a setting runs (the machine is shared)."""

    def __init__(self, every: float = 30.0):
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)

    def _loop(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])


def code_version() -> str:
    """The commit this script's tree is at ('+dirty' with local changes): rows of different code are not comparable."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+dirty" if dirty else "")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (training workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_setting(out: Path, settings: Sequence[Setting], setting: Setting, preset: str,
                global_sets: Sequence[str]) -> dict[str, Any]:
    """Run one setting end to end (or continue it); write and return OUT/<name>.run.json."""
    from brainsynth.pipeline import run

    folder = out / setting.name
    seeded: list[str] = []
    source = None
    if not folder.exists():
        source, stages = seed_source(out, settings, setting)
        if source is not None:
            seeded = seed_folder(source, folder, stages)
    config = load_config(preset, [*global_sets, *setting.sets()])
    wall, cpu = time.perf_counter(), cpu_seconds()
    with LoadSampler() as load:
        run(folder, config)
    record = {"setting": setting.name, "command": command(setting, out, preset, global_sets), "code": code_version(),
              "seeded_from": source.name if source is not None else None, "seeded_stages": seeded,
              "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(cpu_seconds() - cpu, 1),
              "load_avg_1min": {"min": min(load.samples), "mean": round(sum(load.samples) / len(load.samples), 2),
                                "max": max(load.samples)}, "cpus": os.cpu_count()}
    atomic_write_json(out / f"{setting.name}.run.json", record)
    return record


# --- one row from a finished setting -------------------------------------------------------------

def synthetic_metadata(folder: Path, model: str) -> list[dict[str, Any]]:
    """Every fold's synthetic-set ``generator`` record, repeat-major."""
    paths = sorted(folder.glob(f"r*/f*/synthetic/{model}/metadata.json"))
    return [json.loads(p.read_text())["generator"] for p in paths]


def requirement_checks(report: Report, model: str) -> dict[str, Optional[bool]]:
    """The issue's four targets for the one set (None where not measurable), in the issue's order.

    The two privacy verdicts are the report's own (``check_targets``); they judge every audited set
    of a report, so a setting's report must audit its one set only.
    """
    if set(report.privacy) - {model}:
        raise SystemExit(f"the report audits {sorted(report.privacy)}: a setting trains one generator ({model})")
    vs_real = find_comparison(report, model, REAL_KEY)
    targets = check_targets(report)
    precision = report.fidelity[model].precision
    checks = {
        "gan_train_not_worse_than_real": None if vs_real is None or vs_real.verdict == "n/a"
        else vs_real.verdict != "worse",
        "near_copies": targets["memorization"].ok,
        "membership_rule_half_b": targets["membership"].ok,
        "precision": None if precision is None else precision >= MIN_PRECISION,
    }
    return checks


def row(out: Path, setting: Setting, preset: str, global_sets: Sequence[str]) -> dict[str, Any] | None:
    """The table row of a finished setting; None when its report does not exist yet."""
    folder, model = out / setting.name, setting.model
    if not (folder / "report" / "report.json").is_file():
        return None
    report = read_report(folder / "report")
    scores, fid, audit = report.gan_train[model], report.fidelity[model], report.privacy[model]
    vs_real, vs_shortcut = find_comparison(report, model, REAL_KEY), find_comparison(report, model, SHORTCUT_KEY)
    rule = audit.membership_rule
    generators = synthetic_metadata(folder, model)
    dp = [g.get("differential_privacy") for g in generators]
    checks = requirement_checks(report, model)
    run_record = out / f"{setting.name}.run.json"
    return {
        "setting": setting.name, "model": model, "overrides": setting.overrides, "note": setting.note,
        "command": command(setting, out, preset, global_sets),
        "gan_train_hm": scores.hm, "gan_train_hm_ci": scores.ci.hm if scores.ci else None,
        "real_hm": vs_real.b_value if vs_real else None,
        # Paired verdicts of this set against the row, oriented set - row ('worse': the set's HM is lower).
        "vs_real": {"verdict": vs_real.verdict, "diff": vs_real.diff, "ci": vs_real.ci} if vs_real else None,
        "vs_shortcut": {"verdict": vs_shortcut.verdict, "diff": vs_shortcut.diff, "ci": vs_shortcut.ci,
                        "shortcut_hm": vs_shortcut.b_value} if vs_shortcut else None,
        "precision": fid.precision, "recall": fid.recall, "swd": fid.swd.avg if fid.swd else None,
        "near_copies": {"k": audit.memorization.k, "n": audit.memorization.n, "rate": audit.memorization.rate,
                        "ci": audit.memorization.ci},
        "false_flags_half_b": {"k": audit.false_flags.k, "n": audit.false_flags.n, "rate": audit.false_flags.rate,
                               "ci": audit.false_flags.ci},
        "excess_near_copies": audit.excess_memorization,
        "membership_half_b": {"auc": rule.auc, "p_value": rule.p_value, "passed": rule.passed,
                              "per_fold_auc": [f.mia_auc_half_b for f in audit.per_fold]},
        "membership_all_held_out": {"auc": audit.mia_auc, "p_value": audit.mia_p_value},
        "epsilon_per_fold": [d["epsilon"] for d in dp] if any(dp) else None,
        "dp": dp[0] if any(dp) else None,
        "images_shown_per_fold": [g["images_shown"] for g in generators],
        "selection_per_fold": [{k: g["selection"].get(k) for k in ("chosen", "images_shown", "private_on_half_a")}
                               for g in generators if g.get("selection")] or None,
        "requirements": checks,
        "passes_all": all(v is True for v in checks.values()),
        "misses": [k for k, v in checks.items() if v is False],
        "run": json.loads(run_record.read_text()) if run_record.is_file() else None,
        # Each stage's wall time when it ran (summed over folds), also for stages run before this script.
        "stage_seconds": {k: round(v, 1) for k, v in stage_kinds(json.loads((folder / "timings.json").read_text())).items()}
        if (folder / "timings.json").is_file() else None,
        "privacy_utility_point": report.privacy_utility.points[model].to_dict(),
        "real_hm_ci": report.privacy_utility.real_hm_ci,
    }


# --- the table and the figures ---------------------------------------------------------------------

def _pct(rate: Optional[float]) -> str:
    return "n/a" if rate is None else f"{100 * rate:.1f}%"


def _num(x: Optional[float], digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ci(x: Optional[float], ci, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci and None not in ci else "")


def _mark(ok: Optional[bool]) -> str:
    return "n/a" if ok is None else ("pass" if ok else "**FAIL**")


def _verdict(c: Optional[dict[str, Any]]) -> str:
    return "n/a" if c is None else f"{c['verdict']} ({_ci(c['diff'], c['ci'])})"


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One row per setting: utility, privacy, epsilon, the four requirements; then each command."""
    head = ["setting", "GAN-train HM [95% CI]", "vs real: verdict (diff [CI])", "vs shortcut: verdict (diff [CI])",
            "precision", "recall", "near-copies vs half-B false flags", "membership, half B: AUC (p)",
            "epsilon per fold", "not worse than real", "near-copies <= false flags + 1 pt", "membership rule",
            "precision >= 0.5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        m, req = r["membership_half_b"], r["requirements"]
        eps = "-" if not r["epsilon_per_fold"] else " / ".join(f"{e:.3g}" for e in r["epsilon_per_fold"])
        cells = [r["setting"], _ci(r["gan_train_hm"], r["gan_train_hm_ci"]), _verdict(r["vs_real"]),
                 _verdict(r["vs_shortcut"]), _num(r["precision"], 2), _num(r["recall"], 2),
                 f"{_pct(r['near_copies']['rate'])} vs {_pct(r['false_flags_half_b']['rate'])}",
                 f"{_num(m['auc'])} ({_num(m['p_value'])})", eps,
                 *[_mark(req[k]) for k in REQUIREMENTS]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        dp = r["dp"]
        privacy = "" if dp is None else (f" DP: sigma {dp['noise_multiplier']:g}, C {dp['clip']:g}, delta {dp['delta']:g}, "
                                         f"{dp['accountant']} accountant, {dp['sampling']}, unit {dp['unit']}.")
        lines.append(f"- `{r['setting']}` ({r['note']}): `{r['command']}`.{privacy}")
    return "\n".join(lines) + "\n"


def privacy_utility_summary(rows: Sequence[dict[str, Any]]) -> PrivacyUtility:
    """The report's privacy-utility record with one point per setting (real HM: the first row's report)."""
    points = {r["setting"]: r["privacy_utility_point"] for r in rows}
    first = rows[0]
    return PrivacyUtility.from_dict({"points": points, "real_hm": first["real_hm"], "real_hm_ci": first["real_hm_ci"],
                                     "ci_method": "as in the report (privacy_utility.ci_method), one report per setting"})


def figure_privacy_utility(rows: Sequence[dict[str, Any]]) -> bytes:
    """The report's figure (draw_privacy_utility) with every setting, plus the shortcut row's HM."""
    fig = draw_privacy_utility(privacy_utility_summary(rows))
    ax = fig.axes[0]
    shortcut = next((r["vs_shortcut"]["shortcut_hm"] for r in rows if r["vs_shortcut"]), None)
    if shortcut is not None:
        ax.axhline(shortcut, color="tab:red", linestyle="-.", linewidth=1, label=f"shortcut row (HM {shortcut:.3f})")
        ax.legend(fontsize=6, loc="lower right")
    ax.set_title("mitigations: privacy and utility of each setting (95% intervals)", fontsize=10)
    return png_bytes(fig)


def figure_membership(rows: Sequence[dict[str, Any]]) -> bytes:
    """GAN-train HM against the pooled half-B membership AUC: the rule's bound and the real HM marked."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from brainsynth.evaluate.privacy.membership_rule import MAX_AUC

    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    for i, r in enumerate(rows):
        auc, hm, ci = r["membership_half_b"]["auc"], r["gan_train_hm"], r["gan_train_hm_ci"]
        if auc is None or hm is None:
            continue
        yerr = [[hm - ci[0]], [ci[1] - hm]] if ci and None not in ci else None
        marker = "o" if r["membership_half_b"]["passed"] else "x"
        # tab20: twenty distinct colours, where the default cycle repeats after ten settings
        ax.errorbar([auc], [hm], yerr=yerr, fmt=marker, color=colormaps["tab20"](i % 20), capsize=3,
                    label=r["setting"])
    ax.axvline(MAX_AUC, color="0.3", linestyle=":", label=f"rule: AUC <= {MAX_AUC:.2f} (and p >= 0.05)")
    if rows[0]["real_hm"] is not None:
        ax.axhline(rows[0]["real_hm"], color="0.3", linestyle="--", linewidth=1, label="real training images")
    shortcut = next((r["vs_shortcut"]["shortcut_hm"] for r in rows if r["vs_shortcut"]), None)
    if shortcut is not None:
        ax.axhline(shortcut, color="tab:red", linestyle="-.", linewidth=1, label="shortcut row")
    aucs = [r["membership_half_b"]["auc"] for r in rows if r["membership_half_b"]["auc"] is not None]
    ax.set_xlim(min([0.45, *aucs]) - 0.02, max([0.75, *aucs]) + 0.02)  # chance (0.5) and the bound always in view
    ax.set_xlabel("membership AUC on held-out half B, pooled (x: rule failed)  ← more private")
    ax.set_ylabel("GAN-train HM  ↑ more useful")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6, loc="lower left")
    ax.set_title("mitigations: utility against membership inference", fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def collect(out: Path, settings: Sequence[Setting], preset: str, global_sets: Sequence[str],
            include: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Every finished setting's row; the JSON, the markdown table and both figures written to OUT.

    A report this brainsynth cannot read (another schema version) is listed under ``unreadable``;
    ``include`` (an earlier mitigations.json, e.g. written by the version that ran it) supplies the
    row of a setting not tabulated here, as it was (its run record names its commit).
    """
    earlier = {r["setting"]: r for r in (include or {}).get("rows", [])}
    rows, unreadable = [], {}
    for s in settings:
        try:
            r = row(out, s, preset, global_sets)
        except BrainsynthError as exc:
            unreadable[s.name], r = str(exc), None
        if r is None:
            r = earlier.get(s.name)
        if r is not None:
            rows.append(r)
    result = {"preset": preset, "global_sets": list(global_sets), "min_precision": MIN_PRECISION,
              "pending": [s.name for s in settings if not any(r["setting"] == s.name for r in rows)],
              "unreadable": unreadable, "rows": rows}
    atomic_write_json(out / "mitigations.json", result)
    atomic_write_text(out / "mitigations.md", markdown(rows))
    if rows:
        atomic_write_bytes(out / "mitigations.png", figure_privacy_utility(rows))
        atomic_write_bytes(out / "mitigations_membership.png", figure_membership(rows))
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="one folder per setting is made in it")
    parser.add_argument("--config", default="demo", help="the preset (or YAML) every setting starts from")
    parser.add_argument("--settings", type=Path, help="YAML list of settings (default: the demo's, DEMO_SETTINGS)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these settings (default: all)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every setting (e.g. run.parallel_training=false)")
    parser.add_argument("--collect-only", action="store_true", help="run nothing; tabulate the finished settings")
    parser.add_argument("--include", type=Path, metavar="JSON",
                        help="an earlier mitigations.json: its rows stand in for settings whose report this "
                             "brainsynth cannot read (another schema version)")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args(argv)
    settings = load_settings(args.settings) if args.settings else list(DEMO_SETTINGS)
    check_settings(settings)
    names = {s.name for s in settings}
    unknown = sorted(set(args.only or ()) - names)
    if unknown:
        raise SystemExit(f"--only {' '.join(unknown)}: no such setting (known: {', '.join(sorted(names))})")
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.collect_only:
        for setting in settings:
            if args.only is None or setting.name in args.only:
                print(f"[mitigations] {command(setting, args.out, args.config, args.set)}", file=sys.stderr)
                run_setting(args.out, settings, setting, args.config, args.set)
    include = json.loads(args.include.read_text()) if args.include else None
    result = collect(args.out, settings, args.config, args.set, include)
    if args.json:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
