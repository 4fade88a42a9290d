"""The application channel: items every member replicates, with last-writer-wins on top."""

from __future__ import annotations

import msgpack

from gossip.shared import SharedState
from gossip.sim import Simulation
from gossip.swim import app_digest


class LwwItems:
    """A minimal replicated map: each item is [version, origin, body]; the higher (version, origin) wins."""

    def __init__(self) -> None:
        self.items: dict[str, bytes] = {}

    @staticmethod
    def stamp(payload: bytes) -> tuple[int, str]:
        version, origin, _ = msgpack.unpackb(payload)
        return int(version), str(origin)

    def receive(self, key: str, payload: bytes, now: float) -> bool:
        current = self.items.get(key)
        if current is not None and self.stamp(current) >= self.stamp(payload):
            return False
        self.items[key] = payload
        return True

    def get(self, key: str) -> bytes | None:
        return self.items.get(key)

    def wants(self, key: str, digest: bytes) -> bool:
        current = self.items.get(key)
        return current is None or app_digest(current) != digest

    def full_state(self) -> bytes:
        return msgpack.packb(self.items)  # type: ignore[no-any-return]

    def merge_full_state(self, data: bytes, now: float) -> None:
        for key, payload in msgpack.unpackb(data).items():
            self.receive(key, payload, now)


def item(version: int, origin: str, body: bytes) -> bytes:
    return msgpack.packb([version, origin, body])  # type: ignore[no-any-return]


def _check(shared: SharedState) -> LwwItems:
    assert isinstance(shared, LwwItems)
    return shared


def views(sim: Simulation, names: list[str] | None = None) -> list[dict[str, bytes]]:
    return [_check(sim.shared[n]).items for n in (names or sim.alive_names())]


def edit(sim: Simulation, name: str, key: str, payload: bytes) -> None:
    assert _check(sim.shared[name]).receive(key, payload, sim.now)
    sim.publish(name, key, payload)


def cluster(n: int, seed: int = 1) -> Simulation:
    sim = Simulation(n, seed=seed, shared=lambda _name: LwwItems())
    sim.join_all(stagger=0.02)
    sim.run_until(sim.now + 10.0)
    return sim


def test_an_edit_on_one_node_reaches_every_node_quickly() -> None:
    sim = cluster(50)
    start = sim.now
    edit(sim, "n7", "vip/web", item(1, "n7", b"100.96.0.10"))
    while not all(v.get("vip/web") for v in views(sim)):
        assert sim.now - start < 3.0, "an edit took longer than 3 s to reach 50 nodes"
        sim.run_until(sim.now + 0.05)


def test_large_items_travel_by_notice_and_pull() -> None:
    sim = cluster(20)
    big = item(1, "n3", bytes(range(256)) * 12)  # ~3 KB: more than a datagram holds
    edit(sim, "n3", "policy-set/edge", big)
    pulls_before = sim.stats.streams
    sim.run_until(sim.now + 3.0)
    assert all(v.get("policy-set/edge") == big for v in views(sim))
    assert sim.stats.streams - pulls_before >= 19  # everyone else pulled it over a stream


def test_edits_on_both_sides_of_a_partition_converge_after_heal() -> None:
    sim = cluster(10, seed=2)
    left, right = set(sim.names[:5]), set(sim.names[5:])
    sim.partition([left, right])
    edit(sim, "n1", "vip/a", item(1, "n1", b"left"))
    edit(sim, "n6", "vip/a", item(2, "n6", b"right, later"))
    edit(sim, "n2", "vip/b", item(1, "n2", b"only left"))
    edit(sim, "n8", "vip/c", item(1, "n8", b"only right"))
    sim.run_until(sim.now + 20.0)
    assert views(sim, ["n0"])[0].get("vip/c") is None  # the halves really were apart
    sim.heal()
    sim.run_until(sim.now + 300.0)
    expected = {
        "vip/a": item(2, "n6", b"right, later"),
        "vip/b": item(1, "n2", b"only left"),
        "vip/c": item(1, "n8", b"only right"),
    }
    assert all(v == expected for v in views(sim))


def test_a_late_joiner_gets_everything_by_push_pull() -> None:
    sim = cluster(5, seed=3)
    for i in range(30):
        edit(sim, "n1", f"route/r{i}", item(1, "n1", b"x" * 40))
    sim.run_until(sim.now + 30.0)  # long after the broadcasts' retransmits ran out
    sim.add_node("late")
    sim.join("late", ["n2"])
    sim.run_until(sim.now + 1.0)
    assert len(_check(sim.shared["late"]).items) == 30
