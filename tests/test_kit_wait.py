"""The one polling helper of the tests and labs: returns the first truthy value, fails naming what."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing

from labs.kit.wait import WaitTimeout, eventually, eventually_blocking


async def test_returns_the_first_truthy_value_of_a_sync_or_async_predicate() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter) >= 3 and "done", timeout=5, poll=0.001) == "done"

    async def later() -> int | None:
        await trio.sleep(0)
        n = next(counter)
        return n if n >= 6 else None

    assert await eventually(later, timeout=5, poll=0.001) == 6


async def test_timeout_names_what_and_the_last_value_and_adds_the_detail() -> None:
    with pytest.raises(WaitTimeout) as caught:
        await eventually(lambda: [], timeout=0.05, what="a route", poll=0.01, detail=lambda: "bird: idle")
    text = str(caught.value)
    assert "waiting for a route" in text and "last value: []" in text and text.endswith("bird: idle")
    assert isinstance(caught.value, AssertionError) and isinstance(caught.value, TimeoutError)


def test_under_a_mock_clock_virtual_time_passes_and_the_deadline_holds() -> None:
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def main() -> float:
        start = trio.current_time()
        await eventually(lambda: trio.current_time() - start >= 500, timeout=600, poll=1.0)
        with pytest.raises(WaitTimeout):
            await eventually(lambda: False, timeout=60, poll=1.0)
        return trio.current_time() - start

    assert 560 <= trio.run(main, clock=clock) < 562


async def test_ignored_exceptions_are_not_yet_and_failing_stops_at_once() -> None:
    calls = itertools.count()

    def flaky() -> bool:
        if next(calls) < 2:
            raise OSError("not listening yet")
        return True

    assert await eventually(flaky, ignore=(OSError,), timeout=5, poll=0.001)
    with pytest.raises(WaitTimeout, match="while waiting for the agent: it exited"):
        await eventually(lambda: False, what="the agent", timeout=60, failing=lambda: "it exited")


def test_the_blocking_variant_has_the_same_contract() -> None:
    counter = itertools.count()
    assert eventually_blocking(lambda: next(counter) >= 2 and counter, timeout=5, poll=0.001) is counter
    with pytest.raises(WaitTimeout, match=r"waiting for nothing; last value: 0"):
        eventually_blocking(lambda: 0, what="nothing", timeout=0.02, poll=0.005)
    with pytest.raises(OSError):  # not ignored: raised as is
        eventually_blocking(lambda: (_ for _ in ()).throw(OSError("boom")), timeout=1)
