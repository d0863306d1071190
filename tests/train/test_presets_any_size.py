"""Every preset trains every model on a prepared dataset of any size (or refuses it in one line)."""

import json

import pytest

from brainsynth.cli import main
from brainsynth.train import checkpoint as ckpt

BATCH = {"demo": 32, "paper": 16, "tiny": 8}  # each preset's largest batch: two of them make two ticks


@pytest.fixture(scope="module")
def datasets(tmp_path_factory, make_dataset):
    root = tmp_path_factory.mktemp("sizes")
    return {16: make_dataset(root / "d16", size=16, per_subject=4), 64: make_dataset(root / "d64", size=64, per_subject=4)}


def _train(dataset, out, preset, model):
    total = 2 * BATCH[preset]
    # The model's own keys (a preset's train.MODEL value wins over a shared one). The budget is fitted
    # to the growth (half of it at the final size), so that even two steps grow to the end.
    quick = [f"total_images={total}", "schedule=fit", "final_share=0.5", f"tick_images={total // 2}",
             "grid_columns=2", "progress_bar=false", "tensorboard=false", "num_threads=1", "checkpoint_keep=1"]
    quick += ["grid_steps=2"] if model == "ddpm" else []
    # The official widths (512 channels) write 300 MB checkpoints: the same rule, capped, keeps it a unit test.
    quick += ["fmap_max=32"] if (preset, model) == ("paper", "pggan") else []
    return main(["train", str(dataset), "--out", str(out), "--config", preset, "--model", model,
                 *[a for key in quick for a in ("--set", f"train.{model}.{key}")]])


@pytest.mark.parametrize("size", [16, 64])
@pytest.mark.parametrize("model", ["pggan", "dcgan", "ddpm"])
@pytest.mark.parametrize("preset", ["tiny", "demo", "paper"])
def test_a_preset_trains_a_model_at_any_prepared_size(datasets, tmp_path, capsys, preset, model, size):
    run = tmp_path / "run"
    code = _train(datasets[size], run, preset, model)
    err = capsys.readouterr().err
    if (preset, model, size) == ("paper", "ddpm", 16):
        # Four UNet levels leave 2 px at the bottom even without a patch.
        assert code == 2 and err.count("\n") == 1
        assert ("train.ddpm.channels=[64, 128, 256, 256] has 4 levels: 16 px images after a 1x1 patch reach 2 px "
                "at the deepest level; it must be a whole number >= 4 px (use fewer levels, or images of at least "
                "32 px)") in err
        assert not run.exists()
        return
    assert code == 0, err
    progress = json.loads((run / "progress.json").read_text())
    assert (progress["images_shown"], progress["resolution"], progress["finished"]) == (2 * BATCH[preset], size, True)
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state["config"]["model"] == model and state["config"]["resolution"] == size
    assert len([json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]) == 2  # two ticks
    assert (run / "samples" / "latest.png").is_file()
