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


# --- speed paths: folded fc6, bf16, batch size ----------------------------------------------

@pytest.mark.parametrize("input_size", [32, 64, 96])
def test_folded_fc6_equals_torchvisions_pool_and_fc6(input_size):
    # Below 224 px the adaptive pool is folded into fc6 (conv5 is 1x1, 2x2, 3x3 here).
    images = np.random.default_rng(1).random((3, 20, 24)).astype(np.float32)
    ext = extractor("vgg16-random", input_size=input_size, batch_size=3)
    with torch.inference_mode():
        x = ext._to_network_input(torch.from_numpy(images))  # [3, 3, S, S]
        reference = ext.model.embed(x, "fc7").numpy()  # the unfolded torchvision path
    got = ext.extract(images)
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-5 * np.abs(reference).max())
    assert np.abs(reference).max() > 0


def test_bf16_falls_back_to_fp32_with_a_note_where_it_is_not_native(images, monkeypatch, caplog):
    monkeypatch.setattr(feat, "_cpu_flags", lambda: {"avx2", "avx512f"})
    with caplog.at_level("WARNING", logger="brainsynth.evaluate.features"):
        ext = extractor("vgg16-random", input_size=32, precision="bf16", device="cpu")
    assert ext.precision == "fp32" and ext.describe()["precision"] == "fp32"
    assert next(p.dtype for p in ext.model.parameters()) == torch.float32
    assert any("precision bf16 requested" in r.message and "computed in fp32" in r.message for r in caplog.records)
    monkeypatch.setattr(feat, "_cpu_flags", lambda: {"avx512_bf16"})
    ext = extractor("vgg16-random", input_size=32, precision="bf16", device="cpu")
    assert ext.precision == "bf16" and next(p.dtype for p in ext.model.parameters()) == torch.bfloat16
    # The cached fp32 network is not converted in place.
    assert next(p.dtype for p in feat._cached_random_vgg16().parameters()) == torch.float32


def test_a_bf16_random_extractor_keeps_no_fp32_network_resident(monkeypatch):
    # The fp32 draw (553 MB) is dropped once its bf16 twin exists: only the network in use stays cached.
    monkeypatch.setattr(feat, "_cpu_flags", lambda: {"avx512_bf16"})
    feat._cached_random_vgg16.cache_clear()
    try:
        ext = extractor("vgg16-random", input_size=32, precision="bf16", device="cpu")
        assert feat._cached_random_vgg16.cache_info().currsize == 1
        assert ext.model is feat._cached_random_vgg16(classifier=True, precision="bf16")
        assert {p.dtype for p in ext.model.parameters()} == {torch.bfloat16}
        again = extractor("vgg16-random", input_size=32, precision="bf16", device="cpu")
        assert again.model is ext.model and feat._cached_random_vgg16.cache_info().currsize == 1  # drawn once
    finally:
        feat._cached_random_vgg16.cache_clear()


@pytest.mark.parametrize("cache_mb, size, precision, expected", [
    (32, 224, "bf16", 5), (32, 224, "fp32", 4), (32, 64, "bf16", 64), (32, 96, "fp32", 14), (1, 64, "bf16", 4),
])
def test_batch_is_sized_to_the_last_level_cache(monkeypatch, cache_mb, size, precision, expected):
    monkeypatch.setattr(feat, "last_level_cache_bytes", lambda: cache_mb << 20)
    assert feat.auto_batch_size(size, precision, torch.device("cpu")) == expected
    assert feat.auto_batch_size(size, precision, torch.device("cuda")) == feat.MAX_BATCH


def test_bf16_keeps_the_svm_decisions_of_fp32():
    """bf16 features change < 1% of GAN-train's test decisions and its HM by <= 0.01.

    The demo's measurement (docs/evaluation-speed.md) at a small size: 240 training and 400
    test slices whose classes overlap (disc radii drawn from overlapping ranges), so the SVM
    reaches an HM near the demo's (~0.93) and some test slices lie near its boundary, where a
    feature error would flip them. (On a harder task, HM ~0.87, bf16 flips 1-2 %: see the docs.)
    """
    from brainsynth.evaluate.gan_train import confusion_metrics, fit_and_score

    if not feat.bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    rng = np.random.default_rng(0)

    def slices(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 2, size=n)
        radius = rng.uniform(6, 10, size=n) + 3.5 * labels  # [n] px; the classes overlap on 9.5-10
        yy, xx = np.mgrid[:28, :28] - 13.5
        discs = (np.hypot(yy, xx)[None] < radius[:, None, None]).astype(np.float32)  # [n, 28, 28]
        return np.clip(0.6 * discs + 0.4 * rng.random((n, 28, 28)), 0, 1).astype(np.float32), labels

    train_x, train_y = slices(240)
    test_x, test_y = slices(400)
    decisions, hm, feats = {}, {}, {}
    for precision in ("fp32", "bf16"):
        ext = extractor("vgg16-random", input_size=32, precision=precision, device="cpu")
        feats[precision] = ext.extract(test_x)
        scores = fit_and_score(ext.extract(train_x), train_y, feats[precision], seed=0)
        decisions[precision] = scores > 0
        hm[precision] = confusion_metrics(test_y, decisions[precision])["hm"]
    assert 0.85 < hm["fp32"] < 0.98  # a task with errors, so decisions near the boundary exist
    assert not np.array_equal(feats["bf16"], feats["fp32"])  # bf16 really ran
    assert np.mean(decisions["fp32"] == decisions["bf16"]) >= 0.99
    assert abs(hm["bf16"] - hm["fp32"]) <= 0.01


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fused_conv_relu_equals_conv_then_relu(precision, monkeypatch):
    monkeypatch.setattr(feat, "bf16_supported", lambda device: True)  # compare the paths, native or not
    ext = extractor("vgg16-random", input_size=32, precision=precision, device="cpu", batch_size=2)
    x = ext._to_network_input(torch.from_numpy(np.random.default_rng(2).random((2, 32, 32)).astype(np.float32)))
    with torch.inference_mode():
        plain = ext.model.features(x.to(ext.dtype))  # [2, 512, 1, 1]
        fused = ext._conv_stack(x.to(ext.dtype))
    assert feat._fused_conv_relu_available()
    assert torch.equal(fused, plain) and plain.abs().max() > 0
    monkeypatch.setattr(feat, "_fused_conv_relu_available", lambda: False)
    with torch.inference_mode():
        assert torch.equal(ext._conv_stack(x.to(ext.dtype)), plain)
