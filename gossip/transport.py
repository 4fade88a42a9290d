"""How gossip bytes move: the ``Transport`` interface and its real UDP + TCP implementation on Trio.

The SWIM core only produces and consumes opaque sealed byte strings; a transport moves them. Datagrams
are fire-and-forget (loss is normal, so sending never raises on network errors). Streams are one
request frame and at most one reply frame over a fresh TCP connection, each prefixed with a 4-byte
big-endian length. The same interface is implemented in memory by :mod:`gossip.memnet` for simulations.

Anyone who can reach the port can open TCP connections, so the stream server is guarded by
:class:`StreamGate`, a sans-I/O object that decides admission and buffering (:class:`StreamLimits`):

- every connection must deliver its whole first frame within ``first_frame_timeout`` (slowloris);
- at most ``per_source`` concurrent connections per source address;
- ``member_reserve`` of the ``max_connections`` slots are only for addresses of live members, and when
  every slot is taken a member's connection evicts the oldest connection of a non-member;
- a frame is buffered only after its whole announced length has been reserved from one byte budget
  shared by all connections (``buffer_budget``); a frame that cannot get budget waits until its
  deadline, then the connection is closed;
- a frame longer than ``stranger_frame_max`` is accepted only from the address of a known member.

Why the size rule and not an authenticated header: frames are sealed with AES-GCM over the whole frame
(:mod:`gossip.keyring`), so nothing about a frame is authentic before its last byte. A sealed header
in front of each frame would change the stream framing for every agent at once; the size rule keeps
the wire as it is, and a stranger only ever needs small frames (a joining node's push-pull carries
itself and, usually, a small application state). What a stranger can pin is therefore bounded by
``(max_connections - member_reserve) x stranger_frame_max``, and everything by ``buffer_budget``.
The source address is all the server knows of a peer before authentication, so a member address is
a hint, not a proof: it buys reserve slots and the right to reserve budget for large frames, but the
frame is still authenticated by the core like any other.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket as stdlib_socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from enum import IntEnum
from typing import Protocol

import trio

from common.address import Address
from gossip.config import MAX_FRAME as MAX_FRAME  # re-exported: where the transport's users look
from gossip.config import StreamLimits as StreamLimits

MAX_DATAGRAM = 65535
_LENGTH_BYTES = 4
_CHUNK = 65536
# accept() failures that mean "out of resources right now": back off instead of crashing the server.
_ACCEPT_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

StreamHandler = Callable[[Address, bytes], Awaitable[bytes | None]]
"""Called with (peer address, request frame); returns the reply frame, or None to close without one."""


class Standing(IntEnum):
    """What the server knows of a source address before anything is authenticated."""

    STRANGER = 0
    KNOWN = 1  # in the member list but not live (dead, left): may send large frames, no reserve slots
    LIVE = 2  # alive or suspect member: may also use the reserved slots


StandingOf = Callable[[str], Standing]
"""The standing of a source host (as :func:`host_key` spells it)."""


def host_key(host: str) -> str:
    """One spelling per address, so ``::ffff:10.0.0.1`` and ``10.0.0.1`` count as one source."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class Transport(Protocol):
    """What a gossip driver needs from the network; real sockets or :mod:`gossip.memnet`."""

    @property
    def local_addr(self) -> Address: ...

    async def send_datagram(self, addr: Address, data: bytes) -> None:
        """Send one datagram; network errors are swallowed (UDP may lose it anyway)."""
        ...

    async def receive_datagram(self) -> tuple[Address, bytes]: ...

    def pending_datagrams(self, limit: int) -> list[tuple[Address, bytes]]:
        """Up to ``limit`` datagrams that have already arrived, without waiting (the driver reads them
        before its timers fire: see :class:`gossip.node.GossipNode`)."""
        ...

    async def request(self, addr: Address, data: bytes, timeout: float) -> bytes | None:
        """One request frame out, one reply frame back; None on any failure, timeout or no reply."""
        ...

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        standing: StandingOf | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept stream requests until cancelled, each handled in its own task owned by this call.

        ``standing`` tells members from strangers (see the module docstring); without it every
        source is a stranger."""
        ...

    async def aclose(self) -> None: ...


class FrameError(Exception):
    """The peer broke the framing: a truncated frame or a length over the limit."""


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(_LENGTH_BYTES, "big") + data


async def _receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes | None:
    """Exactly ``n`` bytes, or None when the peer closed before sending any of them."""
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(min(n - len(buf), _CHUNK))
        if not chunk:
            if buf:
                raise FrameError(f"connection closed after {len(buf)} of {n} bytes")
            return None
        buf += chunk
    return bytes(buf)


async def read_frame(stream: trio.abc.ReceiveStream, max_frame: int) -> bytes | None:
    """One length-prefixed frame; None on a clean close before the frame starts."""
    length = await _read_length(stream, max_frame)
    if length is None:
        return None
    return await _read_body(stream, length)


async def _read_length(stream: trio.abc.ReceiveStream, max_frame: int) -> int | None:
    header = await _receive_exactly(stream, _LENGTH_BYTES)
    if header is None:
        return None
    length = int.from_bytes(header, "big")
    if length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds the {max_frame}-byte limit")
    return length


async def _read_body(stream: trio.abc.ReceiveStream, length: int) -> bytes:
    if length == 0:
        return b""
    body = await _receive_exactly(stream, length)
    if body is None:
        raise FrameError("connection closed after the frame header")
    return body


def _norm(sockaddr: object) -> Address:
    """(host, port) from an IPv4 or IPv6 socket address (flowinfo and scope id are dropped)."""
    assert isinstance(sockaddr, tuple)
    return (str(sockaddr[0]), int(sockaddr[1]))


@dataclass(slots=True)
class Slot:
    """One admitted connection, as the gate counts it."""

    id: int
    host: str
    standing: Standing
    reserved: int = 0
    open: bool = True


@dataclass(frozen=True, slots=True)
class Admission:
    """The gate's answer to a new connection: a slot, or the reason for refusing; maybe one to evict."""

    slot: Slot | None
    reason: str | None = None
    evict: Slot | None = None


class StreamGate:
    """Sans-I/O bookkeeping of connection slots and the shared byte budget (no sockets, no clock)."""

    def __init__(self, limits: StreamLimits) -> None:
        self.limits = limits
        self._slots: dict[int, Slot] = {}  # insertion order: oldest first
        self._per_host: dict[str, int] = {}
        self._non_live = 0
        self._next_id = 0
        self.buffered = 0
        self.buffered_peak = 0

    @property
    def active(self) -> int:
        return len(self._slots)

    def admit(self, host: str, standing: Standing) -> Admission:
        lim = self.limits
        if self._per_host.get(host, 0) >= lim.per_source:
            return Admission(None, "per_source")
        evict: Slot | None = None
        if standing is Standing.LIVE:
            if self.active >= lim.max_connections:
                evict = next((s for s in self._slots.values() if s.standing is not Standing.LIVE), None)
                if evict is None:
                    return Admission(None, "capacity")
                self.release(evict)
        elif self.active >= lim.max_connections or self._non_live >= lim.max_connections - lim.member_reserve:
            return Admission(None, "capacity")
        self._next_id += 1
        slot = Slot(self._next_id, host, standing)
        self._slots[slot.id] = slot
        self._per_host[host] = self._per_host.get(host, 0) + 1
        if standing is not Standing.LIVE:
            self._non_live += 1
        return Admission(slot, evict=evict)

    def frame_refusal(self, slot: Slot, length: int) -> str | None:
        """Why a frame of ``length`` bytes may not be read on ``slot``, or None when it may."""
        if slot.standing is Standing.STRANGER and length > self.limits.stranger_frame_max:
            return "oversize"
        if length > self.limits.buffer_budget:
            return "budget"
        return None

    def try_reserve(self, slot: Slot, n: int) -> bool:
        """Reserve ``n`` more bytes of the shared budget for ``slot``; False when they are not free."""
        if not slot.open or self.buffered + n > self.limits.buffer_budget:
            return False
        slot.reserved += n
        self.buffered += n
        self.buffered_peak = max(self.buffered_peak, self.buffered)
        return True

    def unreserve(self, slot: Slot) -> int:
        """Give back everything ``slot`` reserved; returns how much that was."""
        n, slot.reserved = slot.reserved, 0
        self.buffered -= n
        return n

    def release(self, slot: Slot) -> None:
        """The connection is gone (or evicted); idempotent."""
        self.unreserve(slot)
        if not slot.open:
            return
        slot.open = False
        del self._slots[slot.id]
        left = self._per_host[slot.host] - 1
        if left:
            self._per_host[slot.host] = left
        else:
            del self._per_host[slot.host]
        if slot.standing is not Standing.LIVE:
            self._non_live -= 1


@dataclass(slots=True)
class TransportStats:
    datagrams_sent: int = 0
    datagrams_received: int = 0
    datagram_send_errors: int = 0
    datagram_receive_errors: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    requests: int = 0
    request_failures: int = 0
    request_timeouts: int = 0
    streams_accepted: int = 0
    # Every connection closed by a guard, whatever the reason; the reasons follow.
    streams_rejected: int = 0
    streams_rejected_capacity: int = 0
    streams_rejected_per_source: int = 0
    streams_rejected_slow: int = 0  # first frame not complete within first_frame_timeout
    streams_rejected_oversize: int = 0  # a stranger announced a frame above stranger_frame_max
    streams_rejected_budget: int = 0  # no room in the shared byte budget before the deadline
    streams_evicted: int = 0  # a non-member's connection closed to make room for a member's
    stream_errors: int = 0
    stream_timeouts: int = 0
    # Gauges: open inbound connections, and bytes reserved for frames being received or handled.
    streams_active: int = 0
    buffered_bytes: int = 0
    buffered_bytes_peak: int = 0
    buffer_budget: int = 0

    def reject(self, reason: str) -> None:
        self.streams_rejected += 1
        name = f"streams_rejected_{reason}"
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class UdpTcpTransport:
    """UDP for datagrams and TCP for streams, both bound to the same address and port.

    Build it with :func:`open_udp_tcp_transport` (or :func:`bind_udp_tcp_transport`); the constructor
    takes sockets that are already bound, so tests and odd deployments can supply their own.
    ``stream_timeout``, ``max_frame`` and ``max_connections``, when given, override ``limits``.
    """

    def __init__(
        self,
        udp: trio.socket.SocketType,
        tcp: trio.socket.SocketType,
        *,
        limits: StreamLimits | None = None,
        stream_timeout: float | None = None,
        max_frame: int | None = None,
        max_connections: int | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        limits = _with_overrides(limits, stream_timeout, max_frame, max_connections)
        self._udp = udp
        # The same socket (a duplicate descriptor, non-blocking like the original) for reads that must
        # not wait: Trio's recvfrom checkpoints first, so it cannot read what is queued without yielding.
        self._udp_now = stdlib_socket.socket(fileno=os.dup(udp.fileno()))
        self._listener = trio.SocketListener(tcp)
        self.local_addr: Address = _norm(udp.getsockname())
        self.limits = limits
        self.stream_timeout = limits.timeout
        self.max_frame = limits.max_frame
        self.max_connections = limits.max_connections
        self.stats = TransportStats(buffer_budget=limits.buffer_budget)
        self._gate = StreamGate(limits)
        self._scopes: dict[int, trio.CancelScope] = {}
        self._budget_freed = trio.Event()
        self._log = logger or logging.getLogger("wiremesh.gossip.transport")
        self._closed = False

    async def send_datagram(self, addr: Address, data: bytes) -> None:
        try:
            await self._udp.sendto(data, addr)
        except OSError as exc:  # unreachable, EMSGSIZE, wrong address family, unresolvable name, ...
            self.stats.datagram_send_errors += 1
            self._log.debug("datagram to %s failed: %s", addr, exc)
            return
        self.stats.datagrams_sent += 1
        self.stats.bytes_sent += len(data)

    async def receive_datagram(self) -> tuple[Address, bytes]:
        while True:
            try:
                data, src = await self._udp.recvfrom(MAX_DATAGRAM)
            except OSError as exc:  # e.g. an ICMP error reported on the socket: not fatal for UDP
                self.stats.datagram_receive_errors += 1
                self._log.debug("datagram receive error: %s", exc)
                continue
            self.stats.datagrams_received += 1
            self.stats.bytes_received += len(data)
            return _norm(src), data

    def pending_datagrams(self, limit: int) -> list[tuple[Address, bytes]]:
        out: list[tuple[Address, bytes]] = []
        while len(out) < limit:
            try:
                data, src = self._udp_now.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                break
            except OSError as exc:
                self.stats.datagram_receive_errors += 1
                self._log.debug("datagram receive error: %s", exc)
                continue
            self.stats.datagrams_received += 1
            self.stats.bytes_received += len(data)
            out.append((_norm(src), data))
        return out

    async def request(self, addr: Address, data: bytes, timeout: float) -> bytes | None:
        self.stats.requests += 1
        if len(data) > self.max_frame:
            self.stats.request_failures += 1
            self._log.debug("request to %s refused: %d bytes exceeds the frame limit", addr, len(data))
            return None
        with trio.move_on_after(timeout):
            try:
                stream = await trio.open_tcp_stream(addr[0], addr[1])
                async with stream:
                    await stream.send_all(_frame(data))
                    reply = await read_frame(stream, self.max_frame)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, FrameError) as exc:
                self.stats.request_failures += 1
                self._log.debug("request to %s failed: %s", addr, exc)
                return None
            if reply is None:
                self.stats.request_failures += 1
            return reply
        self.stats.request_timeouts += 1
        self._log.debug("request to %s timed out after %.3fs", addr, timeout)
        return None

    async def serve_streams(
        self,
        handler: StreamHandler,
        *,
        standing: StandingOf | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    stream = await self._listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_BACKOFF_ERRNOS:
                        raise
                    self._log.warning("accept failed (%s); backing off", exc)
                    await trio.sleep(0.1)
                    continue
                try:
                    src = _norm(stream.socket.getpeername())
                except OSError:  # reset before we looked
                    await trio.aclose_forcefully(stream)
                    continue
                host = host_key(src[0])
                admission = self._gate.admit(host, standing(host) if standing else Standing.STRANGER)
                if admission.evict is not None:
                    self.stats.streams_evicted += 1
                    evicted = self._scopes.get(admission.evict.id)
                    if evicted is not None:
                        evicted.cancel()
                if admission.slot is None:
                    self.stats.reject(admission.reason or "capacity")
                    await trio.aclose_forcefully(stream)
                    continue
                self.stats.streams_accepted += 1
                scope = trio.CancelScope()
                self._scopes[admission.slot.id] = scope
                self._gauge()
                nursery.start_soon(self._serve_one, stream, src, admission.slot, scope, handler)

    def _gauge(self) -> None:
        self.stats.streams_active = self._gate.active
        self.stats.buffered_bytes = self._gate.buffered
        self.stats.buffered_bytes_peak = self._gate.buffered_peak

    def _give_back(self, slot: Slot) -> None:
        if self._gate.unreserve(slot):
            self._budget_freed.set()
            self._budget_freed = trio.Event()
        self._gauge()

    async def _reserve(self, slot: Slot, n: int) -> None:
        """Wait (under the caller's deadline) until ``n`` bytes of the shared budget are ours."""
        while not self._gate.try_reserve(slot, n):
            await self._budget_freed.wait()
        self._gauge()

    async def _serve_one(
        self,
        stream: trio.SocketStream,
        src: Address,
        slot: Slot,
        scope: trio.CancelScope,
        handler: StreamHandler,
    ) -> None:
        """Read one frame under the guards, answer it, close. Deadlines bound the peer's I/O, not our
        handler; ``scope`` is cancelled when the connection is evicted."""
        lim = self.limits
        start = trio.current_time()
        try:
            with scope:
                async with stream:
                    try:
                        data = await self._receive_request(stream, slot, start)
                        if data is None:
                            return
                        reply = await handler(src, data)
                        del data
                        self._give_back(slot)
                        if reply is None:
                            return
                        if len(reply) > self.max_frame:
                            self._log.warning("reply of %d bytes to %s over the frame limit", len(reply), src)
                            self.stats.stream_errors += 1
                            return
                        with trio.CancelScope(deadline=start + lim.timeout) as send_scope:
                            await stream.send_all(_frame(reply))
                        if send_scope.cancelled_caught:
                            self.stats.stream_timeouts += 1
                    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, FrameError) as exc:
                        self.stats.stream_errors += 1
                        self._log.debug("inbound stream dropped: %s", exc)
        finally:
            self._gate.release(slot)
            self._scopes.pop(slot.id, None)
            self._budget_freed.set()
            self._budget_freed = trio.Event()
            self._gauge()

    async def _receive_request(self, stream: trio.SocketStream, slot: Slot, start: float) -> bytes | None:
        """The request frame, or None (closed, or refused by a guard and counted)."""
        lim = self.limits
        first_deadline = start + min(lim.first_frame_timeout, lim.timeout)
        with trio.CancelScope(deadline=first_deadline) as header_scope:
            length = await _read_length(stream, self.max_frame)
        if header_scope.cancelled_caught:
            self._timed_out()
            return None
        if length is None:
            return None
        refusal = self._gate.frame_refusal(slot, length)
        if refusal is not None:
            self.stats.reject(refusal)
            return None
        # Small frames are due with the header; a member's large frame may take the whole timeout.
        deadline = first_deadline if length <= lim.stranger_frame_max else start + lim.timeout
        with trio.CancelScope(deadline=deadline) as body_scope:
            await self._reserve(slot, length)
            data = await _read_body(stream, length)
        if body_scope.cancelled_caught:
            if slot.reserved < length:
                self.stats.reject("budget")
            else:
                self._timed_out()
            return None
        return data

    def _timed_out(self) -> None:
        self.stats.stream_timeouts += 1
        self.stats.reject("slow")

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._udp_now.close()
        self._udp.close()
        await self._listener.aclose()


def _with_overrides(
    limits: StreamLimits | None, timeout: float | None, max_frame: int | None, max_connections: int | None
) -> StreamLimits:
    """``limits`` with the older keyword arguments applied, kept consistent with each other."""
    limits = limits or StreamLimits()
    if timeout is not None:
        first = min(limits.first_frame_timeout, timeout)
        limits = replace(limits, timeout=timeout, first_frame_timeout=first)
    if max_frame is not None:
        limits = replace(limits, max_frame=max_frame)
    if max_connections is not None:
        reserve = min(limits.member_reserve, max_connections // 8)
        limits = replace(limits, max_connections=max_connections, member_reserve=reserve)
    return limits


async def _bind_pair(
    family: int, host: str, port: int
) -> tuple[trio.socket.SocketType, trio.socket.SocketType] | None:
    """A UDP and a TCP socket on one port; None when the TCP side of an ephemeral port is taken."""
    udp = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    tcp = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
    try:
        await udp.bind((host, port))
        bound_port = udp.getsockname()[1]
        tcp.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        try:
            await tcp.bind((host, bound_port))
        except OSError as exc:
            if port == 0 and exc.errno == errno.EADDRINUSE:
                udp.close()
                tcp.close()
                return None
            raise
        tcp.listen(128)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


async def bind_udp_tcp_transport(
    host: str,
    port: int,
    *,
    limits: StreamLimits | None = None,
    stream_timeout: float | None = None,
    max_frame: int | None = None,
    max_connections: int | None = None,
    bind_attempts: int = 8,
    logger: logging.Logger | None = None,
) -> UdpTcpTransport:
    """Bind UDP then TCP on the same port; with port 0, retry when TCP finds the port taken."""
    infos = await trio.socket.getaddrinfo(
        host or None, port, type=stdlib_socket.SOCK_DGRAM, flags=stdlib_socket.AI_PASSIVE
    )
    if not infos:  # pragma: no cover - getaddrinfo raises instead in practice
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    bind_host = str(sockaddr[0])
    for _ in range(max(1, bind_attempts)):
        pair = await _bind_pair(family, bind_host, port)
        if pair is not None:
            udp, tcp = pair
            return UdpTcpTransport(
                udp,
                tcp,
                limits=limits,
                stream_timeout=stream_timeout,
                max_frame=max_frame,
                max_connections=max_connections,
                logger=logger,
            )
    raise OSError(
        errno.EADDRINUSE, f"no port on {host!r} free for both UDP and TCP after {bind_attempts} tries"
    )


@asynccontextmanager
async def open_udp_tcp_transport(
    host: str,
    port: int,
    *,
    limits: StreamLimits | None = None,
    stream_timeout: float | None = None,
    max_frame: int | None = None,
    max_connections: int | None = None,
    logger: logging.Logger | None = None,
) -> AsyncIterator[UdpTcpTransport]:
    """``async with open_udp_tcp_transport("127.0.0.1", 0) as t:`` binds, yields, and closes."""
    transport = await bind_udp_tcp_transport(
        host,
        port,
        limits=limits,
        stream_timeout=stream_timeout,
        max_frame=max_frame,
        max_connections=max_connections,
        logger=logger,
    )
    try:
        yield transport
    finally:
        await transport.aclose()
