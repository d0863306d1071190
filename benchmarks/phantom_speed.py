"""Time ``brainsynth phantom``: wall time of make_cohort for N subjects at the default geometry.

    python benchmarks/phantom_speed.py --subjects 12 --repeats 3 [--json]

``--shape X Y Z`` times another voxel grid (``cohort.shape``) instead of the phantom's
320 x 320 x 200: the tests use a small one, the figures in benchmarks/README.md the default.

Each repeat writes a fresh cohort into a temporary folder (removed afterwards). The first
repeat also pays for loading the MNI templates (they are cached per process afterwards), so
it is reported apart from the median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from brainsynth.config import CohortConfig, section_from
from brainsynth.data import phantom
from brainsynth.errors import ConfigError


def cohort_config(subjects: int, seed: int, shape: list[int] | None) -> CohortConfig:
    """The default cohort (geometry and effect), or its ``shape`` voxel grid; checked."""
    return section_from(CohortConfig, {"subjects": subjects, "seed": seed, "shape": shape}, "--shape")


def time_cohort(cfg: CohortConfig) -> float:
    """Seconds to write one cohort."""
    with tempfile.TemporaryDirectory(prefix="phantom-bench-") as tmp:
        start = time.perf_counter()
        phantom.make_cohort(Path(tmp) / "cohort", cfg)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=12, help="subjects per cohort (default 12)")
    parser.add_argument("--repeats", type=int, default=3, help="cohorts timed (default 3)")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"),
                        help="voxel grid of each volume (cohort.shape; default the phantom's 320 320 200)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        cohort_config(args.subjects, 0, args.shape)
    except ConfigError as e:
        parser.error(str(e))
    grid = list(args.shape or phantom.GRID_SHAPE)
    times = [time_cohort(cohort_config(args.subjects, seed, args.shape)) for seed in range(args.repeats)]
    median = statistics.median(times)
    result = {
        "subjects": args.subjects,
        "grid": grid,
        "seconds": [round(t, 2) for t in times],
        "median_s": round(median, 2),
        "per_subject_s": round(median / args.subjects, 3),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "note": "first repeat includes loading the MNI templates",
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.subjects} subjects at {'x'.join(map(str, grid))}: "
              f"median {median:.1f} s over {args.repeats} runs ({median / args.subjects:.2f} s per subject); "
              f"runs {', '.join(f'{t:.1f}' for t in times)} s; torch threads {torch.get_num_threads()}; "
              f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
