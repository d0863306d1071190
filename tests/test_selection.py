"""generate.select=private-best: the choice among kept checkpoints reads held-out half A only."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from brainsynth.cli import main
from brainsynth.config import load_config
from brainsynth.data.dataset import load_dataset
from brainsynth.evaluate.feature_cache import FeatureStore
from brainsynth.evaluate.privacy.calibration import split_holdout
from brainsynth.imageset import read_image_set
from brainsynth.selection import Candidate, choose_checkpoint, decide
from brainsynth.shareable import absolute_paths
from brainsynth.train import checkpoint as ckpt
from brainsynth.train.loop import run_training

from evaluate.privacy_data import RandomProjection, write_dataset

SETTINGS = ["generate.images_per_label=8", "generate.select=private-best", "audit.work_size=16", "audit.bootstrap=0",
            "audit.permutations=300"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 16 px DCGAN run of 6 training subjects that kept all 7 of its checkpoints; 4 held-out subjects."""
    base = tmp_path_factory.mktemp("select")
    dataset = write_dataset(base / "dataset", n_train=6, n_test=4, n_slices=6, size=16)
    cfg = load_config("tiny", ["train.dcgan.checkpoint_keep=10", "train.tensorboard=false"]).train["dcgan"]
    run = run_training(dataset, base / "run", cfg, launch=["preset 'tiny'"])
    return base, dataset, run


def _choose(run, dataset):
    config = load_config("tiny", SETTINGS)
    store = FeatureStore(RandomProjection(16 * 16), None)
    return choose_checkpoint(run, config.generate, config.audit, config.evaluate, dataset=dataset, store=store)


def _poisoned(dataset: Path, out: Path, half: str) -> Path:
    """A copy of ``dataset`` whose held-out half (``"a"`` or ``"b"``) is replaced by noise."""
    shutil.copytree(dataset, out)
    view = load_dataset(out)
    test = view.indices("test")
    in_a = split_holdout(view.table["subject"].to_numpy()[test], view.table["label"].to_numpy()[test],
                         load_config("tiny", SETTINGS).audit.seed)
    rows = test[in_a if half == "a" else ~in_a]
    images = np.load(out / "images.npy")
    images[rows] = np.random.default_rng(0).integers(0, 256, images[rows].shape, dtype=np.uint8)
    np.save(out / "images.npy", images)
    return out


def test_selection_never_reads_half_b(trained, tmp_path):
    _, dataset, run = trained
    chosen = _choose(run, dataset)
    assert len(chosen.candidates) == len(ckpt.kept_checkpoints(run)) == 7  # 0, 32, ..., 192 images
    assert chosen.mode == "private-best" and chosen.private is True
    assert chosen.path.name == min((c for c in chosen.candidates if c.private), key=lambda c: c.swd).checkpoint
    # Half B replaced by noise: every number and the choice are exactly the same.
    poisoned_b = _choose(run, _poisoned(dataset, tmp_path / "poison_b", "b"))
    assert poisoned_b.record() == chosen.record()
    # The check can fail: the same noise in half A changes what the choice reads.
    poisoned_a = _choose(run, _poisoned(dataset, tmp_path / "poison_a", "a"))
    assert [c.mia_auc for c in poisoned_a.candidates] != [c.mia_auc for c in chosen.candidates]


def _candidate(name, shown, swd, near=0.0, auc=0.5, p=0.5):
    return Candidate(checkpoint=name, images_shown=shown, near_copies=near, half_a_flag_rate=0.0, mia_auc=auc,
                     mia_p_value=p, swd=swd, precision=0.5, recall=0.5)


def test_the_best_fidelity_among_private_checkpoints_wins_and_a_leaky_one_never_does():
    candidates = [_candidate("a", 1000, 40.0), _candidate("b", 2000, 30.0),
                  _candidate("c", 4000, 10.0, near=0.05),  # copies: best SWD, not private
                  _candidate("d", 8000, 20.0, auc=0.7, p=0.02)]  # reveals membership
    index, private, reason = decide(candidates)
    assert (index, private) == (1, True) and "2 of 4" in reason
    index, private, reason = decide(candidates[2:])
    assert private is False and index == 1 and "NOT private" in reason and "1 break the near-copy rule" in reason
    assert not _candidate("e", 1, 1.0, near=0.011).private and _candidate("f", 1, 1.0, near=0.01).private


def test_generate_samples_the_chosen_checkpoint_and_records_the_choice(trained, tmp_path, capsys):
    _, dataset, run = trained
    out = tmp_path / "syn"
    sets = [a for s in SETTINGS[:1] + SETTINGS[2:] for a in ("--set", s)]
    assert main(["generate", str(run), "--out", str(out), "--select", "private-best", "--dataset", str(dataset),
                 "--set", "evaluate.input_size=32", *sets]) == 0
    meta = read_image_set(out).meta
    selection = meta["generator"]["selection"]
    assert meta["generator"]["checkpoint"] == selection["chosen"] and selection["mode"] == "private-best"
    assert len(selection["candidates"]) == 7 and "half A" in selection["rules"]
    assert f"checkpoint {selection['chosen']}" in capsys.readouterr().out
    text = json.dumps(meta)
    assert not absolute_paths(meta) and "sub-0" not in text  # no path, no subject id leaves with the set
