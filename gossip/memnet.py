"""An in-memory network with latency, loss, partitions and crashed hosts, for gossip simulations.

Every endpoint is a :class:`~gossip.transport.Transport`, so the same driver runs on it as on real
sockets. It is built to carry 1,000 nodes under ``MockClock``: datagrams in flight sit in one heap and a
single delivery task (:meth:`MemoryNetwork.run`) moves them into bounded per-endpoint buffers when they
are due; nothing spawns a task per datagram. Randomness (loss, jitter) comes only from the ``rng`` that
is passed in, so a seeded simulation is reproducible.

Faults: a *partition* splits addresses into groups that cannot reach each other (datagrams or streams);
addresses named in no group form one more group together. A *killed* endpoint is a crashed host: it
neither sends nor receives, its receive buffer is lost, and streams to or from it hang until their
timeout, as they would against a silent host. An address with no endpoint, or one that is not serving
streams, refuses a stream after one round trip, like a live host whose process has exited.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import trio

from common.address import Address
from gossip.transport import StandingOf, StreamHandler


@dataclass(slots=True)
class MemoryNetworkStats:
    datagrams_sent: int = 0
    datagrams_delivered: int = 0
    dropped_loss: int = 0
    dropped_partition: int = 0
    dropped_dead: int = 0  # sender or receiver killed, or no endpoint at the address
    dropped_full: int = 0  # the receiver's buffer was full
    bytes_sent: int = 0
    bytes_delivered: int = 0
    streams_requested: int = 0
    streams_completed: int = 0
    streams_failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(slots=True)
class _PendingStream:
    """A stream request that reached its destination, waiting for the server task's reply."""

    src: Address
    data: bytes
    done: trio.Event = field(default_factory=trio.Event)
    reply: bytes | None = None


class MemoryNetwork:
    """The shared medium: endpoints, link properties, faults, and the in-flight datagram heap."""

    def __init__(
        self,
        rng: random.Random,
        default_latency: float = 0.001,
        loss: float = 0.0,
        *,
        jitter: float = 0.0,
        buffer_size: int = 1024,
        stream_backlog: int = 128,
    ) -> None:
        _check_probability(loss)
        if default_latency < 0 or jitter < 0:
            raise ValueError("latency and jitter must not be negative")
        self.rng = rng
        self.default_latency = default_latency
        self.jitter = jitter
        self.buffer_size = buffer_size
        self.stream_backlog = stream_backlog
        self.stats = MemoryNetworkStats()
        self._loss = loss
        self._endpoints: dict[Address, MemoryTransport] = {}
        self._latency: dict[tuple[Address, Address], float] = {}
        self._link_loss: dict[tuple[Address, Address], float] = {}
        self._group_of: dict[Address, int] = {}
        self._dead: set[Address] = set()
        self._heap: list[tuple[float, int, Address, Address, bytes]] = []
        self._seq = 0
        self._wake: trio.CancelScope | None = None

    # --- topology and faults ---------------------------------------------------------------------

    def endpoint(self, addr: Address) -> MemoryTransport:
        """A new transport bound to ``addr``; one per address until it is closed."""
        if addr in self._endpoints:
            raise ValueError(f"address {addr} is already in use")
        ep = MemoryTransport(self, addr)
        self._endpoints[addr] = ep
        return ep

    def set_latency(self, a: Address, b: Address, seconds: float, *, one_way: bool = False) -> None:
        """Override the latency of the link a→b (and b→a unless ``one_way``)."""
        if seconds < 0:
            raise ValueError("latency must not be negative")
        self._latency[(a, b)] = seconds
        if not one_way:
            self._latency[(b, a)] = seconds

    def set_loss(self, p: float) -> None:
        """Datagram loss probability on every link without its own override."""
        _check_probability(p)
        self._loss = p

    def set_link_loss(self, a: Address, b: Address, p: float) -> None:
        """Datagram loss probability between a and b, both directions."""
        _check_probability(p)
        self._link_loss[(a, b)] = p
        self._link_loss[(b, a)] = p

    def partition(self, groups: Iterable[set[Address]]) -> None:
        """Only addresses in the same group can talk; addresses in no group form one more group."""
        group_of: dict[Address, int] = {}
        for index, group in enumerate(groups):
            for addr in group:
                if addr in group_of:
                    raise ValueError(f"{addr} is in more than one group")
                group_of[addr] = index
        self._group_of = group_of

    def heal(self) -> None:
        self._group_of = {}

    def kill(self, addr: Address) -> None:
        """Crash the host at ``addr``: it stops sending and receiving and loses what it had buffered."""
        self._dead.add(addr)
        ep = self._endpoints.get(addr)
        if ep is not None:
            ep._discard_buffered()

    def revive(self, addr: Address) -> None:
        self._dead.discard(addr)

    def is_alive(self, addr: Address) -> bool:
        return addr not in self._dead

    def can_reach(self, src: Address, dst: Address) -> bool:
        """Whether a packet from src could get to dst right now (ignoring random loss)."""
        return (
            src not in self._dead
            and dst not in self._dead
            and self._group_of.get(src, -1) == self._group_of.get(dst, -1)
        )

    def latency(self, src: Address, dst: Address) -> float:
        base = self._latency.get((src, dst), self.default_latency)
        if self.jitter:
            base += self.rng.uniform(0.0, self.jitter)
        return base

    def in_flight(self) -> int:
        return len(self._heap)

    # --- datagrams ------------------------------------------------------------------------------

    def _send(self, src: Address, dst: Address, data: bytes) -> None:
        stats = self.stats
        stats.datagrams_sent += 1
        stats.bytes_sent += len(data)
        if src in self._dead:
            stats.dropped_dead += 1
            return
        if self._group_of.get(src, -1) != self._group_of.get(dst, -1):
            stats.dropped_partition += 1
            return
        p = self._link_loss.get((src, dst), self._loss)
        if p > 0.0 and self.rng.random() < p:
            stats.dropped_loss += 1
            return
        due = trio.current_time() + self.latency(src, dst)
        heapq.heappush(self._heap, (due, self._seq, dst, src, data))
        self._seq += 1
        wake = self._wake
        if wake is not None and due < wake.deadline:
            wake.deadline = due

    def _deliver(self, dst: Address, src: Address, data: bytes) -> None:
        stats = self.stats
        ep = self._endpoints.get(dst)
        if ep is None or dst in self._dead or src in self._dead:
            stats.dropped_dead += 1
            return
        if self._group_of.get(src, -1) != self._group_of.get(dst, -1):
            stats.dropped_partition += 1  # the partition started while the datagram was in flight
            return
        try:
            ep._inbox_send.send_nowait((src, data))
        except trio.WouldBlock:
            stats.dropped_full += 1
            return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            stats.dropped_dead += 1
            return
        stats.datagrams_delivered += 1
        stats.bytes_delivered += len(data)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The one delivery task: sleep until the earliest datagram is due, deliver what is due, repeat."""
        task_status.started()
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, dst, src, data = heapq.heappop(heap)
                self._deliver(dst, src, data)
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._wake = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._wake = None

    # --- streams --------------------------------------------------------------------------------

    async def _travel(self, src: Address, dst: Address) -> None:
        """One-way trip for a stream segment; blocks forever (until the caller's timeout) if cut off."""
        if not self.can_reach(src, dst):
            await trio.sleep_forever()
        await trio.sleep(self.latency(src, dst))
        if not self.can_reach(src, dst):
            await trio.sleep_forever()

    async def _request(self, src: Address, dst: Address, data: bytes, timeout: float) -> bytes | None:
        self.stats.streams_requested += 1
        with trio.move_on_after(timeout):
            await self._travel(src, dst)
            ep = self._endpoints.get(dst)
            pending = _PendingStream(src, data)
            if ep is None or not ep._offer_stream(pending):
                await self._travel(dst, src)  # connection refused: the RST comes back
                self.stats.streams_failed += 1
                return None
            await pending.done.wait()
            await self._travel(dst, src)
            if pending.reply is None:
                self.stats.streams_failed += 1
            else:
                self.stats.streams_completed += 1
            return pending.reply
        self.stats.streams_failed += 1
        return None


class MemoryTransport:
    """One endpoint of a :class:`MemoryNetwork`; implements :class:`~gossip.transport.Transport`."""

    def __init__(self, net: MemoryNetwork, addr: Address) -> None:
        self._net = net
        self._addr = addr
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[tuple[Address, bytes]](net.buffer_size)
        self._streams: trio.MemorySendChannel[_PendingStream] | None = None

    @property
    def local_addr(self) -> Address:
        return self._addr

    async def send_datagram(self, addr: Address, data: bytes) -> None:
        self._net._send(self._addr, addr, bytes(data))

    async def receive_datagram(self) -> tuple[Address, bytes]:
        try:
            return await self._inbox_recv.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError("transport closed") from None

    def pending_datagrams(self, limit: int) -> list[tuple[Address, bytes]]:
        out: list[tuple[Address, bytes]] = []
        while len(out) < limit:
            try:
                out.append(self._inbox_recv.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        return out

    async def request(self, addr: Address, data: bytes, timeout: float) -> bytes | None:
        return await self._net._request(self._addr, addr, bytes(data), timeout)

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        standing: StandingOf | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run the handler for each arriving request in a task owned here, as a TCP server would.
        ``standing`` is unused: the simulated network has no hostile peers."""
        if self._streams is not None:
            raise RuntimeError(f"{self._addr} is already serving streams")
        send, recv = trio.open_memory_channel[_PendingStream](self._net.stream_backlog)
        self._streams = send
        try:
            async with trio.open_nursery() as nursery, recv:
                task_status.started()
                async for pending in recv:
                    nursery.start_soon(self._serve_one, handler, pending)
        finally:
            self._streams = None
            send.close()

    @staticmethod
    async def _serve_one(handler: StreamHandler, pending: _PendingStream) -> None:
        try:
            pending.reply = await handler(pending.src, pending.data)
        finally:
            pending.done.set()

    def _offer_stream(self, pending: _PendingStream) -> bool:
        if self._streams is None:
            return False
        try:
            self._streams.send_nowait(pending)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    def _discard_buffered(self) -> None:
        """Lose whatever was buffered, as a crashed host loses its socket buffers (bounded by the buffer)."""
        for _ in range(self._net.buffer_size + 1):
            try:
                self._inbox_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                return

    async def aclose(self) -> None:
        """Release the address; pending receives see the channel closed."""
        if self._net._endpoints.get(self._addr) is self:
            del self._net._endpoints[self._addr]
        self._inbox_recv.close()
        self._inbox_send.close()
        await trio.lowlevel.checkpoint()


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be within [0, 1] (got {p})")
