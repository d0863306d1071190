"""Feature extractors for the evaluation: VGG-16 (the paper's) in plain torch, keyed by name.

The paper (Alam, Hossain & Kobashi) classifies features of VGG-16 (Simonyan & Zisserman 2015)
with ImageNet-pretrained weights by an SVM. torchvision
is not available beside the CPU torch build, so the network is defined here with the same
module names as torchvision's ``vgg16`` (``features.0.weight`` ... ``classifier.6.bias``);
a torchvision weights file (``vgg16-397923af.pth``) therefore loads with ``strict=True``.

Two extractors are registered:

``vgg16``
    ImageNet weights, from ``--weights FILE``, the torch hub cache, or a download.
``vgg16-random``
    The same network with a fixed-seed random initialisation. It needs no download, so runs
    work offline; its name travels with every number it produces (``describe()``).

How a 1-channel MRI slice becomes a network input changes every feature-based number, so it
is recorded with them: the gray channel is replicated to RGB, normalised with the ImageNet
mean/std, and resized bilinearly (antialiased) to ``input_size``.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.config import PRECISIONS, EvaluateConfig
from brainsynth.devices import resolve_device
from brainsynth.errors import CheckpointError, ConfigError, InputError
from brainsynth.fsio import atomic_output_path

log = logging.getLogger("brainsynth.evaluate.features")

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
DOWNLOAD_TIMEOUT_S = 20.0
RANDOM_SEED = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CHANNEL_MAPPING = "gray->rgb replicate, ImageNet mean/std"
RESIZE_MODE = "bilinear"
LAYERS = {"fc7": 4096, "pool5": 512}

# torchvision's configuration "D": channel widths, "M" = 2x2 max pool.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


# --- the network ------------------------------------------------------------------------

class VGG16(nn.Module):
    """VGG-16 with torchvision's module names, so its state dicts are interchangeable."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for width in _VGG16_CFG:
            if width == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(in_ch, int(width), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = int(width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(4096, 1000),
        )

    def embed(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """Features of a normalised RGB batch ``x`` [N, 3, S, S] at ``layer`` ("fc7" or "pool5")."""
        conv5 = self.features(x)  # [N, 512, S/32, S/32]
        if layer == "pool5":
            return conv5.mean(dim=(2, 3))  # [N, 512]
        # Below 224 px the adaptive pool replicates the small conv5 map to 7x7, as torchvision does.
        flat = torch.flatten(self.avgpool(conv5), 1)  # [N, 25088]
        return self.classifier[:5](flat)  # [N, 4096]: fc6, ReLU, dropout (off in eval), fc7, ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # the classifier's logits, for completeness
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))  # [N, 1000]


def _uninitialised_vgg16() -> VGG16:
    # Built on the meta device: torch's default layer init would spend seconds and consume the
    # global RNG drawing weights that are overwritten anyway.
    with torch.device("meta"):
        return VGG16()


def init_random_vgg16(seed: int = RANDOM_SEED, classifier: bool = True) -> VGG16:
    """VGG-16 with torchvision's initialisation scheme drawn from a private seeded generator.

    A private generator keeps the global torch RNG (and so everything seeded after) untouched.
    The conv layers are drawn first, so ``classifier=False`` (pool5 only; skips drawing 120M
    weights) gives exactly the same conv weights as the full network.
    """
    gen = torch.Generator().manual_seed(seed)
    model = _uninitialised_vgg16()
    if not classifier:
        model = _without_classifier(model)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=gen)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01, generator=gen)
                nn.init.zeros_(m.bias)
    return model


# --- weights ----------------------------------------------------------------------------

def cache_path() -> Path:
    """Where torch hub keeps torchvision's VGG-16 file (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest`` atomically and check the sha256 prefix in its name."""
    expected = dest.name.split("-")[-1].split(".")[0]
    log.info("downloading VGG-16 ImageNet weights from %s", url)
    with atomic_output_path(dest) as tmp:
        h = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp, open(tmp, "wb") as f:
            while block := resp.read(1 << 20):
                h.update(block)
                f.write(block)
        if not h.hexdigest().startswith(expected):
            raise CheckpointError(f"{url}: downloaded file has sha256 {h.hexdigest()[:8]}, expected {expected}; try again")


def resolve_vgg16_weights(weights: str | os.PathLike | None) -> Path:
    """The VGG-16 weights file to use: ``weights``, else the hub cache, else a download.

    Raises
    ------
    InputError
        When ``weights`` does not exist, or no file is cached and the download fails.
    """
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise InputError(f"--weights {path}: file not found; give a torchvision-format VGG-16 file ({VGG16_FILE})")
        return path
    cached = cache_path()
    if cached.is_file():
        return cached
    try:
        _download(VGG16_URL, cached)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise InputError(
            f"VGG-16 ImageNet weights unavailable offline ({exc}); pass --weights FILE, put {VGG16_FILE} at "
            f"{cached}, or use --features vgg16-random"
        ) from None
    return cached


def load_vgg16(path: Path) -> VGG16:
    """Read a torchvision-format VGG-16 state dict without executing pickled code.

    Raises
    ------
    CheckpointError
        When the file is not a state dict with exactly torchvision's VGG-16 keys and shapes.
    """
    model = _uninitialised_vgg16()
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means the same thing to the user
        raise CheckpointError(f"{path}: unreadable weights file ({type(exc).__name__}); expected {VGG16_FILE}") from None
    problem = _state_dict_problem(state, model)
    if problem:
        raise CheckpointError(f"{path}: not a torchvision-format VGG-16 state dict ({problem}); expected {VGG16_FILE}")
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _state_dict_problem(state: object, model: VGG16) -> str | None:
    """Why ``state`` cannot load into ``model`` strictly, or None."""
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not a dict of tensors"
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys, e.g. {unexpected[0]}")
        return "; ".join(parts)
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or value.shape != ref.shape:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return f"{key} is {got}, expected {tuple(ref.shape)}"
    return None


# --- registry ---------------------------------------------------------------------------

# A factory turns the --weights option and the layer into (network, description of its weights);
# for "pool5" it may leave out the classifier.
_Factory = Callable[[str | None, str], tuple[VGG16, str]]
EXTRACTORS: dict[str, _Factory] = {}


def register_extractor(name: str) -> Callable[[_Factory], _Factory]:
    """Decorator adding a network factory to :data:`EXTRACTORS` under ``name``."""

    def add(factory: _Factory) -> _Factory:
        EXTRACTORS[name] = factory
        return factory

    return add


@register_extractor("vgg16")
def _vgg16_imagenet(weights: str | None, layer: str) -> tuple[VGG16, str]:
    path = resolve_vgg16_weights(weights)
    model = load_vgg16(path)
    return (_without_classifier(model) if layer == "pool5" else model), str(path)


@lru_cache(maxsize=2)
def _cached_random_vgg16(classifier: bool = True) -> VGG16:
    # The random network is deterministic and costs seconds to draw: build it once per process.
    return init_random_vgg16(RANDOM_SEED, classifier=classifier)


@register_extractor("vgg16-random")
def _vgg16_random(weights: str | None, layer: str) -> tuple[VGG16, str]:
    if weights is not None:
        raise ConfigError("--weights is only used by --features vgg16; drop it or choose --features vgg16")
    return _cached_random_vgg16(classifier=layer != "pool5"), f"random(seed={RANDOM_SEED})"


def check_extractor_name(name: str) -> str:
    """Return ``name`` if registered, else raise with the closest valid names."""
    if name in EXTRACTORS:
        return name
    close = difflib.get_close_matches(name, EXTRACTORS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(f"--features {name!r} is unknown; {hint}choose one of {', '.join(sorted(EXTRACTORS))}")


# --- the extractor ----------------------------------------------------------------------

@dataclass
class Extractor:
    """A feature network plus how images are fed to it.

    Attributes
    ----------
    name : str
        Registry name ("vgg16", "vgg16-random").
    model : VGG16
    weights : str
        Weights file path, or "random(seed=0)".
    layer : {"fc7", "pool5"}
    input_size : int
        Side in pixels of the square network input.
    precision : {"fp32", "bf16"}
    device : torch.device
    batch_size : int
    """

    name: str
    model: VGG16
    weights: str
    layer: str
    input_size: int
    precision: str
    device: torch.device
    batch_size: int

    @property
    def dim(self) -> int:
        """Length of one feature vector."""
        return LAYERS[self.layer]

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
        """float [B, H, W] in [0, 1] -> normalised RGB [B, 3, S, S]."""
        x = batch.unsqueeze(1)  # [B, 1, H, W]
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=True)  # [B, 1, S, S]
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        rgb = (x.expand(-1, 3, -1, -1) - mean) / std  # [B, 3, S, S]
        return rgb.contiguous(memory_format=torch.channels_last)

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
        use_bf16 = self.precision == "bf16"
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = torch.from_numpy(images[start:start + self.batch_size]).to(self.device)  # [B, H, W]
                x = self._to_network_input(batch)  # [B, 3, S, S]
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    feats = self.model.embed(x, self.layer)  # [B, D]
                out[start:start + len(batch)] = feats.float().cpu().numpy()
        return out


def get_extractor(cfg: EvaluateConfig, device: str | None = None, batch_size: int = 64) -> Extractor:
    """Build the registered feature extractor that ``cfg`` names.

    Parameters
    ----------
    cfg : EvaluateConfig
        Uses ``features`` ("vgg16": ImageNet weights; "vgg16-random": fixed-seed random, no
        download), ``weights`` (torchvision-format VGG-16 state dict, for "vgg16"),
        ``feature_layer`` (fc7: 4096-d after the second fully connected layer + ReLU; pool5:
        512-d global average of the last conv block), ``input_size`` (network input side in
        pixels, paper 224; images are resized bilinearly) and ``precision`` (bf16 runs under
        autocast, CPU or CUDA).
    device : str, optional
        "cpu", "cuda", "cuda:N"; default cuda when available.
    batch_size : int
        Images per forward pass; does not change the features.
    """
    name, layer, input_size, precision = cfg.features, cfg.feature_layer, cfg.input_size, cfg.precision
    check_extractor_name(name)
    if layer not in LAYERS:
        raise ConfigError(f"--feature-layer {layer!r} is unknown; choose one of {', '.join(LAYERS)}")
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision {precision!r} is unknown; choose one of {', '.join(PRECISIONS)}")
    if input_size < 32:
        raise ConfigError(f"--input-size {input_size} is too small for VGG-16's five poolings; use 32 or more")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be >= 1")
    dev = resolve_device(device)
    model, weights_desc = EXTRACTORS[name](None if cfg.weights is None else str(cfg.weights), layer)
    # channels_last lets oneDNN pick its fastest conv kernels: 1.4x fp32 on a 2-core AVX-512 CPU
    # (benchmarks/evaluate_speed.py); it changes the layout, not the maths.
    model = model.to(dev, memory_format=torch.channels_last).eval()
    log.info("feature extractor %s (%s, %d px, %s, weights %s) on %s", name, layer, input_size, precision,
             weights_desc, dev)
    return Extractor(name=name, model=model, weights=weights_desc, layer=layer, input_size=input_size,
                     precision=precision, device=dev, batch_size=batch_size)


def _without_classifier(model: VGG16) -> VGG16:
    # pool5 never reaches the 120M-parameter classifier; share the conv weights, drop the rest.
    slim = VGG16.__new__(VGG16)
    nn.Module.__init__(slim)
    slim.features = model.features
    slim.avgpool = model.avgpool
    slim.classifier = nn.Sequential()
    return slim
