"""common.memory: freed heap goes back to the OS on glibc, and elsewhere the call is a harmless no-op."""

from __future__ import annotations

import ctypes
import platform

import pytest

from common.memory import release_free_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_chunks_are_given_back_on_glibc() -> None:
    chunks = [bytearray(64 * 1024) for _ in range(256)]  # malloc'd (not pymalloc), 16 MiB
    del chunks[::2]  # holes in the middle of the heap, which glibc keeps unless trimmed
    assert release_free_memory() is True


def test_without_malloc_trim_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoTrim:  # a C library without malloc_trim (musl)
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    assert release_free_memory() is False
