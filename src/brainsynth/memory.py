"""Memory the C heap keeps, given back to the operating system during an evaluation.

glibc's allocator serves a large block (above its mmap threshold) by its own mapping, which it
unmaps when freed; smaller ones come from its heaps (one arena per thread that allocated), whose
freed space it keeps for reuse. The threshold is dynamic: each freed mapped block raises it to
that block's size, up to 32 MB. An evaluation frees blocks of tens of MB in every stage, so the
threshold soon sits near 32 MB and the stages' temporaries below it (distance blocks, image
batches, registration buffers) pile up in the heaps instead, resident long after they are freed.

- :func:`map_large_blocks` fixes the threshold (``mallopt(M_MMAP_THRESHOLD)``, which also stops
  the adjustment), so every block of :data:`MMAP_THRESHOLD` or more is mapped and unmapped
  on its own. On the 240-subject benchmark fold (its features read from disk, one run each) the
  privacy stage's peak fell from 3.93 GB to 2.91 GB at 8 MB (2.71 GB at 1 MB; one arena instead
  of a threshold: 4.18 GB). A fresh mapping is zeroed page by page, so the threshold costs time:
  at 120 subjects the audit took 111 s instead of 87 at 8 MB, and 185 s at 1 MB
  (benchmarks/README.md, "Cohort size").
- :func:`release_freed_memory` returns the heaps' free pages between stages (``malloc_trim``).

Both are no-ops where the C library is not glibc (macOS, musl, Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)
MMAP_THRESHOLD = 8 << 20  # blocks of 8 MB or more get their own mapping (see the module notes for 1 MB)


@lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _glibc_function(name: str):
    """A glibc function, or None where the C library has none of that name."""
    libc = _libc()
    return getattr(libc, name, None) if libc is not None else None


def _malloc_trim():
    """glibc's ``malloc_trim``, or None where the C library has none (macOS, musl, Windows)."""
    return _glibc_function("malloc_trim")


def _mallopt():
    """glibc's ``mallopt``, or None (musl has a ``mallopt`` that ignores this parameter: harmless)."""
    return _glibc_function("mallopt") if _malloc_trim() is not None else None


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Serve every block of ``threshold`` bytes or more by its own mapping from now on (process-wide).

    Returns False where that is not possible. Called once at the start of an evaluation; it costs
    a fresh mapping per large temporary (see the module notes for what it saves).
    """
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold)))


def release_freed_memory() -> bool:
    """Return the free pages of the C heap to the operating system; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
