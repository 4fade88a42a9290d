"""What wakes the Announcer to re-plan: only changes to what the planner reads (under MockClock).

Re-planning costs O(objects); with hundreds of checks, waking on every result or on this machine's own
gossip values would re-plan hundreds of times a second for nothing."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from agent.announcer import ANNOUNCE_KEY, Announcer
from agent.checkstate import Verdict
from agent.healthd import HEALTH_KEY
from agent.planner import LocalVerdict
from agent.store import ObjectStore
from gossip.events import EventKind, MemberEvent, MemberInfo

ME = "m1"


class FakeNode:
    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[MemberEvent](100)
        self.values: dict[str, bytes | None] = {}

    def members(self) -> list[MemberInfo]:
        return []

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        return self.recv

    async def set_kv(self, key: str, value: bytes | None) -> None:
        self.values[key] = value


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
