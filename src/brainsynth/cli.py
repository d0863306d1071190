"""The ``brainsynth`` command line: one subcommand per pipeline stage, kept thin.

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
from typing import Callable, Sequence

from brainsynth import __version__
from brainsynth.errors import BrainsynthError

log = logging.getLogger("brainsynth")


class _Parser(argparse.ArgumentParser):
    # argparse exits with status 2 on a bad option already; make its message one line too.
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _range(text: str) -> tuple[float, float]:
    """Parse ``A:B`` into two numbers (for slice ranges)."""
    try:
        a, b = text.split(":")
        return float(a), float(b)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A:B, got {text!r}") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


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


# --- shared option groups ---------------------------------------------------------------

def _add_input_options(p: argparse.ArgumentParser) -> None:
    """Options that describe a user's cohort (shared by ``prepare`` and ``run``)."""
    p.add_argument("--labels", metavar="FILE", help="CSV/TSV of diagnoses for a flat folder of volumes")
    p.add_argument("--id-column", metavar="NAME", help="subject-id column of --labels (detected by default)")
    p.add_argument("--label-column", metavar="NAME", help="diagnosis column of --labels (detected by default)")
    p.add_argument("--skip-unlabeled", action="store_true",
                   help="drop subjects without a usable label instead of stopping")
    p.add_argument("--volume-index", type=int, metavar="K",
                   help="for 4D files, which volume along the 4th axis to use")


def _add_prepare_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slices", type=_range, default=(30, 120), metavar="A:B",
                   help="axial slice range kept, inclusive (default 30:120, the paper's #30-#120)")
    p.add_argument("--relative-slices", type=_range, metavar="FA:FB",
                   help="slice range as fractions of the brain's axial extent, e.g. 0.15:0.6; "
                        "overrides --slices for scans of other geometry")
    p.add_argument("--inplane", type=int, default=320, metavar="PX",
                   help="resample each axial slice to PX x PX first (default 320; 0 keeps the grid)")
    p.add_argument("--patch", type=int, default=256, metavar="PX", help="patch size cut from each slice (default 256)")
    p.add_argument("--patch-stride", type=int, metavar="PX",
                   help="cut several overlapping patches with this stride (default: one centred patch)")
    p.add_argument("--size", type=int, default=64, metavar="PX",
                   help="final image size (default 64 for the CPU; the paper used 256)")
    p.add_argument("--test-fraction", type=_fraction, default=1 / 3, metavar="F",
                   help="share of subjects held out for testing, stratified by label (default 1/3)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subject split (default 0)")
    p.add_argument("--workers", type=_positive_int, default=1, help="volumes processed in parallel (default 1)")


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default="vgg16-random", metavar="NAME",
                   help="feature extractor: vgg16 (ImageNet weights, the paper's) or vgg16-random "
                        "(no download; default so that runs work offline)")
    p.add_argument("--weights", metavar="FILE", help="local torchvision-format VGG-16 weights file")
    p.add_argument("--feature-layer", default="fc7", choices=("fc7", "pool5"), help="feature layer (default fc7)")
    p.add_argument("--input-size", type=int, default=224, metavar="PX", help="extractor input size (default 224)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="feature extraction precision")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")


# --- handlers ---------------------------------------------------------------------------

def cmd_phantom(args: argparse.Namespace) -> int:
    from brainsynth.data.phantom import make_cohort

    out = make_cohort(args.out_dir, subjects=args.subjects, adhd_fraction=args.adhd_fraction, seed=args.seed,
                      effect=args.effect, contrast=args.contrast, force=args.force)
    print(f"simulated cohort written to {out}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from brainsynth.data.prepare import prepare_dataset

    out = prepare_dataset(
        args.input, args.out, labels=args.labels, id_column=args.id_column, label_column=args.label_column,
        skip_unlabeled=args.skip_unlabeled, volume_index=args.volume_index, slices=args.slices,
        relative_slices=args.relative_slices, inplane=args.inplane, patch=args.patch,
        patch_stride=args.patch_stride, size=args.size, test_fraction=args.test_fraction, seed=args.seed,
        workers=args.workers, force=args.force,
    )
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
    print("  per split: " + ", ".join(f"{k} {v}" for k, v in summary["splits"].items()))
    for s in summary["subjects"]:
        print(f"    {s['id']:<20} {s['label']:<8} {s['split']:<6} {s['n_images']:>5} images")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from brainsynth.train.loop import train

    train(args.dataset, args.out, model=args.model, config=args.config, overrides=args.set or [],
          resume=args.resume, dry_run=args.dry_run, device=args.device, force=args.force)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from brainsynth.generate import generate_images

    out = generate_images(args.run_dir, args.out, n=args.n, label=args.label, fmt=args.format, seed=args.seed,
                          device=args.device, force=args.force)
    print(f"synthetic images written to {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from brainsynth.export import export_generator

    out = export_generator(args.run_dir, args.out, force=args.force)
    print(f"generator written to {out}")
    return 0


def cmd_export_images(args: argparse.Namespace) -> int:
    from brainsynth.data.export import export_images

    out = export_images(args.dataset, args.out, split=args.split, fmt=args.format, force=args.force)
    print(f"real images written to {out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from brainsynth.evaluate import evaluate
    from brainsynth.evaluate.report import format_table1

    report = evaluate(args.real, dict(args.synthetic), args.out, runs=dict(args.run or []),
                      features=args.features, weights=args.weights, feature_layer=args.feature_layer,
                      input_size=args.input_size, precision=args.precision, device=args.device,
                      bootstrap=args.bootstrap, seed=args.seed, force=args.force)
    print(format_table1(report))
    print(f"report written to {args.out}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from brainsynth.evaluate.privacy import audit

    audit(args.train, args.synthetic, args.out, filter_flagged=args.filter, percentile=args.percentile,
          features=args.features, weights=args.weights, feature_layer=args.feature_layer,
          input_size=args.input_size, precision=args.precision, device=args.device, force=args.force)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from brainsynth.pipeline import run

    run(args.out, input=args.input, preset=args.preset, labels=args.labels, id_column=args.id_column,
        label_column=args.label_column, skip_unlabeled=args.skip_unlabeled, volume_index=args.volume_index,
        slices=args.slices, relative_slices=args.relative_slices, workers=args.workers,
        device=args.device, seed=args.seed, features=args.features, weights=args.weights)
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from brainsynth.data.fetch import fetch_adhd200, format_summary

    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    summary = fetch_adhd200(args.out, sites=sites, max_subjects=args.max_subjects, endpoint_url=args.endpoint_url)
    print(format_summary(summary))
    return 0


# --- parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="brainsynth", description="Synthetic brain MRI with a class-conditional progressive-growing GAN, "
                     "evaluated by GAN-train and audited for memorisation.")
    parser.add_argument("--version", action="version", version=f"brainsynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = add("phantom", cmd_phantom, "write a SIMULATED neonatal ADHD/control cohort (BIDS) from the MNI152 template")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--subjects", type=_positive_int, default=12, help="number of subjects (default 12)")
    p.add_argument("--adhd-fraction", type=_fraction, default=0.5, help="share of ADHD subjects (default 0.5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--effect", type=float, default=1.0,
                   help="strength of the simulated group difference; 1.0 is the calibrated default, 0 removes it")
    p.add_argument("--contrast", choices=("neonatal", "adult"), default="neonatal",
                   help="T1 contrast: neonatal (white matter darker than grey) or adult")
    p.add_argument("--force", action="store_true", help="replace an existing OUT_DIR")

    p = add("prepare", cmd_prepare, "the paper's preprocessing: volumes -> slices -> patches -> a DATASET")
    p.add_argument("input", metavar="INPUT", help="BIDS folder, ADHD-200 site folder, or flat folder of NIfTI files")
    p.add_argument("--out", required=True, metavar="DATASET")
    _add_input_options(p)
    _add_prepare_options(p)
    p.add_argument("--force", action="store_true", help="replace an existing --out")

    p = add("info", cmd_info, "summarise a prepared DATASET")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = add("train", cmd_train, "train the conditional PGGAN or the DCGAN baseline on a DATASET's train split")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--model", choices=("pggan", "dcgan"), default="pggan")
    p.add_argument("--out", required=True, metavar="RUN_DIR")
    p.add_argument("--config", default="demo", metavar="FILE|PRESET", help="YAML file or preset: paper, demo, tiny")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one config value (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in RUN_DIR")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present, else cpu)")
    p.add_argument("--force", action="store_true", help="start over in an existing RUN_DIR")

    p = add("generate", cmd_generate, "sample synthetic images per class from a trained run (G_ema)")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--n", type=_positive_int, required=True, help="images per label")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--label", choices=("adhd", "control", "both"), default="both")
    p.add_argument("--format", choices=("png", "npz", "nifti"), default="png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--force", action="store_true")

    p = add("export", cmd_export, "write the generator alone as safetensors with a JSON model card")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE")
    p.add_argument("--force", action="store_true")

    p = add("export-images", cmd_export_images, "write a DATASET's real images as an image folder (like generate)")
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--split", choices=("train", "test", "all"), default="train")
    p.add_argument("--format", choices=("png", "npz", "nifti"), default="png")
    p.add_argument("--force", action="store_true")

    p = add("evaluate", cmd_evaluate, "GAN-train, GAN-test, fidelity and privacy against the real baseline")
    p.add_argument("--real", required=True, metavar="DATASET")
    p.add_argument("--synthetic", required=True, action="append", type=_named_dir, metavar="NAME=DIR")
    p.add_argument("--run", action="append", type=_named_dir, metavar="NAME=RUN_DIR",
                   help="training run whose curves go into the report (repeatable)")
    p.add_argument("--out", required=True, metavar="REPORT_DIR")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples over test subjects")
    p.add_argument("--seed", type=int, default=0)
    _add_feature_options(p)
    p.add_argument("--force", action="store_true")

    p = add("audit", cmd_audit, "privacy audit: memorisation and membership inference of a synthetic set")
    p.add_argument("--train", required=True, metavar="DATASET")
    p.add_argument("--synthetic", required=True, metavar="DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--filter", action="store_true", help="also write the synthetic set minus flagged images")
    p.add_argument("--percentile", type=float, default=1.0,
                   help="held-out distance percentile below which a synthetic image is a near-copy (default 1)")
    _add_feature_options(p)
    p.add_argument("--force", action="store_true")

    p = add("run", cmd_run, "the whole method end to end: prepare, train PGGAN + DCGAN, generate, evaluate, report")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--input", metavar="DIR", help="your cohort (default: the SIMULATED cohort)")
    p.add_argument("--preset", choices=("demo", "paper", "tiny"), default="demo",
                   help="demo (CPU, 64 px), paper (GPU, 256 px, the paper's settings), tiny (smoke test)")
    _add_input_options(p)
    p.add_argument("--slices", type=_range, metavar="A:B", help="axial slice range (default 30:120)")
    p.add_argument("--relative-slices", type=_range, metavar="FA:FB",
                   help="slice range relative to the brain's axial extent, for scans of other geometry")
    p.add_argument("--workers", type=_positive_int, default=1, help="volumes prepared in parallel (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None)
    p.add_argument("--features", default="vgg16-random", metavar="NAME")
    p.add_argument("--weights", metavar="FILE")

    p = add("fetch", cmd_fetch, "download public data: ADHD-200 T1 scans and diagnoses")
    p.add_argument("dataset", choices=("adhd200",))
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--sites", metavar="A,B,...", help="comma-separated site names (default: all)")
    p.add_argument("--max-subjects", type=_positive_int, metavar="N", help="at most N subjects per site")
    p.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: AWS)")
    return parser


def setup_logging(level: int) -> None:
    """Send brainsynth's log lines to stderr, bare (they are written for people)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)


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

