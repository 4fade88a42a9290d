"""Relay selection: the pure rule (determinism, symmetry, safety) and the selector's hysteresis."""

from __future__ import annotations

import itertools
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transit.reachability import DIRECT, UNREACHABLE, PeerReach, ReachRoute, ReachVector, RouteKind
from transit.relay import (
    Candidate,
    LegState,
    RelaySelector,
    RoutePlanner,
    SelectorConfig,
    best_relay,
    leg,
    relay_candidates,
)

Vectors = dict[str, ReachVector]


def mesh(
    links: Mapping[tuple[str, str], int | None], routes: Mapping[tuple[str, str], ReachRoute] = {}
) -> Vectors:
    """Vectors where both ends of each link report it alike: rtt in ms, or None for down."""
    entries: dict[str, dict[str, PeerReach]] = {}
    for (x, y), rtt in links.items():
        for s, d in ((x, y), (y, x)):
            entries.setdefault(s, {})[d] = PeerReach(rtt is not None, rtt or 0, routes.get((s, d), DIRECT))
    return {name: ReachVector(e) for name, e in entries.items()}


# a and b cannot talk directly; r1, r2, r3 reach both.
BASE: dict[tuple[str, str], int | None] = {
    ("a", "b"): None,
    ("a", "r1"): 10,
    ("r1", "b"): 10,
    ("a", "r2"): 15,
    ("r2", "b"): 15,
    ("a", "r3"): 40,
    ("r3", "b"): 5,
}


def with_links(**changes: int | None) -> Vectors:
    links = dict(BASE)
    for key, rtt in changes.items():
        x, y = key.split("_")
        links[(x, y)] = rtt
    return mesh(links)


# --- the pure rule ------------------------------------------------------------------------------


def test_leg_needs_both_reports_and_takes_the_larger_rtt() -> None:
    v = {
        "x": ReachVector({"y": PeerReach(True, 10)}),
        "y": ReachVector({"x": PeerReach(True, 30)}),
    }
    assert leg(v, "x", "y") == leg(v, "y", "x")
    assert leg(v, "x", "y").state is LegState.UP and leg(v, "x", "y").rtt_ms == 30
    one_sided = {"x": ReachVector({"y": PeerReach(True, 10)})}
    assert leg(one_sided, "x", "y").state is LegState.UNKNOWN
    disagree = {"x": ReachVector({"y": PeerReach(True, 10)}), "y": ReachVector({"x": PeerReach(False)})}
    assert leg(disagree, "x", "y").state is LegState.DOWN
    assert leg({}, "x", "y").state is LegState.UNKNOWN


def test_candidates_scored_and_ordered() -> None:
    v = with_links()
    assert relay_candidates(v, "a", "b") == [Candidate(20, "r1"), Candidate(30, "r2"), Candidate(45, "r3")]
    assert best_relay(v, "b", "a") == Candidate(20, "r1")


def test_ties_are_broken_by_name() -> None:
    v = with_links(a_r2=10, r2_b=10)
    assert [c.relay for c in relay_candidates(v, "a", "b")] == ["r1", "r2", "r3"]
    v = mesh({("a", "b"): None, ("a", "z"): 5, ("z", "b"): 5, ("a", "m"): 5, ("m", "b"): 5})
    assert best_relay(v, "a", "b") == best_relay(v, "b", "a") == Candidate(10, "m")


def test_no_candidate() -> None:
    v = mesh({("a", "b"): None, ("a", "r"): 5, ("r", "b"): None})
    assert best_relay(v, "a", "b") is None
    sel = RelaySelector("a", "b")
    assert sel.update(v, 0.0) == UNREACHABLE


# Random reachability matrices: every ordered pair reports nothing, down, or up with an RTT; some
# members have published no vector at all.
NAMES = ["a", "b", "c", "d", "e", "f"]
report = st.one_of(st.none(), st.just(-1), st.integers(0, 300))


@st.composite
def matrices(draw: st.DrawFn, names: list[str] = NAMES) -> Vectors:
    out: Vectors = {}
    for x in names:
        if not draw(st.booleans()) and x not in ("a", "b"):
            continue  # no vector from x (yet)
        entries = {}
        for y in names:
            if y == x:
                continue
            r = draw(report)
            if r is not None:
                entries[y] = PeerReach(r >= 0, max(r, 0))
        out[x] = ReachVector(entries)
    return out


@settings(max_examples=300)
@given(matrices())
def test_symmetric_and_never_a_relay_with_a_leg_not_up(v: Vectors) -> None:
    for a, b in itertools.permutations(NAMES, 2):
        assert leg(v, a, b) == leg(v, b, a)
        cands = relay_candidates(v, a, b)
        assert cands == relay_candidates(v, b, a)
        assert cands == sorted(cands)
        for c in cands:
            assert c.relay not in (a, b)
            ar, rb = leg(v, a, c.relay), leg(v, c.relay, b)
            assert ar.state is LegState.UP and rb.state is LegState.UP
            assert c.score_ms == ar.rtt_ms + rb.rtt_ms
        # complete: every member with both legs up is a candidate
        usable = {
            r
            for r in NAMES
            if r not in (a, b) and leg(v, a, r).state is LegState.UP and leg(v, r, b).state is LegState.UP
        }
        assert {c.relay for c in cands} == usable


@given(matrices(), st.data())
def test_deterministic_whatever_the_order_of_the_data(v: Vectors, data: st.DataObject) -> None:
    order = data.draw(st.permutations(list(v)))
    shuffled: Vectors = {}
    for name in order:
        items = list(v[name].entries.items())
        shuffled[name] = ReachVector(dict(data.draw(st.permutations(items))))
    for a, b in itertools.permutations(NAMES, 2):
        assert relay_candidates(v, a, b) == relay_candidates(shuffled, a, b)
        assert best_relay(v, a, b) == best_relay(shuffled, b, a)


# --- the selector ---------------------------------------------------------------------------------


def test_starts_direct_and_unknown_changes_nothing() -> None:
    sel = RelaySelector("a", "b")
    assert sel.route == DIRECT
    assert sel.update({}, 0.0) == DIRECT  # nothing known yet: a new peer is tried directly
    assert sel.update(mesh({("a", "r1"): 1, ("r1", "b"): 1}), 1.0) == DIRECT


def test_direct_down_switches_at_once_to_the_best_relay() -> None:
    sel = RelaySelector("a", "b")
    assert sel.update(mesh({**BASE, ("a", "b"): 3}), 0.0) == DIRECT
    assert sel.update(with_links(), 0.1) == ReachRoute.via("r1")
    assert "direct path down" in sel.reason


def test_a_better_relay_wins_only_after_holding_its_margin() -> None:
    cfg = SelectorConfig(switch_margin_ms=10, switch_margin_ratio=0.2, switch_hold=10.0)
    sel = RelaySelector("a", "b", cfg)
    assert sel.update(with_links(), 0.0) == ReachRoute.via("r1")  # r1 = 20 ms
    # r2 becomes 12 ms: better, but not by max(10 ms, 20 %): never switch.
    close = with_links(a_r2=6, r2_b=6)
    for t in range(1, 60):
        assert sel.update(close, float(t)) == ReachRoute.via("r1")
    # r2 becomes 4 ms: better by 16 ms > 10 ms; switch after 10 s, not before.
    far = with_links(a_r2=2, r2_b=2)
    assert sel.update(far, 100.0) == ReachRoute.via("r1")
    assert sel.next_deadline() == 110.0
    assert sel.update(far, 109.9) == ReachRoute.via("r1")
    assert sel.update(far, 110.0) == ReachRoute.via("r2")
    assert "beat" in sel.reason


def test_an_interrupted_advantage_restarts_the_hold() -> None:
    sel = RelaySelector("a", "b")
    sel.update(with_links(), 0.0)
    far = with_links(a_r2=2, r2_b=2)
    sel.update(far, 1.0)
    sel.update(with_links(), 8.0)  # the advantage is gone for a moment
    assert sel.next_deadline() == float("inf")
    sel.update(far, 9.0)
    assert sel.update(far, 18.9) == ReachRoute.via("r1")
    assert sel.update(far, 19.0) == ReachRoute.via("r2")


def test_flapping_direct_path_never_fails_back_before_the_hold() -> None:
    cfg = SelectorConfig(failback_hold=15.0)
    sel = RelaySelector("a", "b", cfg)
    sel.update(with_links(), 0.0)
    up = with_links(a_b=3)
    t = 1.0
    for _ in range(20):  # up 10 s, down 1 s, repeatedly: stays on the relay
        sel.update(up, t)
        assert sel.update(up, t + 10.0) == ReachRoute.via("r1")
        assert sel.update(with_links(), t + 10.5) == ReachRoute.via("r1")
        t += 11.0
    sel.update(up, t)
    assert sel.next_deadline() == t + 15.0
    assert sel.update(up, t + 14.9) == ReachRoute.via("r1")
    assert sel.update(up, t + 15.0) == DIRECT
    assert "fail back" in sel.reason


def test_candidate_lost_while_in_use() -> None:
    sel = RelaySelector("a", "b")
    assert sel.update(with_links(), 0.0) == ReachRoute.via("r1")
    assert sel.update(with_links(r1_b=None), 1.0) == ReachRoute.via("r2")  # at once, no hold
    assert "lost a leg" in sel.reason
    # r1 comes back better than r2 but not by the margin: stay on r2
    assert sel.update(with_links(), 2.0) == ReachRoute.via("r2")
    # every relay gone: unreachable, then back to a relay as soon as one appears
    none = mesh({("a", "b"): None, ("a", "r1"): None, ("r1", "b"): 1})
    assert sel.update(none, 3.0) == UNREACHABLE
    assert sel.update(with_links(a_r2=None, a_r1=None), 4.0) == ReachRoute.via("r3")
    # relay lost while the direct path is up (in its fail-back hold): go direct at once
    assert sel.update(with_links(a_b=5, a_r2=None, a_r1=None), 5.0) == ReachRoute.via("r3")
    assert sel.update(with_links(a_b=5, a_r2=None, a_r1=None, r3_b=None), 6.0) == DIRECT


def test_relay_member_gone_from_the_data_counts_as_lost() -> None:
    sel = RelaySelector("a", "b")
    v = with_links()
    sel.update(v, 0.0)
    del v["r1"]  # r1 died: the driver passes live members' vectors only
    assert sel.update(v, 1.0) == ReachRoute.via("r2")


def test_unreachable_goes_direct_at_once_when_the_path_returns() -> None:
    sel = RelaySelector("a", "b")
    isolated = mesh({("a", "b"): None})
    assert sel.update(isolated, 0.0) == UNREACHABLE
    assert sel.update(mesh({("a", "b"): 2}), 1.0) == DIRECT


def test_first_switch_agrees_at_both_ends_without_waiting_for_the_other() -> None:
    """The direct path drops: each end switches on its own verdict, the leader's vector still saying
    direct, and both land on the same relay."""
    a_side, b_side = RelaySelector("a", "b"), RelaySelector("b", "a")
    before = mesh({**BASE, ("a", "b"): 3})
    assert a_side.update(before, 0.0) == b_side.update(before, 0.0) == DIRECT
    # b noticed first: its own vector says a is down; a's (stale) vector still says b is up, direct.
    b_first = {**before, "b": with_links()["b"]}
    assert b_side.update(b_first, 3.0) == ReachRoute.via("r1")
    a_first = {**before, "a": with_links()["a"]}
    assert a_side.update(a_first, 3.2) == ReachRoute.via("r1")


def test_the_follower_converges_on_the_leaders_relay() -> None:
    leader, follower = RelaySelector("a", "b"), RelaySelector("b", "a")
    assert leader.leader and not follower.leader
    # The follower went to r2 while its data differed (r1 looked down then).
    assert follower.update(with_links(a_r1=None), 0.0) == ReachRoute.via("r2")
    assert leader.update(with_links(), 0.0) == ReachRoute.via("r1")
    # Now both see the same data; r1 is not better than r2 by the margin, so by hysteresis alone the
    # follower would stay on r2 for ever. The leader's published route settles it.
    published = mesh(BASE, routes={("a", "b"): leader.route})
    assert follower.update(published, 2.0) == ReachRoute.via("r1")
    assert leader.update(published, 2.0) == ReachRoute.via("r1")
    # A stale published route that is no longer valid is left by the rule, at once.
    stale = mesh({**BASE, ("r1", "b"): None}, routes={("a", "b"): ReachRoute.via("r1")})
    assert follower.update(stale, 3.0) == leader.update(stale, 3.0) == ReachRoute.via("r2")


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[float, Vectors]]:
    steps = draw(st.integers(1, 25))
    t = 0.0
    out = []
    for _ in range(steps):
        t += draw(st.sampled_from([0.1, 1.0, 5.0, 10.0, 15.0, 30.0]))
        out.append((t, draw(matrices(["a", "b", "c", "d", "e"]))))
        if draw(st.booleans()) and out:  # data often stays the same for a while: holds can expire
            for _ in range(draw(st.integers(1, 4))):
                t += draw(st.sampled_from([1.0, 5.0, 10.0]))
                out.append((t, out[-1][1]))
    return out


def _publish(v: Vectors, owner: str, peer: str, route: ReachRoute) -> Vectors:
    """``owner``'s vector with its route to ``peer`` filled in, as its real vector would carry it."""
    own = v.get(owner)
    if own is None or peer not in own.entries:
        return v
    entries = dict(own.entries)
    e = entries[peer]
    entries[peer] = PeerReach(e.up, e.rtt_ms, route)
    return {**v, owner: ReachVector(entries)}


@settings(max_examples=200)
@given(histories())
def test_both_ends_choose_the_same_route_at_every_step(history: list[tuple[float, Vectors]]) -> None:
    """A -> B and B -> A fed the same shared data at the same times agree at every step (once the
    leader's vector carries its route to b), and every relay they pick has both legs up."""
    a_side, b_side = RelaySelector("a", "b"), RelaySelector("b", "a")
    for t, v in history:
        ra = a_side.update(v, t)
        v = _publish(v, "a", "b", ra)  # the leader's decision, as its vector carries it
        assert a_side.update(v, t) == ra  # the leader ignores its own published route
        rb = b_side.update(v, t)
        if "b" in v.get("a", ReachVector()).entries:
            assert ra == rb, (t, a_side.reason, b_side.reason)
        if ra.kind is RouteKind.RELAY:
            assert ra.relay is not None
            assert leg(v, "a", ra.relay).state is LegState.UP and leg(v, ra.relay, "b").state is LegState.UP
        if ra.kind is RouteKind.UNREACHABLE:
            assert best_relay(v, "a", "b") is None


@settings(max_examples=100)
@given(histories(), histories(), histories())
def test_ends_that_diverged_agree_from_the_first_shared_step(
    a_only: list[tuple[float, Vectors]],
    b_only: list[tuple[float, Vectors]],
    shared: list[tuple[float, Vectors]],
) -> None:
    """Whatever different data each end saw before (gossip delays, a partition), once the follower
    has the leader's vector with its route in it, they agree, at once and from then on."""
    a_side, b_side = RelaySelector("a", "b"), RelaySelector("b", "a")
    for t, v in a_only:
        a_side.update(v, t)
    for t, v in b_only:
        b_side.update(v, t)
    start = max(a_only[-1][0], b_only[-1][0])
    for t, v in shared:
        ra = a_side.update(v, start + t)
        v = _publish(v, "a", "b", ra)
        rb = b_side.update(v, start + t)
        if "b" in v.get("a", ReachVector()).entries:
            assert ra == rb


@given(matrices(), st.lists(st.floats(0.0, 1000.0), min_size=2, max_size=30))
def test_static_data_gives_at_most_one_change(v: Vectors, times: list[float]) -> None:
    """With data that does not change, the route settles on the first update and stays: no flapping."""
    sel = RelaySelector("a", "b")
    routes = [sel.update(v, t) for t in sorted(times)]
    assert len(set(routes)) == 1
    if leg(v, "a", "b").state is LegState.DOWN:
        best = best_relay(v, "a", "b")
        assert routes[0] == (UNREACHABLE if best is None else ReachRoute.via(best.relay))
    else:
        assert routes[0] == DIRECT


def test_planner_follows_membership() -> None:
    planner = RoutePlanner("a")
    v = with_links()
    assert planner.update(v, ["a", "b", "r1"], 0.0) == {"b": ReachRoute.via("r1"), "r1": DIRECT}
    sel = planner.selector("b")
    assert sel is not None
    assert planner.update(v, ["b"], 1.0) == {"b": ReachRoute.via("r1")}
    assert planner.selector("r1") is None and planner.selector("b") is sel
    assert planner.next_deadline() == float("inf")


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        SelectorConfig(switch_margin_ratio=1.5)
    with pytest.raises(ValueError):
        SelectorConfig(failback_hold=-1)
    with pytest.raises(ValueError):
        RelaySelector("a", "a")


# --- relay opt-out ----------------------------------------------------------------------------------


def test_a_machine_that_opted_out_is_never_a_relay() -> None:
    v = mesh(BASE)
    assert [c.relay for c in relay_candidates(v, "a", "b", {"r1"})] == ["r2", "r3"]
    assert relay_candidates(v, "b", "a", {"r1"}) == relay_candidates(v, "a", "b", {"r1"})  # symmetric
    assert best_relay(v, "a", "b", {"r1", "r2", "r3"}) is None
    sel_a, sel_b = RelaySelector("a", "b"), RelaySelector("b", "a")
    assert sel_a.update(v, 0.0, {"r1"}) == ReachRoute.via("r2") == sel_b.update(v, 0.0, {"r1"})
    # a relay in use that opts out (a restart with the new setting) is left at once
    assert sel_a.update(v, 1.0, {"r1", "r2"}) == ReachRoute.via("r3")
    planner = RoutePlanner("a")
    assert planner.update(v, ["b"], 0.0, {"r1", "r2", "r3"}) == {"b": UNREACHABLE}


@settings(max_examples=200)
@given(matrices(), st.sets(st.sampled_from(NAMES)))
def test_opted_out_machines_are_skipped_symmetrically(v: Vectors, no_relay: set[str]) -> None:
    for a, b in itertools.permutations(NAMES, 2):
        cands = relay_candidates(v, a, b, no_relay)
        assert cands == relay_candidates(v, b, a, no_relay)
        assert not {c.relay for c in cands} & no_relay
        assert cands == [c for c in relay_candidates(v, a, b) if c.relay not in no_relay]
