"""Which torch device a command runs on: the one rule shared by train, generate and evaluate."""

from __future__ import annotations

import torch

from brainsynth.errors import ConfigError


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """Turn a ``--device`` value into a torch device.

    Parameters
    ----------
    device : str, optional
        ``None`` (default): CUDA when present, else the CPU. ``"cpu"``; ``"cuda"`` (this
        process's GPU under torchrun, ``local_rank``); ``"cuda:N"``.
    local_rank : int
        The process's rank on this machine (torchrun's LOCAL_RANK).
    """
    if device in (None, ""):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: expected cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise ConfigError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available in this torch build or machine; use --device cpu")
    if dev.index is None:
        dev = torch.device("cuda", local_rank)
    if dev.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    torch.cuda.set_device(dev)
    return dev


def describe_device(device: torch.device | str) -> str:
    """What a report records about a device: ``"cpu"``, or ``"cuda:0 (NVIDIA H100 80GB HBM3)"``."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
