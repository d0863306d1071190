import pytest
import torch

from brainsynth.devices import resolve_device
from brainsynth.errors import ConfigError


def test_default_is_cuda_when_present_else_cpu():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_an_unknown_device_is_one_clear_line():
    with pytest.raises(ConfigError, match=r"--device 'tpu0': expected cpu, cuda or cuda:N"):
        resolve_device("tpu0")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_says_to_use_the_cpu():
    with pytest.raises(ConfigError, match=r"--device cuda: CUDA is not available .*; use --device cpu"):
        resolve_device("cuda")


def test_the_report_names_the_cpu_as_cpu():
    from brainsynth.devices import describe_device

    assert describe_device("cpu") == "cpu" and describe_device(torch.device("cpu")) == "cpu"
