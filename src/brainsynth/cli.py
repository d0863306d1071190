"""The ``brainsynth`` command line: one subcommand per pipeline stage, kept thin.

Every stage command reads one configuration (:mod:`brainsynth.config`): ``--config`` names a
preset or a YAML file (default ``demo``), ``--set SECTION.KEY=VALUE`` changes one key (a bare
``KEY`` belongs to the command's own section), and the familiar flags (``--size``,
``--input-size``, ``--seed``, ...) are shortcuts for keys (each flag's help names its key).

Each handler imports its stage lazily (so ``brainsynth --help`` does not pay for torch)
and calls the same function the Python API exposes. A :class:`BrainsynthError` becomes
one line on stderr and exit status 2; nothing else is caught, so real bugs still show
their traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Callable, Sequence

from brainsynth import __version__
from brainsynth.config import DEFAULT_PRESET, MODELS, PRESETS, describe_sections, load_config, overrides_from_set
from brainsynth.errors import BrainsynthError, ConfigError
from brainsynth.logs import setup_logging


class _Parser(argparse.ArgumentParser):
    # argparse exits with status 2 on a bad option already; make its message one line too.
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _range(text: str) -> list[float]:
    """Parse ``A:B`` into two numbers (for slice ranges)."""
    try:
        a, b = text.split(":")
        return [float(a), float(b)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}") from None


def _slice_range(text: str) -> list[int]:
    a, b = _range(text)
    if not (a.is_integer() and b.is_integer()):
        raise argparse.ArgumentTypeError(f"expected two whole slice numbers A:B, got {text!r}")
    return [int(a), int(b)]


def _int_at_least(minimum: int):
    """An argparse ``type``: a whole number >= ``minimum``, else one line saying what was given."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {value}")
    return value


def _named_dir(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=DIR, got {text!r}")
    return name, path


# --- flags that are shortcuts for config keys -----------------------------------------------

def _key_flag(p: argparse.ArgumentParser, flag: str, keys: str | Sequence[str], help: str, **kwargs: Any) -> None:
    """Add ``flag`` as a shortcut for one or more config keys (applied only when given)."""
    keys = [keys] if isinstance(keys, str) else list(keys)
    dest = "key_" + flag.lstrip("-").replace("-", "_")
    p.add_argument(flag, dest=dest, default=None, help=f"{help} [{', '.join(keys)}]", **kwargs)
    table = p.get_default("key_flags") or []
    p.set_defaults(key_flags=[*table, (flag, dest, keys)])


def _overrides(args: argparse.Namespace, default_section: str | None) -> list[tuple[str, Any, str]]:
    """The given key flags, then every ``--set``, as config overrides in that order."""
    out = []
    for flag, dest, keys in getattr(args, "key_flags", None) or []:
        value = getattr(args, dest)
        if value is None:
            continue
        shown = ":".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) \
            else str(value)
        out += [(key, value, f"{flag} {shown}") for key in keys]
    return out + overrides_from_set(args.set or [], default_section)


def _config(args: argparse.Namespace, default_section: str | None):
    return load_config(args.config, _overrides(args, default_section), default_section=default_section)


def _add_config_options(p: argparse.ArgumentParser, section: str) -> None:
    p.add_argument("--config", default=DEFAULT_PRESET, metavar="PRESET|FILE",
                   help=f"configuration: a preset ({', '.join(PRESETS)}; default {DEFAULT_PRESET}) or a YAML file")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help=f"override one config key, SECTION.KEY=VALUE or a bare KEY of '{section}' (repeatable)")


def _add_input_options(p: argparse.ArgumentParser) -> None:
    """Options that describe a user's cohort (shared by ``prepare`` and ``run``)."""
    p.add_argument("--labels", metavar="FILE", help="CSV/TSV of diagnoses for a flat folder of volumes")
    p.add_argument("--id-column", metavar="NAME", help="subject-id column of --labels (detected by default)")
    p.add_argument("--label-column", metavar="NAME", help="diagnosis column of --labels (detected by default)")
    p.add_argument("--skip-unlabeled", action="store_true",
                   help="drop subjects without a usable label instead of stopping")
    p.add_argument("--volume-index", type=int, metavar="K",
                   help="for 4D files, which volume along the 4th axis to use")


def _input_spec(args: argparse.Namespace):
    from brainsynth.data.layouts import InputSpec

    return InputSpec(labels=args.labels, id_column=args.id_column, label_column=args.label_column,
                     skip_unlabeled=args.skip_unlabeled, volume_index=args.volume_index)


def _add_slice_flags(p: argparse.ArgumentParser) -> None:
    _key_flag(p, "--slices", "prepare.slices", "axial slice range kept, inclusive (paper: 30:120)",
              type=_slice_range, metavar="A:B")
    _key_flag(p, "--relative-slices", "prepare.relative_slices",
              "slice range as fractions of the brain's axial extent, e.g. 0.15:0.6; replaces --slices for scans "
              "of other geometry", type=_range, metavar="FA:FB")
    _key_flag(p, "--workers", "prepare.workers", "volumes prepared in parallel", type=_positive_int)


def _add_feature_flags(p: argparse.ArgumentParser) -> None:
    _key_flag(p, "--features", "evaluate.features", "feature extractor: vgg16 (ImageNet weights, the paper's) or "
              "vgg16-random (no download)", metavar="NAME")
    _key_flag(p, "--weights", "evaluate.weights", "local torchvision-format VGG-16 weights file", metavar="FILE")
    _key_flag(p, "--feature-layer", "evaluate.feature_layer", "feature layer", choices=("fc7", "pool5"))
    _key_flag(p, "--input-size", "evaluate.input_size", "extractor input size in px (paper: 224)", type=int,
              metavar="PX")
    _key_flag(p, "--precision", "evaluate.precision", "feature extraction precision", choices=("fp32", "bf16"))
    # Where features are kept, not what they are: a flag like --device, so it stays out of the
    # resolved config.yaml and of `brainsynth run`'s stage fingerprints.
    p.add_argument("--feature-cache", metavar="DIR", default=None,
                   help="reuse/keep VGG-16 features in DIR (content-addressed; shared by evaluate and audit)")


def _add_fold_flags(p: argparse.ArgumentParser, what: str) -> None:
    """``--fold K --repeat R``: which fold of the DATASET's subject cross-validation a stage works on."""
    p.add_argument("--fold", type=_non_negative_int, default=0, metavar="K",
                   help=f"fold of the DATASET's subject folds whose {what} (default 0; see 'brainsynth info')")
    p.add_argument("--repeat", type=_non_negative_int, default=0, metavar="R",
                   help="repeat of the fold assignment (default 0)")


def _add_split_flags(p: argparse.ArgumentParser) -> None:
    _key_flag(p, "--folds", "prepare.folds", "K stratified subject folds, each subject tested once per repeat; 1 "
              "= one hold-out split of --test-fraction", type=_positive_int, metavar="K")
    _key_flag(p, "--repeats", "prepare.repeats", "fold assignments drawn from new seeds (repeated cross-validation)",
              type=_positive_int, metavar="R")
    _key_flag(p, "--test-fraction", "prepare.test_fraction", "with --folds 1: share of subjects held out for "
              "testing, stratified by label", type=_fraction, metavar="F")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")


# --- handlers ---------------------------------------------------------------------------

def cmd_phantom(args: argparse.Namespace) -> int:
    from brainsynth.data.phantom import make_cohort

    out = make_cohort(args.out_dir, _config(args, "cohort").cohort, force=args.force)
    print(f"simulated cohort written to {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from brainsynth.data.prepare import prepare_dataset

    out = prepare_dataset(args.input, args.out, _config(args, "prepare").prepare, _input_spec(args), force=args.force)
    print(f"dataset written to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from brainsynth.data.dataset import load_dataset

    summary = load_dataset(args.dataset).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['path']}{'  (SIMULATED cohort)' if summary['simulated'] else ''}")
    print(f"  subjects {summary['n_subjects']}, images {summary['n_images']}, "
          f"size {summary['image_size']}x{summary['image_size']}")
    print("  per label: " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    print(f"  folds {summary['folds']} x repeats {summary['repeats']}; split shown: repeat "
          f"{summary['fold']['repeat']} fold {summary['fold']['fold']}")
    print("  per split: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    for s in summary["subjects"]:
        tested = "" if s["test_fold"] is None else f"  tested in fold {s['test_fold']}"
        print(f"    {s['id']:<20} {s['label']:<8} {s['split']:<6} {s['n_images']:>5} images{tested}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from brainsynth.train.loop import train

    section = f"train.{args.model}"
    overrides = _overrides(args, section)
    config = load_config(args.config, overrides, default_section=section)
    changes = [o for o in overrides if o[0].startswith("train.")]
    train(args.dataset, args.out, config.train[args.model], resume=args.resume, changes=changes,
          launch=config.source, dry_run=args.dry_run, device=args.device, force=args.force, fold=args.fold,
          repeat=args.repeat)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from brainsynth.selection import generate_selected

    out, chosen = generate_selected(args.run_dir, args.out, _config(args, "generate"), label=args.label,
                                    device=args.device, force=args.force, dataset=args.dataset)
    if chosen.mode != "last":
        print(f"checkpoint {chosen.path.name}: {chosen.reason}")
    print(f"synthetic images written to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from brainsynth.export import export_generator

    out = export_generator(args.run_dir, args.out, force=args.force)
    print(f"generator written to {out}")
    return 0


def cmd_export_images(args: argparse.Namespace) -> int:
    from brainsynth.data.export_images import export_images

    out = export_images(args.dataset, args.out, split=args.split, fmt=args.format, force=args.force, fold=args.fold,
                        repeat=args.repeat)
    print(f"real images written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from brainsynth.evaluate import evaluate
    from brainsynth.evaluate.report.targets import format_table1

    config = _config(args, "evaluate")
    report = evaluate(args.real, dict(args.synthetic), args.out, config.evaluate, config.audit,
                      runs=dict(args.run or []), device=args.device, feature_cache=args.feature_cache,
                      force=args.force, fold=args.fold, repeat=args.repeat, all_folds=args.all_folds)
    print(format_table1(report))
    print(f"report written to {args.out}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    config = _config(args, "audit")
    if args.selftest is not None:
        given = [flag for flag, value in (("--train", args.train), ("--synthetic", args.synthetic),
                                          ("--filter", args.filter)) if value]
        if given:
            raise ConfigError(f"--selftest DATASET plants its own copies: leave out {', '.join(given)}")
        from brainsynth.evaluate.privacy.selftest import selftest

        selftest(args.selftest, config.audit, config.evaluate, out=args.out, device=args.device, force=args.force)
        return 0
    missing = [flag for flag, value in (("--train", args.train), ("--synthetic", args.synthetic),
                                        ("--out", args.out)) if not value]
    if missing:
        raise ConfigError(f"brainsynth audit needs {', '.join(missing)} (or --selftest DATASET to test the audit)")
    from brainsynth.evaluate import audit

    audit(args.train, args.synthetic, args.out, config.audit, config.evaluate, filter_flagged=args.filter,
          device=args.device, feature_cache=args.feature_cache, force=args.force, fold=args.fold,
          repeat=args.repeat)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from brainsynth.pipeline import run

    if args.preset is not None:
        args.config = args.preset
    run(args.out, _config(args, None), input=args.input, source=_input_spec(args), device=args.device)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from brainsynth.data.fetch import fetch_adhd200, format_summary

    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    summary = fetch_adhd200(args.out, sites=sites, max_subjects=args.max_subjects, endpoint_url=args.endpoint_url)
    print(format_summary(summary))
    return 0


# --- parser -----------------------------------------------------------------------------

SEED_KEYS = ("cohort.seed", "prepare.seed", "train.seed", "generate.seed", "evaluate.seed")
"""What ``brainsynth run --seed N`` sets: every stage's seed."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="brainsynth", description="Synthetic brain MRI with a class-conditional progressive-growing GAN, "
                     "evaluated by GAN-train and audited for memorisation.")
    parser.add_argument("--version", action="version", version=f"brainsynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str,
            epilog: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(handler=handler, key_flags=[])
        return p

    p = add("phantom", cmd_phantom, "write a SIMULATED neonatal ADHD/control cohort (BIDS or ADHD-200 layout) from a "
            "brain template")
    p.add_argument("out_dir", metavar="OUT_DIR")
    _add_config_options(p, "cohort")
    _key_flag(p, "--subjects", "cohort.subjects", "number of subjects", type=_positive_int)
    _key_flag(p, "--adhd-fraction", "cohort.adhd_fraction", "share of ADHD subjects", type=_fraction)
    _key_flag(p, "--seed", "cohort.seed", "seed of the simulation", type=int)
    _key_flag(p, "--effect", "cohort.effect", "strength of the simulated group difference; 1.0 is the calibrated "
              "default, 0 removes it", type=float)
    _key_flag(p, "--contrast", "cohort.contrast", "T1 contrast: neonatal (white matter darker than grey) or adult",
              choices=("neonatal", "adult"))
    _key_flag(p, "--template", "cohort.template", "anatomy: mni152-2009 (nilearn's, the default) or a skull-stripped "
              "T1 NIfTI template in MNI space", metavar="FILE")
    _key_flag(p, "--layout", "cohort.layout", "bids (sub-01, diagnosis column) or adhd200 (an ADHD-200 site folder: "
              "sub-<7 digits>/ses-1, dx codes, two unlabelled subjects)", choices=("bids", "adhd200"))
    p.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")

    p = add("prepare", cmd_prepare, "the paper's preprocessing: volumes -> slices -> patches -> a DATASET")
    p.add_argument("input", metavar="INPUT", help="BIDS folder, ADHD-200 site folder, or flat folder of NIfTI files")
    p.add_argument("--out", required=True, metavar="DATASET")
    _add_config_options(p, "prepare")
    _add_input_options(p)
    _add_slice_flags(p)
    _key_flag(p, "--inplane", "prepare.inplane", "resample each axial slice to PX x PX first (0 keeps the grid)",
              type=int, metavar="PX")
    _key_flag(p, "--patch", "prepare.patch", "patch size cut from each slice", type=int, metavar="PX")
    _key_flag(p, "--patch-stride", "prepare.patch_stride", "cut several overlapping patches with this stride",
              type=int, metavar="PX")
    _key_flag(p, "--size", "prepare.size", "final image size (64 on the CPU; the paper used 256)", type=int,
              metavar="PX")
    _add_split_flags(p)
    _key_flag(p, "--seed", "prepare.seed", "seed of the subject folds", type=int)
    p.add_argument("--force", action="store_true", help="replace an existing --out")

    p = add("info", cmd_info, "summarise a prepared DATASET")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("train", cmd_train, "train the conditional PGGAN, the DCGAN baseline or the diffusion model (ddpm) on a "
            "DATASET's train split",
            epilog=describe_sections() + "\nbrainsynth train: a bare --set KEY=VALUE means train.MODEL.KEY.")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--model", choices=MODELS, default="pggan")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    _add_config_options(p, "train.MODEL")
    _add_fold_flags(p, "training subjects the model learns")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in RUN_DIR")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    _add_device(p)
    p.add_argument("--force", action="store_true", help="start over in an existing RUN_DIR")

    p = add("generate", cmd_generate, "sample synthetic images per class from a trained run (G_ema; ddpm: DDIM)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    _add_config_options(p, "generate")
    _key_flag(p, "--n", "generate.images_per_label", "images per label", type=_positive_int)
    p.add_argument("--label", choices=("adhd", "control", "both"), default="both")
    _key_flag(p, "--format", "generate.format", "image-set format", choices=("png", "npz", "nifti"))
    _key_flag(p, "--seed", "generate.seed", "base seed of the per-image seeds", type=int)
    _key_flag(p, "--steps", "generate.steps", "ddpm: DDIM sampling steps", type=_positive_int)
    _key_flag(p, "--guidance", "generate.guidance", "ddpm: classifier-free guidance weight (0: conditional only)",
              type=float, metavar="W")
    _key_flag(p, "--select", "generate.select", "checkpoint to sample: last, or private-best (audited on held-out "
              "half A)", choices=("last", "private-best"))
    p.add_argument("--dataset", metavar="DIR", help="the run's DATASET, for --select private-best (default: the one "
                   "its checkpoint names)")
    _add_device(p)
    p.add_argument("--force", action="store_true")

    p = add("export", cmd_export, "write the generator alone as safetensors with a JSON model card")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true")

    p = add("export-images", cmd_export_images, "write a DATASET's real images as an image folder (like generate)")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--split", choices=("train", "test", "all"), default="train")
    _add_fold_flags(p, "split is exported")
    p.add_argument("--format", choices=("png", "npz", "nifti"), default="png")
    p.add_argument("--force", action="store_true")

    p = add("evaluate", cmd_evaluate, "GAN-train, GAN-test, fidelity and privacy against the real baseline")
    p.add_argument("--real", required=True, metavar="DATASET")
    p.add_argument("--synthetic", required=True, action="append", type=_named_dir, metavar="NAME=DIR")
    p.add_argument("--run", action="append", type=_named_dir, metavar="NAME=RUN_DIR",
                   help="training run whose curves go into the report (repeatable)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    _add_fold_flags(p, "test subjects are scored (the generators were trained on its training subjects)")
    p.add_argument("--all-folds", action="store_true",
                   help="evaluate every fold and repeat and pool them; each DIR names its fold's set with {fold} "
                        "and {repeat}, e.g. --synthetic pggan=out/r{repeat}/f{fold}/synthetic/pggan")
    _add_config_options(p, "evaluate")
    _key_flag(p, "--bootstrap", "evaluate.bootstrap", "bootstrap resamples over test subjects", type=int)
    _key_flag(p, "--seed", "evaluate.seed", "seed of the classifiers, bootstrap and subsets", type=int)
    _add_feature_flags(p)
    _add_device(p)
    p.add_argument("--force", action="store_true")

    p = add("audit", cmd_audit, "privacy audit: near-copies, false flags and membership inference of a synthetic set",
            epilog="brainsynth audit --selftest DATASET plants transformed copies of training slices among held-out "
                   "images and\nreports the share found per transform family (exit status 1 below the target).")
    p.add_argument("--train", metavar="DATASET", help="prepared DATASET the generator was trained on (train split)")
    p.add_argument("--synthetic", metavar="DIR", help="the synthetic image set to audit")
    p.add_argument("--out", metavar="DIR", help="output folder (optional with --selftest)")
    p.add_argument("--filter", action="store_true", help="also write the synthetic set minus every flagged image")
    p.add_argument("--selftest", metavar="DATASET", help="test the audit on DATASET with planted copies instead")
    _add_fold_flags(p, "training subjects the generator saw (its test subjects are the held-out reference)")
    _add_config_options(p, "audit")
    _key_flag(p, "--percentile", "audit.percentile",
              "share (%%) of held-out half-A images the near-copy rule may flag, per brain-area band", type=float,
              metavar="PCT")
    _key_flag(p, "--bands", "audit.bands", "brain-area bands calibrated separately", type=_positive_int,
              metavar="N")
    _key_flag(p, "--seed", "audit.seed", "seed of the half-A/half-B split, bootstrap, permutations and self-test",
              type=int, metavar="N")
    _key_flag(p, "--copies", "audit.selftest_copies", "--selftest: planted copies per transform family",
              type=_positive_int, metavar="N")
    _add_feature_flags(p)
    _add_device(p)
    p.add_argument("--force", action="store_true")

    p = add("run", cmd_run, "the whole method end to end, cross-validated by subject: prepare, then per fold train "
            "PGGAN + DCGAN, generate and evaluate, then the pooled report",
            epilog=describe_sections() + "\nbrainsynth run: --set needs SECTION.KEY; --seed N sets every stage's seed.")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--input", metavar="DIR", help="your cohort (default: the SIMULATED cohort)")
    _add_config_options(p, "(none: name the section)")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="same as --config PRESET: demo (CPU, 64 px), paper (GPU, 256 px), tiny (smoke test)")
    _add_input_options(p)
    _add_slice_flags(p)
    _add_split_flags(p)
    _key_flag(p, "--seed", SEED_KEYS, "seed of every stage", type=int)
    _key_flag(p, "--features", "evaluate.features", "feature extractor: vgg16 or vgg16-random", metavar="NAME")
    _key_flag(p, "--weights", "evaluate.weights", "local torchvision-format VGG-16 weights file", metavar="FILE")
    _add_device(p)

    p = add("fetch", cmd_fetch, "download public data: ADHD-200 T1 scans and diagnoses")
    p.add_argument("dataset", choices=("adhd200",))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--sites", metavar="A,B,...", help="comma-separated site names (default: all)")
    p.add_argument("--max-subjects", type=_positive_int, metavar="N", help="at most N subjects per site")
    p.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    try:
        return int(args.handler(args) or 0)
    except BrainsynthError as exc:
        print(f"brainsynth: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("brainsynth: interrupted", file=sys.stderr)
        return 130
