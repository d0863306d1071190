"""Wall-clock time of runs and stages: the one stopwatch every command uses."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Iterator


class Stopwatch:
    """Total wall time since creation (plus ``offset_s``), and seconds per named stage.

    Parameters
    ----------
    offset_s : float
        Seconds already spent before this process (a resumed training run continues its clock).
    log : logging.Logger, optional
        Where :meth:`time` reports each stage as it starts and ends.
    """

    def __init__(self, offset_s: float = 0.0, log: logging.Logger | None = None):
        self.offset_s = float(offset_s)
        self.t0 = time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.log = log

    def total(self) -> float:
        """Seconds since creation, plus the offset."""
        return self.offset_s + time.perf_counter() - self.t0

    @contextlib.contextmanager
    def time(self, name: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``seconds[name]``."""
        if self.log:
            self.log.info("%s ...", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.seconds[name] = self.seconds.get(name, 0.0) + dt
            if self.log:
                self.log.info("%s done in %.1f s", name, dt)


def machine_busy_seconds() -> float:
    """CPU seconds all processes of this machine have been busy since boot (Linux /proc/stat; 0 elsewhere).

    Benchmarks subtract their own CPU time from its growth to state the load they ran under.
    """
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:8]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
