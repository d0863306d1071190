"""``brainsynth generate``: sample labelled synthetic images from a run's G_ema (or EMA denoiser).

Every image can be regenerated on its own. Image ``i`` of class ``c`` (0 control, 1 adhd)
with ``--seed s`` has the per-image seed::

    image_seed = SeedSequence([s, c, i]).generate_state(1, uint64)[0] >> 1     (63 bits)

stored as ``seed`` in its ``metadata.json`` record, and its latent is::

    z = torch.randn(z_dim, generator=torch.Generator().manual_seed(image_seed))

fed to G_ema with the label ``c`` at the checkpoint's resolution and fade weight (see
:func:`latent_for_seed`). Pixels map from G's [-1, 1] to [0, 1], clipped, then to uint8.

The diffusion model (``--model ddpm``) starts instead from the initial noise::

    x_T = torch.randn(1, res, res, generator=torch.Generator().manual_seed(image_seed))

and runs DDIM (eta 0, deterministic) from it in ``generate.steps`` steps with guidance weight
``generate.guidance`` (:func:`noise_for_seed`, :class:`brainsynth.models.ddpm.Sampler`). Its
network may run under bf16 autocast (``generate.precision``); the GANs sample in fp32.

One exception: a DCGAN trained with ``train.dcgan.ema_bn: train_mode`` is sampled with batch
statistics (as in training), so an image also depends on the others in its batch. Batches
then hold the training batch size, in the order of the records (the last one padded with
latents seeded from its first image's seed), and the set regenerates as a whole (same
seeds, same order), not image by image. The other modes sample in eval mode: ``recompute``
stored G_ema's own statistics in the checkpoint (see :mod:`brainsynth.train.ema`).

Nothing from any source scan is carried into the output: the metadata holds only the
run's provenance (checkpoint file name and SHA-256, the training data's fingerprint, images
shown, config), never a local path or a subject id (:mod:`brainsynth.shareable`), and NIfTI
output gets a fresh identity affine (:mod:`brainsynth.imageset`).
"""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from brainsynth import LABELS, __version__
from brainsynth.config import GenerateConfig, TrainConfig, sections_yaml, train_config_from_dict
from brainsynth.devices import resolve_device
from brainsynth.progress import bar
from brainsynth.errors import ConfigError
from brainsynth.fsio import check_output_free, sha256_file
from brainsynth.imageset import write_image_set
from brainsynth.shareable import strip_local_paths
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.dp import guarantee as dp_guarantee
from brainsynth.train.ema import ema_bn_mode
from brainsynth.train.schedule import build_schedule

log = logging.getLogger("brainsynth.generate")

LABEL_CHOICES = (*LABELS, "both")
# Images per forward pass. On the CPU a moderate batch keeps the activations in cache: at 64 px
# (demo widths, 1 thread) 64 gave ~1000 img/s, 256 ~820 and 500 ~470 (see the engine's report).
GENERATE_BATCH = {"cpu": 64, "cuda": 1024}
# The diffusion model: images per DDIM chain (every step of a chain runs the whole batch).
SAMPLE_BATCH = {"cpu": 128, "cuda": 512}


def image_seed(seed: int, label_index: int, i: int) -> int:
    """The 63-bit per-image seed of image ``i`` of class ``label_index`` (see module docstring)."""
    state = np.random.SeedSequence([seed, label_index, i]).generate_state(1, np.uint64)[0]
    return int(state >> np.uint64(1))


def latent_for_seed(image_seed_value: int, z_dim: int) -> torch.Tensor:
    """The latent ``[z_dim]`` of one image, from its per-image seed."""
    return torch.randn(z_dim, generator=torch.Generator().manual_seed(int(image_seed_value)))


def noise_for_seed(image_seed_value: int, res: int) -> torch.Tensor:
    """The diffusion model's initial noise ``[1, res, res]`` of one image, from its per-image seed."""
    return torch.randn(1, res, res, generator=torch.Generator().manual_seed(int(image_seed_value)))


@torch.inference_mode()
def sample_diffusion(sampler: nn.Module, labels: Sequence[int], seeds: Sequence[int], res: int, steps: int,
                     guidance: float = 0.0, precision: str = "fp32", device: torch.device | str = "cpu",
                     batch_size: int | None = None, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Images of a diffusion model for given labels and per-image seeds.

    Parameters
    ----------
    sampler : brainsynth.models.ddpm.Sampler
        The run's DDIM sampler (:func:`load_generator_from_checkpoint`).
    labels, seeds : sequence of int
        Class index and per-image seed (:func:`image_seed`) of every image.
    res : int
        Image size.
    steps, guidance, precision
        DDIM steps, classifier-free guidance weight, autocast of the network (``generate`` keys).
    batch_size : int, optional
        Images sampled together (default :data:`SAMPLE_BATCH` of the device type).

    Returns
    -------
    np.ndarray
        float32 ``[N, res, res]`` in [0, 1].
    """
    device = torch.device(device)
    batch_size = batch_size or SAMPLE_BATCH.get(device.type, 128)
    sampler = sampler.eval().to(device)
    out = np.empty((len(labels), res, res), dtype=np.float32)
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        noise = torch.stack([noise_for_seed(s, res) for s in seeds[start:stop]]).to(device)  # [B, 1, res, res]
        y = torch.as_tensor(labels[start:stop], dtype=torch.long, device=device)  # [B]
        x = sampler(noise, y, steps=steps, guidance=guidance, precision=precision)  # [B, 1, res, res] in [-1, 1]
        out[start:stop] = ((x[:, 0] + 1.0) * 0.5).clamp_(0.0, 1.0).cpu().numpy()
        if progress:
            progress(stop - start)
    return out


@torch.inference_mode()
def sample_images(G: nn.Module, labels: Sequence[int], seeds: Sequence[int], res: int, alpha: float, z_dim: int,
                  device: torch.device | str = "cpu", batch_size: int | None = None,
                  batch_stats: bool = False, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Images of ``G`` for given labels and per-image seeds.

    Parameters
    ----------
    G : nn.Module
        A generator (G_ema) with the ``G(z, labels, res, alpha)`` signature.
    labels : sequence of int
        Class index per image.
    seeds : sequence of int
        Per-image seed (:func:`image_seed`), same length as ``labels``.
    res : int
        Output resolution; ``alpha`` its fade weight.
    z_dim : int
        Latent size of ``G``.
    batch_size : int, optional
        Images per forward pass (default :data:`GENERATE_BATCH` of the device type).
    batch_stats : bool
        Normalise G's batch norms by each batch's statistics (``train.dcgan.ema_bn=train_mode``);
        every batch then holds ``batch_size`` images, the last one padded (module docstring).

    Returns
    -------
    np.ndarray
        float32 ``[N, res, res]`` in [0, 1].
    """
    device = torch.device(device)
    batch_size = batch_size or GENERATE_BATCH.get(device.type, 256)
    # NHWC is oneDNN's fast layout for these convolutions (1.6-1.8x measured at 64 px on the CPU).
    G = G.eval().to(device, memory_format=torch.channels_last)
    out = np.empty((len(labels), res, res), dtype=np.float32)
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        z = torch.stack([latent_for_seed(s, z_dim) for s in seeds[start:stop]])  # [B, z]
        y = torch.as_tensor(labels[start:stop], dtype=torch.long)  # [B]
        if batch_stats and stop - start < batch_size:
            z, y = _padded(z, y, batch_size, int(seeds[start]))  # [batch_size, z], [batch_size]
        z, y = z.to(device), y.to(device)
        if batch_stats:
            from brainsynth.models.dcgan import batch_statistics

            with batch_statistics(G):
                x = G(z, y, res, alpha).float()  # [B, 1, res, res] in ~[-1, 1]
        else:
            x = G(z, y, res, alpha).float()  # [B, 1, res, res] in ~[-1, 1]
        out[start:stop] = ((x[: stop - start, 0] + 1.0) * 0.5).clamp_(0.0, 1.0).cpu().numpy()
        if progress:
            progress(stop - start)
    return out


def _padded(z: torch.Tensor, y: torch.Tensor, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A short last batch filled up to ``size`` with latents and labels seeded by ``seed``."""
    g = torch.Generator().manual_seed(seed)
    extra = size - len(z)
    z_extra = torch.randn(extra, z.shape[1], generator=g)  # [extra, z]
    y_extra = y[torch.randint(len(y), (extra,), generator=g)]  # [extra]; labels of the batch itself
    return torch.cat([z, z_extra]), torch.cat([y, y_extra])


def sampling_batch_stats(cfg: TrainConfig, res: int) -> int | None:
    """The batch size to sample a run's G_ema with batch statistics, or None for eval mode.

    Only a DCGAN trained with ``ema_bn: train_mode`` is sampled that way, in batches of its
    training batch size at ``res``.
    """
    if ema_bn_mode(cfg) != "train_mode":
        return None
    return build_schedule(cfg).batch_sizes[res]


def load_generator_from_checkpoint(state: dict[str, Any]) -> nn.Module:
    """Rebuild G_ema from a loaded checkpoint (networks are defined by its config).

    For a diffusion model this is its DDIM :class:`~brainsynth.models.ddpm.Sampler` around
    the EMA denoiser.
    """
    from brainsynth.models import build_models, diffusion_kwargs, network_kwargs

    cfg = train_config_from_dict(state["config"])
    G, _ = build_models(cfg.model, **network_kwargs(cfg))
    try:
        G.load_state_dict(state["G_ema"])
    except RuntimeError as exc:
        raise ckpt.CheckpointError(f"checkpoint G_ema does not fit its own config ({str(exc).splitlines()[0]})") from None
    G = G.eval().requires_grad_(False)
    if cfg.model == "ddpm":
        from brainsynth.models.ddpm import Sampler

        return Sampler(G, **diffusion_kwargs(cfg)).eval()
    return G


def sample_state(state: dict[str, Any], cfg: GenerateConfig, classes: Sequence[int], device: torch.device | str,
                 ) -> tuple[np.ndarray, list[int], list[int], int | None]:
    """``cfg.images_per_label`` images of each class in ``classes`` from a loaded checkpoint, with the
    per-image seeds of ``cfg.seed`` (what :func:`generate_images` writes; selection samples the same way).

    Returns
    -------
    images : np.ndarray
        float32 ``[N, res, res]`` in [0, 1].
    labels, seeds : list of int
        Class index and per-image seed of each image.
    stats_batch : int or None
        The batch sampled with batch statistics (DCGAN ``train_mode``), else None.
    """
    G = load_generator_from_checkpoint(state)
    run_cfg = train_config_from_dict(state["config"])
    if run_cfg.num_threads:
        torch.set_num_threads(run_cfg.num_threads)  # the run's choice (see configs/demo.yaml)
    progress = state["progress"]
    res, alpha = int(progress["resolution"]), float(progress["alpha"])
    n = cfg.images_per_label
    labels = [c for c in classes for _ in range(n)]
    seeds = [image_seed(cfg.seed, c, i) for c in classes for i in range(n)]
    stats_batch = None if run_cfg.model == "ddpm" else sampling_batch_stats(run_cfg, res)
    with bar(len(labels), f"generate ({run_cfg.model}, {torch.device(device).type})") as step:
        if run_cfg.model == "ddpm":
            images = sample_diffusion(G, labels, seeds, res, cfg.steps, cfg.guidance, cfg.precision, device,
                                      progress=step)  # [N, res, res]
        else:
            images = sample_images(G, labels, seeds, res, alpha, run_cfg.z_dim, device, batch_size=stats_batch,
                                   batch_stats=stats_batch is not None, progress=step)  # [N, res, res]
    return images, labels, seeds, stats_batch


def generate_images(run_dir: str | Path, out: str | Path, cfg: GenerateConfig, *, label: str = "both",
                    device: str | None = None, force: bool = False, checkpoint: str | Path | None = None,
                    selection: dict[str, Any] | None = None) -> Path:
    """Write ``cfg.images_per_label`` synthetic images PER LABEL from a checkpoint of ``run_dir``.

    Parameters
    ----------
    run_dir : path
        A training run folder (``brainsynth train --out RUN_DIR``).
    out : path
        Output image-set folder (:mod:`brainsynth.imageset`); refused if it exists unless ``force``.
    cfg : GenerateConfig
        The ``generate`` section: images per label, format, base seed of the per-image seeds.
    label : {"control", "adhd", "both"}
    device : str, optional
        ``cpu`` or ``cuda``; default CUDA when present.
    checkpoint : path, optional
        The checkpoint to sample (default: the run's newest); :func:`brainsynth.selection.choose_checkpoint`
        picks one by ``generate.select``.
    selection : dict, optional
        How it was chosen (:class:`brainsynth.selection.Selection` ``.record()``), written into the
        set's metadata as ``generator.selection``.

    Returns
    -------
    Path
        The output folder.
    """
    cfg.check()
    if label not in LABEL_CHOICES:
        raise ConfigError(f"--label {label!r}: choose one of {', '.join(LABEL_CHOICES)}")
    fmt, seed = cfg.format, cfg.seed
    check_output_free(out, force)  # before the sampling work, not after
    dev = resolve_device(device)
    path = Path(checkpoint) if checkpoint is not None else ckpt.latest_checkpoint(run_dir)
    state = ckpt.load_checkpoint(path)
    progress = state["progress"]
    res, alpha = int(progress["resolution"]), float(progress["alpha"])
    run_cfg = train_config_from_dict(state["config"])
    classes = [LABELS.index(label)] if label != "both" else list(range(len(LABELS)))
    diffusion = run_cfg.model == "ddpm"
    images, labels, seeds, stats_batch = sample_state(state, cfg, classes, dev)  # [N, res, res]
    records = [{"label": LABELS[c], "seed": s} for c, s in zip(labels, seeds)]
    extra = {
        "synthetic": True,
        "generator": {
            "checkpoint": path.name,
            "checkpoint_sha256": sha256_file(path),
            "data_fingerprint": state["data"].get("fingerprint"),
            "images_shown": int(progress["images_shown"]),
            "model": run_cfg.model,
            "resolution": res,
            "alpha": alpha,
            "batch_norm": f"batch statistics, batches of {stats_batch}" if stats_batch else "eval mode",
            **({"sampler": "DDIM (eta 0)", "steps": cfg.steps, "guidance": cfg.guidance,
                "precision": cfg.precision} if diffusion else {}),
            **({"selection": selection} if selection is not None else {}),
            "differential_privacy": dp_guarantee(run_cfg, state.get("family")),
        },
        "seed": seed,
        "latent": ("x_T = torch.randn(1, res, res, generator=torch.Generator().manual_seed(record seed))" if diffusion
                   else "z = torch.randn(z_dim, generator=torch.Generator().manual_seed(record seed))"),
        "config": run_cfg.to_dict(),
        "brainsynth_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    write_image_set(out, images, records, synthetic=True, fmt=fmt, extra_meta=strip_local_paths(extra), force=force,
                    extra_files={"config.yaml": sections_yaml(cfg, what="synthetic image set")})
    log.info("%d images (%s) from %s", len(images), ", ".join(LABELS[c] for c in classes), path)
    return Path(out)
