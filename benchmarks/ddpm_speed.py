"""CPU cost of the diffusion model: training img/s and DDIM sampling img/s, side by side with a reference.

Measures, for the ``train.ddpm`` section of a preset (default ``demo``) at its image size:

- training: images per second of the loop's denoising step (forward, backward, gradient
  clipping, Adam, EMA), at the preset's batch size and precision;
- sampling: images per second of :func:`brainsynth.generate.sample_diffusion` (the whole
  DDIM chain, noise from per-image seeds, output to [0, 1]) at 25 and 50 steps, fp32 and bf16,
  guidance 0 (one network evaluation per step) and > 0 (two, batched);
- the reference: the demo PGGAN's G_ema sampling rate (``sample_images``), timed in the same
  process between the measurements, so that a ratio stays meaningful on a loaded machine.

Every rate is the best of ``--repeats`` timed runs after one warm-up (a busy machine only ever
makes a run slower). The load average is printed before and after::

    python benchmarks/ddpm_speed.py                       # 1 thread (the demo's setting)
    python benchmarks/ddpm_speed.py --threads 2           # both cores
    python benchmarks/ddpm_speed.py --out ddpm_speed.json
    python benchmarks/ddpm_speed.py --json                # one JSON object on stdout, the lines on stderr

Weights are random (training speed and sampling speed do not depend on them).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from brainsynth.config import load_config  # noqa: E402
from brainsynth.generate import image_seed, sample_diffusion, sample_images  # noqa: E402
from brainsynth.models import build_models, diffusion_kwargs, network_kwargs  # noqa: E402
from brainsynth.models.ddpm import Sampler  # noqa: E402
from brainsynth.train.diffusion import DiffusionLoss  # noqa: E402
from brainsynth.train.ema import update_ema  # noqa: E402


def best_rate(fn, n_images: int, repeats: int) -> float:
    """Images per second of ``fn()`` (which makes ``n_images``), best of ``repeats`` after a warm-up."""
    fn()
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, n_images / (time.perf_counter() - t0))
    return best


@functools.cache
def reference_generator() -> tuple[torch.nn.Module, int]:
    """The demo preset's PGGAN generator at 64 px (random weights) and its latent size, built once."""
    cfg = load_config("demo").train["pggan"]
    cfg.resolution = 64
    G, _ = build_models("pggan", **network_kwargs(cfg))
    return G, cfg.z_dim


def reference_rate(repeats: int, n_images: int = 256) -> float:
    """The demo PGGAN's sampling rate (img/s) on ``n_images``: the yardstick timed beside every measurement."""
    G, z_dim = reference_generator()
    labels, seeds = [i % 2 for i in range(n_images)], [image_seed(0, 0, i) for i in range(n_images)]
    return best_rate(lambda: sample_images(G, labels, seeds, 64, 1.0, z_dim), n_images, repeats)


def training_rate(cfg, res: int, steps: int, repeats: int) -> float:
    """Images per second of the denoising step, as the loop runs it (one process)."""
    G, _ = build_models("ddpm", **network_kwargs(cfg))
    G.train()
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    loss_fn = DiffusionLoss(G, cfg, null_label=2)
    opt = torch.optim.Adam(G.parameters(), lr=1e-4, betas=tuple(cfg.betas))
    batch = cfg.batch_sizes if isinstance(cfg.batch_sizes, int) else cfg.batch_sizes[max(cfg.batch_sizes)]
    reals = torch.rand(256, 1, res, res) * 2 - 1
    labels = torch.randint(2, (256,))
    gen = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16")

    def run_steps() -> None:
        for _ in range(steps):
            idx, noise, t, drop = loss_fn.draw(batch, 256, res, gen)
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss, _ = loss_fn.loss(reals[idx], labels[idx], noise, t, drop)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(G.parameters(), cfg.grad_clip)
            opt.step()
            update_ema(ema, G, 0.999)

    return best_rate(run_steps, steps * batch, repeats)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="demo", help="preset or YAML whose train.ddpm section is measured")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=256, help="images per sampling run")
    ap.add_argument("--train-steps", type=int, default=8, help="training steps per timed run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--guidance", type=float, default=1.0, help="the guided setting measured besides w = 0")
    ap.add_argument("--steps", default="25,50", help="DDIM steps of the sampling rows, comma-separated")
    ap.add_argument("--precisions", default="fp32,bf16", help="precisions of the sampling rows, comma-separated")
    ap.add_argument("--reference-images", type=int, default=256, help="images per run of the PGGAN yardstick")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON object (the lines go to stderr)")
    args = ap.parse_args(argv)
    text = sys.stderr if args.json else sys.stdout
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(args.config)
    cfg = config.train["ddpm"]
    res = cfg.resolution or config.prepare.size
    cfg.resolution = res
    result = {"config": args.config, "resolution": res, "threads": args.threads, "load_before": os.getloadavg(),
              "architecture": network_kwargs(cfg), "batch": cfg.batch_sizes, "train_precision": cfg.precision,
              "rows": []}
    print(f"# load average before: {result['load_before']}; {args.threads} thread(s); {res} px", file=text,
          flush=True)

    def row(what: str, rate: float, **setting) -> None:
        ref = reference_rate(args.repeats, args.reference_images)
        result["rows"].append({"what": what, **setting, "img_per_s": rate, "reference_img_per_s": ref,
                               "ratio": rate / ref})
        print(f"{what:40s} {rate:8.1f} img/s   (PGGAN G_ema beside it: {ref:7.1f} img/s; ratio {rate / ref:.4f})",
              file=text, flush=True)

    row(f"training ({cfg.precision}, batch {cfg.batch_sizes})", training_rate(cfg, res, args.train_steps,
                                                                              args.repeats),
        mode="training", precision=cfg.precision)
    G, _ = build_models("ddpm", **network_kwargs(cfg))
    sampler = Sampler(G.eval(), **diffusion_kwargs(cfg))
    labels = [i % 2 for i in range(args.images)]
    seeds = [image_seed(0, i % 2, i) for i in range(args.images)]
    for steps in [int(n) for n in args.steps.split(",")]:
        for precision in args.precisions.split(","):
            for guidance in (0.0, args.guidance):
                rate = best_rate(lambda: sample_diffusion(sampler, labels, seeds, res, steps, guidance, precision),
                                 args.images, args.repeats)
                row(f"sampling {steps} steps, {precision}, guidance {guidance:g}", rate, mode="sampling",
                    steps=steps, precision=precision, guidance=guidance)
    result["load_after"] = os.getloadavg()
    print(f"# load average after: {result['load_after']}", file=text)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
