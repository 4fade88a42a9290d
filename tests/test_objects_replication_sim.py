"""Cluster objects replicated by simulated gossip clusters: the real store and replicator on every node."""

from __future__ import annotations

import pytest

from agent.cluster.hlc import Timestamp, Version
from agent.cluster.objects import Kind
from agent.cluster.replication import ObjectReplicator, item_key
from agent.cluster.store import ObjectStore, Record, encode_record
from gossip.sim import Simulation

EPOCH_MS = 1_800_000_000_000


def cluster(n: int, seed: int = 1) -> Simulation:
    names = {f"n{i}" for i in range(n)}
    holder: list[Simulation] = []

    def wall_ms() -> int:
        return EPOCH_MS + int(holder[0].now * 1000) if holder else EPOCH_MS

    def replicator(name: str) -> ObjectReplicator:
        return ObjectReplicator(ObjectStore(name, lambda: names, ()), clock_ms=wall_ms)

    sim = Simulation(n, seed=seed, shared=replicator)
    holder.append(sim)
    sim.join_all(stagger=0.02)
    sim.run_until(sim.now + 10.0)
    return sim


def store(sim: Simulation, name: str) -> ObjectStore:
    shared = sim.shared[name]
    assert isinstance(shared, ObjectReplicator)
    return shared.store


def now_ms(sim: Simulation) -> int:
    return EPOCH_MS + int(sim.now * 1000)


def spread(sim: Simulation, name: str, record: Record) -> Record:
    """What the replicator's task does after writing a local edit to disk."""
    sim.publish(name, item_key(record.kind, record.name), encode_record(record))
    return record


def names_of(objects: list[object]) -> list[str]:
    return [str(getattr(o, "name", "")) for o in objects]


def vip(name: str, address: str, *machines: str) -> dict[str, object]:
    return {"name": name, "address": address, "machines": list(machines)}


def test_an_edit_is_on_every_node_within_a_bound() -> None:
    sim = cluster(50)
    start = sim.now
    written = spread(
        sim, "n3", store(sim, "n3").create(Kind.VIP, vip("web", "100.96.0.10", "n1"), now_ms(sim))
    )
    while not all(store(sim, n).get_record(Kind.VIP, "web") == written for n in sim.names):
        assert sim.now - start < 3.0, "an edit took longer than 3 s to reach 50 nodes"
        sim.run_until(sim.now + 0.05)


@pytest.mark.attack
def test_concurrent_edits_in_two_partitions_converge_after_heal() -> None:
    sim = cluster(10, seed=2)
    for name in ("shared", "doomed"):
        spread(sim, "n0", store(sim, "n0").create(Kind.VIP, vip(name, "100.96.0.1", "n0"), now_ms(sim)))
    sim.run_until(sim.now + 5.0)
    left, right = set(sim.names[:5]), set(sim.names[5:])
    sim.partition([left, right])
    sim.run_until(sim.now + 1.0)

    spread(sim, "n1", store(sim, "n1").patch(Kind.VIP, "shared", {"holdoff": 10}, now_ms(sim)))
    sim.run_until(sim.now + 2.0)
    spread(sim, "n7", store(sim, "n7").patch(Kind.VIP, "shared", {"holdoff": 30}, now_ms(sim)))  # later
    spread(sim, "n8", store(sim, "n8").delete(Kind.VIP, "doomed", now_ms(sim)))
    spread(
        sim, "n2", store(sim, "n2").create(Kind.ROUTE, {"name": "lan", "prefix": "10.1.0.0/16"}, now_ms(sim))
    )
    sim.run_until(sim.now + 20.0)
    assert store(sim, "n0").get_record(Kind.VIP, "doomed") != store(sim, "n9").get_record(Kind.VIP, "doomed")

    sim.heal()
    sim.run_until(sim.now + 300.0)
    reference = store(sim, "n0").records()
    assert all(store(sim, n).records() == reference for n in sim.names)
    shared = store(sim, "n4").get(Kind.VIP, "shared")
    assert getattr(shared, "holdoff", None) == 30  # the later edit won on both sides
    assert "doomed" not in names_of(list(store(sim, "n4").list(Kind.VIP)))
    assert names_of(list(store(sim, "n9").list(Kind.ROUTE))) == ["lan"]


def test_tombstones_expire_everywhere_and_the_object_stays_deleted() -> None:
    sim = cluster(5, seed=3)
    spread(sim, "n1", store(sim, "n1").create(Kind.VIP, vip("old", "100.96.0.2", "n1"), now_ms(sim)))
    sim.run_until(sim.now + 5.0)
    spread(sim, "n2", store(sim, "n2").delete(Kind.VIP, "old", now_ms(sim)))
    sim.run_until(sim.now + 5.0)
    assert all(store(sim, n).get_record(Kind.VIP, "old") is not None for n in sim.names)  # tombstones
    keep_ms = 60_000
    sim.run_until(sim.now + 61.0)
    for n in sim.names:
        assert [r.name for r in store(sim, n).expire_tombstones(now_ms(sim), keep_ms)] == ["old"]
    sim.run_until(sim.now + 120.0)  # several push-pulls later, nobody brings it back
    assert all(store(sim, n).get_record(Kind.VIP, "old") is None for n in sim.names)


@pytest.mark.attack
def test_the_same_vip_created_on_both_sides_of_a_partition_is_a_conflict_seen_everywhere() -> None:
    sim = cluster(10, seed=3)
    left, right = set(sim.names[:5]), set(sim.names[5:])
    sim.partition([left, right])
    sim.run_until(sim.now + 1.0)
    lost = spread(sim, "n1", store(sim, "n1").create(Kind.VIP, vip("web", "100.96.0.1", "n1"), now_ms(sim)))
    sim.run_until(sim.now + 1.0)
    won = spread(sim, "n7", store(sim, "n7").create(Kind.VIP, vip("web", "100.96.0.2", "n7"), now_ms(sim)))
    sim.run_until(sim.now + 5.0)
    assert not store(sim, "n1").conflicts(Kind.VIP, "web")  # nothing to see until the sides meet

    sim.heal()
    sim.run_until(sim.now + 300.0)
    assert all(store(sim, n).get_record(Kind.VIP, "web") == won for n in sim.names)  # one winner everywhere
    # Every node that held or received the losing version records it: the whole losing side, and those
    # of the winning side that heard of it before it was overwritten everywhere (not, here, the winner).
    seen = {n for n in sim.names if store(sim, n).conflicts(Kind.VIP, "web")}
    assert left <= seen and seen & right
    for name in seen:
        (conflict,) = store(sim, name).conflicts(Kind.VIP, "web")
        assert (conflict.type, conflict.lost, conflict.won) == ("concurrent_write", lost.version, won.version)
        assert store(sim, name).conflict_counts == {("vip", "concurrent_write"): 1}
        (problem,) = store(sim, name).problems_of(Kind.VIP, "web")
        assert "written by n1" in problem.msg and "lost to n7" in problem.msg
        assert store(sim, name).problems()[(Kind.VIP, "web")] == [problem]


class _CountingReplicator(ObjectReplicator):
    """Counts the items gossip hands over (each pulled notice ends here)."""

    received = 0

    def receive(self, key: str, payload: bytes, now: float) -> bool:
        self.received += 1
        return super().receive(key, payload, now)


@pytest.mark.attack
def test_a_refused_far_future_item_is_pulled_and_counted_once_per_node() -> None:
    """An older agent (n0) still holds a record stamped years ahead and keeps announcing it; the
    others refuse it once each, and neither pull it on every notice nor count it on every push-pull."""
    names = {f"n{i}" for i in range(5)}
    holder: list[Simulation] = []
    far = Version(Timestamp(EPOCH_MS + 10 * 365 * 86_400_000, 0), "n0")
    # Large enough to travel by notice and pull, not in a datagram.
    forged = Record(Kind.VIP, "web", far, {**vip("web", "100.96.0.1", "n0"), "note": "x" * 2000})

    def wall_ms() -> int:
        return EPOCH_MS + int(holder[0].now * 1000) if holder else EPOCH_MS

    def replicator(name: str) -> ObjectReplicator:
        kept = [forged] if name == "n0" else []
        return _CountingReplicator(ObjectStore(name, lambda: names, kept), clock_ms=wall_ms)

    sim = Simulation(5, seed=4, shared=replicator)
    holder.append(sim)
    sim.join_all(stagger=0.02)
    sim.run_until(sim.now + 5.0)
    for _ in range(20):  # a notice every 3 s for a minute, and the push-pulls in between
        sim.publish("n0", "vip/web", encode_record(forged))
        sim.run_until(sim.now + 3.0)
    for name in sorted(names - {"n0"}):
        shared = sim.shared[name]
        assert isinstance(shared, _CountingReplicator)
        assert shared.store.get_record(Kind.VIP, "web") is None
        assert shared.store.refused_ahead == 1, name
        assert shared.received <= 2, (name, shared.received)  # not one pull per notice
