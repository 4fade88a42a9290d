"""Whole clusters of Trio-driven gossip nodes on the in-memory network, under MockClock.

These run the real driver (:class:`gossip.node.GossipNode`) and the real core over
:mod:`gossip.memnet`, so ten simulated minutes take seconds of wall time.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from common.address import Address
from gossip.config import GossipConfig
from gossip.events import EventKind, MemberEvent, MemberState
from gossip.keyring import Keyring, Sealer
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode
from gossip.swim import Swim
from labs.kit.wait import eventually

KEY = b"\x11" * 32


@pytest.fixture(autouse=True)
def _quiet_gossip_log() -> Iterator[None]:
    """Thousands of membership lines would only slow the run down; the events are checked directly."""
    logger = logging.getLogger("wiremesh.gossip")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@dataclass
class Cluster:
    net: MemoryNetwork
    nursery: trio.Nursery
    config: GossipConfig
    nodes: dict[str, GossipNode] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    seen: list[tuple[float, str, MemberEvent]] = field(default_factory=list)

    def addr(self, name: str) -> Address:
        return self.nodes[name].core.addr

    async def add(self, name: str, index: int, key: bytes = KEY, cluster: str = "sim") -> GossipNode:
        addr = (f"198.18.{index // 250}.{index % 250}", 7946)
        sealer = Sealer(Keyring([key]), cluster)
        core = Swim(self.config, name, addr, sealer, random.Random(index), trio.current_time())
        node = GossipNode(core, self.net.endpoint(addr))
        self.nodes[name] = node
        self.scopes[name] = await self.nursery.start(self._run, name, node)
        return node

    async def _run(
        self, name: str, node: GossipNode, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            events = node.subscribe(max_buffer=100_000)
            async with trio.open_nursery() as inner:
                await inner.start(node.run)
                task_status.started(scope)
                async for event in events:
                    self.seen.append((trio.current_time(), name, event))

    def kill(self, name: str) -> None:
        """The host crashes: no goodbye, nothing more sent or received."""
        self.net.kill(self.addr(name))
        self.scopes[name].cancel()

    def states(self, observer: str) -> dict[str, MemberState]:
        return {m.name: m.state for m in self.nodes[observer].members()}

    def live_views(self) -> list[int]:
        return [n.core.alive_count() for name, n in self.nodes.items() if not self.scopes[name].cancel_called]


@asynccontextmanager
async def cluster_of(
    n: int, config: GossipConfig | None = None, *, loss: float = 0.0, seed: int = 7
) -> AsyncIterator[Cluster]:
    net = MemoryNetwork(random.Random(seed), default_latency=0.002, loss=loss)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        c = Cluster(net, nursery, config or GossipConfig())
        names = [f"n{i}" for i in range(n)]
        for i, name in enumerate(names):
            await c.add(name, i)
        for i, name in enumerate(names[1:], 1):
            await c.nodes[name].join([c.addr(names[random.Random(i).randrange(i)])], attempts=10)
            await trio.sleep(0.01)
        yield c
        nursery.cancel_scope.cancel()


def detection_bound(config: GossipConfig, n: int) -> float:
    """Every member probes every other once per pass, so some member probes the victim within one
    pass of ``n - 1`` (awareness-stretched) intervals; then at most the longest suspicion; then the
    death notice and the observers' own suspicion timers (also bounded by the longest suspicion)."""
    stretched = config.probe_interval * config.awareness_max_multiplier
    longest_suspicion = config.suspicion_max_timeout_mult * config.suspicion_min_timeout(n)
    return (n - 1) * stretched + longest_suspicion + 10 * config.gossip_interval


async def test_200_members_at_10_percent_loss_never_declare_a_live_member_dead(
    clock: trio.testing.MockClock,
) -> None:
    async with cluster_of(200, loss=0.10) as c:
        await eventually(lambda: min(c.live_views()) == 200, timeout=300, poll=0.5)
        start = trio.current_time()
        await trio.sleep(600)  # ten simulated minutes
        deaths = [(t, who, e) for t, who, e in c.seen if e.kind is EventKind.DEAD and t >= start]
        assert deaths == []
        assert min(c.live_views()) == 200
        assert c.net.stats.dropped_loss > 0  # the loss really happened


async def test_killed_member_is_declared_dead_by_everyone_within_the_bound(
    clock: trio.testing.MockClock,
) -> None:
    n = 30
    async with cluster_of(n) as c:
        await eventually(lambda: min(c.live_views()) == n, timeout=120, poll=0.5)
        c.kill("n13")
        killed = trio.current_time()
        bound = detection_bound(c.config, n)
        survivors = [name for name in c.nodes if name != "n13"]
        await eventually(
            lambda: all(c.states(s)["n13"] is MemberState.DEAD for s in survivors), timeout=bound, poll=0.5
        )
        deaths = {who: t - killed for t, who, e in c.seen if e.kind is EventKind.DEAD and e.name == "n13"}
        assert set(deaths) == set(survivors)
        assert max(deaths.values()) <= bound


async def test_partition_into_two_halves_heals_into_one_membership(
    clock: trio.testing.MockClock,
) -> None:
    n = 20
    async with cluster_of(n) as c:
        await eventually(lambda: min(c.live_views()) == n, timeout=120, poll=0.5)
        left = {c.addr(f"n{i}") for i in range(n // 2)}
        right = {c.addr(f"n{i}") for i in range(n // 2, n)}
        c.net.partition([left, right])
        await eventually(lambda: max(c.live_views()) == n // 2, timeout=300, poll=0.5)
        assert c.states("n0")["n15"] is MemberState.DEAD
        # Long past gossip_to_the_dead_time: only the periodic reconnect can bring the halves together.
        await trio.sleep(4 * c.config.gossip_to_the_dead_time)
        c.net.heal()
        await eventually(lambda: min(c.live_views()) == n, timeout=600, poll=0.5)
        for name in c.nodes:
            assert set(c.states(name).values()) == {MemberState.ALIVE}


async def test_node_with_a_wrong_key_never_joins_and_changes_nothing(
    clock: trio.testing.MockClock,
) -> None:
    async with cluster_of(5) as c:
        await eventually(lambda: min(c.live_views()) == 5, timeout=60, poll=0.5)
        before = {
            name: sorted((m.name, m.state, m.incarnation) for m in node.members())
            for name, node in c.nodes.items()
        }
        intruder = await c.add("intruder", 99, key=b"\x22" * 32)
        joined = await intruder.join([c.addr("n0")], attempts=3, retry_interval=1.0)
        await trio.sleep(60)
        assert not joined
        assert intruder.core.alive_count() == 1
        c.nodes.pop("intruder")
        after = {
            name: sorted((m.name, m.state, m.incarnation) for m in node.members())
            for name, node in c.nodes.items()
        }
        assert after == before
        assert c.nodes["n0"].snapshot()["traffic"]["auth_failures"] >= 1


async def test_other_cluster_name_with_the_same_key_is_refused(clock: trio.testing.MockClock) -> None:
    async with cluster_of(3) as c:
        await eventually(lambda: min(c.live_views()) == 3, timeout=60, poll=0.5)
        stranger = await c.add("stranger", 98, cluster="other")
        assert not await stranger.join([c.addr("n0")], attempts=2, retry_interval=1.0)
        assert all("stranger" not in c.states(name) for name in ("n0", "n1", "n2"))
