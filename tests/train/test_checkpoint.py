"""Checkpoints: whole state round-trips, old ones are pruned, foreign or tampered files are refused unexecuted."""

import os
import pickle
import random

import numpy as np
import pytest
import torch

from brainsynth import __version__
from brainsynth.errors import CheckpointError
from brainsynth.train import checkpoint as ckpt


def _state(images_shown: int, gen: torch.Generator | None = None) -> dict:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    return {
        "config": {"model": "pggan", "resolution": 8}, "data": {"n_images": 5}, "G": net.state_dict(),
        "D": net.state_dict(), "G_ema": net.state_dict(), "opt_G": opt.state_dict(), "opt_D": opt.state_dict(),
        "augment": {"p": 0.25, "rng": torch.Generator().manual_seed(1).get_state()},
        "progress": {"images_shown": images_shown, "step": images_shown // 8, "phase_index": 1, "resolution": 8,
                     "alpha": 0.5, "last_tick_images": images_shown, "tick": 3, "lr_scale": 1.0, "rollbacks": 0},
        "rng": ckpt.capture_rng({"data": gen or torch.Generator().manual_seed(0)}),
    }


def test_round_trip_restores_every_rng_exactly(tmp_path):
    torch.manual_seed(3), np.random.seed(4), random.seed(5)
    gen = torch.Generator().manual_seed(6)
    np.random.standard_normal()  # leave numpy with a cached gaussian, the awkward part of its state
    state = _state(64, gen)
    path = ckpt.save_checkpoint(tmp_path, state, keep=3)
    assert path == tmp_path / "checkpoints" / "ckpt-000000064.pt"
    expected = (torch.rand(4), np.random.standard_normal(3), random.random(), torch.rand(2, generator=gen))

    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    gen2 = torch.Generator().manual_seed(99)
    loaded = ckpt.load_checkpoint(path)
    ckpt.restore_rng(loaded["rng"], {"data": gen2})
    got = (torch.rand(4), np.random.standard_normal(3), random.random(), torch.rand(2, generator=gen2))
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])
    assert got[2] == expected[2] and torch.equal(got[3], expected[3])
    assert loaded["version"] == __version__ and loaded["progress"]["alpha"] == 0.5
    assert torch.equal(loaded["G"]["weight"], state["G"]["weight"])
    assert loaded["opt_G"]["state"][0]["exp_avg"].shape == (2, 3)


def test_keeps_only_the_newest_k_and_latest_is_by_images(tmp_path):
    for n in (8, 96, 1000, 16):  # written out of order on purpose: names sort by images shown
        ckpt.save_checkpoint(tmp_path, _state(n), keep=2)
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    assert names == ["ckpt-000000096.pt", "ckpt-000001000.pt"]
    assert ckpt.latest_checkpoint(tmp_path).name == "ckpt-000001000.pt"
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]  # no temp files left


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint found"):
        ckpt.latest_checkpoint(tmp_path)


class _Evil:
    """Unpickling this would create the marker file (as an attack would run a command)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _write_torch_evil(path, marker):
    state = _state(8)
    state["G"] = _Evil(marker)
    torch.save(state, path)


def _write_plain_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"format": ckpt.FORMAT, "G": _Evil(marker)}, f)


def _write_truncated(path, marker):
    torch.save(_state(8), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _write_random(path, marker):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _write_foreign(path, marker):
    torch.save({"model": torch.zeros(3)}, path)


def _write_missing_key(path, marker):
    state = {"format": ckpt.FORMAT, "version": __version__, **_state(8)}
    del state["opt_D"]
    torch.save(state, path)


@pytest.mark.parametrize("writer, message", [
    (_write_torch_evil, "refused without loading it"),
    (_write_plain_pickle, "refused without loading it"),
    (_write_truncated, "refused without loading it"),
    (_write_random, "refused without loading it"),
    (_write_foreign, "not a brainsynth checkpoint"),
    (_write_missing_key, "incomplete checkpoint, missing opt_D"),
])
def test_tampered_or_foreign_files_are_refused_without_running_code(tmp_path, writer, message):
    path = tmp_path / "ckpt-000000008.pt"
    marker = tmp_path / "pwned"
    writer(path, marker)
    with pytest.raises(CheckpointError) as err:
        ckpt.load_checkpoint(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_the_evil_object_really_runs_code_when_unpickled_unsafely(tmp_path):
    # Guards the test above against passing vacuously.
    path, marker = tmp_path / "evil.pkl", tmp_path / "pwned"
    _write_plain_pickle(path, marker)
    with open(path, "rb") as f:
        pickle.load(f)
    assert marker.exists()


# --- snapshots at a geometric series of images shown --------------------------------------------

def test_geometric_points_double_up_to_the_total():
    assert ckpt.geometric_points(1000, 2.0, 24000) == [1000, 2000, 4000, 8000, 16000, 24000]
    assert ckpt.geometric_points(10, 1.5, 40) == [10, 15, 22, 34, 40]
    assert ckpt.geometric_points(5000, 2.0, 5000) == [5000]
    with pytest.raises(ValueError):
        ckpt.geometric_points(1000, 1.0, 5000)


def test_the_first_checkpoint_at_or_after_each_point_is_kept_beside_the_rolling_ones(tmp_path):
    points = ckpt.geometric_points(64, 2.0, 640)  # [64, 128, 256, 512, 640]
    kept = []
    for images in range(48, 641, 48):  # a checkpoint every 48 images, the last 2 kept
        path = ckpt.save_checkpoint(tmp_path, _state(images), keep=2)
        snapshot = ckpt.keep_snapshot(tmp_path, path, points)
        if snapshot is not None:
            kept.append(images)
    # 96 is the first at/after 64, 144 after 128, 288 after 256, 528 after 512, 672 > 640: none for 640
    assert kept == [96, 144, 288, 528]
    assert [ckpt.images_of(p) for p in ckpt.list_snapshots(tmp_path)] == kept
    assert [ckpt.images_of(p) for p in ckpt.list_checkpoints(tmp_path)] == [576, 624]  # pruned, snapshots not
    assert [ckpt.images_of(p) for p in ckpt.kept_checkpoints(tmp_path)] == [96, 144, 288, 528, 576, 624]
    snap = tmp_path / "snapshots" / "ckpt-000000288.pt"
    assert ckpt.load_checkpoint(snap)["progress"]["images_shown"] == 288
    assert not list((tmp_path / "snapshots").glob(".*"))  # no temporary file left behind


def test_snapshots_are_decided_from_the_folder_so_a_resumed_run_keeps_the_same_ones(tmp_path):
    points = [100, 200, 400]
    first = ckpt.save_checkpoint(tmp_path, _state(120), keep=1)
    assert ckpt.keep_snapshot(tmp_path, first, points) is not None
    # The run crashes and resumes: the snapshot folder alone says 100 is covered, 200 is not.
    assert not ckpt.snapshot_due(tmp_path, 150, points)
    assert ckpt.snapshot_due(tmp_path, 250, points)
    two_points = ckpt.save_checkpoint(tmp_path, _state(420), keep=1)  # covers 200 and 400 at once
    assert ckpt.keep_snapshot(tmp_path, two_points, points) is not None
    assert not ckpt.snapshot_due(tmp_path, 10_000, points)
    with pytest.raises(CheckpointError, match="not a checkpoint file name"):
        ckpt.images_of(tmp_path / "model.pt")
