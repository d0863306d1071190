"""Freed memory given back to the operating system between the stages of an evaluation.

glibc's allocator keeps freed blocks in its heaps (one arena per thread that allocated) for reuse,
and returns them only when the top of a heap is free. An evaluation allocates and frees many
blocks of tens of MB in one stage and a different mix in the next, so the freed space of the
earlier stages stays resident: the privacy audit of the 240-subject benchmark fold needs 0.4 GB
above its inputs when run on its own, yet the evaluation's resident memory peaked there at 4.6 GB
(benchmarks/README.md, "Cohort size"). ``malloc_trim`` returns every free page of every arena:
with it that peak was 4.34 GB and the audit ran in 211 s instead of 261 (one run each). Pages left
partly used, and whatever the earlier stages still reference, stay.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> bool:
    """Return the free pages of the C heap to the operating system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
