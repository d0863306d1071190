"""What a model family adds to the one training loop: its networks, its step and its sample grid.

The loop (:mod:`brainsynth.train.loop`) owns everything the families share: the run folder,
the schedule in images shown, data, ticks, checkpoints, resume, rollback, the EMA of the
generator, logging and multi-process training. A family supplies a :class:`TrainingStep`:

==========================  ==============================================================
``G``, ``D``                the trained networks (``D`` None without a discriminator)
``new_optimisers()``        fresh Adam state (at the start and at every reset point)
``step(phase, batch, i)``   optimisation step ``i`` on the global batch: its stats and losses
``grid_input(columns, g)``  the fixed input of the tick's sample grid (latents or noise)
``samples(x, labels, ph)``  G_ema's images of that input
``probe(cfg, n, phase, d)`` arguments of one forward of G, to compile it before training
``prepare_for_sampling()``  anything G_ema needs before it is sampled or saved
``tick_record()``           figures the family adds to each tick's stats line
``state_dict()``            its own state for the checkpoint (``load_state_dict`` restores it)
==========================  ==============================================================

A new family adds a module with its step and one entry in :data:`STEP_CLASSES`; the loop
does not change.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import torch
from torch import nn

from brainsynth.config import TrainConfig
from brainsynth.train import distributed as ddp

STEP_CLASSES = {
    "pggan": "brainsynth.train.gan_step:GANStep",
    "dcgan": "brainsynth.train.gan_step:GANStep",
    "ddpm": "brainsynth.train.diffusion:DiffusionStep",
}
"""Model family -> ``module:class`` of its :class:`TrainingStep` (imported when used)."""


class TrainingStep:
    """A model family's part of training (see the module docstring).

    Parameters
    ----------
    cfg : TrainConfig
        The run's resolved training config.
    G, D : nn.Module
        The networks as built (``D`` None without a discriminator), on the device.
    G_fwd : nn.Module
        G's forward for training (``torch.compile`` of G, or G itself).
    G_ema : nn.Module
        The averaged generator the grid is sampled from.
    data : RealImages
        The resident training images (:mod:`brainsynth.train.reals`).
    augment : Augment
        What D sees is augmented by it (its state is checkpointed by the loop).
    info : DistInfo
        This process's rank; the step averages gradients over ranks.
    gen : torch.Generator
        The loop's seeded CPU generator: every batch draw comes from it, identical on every rank.
    """

    def __init__(self, cfg: TrainConfig, G: nn.Module, D: nn.Module | None, G_fwd: nn.Module, G_ema: nn.Module,
                 data: Any, augment: Any, info: ddp.DistInfo, gen: torch.Generator):
        self.cfg, self.G, self.D, self.G_fwd, self.G_ema = cfg, G, D, G_fwd, G_ema
        self.data, self.augment, self.info, self.gen = data, augment, info, gen
        self.device = data.device
        self.opt_G: torch.optim.Optimizer | None = None
        self.opt_D: torch.optim.Optimizer | None = None

    def new_optimisers(self) -> None:
        """Fresh Adam state for every trained network."""
        cfg = self.cfg
        kwargs = {"lr": 0.0, "betas": (cfg.betas[0], cfg.betas[1]), "eps": cfg.eps}
        self.opt_G = torch.optim.Adam(self.G.parameters(), **kwargs)
        self.opt_D = torch.optim.Adam(self.D.parameters(), **kwargs) if self.D is not None else None

    def optimisers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.opt_G, self.opt_D) if opt is not None]

    def autocast(self):
        """bf16 autocast on the run's device where ``train.precision`` asks for it."""
        if self.cfg.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self, phase: Any, batch: int, index: int) -> tuple[dict[str, torch.Tensor], tuple[torch.Tensor, ...]]:
        """Optimisation step number ``index`` (from 0) on a global batch of ``batch`` images.

        Returns the step's stats and the losses it optimised (device tensors: the loop folds
        the losses into its finite check and averages the stats over the tick).
        """
        raise NotImplementedError

    def grid_input(self, columns: int, generator: torch.Generator) -> torch.Tensor:
        """The sample grid's fixed input, ``[columns, ...]``, drawn from ``generator``."""
        raise NotImplementedError

    def samples(self, grid: torch.Tensor, labels: torch.Tensor, phase: Any) -> torch.Tensor:
        """G_ema's images ``[N, 1, res, res]`` of the grid input ``[N, ...]`` and ``labels [N]``."""
        raise NotImplementedError

    @staticmethod
    def probe(cfg: TrainConfig, n: int, phase: Any, device: torch.device) -> tuple:
        """Arguments of one forward of G on ``n`` images at ``phase`` (to compile it before training)."""
        raise NotImplementedError

    def prepare_for_sampling(self, images_shown: int, batch: int) -> None:
        """Anything G_ema needs before it is sampled or saved (nothing by default)."""

    def tick_record(self) -> dict[str, float]:
        """Figures for the tick's stats line beyond the averaged step stats (none by default)."""
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        """State of the family's own that a checkpoint keeps (None: nothing)."""
        return None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`state_dict` (``None`` from a checkpoint that has none)."""


def step_class(model: str) -> type[TrainingStep]:
    """The :class:`TrainingStep` subclass of a model family."""
    module, _, name = STEP_CLASSES[model].partition(":")
    return getattr(importlib.import_module(module), name)
