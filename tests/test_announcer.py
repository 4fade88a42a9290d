"""The announcer on a 3-machine in-memory gossip cluster under MockClock: one machine's check fails, it
withdraws while the other two keep announcing, and every machine's status provider shows it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import msgpack
import trio
import trio.testing

from agent.announce.driver import Announcer
from agent.announce.planner import PeerVerdict, Reason, from_wire
from agent.cluster.objects import HealthCheck, Kind
from agent.cluster.replication import ObjectReplicator, wall_ms
from agent.cluster.storage import SqliteObjectStorage
from agent.cluster.store import ObjectStore
from agent.health.execpolicy import ExecPolicy
from agent.health.probes import CheckResult
from agent.health.runner import HealthRunner
from agent.health.verdict import Health, LocalVerdict, Verdict
from agent.published import ANNOUNCE_KEY, HEALTH_KEY
from gossip.config import GossipConfig
from gossip.events import MemberEvent, MemberInfo, MemberState
from gossip.keyring import Keyring, Sealer
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode
from gossip.swim import Swim

FAST = GossipConfig(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.02, push_pull_interval=1.0)
NAMES = ["m1", "m2", "m3"]


@dataclass
class Agent:
    name: str
    node: GossipNode
    store: ObjectStore
    health: HealthRunner
    announcer: Announcer
    up: list[bool]


@asynccontextmanager
async def cluster(tmp_path: Path) -> AsyncIterator[dict[str, Agent]]:
    net = MemoryNetwork(random.Random(1), default_latency=0.001)
    sealer = Sealer(Keyring([b"\x05" * 32]), "announce")
    out: dict[str, Agent] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        for i, name in enumerate(NAMES):
            cores: list[Swim] = []

            def known(cores: list[Swim] = cores) -> set[str]:
                return {m.name for m in cores[0].members()} if cores else set()

            store = ObjectStore(name, known)
            replicator = ObjectReplicator(store)
            core = Swim(
                FAST,
                name,
                (f"198.18.0.{i + 1}", 7946),
                sealer,
                random.Random(i),
                trio.current_time(),
                shared=replicator,
            )
            cores.append(core)
            node = GossipNode(core, net.endpoint(core.addr))
            up = [True]

            async def probe(check: HealthCheck, up: list[bool] = up) -> CheckResult:
                await trio.sleep(0.001)
                return CheckResult(ok=up[0], latency=0.001, error=None if up[0] else "refused")

            health = HealthRunner(
                store,
                ExecPolicy(),
                name,
                node.set_kv,
                rng=random.Random(i),
                probe=probe,
                wall_clock=trio.current_time,
            )
            announcer = Announcer(store, node, name, health)
            await nursery.start(node.run)
            storage = SqliteObjectStorage(tmp_path / f"{name}.db")
            nursery.start_soon(replicator.run, storage, node)
            await nursery.start(health.run)
            await nursery.start(announcer.run)
            out[name] = Agent(name, node, store, health, announcer, up)
        for name in NAMES[1:]:
            assert await out[name].node.join([out[NAMES[0]].node.core.addr], attempts=5, retry_interval=0.2)
        yield out
        nursery.cancel_scope.cancel()


def announce_of(agents: dict[str, Agent], observer: str, machine: str) -> bool | None:
    """What ``observer`` sees in ``machine``'s gossiped ``announce`` value for vip/web."""
    for member in agents[observer].node.members():
        if member.name == machine:
            _version, value = member.kv.get(ANNOUNCE_KEY, (0, None))
            if value is None:
                return None
            decisions = from_wire(msgpack.unpackb(value), trio.current_time())
            decision = decisions.get("vip/web")
            return None if decision is None else decision.announce
    return None


async def test_failing_machine_withdraws_while_the_others_announce(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with cluster(tmp_path) as agents:
        check = {
            "type": "tcp",
            "target": ":80",
            "interval": 1.0,
            "timeout": 0.5,
            "healthy_threshold": 2,
            "unhealthy_threshold": 3,
        }
        body = {
            "name": "web",
            "address": "100.64.0.1",
            "machines": NAMES,
            "health_check": check,
            "holdoff": 30,
        }
        agents["m1"].store.create(Kind.VIP, body, wall_ms())
        await trio.sleep(5)
        for observer in NAMES:
            for machine in NAMES:
                assert announce_of(agents, observer, machine) is True, (observer, machine)
            assert agents[observer].announcer.announced_by(Kind.VIP, "web") == NAMES
            assert agents[observer].announcer.health(Kind.VIP, "web", "m2") == "healthy"

        agents["m2"].up[0] = False
        failed_at = trio.current_time()
        while agents["m2"].announcer.decisions["vip/web"].announce:
            await trio.sleep(0.05)
        # Peers are healthy, so no hold: withdrawn within interval x unhealthy threshold (+ plan latency).
        assert trio.current_time() - failed_at <= 1.0 * 3 + 0.1
        assert agents["m2"].announcer.decisions["vip/web"].reason is Reason.WITHDRAWN_PEER_HEALTHY
        await trio.sleep(1)
        for observer in NAMES:
            assert announce_of(agents, observer, "m2") is False, observer
            assert announce_of(agents, observer, "m1") is True, observer
            assert announce_of(agents, observer, "m3") is True, observer
            assert agents[observer].announcer.announced_by(Kind.VIP, "web") == ["m1", "m3"]
            assert agents[observer].announcer.health(Kind.VIP, "web", "m2") == "unhealthy"
            assert agents[observer].announcer.health(Kind.VIP, "web", "m1") == "healthy"


class _FakeGossip:
    """A gossip view whose members and their ``health`` values the test sets directly."""

    def __init__(self) -> None:
        self.peers: dict[str, MemberInfo] = {}

    def set_health(self, name: str, version: int, verdicts: dict[str, Verdict]) -> None:
        value = msgpack.packb({k: v.to_wire() for k, v in verdicts.items()})
        self.peers[name] = MemberInfo(
            name, ("198.18.0.9", 7946), 0, MemberState.ALIVE, 0.0, b"", {HEALTH_KEY: (version, value)}
        )

    def members(self) -> list[MemberInfo]:
        return list(self.peers.values())

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        raise NotImplementedError

    async def set_kv(self, key: str, value: bytes | None) -> None:
        return None


class _NoLocal:
    def local(self) -> dict[str, LocalVerdict]:
        return {}

    def verdicts(self) -> dict[str, Verdict]:
        return {}

    def on_change(self, listener: Callable[[], None]) -> None:
        return None


def test_a_peer_pass_is_dated_when_a_new_passing_result_arrives() -> None:
    """``passed_at`` moves only with a new result (``checked_at``), not with a republish of the same
    one (another object's result changed the version), and a failing result clears it."""
    gossip = _FakeGossip()
    announcer = Announcer(ObjectStore("m1", lambda: {"m1", "m2"}), gossip, "m1", _NoLocal())

    def peer_verdict(now: float) -> PeerVerdict:
        return announcer.build_input(now).peers["m2"].verdicts["vip/web"]

    passing = Verdict("healthy", 0.0, consecutive=5, last_ok=True, checked_at=100.0)
    gossip.set_health("m2", 1, {"vip/web": passing})
    assert peer_verdict(10.0) == PeerVerdict(Health.HEALTHY, 10.0, True, 10.0)
    other = Verdict("unknown", 0.0, consecutive=1, last_ok=False, checked_at=101.0)
    gossip.set_health("m2", 2, {"vip/web": passing, "vip/db": other})  # same web result, new version
    assert peer_verdict(11.0) == PeerVerdict(Health.HEALTHY, 11.0, True, 10.0)
    gossip.set_health("m2", 3, {"vip/web": replace(passing, consecutive=6, checked_at=102.0)})
    assert peer_verdict(12.0) == PeerVerdict(Health.HEALTHY, 12.0, True, 12.0)
    failing = replace(passing, consecutive=1, last_ok=False, checked_at=103.0)
    gossip.set_health("m2", 4, {"vip/web": failing})
    assert peer_verdict(13.0) == PeerVerdict(Health.HEALTHY, 13.0, False, None)
