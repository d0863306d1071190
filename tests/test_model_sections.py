"""Each model family's settings live in its own section; old flat names still work, with a warning."""

import logging

import pytest
import yaml

from brainsynth.cli import main
from brainsynth.config import (RENAMED_TRAIN_KEYS, TRAIN_CONFIGS, DCGANConfig, DDPMConfig, PGGANConfig, TrainConfig,
                               apply_train_overrides, load_config, train_config_from_dict)
from brainsynth.errors import ConfigError
from brainsynth.options import field_types

SHARED = set(field_types(TrainConfig))


def test_each_family_reads_its_own_keys_and_the_shared_ones():
    own = {m: set(field_types(cls)) - SHARED for m, cls in TRAIN_CONFIGS.items()}
    assert {"widths", "fmap_base", "conditioning", "gp_lambda", "adam_reset", "start_resolution"} <= own["pggan"]
    assert own["dcgan"] == {"z_dim", "width", "label_flip_every", "ema_bn", "ema_bn_images"}
    assert {"channels", "timesteps", "noise_schedule", "prediction", "grid_steps"} <= own["ddpm"]
    assert not own["ddpm"] & (own["pggan"] | own["dcgan"])
    assert {"total_images", "batch_sizes", "lr", "ema_halflife_images", "augment", "precision", "tick_images",
            "checkpoint_keep"} <= SHARED
    assert not {k for k in SHARED if k.startswith(("ddpm_", "dcgan_"))}
    cfg = load_config("tiny")
    assert [type(cfg.train[m]) for m in ("pggan", "dcgan", "ddpm")] == [PGGANConfig, DCGANConfig, DDPMConfig]


@pytest.mark.parametrize("text, message", [
    ("train.pggan.timesteps=10", "--set train.pggan.timesteps=10: train.pggan.timesteps is not a pggan setting: "
                                 "only ddpm reads it, as train.ddpm.timesteps"),
    ("train.pggan.ddpm_channels=[8]", "train.pggan.ddpm_channels is not a pggan setting: only ddpm reads it, as "
                                      "train.ddpm.channels"),
    ("train.dcgan.widths={4: 8}", "train.dcgan.widths is not a dcgan setting: only pggan reads it, as "
                                  "train.pggan.widths"),
    ("train.ddpm.z_dim=8", "train.ddpm.z_dim is not a ddpm setting: pggan and dcgan read it, as "
                           "train.pggan.z_dim and train.dcgan.z_dim"),
    ("train.pggan.widht={4: 8}", "unknown key train.pggan.widht (did you mean 'widths'?)"),
])
def test_a_key_of_another_family_names_the_family_that_reads_it(text, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [text])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_misspelt_family_key_lists_that_family_and_the_shared_keys_only():
    with pytest.raises(ConfigError) as err:
        load_config("tiny", ["train.pggan.mbstd_grup=2"])
    valid = str(err.value).split("valid keys of train.pggan: ")[1].split(", ")
    assert "mbstd_group" in valid and "lr" in valid and "channels" not in valid and "width" not in valid


def test_the_cli_refuses_a_diffusion_key_on_a_gan_in_one_line(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--model", "pggan",
                 "--set", "train.pggan.timesteps=10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "train.pggan.timesteps is not a pggan setting: only ddpm reads it, as train.ddpm.timesteps" in err[0]


@pytest.mark.parametrize("old, model, key, value", [
    ("train.ddpm_channels=[16, 16]", "ddpm", "channels", [16, 16]),
    ("train.ddpm.ddpm_schedule=cosine", "ddpm", "noise_schedule", "cosine"),
    ("train.dcgan_width=16", "dcgan", "width", 16),
    ("train.dcgan.dcgan_ema_bn=recompute", "dcgan", "ema_bn", "recompute"),
    ("train.widths={4: 4, 8: 4}", "pggan", "widths", {4: 4, 8: 4}),
])
def test_an_old_flat_name_still_works_and_warns(old, model, key, value, caplog):
    with caplog.at_level(logging.WARNING, logger="brainsynth.config"):
        cfg = load_config("tiny", [old]).train[model]
    assert getattr(cfg, key) == value
    new = f"train.{model}.{key}"
    assert any(f"is an old name, read as {new}; write the new name" in r.getMessage() for r in caplog.records)


def test_an_old_shared_gan_key_goes_to_every_family_that_reads_it(caplog):
    with caplog.at_level(logging.WARNING, logger="brainsynth.config"):
        train = load_config("tiny", ["train.z_dim=24"]).train
    assert (train["pggan"].z_dim, train["dcgan"].z_dim) == (24, 24)
    assert "read as train.pggan.z_dim and train.dcgan.z_dim" in caplog.text


def test_an_old_training_file_still_loads(tmp_path, caplog):
    path = tmp_path / "old.yaml"
    path.write_text("preset: tiny\ntrain:\n  widths: {4: 4, 8: 4}\n  ddpm_timesteps: 50\n  ddpm:\n    ddpm_patch: 2\n")
    with caplog.at_level(logging.WARNING, logger="brainsynth.config"):
        train = load_config(path).train
    assert train["pggan"].widths == {4: 4, 8: 4}
    assert (train["ddpm"].timesteps, train["ddpm"].patch) == (50, 2)
    assert caplog.text.count("is an old name") == 3


def test_an_old_checkpoint_config_maps_to_the_new_names_and_drops_other_families_keys():
    flat = {"model": "dcgan", "resolution": 16, "z_dim": 64, "dcgan_width": 16, "dcgan_ema_bn": "recompute",
            "widths": {4: 8}, "conditioning": "acgan", "ddpm_channels": [8, 8], "ddpm_schedule": "cosine", "lr": 2e-4}
    cfg = train_config_from_dict(flat)
    assert isinstance(cfg, DCGANConfig)
    assert (cfg.width, cfg.ema_bn, cfg.z_dim, cfg.lr) == (16, "recompute", 64, 2e-4)
    assert train_config_from_dict(cfg.to_dict()) == cfg  # the new form round-trips


def test_a_resumed_run_takes_its_own_family_keys_only():
    cfg = load_config("tiny").train["ddpm"]
    assert apply_train_overrides(cfg, [("train.ddpm.grid_steps", 3, "--set grid_steps=3")]) == ["grid_steps"]
    with pytest.raises(ConfigError, match="a resumed ddpm run only takes train.KEY or train.ddpm.KEY"):
        apply_train_overrides(cfg, [("train.pggan.widths", {4: 8}, "--set train.pggan.widths={4: 8}")])


def test_every_renamed_key_lands_on_a_field_of_its_family():
    for old, (model, key) in RENAMED_TRAIN_KEYS.items():
        assert key in field_types(TRAIN_CONFIGS[model]), old


# --- values typed as people type them --------------------------------------------------------------

@pytest.mark.parametrize("typed", ["{4:8, 8:8}", "{4:8,8:8}", "{4: 8, 8: 8}", "{4 : 8, 8 : 8}"])
def test_a_mapping_typed_without_spaces_is_read_as_pairs(typed):
    cfg = load_config("tiny", [f"train.pggan.widths={typed}"]).train["pggan"]
    assert cfg.widths == {4: 8, 8: 8}


def test_a_mapping_without_spaces_in_a_file_is_read_as_pairs(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: tiny\ntrain:\n  batch_sizes: {4:16, 8:8}\n  pggan:\n    widths: {4:8, 8:4}\n")
    cfg = load_config(path).train["pggan"]
    assert (cfg.batch_sizes, cfg.widths) == ({4: 16, 8: 8}, {4: 8, 8: 4})


@pytest.mark.parametrize("typed, message", [
    # YAML 1.1 would read 1:30 as the base-60 integer 90, and {4:8} as {248: None}.
    ("train.total_images=1:30", "train.pggan.total_images must be an int or null, got '1:30'"),
    ("train.lr={4:x}", "train.pggan.lr must be a float or mapping {int: float}, got {4: 'x'}"),
])
def test_values_never_become_base_60_numbers(typed, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [typed])
    assert message in str(err.value)


def test_written_configs_use_the_new_names(tmp_path):
    from brainsynth.config import config_to_yaml

    data = yaml.safe_load(config_to_yaml(load_config("demo")))
    assert data["train"]["dcgan"]["width"] == 32 and "dcgan_width" not in data["train"]["dcgan"]
    assert data["train"]["ddpm"]["channels"] == [32, 64, 64] and "widths" not in data["train"]["ddpm"]
    assert data["train"]["pggan"]["widths"] == {4: 64, 8: 64, 16: 32, 32: 16, 64: 16}
