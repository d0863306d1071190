"""benchmarks/gpu_check.py at tiny scale on the CPU, so that the GPU check cannot rot."""

import json

import pytest

from brainsynth.errors import OutputExistsError


@pytest.fixture(scope="module")
def gpu_check(load_benchmark):
    return load_benchmark("gpu_check")


def test_tiny_run_on_the_cpu_writes_every_figure(gpu_check, tmp_path, capsys, tiny_dataset):
    dataset = tiny_dataset
    out = tmp_path / "check"
    assert gpu_check.main(["--tiny", "--out", str(out), "--dataset", str(dataset), "--device", "cpu"]) == 0
    result = json.loads((out / "gpu_check.json").read_text())
    assert json.loads(capsys.readouterr().out) == result
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "report.md", "samples.png", "samples_ddpm.png",
                                                     "train_stats.jsonl"]
    train = result["train"]
    assert train["images"] == 256 and train["tick_images"] == 16  # 4 growth phases of 32 images, 2 ticks each
    assert sorted(train["img_per_s_by_resolution"], key=int) == ["4", "8", "16"]
    assert [v["images"] for v in train["img_per_s_by_resolution"].values()] == [32, 64, 160]
    assert all(v["steady_img_per_s"] > 0 for v in train["img_per_s_by_resolution"].values())
    assert result["generate"]["images"] == 24 and result["generate"]["img_per_s_sampling"] > 0
    assert result["evaluate"]["input_size"] == 32 and result["evaluate"]["features_img_per_s"] > 0
    assert result["evaluate"]["device"] == "cpu" and result["evaluate"]["privacy_s"] > 0
    assert result["peak_gpu_memory_gib"] is None and set(result["stages"]) == {
        "train", "generate", "sample", "train_ddpm", "generate_ddpm", "sample_ddpm", "evaluate"}
    ddpm = result["ddpm"]  # 64 images in 4 ticks, the tiny preset's 10 DDIM steps
    assert ddpm["images"] == 64 and ddpm["generate"] == {"images": 24, "steps": 10,
                                                         "img_per_s_stage": ddpm["generate"]["img_per_s_stage"]}
    assert set(ddpm["img_per_s_sampling_by_steps"]) == {"25", "50"}
    assert ddpm["projection"]["total_images"] == 192 and ddpm["projection"]["total_s"] > 0
    projection = result["projection"]  # the tiny preset's own full budget: 16 px, stable/fade 64 images
    assert projection["images_by_resolution"] == {"4": 64, "8": 128, "16": 128}
    assert projection["total_s"] > 0
    with pytest.raises(OutputExistsError, match="pass --force to replace it"):
        gpu_check.main(["--tiny", "--out", str(out), "--dataset", str(dataset), "--device", "cpu"])


def test_paper_settings_and_the_80k_projection(gpu_check):
    config = gpu_check.with_aligned_ticks(gpu_check.check_config("paper", 9600, 500, 100, 6, []), 256)
    cfg = config.train["pggan"]
    assert (cfg.precision, cfg.channels_last, cfg.schedule, cfg.total_images) == ("bf16", True, "fit", 9600)
    assert cfg.tick_images == 200  # 4,800 growth images / 12 phases / 2 ticks
    assert (config.prepare.size, config.evaluate.input_size, config.cohort.subjects) == (256, 224, 6)
    assert config.run.models == ["pggan"]
    with_ddpm = gpu_check.check_config("paper", 9600, 500, 100, 6, [], ddpm_images=4800)
    d = with_ddpm.train["ddpm"]
    assert (d.precision, d.total_images, d.tick_images, d.resolution) == ("bf16", 4800, 1200, None)
    assert with_ddpm.generate.precision == "bf16" and with_ddpm.run.models == ["pggan", "ddpm"]
    rates = {r: {"steady_img_per_s": 100.0} for r in (4, 8, 16, 32, 64, 128, 256)}
    projection = gpu_check.project("paper", 256, rates, {"with_checkpoint_s": 2.0, "without_checkpoint_s": 1.0})
    # The paper's 80,000 images: 3,333 per growth phase, the rest (43,337 with its fade) at 256 px.
    assert projection["images_by_resolution"] == {"4": 3333, "8": 6666, "16": 6666, "32": 6666, "64": 6666,
                                                  "128": 6666, "256": 43337}
    assert projection["ticks"] == 20  # tick_images 4,000, a checkpoint at every tick
    assert projection["total_s"] == pytest.approx(800 + 20 * 2.0, abs=0.1)  # steps at 100 img/s, 20 checkpoints
    preset = gpu_check.load_config("paper")
    assert preset.train["pggan"].tick_images == 4000 and preset.train["pggan"].checkpoint_every_ticks == 1
