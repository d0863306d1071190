"""One configuration for a run: sections, presets, files, --set, flags, and one-line errors."""

import dataclasses
import inspect

import pytest
import yaml

from brainsynth.cli import main
from brainsynth.config import (MODELS, PRESETS, SECTIONS, TRAIN_CONFIGS, CohortConfig, PGGANConfig, PrepareConfig, config_to_yaml,
                               load_config, section_from, sections_yaml, train_config_from_dict)
from brainsynth.errors import ConfigError
from brainsynth.options import as_dict
from brainsynth.train.loop import build_schedule, train


def test_precedence_defaults_file_model_section_set(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  resolution: 32\n  lr: 0.002\n  tick_images: 64\n  dcgan:\n    lr: 0.0005\n")
    pg = load_config(path, ["train.tick_images=128"]).train["pggan"]
    assert (pg.resolution, pg.lr, pg.tick_images) == (32, 0.002, 128)  # file, file, --set
    assert pg.z_dim == 512 and pg.betas == [0.0, 0.99]  # dataclass defaults
    dc = load_config(path).train["dcgan"]
    assert dc.lr == 0.0005  # the file's dcgan section beats its shared train keys
    assert dc.z_dim == 100 and dc.betas == [0.5, 0.999]  # DCGAN model defaults
    assert dc.resolution == 32
    # A shared --set edits the shared value: the model's own value still wins where it is written.
    both = load_config(path, ["train.lr=0.003"]).train
    assert (both["pggan"].lr, both["dcgan"].lr) == (0.003, 0.0005)
    assert load_config(path, ["train.dcgan.lr=0.004"]).train["dcgan"].lr == 0.004


def test_a_file_may_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("preset: demo\nprepare:\n  size: 32\ntrain:\n  pggan:\n    lr: 0.0005\n")
    cfg = load_config(path)
    demo = load_config("demo")
    assert cfg.prepare.size == 32 and cfg.train["pggan"].lr == 0.0005
    assert cfg.train["pggan"].widths == demo.train["pggan"].widths  # everything else is the demo's
    assert cfg.evaluate == demo.evaluate and cfg.train["dcgan"] == demo.train["dcgan"]


def test_set_values_are_parsed_as_yaml_and_typed():
    cfg = load_config("tiny", ["train.lr=1e-3", "train.total_images=600_000", "train.channels_last=true",
                               "train.batch_sizes={4: 16, 8: 8}", "train.betas=[0.0, 0.9]",
                               "train.ema_halflife_images=null", "prepare.slices=[10, 20]"]).train["pggan"]
    assert cfg.lr == 0.001 and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.total_images == 600_000
    assert cfg.channels_last is True
    assert cfg.batch_sizes == {4: 16, 8: 8}
    assert cfg.betas == [0.0, 0.9]
    assert cfg.ema_halflife_images is None


@pytest.mark.parametrize("text, message", [
    ("train.z_dim=big", "--set train.z_dim=big: train.pggan.z_dim must be an int, got 'big'"),
    ("train.channels_last=1", "train.pggan.channels_last must be a bool, got 1"),
    ("train.batch_sizes=[1, 2]", "batch_sizes must be an int or mapping {int: int}"),
    ("train.precision=fp16", "precision must be one of fp32, bf16, got 'fp16'"),
    ("train.augment=adaptve", "(did you mean 'adaptive'?)"),
    ("train.resolution=48", "--set train.resolution=48: train.pggan.resolution=48 must be a power of two >= 4"),
    ("train.batch_sizes=1", "every batch size must be >= 2"),
    ("prepare.size=0", "--set prepare.size=0: prepare.size=0 must be >= 1"),
    ("prepare.slices=[120, 30]", "prepare.slices=[120, 30] must be two slice numbers A <= B"),
    ("evaluate.feature_layer=fc8", "evaluate.feature_layer must be one of fc7, pool5, got 'fc8'"),
    ("cohort.subjects=100", "cohort.subjects=100 must be between 1 and 99"),
    ("audit.percentile=80", "audit.percentile=80.0 must be above 0 and at most 50"),
    ("run.models=[pggan, gan]", "run.models=['pggan', 'gan'] must list distinct models out of pggan, dcgan"),
    ("lr", "expected KEY=VALUE"),
    ("train.model=dcgan", "the model is not a config key; choose it with --model"),
    ("trian.lr=1", "unknown section 'trian' (did you mean 'train'?)"),
    ("train.pggan.lr.x=1", "expected train.KEY or train.MODEL.KEY (MODEL one of pggan, dcgan, ddpm), got "
                           "train.pggan.lr.x"),
])
def test_bad_values_are_one_line_config_errors(text, message):
    with pytest.raises(ConfigError) as err:
        load_config("tiny", [text])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_key_suggests_the_nearest_and_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        load_config("demo", ["train.total_image=10"])
    msg = str(err.value)
    assert "unknown key train.total_image (did you mean 'total_images'?)" in msg
    assert "shared keys of train: resolution, total_images," in msg and "nan_lr_factor" in msg
    assert "each model's own keys go under train.MODEL" in msg


def test_a_bare_set_key_belongs_to_the_command_section():
    assert load_config("demo", ["size=32"], default_section="prepare").prepare.size == 32
    assert load_config("demo", ["lr=0.01"], default_section="train.dcgan").train["dcgan"].lr == 0.01
    with pytest.raises(ConfigError, match="name the section, e.g. --set train.size=..."):
        load_config("demo", ["size=32"])


def test_unknown_key_or_section_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  stable_imgs: 10\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown key train.stable_imgs \(did you mean 'stable_images'\?\)"):
        load_config(path)
    path.write_text("resolution: 16\nlr: 0.001\n")  # a brainsynth 0.1 training file
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown section 'resolution'.*put its keys under a 'train:'"):
        load_config(path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)
    path.write_text("preset: dmeo\n")
    with pytest.raises(ConfigError, match=r"preset: 'dmeo' is not a preset \(did you mean 'demo'\?\)"):
        load_config(path)


def test_unknown_preset():
    with pytest.raises(ConfigError, match=r"--config dmeo: neither a preset .* \(did you mean 'demo'\?\)"):
        load_config("dmeo")


def test_every_preset_resolves_and_round_trips_through_yaml(tmp_path):
    for preset in PRESETS:
        cfg = load_config(preset)
        path = tmp_path / f"{preset}.yaml"
        path.write_text(config_to_yaml(cfg))
        again = load_config(path)
        for name in SECTIONS:
            assert getattr(again, name) == getattr(cfg, name), (preset, name)
        for model in MODELS:
            c = dataclasses.replace(cfg.train[model], resolution=cfg.prepare.size)
            assert train_config_from_dict(c.to_dict()) == c
            assert build_schedule(c).total_images > 0


def test_a_written_section_loads_again(tmp_path):
    pg = load_config("tiny", ["train.resolution=16"]).train["pggan"]
    path = tmp_path / "config.yaml"
    path.write_text(sections_yaml(pg, load_config("tiny").prepare, what="test"))
    again = load_config(path)
    assert again.train["pggan"] == pg and again.prepare == load_config("tiny").prepare


def test_image_size_lives_in_prepare_only():
    # One place for the fact: training takes the dataset's size unless told otherwise.
    for preset in PRESETS:
        cfg = load_config(preset)
        assert all(cfg.train[m].resolution is None for m in MODELS)
    assert load_config("demo").prepare.size == 64 and load_config("paper").prepare.size == 256


def test_paper_preset_matches_the_paper():
    cfg = load_config("paper")
    pg = dataclasses.replace(cfg.train["pggan"], resolution=cfg.prepare.size)
    assert (pg.resolution, pg.start_resolution, pg.lr, pg.label_flip_every) == (256, 4, 2e-4, 3)
    assert (pg.fmap_base, pg.fmap_max, pg.batch_sizes, pg.conditioning) == (8192, 512, 4, "acgan")
    schedule = build_schedule(pg)
    assert schedule.total_images == 80_000  # 20,000 steps x batch 4
    assert schedule.at(79_996).res == 256 and schedule.at(0).res == 4
    dc = dataclasses.replace(cfg.train["dcgan"], resolution=256)
    dcgan = build_schedule(dc)
    assert dcgan.total_images == 80_000 and dcgan.at(0).res == 256  # same budget, no growth
    assert (cfg.prepare.slices, cfg.prepare.patch, cfg.evaluate.input_size) == ([30, 120], 256, 224)


def test_every_field_has_a_comment():
    for cls in [*SECTIONS.values(), *TRAIN_CONFIGS.values()]:
        source = inspect.getsource(cls).splitlines()
        own = [f for f in dataclasses.fields(cls) if f.name in cls.__annotations__]
        for f in own:
            line = next(line for line in source if line.strip().startswith(f"{f.name}:"))
            assert "  # " in line, (cls.__name__, f.name)


def test_dry_run_prints_the_config_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = load_config("tiny", ["train.seed=7"]).train["pggan"]
    train(tmp_path / "no-dataset-needed", out, cfg, dry_run=True)
    printed = capsys.readouterr().out
    assert not out.exists() and list(tmp_path.iterdir()) == []
    data = yaml.safe_load(printed)["train"]["pggan"]
    assert data["seed"] == 7 and data["resolution"] is None
    assert "# schedule: set by the dataset's image size" in printed


def test_cli_bad_set_exits_2_with_one_line(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--out", str(tmp_path / "run"), "--config", "tiny", "--set", "lr=fast",
                 "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == "brainsynth: error: --set lr=fast: train.pggan.lr must be a float or mapping {int: float}, got 'fast'"


def test_cli_flags_are_shortcuts_for_keys_and_name_themselves_in_errors(tmp_path, capsys):
    code = main(["prepare", str(tmp_path), "--out", str(tmp_path / "out"), "--slices", "120:30"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["brainsynth: error: --slices 120:30: prepare.slices=[120, 30] must be two slice "
                                 "numbers A <= B, both >= 0 (fix it with --set prepare.slices=...)"]


def test_defaults_are_the_official_pggan_values():
    cfg = PGGANConfig()
    assert (cfg.lr, cfg.betas, cfg.eps, cfg.gp_lambda, cfg.drift, cfg.ema_beta) == (1e-3, [0.0, 0.99], 1e-8, 10.0,
                                                                                    0.001, 0.999)
    assert (cfg.stable_images, cfg.fade_images) == (600_000, 600_000)
    assert cfg.batch_sizes == {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8}


def test_a_bare_off_stays_a_word_for_string_options():
    assert load_config("tiny", ["train.augment=off"]).train["pggan"].augment == "off"


def test_sections_from_keywords_are_checked():
    assert section_from(PrepareConfig, {"size": 32, "slices": (2, 20)}).slices == [2, 20]
    with pytest.raises(ConfigError, match="argument size: prepare.size=0 must be >= 1"):
        section_from(PrepareConfig, {"size": 0})
    with pytest.raises(ConfigError, match="cohort.contrast must be one of neonatal, adult"):
        section_from(CohortConfig, {"contrast": "infant"})


def test_cohort_contrast_choices_match_the_phantom():
    from brainsynth.data.phantom import CONTRASTS
    from brainsynth.options import field_choices

    assert set(field_choices(CohortConfig, "contrast")) == set(CONTRASTS)


def test_help_lists_the_sections_and_how_to_override(capsys):
    for command in ("run", "train"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for section in SECTIONS:
            assert f"  {section}:" in text
        assert "--set SECTION.KEY=VALUE" in text
