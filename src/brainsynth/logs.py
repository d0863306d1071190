"""Logging for people: brainsynth's log lines go bare to stderr.

Used by the command line and by worker processes (a spawned worker starts with logging
unconfigured), so it lives outside :mod:`brainsynth.cli`.
"""

from __future__ import annotations

import logging
import sys

LOGGER = "brainsynth"


def setup_logging(level: int) -> None:
    """Send brainsynth's log lines to stderr, bare (they are written for people)."""
    log = logging.getLogger(LOGGER)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(level)


def current_level() -> int:
    """The effective level of brainsynth's logger (to hand to a worker process)."""
    return logging.getLogger(LOGGER).getEffectiveLevel()
