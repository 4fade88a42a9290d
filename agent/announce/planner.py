"""The announcement planner: which VIPs and routes this machine announces right now, and why.

A pure function (:func:`plan`) of its inputs and the previous plan's :class:`PlanState`; it does no I/O
and reads no clock, so a Trio task can drive it on every change and tests can script exact timelines.

**The rule.** An object is announced iff it is enabled, this machine is enabled and listed in its
machines, and (it has no health check, or the local check is healthy, or it is *held*). Reasons are
checked in that order, so a disabled object says ``withdrawn_disabled`` whatever its health.

**Holdoff** (why: a global service restart fails every machine's check at once, and withdrawing
everywhere would blackhole the VIP). When the local check turns unhealthy on a machine that was
announcing the object because it was healthy:

* holdoff 0: withdraw at once (``withdrawn_unhealthy``);
* if some peer *counts as somewhere to go* (below): withdraw at once (``withdrawn_peer_healthy``);
* otherwise keep announcing (``held``) until ``held_until = min(since, first_seen) + holdoff``, where
  ``since`` is when the local check turned unhealthy and ``first_seen`` the ``now`` of the plan that
  first saw it (so a ``since`` from the future cannot stretch the hold). ``holdoff`` is the object's
  current one: an edit applies to a hold in progress. While held, withdraw the moment a peer counts
  (``withdrawn_peer_healthy``) or when ``now >= held_until`` (``withdrawn_holdoff_expired``); a local
  recovery ends the hold (``healthy``). A withdrawal that ends a hold is final for that unhealthy spell:
  the object is announced again only once the local check is healthy again, so a hold is never renewed.
* A check that was never healthy here (unknown -> unhealthy), or an object that was not being announced
  (disabled, not assigned, ...) when its check failed, is not held: there is nothing to keep.

**Which peers count as somewhere to go.** Only a peer that can take the traffic right now: another
machine listed in the object's machines, whose settings are enabled, that gossip reports ``alive``, and
whose published verdict for the object is ``healthy``, whose latest result passed, and which has shown
that pass *since this machine's check started failing*: the passing result arrived at least
``confirm_delay`` after ``failing_since`` (the first failure of the streak that made the local check
unhealthy), all on this machine's clock, so no clock sync is needed. The verdict must also be fresh
(received at most ``stale_after`` seconds ago).

Why the last two conditions: in a global restart every service fails at once, but the machines' checks
are jittered, so they cross their thresholds one after another. At the moment the first one does, its
peers still report ``healthy``: they have failed fewer times than their threshold, or their latest
pass ran before the restart and is still on its way through gossip. Counting those would withdraw the
first machines, then the last ones would see... exactly the blackhole the holdoff exists to prevent
(the demo showed it). A peer's latest result passing (``last_ok``) rules out the first case; a pass
received ``confirm_delay`` (default 0.5 s, a few gossip rounds) after our failures began rules out the
second, as long as gossip carries a result within that delay. The price: a machine that fails alone
withdraws once a peer's next check has passed and reached it, which with ``unhealthy_threshold`` >= 2
has almost always happened by the time its own threshold is crossed; otherwise up to one peer
interval + ``confirm_delay`` later.

Everything else does not count, and so never causes a withdrawal:

* ``suspect``, ``dead``, ``left`` or unknown-to-gossip members: a machine that may be down must not be
  the reason the last announcement disappears;
* a verdict that is ``unknown``, ``unhealthy``, missing or stale, or ``healthy`` with its latest result
  failing, or whose latest pass predates our failures: we cannot know it is serving now.

Not counting a peer only ever prolongs a hold, and every hold ends by ``held_until`` at the latest, so
no combination of peer states holds forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agent.cluster.objects import Route, Vip
from agent.health.verdict import Health, LocalVerdict
from agent.published import ANNOUNCE
from agent.wirevalues import ANNOUNCING as ANNOUNCING
from agent.wirevalues import Announced
from agent.wirevalues import Reason as Reason
from gossip import MemberState
from gossip import WireError as WireError

DEFAULT_STALE_FACTOR = 3.0
DEFAULT_CONFIRM_DELAY = 0.5


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    """What the planner needs of a VIP or route. ``key`` (``vip/NAME``, ``route/NAME``) names it in
    verdicts, plans and the wire summary, since VIPs and routes have separate name spaces."""

    kind: Literal["vip", "route"]
    name: str
    enabled: bool = True
    machines: frozenset[str] = frozenset()
    has_check: bool = False
    holdoff: float = 0.0
    stale_after: float = 30.0  # a peer's verdict older than this (seconds) does not count

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def from_object(cls, obj: Vip | Route, stale_factor: float = DEFAULT_STALE_FACTOR) -> ObjectSpec:
        """From a cluster object; peer verdicts go stale after ``stale_factor`` check intervals."""
        check = obj.health_check
        return cls(
            kind="vip" if isinstance(obj, Vip) else "route",
            name=obj.name,
            enabled=obj.enabled,
            machines=frozenset(obj.machines),
            has_check=check is not None,
            holdoff=obj.holdoff if isinstance(obj, Vip) else 0.0,
            stale_after=stale_factor * check.interval if check is not None else math.inf,
        )


@dataclass(frozen=True, slots=True)
class PeerVerdict:
    """A peer's published verdict; ``received_at`` is this machine's clock when it last arrived;
    ``last_ok`` whether the peer's latest result passed; ``passed_at`` when this machine received the
    peer's latest passing result (``received_at`` if not given)."""

    state: Health
    received_at: float
    last_ok: bool | None = True
    passed_at: float | None = None


@dataclass(frozen=True, slots=True)
class PeerView:
    """A peer as gossip shows it. ``member`` is None when gossip does not know the machine at all."""

    member: MemberState | None
    enabled: bool = True
    verdicts: Mapping[str, PeerVerdict] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlanInput:
    machine: str
    machine_enabled: bool
    objects: Sequence[ObjectSpec]
    local: Mapping[str, LocalVerdict]
    peers: Mapping[str, PeerView]
    now: float
    confirm_delay: float = DEFAULT_CONFIRM_DELAY


@dataclass(frozen=True, slots=True)
class Hold:
    """A hold on one object, started at ``started`` (it ends by ``started`` + the object's current
    holdoff, so lowering the holdoff shortens a hold in progress); ``ended`` is set (to the withdrawal
    reason) once it is over, so the withdrawal stays put until the check recovers."""

    started: float
    ended: Reason | None = None


@dataclass(frozen=True, slots=True)
class PlanState:
    """What the next plan must remember: objects announced as healthy (the only ones a failure may
    hold) and the holds in progress or ended during the current unhealthy spell."""

    healthy: frozenset[str] = frozenset()
    holds: Mapping[str, Hold] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    """``held_until`` is set only for ``held``; ``peers`` names the peers that counted as somewhere to
    go (for ``withdrawn_peer_healthy``)."""

    announce: bool
    reason: Reason
    held_until: float | None = None
    peers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: Mapping[str, Decision]
    state: PlanState


def healthy_peers(spec: ObjectSpec, inp: PlanInput) -> tuple[str, ...]:
    """The other assigned machines that count as somewhere to go (see the module docstring), sorted."""
    local = inp.local.get(spec.key)
    failing_since = -math.inf
    if local is not None and local.state is Health.UNHEALTHY:
        failing_since = local.since if local.failing_since is None else local.failing_since
    out = []
    for name in sorted(spec.machines):
        peer = inp.peers.get(name)
        if name == inp.machine or peer is None:
            continue
        verdict = peer.verdicts.get(spec.key)
        if (
            peer.member is MemberState.ALIVE
            and peer.enabled
            and verdict is not None
            and verdict.state is Health.HEALTHY
            and verdict.last_ok is True
            and inp.now - verdict.received_at <= spec.stale_after
            and _passed_at(verdict) >= failing_since + inp.confirm_delay
        ):
            out.append(name)
    return tuple(out)


def _passed_at(verdict: PeerVerdict) -> float:
    return verdict.received_at if verdict.passed_at is None else verdict.passed_at


def _withdraw(reason: Reason, peers: tuple[str, ...] = ()) -> Decision:
    return Decision(announce=False, reason=reason, peers=peers)


def _decide(spec: ObjectSpec, inp: PlanInput, previous: PlanState) -> tuple[Decision, Hold | None]:
    if not spec.enabled:
        return _withdraw(Reason.WITHDRAWN_DISABLED), None
    if not inp.machine_enabled:
        return _withdraw(Reason.WITHDRAWN_MACHINE_DISABLED), None
    if inp.machine not in spec.machines:
        return _withdraw(Reason.WITHDRAWN_NOT_ASSIGNED), None
    if not spec.has_check:
        return Decision(announce=True, reason=Reason.NO_CHECK), None
    verdict = inp.local.get(spec.key, LocalVerdict(Health.UNKNOWN, inp.now))
    if verdict.state is Health.HEALTHY:
        return Decision(announce=True, reason=Reason.HEALTHY), None
    if verdict.state is Health.UNKNOWN:
        return _withdraw(Reason.WITHDRAWN_UNKNOWN), None
    hold = previous.holds.get(spec.key)
    if hold is None:
        if spec.key not in previous.healthy or spec.holdoff <= 0:
            return _withdraw(Reason.WITHDRAWN_UNHEALTHY), None
        # min(): a `since` from the future must not stretch the hold past holdoff from now.
        started = min(verdict.since, inp.now)
        hold = Hold(started=started)
    if hold.ended is not None:
        return _withdraw(hold.ended), hold
    peers = healthy_peers(spec, inp)
    if peers:
        return _withdraw(Reason.WITHDRAWN_PEER_HEALTHY, peers), Hold(
            hold.started, Reason.WITHDRAWN_PEER_HEALTHY
        )
    until = hold.started + spec.holdoff
    if inp.now >= until:
        return _withdraw(Reason.WITHDRAWN_HOLDOFF_EXPIRED), Hold(
            hold.started, Reason.WITHDRAWN_HOLDOFF_EXPIRED
        )
    return Decision(announce=True, reason=Reason.HELD, held_until=until), hold


def plan(inp: PlanInput, previous: PlanState | None = None) -> Plan:
    """Decide every object in ``inp.objects``; feed ``Plan.state`` back in as ``previous`` next time."""
    previous = previous if previous is not None else PlanState()
    decisions: dict[str, Decision] = {}
    holds: dict[str, Hold] = {}
    healthy: set[str] = set()
    for spec in inp.objects:
        decision, hold = _decide(spec, inp, previous)
        decisions[spec.key] = decision
        if hold is not None:
            holds[spec.key] = hold
        if decision.reason is Reason.HEALTHY:
            healthy.add(spec.key)
    return Plan(decisions, PlanState(frozenset(healthy), holds))


_EXPLAIN = {
    Reason.HEALTHY: "announced: the health check passes on this machine",
    Reason.NO_CHECK: "announced: no health check, so announced while enabled and assigned",
    Reason.WITHDRAWN_UNHEALTHY: "withdrawn: the health check fails on this machine",
    Reason.WITHDRAWN_UNKNOWN: "withdrawn: the health check has not passed on this machine yet",
    Reason.WITHDRAWN_DISABLED: "withdrawn: the object is disabled",
    Reason.WITHDRAWN_MACHINE_DISABLED: "withdrawn: this machine is disabled",
    Reason.WITHDRAWN_NOT_ASSIGNED: "withdrawn: this machine is not among the object's machines",
    Reason.WITHDRAWN_HOLDOFF_EXPIRED: "withdrawn: the health check fails here and the holdoff ran out "
    "with no other machine healthy",
}


def explain(decision: Decision, now: float | None = None) -> str:
    """One line for ``wiremesh vip show``; with ``now``, a hold says how long it has left."""
    if decision.reason is Reason.HELD:
        until = "until the holdoff runs out"
        if now is not None and decision.held_until is not None:
            until = f"for {max(0.0, decision.held_until - now):.1f} s more"
        return (
            "announced (held): the health check fails here and no other assigned machine has shown a "
            f"passing check since, so the announcement is kept {until} unless one does"
        )
    if decision.reason is Reason.WITHDRAWN_PEER_HEALTHY:
        who = ", ".join(decision.peers) if decision.peers else "another machine"
        verb = "are" if len(decision.peers) > 1 else "is"
        return (
            f"withdrawn: the health check fails here and {who} {verb} alive and healthy to take the traffic"
        )
    return _EXPLAIN[decision.reason]


def to_wire(decisions: Mapping[str, Decision], now: float) -> dict[str, Any]:
    """The per-machine ``announce`` summary, before packing (:data:`agent.published.ANNOUNCE`). A hold
    travels as the seconds it has left, since the clocks of two machines are not comparable: ``{"v": 1,
    "objects": {key: [announce, reason, seconds_left_or_None, peers]}}``."""
    summary = {key: announced(d, now) for key, d in decisions.items()}
    wire: dict[str, Any] = ANNOUNCE.to_object(summary)
    return wire


def from_wire(data: object, now: float) -> dict[str, Decision]:
    """Decode :func:`to_wire`'s output, with holds converted to this machine's clock (``now``); raises
    :class:`WireError`."""
    return decisions_from(ANNOUNCE.from_object(data), now)


def announced(decision: Decision, now: float) -> Announced:
    """``decision`` as published at ``now``."""
    left = None if decision.held_until is None else max(0.0, decision.held_until - now)
    return Announced(decision.announce, decision.reason, left, decision.peers)


def decisions_from(summary: Mapping[str, Announced], now: float) -> dict[str, Decision]:
    """A peer's published decisions, with holds on this machine's clock (``now``: when they arrived)."""
    return {
        key: Decision(a.announce, a.reason, None if a.seconds_left is None else now + a.seconds_left, a.peers)
        for key, a in summary.items()
    }
