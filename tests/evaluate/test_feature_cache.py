"""The feature cache: features computed once per content and setting, shared by commands and folds."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest

from brainsynth.config import AuditConfig
from brainsynth.data.dataset import load_dataset
from brainsynth.evaluate import audit, evaluate
from brainsynth.evaluate import feature_cache as fc
from brainsynth.evaluate import features as feat
from brainsynth.imageset import read_image_set
from test_evaluate import GOOD_SPLIT, TINY, write_dataset, write_synthetic


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cache-ds") / "dataset", GOOD_SPLIT)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("cache-syn") / "pggan", {"control": 8, "adhd": 8})


@pytest.fixture
def calls(monkeypatch):
    """Every ``Extractor.extract`` call, as the number of images it was given."""
    seen: list[int] = []
    original = feat.Extractor.extract

    def counting(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(feat.Extractor, "extract", counting)
    return seen


def test_real_features_are_computed_once_for_every_command_and_fold(dataset, synthetic, tmp_path, calls):
    cache = tmp_path / "cache"
    n_real, n_synth = len(load_dataset(dataset)), len(read_image_set(synthetic))
    evaluate(dataset, {"pggan": str(synthetic)}, tmp_path / "report", TINY, feature_cache=cache)
    assert sorted(calls) == sorted([n_real, n_synth])  # all dataset rows in one call, then the set
    audit(dataset, synthetic, tmp_path / "audit", AuditConfig(), TINY, feature_cache=cache)
    evaluate(dataset, {"again": str(synthetic)}, tmp_path / "report2", replace(TINY, bootstrap=5), feature_cache=cache)
    # Three folds of a cross-validated run: each selects other rows of the same extraction.
    ds = load_dataset(dataset)
    store = fc.FeatureStore(feat.get_extractor(TINY, device="cpu"), cache)
    subjects = ds.table["subject"].to_numpy()
    folds = [store.dataset(ds)[np.flatnonzero(subjects == s)] for s in ("s1", "s3", "s5")]
    assert calls == [n_real, n_synth] or calls == [n_synth, n_real]
    assert [len(f) for f in folds] == [5, 5, 5]
    entries = sorted(p.suffix for p in cache.iterdir())
    assert entries == [".json", ".json", ".npy", ".npy"]


def test_cached_features_equal_fresh_ones_and_memory_serves_repeats(dataset, tmp_path, calls):
    ds = load_dataset(dataset)
    ext = feat.get_extractor(TINY, device="cpu")
    fresh = ext.extract(ds.float_images())
    calls.clear()
    first = fc.FeatureStore(ext, tmp_path).dataset(ds)
    store = fc.FeatureStore(ext, tmp_path)
    second, third = store.dataset(ds), store.dataset(ds)
    assert len(calls) == 1 and store.computed == 0 and store.reused == 2 * len(ds)
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(second, fresh)
    assert third is second


@pytest.mark.parametrize("change", [
    {"input_size": 64}, {"feature_layer": "fc7"}, {"precision": "bf16"},
])
def test_a_changed_setting_or_image_is_another_key(dataset, change, monkeypatch):
    if change.get("precision") == "bf16":
        monkeypatch.setattr(feat, "bf16_supported", lambda device: True)
    images = load_dataset(dataset).float_images()
    base = fc.FeatureStore(feat.get_extractor(TINY, device="cpu"))
    other = fc.FeatureStore(feat.get_extractor(replace(TINY, **change), device="cpu"))
    assert base.key(images) == fc.FeatureStore(feat.get_extractor(TINY, device="cpu")).key(images.copy())
    assert base.key(images) != other.key(images)
    edited = images.copy()
    edited[3, 10, 10] += 1 / 255  # one pixel of one image
    assert base.key(edited) != base.key(images)


def test_weights_are_identified_by_file_content(tmp_path):
    import torch

    from brainsynth.evaluate import vgg16

    state = feat._cached_random_vgg16().state_dict()
    a, b = tmp_path / "a" / vgg16.VGG16_FILE, tmp_path / "b" / vgg16.VGG16_FILE
    for path in (a, b):
        path.parent.mkdir()
        torch.save(state, path)
    keys = [fc.FeatureStore(feat.get_extractor(replace(TINY, features="vgg16", weights=str(p)))).key(np.zeros((1, 4, 4)))
            for p in (a, b)]
    assert keys[0] == keys[1]  # same content under another name: same features
    identity = fc.extractor_identity(feat.get_extractor(replace(TINY, features="vgg16", weights=str(a))))
    assert identity["weights"] == f"sha256:{fc.file_hash(a)}" and len(identity["weights"]) == 71


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong shape", "flipped value", "no json"])
def test_a_corrupt_entry_is_recomputed_with_a_warning(dataset, tmp_path, damage, calls, caplog):
    ds = load_dataset(dataset)
    ext = feat.get_extractor(TINY, device="cpu")
    good = fc.FeatureStore(ext, tmp_path).dataset(ds)
    (npy,) = tmp_path.glob("*.npy")
    if damage == "garbage":
        npy.write_bytes(b"not an array")
    elif damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:-100])
    elif damage == "wrong shape":
        np.save(npy, good[:-1])
    elif damage == "flipped value":
        bad = good.copy()
        bad[0, 0] += 1.0
        np.save(npy, bad)
    else:
        npy.with_suffix(".json").unlink()
    calls.clear()
    with caplog.at_level(logging.WARNING, logger="brainsynth.evaluate.feature_cache"):
        again = fc.FeatureStore(ext, tmp_path).dataset(ds)
    assert len(calls) == 1
    np.testing.assert_array_equal(again, good)
    assert any("is unusable" in r.message and "recomputing it" in r.message for r in caplog.records)
    np.testing.assert_array_equal(np.load(npy), good)  # and repaired on disk


def test_cli_feature_cache_flag_fills_the_folder(dataset, synthetic, tmp_path):
    from brainsynth.cli import main

    cache = tmp_path / "cache"
    code = main(["-q", "evaluate", "--real", str(dataset), "--synthetic", f"pggan={synthetic}", "--out",
                 str(tmp_path / "r"), "--input-size", "32", "--feature-layer", "pool5", "--bootstrap", "5",
                 "--feature-cache", str(cache)])
    assert code == 0 and len(list(cache.glob("*.npy"))) == 2
    assert "cache" not in (tmp_path / "r" / "config.yaml").read_text()  # where, not what: not a config key
