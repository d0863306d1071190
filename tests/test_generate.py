"""generate (synthetic image sets from G_ema) and export (safetensors + model card)."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from brainsynth.errors import CheckpointError, ConfigError, OutputExistsError
from brainsynth.export import card_path, export_generator, load_exported_generator
from brainsynth.fsio import sha256_file
from brainsynth.api import generate_images
from brainsynth.config import load_config
from brainsynth.generate import image_seed, latent_for_seed, load_generator_from_checkpoint
from brainsynth.imageset import read_image_set
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.loop import run_training


def _write_dataset(root, size=8, per_subject=6):
    """A prepared DATASET (images.npy, images.tsv, manifest.json): 4 train subjects, 2 test."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6 * per_subject, size, size), dtype=np.uint8)
    rows = [{"index": i, "subject": f"sub-{i // per_subject}", "label": ("control", "adhd")[(i // per_subject) % 2],
             "split": "test" if i // per_subject >= 4 else "train", "slice": i % per_subject, "patch": 0}
            for i in range(len(images))]
    np.save(root / "images.npy", images)
    pd.DataFrame(rows).to_csv(root / "images.tsv", sep="\t", index=False)
    (root / "manifest.json").write_text(json.dumps({"simulated": True}))
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("gen")
    dataset = _write_dataset(base / "dataset")
    cfg = load_config("tiny", ["train.total_images=96", "train.tensorboard=false"]).train["pggan"]
    run = run_training(dataset, base / "run", cfg, launch=["preset 'tiny'"])
    (run / "metrics.json").write_text(json.dumps({"gan_train": {"hm": 0.7}}))
    return run


def test_generate_writes_n_per_label_with_provenance(run_dir, tmp_path):
    out = generate_images(run_dir, tmp_path / "syn", images_per_label=5, seed=3)
    images = read_image_set(out)
    assert len(images) == 10 and images.images.shape == (10, 8, 8)
    assert list(images.labels) == ["control"] * 5 + ["adhd"] * 5
    assert images.synthetic and images.meta["counts"] == {"control": 5, "adhd": 5}
    latest = ckpt.latest_checkpoint(run_dir)
    gen = images.meta["generator"]
    assert gen["checkpoint"] == latest.name and gen["checkpoint_sha256"] == sha256_file(latest)
    assert (gen["images_shown"], gen["model"], gen["resolution"], gen["alpha"]) == (96, "pggan", 8, 0.5)
    assert images.meta["config"]["resolution"] == 8 and images.meta["brainsynth_version"]
    assert [r["seed"] for r in images.records][:2] == [image_seed(3, 0, 0), image_seed(3, 0, 1)]
    assert len({r["seed"] for r in images.records}) == 10
    assert all(set(r) >= {"label", "seed", "file"} and "subject" not in r for r in images.records)

    one = generate_images(run_dir, tmp_path / "adhd", images_per_label=2, label="adhd", seed=3)
    adhd = read_image_set(one)
    assert list(adhd.labels) == ["adhd", "adhd"]
    assert np.array_equal(adhd.images, images.images[5:7])  # same seed, same images, whatever else is drawn


def test_any_image_can_be_regenerated_from_its_record(run_dir, tmp_path):
    out = read_image_set(generate_images(run_dir, tmp_path / "syn", images_per_label=3, seed=11, format="npz"))
    G = load_generator_from_checkpoint(ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir)))
    record = out.records[4]  # the second adhd image
    z = latent_for_seed(record["seed"], 16)[None]  # [1, z]
    with torch.no_grad():
        x = G(z, torch.tensor([1]), 8, 0.5)[0, 0]  # [8, 8]
    expected = np.clip(np.rint(((x.numpy() + 1) / 2).clip(0, 1) * 255), 0, 255) / 255.0
    # Another batch size and memory format may round a pixel to the neighbouring 8-bit level.
    assert np.abs(out.images[4] - expected).max() <= 1 / 255 + 1e-6
    assert np.mean(np.abs(out.images[4] - expected) > 1e-6) < 0.1


@pytest.mark.parametrize("fmt", ["png", "npz", "nifti"])
def test_every_format_reads_back_the_same_pixels(run_dir, tmp_path, fmt):
    reference = read_image_set(generate_images(run_dir, tmp_path / "png", images_per_label=4))
    got = read_image_set(generate_images(run_dir, tmp_path / fmt, images_per_label=4, format=fmt, force=True))
    assert got.meta["format"] == fmt
    assert np.array_equal(got.images, reference.images) and list(got.labels) == list(reference.labels)


def test_existing_output_is_refused_without_force(run_dir, tmp_path):
    out = generate_images(run_dir, tmp_path / "syn", images_per_label=1)
    with Image.open(out / "control" / "000000.png") as im:
        before = np.asarray(im).copy()
    with pytest.raises(OutputExistsError, match="pass --force to replace it"):
        generate_images(run_dir, out, images_per_label=2)
    assert len(read_image_set(out)) == 2
    generate_images(run_dir, out, images_per_label=2, force=True, seed=5)
    assert len(read_image_set(out)) == 4
    with Image.open(out / "control" / "000000.png") as im:
        assert not np.array_equal(np.asarray(im), before)


def test_bad_arguments_are_one_line_errors(run_dir, tmp_path):
    with pytest.raises(ConfigError, match="--label 'both-ish'"):
        generate_images(run_dir, tmp_path / "x", images_per_label=1, label="both-ish")
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        generate_images(tmp_path, tmp_path / "x", images_per_label=1)
    assert not (tmp_path / "x").exists()


def test_export_round_trip_reproduces_g_ema_exactly(run_dir, tmp_path):
    out = export_generator(run_dir, tmp_path / "g.safetensors")
    card = json.loads(card_path(out).read_text())
    assert card_path(out) == tmp_path / "g.json"
    assert (card["model"], card["resolution"], card["alpha"], card["z_dim"], card["images_shown"]) == (
        "pggan", 8, 0.5, 16, 96)
    assert card["classes"] == ["control", "adhd"] and card["config_source"] == ["preset 'tiny'"]
    assert card["data"]["n_images_per_label"] == {"control": 12, "adhd": 12} and card["data"]["simulated"] is True
    assert card["metrics"] == {"gan_train": {"hm": 0.7}}
    assert card["checkpoint"]["sha256"] == sha256_file(ckpt.latest_checkpoint(run_dir))
    assert card["weights_sha256"] == sha256_file(out)

    G, loaded_card = load_exported_generator(out)
    reference = load_generator_from_checkpoint(ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir)))
    z, labels = torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1] * 3)
    with torch.no_grad():
        assert torch.equal(G(z, labels, 8, 0.5), reference(z, labels, 8, 0.5))
    assert loaded_card == card

    with pytest.raises(OutputExistsError):
        export_generator(run_dir, out)
    export_generator(run_dir, out, force=True)


def test_a_tampered_export_is_refused(run_dir, tmp_path):
    out = export_generator(run_dir, tmp_path / "g.safetensors")
    out.write_bytes(out.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="unreadable safetensors file"):
        load_exported_generator(out)


def _strings(value):
    """Every string of a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_shared_files_carry_hashes_but_no_local_path_or_subject_id(run_dir, tmp_path):
    from brainsynth.shareable import absolute_paths

    out = generate_images(run_dir, tmp_path / "syn", images_per_label=2, seed=0)
    weights = export_generator(run_dir, tmp_path / "g.safetensors")
    meta = json.loads((out / "metadata.json").read_text())
    card = json.loads(card_path(weights).read_text())
    dataset_subjects = {f"sub-{i}" for i in range(6)}  # the fixture's subject ids
    for name, doc in (("metadata.json", meta), ("model card", card)):
        texts = list(_strings(doc))
        assert texts and not absolute_paths(doc), name
        for text in texts:
            assert str(tmp_path) not in text and str(run_dir) not in text and not text.startswith("/"), (name, text)
            assert not any(s in text for s in dataset_subjects), (name, text)
    latest = ckpt.latest_checkpoint(run_dir)
    state = ckpt.load_checkpoint(latest)
    assert meta["generator"]["checkpoint_sha256"] == sha256_file(latest)
    assert meta["generator"]["data_fingerprint"] == state["data"]["fingerprint"] == card["data"]["fingerprint"]
    assert "run_dir" not in meta["generator"] and "run_dir" not in card["checkpoint"] and "dataset" not in card["data"]


def test_strip_local_paths_keeps_names_and_drops_folders():
    from brainsynth.shareable import strip_local_paths, strip_path

    assert strip_path("/data/hospital/study-42/sub-07/run") == "run"
    assert strip_path("--config /home/ana/patient smith.yaml") == "--config patient smith.yaml"
    assert strip_path(r"C:\Users\ana\cfg.yaml") == "cfg.yaml" and strip_path("~/runs/x") == "x"
    assert strip_path("preset 'tiny', --set train.lr=1e-4, 1/2, a/b") == "preset 'tiny', --set train.lr=1e-4, 1/2, a/b"
    assert strip_local_paths({"/k/a": ["/x/y.yaml", 3, None]}) == {"a": ["y.yaml", 3, None]}
