"""Lifeguard's dynamic suspicion timeout, and the config formulas that size it."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.suspicion import Suspicion, remaining_timeout

MIN, MAX = 4.0, 24.0


def memberlist_remaining(n: int, k: int, elapsed: float, lo: float, hi: float) -> float:
    """memberlist's remainingSuspicionTime (suspicion.go), in seconds, before its millisecond floor."""
    frac = math.log(n + 1.0) / math.log(k + 1.0)
    raw = hi - frac * (hi - lo)
    return max(raw, lo) - elapsed


# --- remaining_timeout -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_no_confirmations_is_max_and_k_confirmations_is_min(k: int) -> None:
    assert remaining_timeout(0, k, 0.0, MIN, MAX) == pytest.approx(MAX)
    assert remaining_timeout(k, k, 0.0, MIN, MAX) == pytest.approx(MIN)
    assert remaining_timeout(k + 3, k, 0.0, MIN, MAX) == pytest.approx(MIN)  # never below min


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_strictly_decreasing_in_confirmations(k: int) -> None:
    values = [remaining_timeout(n, k, 0.0, MIN, MAX) for n in range(k + 1)]
    assert all(a > b for a, b in itertools.pairwise(values))


def test_logarithmic_shape() -> None:
    # k=3: each confirmation takes log(n+1)/log(4) of the span: 0, 1/2, log3/log4, 1.
    span = MAX - MIN
    assert remaining_timeout(1, 3, 0.0, MIN, MAX) == pytest.approx(MAX - span / 2)
    assert remaining_timeout(2, 3, 0.0, MIN, MAX) == pytest.approx(MAX - span * math.log(3) / math.log(4))
    # The first confirmation buys more than the last: concave in n.
    drops = [
        remaining_timeout(n, 3, 0, MIN, MAX) - remaining_timeout(n + 1, 3, 0, MIN, MAX) for n in range(3)
    ]
    assert drops[0] > drops[1] > drops[2] > 0


@given(
    n=st.integers(0, 30),
    k=st.integers(1, 12),
    elapsed=st.floats(0, 100),
    lo=st.floats(0.01, 60),
    mult=st.floats(1, 10),
)
@settings(max_examples=300, deadline=None)
def test_matches_memberlist_formula(n: int, k: int, elapsed: float, lo: float, mult: float) -> None:
    hi = lo * mult
    got = remaining_timeout(n, k, elapsed, lo, hi)
    assert got == pytest.approx(memberlist_remaining(n, k, elapsed, lo, hi), abs=1e-9)
    assert lo - elapsed - 1e-9 <= got <= hi - elapsed + 1e-9


def test_elapsed_is_subtracted_and_may_go_negative() -> None:
    assert remaining_timeout(0, 3, 5.0, MIN, MAX) == pytest.approx(MAX - 5.0)
    assert remaining_timeout(3, 3, 10.0, MIN, MAX) == pytest.approx(MIN - 10.0)


@pytest.mark.parametrize("n", [0, 1, 5])
def test_k_zero_means_min(n: int) -> None:
    assert remaining_timeout(n, 0, 0.0, MIN, MAX) == MIN
    assert remaining_timeout(n, 0, 1.5, MIN, MAX) == MIN - 1.5


# --- Suspicion ---------------------------------------------------------------------------------


def test_starts_at_max() -> None:
    s = Suspicion("b", 3, MIN, MAX, incarnation=7, now=100.0)
    assert s.deadline == 100.0 + MAX
    assert s.n == 0
    assert s.confirmations == ["b"]
    assert s.incarnation == 7


def test_k_zero_starts_at_min_and_takes_no_confirmations() -> None:
    s = Suspicion("b", 0, MIN, MAX, incarnation=0, now=100.0)
    assert s.deadline == 100.0 + MIN
    assert s.max_timeout == MIN
    assert not s.confirm("c", 101.0)
    assert s.deadline == 100.0 + MIN


def test_confirm_ignores_original_accuser_and_duplicates() -> None:
    s = Suspicion("b", 3, MIN, MAX, incarnation=0, now=100.0)
    assert not s.confirm("b", 101.0)
    assert s.deadline == 100.0 + MAX and s.n == 0
    assert s.confirm("c", 102.0)
    after_c = s.deadline
    assert not s.confirm("c", 103.0)
    assert not s.confirm("b", 103.0)
    assert s.deadline == after_c and s.n == 1


def test_each_confirmation_moves_the_deadline_measured_from_the_start() -> None:
    s = Suspicion("b", 3, MIN, MAX, incarnation=0, now=100.0)
    expected = []
    for i, (who, at) in enumerate([("c", 101.0), ("d", 105.0), ("e", 106.0)], start=1):
        assert s.confirm(who, at)
        assert s.deadline == pytest.approx(100.0 + remaining_timeout(i, 3, 0.0, MIN, MAX))
        expected.append(s.deadline)
    assert expected == sorted(expected, reverse=True)
    assert s.deadline == pytest.approx(100.0 + MIN)


def test_stops_after_k() -> None:
    s = Suspicion("b", 2, MIN, MAX, incarnation=0, now=0.0)
    assert s.confirm("c", 1.0)
    assert s.confirm("d", 1.0)
    assert not s.confirm("e", 1.0)
    assert s.n == 2
    assert s.confirmations == ["b", "c", "d"]
    assert s.deadline == pytest.approx(MIN)


def test_late_confirmation_can_put_the_deadline_in_the_past() -> None:
    s = Suspicion("b", 1, MIN, MAX, incarnation=0, now=0.0)
    assert s.confirm("c", 10.0)
    assert s.deadline == pytest.approx(MIN)
    assert s.deadline < 10.0


# --- the config side: how long, how many --------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 4.0), (1, 4.0), (5, 4.0), (10, 4.0), (20, 4 * math.log10(20)), (100, 8.0), (1000, 12.0)],
)
def test_suspicion_min_timeout(n: int, expected: float) -> None:
    assert GossipConfig().suspicion_min_timeout(n) == pytest.approx(expected)
    cfg = GossipConfig(suspicion_mult=5, probe_interval=0.5, probe_timeout=0.2)
    assert cfg.suspicion_min_timeout(n) == pytest.approx(expected / 4 * 5 * 0.5)


@given(st.integers(1, 100_000), st.integers(1, 10), st.floats(0.1, 10))
@settings(max_examples=200, deadline=None)
def test_suspicion_min_timeout_formula(n: int, mult: int, interval: float) -> None:
    cfg = GossipConfig(suspicion_mult=mult, probe_interval=interval, probe_timeout=interval / 2)
    assert cfg.suspicion_min_timeout(n) == pytest.approx(mult * max(1.0, math.log10(n)) * interval)
