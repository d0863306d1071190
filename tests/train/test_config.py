"""Config resolution: defaults < model defaults < preset (< its model section) < --set."""

import pytest
import yaml

from brainsynth.cli import main
from brainsynth.errors import ConfigError
from brainsynth.train.config import (FIELDS, PRESETS, TrainConfig, config_from_dict, config_to_dict, config_to_yaml,
                                     resolve_config)
from brainsynth.train.loop import build_schedule, train


def test_precedence_defaults_preset_model_section_set(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("resolution: 16\nlr: 0.002\ntick_images: 64\ndcgan:\n  lr: 0.0005\n")
    pg = resolve_config("pggan", path, ["tick_images=128"])
    assert (pg.resolution, pg.lr, pg.tick_images) == (16, 0.002, 128)  # file, file, --set
    assert pg.z_dim == 512 and pg.betas == [0.0, 0.99]  # dataclass defaults
    dc = resolve_config("dcgan", path)
    assert dc.lr == 0.0005  # the file's dcgan section beats its top level
    assert dc.z_dim == 100 and dc.betas == [0.5, 0.999]  # DCGAN model defaults
    assert dc.resolution == 16


def test_set_values_are_parsed_as_yaml_and_typed():
    cfg = resolve_config("pggan", "tiny", ["lr=1e-3", "total_images=600_000", "channels_last=true",
                                           "batch_sizes={4: 16, 8: 8}", "betas=[0.0, 0.9]", "ema_halflife_images=null"])
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.total_images == 600_000
    assert cfg.channels_last is True
    assert cfg.batch_sizes == {4: 16, 8: 8}
    assert cfg.betas == [0.0, 0.9]
    assert cfg.ema_halflife_images is None


@pytest.mark.parametrize("text, message", [
    ("z_dim=big", "--set z_dim=big: z_dim must be an int, got 'big'"),
    ("channels_last=1", "channels_last must be a bool, got 1"),
    ("batch_sizes=[1, 2]", "batch_sizes must be an int or mapping {int: int}"),
    ("precision=fp16", "precision must be one of fp32, bf16, got 'fp16'"),
    ("augment=adaptve", "(did you mean 'adaptive'?)"),
    ("resolution=48", "resolution=48: must be a power of two >= 4"),
    ("batch_sizes=1", "every batch size must be >= 2"),
    ("lr", "expected KEY=VALUE"),
    ("model=dcgan", "choose the model with --model"),
])
def test_bad_set_values_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError) as err:
        resolve_config("pggan", "tiny", [text])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_suggests_the_nearest_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        resolve_config("pggan", "demo", ["total_image=10"])
    msg = str(err.value)
    assert "unknown config key 'total_image' (did you mean 'total_images'?)" in msg
    assert "valid keys: model, resolution," in msg and "nan_lr_factor" in msg


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("stable_imgs: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown config key 'stable_imgs' \(did you mean 'stable_images'\?\)"):
        resolve_config("pggan", path)


def test_unknown_preset_and_model_mismatch():
    with pytest.raises(ConfigError, match=r"--config dmeo: neither a preset .* \(did you mean 'demo'\?\)"):
        resolve_config("pggan", "dmeo")


def test_config_file_of_another_model_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(config_to_yaml(resolve_config("dcgan", "tiny")))
    with pytest.raises(ConfigError, match="is a dcgan config; pass --model dcgan"):
        resolve_config("pggan", path)
    assert resolve_config("dcgan", path) == resolve_config("dcgan", "tiny")  # the written YAML round-trips


def test_every_preset_resolves_for_both_models():
    for preset in PRESETS:
        for model in ("pggan", "dcgan"):
            cfg = resolve_config(model, preset)
            assert config_from_dict(config_to_dict(cfg)) == cfg
            assert build_schedule(cfg).total_images > 0


def test_paper_preset_matches_the_paper():
    cfg = resolve_config("pggan", "paper")
    assert (cfg.resolution, cfg.start_resolution, cfg.lr, cfg.label_flip_every) == (256, 4, 2e-4, 3)
    assert (cfg.fmap_base, cfg.fmap_max, cfg.batch_sizes) == (8192, 512, 4)
    schedule = build_schedule(cfg)
    assert schedule.total_images == 80_000  # 20,000 steps x batch 4
    assert schedule.at(79_996).res == 256 and schedule.at(0).res == 4
    dcgan = build_schedule(resolve_config("dcgan", "paper"))
    assert dcgan.total_images == 80_000 and dcgan.at(0).res == 256  # same budget, no growth


def test_every_field_has_a_comment():
    source = open(__import__("brainsynth.train.config", fromlist=["x"]).__file__).read()
    for name in FIELDS:
        line = next(l for l in source.splitlines() if l.strip().startswith(f"{name}:"))
        assert "#" in line, name


def test_dry_run_prints_the_config_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    train(tmp_path / "no-dataset-needed", out, model="pggan", config="tiny", overrides=["seed=7"], dry_run=True)
    printed = capsys.readouterr().out
    assert not out.exists() and list(tmp_path.iterdir()) == []
    data = yaml.safe_load(printed)
    assert data["seed"] == 7 and data["resolution"] == 8 and data["model"] == "pggan"
    assert "# schedule: Schedule(4->8" in printed


def test_cli_bad_set_exits_2_with_one_line(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", "tiny", "--set", "lr=fast",
                 "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == "brainsynth: error: --set lr=fast: lr must be a float or mapping {int: float}, got 'fast'"


def test_defaults_are_the_official_pggan_values():
    cfg = TrainConfig()
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.gp_lambda, cfg.drift, cfg.ema_beta) == (1e-3, [0.0, 0.99], 1e-8, 10.0,
                                                                                    0.001, 0.999)
    assert (cfg.stable_images, cfg.fade_images) == (600_000, 600_000)
    assert cfg.batch_sizes == {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}


def test_a_bare_off_stays_a_word_for_string_options():
    from brainsynth.train.config import resolve_config

    cfg = resolve_config("pggan", "tiny", ["augment=off"])
    assert cfg.augment == "off"
