"""The privacy-utility summary: Wilson intervals, the typed block, its table, figure and report wiring."""

from __future__ import annotations

import io
import json

import matplotlib.image as plt_image
import numpy as np
import pandas as pd
import pytest

from brainsynth.evaluate.report import figures
from brainsynth.evaluate.report.privacy_utility import privacy_utility
from brainsynth.evaluate.report.schema import Report
from brainsynth.evaluate.report.tables import privacy_utility_table, to_markdown
from brainsynth.evaluate.protocol import PREDICTION_COLUMNS
from brainsynth.evaluate.report.writers import summary_figures, write_report

from sample_reports import full_report


def test_the_summary_takes_each_number_from_its_section():
    report = full_report(real_hm=0.86, pggan_hm=0.75, dcgan_hm=0.6, rates=(0.005, 0.0))
    pu = privacy_utility(report.gan_train, report.privacy)
    assert set(pu.points) == {"pggan", "dcgan"}
    pggan = pu.points["pggan"]
    assert pggan.hm == 0.75 and pggan.hm_ci == report.gan_train["pggan"].ci.hm
    # The audit's memorisation block as it stands: rate, Wilson interval, counts (not recomputed).
    audit = report.privacy["pggan"]
    assert (pggan.memorization_rate, pggan.flagged, pggan.n_synthetic) == (0.005, 2, 400)
    assert pggan.memorization_ci == pytest.approx((0.002, 0.022)) == tuple(audit.memorization.ci)
    assert pggan.false_flag_rate == 0.025 and pggan.false_flag_ci == pytest.approx((0.0069, 0.0868))
    assert pu.points["dcgan"].memorization_ci == pytest.approx((0.0, 0.017)) and pu.points["dcgan"].flagged == 0
    assert pu.real_hm == 0.86 and "Wilson" in pu.ci_method
    # Through the strict reader and back.
    again = Report.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.privacy_utility == report.privacy_utility


def test_table_figure_and_page_show_the_summary(tmp_path):
    report = full_report()
    table = to_markdown(privacy_utility_table(report))
    assert "| PGGAN | 0.750 [0.710, 0.790] | 0.5% [0.2%, 2.2%] | 2.5% [0.7%, 8.7%] |" in table
    assert "| Real data | 0.860 [0.820, 0.900] |" in table
    png = figures.figure_privacy_utility(report.privacy_utility)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt_image.imread(io.BytesIO(png)).shape[2] == 4  # a decodable RGBA image
    drawn = summary_figures(report)
    assert [d[:2] for d in drawn] == [("summary", "privacy_utility")]

    write_report(tmp_path, report, predictions=pd.DataFrame(columns=PREDICTION_COLUMNS), drawn=[], runs={})
    assert (tmp_path / "figures" / "summary_privacy_utility.png").is_file()
    page = (tmp_path / "report.html").read_text()
    assert page.count("<h2>Privacy and utility</h2>") == 1 and 'alt="each generator&#x27;s GAN-train HM' in page
    assert "## Results" in (tmp_path / "report.md").read_text()
    written = json.loads((tmp_path / "report.json").read_text())["privacy_utility"]
    assert written["points"]["pggan"]["memorization_rate"] == 0.005 and written["points"]["pggan"]["flagged"] == 2
    assert np.isclose(written["real_hm"], 0.86)
    on_disk = plt_image.imread(tmp_path / "figures" / "summary_privacy_utility.png")
    assert on_disk.ndim == 3 and on_disk.shape[0] > 300 and on_disk.shape[1] > 400


def _errorbars(ax) -> dict[str, tuple]:
    """Each errorbar's label -> ((x, y), x segment, y segment) as drawn."""
    out = {}
    for container in ax.containers:
        line, _caps, (xbars, ybars) = container.lines
        (x, y), = line.get_xydata()
        out[container.get_label()] = ((x, y), tuple(xbars.get_segments()[0][:, 0]),
                                      tuple(ybars.get_segments()[0][:, 1]))
    return out


def test_the_figure_places_each_generator_at_its_numbers():
    report = full_report(real_hm=0.86, pggan_hm=0.75, dcgan_hm=0.6, rates=(0.005, 0.0))
    pu = report.privacy_utility
    ax, = figures.draw_privacy_utility(pu).axes
    bars = _errorbars(ax)
    assert set(bars) == {"pggan (2/400 flagged)", "dcgan (0/400 flagged)"}
    (x, y), xseg, yseg = bars["pggan (2/400 flagged)"]
    assert (x, y) == pytest.approx((0.5, 0.75))  # percent on x
    assert xseg == pytest.approx((0.2, 2.2))  # the audit's Wilson interval, in percent
    assert yseg == pytest.approx((0.71, 0.79))  # the report's bootstrap interval, untouched
    (x, y), xseg, _ = bars["dcgan (0/400 flagged)"]
    assert (x, y) == pytest.approx((0.0, 0.6)) and xseg == pytest.approx((0.0, 1.7))
    assert ax.get_xlim()[0] < 0 < ax.get_xlim()[1]  # the point at 0 % is inside the axes
    # The reference lines: the real HM (dashed) and the held-out false-flag rate (dotted), in the legend.
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    dotted = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert [tuple(ln.get_ydata()) for ln in dashed] == [(0.86, 0.86)]
    assert [tuple(ln.get_xdata()) for ln in dotted] == [pytest.approx((2.5, 2.5))]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "real training images (HM 0.860)" in legend and "held-out false-flag rate (2.5%)" in legend


def test_a_set_without_gan_train_is_named_not_drawn():
    report = full_report()
    gan_train = {k: v for k, v in report.gan_train.items() if k != "dcgan"}
    pu = privacy_utility(gan_train, report.privacy)
    assert pu.points["dcgan"].hm is None and pu.points["dcgan"].hm_ci is None
    ax, = figures.draw_privacy_utility(pu).axes
    assert set(_errorbars(ax)) == {"pggan (2/400 flagged)"}
    assert [t.get_text() for t in ax.texts if "no GAN-train" in t.get_text()] == ["dcgan: no GAN-train HM"]
