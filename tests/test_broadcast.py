"""The piggyback queue: retransmit limit, replacement, ordering, size budget, pruning."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip.broadcast import BroadcastQueue
from gossip.config import GossipConfig


def _queue(limit: int) -> BroadcastQueue:
    return BroadcastQueue(lambda: limit)


def test_retransmit_limit_honoured() -> None:
    q = _queue(3)
    q.queue("x", b"update")
    assert [q.take(100) for _ in range(4)] == [[b"update"]] * 3 + [[]]
    assert len(q) == 0
    assert "x" not in q


def test_limit_is_read_at_take_time() -> None:
    limit = [5]
    q = BroadcastQueue(lambda: limit[0])
    q.queue("x", b"u")
    assert q.take(10) == [b"u"]
    limit[0] = 2  # the cluster shrank
    assert q.take(10) == [b"u"]
    assert q.take(10) == []


def test_replacement_by_key() -> None:
    q = _queue(3)
    q.queue(("node", "a"), b"alive-1")
    q.queue(("node", "b"), b"alive-b")
    q.queue(("node", "a"), b"suspect-1")
    assert len(q) == 2
    sent = q.take(1000)
    assert b"alive-1" not in sent
    assert sorted(sent) == [b"alive-b", b"suspect-1"]


def test_replacement_resets_transmit_count() -> None:
    q = _queue(2)
    q.queue("a", b"old")
    assert q.take(10) == [b"old"]
    q.queue("a", b"new")
    assert q.take(10) == [b"new"]
    assert q.take(10) == [b"new"]
    assert q.take(10) == []


def test_least_transmitted_first_newest_first_among_equals() -> None:
    q = _queue(10)
    q.queue("a", b"aa")
    q.queue("b", b"bb")
    assert q.take(2) == [b"bb"]  # room for one: the newest of the never-sent
    assert q.take(2) == [b"aa"]  # a has 0 transmits, b has 1
    q.queue("c", b"cc")
    assert q.take(4) == [b"cc", b"bb"]  # c: 0 sends; then b (1 send) newer than a (1 send)
    assert q.take(2) == [b"cc"]  # a and c sent once, c newer; b sent twice
    assert q.take(2) == [b"aa"]


def test_size_budget_skips_what_does_not_fit_and_keeps_looking() -> None:
    q = _queue(10)
    q.queue("small", b"s" * 10)
    q.queue("big", b"b" * 50)
    q.queue("mid", b"m" * 30)
    # newest first: mid (30) fits, big (50) does not, small (10) still does
    assert q.take(45) == [b"m" * 30, b"s" * 10]
    assert q.take(0) == []
    assert q.take(-5) == []


def test_per_message_overhead_counts_against_the_budget() -> None:
    q = _queue(10)
    q.queue("a", b"x" * 10)
    q.queue("b", b"y" * 10)
    assert len(q.take(22, per_message_overhead=2)) == 1
    assert q.take(11, per_message_overhead=2) == []


def test_nothing_taken_means_nothing_counted() -> None:
    q = _queue(1)
    q.queue("big", b"z" * 100)
    for _ in range(5):
        assert q.take(50) == []
    assert q.take(100) == [b"z" * 100]
    assert len(q) == 0


def test_prune_keeps_least_sent_then_newest() -> None:
    q = _queue(10)
    for key in "abcd":
        q.queue(key, key.encode())
    q.take(1)  # d sent once
    q.take(1)  # c sent once
    q.prune(2)
    assert len(q) == 2
    assert "a" in q and "b" in q
    q.prune(5)
    assert len(q) == 2


def test_drop() -> None:
    q = _queue(3)
    q.queue("a", b"a")
    q.drop("a")
    q.drop("never")
    assert len(q) == 0 and q.take(10) == []


@given(
    limit=st.integers(1, 6),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("queue"), st.sampled_from("abcdef"), st.integers(1, 40)),
            st.tuples(st.just("take"), st.just(""), st.integers(0, 120)),
        ),
        max_size=60,
    ),
)
@settings(max_examples=300, deadline=None)
def test_model(limit: int, ops: list[tuple[str, str, int]]) -> None:
    """Never more than ``limit`` sends of one queued value, never over budget, no room left unused."""
    q = _queue(limit)
    sends: Counter[bytes] = Counter()
    pending: dict[str, bytes] = {}
    for i, (op, key, n) in enumerate(ops):
        if op == "queue":
            data = f"{key}{i}:".encode().ljust(n, b".")  # unique per queue call
            q.queue(key, data)
            pending[key] = data
            continue
        got = q.take(n)
        assert sum(len(d) for d in got) <= n
        assert len(set(got)) == len(got)
        sends.update(got)
        for d in got:
            assert d in pending.values()
        # Greedy: whatever is still queued and was not taken did not fit in what was left.
        left = n - sum(len(d) for d in got)
        for key, data in pending.items():
            if key in q and data not in got:
                assert len(data) > left
        pending = {k: v for k, v in pending.items() if k in q}
    assert all(count <= limit for count in sends.values())


# --- how many times: the config formula -------------------------------------------------------------


@pytest.mark.parametrize(("n", "expected"), [(1, 4), (2, 4), (9, 4), (10, 8), (99, 8), (100, 12), (5000, 16)])
def test_retransmit_limit(n: int, expected: int) -> None:
    assert GossipConfig().retransmit_limit(n) == expected


@given(st.integers(1, 1_000_000), st.integers(1, 10))
@settings(max_examples=200, deadline=None)
def test_retransmit_limit_formula(n: int, mult: int) -> None:
    assert GossipConfig(retransmit_mult=mult).retransmit_limit(n) == mult * math.ceil(math.log10(n + 1))
