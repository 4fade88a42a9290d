"""Verdict thresholds, jitter and scheduling: exact sequences, and properties under hypothesis."""

from __future__ import annotations

import math
import random

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.health.verdict import CheckState, Verdict, first_delay, next_run


def feed(state: CheckState, results: str, start: float = 0.0) -> list[str]:
    """Feed 'P'/'F' results one second apart; return the state after each."""
    out: list[str] = []
    for i, r in enumerate(results):
        ok = r == "P"
        out.append(state.record(ok, 0.01, None if ok else "boom", start + i + 1).state)
    return out


def test_new_check_is_unknown_until_healthy_threshold() -> None:
    s = CheckState(healthy_threshold=3, unhealthy_threshold=2, now=0.0)
    assert s.verdict().state == "unknown"
    assert s.verdict().since == 0.0
    assert feed(s, "PPP") == ["unknown", "unknown", "healthy"]
    assert s.since == 3.0


def test_unknown_becomes_unhealthy_after_unhealthy_threshold() -> None:
    s = CheckState(healthy_threshold=2, unhealthy_threshold=3, now=0.0)
    assert feed(s, "FFF") == ["unknown", "unknown", "unhealthy"]
    v = s.verdict()
    assert (v.state, v.since, v.consecutive, v.last_ok, v.error) == ("unhealthy", 3.0, 3, False, "boom")


def test_rise_and_fall_exact() -> None:
    s = CheckState(healthy_threshold=2, unhealthy_threshold=3, now=0.0)
    states = feed(s, "PP" + "FF" + "P" + "FFF" + "P" + "PP")
    assert states == [
        "unknown", "healthy",  # rise at 2
        "healthy", "healthy",  # 2 failures < 3
        "healthy",  # a pass resets the failure run
        "healthy", "healthy", "unhealthy",  # fall at 3
        "unhealthy",  # 1 pass < 2
        "healthy", "healthy",
    ]  # fmt: skip
    assert s.since == 10.0  # since moves only on a change, not on the last result
    assert s.consecutive == 3 and s.last_ok is True and s.last_error is None


def test_interleaved_results_never_leave_unknown() -> None:
    s = CheckState(healthy_threshold=2, unhealthy_threshold=2, now=5.0)
    assert set(feed(s, "PFPFPFPF")) == {"unknown"}
    assert s.since == 5.0


def test_threshold_one_follows_every_result() -> None:
    s = CheckState(healthy_threshold=1, unhealthy_threshold=1, now=0.0)
    assert feed(s, "PFFP") == ["healthy", "unhealthy", "unhealthy", "healthy"]


def test_verdict_carries_latency_error_and_time() -> None:
    s = CheckState(healthy_threshold=1, unhealthy_threshold=5, now=0.0)
    v = s.record(False, 0.25, "connection refused", 7.0)
    assert (v.state, v.latency, v.error, v.checked_at, v.consecutive) == (
        "unknown",
        0.25,
        "connection refused",
        7.0,
        1,
    )
    v = s.record(True, 0.5, None, 8.0)
    assert (v.state, v.since, v.error, v.latency) == ("healthy", 8.0, None, 0.5)


def test_bad_thresholds_refused() -> None:
    with pytest.raises(ValueError):
        CheckState(0, 1, 0.0)
    with pytest.raises(ValueError):
        CheckState(1, 0, 0.0)


@given(
    results=st.lists(st.booleans(), max_size=200),
    rise=st.integers(1, 6),
    fall=st.integers(1, 6),
)
def test_state_never_flips_faster_than_thresholds(results: list[bool], rise: int, fall: int) -> None:
    """Every change is justified by a full run of agreeing results ending right there, and every full
    run produces the change: the verdict is exactly the thresholded signal, no faster, no slower."""
    s = CheckState(rise, fall, now=0.0)
    prev = "unknown"
    for i, ok in enumerate(results):
        v = s.record(ok, 0.0, None if ok else "x", float(i + 1))
        run = 0
        for earlier in reversed(results[: i + 1]):
            if earlier != ok:
                break
            run += 1
        if v.state != prev:
            assert v.state == ("healthy" if ok else "unhealthy")
            assert run >= (rise if ok else fall)
            assert v.since == float(i + 1)
        if run >= (rise if ok else fall):
            assert v.state == ("healthy" if ok else "unhealthy")
        assert v.consecutive == run
        assert v.state != "unknown" or prev == "unknown"  # never back to unknown
        prev = v.state


@given(interval=st.floats(1e-6, 1e6), seed=st.integers(0, 2**32))
def test_first_delay_bounds(interval: float, seed: int) -> None:
    d = first_delay(interval, random.Random(seed))
    assert 0.0 <= d < interval


def test_first_delay_spreads_machines() -> None:
    rng = random.Random(1)
    delays = [first_delay(10.0, rng) for _ in range(1000)]
    assert min(delays) < 0.5 and max(delays) > 9.5  # covers the interval, not clustered


class _Top(random.Random):
    def random(self) -> float:
        return 1.0 - 2**-53  # the largest value random() returns


def test_first_delay_never_equals_interval_at_the_top_of_random() -> None:
    assert first_delay(3.0, _Top()) < 3.0


def test_next_run_without_drift() -> None:
    # late starts and slow runs do not shift the grid
    assert next_run(0.0, 10.0, now=0.3) == 10.0
    assert next_run(10.0, 10.0, now=19.99) == 20.0
    slot = 0.5
    for _ in range(10_000):
        slot = next_run(slot, 0.1, now=slot + 0.07)
    assert math.isclose(slot, 0.5 + 10_000 * 0.1, abs_tol=1e-6)


def test_next_run_skips_missed_slots() -> None:
    assert next_run(0.0, 10.0, now=35.0) == 40.0  # 10, 20, 30 missed: not run back to back
    assert next_run(0.0, 10.0, now=30.0) == 30.0  # exactly on a slot: that slot is not missed
    assert next_run(5.0, 10.0, now=5.0) == 15.0  # always a later slot than the previous one


@given(
    prev=st.floats(-1e6, 1e6),
    interval=st.floats(1e-3, 1e4),
    late=st.floats(0, 1e5),
)
def test_next_run_properties(prev: float, interval: float, late: float) -> None:
    now = prev + late
    slot = next_run(prev, interval, now)
    assert slot >= now
    assert slot > prev
    k = round((slot - prev) / interval)
    assert k >= 1
    assert math.isclose(slot, prev + k * interval, rel_tol=1e-9, abs_tol=1e-6)
    assert slot - interval < now + 1e-6 * max(1.0, abs(now))  # the first such slot, none skipped past now


def test_verdict_wire_roundtrip_through_msgpack() -> None:
    v = Verdict("healthy", 12.5, 3, True, 0.002, None, 14.0)
    wire = msgpack.unpackb(msgpack.packb(v.to_wire()))
    assert Verdict.from_wire(wire) == v
    unknown = CheckState(2, 2, now=1.0).verdict()
    assert Verdict.from_wire(msgpack.unpackb(msgpack.packb(unknown.to_wire()))) == unknown


@pytest.mark.parametrize(
    "wire",
    [
        [],
        {"s": "sick", "t": 1.0},
        {"s": "healthy"},
        {"s": "healthy", "t": "yesterday"},
        {"s": "healthy", "t": float("nan")},
        {"s": "healthy", "t": 1.0, "n": -1},
        {"s": "healthy", "t": 1.0, "n": True},
        {"s": "healthy", "t": 1.0, "o": "yes"},
        {"s": "healthy", "t": 1.0, "e": 5},
        {"s": "healthy", "t": 1.0, "l": "fast"},
    ],
)
def test_verdict_from_wire_rejects_malformed(wire: object) -> None:
    with pytest.raises(ValueError):
        Verdict.from_wire(wire)


def test_failing_since_is_when_the_failures_that_made_it_unhealthy_began() -> None:
    state = CheckState(2, 3, now=0.0)
    for t in (1.0, 2.0):
        state.record(True, 0.01, None, t)
    assert (state.state, state.failing_since) == ("healthy", None)
    state.record(False, 0.01, "down", 3.0)
    state.record(True, 0.01, None, 4.0)  # a pass breaks the streak
    for t in (5.0, 6.0, 7.0):
        state.record(False, 0.01, "down", t)
    assert (state.state, state.since, state.failing_since) == ("unhealthy", 7.0, 5.0)
    state.record(True, 0.01, None, 8.0)  # one pass, not yet healthy: the spell goes on
    state.record(False, 0.01, "down", 9.0)
    assert (state.state, state.failing_since) == ("unhealthy", 5.0)
    for t in (10.0, 11.0):
        state.record(True, 0.01, None, t)
    assert (state.state, state.failing_since) == ("healthy", None)
