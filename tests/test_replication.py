"""Cluster objects replicated by real gossip nodes (in-memory network, real time) and kept in SQLite."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from agent.cluster.hlc import Timestamp, Version
from agent.cluster.objects import Kind
from agent.cluster.replication import ObjectReplicator, wall_ms
from agent.cluster.storage import SqliteObjectStorage
from agent.cluster.store import ObjectStore, Record, encode_record
from gossip import app_digest
from gossip.config import GossipConfig
from gossip.keyring import Keyring, Sealer
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode
from gossip.swim import Swim
from labs.kit.wait import eventually

FAST = GossipConfig(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.02, push_pull_interval=1.0)


@dataclass
class Agent:
    name: str
    node: GossipNode
    store: ObjectStore
    replicator: ObjectReplicator
    db: Path
    scope: trio.CancelScope


@asynccontextmanager
async def agents(tmp_path: Path, names: list[str]) -> AsyncIterator[dict[str, Agent]]:
    net = MemoryNetwork(random.Random(1), default_latency=0.001)
    sealer = Sealer(Keyring([b"\x05" * 32]), "objects")
    out: dict[str, Agent] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)

        async def start(i: int, name: str) -> Agent:
            addr = (f"198.18.0.{i + 1}", 7946)
            db = tmp_path / f"{name}.db"
            storage = SqliteObjectStorage(db)
            cores: list[Swim] = []

            def known() -> set[str]:
                return {m.name for m in cores[0].members()} if cores else set()

            store = ObjectStore(name, known, storage.load())
            replicator = ObjectReplicator(store)
            core = Swim(FAST, name, addr, sealer, random.Random(i), trio.current_time(), shared=replicator)
            cores.append(core)
            node = GossipNode(core, net.endpoint(addr))
            scope = await nursery.start(_run, node, replicator, storage)
            return Agent(name, node, store, replicator, db, scope)

        for i, name in enumerate(names):
            out[name] = await start(i, name)
        for name in names[1:]:
            assert await out[name].node.join([out[names[0]].node.core.addr], attempts=5, retry_interval=0.2)
        yield out
        nursery.cancel_scope.cancel()


async def _run(
    node: GossipNode,
    replicator: ObjectReplicator,
    storage: SqliteObjectStorage,
    *,
    task_status: trio.TaskStatus[trio.CancelScope],
) -> None:
    with trio.CancelScope() as scope, storage:
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await nursery.start(replicator.run, storage, node)
            task_status.started(scope)


VIP = {"name": "web", "address": "100.96.0.10", "machines": ["a", "b"]}


async def test_an_edit_reaches_every_store_and_every_disk(tmp_path: Path) -> None:
    async with agents(tmp_path, ["a", "b", "c"]) as ag:
        await eventually(
            lambda: all(x.node.core.alive_count() == 3 for x in ag.values()), timeout=5.0, poll=0.02
        )
        written = ag["b"].store.create(Kind.VIP, VIP, 1_000)
        await eventually(
            lambda: all(x.store.get_record(Kind.VIP, "web") == written for x in ag.values()),
            timeout=5.0,
            poll=0.02,
        )
        for x in ag.values():
            await x.replicator.flushed()
        for x in ag.values():
            with SqliteObjectStorage(x.db) as storage:
                assert written in storage.load()

        ag["c"].store.delete(Kind.VIP, "web", 2_000)
        await eventually(lambda: all(not x.store.list(Kind.VIP) for x in ag.values()), timeout=5.0, poll=0.02)
        tombstone = ag["a"].store.get_record(Kind.VIP, "web")
        assert tombstone is not None and tombstone.tombstone


async def test_a_node_that_was_down_catches_up_and_reloads_its_disk(tmp_path: Path) -> None:
    async with agents(tmp_path, ["a", "b"]) as ag:
        await eventually(
            lambda: all(x.node.core.alive_count() == 2 for x in ag.values()), timeout=5.0, poll=0.02
        )
        ag["a"].store.create(Kind.VIP, VIP, 1_000)
        await eventually(lambda: bool(ag["b"].store.list(Kind.VIP)), timeout=5.0, poll=0.02)
        await ag["b"].replicator.flushed()
    # b comes back with only its disk: the object is there before any gossip.
    with SqliteObjectStorage(tmp_path / "b.db") as storage:
        reloaded = ObjectStore("b", lambda: set(), storage.load())
    assert [v.name for v in reloaded.list(Kind.VIP)] == ["web"]  # type: ignore[union-attr]


async def test_garbage_from_a_peer_changes_nothing(tmp_path: Path) -> None:
    async with agents(tmp_path, ["a"]) as ag:
        replicator = ag["a"].replicator
        before = ag["a"].store.records()
        assert replicator.receive("vip/web", b"\x93not a record", 0.0) is False
        replicator.merge_full_state(b"\xc1", 0.0)
        assert ag["a"].store.records() == before
        assert replicator.decode_failures == 2


class _Recorder:
    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, key: str, payload: bytes) -> None:
        self.published.append(key)


class _CountingStorage(SqliteObjectStorage):
    """Counts transactions, so the test sees concurrent writers share one."""

    commits = 0

    def save_many(self, records: object) -> None:
        self.commits += 1
        super().save_many(records)  # type: ignore[arg-type]


async def test_concurrent_writers_wait_for_one_shared_commit(tmp_path: Path) -> None:
    store = ObjectStore("a", lambda: {"a"})
    replicator = ObjectReplicator(store)
    gossip = _Recorder()
    storage = _CountingStorage(tmp_path / "o.db")
    with storage:
        async with trio.open_nursery() as nursery:
            await nursery.start(replicator.run, storage, gossip)
            on_disk: list[bool] = []

            async def writer(i: int) -> None:
                store.create(Kind.VIP, {"name": f"v{i}", "address": f"100.96.0.{i + 1}"}, 1_000)
                await replicator.committed()
                with SqliteObjectStorage(storage.path) as other:  # another connection: what is committed
                    on_disk.append(f"v{i}" in {r.name for r in other.load()})

            async with trio.open_nursery() as writers:
                for i in range(20):
                    writers.start_soon(writer, i)
            nursery.cancel_scope.cancel()
        assert on_disk == [True] * 20  # each writer's own change was on disk when it was told so
        assert storage.commits < 20  # writers that arrived together shared a transaction
    assert sorted(gossip.published) == sorted(f"vip/v{i}" for i in range(20))  # spread once committed


async def test_a_record_from_the_far_future_is_neither_stored_nor_passed_on(tmp_path: Path) -> None:
    async with agents(tmp_path, ["a"]) as ag:
        replicator, store = ag["a"].replicator, ag["a"].store
        before = store.records()

        def record(ahead_ms: int) -> bytes:
            version = Version(Timestamp(wall_ms() + ahead_ms, 0), "z")
            return encode_record(Record(Kind.POLICY_SET, "p", version, {"name": "p"}))

        # False: the gossip core only passes on what receive reports as new
        assert replicator.receive("policy-set/p", record(365 * 86_400_000), 0.0) is False
        assert store.records() == before and store.refused_ahead == 1
        assert replicator.receive("policy-set/p", record(30_000), 0.0) is True


async def test_a_record_restamped_on_load_is_saved_and_spread(tmp_path: Path) -> None:
    """The agent's start: a far-future record an older agent kept is rewritten on disk and published."""
    future = Version(Timestamp(wall_ms() + 365 * 86_400_000, 0), "z")
    with SqliteObjectStorage(tmp_path / "o.db") as storage:
        storage.save(Record(Kind.POLICY_SET, "p", future, {"name": "p"}))
    gossip = _Recorder()
    with SqliteObjectStorage(tmp_path / "o.db") as storage:
        store = ObjectStore("a", lambda: {"a"}, storage.load(), wall_ms=wall_ms())
        replicator = ObjectReplicator(store)
        async with trio.open_nursery() as nursery:
            await nursery.start(replicator.run, storage, gossip)
            await replicator.flushed()
            await eventually(lambda: gossip.published or None, what="the repair published", timeout=5.0)
            nursery.cancel_scope.cancel()
        (on_disk,) = storage.load()
    assert on_disk.version.ts.wall_ms < future.ts.wall_ms - 300 * 86_400_000
    assert on_disk == store.get_record(Kind.POLICY_SET, "p")
    assert gossip.published == ["policy-set/p"]


def test_a_notice_of_a_refused_far_future_item_is_not_pulled_again() -> None:
    store = ObjectStore("a", lambda: {"a"})
    replicator = ObjectReplicator(store)
    version = Version(Timestamp(wall_ms() + 365 * 86_400_000, 0), "z")
    payload = encode_record(Record(Kind.POLICY_SET, "p", version, {"name": "p"}))
    assert replicator.wants("policy-set/p", app_digest(payload))  # not seen yet: worth a pull
    assert replicator.receive("policy-set/p", payload, 0.0) is False
    assert not replicator.wants("policy-set/p", app_digest(payload))
    assert replicator.receive("policy-set/p", payload, 0.0) is False and store.refused_ahead == 1
    sane = encode_record(Record(Kind.POLICY_SET, "p", Version(Timestamp(wall_ms(), 0), "z"), {"name": "p"}))
    assert replicator.wants("policy-set/p", app_digest(sane))  # another version of the item still is
