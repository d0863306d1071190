"""``brainsynth export``: the generator alone, as safetensors, with a JSON model card.

Two files are written, both atomically::

    OUT                 G_ema's tensors (safetensors: no pickle, nothing executes on load)
    OUT minus its suffix + ".json"   the model card (e.g. gen.safetensors -> gen.json)

The card says how to rebuild and use the network: model kind and constructor arguments,
the resolution and fade weight it was trained to, latent size, classes in index order,
where the config came from (preset or file name, overrides), a summary of the training data with
its fingerprint, images shown, the checkpoint's and the weights' SHA-256, and
``RUN_DIR/metrics.json`` when it exists. The card is shared with the weights, so it holds no local
path (the training data's folder, the run folder) and no subject id (:mod:`brainsynth.shareable`).
:func:`load_exported_generator` rebuilds the generator from these two files alone. For a
diffusion model the weights are the EMA denoiser's, the card adds its noise process
(``diffusion``: timesteps, schedule, prediction) and the loader returns the DDIM
:class:`~brainsynth.models.ddpm.Sampler` around it.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

from torch import nn

from brainsynth import LABELS, __version__
from brainsynth.errors import CheckpointError
from brainsynth.fsio import atomic_output_path, atomic_write_json, check_output_free, sha256_file
from brainsynth.shareable import strip_local_paths
from brainsynth.train import checkpoint as ckpt

CARD_FORMAT = "brainsynth-generator-v1"
METRICS_FILE = "metrics.json"
USAGE_GAN = ("G, card = brainsynth.export.load_exported_generator(path); "
             "G(z [N, z_dim] ~ N(0, I), labels [N] (0 control, 1 adhd), card['resolution'], card['alpha']) "
             "-> images [N, 1, H, W] in about [-1, 1]")
USAGE_DIFFUSION = ("S, card = brainsynth.export.load_exported_generator(path); "
                   "S(noise [N, 1, R, R] ~ N(0, I) with R = card['resolution'], labels [N] (0 control, 1 adhd; "
                   "2 = unconditional), steps=50, guidance=0.0, precision='fp32') -> images [N, 1, R, R] in [-1, 1] "
                   "(DDIM, eta 0)")


def card_path(out: str | Path) -> Path:
    """Where the model card of weights file ``out`` lives."""
    return Path(out).with_suffix(".json")


def export_generator(run_dir: str | Path, out: str | Path, *, force: bool = False) -> Path:
    """Write the run's G_ema to ``out`` (safetensors) and its model card beside it.

    Parameters
    ----------
    run_dir : path
        A training run folder; its newest checkpoint is exported.
    out : path
        Weights file, conventionally ``*.safetensors``; refused (with its card) if either
        exists, unless ``force``.

    Returns
    -------
    Path
        The weights file.
    """
    from safetensors.torch import save_file

    from brainsynth.config import train_config_from_dict
    from brainsynth.models import diffusion_kwargs, network_kwargs
    from brainsynth.train.dp import guarantee

    out, card_file = Path(out), card_path(out)
    if out.suffix == ".json":
        raise CheckpointError(f"--out {out}: the weights file cannot end in .json (the model card takes that name)")
    check_output_free(out, force)
    check_output_free(card_file, force)
    path = ckpt.latest_checkpoint(run_dir)
    state = ckpt.load_checkpoint(path)
    cfg = train_config_from_dict(state["config"])
    # safetensors refuses shared or strided storage: give every tensor its own contiguous copy.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state["G_ema"].items()}
    with atomic_output_path(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": CARD_FORMAT, "model": cfg.model, "card": card_file.name})
    progress = state["progress"]
    metrics_path = Path(run_dir) / METRICS_FILE
    diffusion = cfg.model == "ddpm"
    card = {
        "format": CARD_FORMAT,
        "weights": out.name,
        "weights_sha256": sha256_file(out),
        "model": cfg.model,
        "architecture": network_kwargs(cfg),
        "resolution": int(progress["resolution"]),
        "alpha": float(progress["alpha"]),
        "final_resolution": cfg.resolution,
        "z_dim": None if diffusion else cfg.z_dim,
        "diffusion": diffusion_kwargs(cfg) if diffusion else None,
        "classes": list(LABELS),
        "config_source": state.get("launch", {}).get("config"),
        "data": {k: v for k, v in state["data"].items() if k != "dataset"},  # the folder stays home
        "images_shown": int(progress["images_shown"]),
        "target_images": int(progress.get("target_images", progress["images_shown"])),
        "checkpoint": {"file": path.name, "sha256": sha256_file(path)},
        "config": cfg.to_dict(),
        "differential_privacy": guarantee(cfg, state.get("family")),
        "metrics": json.loads(metrics_path.read_text()) if metrics_path.is_file() else None,
        "usage": USAGE_DIFFUSION if diffusion else USAGE_GAN,
        "brainsynth_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(card_file, strip_local_paths(card))
    return out


def _architecture(card: dict[str, Any]) -> dict[str, Any]:
    arch = dict(card["architecture"])
    if arch.get("widths"):
        arch["widths"] = {int(k): int(v) for k, v in arch["widths"].items()}  # JSON made the keys strings
    return arch


def load_exported_generator(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an exported generator from its safetensors file and model card (no pickle).

    Parameters
    ----------
    path : path
        The weights file written by :func:`export_generator`.

    Returns
    -------
    G : nn.Module
        In eval mode, gradients off: the generator, or for a diffusion model its DDIM
        :class:`~brainsynth.models.ddpm.Sampler` (see the card's ``usage``).
    card : dict
        The model card (``resolution``, ``alpha``, ``z_dim``, ``classes``, ...).

    Raises
    ------
    CheckpointError
        When either file is missing, unreadable or does not match the other.
    """
    from safetensors.torch import load_file

    from brainsynth.models import build_models
    from brainsynth.models.ddpm import Sampler

    path = Path(path)
    card_file = card_path(path)
    for p in (path, card_file):
        if not p.is_file():
            raise CheckpointError(f"{p}: not found; export a generator with 'brainsynth export RUN_DIR --out {path}'")
    try:
        card = json.loads(card_file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{card_file}: unreadable model card ({exc})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CheckpointError(f"{card_file}: not a brainsynth model card (format {CARD_FORMAT} expected)")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for every corruption
        raise CheckpointError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0][:200]})") from None
    try:
        G, _ = build_models(card["model"], **_architecture(card))
        G.load_state_dict(tensors, strict=True)
        G = G.eval().requires_grad_(False)
        if card["model"] == "ddpm":
            G = Sampler(G, **card["diffusion"]).eval()
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: weights do not match the model card ({str(exc).splitlines()[0][:200]})") from None
    return G, card
