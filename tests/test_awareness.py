"""Lifeguard's local health awareness score."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.awareness import Awareness


def test_starts_healthy() -> None:
    a = Awareness(8)
    assert a.score == 0
    assert a.scale(1.0) == 1.0


def test_clamps_to_zero_and_max_minus_one() -> None:
    a = Awareness(8)
    a.apply_delta(-5)
    assert a.score == 0
    a.apply_delta(3)
    assert a.score == 3
    a.apply_delta(100)
    assert a.score == 7
    a.apply_delta(1)
    assert a.score == 7
    a.apply_delta(-2)
    assert a.score == 5


def test_scale_multiplies_by_score_plus_one() -> None:
    a = Awareness(8)
    for score in range(8):
        a.score = 0
        a.apply_delta(score)
        assert a.scale(0.5) == pytest.approx(0.5 * (score + 1))


def test_multiplier_one_never_scales() -> None:
    a = Awareness(1)
    a.apply_delta(5)
    assert a.score == 0
    assert a.scale(2.0) == 2.0


def test_multiplier_below_one_refused() -> None:
    with pytest.raises(ValueError):
        Awareness(0)


@given(st.integers(1, 12), st.lists(st.integers(-10, 10), max_size=40))
@settings(max_examples=200, deadline=None)
def test_matches_a_clamped_running_sum(max_multiplier: int, deltas: list[int]) -> None:
    a = Awareness(max_multiplier)
    model = 0
    for d in deltas:
        a.apply_delta(d)
        model = min(max(model + d, 0), max_multiplier - 1)
        assert a.score == model
        assert 0 <= a.score <= max_multiplier - 1
        assert a.scale(1.0) == model + 1
