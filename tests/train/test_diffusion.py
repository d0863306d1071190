"""The diffusion model through the one training loop, generate and export (tiny preset, 8 px)."""

import json

import numpy as np
import pytest
import torch

from brainsynth.api import generate_images
from brainsynth.errors import ConfigError
from brainsynth.export import export_generator, load_exported_generator
from brainsynth.fsio import sha256_file
from brainsynth.generate import image_seed, load_generator_from_checkpoint, noise_for_seed
from brainsynth.imageset import read_image_set
from brainsynth.models import network_kwargs
from brainsynth.models.ddpm import Sampler
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.loop import run_training, train

TIMING = {"img_per_s", "sec_per_tick", "wall_s", "process_cpu_s"}


def _state(run_dir):
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(run_dir))


def _stats(run_dir):
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in lines]


@pytest.fixture(scope="module")
def ddpm_run(tiny_dataset, tmp_path_factory, tiny_cfg):
    """One uninterrupted tiny diffusion run: 192 images at 8 px, batch 8, a tick every 32 images."""
    return run_training(tiny_dataset, tmp_path_factory.mktemp("ddpm") / "straight", tiny_cfg("ddpm"),
                        launch=["preset 'tiny'"])


def test_a_diffusion_run_writes_the_gan_contracts(ddpm_run):
    progress = json.loads((ddpm_run / "progress.json").read_text())
    assert progress == {"images_shown": 192, "target_images": 192, "resolution": 8, "alpha": 1.0, "finished": True}
    stats = _stats(ddpm_run)
    assert [s["images_shown"] for s in stats] == [32, 64, 96, 128, 160, 192]
    assert all(s["res"] == 8 and s["batch"] == 8 and s["lr"] == 0.002 for s in stats)
    assert all({"loss_mse", "grad_norm"} <= s.keys() and "loss_d" not in s for s in stats)
    # The denoising loss starts near 1 (the noise's variance: the output layer starts at zero) and falls.
    assert 0.5 < stats[0]["loss_mse"] < 1.2 and stats[-1]["loss_mse"] < stats[0]["loss_mse"]
    assert (ddpm_run / "samples" / "grid-000000192.png").is_file() and (ddpm_run / "tb").is_dir()

    state = _state(ddpm_run)
    assert state["D"] is None and state["opt_D"] is None and state["config"]["model"] == "ddpm"
    assert any(k.startswith("unet.class_embedding") for k in state["G_ema"])
    assert state["G"].keys() == state["G_ema"].keys()
    assert not all(torch.equal(state["G"][k], state["G_ema"][k]) for k in state["G"])  # an average, not a copy


def test_killed_and_resumed_equals_uninterrupted(tiny_dataset, ddpm_run, tmp_path, tiny_cfg):
    run = run_training(tiny_dataset, tmp_path / "run", tiny_cfg("ddpm"), stop_after_images=96)
    assert json.loads((run / "progress.json").read_text())["finished"] is False
    with pytest.raises(ConfigError, match="trains a ddpm; pass --model ddpm to resume it"):
        train(tiny_dataset, run, tiny_cfg("pggan"), resume=True)
    train(tiny_dataset, run, tiny_cfg("ddpm"), resume=True)
    a, b = _state(run), _state(ddpm_run)
    assert a["progress"]["images_shown"] == b["progress"]["images_shown"] == 192
    for net in ("G", "G_ema"):
        for key in a[net]:
            assert torch.equal(a[net][key], b[net][key]), f"{net}.{key} differs"
    for i, s in a["opt_G"]["state"].items():
        assert torch.equal(s["exp_avg_sq"], b["opt_G"]["state"][i]["exp_avg_sq"])
    assert _stats(run) == _stats(ddpm_run)


@pytest.fixture(scope="module")
def sampler(ddpm_run):
    return load_generator_from_checkpoint(_state(ddpm_run))


def test_guidance_changes_the_images_and_the_null_label_samples(sampler):
    assert isinstance(sampler, Sampler) and sampler.denoiser.null_label == 2
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # [4, 1, 8, 8]
    labels = torch.tensor([0, 1, 0, 1])
    plain = sampler(noise, labels, steps=10)
    guided = sampler(noise, labels, steps=10, guidance=3.0)
    uncond = sampler(noise, torch.full((4,), 2), steps=10)
    assert plain.shape == guided.shape == uncond.shape == (4, 1, 8, 8)
    assert torch.isfinite(uncond).all() and uncond.abs().max() <= 1.0
    assert (guided - plain).abs().max() > 1e-3  # w > 0 pushes away from the unconditional prediction
    assert (uncond - plain).abs().max() > 1e-4  # the null class is its own condition
    assert torch.equal(sampler(noise, labels, steps=10), plain)  # DDIM with eta 0 is deterministic
    with pytest.raises(ConfigError, match="generate.steps=101 must be between 1 and the model's 100 training steps"):
        sampler(noise, labels, steps=101)


def test_generate_regenerates_any_image_from_its_seed(ddpm_run, sampler, tmp_path):
    out = read_image_set(generate_images(ddpm_run, tmp_path / "syn", config="tiny", images_per_label=3, seed=5,
                                         guidance=1.5, format="npz"))
    assert out.images.shape == (6, 8, 8) and list(out.labels) == ["control"] * 3 + ["adhd"] * 3
    gen = out.meta["generator"]
    assert (gen["model"], gen["sampler"], gen["steps"], gen["guidance"], gen["precision"]) == (
        "ddpm", "DDIM (eta 0)", 10, 1.5, "fp32")
    assert out.meta["latent"].startswith("x_T = torch.randn(1, res, res")
    assert gen["checkpoint_sha256"] == sha256_file(ckpt.latest_checkpoint(ddpm_run))
    record = out.records[4]
    assert record["seed"] == image_seed(5, 1, 1)
    x = sampler(noise_for_seed(record["seed"], 8)[None], torch.tensor([1]), steps=10, guidance=1.5)[0, 0]  # [8, 8]
    expected = np.rint(((x.numpy() + 1) / 2).clip(0, 1) * 255) / 255.0
    assert np.abs(out.images[4] - expected).max() <= 1 / 255 + 1e-6  # alone or in a batch: the same image
    adhd = read_image_set(generate_images(ddpm_run, tmp_path / "adhd", config="tiny", images_per_label=2, seed=5,
                                          guidance=1.5, label="adhd", format="npz"))
    assert np.array_equal(adhd.images, out.images[3:5])


def test_export_round_trip_rebuilds_the_sampler(ddpm_run, sampler, tmp_path):
    out = export_generator(ddpm_run, tmp_path / "ddpm.safetensors")
    S, card = load_exported_generator(out)
    assert isinstance(S, Sampler) and card["model"] == "ddpm" and card["z_dim"] is None
    assert card["diffusion"] == {"timesteps": 100, "schedule": "linear_beta", "prediction": "epsilon"}
    assert card["architecture"]["channels"] == [8, 8] and "S(noise [N, 1, R, R]" in card["usage"]
    noise, labels = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2])
    assert torch.equal(S(noise, labels, steps=7, guidance=1.0), sampler(noise, labels, steps=7, guidance=1.0))


def test_diffusion_keys_are_checked(tiny_cfg):
    with pytest.raises(ConfigError, match=r"train.ddpm.attention=\[True\] needs one flag per level of "
                                          r"channels \(2\)"):
        tiny_cfg("ddpm", attention=[True])
    with pytest.raises(ConfigError, match="must all be multiples of norm_groups"):
        tiny_cfg("ddpm", channels=[8, 6])
    with pytest.raises(ConfigError, match=r"has 4 levels: 8 px images after a 1x1 patch reach 1 px at the deepest "
                                          r"level; it must be a whole number >= 4 px \(use fewer levels, or images of "
                                          r"at least 32 px\)"):
        tiny_cfg("ddpm", resolution=8, patch=2, channels=[8] * 4, attention=[False] * 4)
    with pytest.raises(ConfigError, match=r"train.ddpm.label_dropout=1.0 must be in \[0, 1\)"):
        tiny_cfg("ddpm", label_dropout=1.0)
    from brainsynth.config import load_config

    with pytest.raises(ConfigError, match="generate.guidance=-1.0 must be a finite weight >= 0"):
        load_config("tiny", ["generate.guidance=-1"])


@pytest.mark.parametrize("resolution, patch", [(256, 4), (64, 4), (32, 2), (16, 1)])
def test_a_patch_too_large_for_the_images_is_halved(tiny_cfg, resolution, patch):
    # The demo's UNet (3 levels) after a 4x4 patch: 16 px at 64 px; smaller images get a smaller patch.
    cfg = tiny_cfg("ddpm", patch=4, channels=[8, 8, 8], attention=[False, False, False], resolution=resolution)
    assert cfg.patch == 4 and cfg.patch_at(resolution) == patch
    assert network_kwargs(cfg)["patch"] == patch
