"""Training throughput of one full GAN step on this machine, with achieved and peak GFLOP/s.

One step = D step (WGAN-GP with gradient penalty, or DCGAN BCE) + Adam step, then G step
+ Adam step (betas (0, 0.99)), then the G_ema update, as ``train/loop.py`` does them, on
random data at one resolution (stable phase, alpha 1, unless ``--fading``). Reported: images/s (median over repeats), the convolution + linear
FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` (forward,
backward and the GP's double backward), the achieved GFLOP/s, and the machine's peak
measured in the same run with a large 3x3 convolution at the same precision.

Example (the spec's comparison point, 64 px, widths 64,64,64,64,32)::

    python benchmarks/train_throughput.py --resolution 64 --widths 64,64,64,64,32 \
        --batch 16 --precision bf16 --no-conditional --threads 2 --repeats 5

``--widths`` may list more values than the resolution needs (the first ones are used), so
one list serves ``--resolution 16``, 32 and 64.

``--generate`` measures sampling instead: G_ema images/s under ``torch.inference_mode`` in
large batches, by default with the demo preset's generator (z 128, widths 64,64,32,16,16)::

    python benchmarks/train_throughput.py --generate --threads 2

See benchmarks/README.md for the latest figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from brainsynth.models import dcgan, pggan
from brainsynth.timing import machine_busy_seconds
from brainsynth.train.losses import DCGANLoss, WGANGPLoss

PEAK_SHAPE = dict(batch=32, channels=256, size=32)  # the "large convolution" of the peak measurement


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--widths", default="64,64,64,64,32",
                   help="channels per resolution 4..R, comma-separated (PGGAN; overrides fmap_base/max); "
                        "'official' uses fmap_base 8192 / fmap_max 512")
    p.add_argument("--dcgan-width", type=int, default=64, help="DCGAN width")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    p.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=True,
                   help="AC-GAN conditioning (PGGAN); the DCGAN is always conditional")
    p.add_argument("--model", choices=("pggan", "dcgan"), default="pggan")
    p.add_argument("--fading", action="store_true", help="alpha 0.5 (both paths run)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--json", action="store_true", help="print one JSON object only")
    p.add_argument("--flush-denormal", action=argparse.BooleanOptionalAction, default=False,
                   help="flush fp32 denormals to zero (torch.set_flush_denormal)")
    g = p.add_argument_group("--generate: sampling speed of G_ema")
    g.add_argument("--generate", action="store_true", help="measure G_ema sampling instead of training")
    g.add_argument("--gen-widths", default="64,64,32,16,16", help="G widths 4..R (default: the demo preset)")
    g.add_argument("--gen-z-dim", type=int, default=128, help="latent size (demo preset: 128)")
    g.add_argument("--gen-batch", default="32,64,128,512",
                   help="images per forward call; a comma-separated list measures each (small batches stay "
                        "in cache and are faster)")
    g.add_argument("--gen-images", type=int, default=4096, help="images per timed repeat")
    return p.parse_args(argv)


def _widths(args: argparse.Namespace, text: str) -> list[int] | None:
    if text == "official":
        return None
    n = int(args.resolution).bit_length() - 2  # resolutions 4..R
    values = [int(w) for w in text.split(",")]
    if len(values) < n:
        raise SystemExit(f"--widths lists {len(values)} values; resolution {args.resolution} needs {n}")
    return values[:n]


def build(args: argparse.Namespace):
    torch.manual_seed(0)
    if args.model == "pggan":
        widths = _widths(args, args.widths)
        cond = "acgan" if args.conditional else "none"
        G = pggan.Generator(args.resolution, z_dim=512 if widths is None else max(widths), conditioning=cond,
                            widths=widths)
        D = pggan.Discriminator(args.resolution, conditioning=cond, widths=widths)
        loss = WGANGPLoss(G, D)
    else:
        G = dcgan.Generator(args.resolution, width=args.dcgan_width)
        D = dcgan.Discriminator(args.resolution, width=args.dcgan_width)
        loss = DCGANLoss(G, D)
    if args.channels_last:
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.0, 0.99), eps=1e-8)
    return G, D, loss, opt_g, opt_d


def make_step(args, G, D, loss, opt_g, opt_d):
    n, r = args.batch, args.resolution
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    reals = (torch.rand(n, 1, r, r) * 2 - 1).contiguous(memory_format=fmt)
    labels = torch.randint(0, 2, (n,))
    alpha = 0.5 if args.fading else 1.0
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    d_params, counter = list(D.parameters()), [0]
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    ema_pairs = list(zip(G_ema.parameters(), G.parameters()))

    def step() -> None:
        z = torch.randn(n, G.z_dim)
        for p in d_params:
            p.requires_grad_(True)
        opt_d.zero_grad(set_to_none=True)
        with amp():
            d, _ = loss.d_loss(reals, labels, z, labels, r, alpha, counter[0])
        d.backward()
        opt_d.step()
        for p in d_params:
            p.requires_grad_(False)
        opt_g.zero_grad(set_to_none=True)
        with amp():
            g, _ = loss.g_loss(torch.randn(n, G.z_dim), labels, r, alpha)
        g.backward()
        opt_g.step()
        with torch.no_grad():  # G_ema, one lerp per tensor as the loop does (beta 0.999)
            for p_ema, p in ema_pairs:
                p_ema.lerp_(p, 1.0 - 0.999)
        counter[0] += 1

    return step


class _GlobalOnlyTracker:
    """Stand-in for FlopCounterMode's module tracker, whose hooks reject the GP's
    ``autograd.grad`` w.r.t. a leaf; only the global total is needed here."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(step) -> int:
    """Convolution + matmul FLOPs of one step (forward, backward, double backward)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnlyTracker()
    with counter:
        step()
    return int(counter.get_total_flops())




OTHERS: list[float] = []  # per timed repeat: share of all CPUs that OTHER processes used


def time_steps(step, steps: int) -> float:
    busy0, own0 = machine_busy_seconds(), time.process_time()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - t0
    OTHERS.append(max(0.0, (machine_busy_seconds() - busy0) - (time.process_time() - own0)) / (wall * os.cpu_count()))
    return wall


def peak_gflops(precision: str, channels_last: bool, repeats: int) -> float:
    """GFLOP/s of a large 3x3 conv (forward), the best this CPU does at this precision."""
    b, c, s = PEAK_SHAPE["batch"], PEAK_SHAPE["channels"], PEAK_SHAPE["size"]
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(b, c, s, s, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn(c, c, 3, 3, dtype=dtype).contiguous(memory_format=fmt)
    flops = 2 * b * c * c * 9 * s * s
    with torch.no_grad():
        for _ in range(2):
            torch.nn.functional.conv2d(x, w, padding=1)
        times = []
        for _ in range(max(3, repeats)):
            t0 = time.perf_counter()
            for _ in range(3):
                torch.nn.functional.conv2d(x, w, padding=1)
            times.append((time.perf_counter() - t0) / 3)
    return flops / statistics.median(times) / 1e9


def generate_speed(args: argparse.Namespace) -> dict:
    """G_ema images/s: ``--gen-images`` per repeat in batches of ``--gen-batch``, inference mode."""
    torch.manual_seed(0)
    widths = _widths(args, args.gen_widths)
    G = pggan.Generator(args.resolution, z_dim=args.gen_z_dim, widths=widths,
                        conditioning="acgan" if args.conditional else "none").eval().requires_grad_(False)
    if args.channels_last:
        G = G.to(memory_format=torch.channels_last)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.precision == "bf16" else contextlib.nullcontext
    batches = [int(b) for b in str(args.gen_batch).split(",")]

    def sample_all(n: int) -> int:
        labels = torch.arange(n) % G.n_classes
        calls = max(1, args.gen_images // n)
        for _ in range(calls):
            with torch.inference_mode(), amp():
                G(torch.randn(n, G.z_dim), labels, args.resolution, 1.0).float()
        return calls * n

    for n in batches:
        sample_all(n)  # warm-up (oneDNN primitive creation per shape)
    rates: dict[int, list[float]] = {n: [] for n in batches}
    for _ in range(args.repeats):  # batch sizes interleaved, so load changes hit all alike
        for n in batches:
            images = [0]
            wall = time_steps(lambda: images.__setitem__(0, sample_all(n)), 1)
            rates[n].append(images[0] / wall)
    medians = {n: statistics.median(v) for n, v in rates.items()}
    best = max(medians, key=medians.get)
    return {"mode": "generate", "resolution": args.resolution, "widths": widths, "z_dim": args.gen_z_dim,
            "precision": args.precision, "channels_last": args.channels_last, "threads": args.threads,
            "img_per_s": round(medians[best], 1), "best_batch": best,
            "img_per_s_by_batch": {n: round(v, 1) for n, v in medians.items()},
            "img_per_s_all": {n: [round(x, 1) for x in v] for n, v in rates.items()},
            "torch": torch.__version__, "load_avg_1min": round(os.getloadavg()[0], 2),
            "others_cpu_share": [round(v, 2) for v in OTHERS], "cpus": os.cpu_count()}  # per batch, per repeat


def _print(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:>16}: {v}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    OTHERS.clear()  # this call's repeats only, when main runs more than once in a process
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    if args.generate:
        result = generate_speed(args)
        _print(result, args.json)
        return result
    G, D, loss, opt_g, opt_d = build(args)
    step = make_step(args, G, D, loss, opt_g, opt_d)
    for _ in range(args.warmup):
        step()
    flops = count_flops(step)
    rates = [args.batch * args.steps / time_steps(step, args.steps) for _ in range(args.repeats)]
    img_s = statistics.median(rates)
    achieved = flops * img_s / args.batch / 1e9
    peak = peak_gflops(args.precision, args.channels_last, args.repeats)
    result = {
        "model": args.model, "resolution": args.resolution, "widths": args.widths if args.model == "pggan" else None,
        "batch": args.batch, "precision": args.precision, "conditional": args.conditional, "fading": args.fading,
        "channels_last": args.channels_last, "threads": args.threads, "img_per_s": round(img_s, 2),
        "img_per_s_all": [round(v, 2) for v in rates], "gflop_per_step": round(flops / 1e9, 3),
        "gflop_per_img": round(flops / args.batch / 1e9, 3), "achieved_gflops": round(achieved, 1),
        "peak_gflops": round(peak, 1), "pct_of_peak": round(100 * achieved / peak, 1), "torch": torch.__version__,
        # Other processes on the CPU distort every figure (2 threads suffer most): record the load,
        # and per timed repeat the share of the CPUs other processes used (0 = quiet machine).
        "load_avg_1min": round(os.getloadavg()[0], 2), "others_cpu_share": [round(v, 2) for v in OTHERS],
        "cpus": os.cpu_count(),
    }
    _print(result, args.json)
    return result


if __name__ == "__main__":
    main()
