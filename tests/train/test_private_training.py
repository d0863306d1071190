"""Private training wired into the loop (train.pggan.dp_*), and snapshots kept over training."""

import json

import pytest
import torch

from brainsynth.api import generate_images
from brainsynth.errors import ConfigError
from brainsynth.imageset import read_image_set
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.dp import Accountant
from brainsynth.train.loop import run_training, train

PRIVATE = dict(dp_noise=1.0, dp_clip=1.0, dp_slices_per_subject=4, dp_delta=1e-4, mbstd_group=1, tensorboard=False)


def _stats(run):
    return [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def private_run(tiny_dataset, tmp_path_factory, tiny_cfg):
    return run_training(tiny_dataset, tmp_path_factory.mktemp("dp") / "run", tiny_cfg(**PRIVATE))


def test_a_private_run_accounts_every_d_step_by_person(private_run):
    stats = _stats(private_run)
    # 4 training subjects, 4 slices each: a batch of 8 means each subject is drawn with probability 0.5.
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(private_run))
    history = state["family"]["accountant"]["history"]
    assert history == [[1.0, 0.5, 24]]  # 192 images at batch 8: 24 D steps, all at sigma 1, q 0.5
    epsilons = [s["dp_epsilon"] for s in stats]
    assert epsilons == sorted(epsilons) and epsilons[0] > 0
    assert epsilons[-1] == pytest.approx(Accountant("rdp", history).epsilon(1e-4))
    assert [s["dp_steps"] for s in stats] == [4, 8, 12, 16, 20, 24]
    assert all(0 <= s["dp_subjects"] <= 4 and 0 <= s["dp_clipped"] <= 1 for s in stats)


def test_a_killed_private_run_resumes_with_its_accountant(private_run, tiny_dataset, tmp_path, tiny_cfg):
    run = run_training(tiny_dataset, tmp_path / "run", tiny_cfg(**PRIVATE), stop_after_images=96)
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(run))["family"]["accountant"]["history"] == [[1.0, 0.5, 12]]
    train(tiny_dataset, run, tiny_cfg(**PRIVATE), resume=True)
    a, b = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r)) for r in (run, private_run))
    assert a["family"] == b["family"]
    assert all(torch.equal(a["D"][k], b["D"][k]) for k in a["D"])  # the same noise, the same subjects


def test_what_a_private_run_releases_states_its_epsilon(private_run, tmp_path):
    out = generate_images(private_run, tmp_path / "set", config="tiny", images_per_label=2)
    guarantee = read_image_set(out).meta["generator"]["differential_privacy"]
    assert guarantee["unit"] == "one person (every slice of one subject)"
    assert guarantee["delta"] == 1e-4 and guarantee["d_steps"] == 24 and guarantee["epsilon"] > 0


@pytest.mark.parametrize("settings, message", [
    (dict(mbstd_group=4), "train.pggan.mbstd_group=4 must be 1 with dp_noise: the minibatch-stddev layer mixes"),
    (dict(augment="adaptive"), "train.pggan.augment='adaptive' cannot be adaptive with dp_noise"),
    (dict(precision="bf16"), "train.pggan.precision='bf16' must be fp32 with dp_noise"),
    (dict(channels_last=True), "train.pggan.channels_last=True must be false with dp_noise"),
    (dict(dp_noise=0.0), "train.pggan.dp_noise=0.0 must be > 0 (a noise multiplier), or null"),
])
def test_settings_that_would_break_the_guarantee_are_refused(tiny_cfg, settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tiny_cfg(**{**PRIVATE, **settings})


def test_a_delta_too_large_for_the_cohort_is_refused(tiny_dataset, tmp_path, tiny_cfg):
    with pytest.raises(ConfigError, match=r"dp_delta=0.01 is not far below 1/4 subjects: choose delta <= 0.0025 \(the default "
                                          r"1e-05 fits up to 1000 people\)"):
        run_training(tiny_dataset, tmp_path / "run", tiny_cfg(**{**PRIVATE, "dp_delta": 0.01}))


def test_the_dcgan_has_no_private_mode(tiny_cfg):
    with pytest.raises(ConfigError, match="train.dcgan.dp_noise is not a dcgan setting: only pggan reads it"):
        tiny_cfg("dcgan", dp_noise=1.0)


def test_snapshots_are_kept_at_a_geometric_series_and_survive_pruning(tiny_dataset, tmp_path, tiny_cfg):
    cfg = tiny_cfg(snapshot_first=40, snapshot_factor=2.0, checkpoint_keep=1, tensorboard=False)
    run = run_training(tiny_dataset, tmp_path / "run", cfg, stop_after_images=96)
    train(tiny_dataset, run, cfg, resume=True)
    # Points 40, 80, 160 and the end (192); ticks every 32 images: the first tick at or after each.
    assert [ckpt.images_of(p) for p in ckpt.list_snapshots(run)] == [64, 96, 160, 192]
    assert [ckpt.images_of(p) for p in ckpt.list_checkpoints(run)] == [192]
