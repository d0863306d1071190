"""benchmarks/privacy_trajectory.py: every kept checkpoint of a run audited and plotted."""

import json

import pytest

from brainsynth.config import load_config
from brainsynth.evaluate import features as feat
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.loop import run_training

from evaluate.privacy_data import RandomProjection, write_dataset


@pytest.fixture(scope="module")
def trajectory(load_benchmark):
    return load_benchmark("privacy_trajectory")


def test_each_kept_checkpoint_gets_a_row_and_the_figure_is_written(trajectory, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(feat, "get_extractor", lambda cfg, device=None: RandomProjection(16 * 16))
    dataset = write_dataset(tmp_path / "dataset", n_train=6, n_test=4, n_slices=6, size=16)
    cfg = load_config("tiny", ["train.dcgan.checkpoint_keep=10", "train.tensorboard=false"]).train["dcgan"]
    run = run_training(dataset, tmp_path / "run", cfg, launch=["preset 'tiny'"])
    # What the loop's snapshot hook will do (checkpoint.keep_snapshot after each save), then the
    # rolling pruning of keep=1: the snapshots at 32, 64, 128 and 192 images stay.
    points = ckpt.geometric_points(32, 2.0, 192)
    for path in ckpt.list_checkpoints(run):
        ckpt.keep_snapshot(run, path, points)
    for path in ckpt.list_checkpoints(run)[:-1]:
        path.unlink()
    out = tmp_path / "traj"
    result = trajectory.main([str(dataset), "--run", f"dcgan={run}", "--config", "tiny", "--set",
                              "generate.images_per_label=6", "--set", "audit.work_size=16", "--set",
                              "audit.bootstrap=0", "--out", str(out), "--json"])
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads((out / "trajectory.json").read_text()) == json.loads(json.dumps(result))
    rows = printed["rows"]
    assert [(r["run"], r["images_shown"]) for r in rows] == [("dcgan", n) for n in (32, 64, 128, 192)]
    for r in rows:
        assert 0.0 <= r["near_copies"] <= 1.0 and 0.0 <= r["mia_auc_half_b"] <= 1.0
        assert 0.0 < r["mia_p_value_half_b"] <= 1.0 and r["swd"] > 0 and 0.0 <= r["precision"] <= 1.0
        assert 0.0 <= r["mia_auc_half_a"] <= 1.0 and 0.0 <= r["half_a_flag_rate"] <= 1.0
    assert printed["images_per_label"] == 6 and printed["features"]["name"] == "random-projection"
    assert (out / "trajectory.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit, match="NAME=RUN_DIR"):
        trajectory.parse_runs(["dcgan"])
