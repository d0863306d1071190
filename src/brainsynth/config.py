"""One configuration for a whole run: a typed section per pipeline stage.

A configuration file (the shipped presets ``configs/demo.yaml``, ``paper.yaml``, ``tiny.yaml``,
or a user's own YAML) has one mapping per section::

    cohort:    the SIMULATED cohort (brainsynth phantom; used when no --input is given)
    prepare:   the paper's preprocessing (slices, patch, final image size, subject split)
    train:     options every model reads (budget, batch, lr, EMA, augmentation, precision,
               ticks, checkpoints), then one mapping per model family:
      pggan:     the progressive GAN's own keys (widths, conditioning, gradient penalty, ...)
      dcgan:     the DCGAN's own keys (width, G_ema batch norm, ...)
      ddpm:      the diffusion model's own keys (UNet channels, timesteps, ...)
               A family's mapping may also repeat a shared key: its value wins for that family.
    generate:  how many synthetic images, in which format
    evaluate:  the feature extractor (features, weights, feature_layer, input_size, precision),
               bootstrap resamples, seed
    audit:     the privacy audit
    run:       how `brainsynth run` drives the stages (models, side-by-side training)

A user's file may start with ``preset: demo`` to change only a few keys of a preset.

Resolution, later wins:

1. each section's dataclass defaults (for ``train``: the official progressive-GAN values, then
   the ``family_defaults`` of the model's section);
2. the file (its ``preset:`` base first);
3. ``--set section.key=value`` and the command-line flags, in order. A ``--set`` edits the
   file: ``train.lr`` is the shared value, ``train.dcgan.lr`` the DCGAN's own, and a model's
   own value wins over the shared one wherever each was written.

A key of one family written elsewhere is an error naming the family that reads it
(``train.pggan.timesteps`` -> ``train.ddpm.timesteps``); brainsynth 0.1's flat names
(``train.ddpm_channels``, ``train.widths``) are still read, with a warning
(:data:`RENAMED_TRAIN_KEYS`).

Every value goes through :func:`brainsynth.options.set_field` (type-checked, did-you-mean
on a misspelt key), then each section's ``check()`` (ranges), so a bad value is one
:class:`~brainsynth.errors.ConfigError` line naming where it came from and how to fix it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Iterable, Optional, Union

import yaml

from brainsynth import __version__
from brainsynth.errors import ConfigError
from brainsynth.options import as_dict, check_key, choices, field_types, load_yaml, parse_override, set_field, suggest

log = logging.getLogger("brainsynth.config")

PRESETS = ("paper", "demo", "tiny")
DEFAULT_PRESET = "demo"
MODELS = ("pggan", "dcgan", "ddpm")
DEFAULT_RUN_MODELS = ("pggan", "dcgan")  # brainsynth run's generators unless run.models says otherwise
GANS = ("pggan", "dcgan")  # the models with a discriminator
PRECISIONS = ("fp32", "bf16")  # no fp16: the WGAN-GP gradient penalty overflows in fp16
CONDITIONINGS = ("acgan", "projection", "none")
UPSAMPLE_MODES = ("nearest", "bilinear")  # the PGGAN generator's 2x upsampling (models/pggan.py)
ADAM_RESETS = ("resolution", "lod")
DDPM_SCHEDULES = ("linear_beta", "scaled_linear_beta", "cosine")  # MONAI's names
DDPM_PREDICTIONS = ("epsilon", "v_prediction", "sample")
EMA_BN_MODES = ("copy", "recompute", "train_mode", "no_ema")
SELECTIONS = ("last", "private-best")  # generate.select
DEFAULT_TEMPLATE = "mni152-2009"  # the simulated cohort's default anatomy (nilearn's MNI152 2009)

# Official progressive-GAN minibatch per resolution on one GPU (Karras et al. 2018, Table 4 setup).
OFFICIAL_BATCH_SIZES = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}


class Section:
    """Base of the section dataclasses: where each value came from, and range checks."""

    name = ""  # the section's key in a config file

    def origin(self, key: str) -> str:
        """Where the value of ``key`` came from (a preset, a file, a flag), for messages."""
        return getattr(self, "_origins", {}).get(key, "config")

    def bad(self, key: str, why: str) -> ConfigError:
        """A one-line error about ``key``: what is wrong and how to change it."""
        return ConfigError(f"{self.origin(key)}: {self.name}.{key}={getattr(self, key)!r} {why} "
                           f"(fix it with --set {self.name}.{key}=...)")

    def check(self) -> None:
        """Range checks that a type alone cannot express."""

    def at_least(self, minimum: float, *keys: str) -> None:
        for key in keys:
            value = getattr(self, key)
            if value is not None and value < minimum:
                raise self.bad(key, f"must be >= {minimum:g}")


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


# --- sections -----------------------------------------------------------------------------------

@dataclass
class CohortConfig(Section):
    """``cohort:`` the SIMULATED cohort that `brainsynth run` builds when no --input is given."""

    name = "cohort"
    subjects: int = 12  # number of simulated subjects (ids sub-01..sub-99)
    adhd_fraction: float = 0.5  # share of ADHD subjects, exactly round(subjects * adhd_fraction)
    effect: float = 1.0  # strength of the simulated group difference; 1 = calibrated default, 0 = none
    contrast: str = field(default="neonatal", metadata=choices("neonatal", "adult"))  # T1w tissue contrast
    template: str = DEFAULT_TEMPLATE  # anatomy: nilearn's MNI152 2009, or a skull-stripped T1 NIfTI in MNI space
    layout: str = field(default="bids", metadata=choices("bids", "adhd200"))  # bids (sub-01, diagnosis) or adhd200 (site folder, dx codes, unlabelled rows)
    shape: Optional[list[int]] = None  # voxels (x, y, z); null = the phantom's 320 x 320 x 200 grid
    seed: int = 0  # seeds every subject's anatomy, contrast, bias and noise

    def check(self) -> None:
        if not 1 <= self.subjects <= 99:
            raise self.bad("subjects", "must be between 1 and 99 (ids are sub-01..sub-99)")
        if not 0.0 <= self.adhd_fraction <= 1.0:
            raise self.bad("adhd_fraction", "must be between 0 and 1")
        if not self.effect >= 0.0 or self.effect == float("inf"):
            raise self.bad("effect", "must be a finite number >= 0 (1 is the calibrated default)")
        if self.shape is not None and (len(self.shape) != 3 or min(self.shape) < 8):
            raise self.bad("shape", "must be three sizes >= 8 voxels, or null")
        if self.template != DEFAULT_TEMPLATE and not self.template.lower().endswith((".nii", ".nii.gz")):
            raise self.bad("template", f"must be {DEFAULT_TEMPLATE} or the path of a .nii/.nii.gz T1 template")
        self.at_least(0, "seed")


@dataclass
class PrepareConfig(Section):
    """``prepare:`` the paper's preprocessing of T1 volumes into a DATASET of 2D images."""

    name = "prepare"
    slices: list[int] = field(default_factory=lambda: [30, 120])  # axial slices kept, inclusive (paper: #30-#120)
    relative_slices: Optional[list[float]] = None  # [FA, FB]: range as fractions of the brain's axial extent; replaces slices
    inplane: int = 320  # each axial slice is resampled to this many px square first; 0 keeps the grid
    patch: int = 256  # side of the patch cut from the slice, px (paper: 256)
    patch_stride: Optional[int] = None  # cut several overlapping patches this many px apart; null = one centred patch
    size: int = 64  # final image side, px: the size every later stage works at (paper: 256)
    folds: int = 3  # K stratified subject folds, each subject tested once per repeat; 1 = one hold-out split
    repeats: int = 1  # fold assignments drawn, each from its own seed (repeated cross-validation)
    test_fraction: float = 1 / 3  # with folds 1 only: share of subjects per label held out for testing
    seed: int = 0  # seed of the subject folds (repeat r draws from [seed, r])
    workers: int = 1  # volumes processed in parallel (processes)

    def check(self) -> None:
        if len(self.slices) != 2 or self.slices[0] < 0 or self.slices[0] > self.slices[1]:
            raise self.bad("slices", "must be two slice numbers A <= B, both >= 0")
        if self.relative_slices is not None:
            rel = self.relative_slices
            if len(rel) != 2 or not 0.0 <= rel[0] <= rel[1] <= 1.0:
                raise self.bad("relative_slices", "must be two fractions 0 <= FA <= FB <= 1 of the brain's extent")
        self.at_least(0, "inplane", "seed")
        self.at_least(1, "patch", "size", "patch_stride", "workers", "folds", "repeats")
        if self.inplane and self.patch > self.inplane:
            raise self.bad("patch", f"is larger than inplane ({self.inplane}); choose a patch <= inplane")
        if not 0.0 <= self.test_fraction < 1.0:
            raise self.bad("test_fraction", "must be in [0, 1)")


@dataclass
class TrainConfig(Section):
    """``train:`` options every model reads; each model family adds its own section (below).

    Not used on its own: a resolved training config is one of :data:`TRAIN_CONFIGS`, the
    shared keys plus the keys of its family (``train.pggan``, ``train.dcgan``, ``train.ddpm``).
    A shared key may also be written in a family's section, where it wins for that family.
    """

    name = "train"
    model: ClassVar[str] = ""  # the family, fixed by the subclass (chosen by --model or run.models, never by a key)
    grows: ClassVar[bool] = False  # trained from start_resolution up (the PGGAN), or at the final resolution only
    # Defaults of shared keys that differ for the family (a class attribute of each family's section).
    family_defaults: ClassVar[dict[str, Any]] = {}

    resolution: Optional[int] = None  # final image size, px (power of two); null = the DATASET's image size

    # --- schedule, counted in images shown (not steps)
    total_images: Optional[int] = None  # stop after this many images; null = end of the growth schedule
    schedule: str = field(default="fixed", metadata=choices("fixed", "fit", "compute"))  # fixed: stable/fade_images as given; fit: total_images split equally in images; compute: compute_images split equally in cost (docs/training.md)
    stable_images: int = 600_000  # images per resolution before the next one fades in
    fade_images: int = 600_000  # images over which the next resolution fades in
    final_share: float = 0.5  # fit, compute: share of the budget spent stable at the final resolution
    batch_sizes: Union[int, dict[int, int]] = field(default_factory=lambda: dict(OFFICIAL_BATCH_SIZES))  # global batch per resolution; an unlisted one follows the official table, scaled

    # --- optimiser
    lr: Union[float, dict[int, float]] = 1e-3  # Adam learning rate (official 1e-3; the paper used 2e-4)
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])  # Adam betas
    eps: float = 1e-8  # Adam epsilon
    ema_beta: float = 0.999  # G_ema decay per step
    ema_halflife_images: Optional[int] = None  # if set, G_ema half-life in images (replaces ema_beta)

    # --- augmentation (ADA)
    augment: str = field(default="off", metadata=choices("off", "fixed", "adaptive"))  # GANs: augment what D sees, off | fixed | adaptive
    augment_p: float = 0.0  # initial (or fixed) augmentation probability
    augment_target: float = 0.6  # adaptive: target E[sign(D(real))]
    augment_interval: int = 4  # adaptive: steps between p updates
    augment_speed_images: int = 500_000  # adaptive: images for p to move by 1

    # --- speed and numerics
    precision: str = field(default="fp32", metadata=choices(*PRECISIONS))  # fp32 | bf16 autocast (no fp16: the gradient penalty overflows)
    channels_last: bool = False  # NHWC memory format (helps convolutions on recent GPUs)
    compile: bool = False  # torch.compile the generator forward (skipped where unavailable)
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default
    seed: int = 0  # seeds weights, batches, latents and the fixed sample grid

    # --- observability and checkpoints
    tick_images: int = 10_000  # images between ticks (status, samples, stats, checkpoint)
    time_budget_s: Optional[float] = None  # stop at the first tick past this many seconds of training; null = no limit
    checkpoint_every_ticks: int = 1  # write a checkpoint every k ticks (and always at the end)
    checkpoint_keep: int = 3  # keep the last K checkpoints
    snapshot_first: int = 0  # also keep, for good, the checkpoints at images first, first*factor, ... and the end; 0 = none
    snapshot_factor: float = 2.0  # ratio of the geometric series of kept snapshots
    grid_columns: int = 8  # sample-grid images per class (one row per class)
    grid_cell_px: int = 64  # display size of one grid cell (nearest-neighbour upscaling)
    progress_bar: bool = True  # tqdm bar on stderr
    tensorboard: bool = True  # write TensorBoard events to RUN_DIR/tb
    nan_retries: int = 3  # roll back to the last checkpoint at most this many times on NaN/Inf
    nan_lr_factor: float = 0.5  # learning-rate multiplier applied at each rollback

    def to_dict(self) -> dict[str, Any]:
        """Plain-type mapping with the model's name (a checkpoint's ``config``)."""
        return {"model": self.model, **as_dict(self)}

    def check(self) -> None:
        if self.resolution is not None and (not _is_power_of_two(self.resolution) or self.resolution < 4):
            raise self.bad("resolution", "must be a power of two >= 4, or null for the dataset's size")
        self.at_least(1, "tick_images", "checkpoint_every_ticks", "checkpoint_keep", "grid_columns", "grid_cell_px",
                      "augment_interval", "augment_speed_images", "total_images", "ema_halflife_images")
        self.at_least(0, "stable_images", "fade_images", "num_threads", "nan_retries")
        if self.time_budget_s is not None and not 0.0 < self.time_budget_s < float("inf"):
            raise self.bad("time_budget_s", "must be a number of seconds > 0, or null for no limit")
        if self.schedule == "fit" and self.total_images is None:
            raise self.bad("schedule", "'fit' derives the schedule from total_images, so set total_images too")
        if self.schedule == "compute" and not self.grows and self.total_images is None:
            # One resolution: its cost per image is constant, so a compute budget is an image budget.
            raise self.bad("schedule", "'compute' on a model trained at one resolution counts its budget in images, "
                                       "so set total_images too")
        batches = self.batch_sizes.values() if isinstance(self.batch_sizes, dict) else [self.batch_sizes]
        if any(b < 2 for b in batches):
            # A batch of one makes the minibatch-stddev layer NaN.
            raise self.bad("batch_sizes", "every batch size must be >= 2")
        lrs = self.lr.values() if isinstance(self.lr, dict) else [self.lr]
        if any(not lr > 0 for lr in lrs):
            raise self.bad("lr", "must be > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise self.bad("betas", "must be two numbers in [0, 1)")
        if not self.eps > 0:
            raise self.bad("eps", "must be > 0")
        for key in ("ema_beta", "augment_p"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise self.bad(key, "must be in [0, 1)")
        for key in ("final_share", "nan_lr_factor"):
            if not 0.0 < getattr(self, key) <= 1.0:
                raise self.bad(key, "must be in (0, 1]")
        self.at_least(0, "snapshot_first")
        if not self.snapshot_factor > 1.0:
            raise self.bad("snapshot_factor", "must be > 1 (the ratio of a growing series)")


@dataclass
class PGGANConfig(TrainConfig):
    """``train.pggan:`` the progressive GAN (Karras et al. 2018), grown from ``start_resolution``."""

    name = "train.pggan"
    model: ClassVar[str] = "pggan"
    grows: ClassVar[bool] = True
    start_resolution: int = 4  # resolution of the first growth phase
    z_dim: int = 512  # latent size
    fmap_base: int = 8192  # width rule nf(stage) = min(fmap_base / 2**stage, fmap_max)
    fmap_max: int = 512  # the width cap of that rule
    widths: Optional[dict[int, int]] = None  # channels per resolution; an unlisted one follows the rule, scaled to the nearest listed
    # projection is the default: better GAN-train on the demo (slice HM 0.939 vs 0.895 for acgan,
    # same data, image budget and seed).
    conditioning: str = field(default="projection", metadata=choices(*CONDITIONINGS))  # class conditioning: acgan | projection | none
    mbstd_group: int = 4  # minibatch-stddev group size
    upsample: str = field(default="nearest", metadata=choices(*UPSAMPLE_MODES))  # G's 2x upsampling: nearest (official) or bilinear (StyleGAN; no fixed grid pattern in new blocks)
    gp_lambda: float = 10.0  # WGAN-GP gradient-penalty weight
    gp_every: int = 1  # lazy penalty: compute it on every k-th D step only, weighted by k (StyleGAN2); 1 = every step (official)
    drift: float = 0.001  # WGAN-GP drift penalty on D(real)^2
    ac_weight: float = 1.0  # weight of the AC-GAN class cross-entropy
    label_flip_every: int = 0  # flip D's real/fake targets every k-th step (paper: 3); 0 = never
    adam_reset: str = field(default="resolution", metadata=choices(*ADAM_RESETS))  # reset Adam at each resolution change, or also at each fade end (lod: official)
    # The compute schedule (docs/training.md): coarse phases are cheap, so they get many more images.
    compute_images: Optional[int] = None  # schedule compute: the budget, as the cost of this many images at the final resolution
    image_cost: Optional[dict[int, float]] = None  # schedule compute: cost of one training image per resolution (e.g. measured CPU ms); null = the step's multiply-adds counted from the widths
    phase_swd_images: int = 256  # G_ema images scored by SWD at the end of every growth phase (phases.jsonl, docs/training.md); 0 = the phase grids only
    # Differential privacy of D's updates, the person as the unit (train/dp.py, docs/privacy.md).
    dp_noise: Optional[float] = None  # DP-SGD noise multiplier sigma of D's per-person clipped gradient; null = no DP
    dp_clip: float = 1.0  # DP: the most one person's summed gradient may move D (norm bound C)
    dp_slices_per_subject: int = 4  # DP: slices a sampled person brings to a D step (subjects are sampled, not slices)
    dp_delta: float = 1e-5  # DP: the delta epsilon is stated at (far below 1 / number of subjects)
    dp_accountant: str = field(default="rdp", metadata=choices("rdp", "prv"))  # DP: Opacus accountant of epsilon

    def check(self) -> None:
        super().check()
        self._check_dp()
        top = self.resolution or max(self.start_resolution, 4)
        if not _is_power_of_two(self.start_resolution) or not 4 <= self.start_resolution <= top:
            raise self.bad("start_resolution", "must be a power of two between 4 and resolution")
        self.at_least(1, "z_dim", "fmap_base", "fmap_max", "mbstd_group", "compute_images", "gp_every")
        self.at_least(0, "label_flip_every", "gp_lambda", "drift", "ac_weight", "phase_swd_images")
        self._check_compute_schedule()
        if self.widths is not None and min(self.widths.values()) < 1:
            raise self.bad("widths", "must be positive channel counts")

    def _check_compute_schedule(self) -> None:
        if self.schedule == "compute" and self.compute_images is None:
            raise self.bad("schedule", "'compute' splits a budget of compute_images final-resolution images, so set "
                                       "train.pggan.compute_images too")
        if self.schedule == "compute" and self.total_images is not None:
            raise self.bad("total_images", "is not used by schedule 'compute', whose budget is compute_images; set "
                                           "it to null (the images shown follow from the budget)")
        if self.image_cost is not None and any(not v > 0 for v in self.image_cost.values()):
            raise self.bad("image_cost", "must give a cost > 0 per resolution, or be null for counted multiply-adds")

    def _check_dp(self) -> None:
        if self.dp_noise is None:
            return
        if not self.dp_noise > 0:
            raise self.bad("dp_noise", "must be > 0 (a noise multiplier), or null for no differential privacy")
        self.at_least(1, "dp_slices_per_subject")
        if not self.dp_clip > 0:
            raise self.bad("dp_clip", "must be > 0")
        if not 0.0 < self.dp_delta < 1.0:
            raise self.bad("dp_delta", "must be in (0, 1)")
        # Each of these lets one person's slices move other samples' outputs, or spends privacy
        # the accountant does not count.
        if self.mbstd_group != 1:
            raise self.bad("mbstd_group", "must be 1 with dp_noise: the minibatch-stddev layer mixes the samples of "
                                          "a batch, so clipping per person would bound nothing")
        if self.augment == "adaptive":
            raise self.bad("augment", "cannot be adaptive with dp_noise: its probability follows D's outputs on the "
                                      "reals, which the privacy accounting does not cover; use fixed or off")
        if self.precision != "fp32":
            raise self.bad("precision", "must be fp32 with dp_noise (the per-sample gradients run in fp32)")
        if self.gp_every != 1:
            raise self.bad("gp_every", "must be 1 with dp_noise: the private D step computes its per-person "
                                       "penalty on every step")
        if self.channels_last:
            raise self.bad("channels_last", "must be false with dp_noise (torch.func's vmap of the per-sample "
                                            "gradients cannot clone channels-last tensors)")


@dataclass
class DCGANConfig(TrainConfig):
    """``train.dcgan:`` the DCGAN baseline (Radford et al. 2016), trained at the final resolution."""

    name = "train.dcgan"
    model: ClassVar[str] = "dcgan"
    # Radford et al. 2016: lr 2e-4, beta1 0.5, batch 64.
    family_defaults: ClassVar[dict[str, Any]] = {"lr": 2e-4, "betas": [0.5, 0.999], "batch_sizes": 64}
    z_dim: int = 100  # latent size
    width: int = 64  # base channel width
    label_flip_every: int = 0  # flip D's real/fake targets every k-th step (paper: 3); 0 = never
    ema_bn: str = field(default="copy", metadata=choices(*EMA_BN_MODES))  # G_ema batch norm: copy, recompute, train_mode or no_ema (docs/training.md)
    ema_bn_images: int = 512  # ema_bn=recompute: latents per recomputation of G_ema's statistics

    def check(self) -> None:
        super().check()
        if self.resolution is not None and self.resolution < 8:
            raise self.bad("resolution", "must be >= 8 for the DCGAN")
        self.at_least(1, "z_dim", "width", "ema_bn_images")
        self.at_least(0, "label_flip_every")


@dataclass
class DDPMConfig(TrainConfig):
    """``train.ddpm:`` the diffusion model (docs/diffusion.md): MONAI's UNet, class embedding with a null class."""

    name = "train.ddpm"
    model: ClassVar[str] = "ddpm"
    # Ho et al. 2020: Adam lr 2e-4 (CIFAR-10), batch 128, EMA 0.9999 per step; no D to augment for.
    family_defaults: ClassVar[dict[str, Any]] = {"lr": 2e-4, "betas": [0.9, 0.999], "batch_sizes": 128,
                                                  "ema_beta": 0.9999, "augment": "off"}
    channels: list[int] = field(default_factory=lambda: [64, 128, 128, 256])  # UNet channels per level (multiples of norm_groups)
    attention: list[bool] = field(default_factory=lambda: [False, False, True, True])  # self-attention at each UNet level
    res_blocks: int = 2  # residual blocks per UNet level on the way down (one more on the way up)
    norm_groups: int = 32  # group-norm groups
    head_channels: int = 32  # channels per attention head
    patch: int = 1  # space-to-depth factor before the UNet (2: a 64 px image enters as 4 x 32 x 32); 1 = none; halved on images too small for it
    timesteps: int = 1000  # diffusion steps T of training (Ho et al. 2020: 1000)
    noise_schedule: str = field(default="linear_beta", metadata=choices(*DDPM_SCHEDULES))  # noise schedule (MONAI name)
    prediction: str = field(default="epsilon", metadata=choices(*DDPM_PREDICTIONS))  # the network predicts the noise (epsilon), the velocity (v_prediction) or the clean image (sample)
    min_snr: float = 0.0  # Min-SNR-gamma loss weighting (Hang et al. 2023: 5); 0 = the plain mean squared error
    label_dropout: float = 0.1  # share of training labels replaced by the null class (classifier-free guidance)
    grad_clip: float = 1.0  # clip the gradient norm to this (Ho et al. 2020: 1); 0 = no clipping
    grid_steps: int = 25  # DDIM steps of the tick's sample grid (guidance 0)

    def check(self) -> None:
        super().check()
        self.at_least(1, "res_blocks", "norm_groups", "head_channels", "patch", "timesteps", "grid_steps")
        if not 0.0 <= self.label_dropout < 1.0:
            raise self.bad("label_dropout", "must be in [0, 1)")
        self.at_least(0, "grad_clip", "min_snr")
        if self.grid_steps > self.timesteps:
            raise self.bad("grid_steps", f"cannot exceed timesteps ({self.timesteps})")
        if not self.channels or min(self.channels) < 1:
            raise self.bad("channels", "must list one positive channel count per UNet level")
        if len(self.attention) != len(self.channels):
            raise self.bad("attention", f"needs one flag per level of channels ({len(self.channels)})")
        if any(c % self.norm_groups for c in self.channels):
            raise self.bad("channels", f"must all be multiples of norm_groups ({self.norm_groups})")
        attended = [c for c, a in zip(self.channels, self.attention) if a] + [self.channels[-1]]
        if any(c % self.head_channels for c in attended):
            raise self.bad("head_channels", "must divide the channels of every level with attention and of the "
                                            f"last level ({sorted(set(attended))})")
        if self.resolution is not None:
            self._check_levels_fit()

    def patch_at(self, resolution: int) -> int:
        """The patch used at ``resolution``: ``patch``, halved while the UNet's deepest level would be
        smaller than :data:`MIN_UNET_PX` (so a preset tuned at 64 px also trains on 16 px images)."""
        patch, below = self.patch, 2 ** (len(self.channels) - 1)
        while patch > 1 and resolution / (patch * below) < MIN_UNET_PX:
            patch //= 2
        return patch

    def _check_levels_fit(self) -> None:
        # The UNet halves its input once per level after the first. DDPM's own CIFAR-10 UNet ends
        # at 4 px (32 -> 4); below that a 3x3 convolution sees mostly its zero padding.
        patch = self.patch_at(self.resolution)
        step = patch * 2 ** (len(self.channels) - 1)
        deepest = self.resolution / step
        if self.resolution % step or deepest < MIN_UNET_PX:
            raise self.bad("channels", f"has {len(self.channels)} levels: {self.resolution} px images after a "
                                       f"{patch}x{patch} patch reach {deepest:g} px at the deepest level; it must be "
                                       f"a whole number >= {MIN_UNET_PX} px (use fewer levels, or images of at least "
                                       f"{2 ** (len(self.channels) - 1) * MIN_UNET_PX} px)")


TRAIN_CONFIGS: dict[str, type[TrainConfig]] = {"pggan": PGGANConfig, "dcgan": DCGANConfig, "ddpm": DDPMConfig}
"""Model family -> its resolved training config: the shared ``train`` keys plus its own."""

MIN_UNET_PX = 4  # the diffusion UNet's smallest feature map, px (see DDPMConfig._check_levels_fit)

# Names of brainsynth 0.1, when every key sat in one flat ``train`` section: read for one more
# release (with a warning naming the new key), and always from old checkpoints.
RENAMED_TRAIN_KEYS: dict[str, tuple[str, str]] = {
    "dcgan_width": ("dcgan", "width"),
    "dcgan_ema_bn": ("dcgan", "ema_bn"),
    "dcgan_ema_bn_images": ("dcgan", "ema_bn_images"),
    "ddpm_channels": ("ddpm", "channels"),
    "ddpm_attention": ("ddpm", "attention"),
    "ddpm_res_blocks": ("ddpm", "res_blocks"),
    "ddpm_norm_groups": ("ddpm", "norm_groups"),
    "ddpm_head_channels": ("ddpm", "head_channels"),
    "ddpm_patch": ("ddpm", "patch"),
    "ddpm_timesteps": ("ddpm", "timesteps"),
    "ddpm_schedule": ("ddpm", "noise_schedule"),
    "ddpm_prediction": ("ddpm", "prediction"),
    "ddpm_min_snr": ("ddpm", "min_snr"),
    "ddpm_label_dropout": ("ddpm", "label_dropout"),
    "ddpm_grad_clip": ("ddpm", "grad_clip"),
    "ddpm_grid_steps": ("ddpm", "grid_steps"),
}


def _own_keys(cls: type[TrainConfig]) -> list[str]:
    """The keys of one family's section (its fields beyond the shared ``train`` keys)."""
    return [k for k in field_types(cls) if k not in field_types(TrainConfig)]


_SHARED_KEYS = list(field_types(TrainConfig))
_TRAIN_KEYS = set(_SHARED_KEYS).union(*(_own_keys(c) for c in TRAIN_CONFIGS.values()))


def _families_with(key: str) -> list[str]:
    return [m for m, cls in TRAIN_CONFIGS.items() if key in _own_keys(cls)]


def _family_key(key: str) -> list[tuple[str, str]]:
    """Where a family's key lives, new names for old: ``[(family, key), ...]`` (empty if nowhere)."""
    if key in RENAMED_TRAIN_KEYS:
        return [RENAMED_TRAIN_KEYS[key]]
    return [(m, key) for m in _families_with(key)]


def _spelled(places: list[tuple[str, str]]) -> str:
    return " and ".join(f"train.{m}.{k}" for m, k in places)


def route_train_key(path: list[str], label: str) -> list[tuple[str | None, str]]:
    """Where a ``train`` key is stored: ``[(None, key)]`` for a shared key, ``[(family, key), ...]`` otherwise.

    ``path`` is the dotted key after ``train``: ``[key]`` or ``[family, key]``. An old
    brainsynth 0.1 name (``ddpm_channels``, or a family's key written as a shared one, such as
    ``train.widths``) still works, with a warning giving its new place. A key of another
    family is a :class:`ConfigError` naming the family that reads it.
    """
    if len(path) == 2 and path[0] in TRAIN_CONFIGS:
        family, key = path
        cls = TRAIN_CONFIGS[family]
        if key in field_types(cls):
            return [(family, key)]
        places = _family_key(key)
        if places and all(m == family for m, _ in places):  # an old name of this family's key
            _warn_renamed(label, f"train.{family}.{key}", places)
            return places
        if places:
            readers = [m for m in TRAIN_CONFIGS if m in {p for p, _ in places}]
            who = f"only {readers[0]} reads it" if len(readers) == 1 else f"{' and '.join(readers)} read it"
            raise ConfigError(f"{label}: train.{family}.{key} is not a {family} setting: {who}, as {_spelled(places)}")
        check_key(cls, key, label, f"train.{family}")
    if len(path) != 1:
        raise ConfigError(f"{label}: expected train.KEY or train.MODEL.KEY (MODEL one of {', '.join(MODELS)}), "
                          f"got train.{'.'.join(path)}")
    key = path[0]
    if key == "model":
        raise ConfigError(f"{label}: the model is not a config key; choose it with --model "
                          "(brainsynth train) or run.models (brainsynth run)")
    if key in _SHARED_KEYS:
        return [(None, key)]
    places = _family_key(key)
    if not places:
        raise ConfigError(f"{label}: unknown key train.{key}{suggest(key, _TRAIN_KEYS)}; shared keys of train: "
                          f"{', '.join(_SHARED_KEYS)}; each model's own keys go under train.MODEL "
                          f"(docs/configuration.md)")
    _warn_renamed(label, f"train.{key}", places)
    return places


def _warn_renamed(label: str, old: str, places: list[tuple[str, str]]) -> None:
    log.warning("%s: %s is an old name, read as %s; write the new name (the old one goes in the next release)",
                label, old, _spelled(places))


@dataclass
class GenerateConfig(Section):
    """``generate:`` the synthetic sets sampled from each trained generator."""

    name = "generate"
    images_per_label: int = 500  # synthetic images per class
    format: str = field(default="png", metadata=choices("png", "npz", "nifti"))  # image-set storage format
    seed: int = 0  # base of the per-image seeds (any image can be regenerated from its seed)
    steps: int = 50  # ddpm: DDIM sampling steps (Song et al. 2021)
    guidance: float = 0.0  # ddpm: classifier-free guidance weight w, pred = (1+w) cond - w uncond; 0 = conditional only
    precision: str = field(default="fp32", metadata=choices(*PRECISIONS))  # ddpm: bf16 autocast of the sampler's network (the GANs sample in fp32)
    select: str = field(default="last", metadata=choices(*SELECTIONS))  # checkpoint sampled: the newest (last), or the best SWD among kept checkpoints meeting the privacy rules on held-out half A (private-best; docs/privacy.md)

    def check(self) -> None:
        self.at_least(1, "images_per_label", "steps")
        self.at_least(0, "seed")
        if not 0.0 <= self.guidance < float("inf"):
            raise self.bad("guidance", "must be a finite weight >= 0 (0: the conditional model alone)")



@dataclass
class EvaluateConfig(Section):
    """``evaluate:`` GAN-train / GAN-test, fidelity and the feature extractor behind them."""

    name = "evaluate"
    features: str = "vgg16-random"  # feature extractor: vgg16 (ImageNet, the paper's) or vgg16-random (offline)
    weights: Optional[str] = None  # torchvision-format VGG-16 file for features=vgg16 (else the torch hub cache)
    feature_layer: str = field(default="fc7", metadata=choices("fc7", "pool5"))  # fc7 (4096-d) or pool5 (512-d)
    input_size: int = 224  # extractor input side, px (paper: 224)
    precision: str = field(default="fp32", metadata=choices(*PRECISIONS))  # feature extraction precision
    bootstrap: int = 1000  # bootstrap resamples over test subjects for the 95% CIs (0: none)
    seed: int = 0  # seeds the classifiers, bootstrap, subset draws and patch sampling

    def check(self) -> None:
        self.at_least(8, "input_size")
        self.at_least(0, "bootstrap", "seed")


@dataclass
class AuditConfig(Section):
    """``audit:`` the privacy audit (it uses the ``evaluate:`` feature extractor); see docs/privacy.md."""

    name = "audit"
    percentile: float = 0.5  # share (%) of calibration images (held-out half A + training) the near-copy rule may flag
    calibrate_with_training: bool = True  # also calibrate on training images scored against the OTHER training subjects
    bands: int = 3  # brain-area bands rescaled separately (fewer when a band would hold < 20 calibration images)
    seed: int = 0  # seeds the half-A / half-B split of held-out subjects, the bootstrap, permutations, self-test
    max_shift: float = 0.0625  # largest shift forgiven, per axis, as a fraction of the side (4 px at 64 px)
    max_rotation: float = 10.0  # largest rotation forgiven, degrees
    max_scale: float = 0.1  # largest change of size forgiven (0.1: 0.9x to 1.1x)
    flip: bool = True  # forgive a left-right mirror image
    work_size: int = 32  # side (px) the aligned pixel distance is computed at, after the blur
    candidates: int = 6  # training images aligned per image (the best by a coarse search), plus 3 other subjects' best
    prefilter: int = 256  # training images per image ranked by the coarse search after a cheaper thumbnail prefilter (0: all, exhaustive)
    bootstrap: int = 1000  # subject-bootstrap resamples for the membership AUC interval (0: none)
    permutations: int = 2000  # subject relabellings for the membership p-value (all, when fewer exist; 0: none)
    selftest_copies: int = 40  # planted copies per transform family in `brainsynth audit --selftest`
    selftest_target: float = 0.95  # least share of planted copies flagged, in every family, for the self-test to pass
    max_false_flags: float = 0.05  # most false flags on held-out half B for the self-test to pass

    def check(self) -> None:
        if not 0.0 < self.percentile <= 50.0:
            raise self.bad("percentile", "must be above 0 and at most 50 (a false-positive rate in %)")
        self.at_least(1, "bands", "candidates", "selftest_copies")
        self.at_least(0, "seed", "max_shift", "max_rotation", "max_scale", "bootstrap", "permutations", "prefilter")
        if 0 < self.prefilter < self.candidates:
            raise self.bad("prefilter", f"must be 0 (exhaustive) or at least audit.candidates ({self.candidates})")
        self.at_least(8, "work_size")
        if self.max_shift > 0.25:
            raise self.bad("max_shift", "must be at most 0.25 (a quarter of the image side)")
        if self.max_rotation > 45:
            raise self.bad("max_rotation", "must be at most 45 degrees")
        if self.max_scale >= 0.5:
            raise self.bad("max_scale", "must be below 0.5")
        for key in ("selftest_target", "max_false_flags"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise self.bad(key, "must be a share between 0 and 1")


@dataclass
class RunOptions(Section):
    """``run:`` how `brainsynth run` drives the stages."""

    name = "run"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_RUN_MODELS))  # generators trained, generated and compared (pggan, dcgan, ddpm)
    parallel_training: bool = False  # two training runs at a time (every fold x model), one CPU thread each (2-core CPU demo)

    def check(self) -> None:
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models or len(set(self.models)) != len(self.models):
            raise self.bad("models", f"must list distinct models out of {', '.join(MODELS)}")


SECTIONS: dict[str, type[Section]] = {
    "cohort": CohortConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "audit": AuditConfig,
    "run": RunOptions,
}
"""Section name -> dataclass, in pipeline order (also the order of a written config file)."""


@dataclass
class RunConfig:
    """The resolved configuration of a whole run: one object per section.

    ``train`` holds one :class:`TrainConfig` per model. ``source`` says where it came from
    (preset or file, then the overrides), for provenance.
    """

    cohort: CohortConfig
    prepare: PrepareConfig
    train: dict[str, TrainConfig]
    generate: GenerateConfig
    evaluate: EvaluateConfig
    audit: AuditConfig
    run: RunOptions
    source: list[str] = field(default_factory=list)

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def to_dict(self, sections: Iterable[str] | None = None) -> dict[str, Any]:
        """Plain-type mapping of the chosen sections (all by default), as in a config file."""
        out: dict[str, Any] = {}
        for name in sections or SECTIONS:
            if name == "train":
                out["train"] = {m: as_dict(c) for m, c in self.train.items()}
            else:
                out[name] = as_dict(getattr(self, name))
        return out


# --- reading a config file ----------------------------------------------------------------------

def preset_path(name: str) -> Path:
    """The shipped YAML file of preset ``name``."""
    return Path(str(resources.files("brainsynth").joinpath("configs", f"{name}.yaml")))


def _read_yaml(path: Path, label: str) -> dict[str, Any]:
    try:
        data = load_yaml(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{label}: unreadable config ({reason})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: a config file must be a mapping of section: {{key: value}}, "
                          f"got {type(data).__name__}")
    return data


class _Layers:
    """The raw, still untyped values of a config, with where each one came from.

    ``values`` mirrors a config file: ``{section: {key: value}}``, and for ``train`` also
    ``{model: {key: value}}``; ``origins`` maps ``"section.key"`` (or
    ``"train.model.key"``) to a label such as ``preset 'demo'`` or ``--set prepare.size=32``.
    """

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
        self.origins: dict[str, str] = {}

    def put(self, path: list[str], value: Any, label: str) -> None:
        """Store one value at ``[section, key]`` or ``["train", model, key]`` (keys checked)."""
        section = path[0]
        if section not in SECTIONS:
            raise ConfigError(f"{label}: unknown section {section!r}{suggest(section, SECTIONS)}; "
                              f"sections: {', '.join(SECTIONS)}")
        if section == "train":
            for family, key in route_train_key(path[1:], label):
                target = self.values["train"] if family is None else self.values["train"].setdefault(family, {})
                target[key] = value
                self.origins[f"train.{key}" if family is None else f"train.{family}.{key}"] = label
            return
        if len(path) != 2:
            raise ConfigError(f"{label}: expected {section}.KEY, got {'.'.join(path)}")
        key = check_key(SECTIONS[section], path[1], label, section)
        self.values[section][key] = value
        self.origins[f"{section}.{key}"] = label

    def put_file(self, data: dict[str, Any], label: str) -> None:
        for section, body in data.items():
            if section == "preset":
                continue
            if section not in SECTIONS:
                hint = ""
                if section in _TRAIN_KEYS or section in RENAMED_TRAIN_KEYS:
                    hint = ("; this looks like a brainsynth 0.1 training config: put its keys under a "
                            "'train:' section")
                raise ConfigError(f"{label}: unknown section {section!r}{suggest(section, SECTIONS)}{hint}; "
                                  f"sections: {', '.join(SECTIONS)}")
            if body is None:
                continue
            if not isinstance(body, dict):
                raise ConfigError(f"{label}: the '{section}:' section must be a mapping of key: value")
            for key, value in body.items():
                if section == "train" and key in MODELS:
                    if not isinstance(value, dict):
                        raise ConfigError(f"{label}: the 'train.{key}:' section must be a mapping of key: value")
                    for sub_key, sub_value in value.items():
                        self.put(["train", key, sub_key], sub_value, label)
                else:
                    self.put([section, key], value, label)


def _load_source(config: str | Path, layers: _Layers, seen: tuple[str, ...] = ()) -> str:
    """Read a preset name or YAML path (and its ``preset:`` base) into ``layers``; return its label."""
    text = str(config)
    if text in PRESETS:
        path, label = preset_path(text), f"preset {text!r}"
    else:
        path, label = Path(text), text
        if not path.is_file():
            raise ConfigError(f"--config {text}: neither a preset ({', '.join(PRESETS)}) nor an existing YAML "
                              f"file{suggest(text, PRESETS)}")
    if label in seen:
        raise ConfigError(f"{label}: its 'preset:' chain comes back to itself")
    data = _read_yaml(path, label)
    base = data.get("preset")
    if base is not None:
        if str(base) not in PRESETS:
            raise ConfigError(f"{label}: preset: {base!r} is not a preset{suggest(str(base), PRESETS)}; "
                              f"choose one of {', '.join(PRESETS)}")
        _load_source(str(base), layers, (*seen, label))
    layers.put_file(data, label)
    return label


Override = tuple[str, Any, str]
"""One command-line change: (dotted key, value, label for messages)."""


def overrides_from_set(texts: Iterable[str], default_section: str | None = None) -> list[Override]:
    """``--set`` strings as overrides. A bare ``key`` means ``default_section.key``."""
    out = []
    for text in texts:
        key, value = parse_override(text)
        if "." not in key:
            if default_section is None:
                raise ConfigError(f"--set {text}: name the section, e.g. --set train.{key}=... or "
                                  f"--set prepare.{key}=... (sections: {', '.join(SECTIONS)})")
            key = f"{default_section}.{key}"
        out.append((key, value, f"--set {text}"))
    return out


def load_config(config: str | Path | RunConfig = DEFAULT_PRESET, overrides: Iterable[Override | str] = (), *,
                default_section: str | None = None) -> RunConfig:
    """Resolve a preset or YAML file plus overrides into a checked :class:`RunConfig`.

    Parameters
    ----------
    config : str, path or RunConfig
        A preset name (``demo``, ``paper``, ``tiny``), a YAML file, or an already resolved
        config (the overrides are then applied to it).
    overrides : iterable
        ``(dotted key, value, label)`` tuples, or ``"key=value"`` strings (``--set``), applied
        in order. A bare key belongs to ``default_section``.
    default_section : str, optional
        Section of bare ``--set`` keys (``"train.pggan"`` for ``brainsynth train --model pggan``).

    Raises
    ------
    ConfigError
        On an unknown section or key, a wrongly typed or out-of-range value, or an unreadable file.
    """
    layers = _Layers()
    if isinstance(config, RunConfig):
        layers.put_file(config.to_dict(), "config")
        source = list(config.source)
    else:
        source = [_load_source(config, layers)]
    parsed = []
    for item in overrides:
        parsed += overrides_from_set([item], default_section) if isinstance(item, str) else [item]
    for key, value, label in parsed:
        layers.put(key.split("."), value, label)
        source.append(label)
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        if name == "train":
            sections[name] = {m: _build_train(m, layers) for m in TRAIN_CONFIGS}
        else:
            sections[name] = _build(cls(), layers.values[name], layers.origins, name)
    return RunConfig(**sections, source=source)


def _build(obj: Section, values: dict[str, Any], origins: dict[str, str], where: str) -> Section:
    for key, value in values.items():
        set_field(obj, key, value, origins.get(f"{where}.{key}", "config"), where)
    obj._origins = {k: origins[f"{where}.{k}"] for k in values if f"{where}.{k}" in origins}  # type: ignore[attr-defined]
    obj.check()
    return obj


def _build_train(model: str, layers: _Layers) -> TrainConfig:
    cls = TRAIN_CONFIGS[model]
    cfg = cls()
    for key, value in cls.family_defaults.items():
        set_field(cfg, key, value, f"{model} defaults", cls.name)
    shared = {k: v for k, v in layers.values["train"].items() if k not in MODELS}
    own = layers.values["train"].get(model, {})
    origins = {f"{cls.name}.{k}": layers.origins[f"train.{k}"] for k in shared}
    origins.update({f"{cls.name}.{k}": layers.origins[f"train.{model}.{k}"] for k in own})
    return _build(cfg, {**shared, **own}, origins, cls.name)


def section_from(cls: type[Section], values: dict[str, Any], label: str = "argument") -> Any:
    """A checked section built from keyword values (the Python API's simple calls)."""
    obj = cls()
    origins = {f"{cls.name}.{k}": f"{label} {k}" for k in values}
    return _build(obj, dict(values), origins, cls.name)


def train_config_from_dict(data: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
    """Rebuild a training config from its plain dict (a checkpoint's), checking every value again.

    A checkpoint of brainsynth 0.1 holds every family's keys in one flat dict: its own are
    read under their new names, the other families' (which it never used) are dropped.
    """
    model = str(data.get("model", "pggan"))
    if model not in TRAIN_CONFIGS:
        raise ConfigError(f"{source}: unknown model {model!r}; expected one of {', '.join(MODELS)}")
    cls = TRAIN_CONFIGS[model]
    values = {}
    for key, value in data.items():
        if key == "model":
            continue
        places = [(None, key)] if key in field_types(cls) else _family_key(key)
        for family, new_key in places:
            if family in (None, model):
                values[new_key] = value
    return _build(cls(), values, {f"{cls.name}.{k}": source for k in values}, cls.name)


def apply_train_overrides(cfg: TrainConfig, overrides: Iterable[Override]) -> list[str]:
    """Apply overrides of ``train.KEY`` / ``train.<model>.KEY`` to a resumed run's config.

    Returns the keys whose value changed.
    """
    changed = []
    for key, value, label in overrides:
        parts = key.split(".")
        places = route_train_key(parts[1:], label) if parts[0] == "train" else []
        names = [k for family, k in places if family in (None, cfg.model)]
        if not names:
            raise ConfigError(f"{label}: a resumed {cfg.model} run only takes train.KEY or {cfg.name}.KEY")
        for name in names:
            before = getattr(cfg, name)
            set_field(cfg, name, value, label, cfg.name)
            cfg._origins = {**getattr(cfg, "_origins", {}), name: label}  # type: ignore[attr-defined]
            if getattr(cfg, name) != before:
                changed.append(name)
    cfg.check()
    return changed


# --- writing ------------------------------------------------------------------------------------

def config_to_yaml(config: RunConfig, sections: Iterable[str] | None = None, *, models: Iterable[str] | None = None,
                   what: str = "run") -> str:
    """The resolved configuration as YAML, loadable again with ``--config FILE``.

    Parameters
    ----------
    sections : iterable of str, optional
        Sections to write (all by default).
    models : iterable of str, optional
        Models kept in the ``train:`` section (all by default).
    what : str
        Named in the header comment (``"run"``, ``"pggan training run"``, ...).
    """
    data = config.to_dict(sections)
    if "train" in data and models is not None:
        data["train"] = {m: v for m, v in data["train"].items() if m in set(models)}
    header = (f"# brainsynth {__version__}: the resolved configuration of this {what}; "
              "reuse it with --config FILE\n")
    if config.source:
        header += "# from: " + "; ".join(config.source) + "\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def sections_yaml(*sections: Section, what: str) -> str:
    """Some resolved sections as YAML (the ``config.yaml`` a stage writes beside its output).

    A :class:`TrainConfig` goes under ``train: {model: ...}``; the file loads again with
    ``--config FILE`` (sections it lacks take their defaults).
    """
    data: dict[str, Any] = {}
    for obj in sections:
        if isinstance(obj, TrainConfig):
            data.setdefault("train", {})[obj.model] = as_dict(obj)
        else:
            data[obj.name] = as_dict(obj)
    header = f"# brainsynth {__version__}: the resolved configuration of this {what}; reuse it with --config FILE\n"
    return header + yaml.safe_dump(data, sort_keys=False, default_flow_style=None)


def describe_sections() -> str:
    """A few lines for ``--help``: the sections and how to override one key."""
    lines = ["configuration (--config PRESET|FILE, default demo; presets: " + ", ".join(PRESETS) + "):"]
    for name, cls in SECTIONS.items():
        doc = (cls.__doc__ or "").strip().splitlines()[0].split(":", 1)[-1].replace("`", "").strip()
        lines.append(f"  {name + ':':<10}{doc}")
    lines += [
        "override any key with --set SECTION.KEY=VALUE (repeatable; the value is YAML), e.g.",
        "  --set prepare.size=128   --set train.pggan.lr=2e-4   --set evaluate.features=vgg16",
        "train.KEY applies to every model unless train.MODEL.KEY sets it; docs/configuration.md lists every key",
    ]
    return "\n".join(lines)
