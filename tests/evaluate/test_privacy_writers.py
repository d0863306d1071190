"""privacy.md, the terminal paragraph, the self-test table and the pair figure, from typed documents."""

from __future__ import annotations

import dataclasses

import numpy as np
from sample_reports import FEATURES, audit_report, full_report

from brainsynth.evaluate.report import figures
from brainsynth.evaluate.report.privacy_writers import privacy_markdown, selftest_markdown, selftest_table, summary_paragraph
from brainsynth.evaluate.report.schema import PlantedFamily, Rate, SelfTestReport, SpaceTexts
from brainsynth.evaluate.report.tables import closest_pairs_table, privacy_table


def test_privacy_markdown_reads_every_section_of_the_typed_audit():
    document = audit_report()
    md = privacy_markdown(document, "`filtered/` holds 198 images")
    for text in (
        "SIMULATED cohort", "trained on 80 real training images", "Each of the 200 synthetic images",
        "half A (s5) sets the thresholds, half B (s6) checks them", "all but 1% of the calibration images",
        "set on 100 calibration images: held-out half A (s5) and 80 training images, each scored against the other",
        "features: vgg16-random (weights random(seed=0)), layer fc7",
        "| near-copies flagged | 2 of 200, 1.0% [0.6%, 3.7%] |", "| false flags on half B | 1 of 40, 2.5% [0.7%, 8.7%] |",
        "| near-copies beyond chance | -1.5% |", "| membership-inference AUC (headline) | 0.521 [0.411, 0.611], p=0.067 |",
        "| authentic share | 55.1% | held-out real images score 60.4%",
        "| pixel/slice (headline) | 0.521 [0.411, 0.611] | p=0.067 | 120 / 40 | 4 / 2 |",
        "| pixel/subject | 0.583 [0.473, 0.673] |",
        "| 1 | 21.0% - 52.0% | 0.622 | 0.645 | 50 | 1 of 10 | 0 of 100 |",
        "| adhd/000001.png | sub-01:41 | 1.0123 | 0.225 | 0.612 | no | mirrored, rotated -3.2 deg, scaled x1.040, "
        "shifted (+1.0, -1.0) px, brightness +0.02 +0.95x +0.01x^2 |",
        "- `control/000007.png`: training image `sub-01:40`, distance 1.0123, ratio 0.125 (threshold 0.612)",
        "`filtered/` holds 198 images", "## What this does and does not prove", "- It is not differential privacy.",
        "brainsynth audit --selftest DATASET",
    ):
        assert text in md, text
    many = audit_report(tuple(f"adhd/{i:06d}.png" for i in range(23)))
    assert "- ... and 3 more (see privacy.json)" in privacy_markdown(many)
    real = dataclasses.replace(document, simulated=False)
    assert "SIMULATED" not in privacy_markdown(real)


def test_summary_paragraph_gives_both_rates_with_intervals():
    line = summary_paragraph(audit_report().privacy, "out")
    assert line.startswith("Privacy audit of 200 synthetic images against 80 training and 40 held-out real images: "
                           "2 flagged as near-copies (memorisation rate 1.0% [0.6%, 3.7%]); held-out half B")
    assert "2.5% [0.7%, 8.7%] false flags. Membership-inference AUC 0.521 [0.411, 0.611], p=0.067" in line
    assert line.endswith("Details in out.")


def test_report_tables_show_half_b_the_headline_attack_and_the_pairs():
    report = full_report()
    row = next(r for r in privacy_table(report).rows if r[0] == "PGGAN r0/f0")  # a fold's own audit
    assert row[1] == "0.5% [0.1%, 3.2%]" and row[3] == "2.5% [0.7%, 8.7%] (1 of 40)"
    assert row[5] == "0.521 [0.411, 0.611] p=0.067" and row[6] == "0.534 p=0.067" and row[7] == "0.583 p=0.067"
    pairs = closest_pairs_table(report)  # 2 sets x 2 folds x 2 pairs
    assert len(pairs.rows) == 8 and pairs.rows[0][:3] == ["PGGAN r0/f0", "adhd/000000.png", "sub-01:40"]
    assert "not differential privacy" in pairs.notes[0]


def _selftest(rate: float) -> SelfTestReport:
    family = PlantedFamily(family="rotate", description="rotated by 2-10 degrees either way",
                           detection=Rate(rate=rate, ci=(rate - 0.1, 1.0), k=round(40 * rate), n=40), source_found=0.975,
                           median_distance=0.0214, median_ratio=0.144)
    report = audit_report()
    return SelfTestReport(brainsynth_version="0.1.0", created="2025-01-01T00:00:00+00:00", simulated=True,
                          dataset="dataset", target=0.95, max_false_flags=0.05, passed=rate >= 0.95, families=[family],
                          false_flags=Rate(rate=0.038, ci=(0.019, 0.077), k=7, n=182),
                          calibration=report.privacy.calibration, transforms="rotated by up to +/-10 degrees",
                          distances=SpaceTexts(pixel="aligned", feature="cosine"), features=FEATURES)


def test_selftest_table_marks_each_family_and_the_verdict():
    text = selftest_table(_selftest(0.975))
    assert text.splitlines()[0] == "Privacy self-test: planted copies flagged per transform family"
    assert "rotate" in text and "39 of 40" in text and "97.5% [87.5%, 100.0%]" in text and "0.144" in text
    assert "7 of 182" in text and "3.8% [1.9%, 7.7%]" in text and "PASSED." in text
    failed = selftest_table(_selftest(0.9))
    assert "BELOW TARGET" in failed and "FAILED." in failed
    assert "- **rotate**: rotated by 2-10 degrees either way" in selftest_markdown(_selftest(0.975))


def test_pair_figure_shows_the_aligned_slice_and_the_difference():
    rng = np.random.default_rng(0)
    pair = {"synthetic_image": rng.random((16, 16), dtype=np.float32), "aligned_image": np.zeros((16, 16), np.float32),
            "synthetic_file": "adhd/000001.png", "train_id": "sub-01:40", "distance": 0.0123, "threshold": 0.6,
            "flagged": True, "transform": {"mirrored": True, "rotation_deg": 3.0, "scale": 1.05, "shift_px": [1.0, 0.0]}}
    png = figures.figure_nearest_pairs([pair, pair])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    assert figures._short_transform(pair["transform"]) == "mirror +3.0deg x1.05 (+1,+0)px"
