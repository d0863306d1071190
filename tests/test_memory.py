"""Giving freed memory back between evaluation stages: glibc's malloc_trim where it exists, a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from brainsynth import memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_released_with_glibc():
    assert memory._malloc_trim() is not None
    assert memory.release_freed_memory() is True


def test_without_malloc_trim_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert memory.release_freed_memory() is False
