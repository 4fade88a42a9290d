"""The hybrid logical clock: never goes backwards, stays ahead of everything it saw, stays near wall time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cluster.hlc import MAX_COUNTER, MAX_WALL_MS, HybridClock, Timestamp, Version

walls = st.integers(min_value=0, max_value=10**13)
timestamps = st.builds(Timestamp, walls, st.integers(min_value=0, max_value=MAX_COUNTER))
# An event is a local write at a wall time, or a remote timestamp observed at a wall time.
events = st.lists(st.tuples(walls, st.none() | timestamps), max_size=60)


def test_now_follows_wall_time_and_counts_within_a_millisecond() -> None:
    clock = HybridClock("a")
    assert clock.now(1000) == Timestamp(1000, 0)
    assert clock.now(1000) == Timestamp(1000, 1)
    assert clock.now(999) == Timestamp(1000, 2)  # the wall clock stepped back: logical time does not
    assert clock.now(1001) == Timestamp(1001, 0)


def test_observe_jumps_past_a_remote_clock_that_is_ahead() -> None:
    clock = HybridClock("a")
    clock.now(1000)
    assert clock.observe(Timestamp(5000, 7), 1001) == Timestamp(5000, 8)
    assert clock.now(1002) == Timestamp(5000, 9)
    assert clock.observe(Timestamp(10, 0), 6000) == Timestamp(6000, 0)


def test_counter_is_bounded_by_borrowing_the_next_millisecond() -> None:
    clock = HybridClock("a", Timestamp(1000, MAX_COUNTER - 1))
    assert clock.now(1000) == Timestamp(1000, MAX_COUNTER)
    assert clock.now(1000) == Timestamp(1001, 0)
    assert clock.observe(Timestamp(2000, MAX_COUNTER), 0) == Timestamp(2001, 0)


@given(events)
def test_every_timestamp_exceeds_everything_before_it(script: list[tuple[int, Timestamp | None]]) -> None:
    clock = HybridClock("a")
    seen = Timestamp(0, 0)
    for wall, remote in script:
        got = clock.now(wall) if remote is None else clock.observe(remote, wall)
        assert got > seen
        if remote is not None:
            assert got > remote
        assert got.wall_ms >= wall
        assert 0 <= got.counter <= MAX_COUNTER
        seen = max(seen, got, remote or seen)


@given(events)
def test_stays_within_the_largest_wall_time_seen_plus_the_borrowed_milliseconds(
    script: list[tuple[int, Timestamp | None]],
) -> None:
    clock = HybridClock("a")
    largest = 0
    for wall, remote in script:
        got = clock.now(wall) if remote is None else clock.observe(remote, wall)
        largest = max(largest, wall, remote.wall_ms if remote is not None else 0)
        # at most one millisecond borrowed per event, and only when a counter ran out
        assert got.wall_ms <= largest + 1


@given(timestamps, timestamps, st.text(max_size=3), st.text(max_size=3))
def test_versions_order_by_timestamp_then_origin(a: Timestamp, b: Timestamp, x: str, y: str) -> None:
    va, vb = Version(a, x), Version(b, y)
    assert (va < vb) == ((a, x) < (b, y))
    assert (va == vb) == (a == b and x == y)


def test_version_ties_break_on_the_origin_name() -> None:
    assert Version(Timestamp(5, 0), "node-b") > Version(Timestamp(5, 0), "node-a")
    assert Version(Timestamp(5, 1), "node-a") > Version(Timestamp(5, 0), "node-b")


@pytest.mark.parametrize(("wall", "counter"), [(-1, 0), (MAX_WALL_MS + 1, 0), (0, -1), (0, MAX_COUNTER + 1)])
def test_timestamps_out_of_range_are_refused(wall: int, counter: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        Timestamp(wall, counter)


def test_version_helper_stamps_the_node_name() -> None:
    assert HybridClock("n1").version(42) == Version(Timestamp(42, 0), "n1")
