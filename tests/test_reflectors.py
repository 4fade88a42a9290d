"""The route reflector placement rule: the same set everywhere from the same membership, sticky under
churn, hysteresis for suspects, claims resolved to k, sessions per role, and switches without a
blackhole (no pair of live machines left without a BGP path at any step)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent.bgp.reflectors import (
    LIVE_STATES,
    Mode,
    Params,
    Placement,
    Role,
    Session,
    SessionPlan,
    Speaker,
    census,
    name_hash,
    own_claim,
    params_from,
    place,
    session_plan,
    settled,
    speakers_from,
    transition,
    uncovered,
)
from agent.config.bgp import BgpSettings
from agent.published import BGP, BGP_KEY, Eligibility, ReflectorInfo, SpeakerInfo
from gossip import MemberInfo, MemberState, Refusals

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
AUTO, ALWAYS, NEVER = Eligibility.AUTO, Eligibility.ALWAYS, Eligibility.NEVER
PARAMS = Params()
EXAMPLES = settings(max_examples=100, deadline=None)


def machines(n: int, prefix: str = "m") -> list[Speaker]:
    return [Speaker(f"{prefix}{i:02d}", ALIVE) for i in range(n)]


def settle(view: list[Speaker], params: Params = PARAMS) -> list[Speaker]:
    """Let every alive machine publish the claim the rule tells it to, until nothing changes (what
    gossip converges to). Dead, left and suspect members publish nothing new."""
    now = max((s.claim or 0 for s in view), default=0) + 1
    for _ in range(4):
        placement = place(view, params)
        new = [
            replace(s, claim=own_claim(placement, s.name, s.claim, now))
            if s.state is ALIVE and s.eligibility is not None
            else s
            for s in view
        ]
        if new == view:
            return view
        view, now = new, now + 1
    raise AssertionError("claims did not settle")


def reflectors(view: list[Speaker], params: Params = PARAMS) -> tuple[str, ...]:
    return place(view, params).reflectors


# --- strategies -----------------------------------------------------------------------------------

eligibilities = st.sampled_from([AUTO, AUTO, AUTO, AUTO, NEVER, ALWAYS, None])
states = st.sampled_from([ALIVE, ALIVE, ALIVE, ALIVE, SUSPECT, DEAD, LEFT])


@st.composite
def views(draw: st.DrawFn, min_size: int = 0, max_size: int = 30, always: bool = True) -> list[Speaker]:
    """A membership view: unique names, mixed states and eligibilities, some claims."""
    names = draw(st.lists(st.integers(0, 99), min_size=min_size, max_size=max_size, unique=True))
    out = []
    for i in names:
        eligibility = draw(eligibilities if always else st.sampled_from([AUTO, AUTO, NEVER]))
        state = draw(states)
        claim = draw(st.none() | st.integers(1, 50)) if eligibility is not None else None
        suspect_for = draw(st.floats(0, 60)) if state is SUSPECT else 0.0
        out.append(Speaker(f"m{i:02d}", state, eligibility, claim, suspect_for))
    return out


# --- the same set everywhere ----------------------------------------------------------------------


@EXAMPLES
@given(views(), st.randoms(use_true_random=False))
def test_every_agent_computes_the_same_placement_in_any_order(
    view: list[Speaker], rnd: random.Random
) -> None:
    shuffled = list(view)
    rnd.shuffle(shuffled)
    assert place(shuffled) == place(view)


def test_a_newly_joined_agent_computes_the_set_the_others_hold() -> None:
    """It has no history, only the published claims, and those are the memory: after a reflector died,
    was replaced, and came back, a fresh view picks the replacement, not the lowest hashes."""
    view = settle(machines(12))
    first, second = reflectors(view)
    view = settle([replace(s, state=DEAD) if s.name == first else s for s in view])
    replacement = next(r for r in reflectors(view) if r != second)
    # It comes back (a restart: a new incarnation, nothing published yet, so no claim).
    view = settle([replace(s, state=ALIVE, claim=None) if s.name == first else s for s in view])
    held = reflectors(view)
    assert held == tuple(sorted((second, replacement)))
    newcomer_view = [*view, Speaker("zz-new", ALIVE)]
    random.Random(4).shuffle(newcomer_view)
    assert reflectors(newcomer_view) == held
    # Without the claims, a rule on hashes alone would have moved the role back.
    assert reflectors([replace(s, claim=None) for s in newcomer_view]) != held


def test_a_name_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"m01.*twice"):
        place([Speaker("m01", ALIVE), Speaker("m01", SUSPECT)])


# --- stickiness -----------------------------------------------------------------------------------


@EXAMPLES
@given(
    views(min_size=10, max_size=25, always=False),
    st.lists(st.tuples(st.integers(0, 99), st.sampled_from([SUSPECT, DEAD, LEFT, None])), max_size=10),
    st.lists(st.tuples(st.integers(100, 199), st.sampled_from([AUTO, NEVER])), max_size=10),
)
def test_churn_of_non_reflectors_never_changes_the_set(
    view: list[Speaker],
    losses: list[tuple[int, MemberState | None]],
    joins: list[tuple[int, Eligibility]],
) -> None:
    view = settle([replace(s, state=ALIVE, suspect_for=0.0) for s in view])
    before = place(view)
    assume(before.mode is Mode.REFLECTED and len(before.reflectors) == PARAMS.k)
    clients = [s.name for s in view if s.name not in before.reflectors]
    churned = {s.name: s for s in view}
    for i, state in losses:
        victim = clients[i % len(clients)]
        if state is None:
            churned.pop(victim, None)  # reaped: gone from the view
        elif victim in churned:
            churned[victim] = replace(churned[victim], state=state, suspect_for=99.0)
    for i, eligibility in joins:
        churned[f"j{i}"] = Speaker(f"j{i}", ALIVE, eligibility)
    after = list(churned.values())
    assume(sum(1 for s in after if s.state in LIVE_STATES) >= PARAMS.full_mesh_below)
    assert place(after).reflectors == before.reflectors
    assert place(settle(after)).reflectors == before.reflectors


def test_the_first_placement_is_the_lowest_hashes_and_then_it_sticks() -> None:
    view = machines(12)
    lowest = tuple(sorted(sorted((s.name for s in view), key=name_hash)[:2]))
    assert reflectors(view) == lowest
    view = settle(view)
    # A newcomer whose name hashes lower than both reflectors does not take a seat.
    newcomer = next(n for n in (f"x{i}" for i in range(1000)) if name_hash(n) < min(map(name_hash, lowest)))
    assert reflectors([*view, Speaker(newcomer, ALIVE)]) == lowest


@EXAMPLES
@given(views(min_size=10, max_size=25, always=False), st.floats(0, PARAMS.suspect_hold), st.data())
def test_a_suspect_reflector_keeps_its_role_within_the_hold(
    view: list[Speaker], suspect_for: float, data: st.DataObject
) -> None:
    view = settle([replace(s, state=ALIVE) for s in view])
    held = place(view)
    assume(held.mode is Mode.REFLECTED)
    victim = data.draw(st.sampled_from(held.reflectors))
    suspected = [replace(s, state=SUSPECT, suspect_for=suspect_for) if s.name == victim else s for s in view]
    assert place(suspected).reflectors == held.reflectors
    assert place(settle(suspected)).reflectors == held.reflectors
    # Past the hold it is replaced, as if dead.
    late = [replace(s, suspect_for=PARAMS.suspect_hold + 0.5) if s.name == victim else s for s in suspected]
    dead = [replace(s, state=DEAD) if s.name == victim else s for s in suspected]
    assert victim not in place(late).reflectors
    assert place(late).reflectors == place(dead).reflectors


@EXAMPLES
@given(views(min_size=10, max_size=20, always=False), st.sampled_from([DEAD, LEFT]), st.data())
def test_a_dead_reflector_is_replaced_by_exactly_one_new_one(
    view: list[Speaker], gone: MemberState, data: st.DataObject
) -> None:
    view = settle([replace(s, state=ALIVE) for s in view])
    held = place(view)
    auto = [r for r in held.reflectors if next(s for s in view if s.name == r).eligibility is AUTO]
    spare = [s for s in view if s.eligibility is AUTO and s.name not in held.reflectors]
    assume(held.mode is Mode.REFLECTED and auto and spare)
    victim = data.draw(st.sampled_from(auto))
    after = settle([replace(s, state=gone) if s.name == victim else s for s in view])
    new = place(after).reflectors
    assert set(held.reflectors) - set(new) == {victim}
    assert len(set(new) - set(held.reflectors)) == 1
    # The replacement is the fill rule's pick: the alive auto non-claimer with the lowest hash.
    assert set(new) - set(held.reflectors) == {min((s.name for s in spare), key=name_hash)}


@EXAMPLES
@given(
    st.lists(st.integers(1, 30), min_size=3, max_size=12),
    st.integers(1, 4),
    st.randoms(use_true_random=False),
)
def test_more_than_k_claims_resolve_to_k_everywhere(claims: list[int], k: int, rnd: random.Random) -> None:
    """A healed partition: both sides had their reflectors; the earliest claims win, then lowest hash."""
    assume(len(claims) > k)
    params = Params(k=k, full_mesh_below=8)
    view = [Speaker(f"c{i}", ALIVE, AUTO, claim) for i, claim in enumerate(claims)] + machines(8)
    expected = sorted((s for s in view if s.claim is not None), key=lambda s: (s.claim, name_hash(s.name)))
    views_ = [rnd.sample(view, len(view)) for _ in range(3)]
    placements = {place(v, params) for v in views_}
    assert len(placements) == 1
    (placement,) = placements
    assert placement.reflectors == tuple(sorted(s.name for s in expected[:k]))
    # The losers withdraw their claims; the set stays.
    assert place(settle(view, params), params).reflectors == placement.reflectors
    assert sum(1 for s in settle(view, params) if s.claim is not None) == k


# --- never, always, legacy ------------------------------------------------------------------------


@EXAMPLES
@given(views(min_size=1))
def test_never_is_never_a_reflector_and_always_always_is(view: list[Speaker]) -> None:
    for v in (view, settle(view)):
        placement = place(v)
        members = {s.name: s for s in v}
        assert not any(members[r].eligibility in (NEVER, None) for r in placement.reflectors)
        assert not any(members[r].state not in LIVE_STATES for r in placement.reflectors)
        if placement.mode is Mode.REFLECTED:
            holding_always = {
                s.name
                for s in v
                if s.eligibility is ALWAYS
                and (s.state is ALIVE or (s.state is SUSPECT and s.suspect_for <= PARAMS.suspect_hold))
            }
            assert holding_always <= set(placement.reflectors)
            assert len(placement.reflectors) <= max(PARAMS.k, len(holding_always))


def test_an_always_member_joining_displaces_the_newest_auto_claimer_once() -> None:
    view = settle(machines(10))
    first = reflectors(view)
    view = settle([*view, Speaker("boss", ALIVE, ALWAYS)])
    second = reflectors(view)
    assert "boss" in second and len(second) == 2 and len(set(first) & set(second)) == 1
    assert reflectors(settle(view)) == second


def test_a_mesh_where_no_one_may_reflect_stays_a_full_mesh() -> None:
    view = [Speaker(f"m{i:02d}", ALIVE, NEVER if i % 2 else None) for i in range(20)]
    placement = place(view)
    assert placement.mode is Mode.FULL_MESH and placement.reflectors == ()
    assert all(placement.role(s.name) is Role.PEER for s in view)


def test_every_machine_keeps_a_direct_session_to_a_legacy_member() -> None:
    view = settle([*machines(12), Speaker("old", ALIVE, None)])
    placement = place(view)
    assert placement.mode is Mode.REFLECTED and "old" not in placement.reflectors
    assert placement.role("old") is Role.PEER
    plan = session_plan(placement)
    assert plan.peers_of("old") == placement.machines - {"old"}
    for name in placement.machines:
        assert plan.peers_of(name) == placement.peers_of(name)
    assert uncovered(plan, {s.pair for s in plan.sessions}) == []


# --- full mesh or reflected -----------------------------------------------------------------------


def test_full_mesh_below_the_threshold_and_hysteresis_on_the_way_down() -> None:
    view = settle(machines(7))
    assert place(view).mode is Mode.FULL_MESH
    view = settle([*view, Speaker("m07", ALIVE)])  # 8: reflected, and the reflectors claim
    assert place(view).mode is Mode.REFLECTED
    held = reflectors(view)
    clients = [s.name for s in view if s.name not in held]

    def leave(view: list[Speaker], name: str) -> list[Speaker]:
        return settle([replace(s, state=LEFT) if s.name == name else s for s in view])

    for name in clients[:2]:  # 7, 6: the claims keep it reflected down to full_mesh_below - margin
        view = leave(view, name)
        assert place(view).mode is Mode.REFLECTED and reflectors(view) == held
    view = leave(view, clients[2])  # 5
    assert place(view).mode is Mode.FULL_MESH
    assert all(s.claim is None for s in view)  # the claims are withdrawn, so regrowing to 7 stays full
    assert place(settle([*view, *machines(2, "n")])).mode is Mode.FULL_MESH


def test_a_fresh_view_of_seven_without_claims_is_a_full_mesh() -> None:
    assert place(machines(7)).mode is Mode.FULL_MESH
    assert place(machines(7), Params(full_mesh_below=0, margin=0)).mode is Mode.REFLECTED


# --- sessions -------------------------------------------------------------------------------------


@EXAMPLES
@given(views(min_size=1, max_size=40))
def test_sessions_per_client_equal_the_number_of_reflectors(view: list[Speaker]) -> None:
    placement = place(settle(view))
    plan = session_plan(placement)
    counts = census(placement)
    assert counts["total"] == len(plan.sessions)
    for name in placement.machines:
        peers = plan.peers_of(name)
        assert peers == placement.peers_of(name)
        role = placement.role(name)
        if role is Role.CLIENT:
            assert len(peers) == len(placement.reflectors) + len(placement.legacy) == counts["per_client"]
            assert all(s.client == name for s in plan.of(name) if s.a not in placement.legacy | {name}
                       or s.b not in placement.legacy | {name})  # fmt: skip
        elif role is Role.REFLECTOR:
            assert len(peers) == len(placement.machines) - 1 == counts["per_reflector"]
        else:
            assert len(peers) == len(placement.machines) - 1
    # Fully established, the plan leaves no pair without a path.
    assert uncovered(plan, {s.pair for s in plan.sessions}) == []


def test_a_reflected_plan_counts() -> None:
    placement = place(settle(machines(100)))
    plan = session_plan(placement)
    assert len(placement.reflectors) == 2
    assert len(plan.sessions) == 1 + 2 * 98 == census(placement)["total"]
    clients = [s for s in plan.sessions if s.client is not None]
    assert len(clients) == 2 * 98


def test_params_from_settings_and_bad_params() -> None:
    assert params_from(BgpSettings()) == Params()
    assert params_from(BgpSettings(full_mesh_below=1)).margin == 1
    with pytest.raises(ValueError, match="k must be"):
        Params(k=0)
    with pytest.raises(ValueError, match="margin"):
        Params(full_mesh_below=1, margin=2)


def test_own_claim() -> None:
    view = machines(10)
    placement = place(view)
    (r, *_), client = (
        placement.reflectors,
        next(n for n in placement.machines if n not in placement.reflectors),
    )
    assert own_claim(placement, r, None, 50) == 50
    assert own_claim(placement, r, 7, 50) == 7
    assert own_claim(placement, client, 7, 50) is None


# --- switching without a blackhole ----------------------------------------------------------------


def _switch(old: SessionPlan, new: SessionPlan, rnd: random.Random, joined: frozenset[str]) -> None:
    """Establish the new sessions one at a time in a random order; at every step, every pair of live
    machines that were there before the switch has a path; at the end the held plan is the new one
    and nothing is uncovered."""
    established = {s.pair for s in old.sessions if s.a in new.machines and s.b in new.machines}
    pending = [s.pair for s in new.sessions if s.pair not in established]
    rnd.shuffle(pending)
    for step in range(len(pending) + 1):
        held = transition(old, new, established)
        established &= {s.pair for s in held.sessions}  # what is not held is torn down
        missing = [p for p in uncovered(held, established) if not set(p) & joined]
        assert missing == [], f"step {step}: no path for {missing[:3]}"
        if step < len(pending):
            established.add(pending[step])
    assert transition(old, new, established) == new and settled(new, established)
    assert uncovered(new, established) == []


@st.composite
def switches(draw: st.DrawFn) -> tuple[list[Speaker], list[Speaker]]:
    """A settled mesh of 3-14 machines (so both sides of the threshold), then a change: machines join
    (some of them always), machines die or leave (never every reflector at once: with all of them gone
    nothing can cover the clients until the new ones are peered)."""
    n = draw(st.integers(3, 14))
    kinds = st.sampled_from([AUTO, AUTO, AUTO, NEVER, ALWAYS])
    before = settle([Speaker(f"m{i:02d}", ALIVE, draw(kinds)) for i in range(n)])
    held = place(before)
    dying = draw(st.lists(st.sampled_from([s.name for s in before]), unique=True, max_size=max(0, n - 2)))
    if held.reflectors and set(held.reflectors) <= set(dying):
        dying.remove(held.reflectors[0])
    joins = draw(st.lists(st.sampled_from([AUTO, AUTO, NEVER, ALWAYS]), max_size=8))
    after = [replace(s, state=draw(st.sampled_from([DEAD, LEFT]))) if s.name in dying else s for s in before]
    after += [Speaker(f"j{i:02d}", ALIVE, e) for i, e in enumerate(joins)]
    return before, settle(after)


@EXAMPLES
@given(switches(), st.randoms(use_true_random=False))
def test_a_switch_never_leaves_a_pair_without_a_path(
    change: tuple[list[Speaker], list[Speaker]], rnd: random.Random
) -> None:
    before, after = change
    old_placement, new_placement = place(before), place(after)
    joined = new_placement.machines - old_placement.machines
    _switch(session_plan(old_placement), session_plan(new_placement), rnd, joined)


def test_the_switch_to_reflected_at_eight_holds_the_full_mesh_until_the_new_sessions_are_up() -> None:
    before = settle(machines(7))
    after = settle([*before, Speaker("m07", ALIVE)])
    old, new = session_plan(place(before)), session_plan(place(after))
    assert place(after).mode is Mode.REFLECTED
    established = {s.pair for s in old.sessions}
    held = transition(old, new, established)
    assert {s.pair for s in old.sessions} <= {s.pair for s in held.sessions}
    assert len(held.sessions) > len(new.sessions)  # the client-to-client sessions stay for now
    _switch(old, new, random.Random(1), frozenset({"m07"}))


def test_back_to_full_mesh_keeps_the_reflectors_until_every_direct_session_is_up() -> None:
    before = settle(machines(10))
    placement = place(before)
    keep = [s for s in before if s.name in placement.reflectors] + [
        s for s in before if s.name not in placement.reflectors
    ][:3]
    after = settle([s if s in keep else replace(s, state=LEFT) for s in before])
    assert place(after).mode is Mode.FULL_MESH
    old, new = session_plan(placement), session_plan(place(after))
    live_old = {s.pair for s in old.sessions if s.a in new.machines and s.b in new.machines}
    assert uncovered(new, live_old)  # the naive switch: clients have no direct sessions yet
    _switch(old, new, random.Random(2), frozenset())


def test_two_changes_during_one_switch_keep_the_first_plans_sessions() -> None:
    """Full mesh of 7 → 8 joins (reflected) → an always member joins before the switch is done."""
    rnd = random.Random(3)
    first = settle(machines(7))
    second = settle([*first, Speaker("m07", ALIVE)])
    third = settle([*second, Speaker("boss", ALIVE, ALWAYS)])
    p1, p2, p3 = (session_plan(place(v)) for v in (first, second, third))
    established = {s.pair for s in p1.sessions}
    held = transition(p1, p2, established)
    some = [s.pair for s in p2.sessions if s.pair not in established]
    rnd.shuffle(some)
    established |= set(some[: len(some) // 2])
    held = transition(held, p3, established)
    assert {s.pair for s in p1.sessions} <= {s.pair for s in held.sessions}
    _switch(held, p3, rnd, frozenset({"m07", "boss"}))


def test_uncovered_sees_a_pair_of_clients_with_no_reflector_between_them() -> None:
    plan = SessionPlan(frozenset("abr"), frozenset({Session("a", "r", "a"), Session("b", "r", "b")}))
    assert uncovered(plan, {("a", "r"), ("b", "r")}) == []
    assert uncovered(plan, {("a", "r")}) == [("a", "b"), ("b", "r")]
    plain = SessionPlan(frozenset("abr"), frozenset({Session("a", "r"), Session("b", "r")}))
    assert uncovered(plain, {("a", "r"), ("b", "r")}) == [("a", "b")]


def test_a_placement_digest_names_its_shape_not_its_clients() -> None:
    a = place(settle(machines(10)))
    b = Placement(a.mode, a.machines | {"zz"}, a.reflectors)
    assert a.digest() == b.digest()
    assert a.digest() != Placement(Mode.FULL_MESH, a.machines).digest()
    assert 0 <= a.digest() < 1 << 32


# --- the scale model uses the rule ----------------------------------------------------------------


def test_the_scale_model_counts_what_the_plan_holds() -> None:
    from labs.model_reflectors import model, settled_placement

    for n in (5, 10, 60):
        placement = settled_placement(n, PARAMS)
        plan = session_plan(placement)
        row = model(n, PARAMS, paths=300, sim_max=0, seed=1)
        assert row.sessions_total == len(plan.sessions)
        assert row.reflectors == len(placement.reflectors) == (0 if n < 8 else 2)
        clients = [m for m in placement.machines if placement.role(m) is Role.CLIENT]
        assert all(len(plan.peers_of(c)) == row.sessions_per_client for c in clients)
        assert row.gossip_spread_s is None and row.sim_wall_s is None


# --- from gossip ----------------------------------------------------------------------------------


def test_the_rule_reads_its_input_from_gossip() -> None:
    def member(name: str, state: MemberState, value: bytes | None, since: float = 0.0) -> MemberInfo:
        kv: dict[str, tuple[int, bytes | None]] = {} if value is None else {BGP_KEY: (1, value)}
        return MemberInfo(name, ("198.18.0.9", 7946), 1, state, since, b"", kv)

    def info(rr: ReflectorInfo | None) -> SpeakerInfo:
        return SpeakerInfo(64512, "198.18.0.9", "198.18.0.9", reflector=rr)

    refusals = Refusals()
    members = [
        member("me", ALIVE, BGP.encode(info(None))),  # gossip's stale echo of this machine: ignored
        member("r1", SUSPECT, BGP.encode(info(ReflectorInfo(AUTO, 5))), since=90.0),
        member("c1", ALIVE, BGP.encode(info(ReflectorInfo(NEVER)))),
        member("old", ALIVE, BGP.encode(info(None))),
        member("nobgp", ALIVE, None),
        member("junk", ALIVE, b"\xc1"),
        member("gone", DEAD, BGP.encode(info(ReflectorInfo(ALWAYS, 1)))),
    ]
    got = speakers_from(members, "me", info(ReflectorInfo(ALWAYS)), 100.0, refusals=refusals)
    assert got == [
        Speaker("me", ALIVE, ALWAYS),
        Speaker("r1", SUSPECT, AUTO, 5, 10.0),
        Speaker("c1", ALIVE, NEVER),
        Speaker("old", ALIVE, None),
        Speaker("gone", DEAD, ALWAYS, 1),
    ]
    assert [sender for _, sender, _ in refusals.logged()] == ["junk"]
