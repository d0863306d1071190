"""The files: report.json/.md/.html from a typed Report (privacy.md: test_privacy_writers.py)."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import pandas as pd
from sample_reports import FOLD_NOTE, full_report

from brainsynth.evaluate.folds import fold_figures
from brainsynth.evaluate.report.privacy_utility import privacy_utility
from brainsynth.evaluate.protocol import PREDICTION_COLUMNS
from brainsynth.evaluate.report.schema import SCHEMA_VERSION, Report, read_report
from brainsynth.evaluate.report.tables import PAPER_TABLE1
from brainsynth.evaluate.report.writers import render_markdown, write_report
from brainsynth.imageset import ImageSet

PREDICTIONS = pd.DataFrame([("real", 0, 1, "s1", 40, 0, "adhd", 0.25)], columns=list(PREDICTION_COLUMNS))


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
    transform = {"mirrored": False, "rotation_deg": 2.0, "scale": 1.0, "shift_px": [1.0, 0.0], "brightness": [0, 1, 0]}
    pairs = [{"synthetic_image": rng.random((12, 12), dtype=np.float32),
              "train_image": rng.random((12, 12), dtype=np.float32),
              "aligned_image": rng.random((12, 12), dtype=np.float32), "distance": 0.01 * i, "ratio": 0.1 * i,
              "threshold": 0.6, "transform": transform, "synthetic_file": f"adhd/{i:06d}.png",
              "train_id": f"sub-0{i}:45", "flagged": i == 0} for i in range(3)]
    report = full_report()
    report.gan_train["<script>"] = report.gan_train["dcgan"]  # a set name must be escaped in HTML
    report.fidelity["pggan"] = dataclasses.replace(report.fidelity["pggan"], coverage=None)
    drawn = fold_figures(tiny_set(rng), {"pggan": tiny_set(rng, synthetic=True)}, {"pggan": pairs}, "repeat 0, fold 0")
    write_report(tmp_path / "out", report, predictions=PREDICTIONS, drawn=drawn, runs={"pggan": run})
    out = tmp_path / "out"

    saved = json.loads((out / "report.json").read_text())  # strict JSON: an absent number is null
    assert saved["fidelity"]["pggan"]["coverage"] is None
    assert saved["gan_train"]["pggan"]["hm"] == 0.75 and saved["schema_version"] == SCHEMA_VERSION
    assert read_report(out) == report
    assert pd.read_csv(out / "predictions.tsv", sep="\t").to_dict("records") == PREDICTIONS.to_dict("records")

    md = (out / "report.md").read_text()
    assert "SIMULATED cohort" in md
    for row in PAPER_TABLE1.values():
        for value in row.values():
            assert f"{value:.3f}" in md
    assert "0.750 [0.710, 0.790]" in md  # ours, slice level with CI
    assert "features: vgg16-random (weights random(seed=0)), layer fc7, input 224 px" in md
    assert md.count("features: vgg16-random") >= 4  # beside every feature-based table
    pggan_fidelity = next(line for line in md.splitlines() if line.startswith("| PGGAN | 41.23 +/- 1.41 |"))
    assert pggan_fidelity.endswith("| 0.934 +/- 0.023 | n/a | 0.019 / 0.004 |")  # the absent coverage
    assert "real: dataset, 120 images of 4 subjects, 64 px" in md
    assert "fold r0/f1: 60 train / 60 test images of 2 / 2 subjects (test: s1, s2)" in md
    assert "synthetic pggan: 2 folds, first r0/f0/synthetic/pggan, 200 images (100 control, 100 adhd)" in md
    assert FOLD_NOTE in md  # the reason an interval is n/a, in every writer
    assert FOLD_NOTE in (out / "report.html").read_text()

    page = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count("data:image/png;base64,") == 4  # privacy-utility, samples, nearest pairs, training curves
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert 'class="banner"' in page and '<li class="met">' in page
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["pairs_pggan.png", "samples_pggan.png",
                                                                   "summary_privacy_utility.png", "training_pggan.png"]


def test_report_without_synthetic_sets_runs_or_pairs(tmp_path):
    full = full_report(simulated=False)
    report = dataclasses.replace(full, gan_train={"real": full.gan_train["real"]}, gan_test={}, fidelity={},
                                 privacy={}, data=dataclasses.replace(full.data, synthetic={}),
                                 privacy_utility=privacy_utility({"real": full.gan_train["real"]}, {}))
    write_report(tmp_path, report, predictions=PREDICTIONS, drawn=[], runs={})
    md = (tmp_path / "report.md").read_text()
    assert "SIMULATED" not in md and "not checked" in md and "(no results)" in md
    assert "data:image/png" not in (tmp_path / "report.html").read_text()
    assert Report.from_dict(json.loads((tmp_path / "report.json").read_text())) == report


def test_render_markdown_shows_the_numbers_of_every_section():
    md = render_markdown(full_report())
    for text in ("brainsynth 0.1.0, created 2025-01-01T00:00:00+00:00",
                 "real >= PGGAN > DCGAN (paired verdicts on pooled HM): met", "## Paired verdicts",
                 "- PGGAN vs DCGAN: better (HM 0.750 - 0.600 = 0.150 [0.100, 0.200])",
                 "### GAN-train per fold", "| Real test (reference) | 3.21 +/- 1.41 |",
                 "### GAN-test", "0.925 [0.885, 0.965]", "87.65", "0.0123 +/- 0.0021", "12.50",
                 "| PGGAN r0/f1 | 0.5% [0.1%, 3.2%] | 1 of 200 | 2.5% [0.7%, 8.7%] (1 of 40) | -2.0% | 0.521 [0.411, 0.611] p=0.067 |",
                 "### Closest pairs after alignment", "_What the privacy audit does not prove: It is not differential",
                 "| train_pggan | 1234.5 |"):
        assert text in md, text
