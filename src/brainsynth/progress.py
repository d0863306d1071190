"""Progress bars for long stages: one tqdm bar (count, rate, ETA) on stderr, silent under ``-q``.

A stage shows a bar when it handles at least :data:`MIN_ITEMS` items and brainsynth's logger
reports INFO (the default of the command line; ``-q`` raises it to WARNING, and a library caller
who never set up logging gets none either). The bar is the only place that decides this, so every
stage looks and behaves the same.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Iterator

from brainsynth.logs import LOGGER

MIN_ITEMS = 256
"""Fewer items than this finish in seconds: no bar."""


def enabled() -> bool:
    """Whether bars are shown: brainsynth's logger reports INFO."""
    return logging.getLogger(LOGGER).isEnabledFor(logging.INFO)


@contextlib.contextmanager
def bar(total: int, desc: str, unit: str = "img", min_items: int = MIN_ITEMS) -> Iterator[Callable[[int], None]]:
    """``with bar(n, "features") as step: ... step(k)`` advances a bar of ``n`` items by ``k``.

    The bar is a no-op when :func:`enabled` is false or ``total`` is below ``min_items`` (slow
    items, such as whole volumes, pass a smaller one).
    """
    if not enabled() or total < min_items:
        yield lambda n: None
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True,
              mininterval=1.0) as shown:
        yield shown.update
