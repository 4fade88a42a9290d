"""Fixtures shared across the test modules."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import trio
from trio.testing import MockClock

WATCHDOG = 3600.0


@pytest.fixture
def clock() -> MockClock:
    """Simulated time; pytest-trio only uses a clock that the test itself takes as an argument."""
    return MockClock(autojump_threshold=0)


async def watchdog(limit: float = WATCHDOG) -> None:
    """Under autojump a test that waits for something that never comes jumps here and fails, not hangs."""
    await trio.sleep(limit)
    raise AssertionError(f"still waiting after {limit} simulated seconds")


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    """``wiremesh agent`` configures logging for the process; undo it so later tests are unaffected."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
