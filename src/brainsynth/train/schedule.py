"""The progressive-growing schedule: a pure function of the number of images shown.

``Schedule.at(images_shown)`` gives the resolution, fade weight, batch size and learning
rate of that moment, so the loop needs no state of its own for it and a resumed run picks
up exactly where it stopped. Counting in images (not steps) is the official convention.

Timeline (the official release of Karras et al. 2018)::

    start_res stable | fade 2*start_res | stable 2*start_res | fade ... | final_res stable (to the end)

Also here: :func:`blend_reals`, the official fade of the real images during a fade-in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from brainsynth import LABELS
from brainsynth.config import OFFICIAL_BATCH_SIZES, TrainConfig
from brainsynth.errors import ConfigError
from brainsynth.models.pggan import upsample2x
from brainsynth.per_resolution import expand

OFFICIAL_STABLE_IMAGES = 600_000
OFFICIAL_FADE_IMAGES = 600_000


@dataclass(frozen=True)
class Phase:
    """The training settings at one moment.

    Attributes
    ----------
    res : int
        Current resolution in pixels.
    alpha : float
        Fade weight of the newest block, 0 -> 1 during a fade, 1 when stable.
    batch_size : int
        Minibatch size at this resolution.
    lr : float
        Adam learning rate at this resolution.
    index : int
        Resolution step number (0 at ``start_res``); it changes exactly when ``res``
        changes, which is when the loop resets Adam.
    fading : bool
        True while the newest block is being faded in.
    """

    res: int
    alpha: float
    batch_size: int
    lr: float
    index: int
    fading: bool


def _power_of_two(value: int, what: str) -> int:
    if not isinstance(value, int) or value < 4 or value & (value - 1):
        raise ConfigError(f"{what} must be a power of two >= 4, got {value!r}")
    return value


def official_batch_size(res: int) -> float:
    """The official minibatch at ``res`` (one GPU), halving per doubling beyond the table."""
    if res in OFFICIAL_BATCH_SIZES:
        return OFFICIAL_BATCH_SIZES[res]
    top = max(OFFICIAL_BATCH_SIZES)
    return OFFICIAL_BATCH_SIZES[top] * top / res if res > top else OFFICIAL_BATCH_SIZES[min(OFFICIAL_BATCH_SIZES)]


def _per_res(value, resolutions: list[int], rule) -> dict[int, float]:
    """Expand an int/float or a per-resolution dict (an unlisted resolution: ``rule`` scaled, see
    :mod:`brainsynth.per_resolution`)."""
    if not isinstance(value, Mapping):
        return {r: value for r in resolutions}
    if not value:
        raise ConfigError("a per-resolution setting is an empty mapping; give at least one resolution")
    return expand(value, resolutions, rule)


class Schedule:
    """Resolution / fade / batch / learning-rate schedule in images shown.

    Parameters
    ----------
    final_res : int
        Last resolution (power of two).
    start_res : int
        First resolution (official 4).
    stable_images : int
        Images shown at each resolution once its block is fully faded in (official 600k).
    fade_images : int
        Images over which each new block fades in, alpha 0 -> 1 linearly (official 600k).
    batch_sizes : int or dict[int, int]
        Minibatch size, or one per resolution (a missing resolution: the official table
        scaled to the nearest listed one, at least 2).
    lr : float or dict[int, float]
        Adam learning rate, or one per resolution (a missing resolution: the nearest listed).
    total_images : int, optional
        Where training ends; the final resolution trains stable until then. Default:
        the end of the final resolution's ``stable_images``.
    """

    def __init__(self, final_res: int, start_res: int = 4, stable_images: int = OFFICIAL_STABLE_IMAGES,
                 fade_images: int = OFFICIAL_FADE_IMAGES, batch_sizes: int | Mapping[int, int] = 16,
                 lr: float | Mapping[int, float] = 1e-3, total_images: int | None = None, *,
                 phase_images: Sequence[int] | None = None):
        _power_of_two(final_res, "final resolution")
        _power_of_two(start_res, "start resolution")
        if start_res > final_res:
            raise ConfigError(f"start resolution {start_res} is above the final resolution {final_res}")
        if int(stable_images) < 1 or int(fade_images) < 1:
            raise ConfigError(f"stable_images and fade_images must be >= 1, got {stable_images} and {fade_images}")
        self.final_res = final_res
        self.start_res = start_res
        self.stable_images = int(stable_images)
        self.fade_images = int(fade_images)
        self.resolutions = [2 ** k for k in range(int(math.log2(start_res)), int(math.log2(final_res)) + 1)]
        # A derived batch size keeps the minibatch-stddev group whole (>= 2).
        self.batch_sizes = {r: max(2, round(b)) if isinstance(batch_sizes, Mapping) and r not in batch_sizes else int(b)
                            for r, b in _per_res(batch_sizes, self.resolutions, official_batch_size).items()}
        if min(self.batch_sizes.values()) < 1:
            raise ConfigError(f"batch sizes must be >= 1, got {self.batch_sizes}")
        self.lrs = {r: float(v) for r, v in _per_res(lr, self.resolutions, lambda r: 1.0).items()}
        growth = len(self.resolutions) - 1
        if phase_images is None:  # stable start, then (fade, stable) per growth step, the final stable excluded
            phase_images = [self.stable_images] + [self.fade_images, self.stable_images] * growth
            phase_images = phase_images[:2 * growth]
        self.phase_images = [int(n) for n in phase_images]
        if len(self.phase_images) != 2 * growth or (self.phase_images and min(self.phase_images) < 1):
            raise ConfigError(f"phase_images must list {2 * growth} phase lengths >= 1 (stable {start_res} px, then a "
                              f"fade and a stable phase per resolution up to the final one), got {self.phase_images}")
        # Image counts where the resolution changes (start of each fade), one per growth step, and each fade's length.
        starts = [0]
        for n in self.phase_images:
            starts.append(starts[-1] + n)
        self.fade_starts = starts[1:-1:2]
        self.fade_lengths = self.phase_images[1::2]
        self.final_stable_start = starts[-1]
        natural_end = self.final_stable_start + self.stable_images
        if total_images is not None and int(total_images) < 1:
            raise ConfigError(f"total_images must be >= 1, got {total_images}")
        self._total = natural_end if total_images is None else int(total_images)

    @property
    def total_images(self) -> int:
        """Images shown by the end of training."""
        return self._total

    @classmethod
    def fit_budget(cls, final_res: int, total_images: int, start_res: int = 4,
                   batch_sizes: int | Mapping[int, int] = 16, lr: float | Mapping[int, float] = 1e-3,
                   final_share: float = 0.5) -> "Schedule":
        """A schedule that grows ``start_res -> final_res`` within ``total_images``.

        ``final_share`` of the budget goes to the final resolution (stable); the rest is
        split equally among the other phases (start stable, each fade, each intermediate
        stable). E.g. the paper's 20,000 steps at batch 4 = 80,000 images grown 4 -> 256
        gives 12 phases of 3,333 images and 40,004 final images.

        Parameters
        ----------
        final_res, start_res, batch_sizes, lr
            As for :class:`Schedule`.
        total_images : int
            Total budget in images shown.
        final_share : float
            Share of ``total_images`` spent at the final resolution, in (0, 1].
        """
        if not 0.0 < final_share <= 1.0:
            raise ConfigError(f"final_share must be in (0, 1], got {final_share}")
        _power_of_two(final_res, "final resolution")
        _power_of_two(start_res, "start resolution")
        growth = int(math.log2(final_res)) - int(math.log2(start_res))
        n_phases = 2 * growth  # start stable + (fade, stable) per step, the last stable excluded
        if growth <= 0:
            return cls(final_res, start_res, max(1, int(total_images)), 1, batch_sizes, lr, total_images)
        phase = int(total_images * (1.0 - final_share)) // n_phases
        if phase < 1:
            raise ConfigError(f"total_images {total_images} is too small to grow {start_res} -> {final_res} "
                              f"with final_share {final_share}; give at least {math.ceil(n_phases / (1 - final_share)) if final_share < 1 else 'a share < 1'}")
        return cls(final_res, start_res, phase, phase, batch_sizes, lr, total_images)

    @classmethod
    def fit_compute(cls, final_res: int, budget_images: int, image_cost: Mapping[int, float], start_res: int = 4,
                    batch_sizes: int | Mapping[int, int] = 16, lr: float | Mapping[int, float] = 1e-3,
                    final_share: float = 0.5) -> "Schedule":
        """A schedule that splits a compute budget across the phases by their cost, not their images.

        The budget is what ``budget_images`` images cost at the final resolution. ``final_share``
        of it goes to the final resolution (stable); the rest is split into equal COSTS among the
        other phases (start stable, each fade, each intermediate stable), so a phase at a coarse
        resolution, where an image is cheap, sees many more images than one at a fine resolution.
        A fade is costed at its resolution's price (it also runs the coarser path, a few percent
        more; benchmarks/README.md). Every boundary is a pure function of the arguments.

        Parameters
        ----------
        final_res, start_res, batch_sizes, lr, final_share
            As for :meth:`fit_budget`.
        budget_images : int
            The budget, in images at the final resolution.
        image_cost : dict[int, float]
            Cost of one training image at each resolution from ``start_res`` to ``final_res``, in
            any unit (measured CPU milliseconds, or multiply-adds): only the ratios matter.
        """
        if not 0.0 < final_share <= 1.0:
            raise ConfigError(f"final_share must be in (0, 1], got {final_share}")
        _power_of_two(final_res, "final resolution")
        _power_of_two(start_res, "start resolution")
        resolutions = [2 ** k for k in range(int(math.log2(start_res)), int(math.log2(final_res)) + 1)]
        cost = {int(k): float(v) for k, v in image_cost.items()}
        missing = [r for r in resolutions if r not in cost]
        if missing or min(cost[r] for r in resolutions if r in cost) <= 0:
            raise ConfigError(f"image_cost needs a cost > 0 for every resolution {resolutions[0]}..{final_res}; "
                              f"missing {missing}" if missing else f"image_cost must be > 0, got {cost}")
        total_cost = int(budget_images) * cost[final_res]
        growth = len(resolutions) - 1
        final = int(total_cost * final_share / cost[final_res]) if growth else int(budget_images)
        if growth == 0:
            return cls(final_res, start_res, max(1, final), 1, batch_sizes, lr, max(1, final))
        per_phase = total_cost * (1.0 - final_share) / (2 * growth)
        phase_res = [start_res] + [r for r in resolutions[1:] for _ in range(2)][:2 * growth - 1]
        phase_images = [int(per_phase / cost[r]) for r in phase_res]
        if min(phase_images) < 1 or final < 1:
            raise ConfigError(f"a budget of {budget_images} images at {final_res} px is too small to grow "
                              f"{start_res} -> {final_res} with final_share {final_share}")
        return cls(final_res, start_res, batch_sizes=batch_sizes, lr=lr, total_images=sum(phase_images) + final,
                   phase_images=phase_images)

    def at(self, images_shown: int) -> Phase:
        """The phase after ``images_shown`` images (beyond the end: the final phase)."""
        n = max(0, int(images_shown))
        index = 0
        alpha = 1.0
        fading = False
        for i, start in enumerate(self.fade_starts):
            if n < start:
                break
            index = i + 1
            into = n - start
            fading = into < self.fade_lengths[i]
            alpha = into / self.fade_lengths[i] if fading else 1.0
        res = self.resolutions[index]
        return Phase(res=res, alpha=alpha, batch_size=self.batch_sizes[res], lr=self.lrs[res], index=index,
                     fading=fading)

    def boundaries(self) -> list[tuple[int, str, int]]:
        """``(images_shown, "stable"|"fade", res)`` at the start of every phase, for logs."""
        out = [(0, "stable", self.start_res)]
        for i, start in enumerate(self.fade_starts):
            out += [(start, "fade", self.resolutions[i + 1]),
                    (start + self.fade_lengths[i], "stable", self.resolutions[i + 1])]
        return out

    def __repr__(self) -> str:
        if len(set(self.phase_images[1::2])) <= 1 and len(set(self.phase_images[0::2])) <= 1:
            return (f"Schedule({self.start_res}->{self.final_res}, stable={self.stable_images}, "
                    f"fade={self.fade_images}, total={self.total_images})")
        return (f"Schedule({self.start_res}->{self.final_res}, phases={self.phase_images}, "
                f"final={self.total_images - self.final_stable_start}, total={self.total_images})")


def build_schedule(cfg: TrainConfig) -> Schedule:
    """The run's :class:`~brainsynth.train.schedule.Schedule`.

    DCGAN and the diffusion model do not grow: one phase at the final resolution. Without
    ``total_images`` they show as many images as a PGGAN schedule of the same config grown
    from the official 4 px, a like-for-like budget.
    """
    start = cfg.start_resolution if cfg.grows else 4
    if cfg.schedule == "compute" and cfg.grows:
        growth = Schedule.fit_compute(cfg.resolution, cfg.compute_images, image_costs(cfg), start, cfg.batch_sizes,
                                      cfg.lr, cfg.final_share)
    elif cfg.schedule == "compute":  # one resolution: the budget is the model's images (TrainConfig.check)
        growth = Schedule(cfg.resolution, cfg.resolution, batch_sizes=cfg.batch_sizes, lr=cfg.lr,
                          total_images=cfg.total_images)
    elif cfg.schedule == "fit":
        growth = Schedule.fit_budget(cfg.resolution, cfg.total_images, start, cfg.batch_sizes, cfg.lr, cfg.final_share)
    else:
        growth = Schedule(cfg.resolution, start, cfg.stable_images, cfg.fade_images, cfg.batch_sizes, cfg.lr,
                          cfg.total_images)
    if cfg.grows:
        return growth
    total = growth.total_images
    return Schedule(cfg.resolution, cfg.resolution, stable_images=total, fade_images=1, batch_sizes=cfg.batch_sizes,
                    lr=cfg.lr, total_images=total)


def blend_reals(x: torch.Tensor, alpha: float, upsample: str = "nearest") -> torch.Tensor:
    """Official fade of the reals: ``alpha * x + (1 - alpha) * upsample(avgpool2x2(x))``.

    While the block at resolution r fades in, G's output is a blend of the new block
    and the upsampled r/2 output; the reals D sees are blended the same way, so that
    neither side can tell reals from fakes by the amount of fine detail.

    Parameters
    ----------
    x : Tensor
        ``[N, C, r, r]`` real images already resized to the current resolution r.
    alpha : float
        Fade weight of the current phase (1: returns ``x`` itself).
    upsample : {"nearest", "bilinear"}
        G's upsampling (``train.pggan.upsample``): the coarse image is enlarged as G's fade path does.
    """
    if alpha >= 1.0:
        return x
    coarse = upsample2x(F.avg_pool2d(x, 2), upsample)  # [N, C, r, r]
    return torch.lerp(coarse, x, float(alpha))


def image_costs(cfg: TrainConfig) -> dict[int, float]:
    """The compute schedule's cost of one training image per resolution, from a train config.

    ``cfg.image_cost`` when given (e.g. CPU milliseconds measured on the target machine), else the
    multiply-adds of one training step per image, counted from the networks' widths
    (:func:`brainsynth.models.pggan.training_macs`). ``cfg.resolution`` must be known.
    """
    from brainsynth.models.pggan import channel_widths, training_macs

    resolutions = [2 ** k for k in range(int(math.log2(cfg.start_resolution)), int(math.log2(cfg.resolution)) + 1)]
    if cfg.image_cost is not None:
        table = {int(k): float(v) for k, v in cfg.image_cost.items()}
        missing = [r for r in resolutions if r not in table]
        if missing:
            raise ConfigError(f"train.{cfg.model}.image_cost has no cost for resolution(s) {missing}; give one for "
                              f"every resolution {resolutions[0]}..{cfg.resolution}, or null for counted multiply-adds")
        return {r: table[r] for r in resolutions}
    widths = channel_widths(cfg.resolution, cfg.fmap_base, cfg.fmap_max, cfg.widths)
    label_dim = 0 if cfg.conditioning == "none" else len(LABELS)
    return {r: float(training_macs(widths, r, cfg.z_dim, label_dim, cfg.gp_every)) for r in resolutions}
