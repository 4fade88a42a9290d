"""The supervisor's decisions without I/O: restart backoff and neighbor-change batching."""

from __future__ import annotations

import pytest

from agent.bgp.config import Neighbor
from agent.bgp.lifecycle import NeighborBatcher, ReloadReason
from common.backoff import RestartBackoff


def n(address: str, hold_time: int = 90) -> Neighbor:
    return Neighbor(address, 65000, 65001, "198.18.0.2", hold_time=hold_time)


def test_backoff_grows_caps_and_resets_after_a_stable_run() -> None:
    b = RestartBackoff(initial=0.5, maximum=4, stable_after=60)
    assert [b.delay_after(1) for _ in range(6)] == [0.5, 1, 2, 4, 4, 4]
    assert b.delay_after(61) == 0.5  # it ran long enough: a fresh failure, not a crash loop
    assert b.delay_after(1) == 1
    with pytest.raises(ValueError):
        RestartBackoff(initial=0)


def test_start_applies_everything_and_resyncs_all() -> None:
    batcher = NeighborBatcher([n("198.18.0.1"), n("198.18.0.3")], window=1.0)
    plan = batcher.start(restart=False)
    assert {x.address for x in plan.neighbors} == {"198.18.0.1", "198.18.0.3"}
    assert plan.resync.reason is ReloadReason.START
    assert plan.resync.neighbors == {"198.18.0.1", "198.18.0.3"}
    assert batcher.start(restart=True).resync.reason is ReloadReason.RESTART
    assert batcher.deadline is None


def test_a_join_storm_is_one_reload() -> None:
    batcher = NeighborBatcher([n("198.18.0.1")], window=1.0)
    batcher.start(restart=False)
    members = [n("198.18.0.1")]
    for i in range(50):  # 50 joins over 0.5 s
        members.append(n(f"198.18.1.{i + 1}"))
        batcher.set_neighbors(members, now=10.0 + i * 0.01)
    assert batcher.deadline == 11.0  # fixed window from the first change
    assert batcher.poll(10.99) is None
    plan = batcher.poll(11.0)
    assert plan is not None and len(plan.neighbors) == 51
    assert plan.resync.reason is ReloadReason.RELOAD and len(plan.resync.neighbors) == 50
    assert batcher.poll(12.0) is None and batcher.deadline is None


def test_changes_removals_and_a_change_that_cancels_out() -> None:
    batcher = NeighborBatcher([n("198.18.0.1"), n("198.18.0.3")], window=1.0)
    batcher.start(restart=False)
    batcher.set_neighbors([n("198.18.0.1")], now=0.0)  # a member leaves...
    batcher.set_neighbors([n("198.18.0.1"), n("198.18.0.3")], now=0.5)  # ...and is back within the window
    assert batcher.deadline is None and batcher.poll(5.0) is None
    batcher.set_neighbors([n("198.18.0.1", hold_time=30)], now=10.0)
    plan = batcher.poll(11.0)
    assert plan is not None
    assert plan.resync.neighbors == {"198.18.0.1"}  # changed settings: a new session, routes again
    assert plan.resync.removed == {"198.18.0.3"}


def test_a_trickle_still_reloads_once_per_window() -> None:
    batcher = NeighborBatcher(window=1.0)
    batcher.start(restart=False)
    reloads = 0
    members: list[Neighbor] = []
    for step in range(100):  # a join every 0.1 s for 10 s
        now = step * 0.1
        members.append(n(f"198.18.2.{step + 1}"))
        batcher.set_neighbors(members, now)
        if batcher.poll(now):
            reloads += 1
    assert 9 <= reloads <= 10
