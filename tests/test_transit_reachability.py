"""Reachability vector codec and publishing policy."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.codec import WireError
from transit.pathmon import PathState, PathStatus
from transit.reachability import (
    DIRECT,
    REACH,
    UNREACHABLE,
    PeerReach,
    PublishConfig,
    ReachRoute,
    ReachVector,
    VectorPublisher,
    rtt_to_ms,
    vector_from_paths,
)


def status(state: PathState, rtt: float | None = 0.0123) -> PathStatus:
    return PathStatus(state, 0.0, "", rtt, None, 0.0, 0, 0, None)


def test_round_trip_all_route_kinds() -> None:
    v = ReachVector(
        {
            "b": PeerReach(True, 12),
            "c": PeerReach(False, 0, ReachRoute.via("d")),
            # relayed while the direct path is in fail-back hold
            "d": PeerReach(True, 65535, ReachRoute.via("b")),
            "e": PeerReach(False, 0, UNREACHABLE),
        }
    )
    assert REACH.parse(REACH.encode(v)) == v


def test_encoding_is_canonical_and_compact() -> None:
    entries = {f"node-{i:05d}": PeerReach(i % 3 != 0, i % 300) for i in range(100)}
    forward = ReachVector(entries)
    backward = ReachVector(dict(reversed(list(entries.items()))))
    assert REACH.encode(forward) == REACH.encode(backward)
    assert len(REACH.encode(forward)) < 100 * 18  # ~name + 5 bytes per peer


def test_vector_from_paths_skips_pending_and_rounds_rtt_up() -> None:
    v = vector_from_paths(
        {
            "b": status(PathState.UP, 0.0003),
            "c": status(PathState.DOWN),
            "d": status(PathState.PENDING),
            "e": status(PathState.UP, 0.0121),
        },
        {"c": ReachRoute.via("e")},
    )
    assert v.entries == {
        "b": PeerReach(True, 1),
        "c": PeerReach(False, 0, ReachRoute.via("e")),
        "e": PeerReach(True, 13),
    }


def test_rtt_to_ms_edges() -> None:
    assert rtt_to_ms(None) == 0 and rtt_to_ms(0.0) == 0 and rtt_to_ms(float("nan")) == 0
    assert rtt_to_ms(0.001) == 1 and rtt_to_ms(0.0010001) == 2 and rtt_to_ms(1e9) == 65535


def test_route_invariants() -> None:
    with pytest.raises(ValueError):
        ReachRoute(DIRECT.kind, "x")
    with pytest.raises(ValueError):
        ReachRoute(ReachRoute.via("x").kind)
    assert str(ReachRoute.via("r")) == "via r" and str(DIRECT) == "direct"


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [1],
        [2, {}],
        [True, {}],
        [1, []],
        [1, {"b": [1]}],
        [1, {"b": [4, 1]}],  # unknown flag
        [1, {"b": [1, -1]}],
        [1, {"b": [1, 70000]}],
        [1, {"b": [1, 1.5]}],
        [1, {"b": [1, 1, 7]}],
        [1, {"b": [1, 1, ""]}],
        [1, {"b": [0, 0, "b"]}],  # relayed through itself
        [1, {"b": [2, 0, "c"]}],  # unreachable and relayed
        [1, {"": [1, 1]}],
        [1, {5: [1, 1]}],
        [1, {"b": [1, 1, "c", "extra"]}],
    ],
)
def test_malformed_vectors_are_refused(raw: object) -> None:
    with pytest.raises(WireError):
        REACH.parse(msgpack.packb(raw, use_bin_type=True))


@given(st.binary(max_size=300))
def test_decoder_raises_only_reach_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        REACH.parse(data)


def test_publisher_sends_state_changes_at_once_and_rtt_changes_sparingly() -> None:
    pub = VectorPublisher(PublishConfig(rtt_interval=5.0, rtt_change_ratio=0.25, rtt_change_ms=5))
    v1 = ReachVector({"b": PeerReach(True, 20)})
    assert pub.offer(v1, 0.0) == REACH.encode(v1)
    assert pub.offer(v1, 1.0) is None
    assert pub.offer(ReachVector({"b": PeerReach(True, 24)}), 1.5) is None  # small wobble
    big = ReachVector({"b": PeerReach(True, 40)})
    assert pub.offer(big, 2.0) is None  # big, but too soon after the last publish
    assert pub.offer(ReachVector({"b": PeerReach(True, 24)}), 9.0) is None  # wobble, even when allowed
    assert pub.offer(big, 9.5) == REACH.encode(big)
    down = ReachVector({"b": PeerReach(False, 0)})
    assert pub.offer(down, 9.6) == REACH.encode(down)  # state change: at once
    relayed = ReachVector({"b": PeerReach(False, 0, ReachRoute.via("c"))})
    assert pub.offer(relayed, 9.7) == REACH.encode(relayed)  # route change: at once
    more = ReachVector({"b": PeerReach(False, 0, ReachRoute.via("c")), "c": PeerReach(True, 3)})
    assert pub.offer(more, 9.8) == REACH.encode(more)  # a new peer: at once
