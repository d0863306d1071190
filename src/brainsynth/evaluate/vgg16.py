"""VGG-16 (Simonyan & Zisserman 2015) in plain torch, with torchvision's module names.

The paper (Alam, Hossain & Kobashi) classifies features of VGG-16 with ImageNet-pretrained
weights by an SVM. torchvision is not available beside the CPU torch build, so the network is
defined here with the same module names as torchvision's ``vgg16`` (``features.0.weight`` ...
``classifier.6.bias``); a torchvision weights file (``vgg16-397923af.pth``) therefore loads with
``strict=True``. :mod:`brainsynth.evaluate.features` turns it into a feature extractor.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from brainsynth.errors import CheckpointError, InputError
from brainsynth.fsio import atomic_output_path

log = logging.getLogger("brainsynth.evaluate.vgg16")

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
DOWNLOAD_TIMEOUT_S = 20.0
RANDOM_SEED = 0

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
        model = without_classifier(model)
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


def folded_fc6(model: VGG16, conv5_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """fc6 with the adaptive 7x7 average pool folded in, for a conv5 map of ``conv5_hw``.

    ``AdaptiveAvgPool2d((7, 7))`` is linear: pooled [512, 49] = conv5 [512, h*w] @ P [h*w, 49],
    so ``fc6(flatten(pooled)) = W' flatten(conv5) + b`` with ``W'[o, c, q] = sum_p W[o, c, p] P[q, p]``.
    Returns (weight [4096, 512*h*w], bias [4096]) in fp32.
    """
    h, w = conv5_hw
    basis = torch.eye(h * w).view(h * w, 1, h, w)  # [hw, 1, h, w]: one unit pixel each
    pool = F.adaptive_avg_pool2d(basis, (7, 7)).view(h * w, 49)  # [hw, 49]: P transposed
    fc6 = model.classifier[0]
    weight = fc6.weight.detach().float().view(4096, 512, 49)  # [4096, 512, 49]
    folded = torch.einsum("ocp,qp->ocq", weight, pool)  # [4096, 512, hw]
    return folded.reshape(4096, 512 * h * w).contiguous(), fc6.bias.detach().float()


def bf16_copy(model: VGG16) -> VGG16:
    """The same network with bf16 parameters (built without a full fp32 copy)."""
    twin = _uninitialised_vgg16()
    if len(model.classifier) == 0:
        twin = without_classifier(twin)
    state = {key: value.detach().to(torch.bfloat16) for key, value in model.state_dict().items()}
    twin.load_state_dict(state, strict=True, assign=True)
    return twin


def without_classifier(model: VGG16) -> VGG16:
    # pool5 never reaches the 120M-parameter classifier; share the conv weights, drop the rest.
    slim = VGG16.__new__(VGG16)
    nn.Module.__init__(slim)
    slim.features = model.features
    slim.avgpool = model.avgpool
    slim.classifier = nn.Sequential()
    return slim
