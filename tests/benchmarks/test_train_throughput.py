"""benchmarks/train_throughput.py: one tiny training step (PGGAN, DCGAN fading) and G_ema sampling."""

import json

import pytest


@pytest.fixture
def train_throughput(load_benchmark, monkeypatch):
    module = load_benchmark("train_throughput")
    # The peak's 256-channel convolution costs seconds; a small one keeps the test about the script.
    monkeypatch.setattr(module, "PEAK_SHAPE", dict(batch=1, channels=32, size=8))
    return module


def run(module, capsys, args: list[str]) -> dict:
    returned = module.main(args + ["--threads", "1", "--repeats", "1", "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(json.dumps(returned))
    return printed


def test_a_pggan_step_counts_its_flops_and_a_dcgan_step_fades(train_throughput, capsys):
    pg = run(train_throughput, capsys, ["--resolution", "16", "--widths", "8,8,8,4", "--batch", "4", "--steps", "2",
                                        "--warmup", "1", "--precision", "fp32"])
    assert (pg["model"], pg["resolution"], pg["widths"], pg["batch"]) == ("pggan", 16, "8,8,8,4", 4)
    assert (pg["precision"], pg["fading"], pg["conditional"]) == ("fp32", False, True)
    assert len(pg["img_per_s_all"]) == 1 and pg["img_per_s"] == pg["img_per_s_all"][0] > 0
    assert pg["gflop_per_step"] > 0 and pg["gflop_per_step"] == pytest.approx(4 * pg["gflop_per_img"], abs=2e-3)
    assert pg["peak_gflops"] > 0 and pg["pct_of_peak"] > 0
    assert len(pg["others_cpu_share"]) == 1  # one per timed repeat
    dc = run(train_throughput, capsys, ["--model", "dcgan", "--dcgan-width", "8", "--resolution", "16", "--batch", "4",
                                        "--steps", "1", "--warmup", "1", "--fading", "--no-channels-last"])
    assert (dc["model"], dc["widths"], dc["fading"], dc["channels_last"]) == ("dcgan", None, True, False)
    assert dc["img_per_s"] > 0 and dc["precision"] == "bf16"
    assert len(dc["others_cpu_share"]) == 1  # this call's repeat only, not the PGGAN call's too


def test_sampling_speed_per_batch_size(train_throughput, capsys):
    gen = run(train_throughput, capsys, ["--generate", "--resolution", "16", "--gen-widths", "8,8,8,8",
                                         "--gen-z-dim", "8", "--gen-batch", "2,4", "--gen-images", "8"])
    assert (gen["mode"], gen["resolution"], gen["widths"], gen["z_dim"]) == ("generate", 16, [8, 8, 8], 8)
    assert set(gen["img_per_s_by_batch"]) == {"2", "4"} and all(v > 0 for v in gen["img_per_s_by_batch"].values())
    assert gen["img_per_s"] == max(gen["img_per_s_by_batch"].values())
    assert gen["img_per_s_by_batch"][str(gen["best_batch"])] == gen["img_per_s"]
    assert all(len(v) == 1 for v in gen["img_per_s_all"].values())
    assert len(gen["others_cpu_share"]) == 2  # one per batch size and repeat
    with pytest.raises(SystemExit, match="--widths lists 2 values; resolution 16 needs 3"):
        train_throughput.main(["--generate", "--resolution", "16", "--gen-widths", "8,8"])
