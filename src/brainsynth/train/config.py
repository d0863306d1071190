"""Training configuration: one dataclass of defaults, YAML presets, ``--set`` overrides.

Resolution order (later wins):

1. the :class:`TrainConfig` defaults (the official progressive-GAN values);
2. :data:`MODEL_DEFAULTS` for the chosen model (DCGAN's usual latent size, lr and betas);
3. the preset (``paper``, ``demo``, ``tiny`` or a path to a YAML file): its top-level keys,
   then its ``pggan:`` / ``dcgan:`` section for the chosen model;
4. each ``--set key=value``, parsed with ``yaml.safe_load`` and type-checked against the field.

Every value, from a file or from ``--set``, goes through the same checks, so a typo or a
wrong type is one :class:`~brainsynth.errors.ConfigError` line that names its source and,
for an unknown key, suggests the nearest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

from brainsynth import LABELS, __version__
from brainsynth.errors import ConfigError

PRESETS = ("paper", "demo", "tiny")
MODELS = ("pggan", "dcgan")
MODEL_SECTIONS = MODELS  # a preset may hold one overlay mapping per model under these keys

# Official progressive-GAN minibatch per resolution on one GPU (reference.md section 2).
OFFICIAL_BATCH_SIZES = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}

CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODELS,
    "conditioning": ("acgan", "projection", "none"),
    "schedule": ("fixed", "fit"),
    "augment": ("off", "fixed", "adaptive"),
    # fp16 is deliberately absent: the WGAN-GP gradient penalty overflows to NaN in fp16.
    "precision": ("fp32", "bf16"),
}


@dataclass
class TrainConfig:
    """Every training option, with the official progressive-GAN value as the default."""

    # --- networks
    model: str = "pggan"  # network family: pggan | dcgan (set by --model, not by --set)
    resolution: int = 64  # final image size in pixels (a power of two)
    start_resolution: int = 4  # PGGAN: resolution of the first stage
    z_dim: int = 512  # latent size (PGGAN 512, DCGAN 100)
    fmap_base: int = 8192  # PGGAN width rule nf(stage) = min(fmap_base / 2**stage, fmap_max)
    fmap_max: int = 512  # PGGAN: the width cap of that rule
    widths: Optional[dict[int, int]] = None  # PGGAN: explicit channels per resolution, replaces the rule
    # projection is the default: better GAN-train on the demo (slice HM 0.939 vs 0.895 for acgan,
    # same data, image budget and seed).
    conditioning: str = "projection"  # class conditioning: acgan | projection | none
    mbstd_group: int = 4  # PGGAN: minibatch-stddev group size
    dcgan_width: int = 64  # DCGAN: base channel width

    # --- schedule, counted in images shown (not steps)
    total_images: Optional[int] = None  # stop after this many images; null = end of the growth schedule
    schedule: str = "fixed"  # fixed: stable/fade_images as given; fit: derived from total_images
    stable_images: int = 600_000  # images per resolution before the next one fades in
    fade_images: int = 600_000  # images over which the next resolution fades in
    final_share: float = 0.5  # fit: share of total_images spent stable at the final resolution
    batch_sizes: Union[int, dict[int, int]] = field(default_factory=lambda: dict(OFFICIAL_BATCH_SIZES))  # global batch per resolution

    # --- optimiser and loss
    lr: Union[float, dict[int, float]] = 1e-3  # Adam learning rate (official 1e-3; the paper used 2e-4)
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])  # Adam betas
    eps: float = 1e-8  # Adam epsilon
    gp_lambda: float = 10.0  # WGAN-GP gradient-penalty weight
    drift: float = 0.001  # WGAN-GP drift penalty on D(real)^2
    ac_weight: float = 1.0  # weight of the AC-GAN class cross-entropy
    label_flip_every: int = 0  # flip D's real/fake targets every k-th step (paper: 3); 0 = never
    ema_beta: float = 0.999  # G_ema decay per step
    ema_halflife_images: Optional[int] = None  # if set, G_ema half-life in images (replaces ema_beta)

    # --- augmentation (ADA)
    augment: str = "off"  # off | fixed | adaptive
    augment_p: float = 0.0  # initial (or fixed) augmentation probability
    augment_target: float = 0.6  # adaptive: target E[sign(D(real))]
    augment_interval: int = 4  # adaptive: steps between p updates
    augment_speed_images: int = 500_000  # adaptive: images for p to move by 1

    # --- speed and numerics
    precision: str = "fp32"  # fp32 | bf16 autocast (no fp16: the gradient penalty overflows)
    channels_last: bool = False  # NHWC memory format (helps convolutions on recent GPUs)
    compile: bool = False  # torch.compile the generator forward (skipped where unavailable)
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default
    seed: int = 0  # seeds weights, batches, latents and the fixed sample grid

    # --- observability and checkpoints
    tick_images: int = 10_000  # images between ticks (status, samples, stats, checkpoint)
    checkpoint_every_ticks: int = 1  # write a checkpoint every k ticks (and always at the end)
    checkpoint_keep: int = 3  # keep the last K checkpoints
    grid_columns: int = 8  # sample-grid images per class (one row per class)
    grid_cell_px: int = 64  # display size of one grid cell (nearest-neighbour upscaling)
    progress_bar: bool = True  # tqdm bar on stderr
    tensorboard: bool = True  # write TensorBoard events to RUN_DIR/tb
    nan_retries: int = 3  # roll back to the last checkpoint at most this many times on NaN/Inf
    nan_lr_factor: float = 0.5  # learning-rate multiplier applied at each rollback


# DCGAN's usual settings (Radford et al.): a 100-d latent, lr 2e-4 and beta1 0.5.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "pggan": {},
    "dcgan": {"z_dim": 100, "lr": 2e-4, "betas": [0.5, 0.999], "batch_sizes": 64},
}

FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_HINTS = typing.get_type_hints(TrainConfig)


# --- type checking --------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        names = [_type_name(a) for a in args if a is not type(None)]
        text = " or ".join(names)
        return f"{text} or null" if type(None) in args else text
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"mapping {{{_type_name(k)}: {_type_name(v)}}}"
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` converted to type ``tp``; raise ``ValueError`` when it does not fit."""
    origin = typing.get_origin(tp)
    if origin is Union:
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except ValueError:
                continue
        raise ValueError
    if origin is dict:
        if not isinstance(value, dict) or not value:
            raise ValueError
        kt, vt = typing.get_args(tp)
        return {_coerce(k, kt): _coerce(v, vt) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [_coerce(v, typing.get_args(tp)[0]) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if tp is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.replace("_", ""))  # "600_000" from a YAML 1.2 habit
        raise ValueError
    if tp is float:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value)  # YAML 1.1 reads "1e-3" as a string
        raise ValueError
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "on" if value else "off"  # YAML 1.1 reads a bare off/on (e.g. augment: off) as a bool
        raise ValueError
    raise ValueError


def suggest(name: str, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest valid name, or an empty string."""
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_key(key: Any, source: str) -> str:
    if key not in FIELDS:
        raise ConfigError(
            f"{source}: unknown config key {key!r}{suggest(str(key), FIELDS)}; valid keys: {', '.join(FIELDS)}"
        )
    return key


def set_value(cfg: TrainConfig, key: str, value: Any, source: str) -> None:
    """Type-check ``value`` against field ``key`` and store it in ``cfg``."""
    _check_key(key, source)
    tp = _HINTS[key]
    try:
        coerced = _coerce(value, tp)
    except (ValueError, TypeError):
        name = _type_name(tp)
        article = "an" if name[0] in "aeiou" else "a"
        raise ConfigError(f"{source}: {key} must be {article} {name}, got {value!r}") from None
    if key in CHOICES and coerced not in CHOICES[key]:
        raise ConfigError(
            f"{source}: {key} must be one of {', '.join(CHOICES[key])}, got {coerced!r}{suggest(coerced, CHOICES[key])}"
        )
    setattr(cfg, key, coerced)


def apply_mapping(cfg: TrainConfig, mapping: dict[str, Any], source: str) -> None:
    """Apply every key of ``mapping`` to ``cfg`` (the model sections are skipped here)."""
    for key, value in mapping.items():
        if key in MODEL_SECTIONS:
            continue
        set_value(cfg, key, value, source)


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``key=value`` and parse the value as YAML (``8`` -> int, ``true`` -> bool, ...)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set total_images=20000")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
    return key, value


# --- presets -------------------------------------------------------------------------------

def preset_path(name: str) -> Path:
    """The shipped YAML file of preset ``name``."""
    return Path(str(resources.files("brainsynth").joinpath("configs", f"{name}.yaml")))


def read_config_source(config: str | Path) -> tuple[dict[str, Any], str]:
    """Read a preset name or a YAML path into a mapping; return it and a label for messages."""
    text = str(config)
    if text in PRESETS:
        path = preset_path(text)
        label = f"preset {text!r}"
    else:
        path = Path(text)
        label = str(path)
        if not path.is_file():
            raise ConfigError(
                f"--config {text}: neither a preset ({', '.join(PRESETS)}) nor an existing YAML file{suggest(text, PRESETS)}"
            )
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{label}: unreadable config ({reason})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: a config file must be a mapping of key: value, got {type(data).__name__}")
    for section in MODEL_SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{label}: the '{section}:' section must be a mapping of key: value")
    return data, label


def resolve_config(model: str = "pggan", config: str | Path = "demo", overrides: Iterable[str] = ()) -> TrainConfig:
    """Resolve defaults -> model defaults -> preset/file -> ``--set`` overrides.

    Parameters
    ----------
    model : {"pggan", "dcgan"}
    config : str or path
        A preset name (``paper``, ``demo``, ``tiny``) or a YAML file.
    overrides : iterable of str
        ``key=value`` strings (the ``--set`` options), applied last in order.

    Raises
    ------
    ConfigError
        On an unknown key, a wrongly typed or out-of-range value, or an unreadable file.
    """
    if model not in MODELS:
        raise ConfigError(f"--model {model!r}: choose one of {', '.join(MODELS)}{suggest(model, MODELS)}")
    cfg = TrainConfig(model=model)
    apply_mapping(cfg, MODEL_DEFAULTS[model], f"{model} defaults")
    data, label = read_config_source(config)
    file_model = data.get("model", model)
    if file_model != model:
        raise ConfigError(f"{label} is a {file_model} config; pass --model {file_model} or use another --config")
    apply_mapping(cfg, data, label)
    apply_mapping(cfg, data.get(model, {}), f"{label} ({model} section)")
    for text in overrides:
        key, value = parse_override(text)
        if key == "model":
            raise ConfigError("--set model=...: choose the model with --model pggan|dcgan instead")
        set_value(cfg, key, value, f"--set {text}")
    validate(cfg)
    return cfg


def apply_overrides(cfg: TrainConfig, overrides: Iterable[str]) -> list[str]:
    """Apply ``--set`` strings to an existing config (used on resume); return the changed keys."""
    changed = []
    for text in overrides:
        key, value = parse_override(text)
        if key == "model":
            raise ConfigError("--set model=...: a resumed run keeps its model")
        before = getattr(cfg, key, None)
        set_value(cfg, key, value, f"--set {text}")
        if getattr(cfg, key) != before:
            changed.append(key)
    validate(cfg)
    return changed


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def validate(cfg: TrainConfig) -> None:
    """Range checks that a type alone cannot express; one ConfigError line each."""

    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"config {key}={getattr(cfg, key)!r}: {why} (fix it with --set {key}=...)")

    if not _is_power_of_two(cfg.resolution) or cfg.resolution < 4:
        raise bad("resolution", "must be a power of two >= 4")
    if not _is_power_of_two(cfg.start_resolution) or not 4 <= cfg.start_resolution <= cfg.resolution:
        raise bad("start_resolution", f"must be a power of two between 4 and resolution ({cfg.resolution})")
    for key in ("z_dim", "fmap_base", "fmap_max", "mbstd_group", "dcgan_width", "tick_images",
                "checkpoint_every_ticks", "checkpoint_keep", "grid_columns", "grid_cell_px", "augment_interval",
                "augment_speed_images"):
        if getattr(cfg, key) < 1:
            raise bad(key, "must be >= 1")
    for key in ("stable_images", "fade_images", "num_threads", "nan_retries", "label_flip_every"):
        if getattr(cfg, key) < 0:
            raise bad(key, "must be >= 0")
    if cfg.total_images is not None and cfg.total_images < 1:
        raise bad("total_images", "must be >= 1 or null")
    if cfg.schedule == "fit" and cfg.total_images is None:
        raise bad("schedule", "'fit' derives the schedule from total_images, so set total_images too")
    batches = cfg.batch_sizes.values() if isinstance(cfg.batch_sizes, dict) else [cfg.batch_sizes]
    if any(b < 2 for b in batches):
        # A batch of one makes the minibatch-stddev layer NaN.
        raise bad("batch_sizes", "every batch size must be >= 2")
    lrs = cfg.lr.values() if isinstance(cfg.lr, dict) else [cfg.lr]
    if any(not lr > 0 for lr in lrs):
        raise bad("lr", "must be > 0")
    if len(cfg.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.betas):
        raise bad("betas", "must be two numbers in [0, 1)")
    if not cfg.eps > 0:
        raise bad("eps", "must be > 0")
    if not 0.0 <= cfg.ema_beta < 1.0:
        raise bad("ema_beta", "must be in [0, 1)")
    if cfg.ema_halflife_images is not None and cfg.ema_halflife_images < 1:
        raise bad("ema_halflife_images", "must be >= 1 or null")
    if not 0.0 <= cfg.augment_p < 1.0:
        raise bad("augment_p", "must be in [0, 1)")
    if not 0.0 < cfg.final_share <= 1.0:
        raise bad("final_share", "must be in (0, 1]")
    if not 0.0 < cfg.nan_lr_factor <= 1.0:
        raise bad("nan_lr_factor", "must be in (0, 1]")
    for key in ("gp_lambda", "drift", "ac_weight"):
        if getattr(cfg, key) < 0:
            raise bad(key, "must be >= 0")
    if cfg.widths is not None:
        missing = [r for r in _resolutions(cfg) if r not in cfg.widths]
        if missing:
            raise bad("widths", f"needs a width for every resolution, missing {missing}")


def _resolutions(cfg: TrainConfig) -> list[int]:
    res, out = cfg.start_resolution, []
    while res <= cfg.resolution:
        out.append(res)
        res *= 2
    return out


# --- conversion ----------------------------------------------------------------------------

def config_to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain-type dict (safe for ``torch.load(weights_only=True)`` and YAML)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict[str, Any], source: str = "checkpoint") -> TrainConfig:
    """Rebuild a config from :func:`config_to_dict` output, checking every value again."""
    cfg = TrainConfig(model=str(data.get("model", "pggan")))
    apply_mapping(cfg, data, source)
    validate(cfg)
    return cfg


def config_to_yaml(cfg: TrainConfig) -> str:
    """The resolved config as YAML, loadable again with ``--config FILE``."""
    header = f"# brainsynth {__version__}: resolved training config ({cfg.model}); reuse with --config FILE\n"
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)


# --- networks -------------------------------------------------------------------------------

def network_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """Keyword options of :func:`brainsynth.models.build_models` for ``cfg`` (stored in the model card).

    Plain types only (a checkpoint and a JSON card hold them).
    """
    common = {"resolution": cfg.resolution, "z_dim": cfg.z_dim, "n_classes": len(LABELS)}
    if cfg.model == "dcgan":
        return {**common, "width": cfg.dcgan_width}
    return {**common, "fmap_base": cfg.fmap_base, "fmap_max": cfg.fmap_max, "conditioning": cfg.conditioning,
            "mbstd_group": cfg.mbstd_group, "widths": dict(cfg.widths) if cfg.widths else None}
