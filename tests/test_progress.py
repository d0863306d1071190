"""Progress bars: shown with a rate and an ETA at the command line's default level, silent under -q."""

import logging

from brainsynth import progress
from brainsynth.logs import setup_logging


def _run(total: int) -> None:
    with progress.bar(total, "features: test") as step:
        for _ in range(total // 100):
            step(100)


def test_a_bar_shows_count_rate_and_eta_at_info_level(capsys):
    setup_logging(logging.INFO)
    try:
        _run(1000)
    finally:
        setup_logging(logging.WARNING)
    err = capsys.readouterr().err
    assert "features: test" in err and "/1.00k" in err and "img/s" in err and "<" in err  # count, rate, elapsed<ETA


def test_bars_are_silent_under_quiet_and_for_small_jobs(capsys):
    setup_logging(logging.WARNING)  # brainsynth -q
    _run(1000)
    setup_logging(logging.INFO)
    try:
        _run(progress.MIN_ITEMS - 56)  # too few items to be worth a bar
    finally:
        setup_logging(logging.WARNING)
    assert capsys.readouterr().err == ""
