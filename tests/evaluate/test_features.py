"""VGG-16 feature extractors: shapes, batch independence, weights loading, offline errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from brainsynth.config import EvaluateConfig
from brainsynth.errors import CheckpointError, ConfigError, InputError
from brainsynth.evaluate import features as feat
from brainsynth.evaluate import vgg16


def extractor(name: str = "vgg16-random", *, device: str | None = None, batch_size: int = 64, **settings):
    """``get_extractor`` with an ``evaluate:`` section of ``features=name`` plus ``settings``."""
    return feat.get_extractor(EvaluateConfig(features=name, **settings), device=device, batch_size=batch_size)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    # Unequal height and width: equal sides hide axis bugs.
    return np.random.default_rng(0).random((7, 20, 24)).astype(np.float32)


@pytest.mark.parametrize("layer, dim", [("fc7", 4096), ("pool5", 512)])
def test_extract_shape_dtype_and_description(images, layer, dim):
    ext = extractor("vgg16-random", feature_layer=layer, input_size=32, device="cpu", batch_size=4)
    out = ext.extract(images)
    assert out.shape == (7, dim) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0
    assert ext.describe() == {
        "name": "vgg16-random", "layer": layer, "input_size": 32,
        "channel_mapping": "gray->rgb replicate, ImageNet mean/std", "resize": "bilinear",
        "weights": "random(seed=0)", "precision": "fp32",
    }


@pytest.mark.parametrize("layer", ["pool5", "fc7"])
def test_features_do_not_depend_on_batch_size(images, layer):
    # fc7 passes stream the 400 MB classifier once per batch: keep its batch counts small.
    sizes = (1, 3) if layer == "pool5" else (4,)
    whole = extractor("vgg16-random", feature_layer=layer, input_size=32, batch_size=64).extract(images)
    scale = np.abs(whole).max()
    for bs in sizes:
        part = extractor("vgg16-random", feature_layer=layer, input_size=32, batch_size=bs).extract(images)
        np.testing.assert_allclose(part, whole, atol=1e-5 * scale)


def test_bf16_features_within_tolerance_of_fp32(images):
    fp32 = extractor("vgg16-random", input_size=32, batch_size=64).extract(images)
    bf16_a = extractor("vgg16-random", input_size=32, precision="bf16", batch_size=64).extract(images)
    bf16_b = extractor("vgg16-random", input_size=32, precision="bf16", batch_size=4).extract(images)
    scale = np.abs(fp32).max()
    assert np.abs(bf16_a - fp32).max() < 0.05 * scale
    assert np.abs(bf16_b - bf16_a).max() < 0.05 * scale
    assert np.corrcoef(bf16_a.ravel(), fp32.ravel())[0, 1] > 0.99


def test_gray_input_is_replicated_and_imagenet_normalised():
    ext = extractor("vgg16-random", feature_layer="pool5", input_size=32)
    x = ext._to_network_input(torch.full((1, 32, 32), 0.5))  # [1, 3, 32, 32]
    expected = [(0.5 - m) / s for m, s in zip(feat.IMAGENET_MEAN, feat.IMAGENET_STD)]
    assert x.shape == (1, 3, 32, 32)
    np.testing.assert_allclose(x[0, :, 5, 7].numpy(), expected, rtol=1e-6)


def test_unknown_extractor_suggests_the_closest_name():
    with pytest.raises(ConfigError, match=r"--features 'vgg-16' is unknown; did you mean 'vgg16'\?"):
        extractor("vgg-16")


@pytest.mark.parametrize("kwargs, match", [
    ({"feature_layer": "fc8"}, "--feature-layer 'fc8'"),
    ({"precision": "fp16"}, "--precision 'fp16'"),
    ({"input_size": 16}, "--input-size 16"),
])
def test_bad_options_name_the_option(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        extractor("vgg16-random", **kwargs)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory):
    """A torchvision-format VGG-16 file: a plain state dict with torchvision's key names."""
    path = tmp_path_factory.mktemp("weights") / vgg16.VGG16_FILE
    state = feat._cached_random_vgg16().state_dict()
    assert "features.28.bias" in state and "classifier.6.weight" in state
    torch.save(state, path)
    return path


def test_vgg16_loads_a_torchvision_format_file(torchvision_file, images):
    ext = extractor("vgg16", weights=torchvision_file, input_size=32)
    assert ext.describe()["weights"] == str(torchvision_file)
    assert ext.describe()["name"] == "vgg16"
    same = extractor("vgg16-random", input_size=32)
    np.testing.assert_array_equal(ext.extract(images), same.extract(images))


def test_vgg16_uses_the_hub_cache(torchvision_file, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / vgg16.VGG16_FILE
    cached.parent.mkdir(parents=True)
    cached.symlink_to(torchvision_file)  # the 500 MB file once, seen from the cache
    monkeypatch.setattr(vgg16, "_download", lambda url, dest: pytest.fail("must not download when cached"))
    assert vgg16.resolve_vgg16_weights(None) == cached


def test_vgg16_offline_without_weights_says_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, dest):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(vgg16, "_download", offline)
    with pytest.raises(InputError) as err:
        extractor("vgg16")
    msg = str(err.value)
    assert "\n" not in msg
    assert "--weights FILE" in msg and "--features vgg16-random" in msg
    assert str(tmp_path / "hub" / "checkpoints" / vgg16.VGG16_FILE) in msg


def test_vgg16_missing_or_foreign_weights_file(tmp_path):
    with pytest.raises(InputError, match="--weights .*nope.pth: file not found"):
        extractor("vgg16", weights=tmp_path / "nope.pth")
    bad = tmp_path / "other.pth"
    torch.save({"features.0.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(CheckpointError, match=r"other.pth: not a torchvision-format VGG-16 state dict \(31 missing keys"):
        extractor("vgg16", weights=bad)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object()}, pickled)  # arbitrary objects are refused by weights_only loading
    with pytest.raises(CheckpointError, match="pickled.pth: unreadable weights file"):
        extractor("vgg16", weights=pickled)


def test_random_weights_refuse_a_weights_file(tmp_path):
    with pytest.raises(ConfigError, match="--weights is only used by --features vgg16"):
        extractor("vgg16-random", weights=tmp_path / "w.pth")


def test_pool5_random_network_has_the_full_networks_conv_weights():
    slim, full = feat._cached_random_vgg16(classifier=False), feat._cached_random_vgg16(classifier=True)
    assert len(slim.classifier) == 0
    for a, b in zip(slim.features.parameters(), full.features.parameters()):
        assert torch.equal(a, b)


def test_random_init_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    vgg16.init_random_vgg16(seed=0, classifier=False)  # a fresh draw, not the cached one
    np.testing.assert_array_equal(torch.rand(3).numpy(), expected.numpy())
