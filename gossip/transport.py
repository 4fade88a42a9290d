"""How gossip bytes move: the ``Transport`` interface and its real UDP + TCP implementation on Trio.

The SWIM core only produces and consumes opaque sealed byte strings; a transport moves them. Datagrams
are fire-and-forget (loss is normal, so sending never raises on network errors). Streams are one
request frame and at most one reply frame over a fresh TCP connection, each prefixed with a 4-byte
big-endian length. The same interface is implemented in memory by :mod:`gossip.memnet` for simulations.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Protocol

import trio

from common.address import Address

MAX_FRAME = 16 * 1024 * 1024
MAX_DATAGRAM = 65535
_LENGTH_BYTES = 4
# accept() failures that mean "out of resources right now": back off instead of crashing the server.
_ACCEPT_BACKOFF_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

StreamHandler = Callable[[Address, bytes], Awaitable[bytes | None]]
"""Called with (peer address, request frame); returns the reply frame, or None to close without one."""


class Transport(Protocol):
    """What a gossip driver needs from the network; real sockets or :mod:`gossip.memnet`."""

    @property
    def local_addr(self) -> Address: ...

    async def send_datagram(self, addr: Address, data: bytes) -> None:
        """Send one datagram; network errors are swallowed (UDP may lose it anyway)."""
        ...

    async def receive_datagram(self) -> tuple[Address, bytes]: ...

    async def request(self, addr: Address, data: bytes, timeout: float) -> bytes | None:
        """One request frame out, one reply frame back; None on any failure, timeout or no reply."""
        ...

    async def serve_streams(
        self, handler: StreamHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Accept stream requests until cancelled, each handled in its own task owned by this call."""
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
        chunk = await stream.receive_some(min(n - len(buf), 65536))
        if not chunk:
            if buf:
                raise FrameError(f"connection closed after {len(buf)} of {n} bytes")
            return None
        buf += chunk
    return bytes(buf)


async def read_frame(stream: trio.abc.ReceiveStream, max_frame: int) -> bytes | None:
    """One length-prefixed frame; None on a clean close before the frame starts."""
    header = await _receive_exactly(stream, _LENGTH_BYTES)
    if header is None:
        return None
    length = int.from_bytes(header, "big")
    if length > max_frame:
        raise FrameError(f"frame of {length} bytes exceeds the {max_frame}-byte limit")
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
    streams_rejected: int = 0
    stream_errors: int = 0
    stream_timeouts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class UdpTcpTransport:
    """UDP for datagrams and TCP for streams, both bound to the same address and port.

    Build it with :func:`open_udp_tcp_transport` (or :func:`bind_udp_tcp_transport`); the constructor
    takes sockets that are already bound, so tests and odd deployments can supply their own.
    """

    def __init__(
        self,
        udp: trio.socket.SocketType,
        tcp: trio.socket.SocketType,
        *,
        stream_timeout: float = 10.0,
        max_frame: int = MAX_FRAME,
        max_connections: int = 256,
        logger: logging.Logger | None = None,
    ) -> None:
        self._udp = udp
        self._listener = trio.SocketListener(tcp)
        self.local_addr: Address = _norm(udp.getsockname())
        self.stream_timeout = stream_timeout
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.stats = TransportStats()
        self._log = logger or logging.getLogger("wiremesh.gossip.transport")
        self._active_streams = 0
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
        self, handler: StreamHandler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
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
                if self._active_streams >= self.max_connections:
                    self.stats.streams_rejected += 1
                    await trio.aclose_forcefully(stream)
                    continue
                self.stats.streams_accepted += 1
                self._active_streams += 1
                nursery.start_soon(self._serve_one, stream, handler)

    async def _serve_one(self, stream: trio.SocketStream, handler: StreamHandler) -> None:
        """Read one frame, answer it, close. The timeout bounds the peer's I/O, not our handler."""
        try:
            async with stream:
                deadline = trio.current_time() + self.stream_timeout
                try:
                    src = _norm(stream.socket.getpeername())
                    with trio.CancelScope(deadline=deadline) as scope:
                        data = await read_frame(stream, self.max_frame)
                    if scope.cancelled_caught:
                        self.stats.stream_timeouts += 1
                        return
                    if data is None:
                        return
                    reply = await handler(src, data)
                    if reply is None:
                        return
                    if len(reply) > self.max_frame:
                        self._log.warning("reply of %d bytes to %s exceeds the frame limit", len(reply), src)
                        self.stats.stream_errors += 1
                        return
                    with trio.CancelScope(deadline=deadline) as scope:
                        await stream.send_all(_frame(reply))
                    if scope.cancelled_caught:
                        self.stats.stream_timeouts += 1
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, FrameError) as exc:
                    self.stats.stream_errors += 1
                    self._log.debug("inbound stream dropped: %s", exc)
        finally:
            self._active_streams -= 1

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._udp.close()
        await self._listener.aclose()


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
    stream_timeout: float = 10.0,
    max_frame: int = MAX_FRAME,
    max_connections: int = 256,
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
    stream_timeout: float = 10.0,
    max_frame: int = MAX_FRAME,
    max_connections: int = 256,
    logger: logging.Logger | None = None,
) -> AsyncIterator[UdpTcpTransport]:
    """``async with open_udp_tcp_transport("127.0.0.1", 0) as t:`` binds, yields, and closes."""
    transport = await bind_udp_tcp_transport(
        host,
        port,
        stream_timeout=stream_timeout,
        max_frame=max_frame,
        max_connections=max_connections,
        logger=logger,
    )
    try:
        yield transport
    finally:
        await transport.aclose()
