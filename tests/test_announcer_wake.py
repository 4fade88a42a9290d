"""What wakes the Announcer to re-plan: only changes to what the planner reads (under MockClock).

Re-planning costs O(objects); with hundreds of checks, waking on every result or on this machine's own
gossip values would re-plan hundreds of times a second for nothing. And when holds end: this machine's
(a re-plan exactly then) and peers' (timed from when their announcement arrived)."""

from __future__ import annotations

from collections.abc import Callable

import msgpack
import trio
import trio.testing

from agent.announce.driver import Announcer
from agent.announce.planner import Decision, Reason, to_wire
from agent.cluster.objects import Kind
from agent.cluster.store import ObjectStore
from agent.health.verdict import Health, LocalVerdict, Verdict
from agent.published import ANNOUNCE_KEY, HEALTH_KEY
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from tests.fakes import FakeNode
from tests.swimkit import node_addr

ME = "m1"


class FakeHealth:
    def __init__(self) -> None:
        self.listeners: list[Callable[[], None]] = []

    def local(self) -> dict[str, LocalVerdict]:
        return {}

    def verdicts(self) -> dict[str, Verdict]:
        return {}

    def on_change(self, listener: Callable[[], None]) -> None:
        self.listeners.append(listener)


class CountingAnnouncer(Announcer):
    steps = 0

    async def step(self) -> None:
        self.steps += 1
        await super().step()


def kv(name: str, key: str) -> MemberEvent:
    return MemberEvent(EventKind.KV, name, 1, ("198.18.0.1", 7946), 0.0, key)


async def test_only_planner_inputs_wake_the_announcer(clock: trio.testing.MockClock) -> None:
    node = FakeNode()
    health = FakeHealth()
    store = ObjectStore(ME, lambda: {ME, "m2"})
    announcer = CountingAnnouncer(store, node, ME, health, interval=1000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(announcer.run)
        await trio.sleep(1)
        assert announcer.steps == 1
        assert ANNOUNCE_KEY in node.values

        # Not planner input: this machine's own values, and peers' announcements.
        for event in (kv(ME, HEALTH_KEY), kv(ME, ANNOUNCE_KEY), kv("m2", ANNOUNCE_KEY)):
            await node.send.send(event)
        await trio.sleep(1)
        assert announcer.steps == 1

        # Planner input: a peer's verdicts, a membership change, a local verdict change.
        await node.send.send(kv("m2", HEALTH_KEY))
        await trio.sleep(1)
        assert announcer.steps == 2
        await node.send.send(MemberEvent(EventKind.SUSPECT, "m2", 1, ("198.18.0.2", 7946), 0.0))
        await trio.sleep(1)
        assert announcer.steps == 3
        for listener in health.listeners:
            listener()
        await trio.sleep(1)
        assert announcer.steps == 4
        nursery.cancel_scope.cancel()


class ScriptedHealth(FakeHealth):
    def __init__(self) -> None:
        super().__init__()
        self.verdict = LocalVerdict(Health.HEALTHY, 0.0)

    def local(self) -> dict[str, LocalVerdict]:
        return {"vip/web": self.verdict}

    def set(self, verdict: LocalVerdict) -> None:
        self.verdict = verdict
        for listener in self.listeners:
            listener()


async def test_a_hold_ends_when_its_holdoff_runs_out_not_at_the_next_tick(
    clock: trio.testing.MockClock,
) -> None:
    """With nothing else waking it (a long interval), the announcer still re-plans exactly when a
    hold runs out, so the withdrawal is not late by up to one planning interval."""
    node = FakeNode()
    health = ScriptedHealth()
    store = ObjectStore(ME, lambda: {ME})
    check = {"type": "tcp", "target": ":80", "interval": 1, "timeout": 0.5}
    vip = {"name": "web", "address": "100.96.0.1", "machines": [ME], "health_check": check, "holdoff": 7}
    store.create(Kind.VIP, vip, 1)
    announcer = Announcer(store, node, ME, health, interval=1000.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(announcer.run)
        await trio.sleep(1)

        def decision() -> Decision:
            return announcer.decisions["vip/web"]

        assert decision().reason is Reason.HEALTHY
        failed_at = trio.current_time()
        health.set(LocalVerdict(Health.UNHEALTHY, failed_at))
        await trio.sleep(0.01)
        held = decision()
        assert held.reason is Reason.HELD and held.held_until == failed_at + 7
        await trio.sleep_until(held.held_until - 0.001)
        assert decision().reason is Reason.HELD
        await trio.sleep(0.002)
        assert decision().announce is False
        assert decision().reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED
        nursery.cancel_scope.cancel()


async def test_a_peers_hold_is_read_against_when_its_announcement_arrived(
    clock: trio.testing.MockClock,
) -> None:
    """A hold travels as the seconds it had left when published; a peer that converted it against the
    time it *read* the value (an API call, ``announced_by``) pushed the end of the hold later by the
    value's age, up to a plan interval plus gossip delay (the all-fail scenario saw +0.47 s)."""
    gossip = FakeNode()
    announcer = Announcer(ObjectStore(ME, lambda: {ME, "m2"}), gossip, ME, FakeHealth())
    async with trio.open_nursery() as nursery:
        await nursery.start(announcer.run)
        peer = node_addr(2)

        def publish(version: int, held_until: float) -> None:
            now = trio.current_time()
            packed = msgpack.packb(to_wire({"vip/web": Decision(True, Reason.HELD, held_until)}, now))
            kv = {ANNOUNCE_KEY: (version, packed)}
            gossip.member_list = [MemberInfo("m2", peer, 1, MemberState.ALIVE, 0.0, b"", kv)]

        # Published with 20 s left before this machine saw it arrive: converted from now (the fallback).
        publish(1, trio.current_time() + 20.0)
        start = trio.current_time()
        assert announcer.announcements()["m2"]["vip/web"].held_until == start + 20.0

        await trio.sleep(3.0)
        arrived = trio.current_time()
        publish(2, arrived + 20.0)
        gossip.send.send_nowait(MemberEvent(EventKind.KV, "m2", 1, peer, arrived, ANNOUNCE_KEY))
        await trio.sleep(0.4)  # read later: the hold still ends 20 s after the value arrived
        assert announcer.announcements()["m2"]["vip/web"].held_until == arrived + 20.0
        assert announcer.announced_by(Kind.VIP, "web") == ["m2"]
        nursery.cancel_scope.cancel()
