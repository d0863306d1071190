"""Feature extractors for the evaluation: VGG-16 (the paper's), keyed by name.

The paper (Alam, Hossain & Kobashi) classifies VGG-16 features (Simonyan & Zisserman 2015) by
an SVM. The network and its weights files live in :mod:`brainsynth.evaluate.vgg16`.

Two extractors are registered:

``vgg16``
    ImageNet weights, from ``--weights FILE``, the torch hub cache, or a download.
``vgg16-random``
    The same network with a fixed-seed random initialisation. It needs no download, so runs
    work offline; its name travels with every number it produces (``describe()``).

How a 1-channel MRI slice becomes a network input changes every feature-based number, so it
is recorded with them: the gray channel is replicated to RGB, normalised with the ImageNet
mean/std, and resized bilinearly (antialiased) to ``input_size``.

Speed (``benchmarks/evaluate_speed.py``; figures in ``benchmarks/README.md``):

- ``precision="bf16"`` runs the network on a bf16 copy of its weights (what ``torch.autocast``
  computes, without recasting 138M weights every batch), on CPUs with native bf16
  (AVX512-BF16/AMX) and on CUDA; elsewhere it falls back to fp32 with a logged note, and
  :meth:`Extractor.describe` records the precision actually used.
- channels_last activations, ``torch.inference_mode``, and a batch size chosen so that one
  batch's largest activation map fits in the last-level cache (:func:`auto_batch_size`).
- Below 224 px the conv5 map is smaller than 7x7 and torchvision's adaptive average pool
  only replicates/averages it; that linear map is folded into fc6's weights once
  (:func:`folded_fc6`), so fc6 reads 512*h*w inputs instead of 25,088 (an exact identity;
  float rounding aside).
"""

from __future__ import annotations

import copy
import difflib
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.config import PRECISIONS, EvaluateConfig
from brainsynth.devices import resolve_device
from brainsynth.errors import ConfigError
from brainsynth.evaluate.vgg16 import (
    RANDOM_SEED,
    VGG16,
    bf16_copy,
    folded_fc6,
    init_random_vgg16,
    load_vgg16,
    resolve_vgg16_weights,
    without_classifier,
)

log = logging.getLogger("brainsynth.evaluate.features")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_MAPPING = "gray->rgb replicate, ImageNet mean/std"
RESIZE_MODE = "bilinear"
LAYERS = {"fc7": 4096, "pool5": 512}
# Changes whenever the extraction code changes what it computes (even by rounding), so feature
# caches written by an older version are not reused (evaluate/feature_cache.py).
EXTRACTOR_VERSION = 2
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")  # x86 and Arm names of native bf16
DEFAULT_CACHE_BYTES = 32 << 20  # last-level cache assumed when the OS does not say (this dev machine's L3)
MAX_BATCH = 64


# --- registry ---------------------------------------------------------------------------

# A factory turns the --weights option, the layer and the precision actually used ("fp32"/"bf16") into
# (network in that precision, description of its weights); for "pool5" it may leave out the classifier.
_Factory = Callable[[str | None, str, str], tuple[VGG16, str]]
EXTRACTORS: dict[str, _Factory] = {}


def register_extractor(name: str) -> Callable[[_Factory], _Factory]:
    """Decorator adding a network factory to :data:`EXTRACTORS` under ``name``."""

    def add(factory: _Factory) -> _Factory:
        EXTRACTORS[name] = factory
        return factory

    return add


@register_extractor("vgg16")
def _vgg16_imagenet(weights: str | None, layer: str, precision: str) -> tuple[VGG16, str]:
    path = resolve_vgg16_weights(weights)
    model = load_vgg16(path)
    model = without_classifier(model) if layer == "pool5" else model
    return (bf16_copy(model) if precision == "bf16" else model), str(path)


@lru_cache(maxsize=4)
def _cached_random_vgg16(classifier: bool = True, precision: str = "fp32") -> VGG16:
    # The random network is deterministic and costs seconds to draw: built once per process and precision. A bf16
    # request keeps only the bf16 network: caching the fp32 draw as well kept 553 MB resident through every later
    # stage of an evaluation (benchmarks/README.md, "Cohort size").
    model = init_random_vgg16(RANDOM_SEED, classifier=classifier)
    return bf16_copy(model) if precision == "bf16" else model


@register_extractor("vgg16-random")
def _vgg16_random(weights: str | None, layer: str, precision: str) -> tuple[VGG16, str]:
    if weights is not None:
        raise ConfigError("--weights is only used by --features vgg16; drop it or choose --features vgg16")
    return _cached_random_vgg16(classifier=layer != "pool5", precision=precision), f"random(seed={RANDOM_SEED})"


def check_extractor_name(name: str) -> str:
    """Return ``name`` if registered, else raise with the closest valid names."""
    if name in EXTRACTORS:
        return name
    close = difflib.get_close_matches(name, EXTRACTORS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"--features {name!r} is unknown; {hint}choose one of {', '.join(sorted(EXTRACTORS))}")


# --- precision and batch size -----------------------------------------------------------

def _cpu_flags() -> set[str]:
    """Instruction-set flags of this CPU: torch's own probe, else /proc/cpuinfo."""
    probe = getattr(torch.cpu, "get_capabilities", None)  # torch >= 2.3
    if probe is not None:
        try:
            return {name for name, present in probe().items() if present}
        except Exception:  # an unknown CPU must not stop an evaluation; fall through to cpuinfo
            pass
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def bf16_supported(device: torch.device) -> bool:
    """True when ``device`` runs bf16 convolutions natively.

    On a CPU without AVX512-BF16/AMX-BF16 (x86) or BF16 (Arm), oneDNN emulates bf16 and is
    slower than fp32, so bf16 would cost accuracy and buy nothing.
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and bool(_cpu_flags() & set(BF16_CPU_FLAGS))


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision features are computed in: ``requested``, or fp32 where bf16 is not native."""
    if requested == "bf16" and not bf16_supported(device):
        log.warning("note: precision bf16 requested, but this %s has no native bf16 (%s); features are computed "
                    "in fp32 and recorded as such", device.type, "/".join(BF16_CPU_FLAGS))
        return "fp32"
    return requested


def last_level_cache_bytes() -> int:
    """Size of the CPU's largest cache (Linux sysfs), else :data:`DEFAULT_CACHE_BYTES`."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        match = re.fullmatch(r"(\d+)([KMG]?)", entry.read_text().strip())
        if match:
            sizes.append(int(match[1]) << {"": 0, "K": 10, "M": 20, "G": 30}[match[2]])
    return max(sizes, default=DEFAULT_CACHE_BYTES)


def auto_batch_size(input_size: int, precision: str, device: torch.device) -> int:
    """Images per forward pass: as many as keep one batch's largest activation in cache.

    VGG-16's largest activation is conv1's 64 x S x S map. While it stays in the last-level
    cache, the ReLU/pool passes between convolutions do not go to DRAM; larger batches
    only add DRAM traffic, smaller ones starve the deep, small layers (14x14 at 224 px).
    At least 4 (so conv5 keeps enough rows per GEMM), at most :data:`MAX_BATCH`. GPUs get
    :data:`MAX_BATCH`.
    """
    if device.type != "cpu":
        return MAX_BATCH
    per_image = 64 * input_size * input_size * (2 if precision == "bf16" else 4)  # bytes of conv1's output
    return int(min(MAX_BATCH, max(4, last_level_cache_bytes() // per_image)))


# --- the extractor ----------------------------------------------------------------------

@lru_cache(maxsize=1)
def _fused_conv_relu_available() -> bool:
    """Whether this torch has oneDNN's fused convolution + ReLU (the op torch.compile uses on CPUs)."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        x = torch.ones(1, 1, 3, 3).contiguous(memory_format=torch.channels_last)
        w = -torch.ones(1, 1, 1, 1).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = torch.ops.mkldnn._convolution_pointwise(x, w, None, [0, 0], [1, 1], [1, 1], 1, "relu", [], "")
        return bool(y.shape == x.shape and float(y.abs().max()) == 0.0)
    except (AttributeError, RuntimeError):  # an older or newer torch without this private op
        return False


@dataclass
class Extractor:
    """A feature network plus how images are fed to it.

    Attributes
    ----------
    name : str
        Registry name ("vgg16", "vgg16-random").
    model : VGG16
        In the compute precision (bf16 weights when ``precision`` is "bf16").
    weights : str
        Weights file path, or "random(seed=0)".
    layer : {"fc7", "pool5"}
    input_size : int
        Side in pixels of the square network input.
    precision : {"fp32", "bf16"}
        The precision actually used (a requested bf16 may have fallen back to fp32).
    device : torch.device
    batch_size : int
    fuse : bool
        Run each conv + ReLU as one oneDNN call on the CPU (same numbers; False for FLOP
        counting, which sees only the unfused ops, and for comparisons).
    """

    name: str
    model: VGG16
    weights: str
    layer: str
    input_size: int
    precision: str
    device: torch.device
    batch_size: int
    fuse: bool = True
    _folded: dict = field(default_factory=dict, repr=False)  # conv5 (h, w) -> folded fc6 (weight, bias)

    @property
    def dim(self) -> int:
        """Length of one feature vector."""
        return LAYERS[self.layer]

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.precision == "bf16" else torch.float32

    def describe(self) -> dict[str, object]:
        """Everything that determines the features; stored beside every number they produce."""
        return {
            "name": self.name,
            "layer": self.layer,
            "input_size": self.input_size,
            "channel_mapping": CHANNEL_MAPPING,
            "resize": RESIZE_MODE,
            "weights": self.weights,
            "precision": self.precision,
        }

    def _to_network_input(self, batch: torch.Tensor) -> torch.Tensor:
        """float [B, H, W] in [0, 1] -> normalised RGB [B, 3, S, S], channels_last, fp32."""
        x = batch.unsqueeze(1)  # [B, 1, H, W]
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)  # [B, 1, S, S]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        rgb = (x.expand(-1, 3, -1, -1) - mean) / std  # [B, 3, S, S]
        return rgb.contiguous(memory_format=torch.channels_last)

    def _fc6(self, conv5: torch.Tensor) -> torch.Tensor:
        """fc6 [B, 4096] of conv5 [B, 512, h, w]; the pool is folded into the weights below 7x7."""
        h, w = conv5.shape[-2:]
        if h * w >= 49:  # 224 px and up: torchvision's own pool and fc6
            return self.model.classifier[0](torch.flatten(self.model.avgpool(conv5), 1))  # [B, 4096]
        if (h, w) not in self._folded:
            weight, bias = folded_fc6(self.model, (h, w))  # [4096, 512*h*w], [4096]
            self._folded[(h, w)] = (weight.to(self.device, self.dtype), bias.to(self.device, self.dtype))
        weight, bias = self._folded[(h, w)]
        return F.linear(torch.flatten(conv5, 1), weight, bias)  # [B, 4096] from [B, 512*h*w]

    def _conv_stack(self, x: torch.Tensor) -> torch.Tensor:
        """VGG-16's conv blocks, each conv and its ReLU as one oneDNN call on the CPU.

        The fused call writes each activation once instead of twice (conv, then the ReLU pass
        over it); its results equal conv + ReLU bit for bit (tests/evaluate/test_features.py).
        """
        if not (self.fuse and self.device.type == "cpu" and _fused_conv_relu_available()):
            return self.model.features(x)
        layers = list(self.model.features)
        i = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.ReLU):
                x = torch.ops.mkldnn._convolution_pointwise(
                    x, layer.weight, layer.bias, list(layer.padding), list(layer.stride), list(layer.dilation),
                    layer.groups, "relu", [], "")  # [B, C_out, H, W], channels_last
                i += 2
            else:
                x = layer(x)
                i += 1
        return x

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """Features [B, D] (fp32) of a normalised batch ``x`` [B, 3, S, S]."""
        conv5 = self._conv_stack(x.to(self.dtype))  # [B, 512, S/32, S/32]
        if self.layer == "pool5":
            return conv5.float().mean(dim=(2, 3))  # [B, 512]
        # fc6 -> ReLU -> (dropout, off in eval) -> fc7 -> ReLU, as torchvision's classifier[:5].
        return F.relu(self.model.classifier[3](F.relu(self._fc6(conv5)))).float()  # [B, 4096]

    def extract(self, images: np.ndarray) -> np.ndarray:
        """Features of grayscale images.

        Parameters
        ----------
        images : np.ndarray
            float32 [N, H, W] with values in [0, 1].

        Returns
        -------
        np.ndarray
            float32 [N, D], D = 4096 for fc7, 512 for pool5.
        """
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 3:
            raise ValueError(f"expected images [N, H, W], got shape {images.shape}")
        out = np.empty((len(images), self.dim), dtype=np.float32)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(images[start:start + self.batch_size]).to(self.device)  # [B, H, W]
                feats = self._embed(self._to_network_input(batch))  # [B, D]
                out[start:start + len(batch)] = feats.cpu().numpy()
        return out


def get_extractor(cfg: EvaluateConfig, device: str | None = None, batch_size: int | None = None) -> Extractor:
    """Build the registered feature extractor that ``cfg`` names.

    Parameters
    ----------
    cfg : EvaluateConfig
        Uses ``features`` ("vgg16": ImageNet weights; "vgg16-random": fixed-seed random, no
        download), ``weights`` (torchvision-format VGG-16 state dict, for "vgg16"),
        ``feature_layer`` (fc7: 4096-d after the second fully connected layer + ReLU; pool5:
        512-d global average of the last conv block), ``input_size`` (network input side in
        pixels, paper 224; images are resized bilinearly) and ``precision`` (bf16 where the
        device runs it natively, see :func:`resolve_precision`).
    device : str, optional
        "cpu", "cuda", "cuda:N"; default cuda when available.
    batch_size : int, optional
        Images per forward pass; default :func:`auto_batch_size`. It does not change the
        features beyond float rounding.
    """
    name, layer, input_size, precision = cfg.features, cfg.feature_layer, cfg.input_size, cfg.precision
    check_extractor_name(name)
    if layer not in LAYERS:
        raise ConfigError(f"--feature-layer {layer!r} is unknown; choose one of {', '.join(LAYERS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if input_size < 32:
        raise ConfigError(f"--input-size {input_size} is too small for VGG-16's five poolings; use 32 or more")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be >= 1")
    dev = resolve_device(device)
    used = resolve_precision(precision, dev)
    model, weights_desc = EXTRACTORS[name](None if cfg.weights is None else str(cfg.weights), layer, used)
    if dev.type != "cpu":
        model = copy.deepcopy(model)  # moved below: a cached CPU network must stay where other extractors expect it
    # channels_last lets oneDNN pick its fastest conv kernels (1.4x in fp32 on a 2-core AVX-512
    # CPU, benchmarks/evaluate_speed.py); it changes the layout, not the maths.
    model = model.to(dev, memory_format=torch.channels_last).eval()
    batch = batch_size or auto_batch_size(input_size, used, dev)
    log.info("feature extractor %s (%s, %d px, %s, batch %d, weights %s) on %s", name, layer, input_size, used,
             batch, weights_desc, dev)
    return Extractor(name=name, model=model, weights=weights_desc, layer=layer, input_size=input_size,
                     precision=used, device=dev, batch_size=batch)
