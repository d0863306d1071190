"""Giving freed memory back between evaluation stages: glibc's malloc_trim where it exists, a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from brainsynth import memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_memory_is_released_with_glibc():
    assert memory._malloc_trim() is not None
    assert memory.release_freed_memory() is True


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_large_blocks_are_mapped_with_glibc():
    assert memory._mallopt() is not None
    assert memory.map_large_blocks() is True
    assert memory.map_large_blocks(memory.MMAP_THRESHOLD) is True  # idempotent: the same setting again


def test_large_blocks_are_mapped_through_mallopt_with_its_threshold(monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "_mallopt", lambda: lambda param, value: calls.append((param, value)) or 1)
    assert memory.map_large_blocks(4 << 20) is True
    assert calls == [(memory.M_MMAP_THRESHOLD, 4 << 20)]
    monkeypatch.setattr(memory, "_mallopt", lambda: lambda param, value: 0)  # glibc refuses (returns 0)
    assert memory.map_large_blocks() is False


def test_without_malloc_trim_it_is_a_no_op(monkeypatch):
    monkeypatch.setattr(memory, "_malloc_trim", lambda: None)
    assert memory.release_freed_memory() is False
    assert memory._mallopt() is None
    assert memory.map_large_blocks() is False
