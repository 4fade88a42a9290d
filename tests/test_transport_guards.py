"""The stream port's guards against peers that hold connections or memory (real loopback sockets).

Attackers connect from 127.0.0.2 and up (all of 127/8 is loopback on Linux), members from 127.0.0.1,
so the server can tell them apart by source address as it would on a real network.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.address import Address
from gossip.config import LOCAL
from gossip.keyring import Keyring, Sealer
from gossip.node import GossipNode
from gossip.swim import Swim
from gossip.transport import (
    Standing,
    StreamGate,
    StreamLimits,
    UdpTcpTransport,
    open_udp_tcp_transport,
)
from gossip.wire import PushPull, decode_frame, encode_frame

MEMBER_HOST = "127.0.0.1"
TEST_TIMEOUT = 30.0


def _stranger_host(i: int) -> str:
    return f"127.0.{i // 250}.{2 + i % 250}"


def _only_member_host(host: str) -> Standing:
    return Standing.LIVE if host == MEMBER_HOST else Standing.STRANGER


async def _connect_from(host: str, server: Address) -> trio.SocketStream:
    sock = trio.socket.socket()
    try:
        await sock.bind((host, 0))
        await sock.connect(server)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def _wait_until_idle(t: UdpTcpTransport) -> None:
    while t.stats.streams_active:
        await trio.sleep(0.01)


# --- the sans-I/O gate ------------------------------------------------------------------------


def test_gate_keeps_the_reserve_for_live_members_and_evicts_strangers_first() -> None:
    gate = StreamGate(StreamLimits(max_connections=4, member_reserve=2, per_source=8))
    strangers = [gate.admit(f"10.0.0.{i}", Standing.STRANGER) for i in range(3)]
    assert [a.reason for a in strangers] == [None, None, "capacity"]
    assert gate.admit("10.0.1.1", Standing.KNOWN).reason == "capacity"  # not live: no reserve either
    members = [gate.admit("10.9.0.1", Standing.LIVE) for _ in range(2)]
    assert all(a.slot is not None and a.evict is None for a in members)
    third = gate.admit("10.9.0.1", Standing.LIVE)  # every slot taken: the oldest stranger goes
    assert third.slot is not None and third.evict is strangers[0].slot
    assert gate.active == 4


def test_gate_bounds_connections_per_source() -> None:
    gate = StreamGate(StreamLimits(per_source=2))
    assert [gate.admit("10.0.0.1", Standing.LIVE).reason for _ in range(3)] == [None, None, "per_source"]
    assert gate.admit("10.0.0.2", Standing.STRANGER).reason is None


def test_gate_budget_and_stranger_frame_bound() -> None:
    gate = StreamGate(StreamLimits(stranger_frame_max=100, buffer_budget=1000))
    stranger = gate.admit("10.0.0.1", Standing.STRANGER).slot
    member = gate.admit("10.0.0.2", Standing.KNOWN).slot
    assert stranger is not None and member is not None
    assert gate.frame_refusal(stranger, 101) == "oversize"
    assert gate.frame_refusal(member, 1001) == "budget"
    assert gate.frame_refusal(member, 1000) is None
    assert gate.try_reserve(member, 950)
    assert not gate.try_reserve(stranger, 100)
    gate.release(member)
    gate.release(member)  # idempotent
    assert gate.buffered == 0 and gate.buffered_peak == 950
    assert gate.try_reserve(stranger, 100)


# --- (a) slowloris ----------------------------------------------------------------------------


@asynccontextmanager
async def _two_members() -> AsyncIterator[tuple[GossipNode, GossipNode, Sealer]]:
    sealer = Sealer(Keyring([bytes(range(32))]), "portguard")
    async with (
        open_udp_tcp_transport(MEMBER_HOST, 0) as ta,
        open_udp_tcp_transport(MEMBER_HOST, 0) as tb,
        trio.open_nursery() as nursery,
    ):
        a = GossipNode(Swim(LOCAL, "a", ta.local_addr, sealer, random.Random(1), trio.current_time()), ta)
        b = GossipNode(Swim(LOCAL, "b", tb.local_addr, sealer, random.Random(2), trio.current_time()), tb)
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert await b.join([ta.local_addr], attempts=3, retry_interval=1.0)
        while a.standing(MEMBER_HOST) is not Standing.LIVE:
            await trio.sleep(0.01)
        yield a, b, sealer
        nursery.cancel_scope.cancel()


async def _hold(server: Address, host: str, trickle: bool, stop: trio.Event) -> None:
    """Keep one connection open to ``server``, silent or one byte every 0.5 s; reconnect when closed."""
    for _ in range(50):  # bounded: reconnects at most this often
        if stop.is_set():
            return
        try:
            stream = await _connect_from(host, server)
        except OSError:
            await trio.sleep(0.05)
            continue
        async with stream:
            with trio.move_on_after(5.0):
                while not stop.is_set():
                    try:
                        if trickle:
                            await stream.send_all(b"\x00")
                        with trio.move_on_after(0.5):
                            if await stream.receive_some(1) == b"":
                                break  # closed by the server: come back
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        break


@pytest.mark.attack
async def test_members_push_pull_while_300_slow_connections_are_held() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with _two_members() as (a, b, sealer), trio.open_nursery() as attackers:
            server = a.transport.local_addr
            stop = trio.Event()
            for i in range(300):
                attackers.start_soon(_hold, server, _stranger_host(i // 5), i % 2 == 1, stop)
            await trio.sleep(0.5)  # let them fill the port
            frame = sealer.seal(encode_frame(PushPull("b", False, ())))
            answered = 0
            for _ in range(15):
                reply = await b.transport.request(server, frame, timeout=1.0)
                if reply is not None and isinstance(decode_frame(sealer.open(reply)), PushPull):
                    answered += 1
                await trio.sleep(0.2)  # 3 s in all: past the first-frame deadline, so attackers cycle
            stop.set()
            stats = a.snapshot()["transport"]
    assert answered >= 14, f"{answered} of 15 push-pulls answered"
    assert stats["streams_rejected_capacity"] > 0
    assert stats["streams_rejected_slow"] > 0


# --- (b) memory ---------------------------------------------------------------------------------


async def _announce_and_stall(server: Address, host: str, length: int, sent: int, stop: trio.Event) -> None:
    try:
        stream = await _connect_from(host, server)
    except OSError:
        return
    async with stream:
        try:
            await stream.send_all(length.to_bytes(4, "big") + b"\x55" * sent)
            with trio.move_on_after(10.0):
                await stop.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return


async def _never(src: Address, data: bytes) -> bytes | None:
    raise AssertionError("no frame here is complete")  # pragma: no cover


@pytest.mark.attack
async def test_stalled_large_frames_stay_within_the_budget() -> None:
    """Members' addresses may announce large frames; all of them together stay within the budget."""
    frame, budget = 1 << 20, 3 << 20
    limits = StreamLimits(timeout=1.5, first_frame_timeout=0.5, per_source=64, buffer_budget=budget)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_udp_tcp_transport(MEMBER_HOST, 0, limits=limits) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(lambda **kw: server.serve_streams(_never, standing=_only_member_host, **kw))
            stop = trio.Event()
            async with trio.open_nursery() as clients:
                for _ in range(12):
                    clients.start_soon(
                        _announce_and_stall, server.local_addr, MEMBER_HOST, frame, frame - 1, stop
                    )
                await trio.sleep(0.3)
                assert server.stats.buffered_bytes <= budget
                await _wait_until_idle(server)
                stop.set()
            nursery.cancel_scope.cancel()
    assert 0 < server.stats.buffered_bytes_peak <= budget
    assert server.stats.buffered_bytes == 0
    assert server.stats.streams_rejected_budget > 0


@pytest.mark.attack
async def test_strangers_cannot_announce_large_frames() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with open_udp_tcp_transport(MEMBER_HOST, 0) as server, trio.open_nursery() as nursery:
            await nursery.start(lambda **kw: server.serve_streams(_never, standing=_only_member_host, **kw))
            stop = trio.Event()
            async with trio.open_nursery() as clients:
                for i in range(48):
                    length = 16 * 1024 * 1024
                    clients.start_soon(
                        _announce_and_stall, server.local_addr, _stranger_host(i), length, 1 << 17, stop
                    )
                await trio.sleep(0.3)
                await _wait_until_idle(server)
                stop.set()
            nursery.cancel_scope.cancel()
    assert server.stats.streams_rejected_oversize == 48
    assert server.stats.buffered_bytes_peak == 0


# --- (c) fuzz -----------------------------------------------------------------------------------

_FUZZ_LIMITS = StreamLimits(
    timeout=0.5, first_frame_timeout=0.3, max_frame=4096, stranger_frame_max=512, buffer_budget=2048
)

_frames = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 5000), st.integers(0, (1 << 32) - 1)),  # announced length
        st.binary(max_size=700),  # what actually follows
        st.booleans(),  # from a member's address?
    ),
    min_size=1,
    max_size=4,
)


async def _echo(src: Address, data: bytes) -> bytes | None:
    return data[::-1]


async def _fuzz_round(cases: list[tuple[int, bytes, bool]]) -> UdpTcpTransport:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            open_udp_tcp_transport(MEMBER_HOST, 0, limits=_FUZZ_LIMITS) as server,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(lambda **kw: server.serve_streams(_echo, standing=_only_member_host, **kw))

            async def one(length: int, body: bytes, member: bool) -> None:
                host = MEMBER_HOST if member else _stranger_host(0)
                stream = await _connect_from(host, server.local_addr)
                async with stream:
                    try:
                        await stream.send_all(length.to_bytes(4, "big") + body)
                        await stream.send_eof()
                        while await stream.receive_some(65536):
                            pass
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        pass

            async with trio.open_nursery() as clients:
                for case in cases:
                    clients.start_soon(one, *case)
            await _wait_until_idle(server)
            # Still serving after all that.
            assert await server.request(server.local_addr, b"ok", timeout=2.0) == b"ko"
            await _wait_until_idle(server)
            nursery.cancel_scope.cancel()
    return server


@pytest.mark.attack
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_frames)
def test_fuzzed_frames_never_crash_the_server_or_leave_bytes_behind(
    cases: list[tuple[int, bytes, bool]],
) -> None:
    server = trio.run(_fuzz_round, cases)
    assert server.stats.buffered_bytes == 0
    assert server.stats.buffered_bytes_peak <= _FUZZ_LIMITS.buffer_budget
    assert server.stats.streams_active == 0
