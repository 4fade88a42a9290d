"""UdpTcpTransport on real loopback sockets (real clock: MockClock would jump past real I/O waits)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from common.address import Address
from gossip.transport import (
    MAX_FRAME,
    FrameError,
    UdpTcpTransport,
    bind_udp_tcp_transport,
    open_udp_tcp_transport,
    read_frame,
)

LOOPBACK = "127.0.0.1"
# Generous bound for every test: real sockets on loopback answer in microseconds.
TEST_TIMEOUT = 10.0


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


async def _echo_upper(src: Address, data: bytes) -> bytes | None:
    return data.upper()


async def test_binds_same_port_for_udp_and_tcp() -> None:
    async with open_udp_tcp_transport(LOOPBACK, 0) as t:
        host, port = t.local_addr
        assert host == LOOPBACK
        assert port != 0
        # Both protocols hold the port: binding either again must fail.
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s, pytest.raises(OSError):
                s.bind((LOOPBACK, port))


async def test_explicit_port_taken_raises() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as blocker:
        blocker.bind((LOOPBACK, 0))
        port = blocker.getsockname()[1]
        with pytest.raises(OSError):
            async with open_udp_tcp_transport(LOOPBACK, port):
                pass  # pragma: no cover


async def test_datagram_round_trip() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0) as a, open_udp_tcp_transport(LOOPBACK, 0) as b:
            await a.send_datagram(b.local_addr, b"hello")
            src, data = await b.receive_datagram()
            assert (src, data) == (a.local_addr, b"hello")
            await b.send_datagram(src, b"back")
            assert await a.receive_datagram() == (b.local_addr, b"back")
            assert a.stats.datagrams_sent == 1 and a.stats.bytes_sent == 5
            assert b.stats.datagrams_received == 1


async def test_send_datagram_swallows_network_errors() -> None:
    async with open_udp_tcp_transport(LOOPBACK, 0) as t:
        await t.send_datagram(("::1", 9), b"x")  # wrong address family for this socket
        await t.send_datagram(t.local_addr, b"x" * 70000)  # larger than any UDP datagram
        assert t.stats.datagram_send_errors == 2
        assert t.stats.datagrams_sent == 0


async def test_request_reply_and_concurrent_connections() -> None:
    """Two requests in flight at once: each connection must get its own handler task."""
    both_arrived = trio.Event()
    arrived: list[bytes] = []

    async def handler(src: Address, data: bytes) -> bytes | None:
        assert src[0] == LOOPBACK
        arrived.append(data)
        if len(arrived) == 2:
            both_arrived.set()
        await both_arrived.wait()  # a server handling one connection at a time would deadlock here
        return b"re:" + data

    results: dict[bytes, bytes | None] = {}

    async def ask(client: UdpTcpTransport, server: Address, data: bytes) -> None:
        results[data] = await client.request(server, data, timeout=5.0)

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_udp_tcp_transport(LOOPBACK, 0) as server,
            open_udp_tcp_transport(LOOPBACK, 0) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve_streams, handler)
            async with trio.open_nursery() as clients:
                clients.start_soon(ask, client, server.local_addr, b"one")
                clients.start_soon(ask, client, server.local_addr, b"two")
            nursery.cancel_scope.cancel()
    assert results == {b"one": b"re:one", b"two": b"re:two"}
    assert server.stats.streams_accepted == 2


async def test_request_handler_without_reply_returns_none() -> None:
    calls: list[bytes] = []

    async def handler(src: Address, data: bytes) -> bytes | None:
        calls.append(data)
        return None

    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(server.serve_streams, handler)
            assert await server.request(server.local_addr, b"ping", timeout=5.0) is None
            nursery.cancel_scope.cancel()
    assert calls == [b"ping"]


async def test_request_empty_reply_is_a_reply() -> None:
    async def handler(src: Address, data: bytes) -> bytes | None:
        return b""

    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(server.serve_streams, handler)
            assert await server.request(server.local_addr, b"x", timeout=5.0) == b""
            nursery.cancel_scope.cancel()


async def test_request_connection_refused_returns_none() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0) as t:
            with socket.socket() as s:  # a port with nothing listening
                s.bind((LOOPBACK, 0))
                port = s.getsockname()[1]
            assert await t.request((LOOPBACK, port), b"x", timeout=5.0) is None
            assert t.stats.request_failures == 1


async def test_request_timeout_returns_none() -> None:
    async def stuck(src: Address, data: bytes) -> bytes | None:
        await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(server.serve_streams, stuck)
            start = trio.current_time()
            assert await server.request(server.local_addr, b"x", timeout=0.2) is None
            assert trio.current_time() - start >= 0.2
            assert server.stats.request_timeouts == 1
            nursery.cancel_scope.cancel()


async def test_oversized_request_refused_without_connecting() -> None:
    calls: list[bytes] = []

    async def handler(src: Address, data: bytes) -> bytes | None:
        calls.append(data)  # pragma: no cover
        return data  # pragma: no cover

    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0, max_frame=1024) as t, trio.open_nursery() as nursery:
            await nursery.start(t.serve_streams, handler)
            assert await t.request(t.local_addr, b"x" * 1025, timeout=5.0) is None
            nursery.cancel_scope.cancel()
    assert calls == []
    assert t.stats.streams_accepted == 0


async def test_oversized_reply_refused_by_client() -> None:
    async def big(src: Address, data: bytes) -> bytes | None:
        return b"y" * 4096

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_udp_tcp_transport(LOOPBACK, 0) as server,
            open_udp_tcp_transport(LOOPBACK, 0, max_frame=1024) as client,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve_streams, big)
            assert await client.request(server.local_addr, b"x", timeout=5.0) is None
            assert await server.request(server.local_addr, b"x", timeout=5.0) == b"y" * 4096
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param((MAX_FRAME + 1).to_bytes(4, "big"), id="length-over-limit"),
        pytest.param(b"\x00\x00", id="truncated-header"),
        pytest.param(b"\x00\x00\x00\x10abc", id="truncated-body"),
    ],
)
async def test_malformed_framing_closes_without_calling_handler(payload: bytes) -> None:
    calls: list[bytes] = []

    async def handler(src: Address, data: bytes) -> bytes | None:
        calls.append(data)  # pragma: no cover
        return data  # pragma: no cover

    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(LOOPBACK, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(server.serve_streams, handler)
            stream = await trio.open_tcp_stream(*server.local_addr)
            async with stream:
                await stream.send_all(payload)
                await stream.send_eof()
                assert await stream.receive_some(100) == b""  # closed by the server, no reply
            # The server is still serving afterwards.
            ok = await server.request(server.local_addr, b"x", timeout=5.0)
            nursery.cancel_scope.cancel()
    assert calls == [b"x"]
    assert ok == b"x"
    assert server.stats.stream_errors == 1


async def test_slow_peer_times_out_on_server() -> None:
    """A client that connects and sends nothing must not hold a server task beyond stream_timeout."""

    async def handler(src: Address, data: bytes) -> bytes | None:
        return data  # pragma: no cover

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_udp_tcp_transport(LOOPBACK, 0, stream_timeout=0.2) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(server.serve_streams, handler)
            stream = await trio.open_tcp_stream(*server.local_addr)
            async with stream:
                assert await stream.receive_some(100) == b""  # the server gave up and closed
            nursery.cancel_scope.cancel()
    assert server.stats.stream_timeouts == 1


async def test_read_frame_helper() -> None:
    send, recv = trio.testing.memory_stream_one_way_pair()
    await send.send_all(_frame(b"abc") + _frame(b""))
    assert await read_frame(recv, 10) == b"abc"
    assert await read_frame(recv, 10) == b""
    await send.send_all(_frame(b"x" * 11))
    with pytest.raises(FrameError):
        await read_frame(recv, 10)


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback")
async def test_ipv6_loopback() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_udp_tcp_transport("::1", 0) as a,
            open_udp_tcp_transport("::1", 0) as b,
            trio.open_nursery() as nursery,
        ):
            assert a.local_addr[0] == "::1"
            await nursery.start(b.serve_streams, _echo_upper)
            await a.send_datagram(b.local_addr, b"six")
            assert await b.receive_datagram() == (a.local_addr, b"six")
            assert await a.request(b.local_addr, b"six", timeout=5.0) == b"SIX"
            nursery.cancel_scope.cancel()


async def test_aclose_is_idempotent_and_ends_receive() -> None:
    t = await bind_udp_tcp_transport(LOOPBACK, 0)
    got: list[BaseException] = []

    async def receiver() -> None:
        try:
            await t.receive_datagram()
        except trio.ClosedResourceError as exc:
            got.append(exc)

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await t.aclose()
            await t.aclose()
    assert len(got) == 1
