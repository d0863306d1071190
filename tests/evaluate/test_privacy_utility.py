"""The privacy-utility summary: Wilson intervals, the typed block, its table, figure and report wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainsynth.evaluate import figures
from brainsynth.evaluate.privacy_utility import privacy_utility, wilson_interval
from brainsynth.evaluate.schema import Report
from brainsynth.evaluate.tables import privacy_utility_table, to_markdown
from brainsynth.evaluate.writers import report_figures, write_report

from sample_reports import full_report


@pytest.mark.parametrize("k, n, expected", [
    (0, 1000, (0.0, 0.003827)),      # 0 flagged of 1,000: not a point at 0
    (5, 1000, (0.002137, 0.011650)),
    (50, 100, (0.403831, 0.596169)),  # symmetric about one half
    (10, 10, (0.722467, 1.0)),
])
def test_wilson_interval_matches_the_closed_form(k, n, expected):
    lo, hi = wilson_interval(k, n)
    assert (lo, hi) == pytest.approx(expected, abs=2e-6)
    assert lo <= k / n <= hi


def test_wilson_interval_edge_cases():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes 3 must lie in"):
        wilson_interval(3, 2)


def test_the_summary_takes_each_number_from_its_section():
    report = full_report(real_hm=0.86, pggan_hm=0.75, dcgan_hm=0.6, rates=(0.005, 0.0))
    pu = privacy_utility(report.gan_train, report.privacy)
    assert set(pu.points) == {"pggan", "dcgan"}
    pggan = pu.points["pggan"]
    assert pggan.hm == 0.75 and pggan.hm_ci == report.gan_train["pggan"].ci.hm
    assert pggan.memorization_rate == 0.005 and pggan.n_synthetic == 200
    assert pggan.memorization_ci == pytest.approx(wilson_interval(1, 200))  # one flagged image listed
    assert pu.points["dcgan"].memorization_ci[0] == 0.0 and pu.points["dcgan"].holdout_flag_rate == 0.0075
    assert pu.real_hm == 0.86 and "Wilson" in pu.ci_method
    # Through the strict reader and back.
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.privacy_utility == report.privacy_utility


def test_table_figure_and_page_show_the_summary(tmp_path):
    report = full_report()
    table = to_markdown(privacy_utility_table(report))
    assert "| PGGAN | 0.750 [" in table and "0.5% [0.1%, 2.8%]" in table and "| Real data | 0.860 [" in table
    png = figures.figure_privacy_utility(report.privacy_utility)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    drawn = report_figures(None, {}, {}, {}, report)
    assert [d[:2] for d in drawn] == [("summary", "privacy_utility")]

    write_report(tmp_path, report, real_train=None, synthetic={}, nearest_pairs={}, runs={})
    assert (tmp_path / "figures" / "summary_privacy_utility.png").is_file()
    page = (tmp_path / "report.html").read_text()
    assert page.count("<h2>Privacy and utility</h2>") == 1 and 'alt="each generator&#x27;s GAN-train HM' in page
    assert "## Results" in (tmp_path / "report.md").read_text()
    written = json.loads((tmp_path / "report.json").read_text())["privacy_utility"]
    assert written["points"]["pggan"]["memorization_rate"] == 0.005
    assert np.isclose(written["real_hm"], 0.86)
