"""A discrete-event simulator that drives many :class:`Swim` cores directly, with no Trio at all.

Because the core is sans-I/O, a simulated cluster is just a heap of due times: datagrams in flight
and each node's next deadline. That makes a 1,000-node cluster cheap enough to benchmark figures
like detection time and dissemination spread. The Trio driver plus :mod:`gossip.memnet` is what
the simulation tests use; this module is for scale.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from common.address import Address
from gossip.config import GossipConfig
from gossip.events import MemberEvent
from gossip.keyquery import MemoryKeys
from gossip.keyring import Keyring, Sealer
from gossip.shared import SharedState
from gossip.swim import Swim
from gossip.wire import KeyQuery


@dataclass(frozen=True, slots=True)
class Observed:
    """An event as one node saw it."""

    at: float
    observer: str
    event: MemberEvent


@dataclass
class SimStats:
    datagrams: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    bytes: int = 0
    streams: int = 0


@dataclass
class _Node:
    core: Swim
    alive: bool = True
    group: int = 0
    bytes_out: int = 0
    scheduled_at: float = -1.0


@dataclass(frozen=True, slots=True)
class _Datagram:
    src: Address
    dst: Address
    data: bytes


@dataclass(order=True)
class _Due:
    """A datagram to deliver, or a node (by name) whose deadline is due."""

    at: float
    seq: int
    payload: _Datagram | str = field(compare=False)


class Simulation:
    """N gossip nodes on a lossy, partitionable network with fixed one-way latency."""

    def __init__(
        self,
        n: int,
        config: GossipConfig | None = None,
        *,
        seed: int = 1,
        latency: float = 0.001,
        loss: float = 0.0,
        key: bytes | None = b"\x01" * 32,
        on_event: Callable[[Observed], None] | None = None,
        shared: Callable[[str], SharedState] | None = None,
    ) -> None:
        """``shared`` makes each node's application state (by node name), if the run needs one."""
        self.config = config or GossipConfig()
        self.rng = random.Random(seed)
        self.latency = latency
        self.loss = loss
        self.now = 0.0
        self.stats = SimStats()
        self.events: list[Observed] = []
        self._on_event = on_event
        self._shared_factory = shared
        self.shared: dict[str, SharedState] = {}
        self._sealer = Sealer(Keyring([key]) if key else None, "sim")
        self._heap: list[_Due] = []
        self._seq = itertools.count()
        self._nodes: dict[str, _Node] = {}
        self._by_addr: dict[Address, str] = {}
        for i in range(n):
            self.add_node(f"n{i}")

    # --- building the cluster ------------------------------------------------------------------

    def add_node(self, name: str, incarnation: int = 0) -> Swim:
        index = len(self._by_addr) if name not in self._nodes else None
        if index is None:
            addr = self._nodes[name].core.addr
        else:
            addr = (f"198.18.{index // 250}.{index % 250}", 7946)
        if self._shared_factory is not None:
            self.shared[name] = self._shared_factory(name)
        core = Swim(
            self.config,
            name,
            addr,
            self._sealer,
            random.Random(self.rng.getrandbits(64)),
            self.now,
            incarnation=incarnation,
            shared=self.shared.get(name),
        )
        self._nodes[name] = _Node(core)
        self._by_addr[addr] = name
        self._schedule(name)
        return core

    def node(self, name: str) -> Swim:
        return self._nodes[name].core

    @property
    def names(self) -> list[str]:
        return list(self._nodes)

    def alive_names(self) -> list[str]:
        return [n for n, node in self._nodes.items() if node.alive]

    def publish(self, name: str, key: str, payload: bytes) -> None:
        self._nodes[name].core.publish(key, payload, self.now)
        self._flush(name)

    def join(self, name: str, seeds: Iterable[str]) -> None:
        core = self._nodes[name].core
        core.join([self._nodes[s].core.addr for s in seeds], self.now)
        self._flush(name)

    def join_all(self, stagger: float = 0.05) -> None:
        """Every node joins one random earlier node, ``stagger`` seconds apart (a rolling start)."""
        names = self.names
        for i, name in enumerate(names[1:], 1):
            self.run_until(self.now + stagger)
            self.join(name, [names[self.rng.randrange(i)]])

    # --- faults ----------------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """The process stops: it neither sends nor receives, and says nothing to anyone."""
        self._nodes[name].alive = False

    def restart(self, name: str, seeds: Iterable[str]) -> Swim:
        """A fresh process with the same name and address (incarnation 0) joins again."""
        core = self.add_node(name)
        self.join(name, seeds)
        return core

    def partition(self, groups: list[set[str]]) -> None:
        for i, group in enumerate(groups, 1):
            for name in group:
                self._nodes[name].group = i

    def heal(self) -> None:
        for node in self._nodes.values():
            node.group = 0

    # --- running -------------------------------------------------------------------------------

    def run_until(self, t: float) -> None:
        heap = self._heap
        while heap and heap[0].at <= t:
            due = heapq.heappop(heap)
            self.now = max(self.now, due.at)
            if isinstance(due.payload, _Datagram):
                dgram = due.payload
                target = self._by_addr.get(dgram.dst)
                if target is None or not self._nodes[target].alive:
                    continue
                self._nodes[target].core.receive_datagram(dgram.src, dgram.data, self.now)
                self._flush(target)
            else:
                name = due.payload
                node = self._nodes[name]
                if not node.alive or node.scheduled_at != due.at:
                    continue  # stale entry: the deadline moved and was scheduled again
                node.core.tick(self.now)
                self._flush(name)
        self.now = max(self.now, t)

    def _schedule(self, name: str) -> None:
        node = self._nodes[name]
        at = node.core.next_deadline()
        if at != node.scheduled_at:
            node.scheduled_at = at
            heapq.heappush(self._heap, _Due(at, next(self._seq), name))

    @staticmethod
    def _same_side(a: _Node, b: _Node) -> bool:
        return a.group == 0 or b.group == 0 or a.group == b.group

    def _flush(self, name: str) -> None:
        node = self._nodes[name]
        core = node.core
        for dst, data in core.take_datagrams():
            self.stats.datagrams += 1
            self.stats.bytes += len(data)
            node.bytes_out += len(data)
            peer = self._by_addr.get(dst)
            if peer is not None and not self._same_side(node, self._nodes[peer]):
                self.stats.dropped_partition += 1
                continue
            if self.loss and self.rng.random() < self.loss:
                self.stats.dropped_loss += 1
                continue
            due = _Due(self.now + self.latency, next(self._seq), _Datagram(core.addr, dst, data))
            heapq.heappush(self._heap, due)
        for request in core.take_stream_requests():
            # Streams are reliable (TCP) but cost a round trip; modelled as instant here.
            self.stats.streams += 1
            peer = self._by_addr.get(request.addr)
            reply = None
            if peer is not None and self._nodes[peer].alive and self._same_side(node, self._nodes[peer]):
                peer_core = self._nodes[peer].core
                answer = peer_core.handle_stream(core.addr, request.data, self.now)
                if isinstance(answer, KeyQuery):  # every node shares one ring: memory only
                    answer = peer_core.answer_key_query(
                        MemoryKeys(self._sealer.keyring).apply_now(answer.op, answer.key)
                    )
                reply = answer
                self._flush(peer)
            core.stream_result(request.id, reply, self.now)
            self._flush(name)
        for event in core.take_events():
            observed = Observed(self.now, name, event)
            self.events.append(observed)
            if self._on_event:
                self._on_event(observed)
        self._schedule(name)

    def bytes_per_member_second(self, duration: float) -> float:
        return self.stats.bytes / max(1, len(self._nodes)) / duration
