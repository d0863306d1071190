"""Runs started before the model sections (brainsynth 0.1's flat train keys) resume and generate."""

import json
import shutil
from pathlib import Path

import pytest

from brainsynth.generate import load_generator_from_checkpoint
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.loop import train

# Written by the code of commit 55cc068 (the tiny preset on the 8 px `tiny_dataset`, stopped at 32
# of 64 images; the diffusion model with ddpm_channels [4, 4] to keep the file small).
LEGACY = Path(__file__).parent / "data" / "legacy-55cc068"


@pytest.mark.parametrize("model", ["pggan", "dcgan", "ddpm"])
def test_a_run_of_the_flat_config_resumes_under_the_new_names(tiny_dataset, tmp_path, tiny_cfg, model):
    run = tmp_path / "run"
    shutil.copytree(LEGACY / model, run)
    old = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["config"]
    assert "dcgan_width" in old and "ddpm_channels" in old  # the flat 0.1 layout, every family's keys
    train(tiny_dataset, run, tiny_cfg(model), resume=True)
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["images_shown"], progress["finished"]) == (64, True)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    new = state["config"]
    assert new["model"] == model and not any(k.startswith(("ddpm_", "dcgan_")) for k in new)
    if model == "ddpm":
        assert (new["channels"], new["noise_schedule"]) == (old["ddpm_channels"], old["ddpm_schedule"])
    elif model == "dcgan":
        assert (new["width"], new["ema_bn"], "widths" in new) == (old["dcgan_width"], old["dcgan_ema_bn"], False)
    else:
        assert (new["widths"], new["z_dim"], "width" in new) == (old["widths"], old["z_dim"], False)
    assert [json.loads(line)["images_shown"] for line in (run / "stats.jsonl").read_text().splitlines()] == [64]


@pytest.mark.parametrize("model", ["pggan", "dcgan", "ddpm"])
def test_a_flat_checkpoint_still_generates(model):
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(LEGACY / model))
    G = load_generator_from_checkpoint(state)
    assert not G.training and not any(p.requires_grad for p in G.parameters())
