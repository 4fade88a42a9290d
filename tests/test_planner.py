"""The announcement planner: the rule, the holdoff on a simulated 3-machine cluster with exact timing,
peers that must not count, and properties over arbitrary input sequences."""

from __future__ import annotations

import math
from collections.abc import Mapping

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.announce.planner import (
    ANNOUNCING,
    DEFAULT_CONFIRM_DELAY,
    Decision,
    ObjectSpec,
    PeerVerdict,
    PeerView,
    Plan,
    PlanInput,
    PlanState,
    Reason,
    WireError,
    explain,
    from_wire,
    plan,
    to_wire,
)
from agent.cluster.objects import HealthCheck, Route, Vip
from agent.health.verdict import Health, LocalVerdict
from gossip.events import MemberState

MACHINES = ("a", "b", "c")
WEB = ObjectSpec(
    kind="vip", name="web", machines=frozenset(MACHINES), has_check=True, holdoff=30.0, stale_after=30.0
)
KEY = WEB.key


class Cluster:
    """Three planners side by side. Each machine's local verdict is what the others receive as its
    published verdict, refreshed at every step unless the machine is ``silent`` (its verdict then ages);
    ``members`` is how gossip shows each machine to the others."""

    def __init__(self, spec: ObjectSpec = WEB, machines: tuple[str, ...] = MACHINES) -> None:
        self.spec = spec
        self.machines = machines
        self.verdicts = {m: LocalVerdict(Health.UNKNOWN, 0.0) for m in machines}
        self.received = dict.fromkeys(machines, 0.0)
        self.members: dict[str, MemberState | None] = dict.fromkeys(machines, MemberState.ALIVE)
        self.silent: set[str] = set()
        self.states = {m: PlanState() for m in machines}
        self.last: dict[str, Decision] = {}

    def health(self, now: float, state: Health, *machines: str, failing_since: float | None = None) -> None:
        """``failing_since``: when the failures that made a check unhealthy began (``now`` if not given,
        as with an unhealthy threshold of 1)."""
        for m in machines or self.machines:
            if self.verdicts[m].state is not state:
                self.verdicts[m] = LocalVerdict(state, now, failing_since)

    def step(self, now: float) -> dict[str, Decision]:
        for m in self.machines:
            if m not in self.silent:
                self.received[m] = now
        out = {}
        for m in self.machines:
            peers = {
                o: PeerView(
                    member=self.members[o],
                    verdicts={self.spec.key: PeerVerdict(self.verdicts[o].state, self.received[o])},
                )
                for o in self.machines
                if o != m
            }
            inp = PlanInput(m, True, (self.spec,), {self.spec.key: self.verdicts[m]}, peers, now)
            result = plan(inp, self.states[m])
            self.states[m] = result.state
            out[m] = result.decisions[self.spec.key]
        self.last = out
        return out

    def reasons(self) -> dict[str, Reason]:
        return {m: d.reason for m, d in self.last.items()}


def healthy_cluster(spec: ObjectSpec = WEB) -> Cluster:
    cluster = Cluster(spec)
    assert set(cluster.step(0.0).values()) == {Decision(False, Reason.WITHDRAWN_UNKNOWN)}
    cluster.health(1.0, Health.HEALTHY)
    assert set(cluster.step(1.0).values()) == {Decision(True, Reason.HEALTHY)}
    return cluster


HELD_UNTIL_35 = Decision(True, Reason.HELD, held_until=35.0)


@pytest.mark.parametrize(("holdoff", "reason"), [(0.0, Reason.WITHDRAWN_UNHEALTHY), (30.0, None)])
def test_one_fails_while_others_healthy_withdraws_at_once(holdoff: float, reason: Reason | None) -> None:
    cluster = healthy_cluster(ObjectSpec("vip", "web", True, frozenset(MACHINES), True, holdoff, 30.0))
    # a's failures began at 3 (threshold 3, interval 1): b and c have passed since, and it has arrived
    cluster.health(5.0, Health.UNHEALTHY, "a", failing_since=3.0)
    out = cluster.step(5.0)
    expected = reason or Reason.WITHDRAWN_PEER_HEALTHY
    assert out["a"] == Decision(False, expected, peers=() if reason else ("b", "c"))
    assert out["b"] == out["c"] == Decision(True, Reason.HEALTHY)
    assert cluster.step(20.0)["a"].reason is expected  # stays withdrawn, same reason


def test_a_lone_failure_waits_for_a_pass_that_arrived_after_its_failures_began() -> None:
    """With an unhealthy threshold of 1 the failure is crossed at once; the peers' latest passes may
    predate it (a global restart in progress), so a holds until a pass arrives confirm_delay later."""
    cluster = healthy_cluster()
    cluster.health(5.0, Health.UNHEALTHY, "a")
    assert cluster.step(5.0)["a"] == HELD_UNTIL_35
    assert cluster.step(5.0 + DEFAULT_CONFIRM_DELAY - 0.01)["a"] == HELD_UNTIL_35
    out = cluster.step(5.0 + DEFAULT_CONFIRM_DELAY)
    assert out["a"] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b", "c"))


def test_global_restart_peers_still_healthy_but_failing_do_not_count() -> None:
    """The race the confirmation rule exists for: everyone's service stopped at 4.0; a crosses its
    threshold first, while b and c are still ``healthy`` by their thresholds but their latest results
    fail, or their latest pass ran before the restart and only arrives now."""
    prev = plan(base_input(now=0.0)).state
    failing = {KEY: LocalVerdict(Health.UNHEALTHY, 6.0, failing_since=4.2)}

    def peer(last_ok: bool | None, passed_at: float) -> PeerView:
        return PeerView(MemberState.ALIVE, True, {KEY: PeerVerdict(Health.HEALTHY, 6.0, last_ok, passed_at)})

    for b in (peer(False, 3.9), peer(None, 6.0), peer(True, 4.3)):  # failing, no result, pass in flight
        inp = PlanInput("a", True, (WEB,), failing, {"b": b}, 6.0)
        assert plan(inp, prev).decisions[KEY] == Decision(True, Reason.HELD, held_until=36.0), b
    inp = PlanInput("a", True, (WEB,), failing, {"b": peer(True, 4.7)}, 6.0)
    assert plan(inp, prev).decisions[KEY] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b",))


def test_all_fail_together_are_held_then_withdraw_at_exactly_holdoff() -> None:
    cluster = healthy_cluster()
    cluster.health(5.0, Health.UNHEALTHY)
    for t in (5.0, 10.0, 20.0, 34.999):
        assert set(cluster.step(t).values()) == {HELD_UNTIL_35}, t
    assert set(cluster.step(35.0).values()) == {Decision(False, Reason.WITHDRAWN_HOLDOFF_EXPIRED)}
    assert set(cluster.step(100.0).values()) == {Decision(False, Reason.WITHDRAWN_HOLDOFF_EXPIRED)}


def test_hold_is_measured_from_when_the_check_turned_unhealthy() -> None:
    cluster = healthy_cluster()
    cluster.health(5.0, Health.UNHEALTHY)  # the planner only runs again at 12
    assert set(cluster.step(12.0).values()) == {HELD_UNTIL_35}
    assert set(cluster.step(35.0).values()) == {Decision(False, Reason.WITHDRAWN_HOLDOFF_EXPIRED)}


def test_one_recovers_during_hold_the_others_withdraw_at_once() -> None:
    cluster = healthy_cluster()
    cluster.health(5.0, Health.UNHEALTHY)
    cluster.step(5.0)
    assert set(cluster.step(14.9).values()) == {HELD_UNTIL_35}
    cluster.health(15.0, Health.HEALTHY, "b")
    out = cluster.step(15.0)
    assert out["b"] == Decision(True, Reason.HEALTHY)
    assert out["a"] == out["c"] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b",))
    # The withdrawal is final for this unhealthy spell, even if b fails again (b is then held itself).
    cluster.health(20.0, Health.UNHEALTHY, "b")
    out = cluster.step(20.0)
    assert out["a"].reason is out["c"].reason is Reason.WITHDRAWN_PEER_HEALTHY
    assert out["b"] == Decision(True, Reason.HELD, held_until=50.0)


def test_local_recovery_during_hold_announces_and_clears_the_hold() -> None:
    cluster = healthy_cluster()
    cluster.health(5.0, Health.UNHEALTHY, "a", "b", "c")
    cluster.step(5.0)
    cluster.health(12.0, Health.HEALTHY)
    assert set(cluster.step(12.0).values()) == {Decision(True, Reason.HEALTHY)}
    assert all(s.holds == {} and s.healthy == {KEY} for s in cluster.states.values())
    # A new failure starts a new, full hold.
    cluster.health(40.0, Health.UNHEALTHY)
    assert set(cluster.step(40.0).values()) == {Decision(True, Reason.HELD, held_until=70.0)}
    assert set(cluster.step(69.0).values()) == {Decision(True, Reason.HELD, held_until=70.0)}
    assert set(cluster.step(70.0).values()) == {Decision(False, Reason.WITHDRAWN_HOLDOFF_EXPIRED)}


@pytest.mark.parametrize("member", [MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT, None])
def test_peers_that_may_be_down_do_not_count(member: MemberState | None) -> None:
    cluster = healthy_cluster()
    cluster.members["b"] = cluster.members["c"] = member
    cluster.health(5.0, Health.UNHEALTHY, "a")
    assert cluster.step(5.0)["a"] == HELD_UNTIL_35
    # b is back: a withdraws the moment it is seen alive and healthy.
    cluster.members["b"] = MemberState.ALIVE
    assert cluster.step(12.0)["a"] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b",))


def test_stale_verdicts_do_not_count() -> None:
    prev = plan(base_input(now=0.0)).state
    failing = {KEY: LocalVerdict(Health.UNHEALTHY, 0.0)}
    peers = {"b": PeerView(MemberState.ALIVE, True, {KEY: PeerVerdict(Health.HEALTHY, 1.0)})}
    # at 31.0 b's verdict is exactly stale_after (30 s) old: still fresh
    fresh = plan(PlanInput("a", True, (WEB,), failing, peers, 31.0), prev)
    assert fresh.decisions[KEY] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b",))
    stale = plan(PlanInput("a", True, (WEB,), failing, peers, 31.5), prev)
    assert stale.decisions[KEY].reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED  # held from 0, nobody counted

    cluster = healthy_cluster()  # b and c last published at 1.0
    cluster.silent |= {"b", "c"}
    cluster.health(31.5, Health.UNHEALTHY, "a")
    assert cluster.step(31.5)["a"] == Decision(True, Reason.HELD, held_until=61.5)
    cluster.silent.discard("c")  # c's verdicts arrive again
    assert cluster.step(40.0)["a"] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("c",))


def base_input(
    *,
    local: Health = Health.HEALTHY,
    peers: Mapping[str, PeerView] | None = None,
    spec: ObjectSpec = WEB,
    machine: str = "a",
    machine_enabled: bool = True,
    now: float = 10.0,
) -> PlanInput:
    return PlanInput(
        machine, machine_enabled, (spec,), {spec.key: LocalVerdict(local, 0.0)}, peers or {}, now
    )


def test_peer_verdicts_that_do_not_count() -> None:
    """Only an enabled, alive, assigned peer with a fresh healthy verdict for this object counts."""
    prev = plan(base_input(now=0.0)).state
    good = PeerView(MemberState.ALIVE, True, {KEY: PeerVerdict(Health.HEALTHY, 9.0)})
    bad = {
        "unknown verdict": PeerView(MemberState.ALIVE, True, {KEY: PeerVerdict(Health.UNKNOWN, 9.0)}),
        "unhealthy verdict": PeerView(MemberState.ALIVE, True, {KEY: PeerVerdict(Health.UNHEALTHY, 9.0)}),
        "no verdict": PeerView(MemberState.ALIVE, True, {}),
        "other object": PeerView(MemberState.ALIVE, True, {"route/web": PeerVerdict(Health.HEALTHY, 9.0)}),
        "disabled machine": PeerView(MemberState.ALIVE, False, {KEY: PeerVerdict(Health.HEALTHY, 9.0)}),
        "latest result failed": PeerView(
            MemberState.ALIVE, True, {KEY: PeerVerdict(Health.HEALTHY, 9.0, last_ok=False)}
        ),
        "pass from before our failures": PeerView(
            MemberState.ALIVE, True, {KEY: PeerVerdict(Health.HEALTHY, 9.0, passed_at=0.4)}
        ),
    }
    for name, view in bad.items():
        result = plan(base_input(local=Health.UNHEALTHY, peers={"b": view}), prev)
        assert result.decisions[KEY].reason is Reason.HELD, name
    # a healthy machine not assigned to the object does not count either
    result = plan(base_input(local=Health.UNHEALTHY, peers={"z": good}), prev)
    assert result.decisions[KEY].reason is Reason.HELD
    result = plan(base_input(local=Health.UNHEALTHY, peers={"b": good}), prev)
    assert result.decisions[KEY] == Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b",))


def test_never_healthy_here_is_not_held() -> None:
    prev = plan(base_input(local=Health.UNKNOWN, now=0.0)).state
    result = plan(base_input(local=Health.UNHEALTHY), prev)
    assert result.decisions[KEY] == Decision(False, Reason.WITHDRAWN_UNHEALTHY)
    assert result.state == PlanState()


def test_check_that_failed_long_ago_is_expired_at_once_and_future_since_is_clamped() -> None:
    prev = plan(base_input(now=0.0)).state
    old = PlanInput("a", True, (WEB,), {KEY: LocalVerdict(Health.UNHEALTHY, -100.0)}, {}, 10.0)
    assert plan(old, prev).decisions[KEY].reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED
    future = PlanInput("a", True, (WEB,), {KEY: LocalVerdict(Health.UNHEALTHY, 1e9)}, {}, 10.0)
    assert plan(future, prev).decisions[KEY] == Decision(True, Reason.HELD, held_until=40.0)


@pytest.mark.parametrize("local", list(Health))
@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"enabled": False}, Reason.WITHDRAWN_DISABLED),
        ({"machine_enabled": False}, Reason.WITHDRAWN_MACHINE_DISABLED),
        ({"machines": frozenset({"b", "c"})}, Reason.WITHDRAWN_NOT_ASSIGNED),
    ],
)
def test_disabled_or_unassigned_withdraws_whatever_the_health(
    local: Health, change: dict[str, object], reason: Reason
) -> None:
    spec = ObjectSpec(
        "vip",
        "web",
        bool(change.get("enabled", True)),
        change.get("machines", WEB.machines),  # type: ignore[arg-type]
        True,
        30.0,
    )
    machine_enabled = bool(change.get("machine_enabled", True))
    healthy = plan(base_input(spec=WEB, now=0.0)).state  # was announcing: would otherwise be held
    result = plan(base_input(local=local, spec=spec, machine_enabled=machine_enabled), healthy)
    assert result.decisions[spec.key] == Decision(False, reason)
    assert result.state == PlanState()
    no_check = ObjectSpec("vip", "web", spec.enabled, spec.machines, False)
    result = plan(base_input(local=local, spec=no_check, machine_enabled=machine_enabled))
    assert result.decisions[spec.key] == Decision(False, reason)


@pytest.mark.parametrize("local", list(Health))
def test_no_check_announces_whatever_the_verdict(local: Health) -> None:
    spec = ObjectSpec("route", "lan", True, frozenset({"a"}))
    assert plan(base_input(local=local, spec=spec)).decisions["route/lan"] == Decision(True, Reason.NO_CHECK)


def test_missing_local_verdict_is_unknown() -> None:
    inp = PlanInput("a", True, (WEB,), {}, {}, 0.0)
    assert plan(inp).decisions[KEY] == Decision(False, Reason.WITHDRAWN_UNKNOWN)


def test_from_object() -> None:
    check = HealthCheck(type="tcp", target=":6443", interval=5.0, timeout=1.0)
    vip = Vip(name="web", address="100.96.0.10", machines=["a", "b"], health_check=check, holdoff=30.0)
    assert ObjectSpec.from_object(vip) == ObjectSpec(
        "vip", "web", True, frozenset({"a", "b"}), True, 30.0, 15.0
    )
    route = Route(name="lan", prefix="10.1.0.0/16", enabled=False, machines=["a"])
    spec = ObjectSpec.from_object(route)
    assert (spec.key, spec.enabled, spec.has_check, spec.holdoff) == ("route/lan", False, False, 0.0)
    assert spec.stale_after == math.inf


def test_explain_every_reason() -> None:
    for reason in Reason:
        text = explain(Decision(reason in ANNOUNCING, reason, 35.0 if reason is Reason.HELD else None))
        assert text.startswith("announced" if reason in ANNOUNCING else "withdrawn"), reason
    held = explain(Decision(True, Reason.HELD, held_until=35.0), now=20.0)
    assert "kept for 15.0 s more unless" in held
    assert "until the holdoff runs out" in explain(Decision(True, Reason.HELD, held_until=35.0))
    assert "b, c are alive" in explain(Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b", "c")))
    assert "b is alive" in explain(Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("b",)))


# --- wire ------------------------------------------------------------------------------------------

decisions_st = st.builds(
    lambda reason, left, peers: Decision(
        reason in ANNOUNCING, reason, 100.0 + left if reason is Reason.HELD else None, tuple(peers)
    ),
    st.sampled_from(Reason),
    st.floats(0, 86_400),
    st.lists(st.text(min_size=1, max_size=8), max_size=3),
)


@given(st.dictionaries(st.text(max_size=20), decisions_st, max_size=8))
def test_wire_round_trips_through_msgpack(plan_out: dict[str, Decision]) -> None:
    wire = msgpack.unpackb(msgpack.packb(to_wire(plan_out, now=100.0)), strict_map_key=False)
    back = from_wire(wire, now=100.0)
    assert back.keys() == plan_out.keys()
    for key, d in plan_out.items():
        assert (back[key].announce, back[key].reason, back[key].peers) == (d.announce, d.reason, d.peers)
        if d.held_until is None:
            assert back[key].held_until is None
        else:
            assert back[key].held_until == pytest.approx(d.held_until)


def test_wire_holds_travel_as_time_left() -> None:
    wire = to_wire({KEY: Decision(True, Reason.HELD, held_until=35.0)}, now=20.0)
    assert wire == {"v": 1, "objects": {KEY: [True, "held", 15.0, []]}}
    assert from_wire(wire, now=1000.0)[KEY].held_until == 1015.0


@pytest.mark.parametrize(
    "bad",
    [
        None,
        [],
        {"v": 2, "objects": {}},
        {"v": 1},
        {"v": 1, "objects": []},
        {"v": 1, "objects": {KEY: [True, "healthy", None]}},
        {"v": 1, "objects": {KEY: [True, "bogus", None, []]}},
        {"v": 1, "objects": {KEY: [False, "healthy", None, []]}},
        {"v": 1, "objects": {KEY: [1, "healthy", None, []]}},
        {"v": 1, "objects": {KEY: [True, "held", None, []]}},
        {"v": 1, "objects": {KEY: [True, "held", -1.0, []]}},
        {"v": 1, "objects": {KEY: [True, "held", math.nan, []]}},
        {"v": 1, "objects": {KEY: [True, "held", True, []]}},
        {"v": 1, "objects": {KEY: [True, "healthy", 3.0, []]}},
        {"v": 1, "objects": {KEY: [True, "healthy", None, [1]]}},
        {"v": 1, "objects": {KEY: [True, "healthy", None, "b"]}},
        {"v": 1, "objects": {1: [True, "healthy", None, []]}},
    ],
)
def test_wire_rejects_malformed(bad: object) -> None:
    with pytest.raises(WireError):
        from_wire(bad, now=0.0)


# --- properties ------------------------------------------------------------------------------------

usually = st.sampled_from([True, True, True, False])
peer_view_st = st.builds(
    lambda member, enabled, state, age, last_ok, pass_age: PeerView(
        member,
        enabled,
        {KEY: PeerVerdict(state, -age, last_ok, None if pass_age is None else -age - pass_age)},
    ),
    st.sampled_from([MemberState.ALIVE, MemberState.ALIVE, *MemberState, None]),
    usually,
    st.sampled_from(Health),
    st.floats(-1, 60),  # how long ago it arrived (made relative to now below)
    st.sampled_from([True, True, False, None]),  # whether its latest result passed
    st.none() | st.floats(0, 20),  # how much earlier than that its latest pass arrived
)


def relative(view: PeerView, now: float) -> PeerView:
    v = view.verdicts[KEY]
    passed_at = None if v.passed_at is None else now + v.passed_at
    return PeerView(
        view.member, view.enabled, {KEY: PeerVerdict(v.state, now + v.received_at, v.last_ok, passed_at)}
    )


step_st = st.tuples(
    st.floats(0, 20),  # time since the previous step
    st.sampled_from([Health.HEALTHY, Health.UNHEALTHY, Health.UNHEALTHY, Health.UNKNOWN]),  # local
    st.floats(-50, 50),  # when it entered that state, relative to now (kept while the state lasts)
    st.dictionaries(st.sampled_from(["b", "c", "z"]), peer_view_st, max_size=3),
    usually,  # object enabled
    usually,  # machine enabled
    st.sampled_from([30.0, 0.0, 1.0, 30.0]),  # holdoff
)


def counts(name: str, view: PeerView, now: float, failing_since: float) -> bool:
    """The documented rule for a peer that is somewhere to go, restated independently."""
    v = view.verdicts.get(KEY)
    return (
        name in MACHINES
        and name != "a"
        and view.member is MemberState.ALIVE
        and view.enabled
        and v is not None
        and v.state is Health.HEALTHY
        and v.last_ok is True
        and now - v.received_at <= WEB.stale_after
        and (v.received_at if v.passed_at is None else v.passed_at) >= failing_since + DEFAULT_CONFIRM_DELAY
    )


@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "z"]), peer_view_st, max_size=4),
    st.floats(0, 100),
    st.floats(0, 30),
)
def test_a_failure_is_withdrawn_at_once_iff_a_peer_counts(
    views: dict[str, PeerView], now: float, failing_for: float
) -> None:
    prev = plan(base_input(now=0.0)).state  # announced because healthy
    peers = {name: relative(v, now) for name, v in views.items()}
    local = LocalVerdict(Health.UNHEALTHY, now, now - failing_for)
    inp = PlanInput("a", True, (WEB,), {KEY: local}, peers, now)
    expected = tuple(
        sorted(name for name, view in peers.items() if counts(name, view, now, now - failing_for))
    )
    if expected:
        assert plan(inp, prev).decisions[KEY] == Decision(
            False, Reason.WITHDRAWN_PEER_HEALTHY, peers=expected
        )
    else:
        assert plan(inp, prev).decisions[KEY] == Decision(True, Reason.HELD, held_until=now + 30.0)


@settings(max_examples=500)
@given(st.lists(step_st, min_size=1, max_size=40))
def test_hold_never_outlasts_holdoff_and_plans_are_deterministic(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    state = PlanState()
    now = 0.0
    verdict = LocalVerdict(Health.UNKNOWN, 0.0)
    hold_start: float | None = None  # min(since, first held now) of the current hold
    previous: Decision | None = None
    for gap, local, since, views, enabled, machine_enabled, holdoff in steps:
        now += gap
        if local is not verdict.state:
            verdict = LocalVerdict(local, now + since)
        peers = {name: relative(v, now) for name, v in views.items()}
        spec = ObjectSpec("vip", "web", enabled, frozenset(MACHINES), True, holdoff, WEB.stale_after)
        inp = PlanInput("a", machine_enabled, (spec,), {KEY: verdict}, peers, now)
        result = plan(inp, state)
        # deterministic: the same inputs (even with peers given in another order) give the same plan
        again = PlanInput("a", machine_enabled, (spec,), {KEY: verdict}, dict(reversed(peers.items())), now)
        assert plan(again, state) == result
        d = result.decisions[KEY]
        assert d.announce == (d.reason in ANNOUNCING)
        assert (d.held_until is not None) == (d.reason is Reason.HELD)
        somewhere = any(counts(name, view, now, verdict.since) for name, view in peers.items())
        if d.reason is Reason.HELD:
            # a hold only follows a healthy announcement or continues a hold, and never outlasts holdoff
            assert previous is not None and previous.reason in (Reason.HEALTHY, Reason.HELD)
            if previous.reason is Reason.HEALTHY:
                hold_start = min(verdict.since, now)
            assert hold_start is not None
            assert d.held_until == hold_start + holdoff and now < d.held_until
            assert local is Health.UNHEALTHY and not somewhere
        elif (
            local is Health.UNHEALTHY and enabled and machine_enabled and previous is not None
        ) and previous.reason is Reason.HEALTHY:
            # a fresh failure of an announced object is withdrawn at once only for a documented reason
            assert holdoff == 0 or somewhere or verdict.since + holdoff <= now
        elif previous is not None and previous.reason is Reason.HELD and hold_start is not None:
            # a hold ends only for a documented reason
            if d.reason is Reason.WITHDRAWN_PEER_HEALTHY:
                assert somewhere
            if d.reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED:
                assert now >= hold_start + holdoff
        previous, state = d, result.state


def test_plan_covers_every_object_and_drops_state_of_removed_ones() -> None:
    route = ObjectSpec("route", "web", True, frozenset({"a"}))  # same name, other kind
    first = plan(PlanInput("a", True, (WEB, route), {KEY: LocalVerdict(Health.HEALTHY, 0.0)}, {}, 0.0))
    assert set(first.decisions) == {KEY, "route/web"}
    second = plan(
        PlanInput("a", True, (route,), {KEY: LocalVerdict(Health.UNHEALTHY, 1.0)}, {}, 1.0), first.state
    )
    assert isinstance(second, Plan) and second.state == PlanState()


def test_holdoff_edit_applies_to_a_hold_in_progress() -> None:
    prev = plan(base_input(now=0.0)).state
    failing = {KEY: LocalVerdict(Health.UNHEALTHY, 5.0)}
    held = plan(PlanInput("a", True, (WEB,), failing, {}, 5.0), prev)
    assert held.decisions[KEY] == HELD_UNTIL_35
    shorter = ObjectSpec("vip", "web", True, WEB.machines, True, 10.0, 30.0)
    assert plan(PlanInput("a", True, (shorter,), failing, {}, 14.0), held.state).decisions[KEY] == Decision(
        True, Reason.HELD, held_until=15.0
    )
    expired = plan(PlanInput("a", True, (shorter,), failing, {}, 15.0), held.state)
    assert expired.decisions[KEY].reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED
    # withdrawn for good: raising the holdoff again does not bring the hold back
    again = plan(PlanInput("a", True, (WEB,), failing, {}, 16.0), expired.state)
    assert again.decisions[KEY].reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED
