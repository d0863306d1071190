"""The report writer: files, paper numbers, banner, self-contained HTML, target verdicts."""

import json
import re

import numpy as np
import pytest

from brainsynth.evaluate import report as rep
from brainsynth.evaluate.report import PAPER_TABLE1, check_targets, format_table1, write_report
from brainsynth.imageset import ImageSet


def classifier_entry(sen, spe, hm, subject_hm=None):
    ci = {"sensitivity": [sen - 0.05, sen + 0.05], "specificity": [spe - 0.05, spe + 0.05], "hm": [hm - 0.04, hm + 0.04]}
    level = {"sensitivity": sen, "specificity": spe, "hm": hm, "ci": ci, "n": 120, "n_groups": 4}
    subject = {"sensitivity": 1.0, "specificity": 0.5, "hm": subject_hm if subject_hm is not None else 0.667,
               "ci": None, "n": 4, "n_groups": 4}
    return {**{k: level[k] for k in ("sensitivity", "specificity", "hm", "ci")}, "slice": level, "subject": subject}


def privacy_entry(rate, flagged=()):
    return {"memorization_rate": rate, "mia_auc": 0.52, "mia_auc_subject": None, "percentile": 1.0,
            "threshold": {"pixel": 0.031, "feature": 0.08}, "authenticity": 0.55,
            "authenticity_by_space": {"pixel": {"synthetic": 0.55, "holdout": 0.6}},
            "flagged": [{"file": f, "train_id": "sub-01:40", "distance": 0.01} for f in flagged],
            "n_synthetic": 200, "n_train": 80, "n_holdout": 40}


def make_report(real_hm=0.86, pggan_hm=0.75, dcgan_hm=0.6, rates=(0.005, 0.0), simulated=True):
    return {
        "brainsynth_version": "0.1.0",
        "created": "2025-01-01T00:00:00+00:00",
        "simulated": simulated,
        "features": {"name": "vgg16-random", "layer": "fc7", "input_size": 224,
                     "channel_mapping": "gray->rgb replicate, ImageNet mean/std", "resize": "bilinear",
                     "weights": "random(seed=0)", "precision": "fp32"},
        "data": {"path": "dataset", "n_subjects": 12, "nested": {"ignored": 1}},
        "gan_train": {"real": classifier_entry(0.9, 0.82, real_hm), "dcgan": classifier_entry(0.6, 0.6, dcgan_hm),
                      "pggan": classifier_entry(0.8, 0.7, pggan_hm)},
        "gan_test": {"pggan": classifier_entry(0.95, 0.9, 0.925)},
        "fidelity": {"pggan": {"fid": 41.234, "kid_mean": 0.0123, "kid_std": 0.002, "swd": {"16": 10.0, "avg": 12.5},
                               "ms_ssim": {"scales": 3, "synthetic": {"control": 0.31, "adhd": 0.33},
                                           "real": {"control": 0.29}},
                               "precision": 0.7, "recall": 0.5, "density": 0.9, "coverage": float("nan")}},
        "privacy": {"pggan": privacy_entry(rates[0], ["adhd/000003.png"]), "dcgan": privacy_entry(rates[1])},
        "timings": {"features": 12.3},
    }


def tiny_set(rng, n=6, size=12, synthetic=False):
    labels = np.array(["control", "adhd"] * (n // 2))
    return ImageSet(images=rng.random((n, size, size), dtype=np.float32), labels=labels,
                    records=[{"label": lbl} for lbl in labels], meta={"synthetic": synthetic})


def test_write_report_writes_three_self_contained_files(tmp_path):
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    run.mkdir()
    ticks = [{"images_shown": 1000 * i, "res": 4 * 2 ** (i // 3), "alpha": 1.0, "loss_d": -1.0 / (i + 1),
              "loss_g": 0.5 + 0.1 * i, "img_per_s": 50.0} for i in range(6)]
    (run / "stats.jsonl").write_text("\n".join(json.dumps(t) for t in ticks) + "\n{\"images_shown\": 7000, \"lo")
    pairs = [{"synthetic_image": rng.random((12, 12), dtype=np.float32),
              "train_image": rng.random((12, 12), dtype=np.float32), "distance": 0.01 * i,
              "synthetic_file": f"adhd/{i:06d}.png", "train_id": f"sub-0{i}:45", "flagged": i == 0} for i in range(3)]
    report = make_report()
    report["gan_train"]["<script>"] = classifier_entry(0.5, 0.5, 0.5)  # must be escaped in HTML
    write_report(tmp_path / "out", report, real_train=tiny_set(rng), synthetic={"pggan": tiny_set(rng, synthetic=True)},
                 nearest_pairs={"pggan": pairs}, runs={"pggan": run})
    out = tmp_path / "out"

    saved = json.loads((out / "report.json").read_text())  # strict JSON: NaN became null
    assert saved["fidelity"]["pggan"]["coverage"] is None
    assert saved["gan_train"]["pggan"]["hm"] == 0.75

    md = (out / "report.md").read_text()
    assert "SIMULATED cohort" in md
    for row in PAPER_TABLE1.values():
        for value in row.values():
            assert f"{value:.3f}" in md
    assert "0.750 [0.710, 0.790]" in md  # ours, slice level with CI
    assert "features: vgg16-random (weights random(seed=0)), layer fc7, input 224 px" in md
    assert md.count("features: vgg16-random") >= 4  # beside every feature-based table
    assert "41.23" in md and "n/a" in md  # FID and the NaN coverage

    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count("data:image/png;base64,") == 3  # samples, nearest pairs, training curves
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'class="banner"' in page
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["pairs_pggan.png", "samples_pggan.png",
                                                                   "training_pggan.png"]


def test_report_without_runs_pairs_or_optional_sections(tmp_path):
    rng = np.random.default_rng(1)
    report = {"simulated": False, "gan_train": {"real": classifier_entry(0.9, 0.9, 0.9)}}
    write_report(tmp_path, report, real_train=tiny_set(rng), synthetic={}, nearest_pairs={}, runs={})
    md = (tmp_path / "report.md").read_text()
    assert "SIMULATED" not in md and "not checked" in md and "features: n/a" in md
    assert "data:image/png" not in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize(
    "real, pggan, dcgan, rates, expected",
    [
        (0.86, 0.75, 0.60, (0.005, 0.0), {"ordering": True, "pggan_vs_real": True, "memorization": True}),
        (0.86, 0.70, 0.60, (0.005, 0.0), {"ordering": True, "pggan_vs_real": False, "memorization": True}),
        (0.70, 0.75, 0.60, (0.005, 0.0), {"ordering": False, "pggan_vs_real": True, "memorization": True}),
        (0.86, 0.60, 0.60, (0.02, 0.0), {"ordering": False, "pggan_vs_real": False, "memorization": False}),
        # The verdict is on PGGAN (the method); a memorising baseline is listed but does not fail it.
        (0.86, 0.75, 0.60, (0.0, 0.05), {"ordering": True, "pggan_vs_real": True, "memorization": True}),
    ],
)
def test_check_targets_verdicts(real, pggan, dcgan, rates, expected):
    verdicts = check_targets(make_report(real, pggan, dcgan, rates))
    assert {k: v["ok"] for k, v in verdicts.items()} == expected
    for name, ok in expected.items():
        assert ("MISSED" in verdicts[name]["text"]) == (not ok)


def test_check_targets_says_not_checked_when_numbers_are_missing():
    verdicts = check_targets({"gan_train": {"pggan": classifier_entry(0.8, 0.7, 0.75)}})
    assert all(v["ok"] is None and "not checked" in v["text"] for v in verdicts.values())


def test_format_table1_puts_the_paper_beside_ours_and_names_missed_targets():
    text = format_table1(make_report(0.86, 0.70, 0.60))
    lines = text.splitlines()
    pggan_row = next(line for line in lines if line.startswith("PGGAN"))
    assert "0.700 [0.660, 0.740]" in pggan_row and "0.736" in pggan_row
    assert [line.split()[0] for line in lines[3:6]] == ["PGGAN", "DCGAN", "Real"]  # the paper's row order
    assert "Targets missed: 1 of 3." in text and "PGGAN HM >= 0.85 x real HM: MISSED (0.700 vs 0.731)" in text


def test_montage_tiles_images_with_gaps():
    tiles = rep.montage(np.zeros((5, 3, 4), np.float32), cols=2)
    assert tiles.shape == (3 * 3 + 2, 2 * 4 + 1)
    assert tiles[3, 0] == 1.0 and tiles[0, 4] == 1.0 and tiles[0, 0] == 0.0
