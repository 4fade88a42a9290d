"""The announcement driver: runs the pure :func:`agent.announce.planner.plan` on this machine's current inputs
and publishes what it decided; also the API's :class:`agent.http.objects.StatusProvider`.

Every ``interval`` seconds, on every gossip event (a peer's ``health`` changed, a member turned
suspect, ...), on every local verdict change and on every store change, it builds a
:class:`PlanInput` (objects from the store, this machine's settings, the local verdicts from the
:class:`HealthRunner`, and each peer's gossip state and published verdicts), plans, keeps the
:class:`PlanState` for next time, and publishes the decisions as the node-local gossip value
``announce`` (:data:`agent.published.ANNOUNCE`), when it differs from the last one published.

A peer verdict's ``received_at`` is when this node first saw that version of the peer's ``health``
value (on this node's Trio clock): peers republish on every check result, so a verdict that stops
changing goes stale after the object's ``stale_after``. Its ``passed_at`` is when this node received the
peer's latest *new* passing result for that object (a new ``checked_at`` with ``last_ok``): the planner
counts a peer as somewhere to go only on a pass that arrived after the local failures began.

Status for the API comes from every live (alive or suspect) member's ``announce`` and ``health``
values; a dead or departed member announces nothing. This machine's own status comes straight from
its latest plan and its runner, so it never lags gossip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from agent.announce.planner import (
    DEFAULT_CONFIRM_DELAY,
    Decision,
    ObjectSpec,
    PeerVerdict,
    PeerView,
    PlanInput,
    PlanState,
    announced,
    decisions_from,
    plan,
)
from agent.cluster.objects import Kind, MachineSettings, Route, Vip
from agent.cluster.store import NotFound, ObjectStore
from agent.health.verdict import Health, LocalVerdict, Verdict
from agent.published import ANNOUNCE, ANNOUNCE_KEY, HEALTH, HEALTH_KEY
from gossip import EventKind, MemberEvent, MemberInfo, MemberState, Refusals

log = logging.getLogger("wiremesh.announce")

PLAN_INTERVAL = 0.5
UNKNOWN = "unknown"


class GossipView(Protocol):
    def members(self) -> list[MemberInfo]: ...

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]: ...

    async def set_kv(self, key: str, value: bytes | None) -> None: ...


class LocalHealth(Protocol):
    def local(self) -> dict[str, LocalVerdict]: ...

    def verdicts(self) -> dict[str, Verdict]: ...

    def on_change(self, listener: Callable[[], None]) -> None: ...


@dataclass
class _Seen:
    version: int
    received_at: float
    verdicts: Mapping[str, Verdict]
    passed_at: dict[str, float]


class Announcer:
    def __init__(
        self,
        store: ObjectStore,
        node: GossipView,
        machine: str,
        health: LocalHealth,
        *,
        interval: float = PLAN_INTERVAL,
        confirm_delay: float = DEFAULT_CONFIRM_DELAY,
    ) -> None:
        self.store = store
        self.node = node
        self.machine = machine
        self.checks = health
        self.interval = interval
        self.confirm_delay = confirm_delay
        self.state = PlanState()
        self.decisions: dict[str, Decision] = {}
        self._health_seen: dict[str, _Seen] = {}
        # When each peer's latest ``announce`` value arrived (Trio clock): its holds travel as seconds
        # left at publication, so they are converted against arrival, not against whenever they are read.
        self._announce_at: dict[str, float] = {}
        self._published: bytes | None = None
        self._refusals = Refusals(log)  # peers' announce and health values refused, each logged once
        self._wake = trio.Event()
        health.on_change(self._poke)
        store.on_change(lambda _record: self._poke())

    def _poke(self) -> None:
        self._wake.set()

    # --- planning ------------------------------------------------------------------------------

    def _enabled(self, machine: str) -> bool:
        try:
            settings = self.store.get(Kind.MACHINE, machine)
        except NotFound:
            return True
        return not isinstance(settings, MachineSettings) or settings.enabled

    def _decode_health(self, sender: str, value: bytes | None) -> Mapping[str, Verdict]:
        return HEALTH.decode(value, sender, self._refusals) or {}

    def _peer_verdicts(self, member: MemberInfo, now: float) -> Mapping[str, Verdict]:
        version, value = member.kv.get(HEALTH_KEY, (0, None))
        seen = self._health_seen.get(member.name)
        if seen is None or seen.version != version:
            verdicts = self._decode_health(member.name, value)
            passed_at: dict[str, float] = {}
            for key, v in verdicts.items():
                if not v.last_ok:
                    continue
                old = None if seen is None else seen.verdicts.get(key)
                kept = None if seen is None else seen.passed_at.get(key)
                same_result = old is not None and old.checked_at == v.checked_at
                passed_at[key] = kept if kept is not None and same_result else now
            seen = _Seen(version, now, verdicts, passed_at)
            self._health_seen[member.name] = seen
        return seen.verdicts

    def build_input(self, now: float) -> PlanInput:
        objects: list[ObjectSpec] = []
        for kind in (Kind.VIP, Kind.ROUTE):
            for obj in self.store.list(kind):
                if isinstance(obj, Vip | Route):
                    objects.append(ObjectSpec.from_object(obj))
        peers: dict[str, PeerView] = {}
        members = self.node.members()
        for member in members:
            if member.name == self.machine:
                continue
            seen_at = self._peer_verdicts(member, now)
            received = self._health_seen[member.name].received_at
            passes = self._health_seen[member.name].passed_at
            verdicts = {
                k: PeerVerdict(Health(v.state), received, v.last_ok, passes.get(k))
                for k, v in seen_at.items()
            }
            peers[member.name] = PeerView(member.state, self._enabled(member.name), verdicts)
        names = {m.name for m in members}
        for gone in set(self._health_seen) - names:
            del self._health_seen[gone]
        for gone in set(self._announce_at) - names:
            del self._announce_at[gone]
        return PlanInput(
            machine=self.machine,
            machine_enabled=self._enabled(self.machine),
            objects=objects,
            local=self.checks.local(),
            peers=peers,
            now=now,
            confirm_delay=self.confirm_delay,
        )

    async def step(self) -> None:
        """Plan once and publish the result if it changed."""
        now = trio.current_time()
        result = plan(self.build_input(now), self.state)
        for key, decision in result.decisions.items():
            old = self.decisions.get(key)
            if old is None or old.reason is not decision.reason:
                log.info(
                    "%s: %s (%s)",
                    key,
                    "announce" if decision.announce else "withdraw",
                    decision.reason.value,
                    extra={"object": key, "reason": decision.reason.value},
                )
        self.state = result.state
        self.decisions = dict(result.decisions)
        packed = ANNOUNCE.encode({key: announced(d, now) for key, d in self.decisions.items()})
        if packed != self._published:
            await self.node.set_kv(ANNOUNCE_KEY, packed)
            self._published = packed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        events = self.node.subscribe()
        async with events, trio.open_nursery() as nursery:
            nursery.start_soon(self._watch, events)
            task_status.started()
            while True:
                self._wake = trio.Event()
                await self.step()
                with trio.move_on_at(self.next_plan_at(trio.current_time())):
                    await self._wake.wait()

    def next_plan_at(self, now: float) -> float:
        """The next periodic plan, or sooner the moment a hold runs out, so a held announcement is
        withdrawn when its holdoff ends rather than up to one interval later."""
        holds = [d.held_until for d in self.decisions.values() if d.held_until is not None]
        return min([now + self.interval, *(max(now, h) for h in holds)])

    async def _watch(self, events: trio.MemoryReceiveChannel[MemberEvent]) -> None:
        async for event in events:
            if event.kind is EventKind.KV and event.key == ANNOUNCE_KEY and event.name != self.machine:
                self._announce_at[event.name] = event.at
            # Of the key/values, only peers' verdicts are planner input: this machine's own values
            # (``health`` changes on every result) and peers' ``announce`` values are not.
            if event.kind is EventKind.KV and (event.name == self.machine or event.key != HEALTH_KEY):
                continue
            self._poke()

    # --- StatusProvider ------------------------------------------------------------------------

    def _live_members(self) -> Sequence[MemberInfo]:
        return [m for m in self.node.members() if m.state in (MemberState.ALIVE, MemberState.SUSPECT)]

    def announcements(self, now: float | None = None) -> dict[str, Mapping[str, Decision]]:
        """Every live machine's decisions, by machine (this one's from its latest plan); holds are on the
        Trio clock, as read now or passed in as ``now``."""
        now = trio.current_time() if now is None else now
        out: dict[str, Mapping[str, Decision]] = {}
        for member in self._live_members():
            if member.name == self.machine:
                continue
            _version, value = member.kv.get(ANNOUNCE_KEY, (0, None))
            summary = ANNOUNCE.decode(value, member.name, self._refusals)
            if summary is not None:
                out[member.name] = decisions_from(summary, self._announce_at.get(member.name, now))
        out[self.machine] = self.decisions
        return out

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        key = f"{kind.value}/{name}"
        out = []
        for machine, decisions in self.announcements().items():
            decision = decisions.get(key)
            if decision is not None and decision.announce:
                out.append(machine)
        return sorted(out)

    def all_decisions(self) -> tuple[float, dict[str, Mapping[str, Decision]]]:
        """:meth:`announcements`, after the clock reading its holds are measured against (for the API,
        which shows a hold as the seconds it has left)."""
        now = trio.current_time()
        return now, self.announcements(now)

    def health(self, kind: Kind, name: str, machine: str) -> str:
        key = f"{kind.value}/{name}"
        if machine == self.machine:
            verdict = self.health_source_verdict(key)
        else:
            verdict = None
            for member in self.node.members():
                if member.name == machine:
                    _version, value = member.kv.get(HEALTH_KEY, (0, None))
                    verdict = self._decode_health(member.name, value).get(key)
                    break
        return UNKNOWN if verdict is None else verdict.state

    def health_source_verdict(self, key: str) -> Verdict | None:
        return self.checks.verdicts().get(key)

    def verdicts(self) -> dict[str, Mapping[str, Verdict]]:
        """Every member's published verdicts, whatever its state (like :meth:`health`: the API shows the
        member state beside them); this machine's straight from its runner. Wall-clock times."""
        out: dict[str, Mapping[str, Verdict]] = {}
        for member in self.node.members():
            if member.name == self.machine:
                continue
            _version, value = member.kv.get(HEALTH_KEY, (0, None))
            verdicts = self._decode_health(member.name, value)
            if verdicts:
                out[member.name] = verdicts
        out[self.machine] = self.checks.verdicts()
        return out
