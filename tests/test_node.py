"""GossipNode, the Trio driver, tested against a scripted fake core on the in-memory network."""

from __future__ import annotations

import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from common.address import Address
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from gossip.keyquery import KeyAnswer, KeyRound
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode
from gossip.transport import Transport, open_udp_tcp_transport
from tests.conftest import watchdog

A: Address = ("127.0.0.1", 7001)
B: Address = ("127.0.0.1", 7002)
C: Address = ("127.0.0.1", 7003)
LATENCY = 0.010
FAR = 1e6  # a deadline that never comes during a test


@dataclass(frozen=True, slots=True)
class FakeStreamRequest:
    id: int
    addr: Address
    data: bytes
    timeout: float


class FakeCore:
    """Implements the Swim API with scripted reactions, and records every input with its ``now``.

    Reactions: a datagram ``echo:X`` is sent back; ``wake:S`` moves the deadline to now+S; ``ask``
    queues a stream request to the sender. A stream reply makes us "joined" and is thanked with a
    datagram. Each tick pops the next deadline from ``schedule``. ``leave_done`` turns true after
    ``leave_ticks`` ticks following ``leave``.
    """

    def __init__(self, name: str, addr: Address) -> None:
        self.name = name
        self.addr = addr
        self.deadline = FAR
        self.schedule: list[float] = []
        self.stream_timeout = 5.0
        self.leave_ticks = 3
        self.received: list[tuple[Address, bytes, float]] = []
        self.handled: list[tuple[Address, bytes, float]] = []
        self.results: list[tuple[int, bytes | None, float]] = []
        self.ticks: list[float] = []
        self.joins: list[tuple[list[Address], float]] = []
        self.left_at: float | None = None
        self.ticks_since_leave = 0
        self.meta_calls: list[tuple[bytes, float]] = []
        self.kv_calls: list[tuple[str, bytes | None, float]] = []
        self.out_datagrams: list[tuple[Address, bytes]] = []
        self.out_streams: list[FakeStreamRequest] = []
        self.out_events: list[MemberEvent] = []
        self._alive = 1
        self._next_id = 0
        self._pending: dict[int, Address] = {}

    def _stream(self, addr: Address, data: bytes) -> None:
        self._next_id += 1
        self._pending[self._next_id] = addr
        self.out_streams.append(FakeStreamRequest(self._next_id, addr, data, self.stream_timeout))

    # inputs
    def receive_datagram(self, src: Address, data: bytes, now: float) -> None:
        self.received.append((src, data, now))
        if data.startswith(b"echo:"):
            self.out_datagrams.append((src, data))
        elif data.startswith(b"wake:"):
            self.deadline = now + float(data[5:])
        elif data == b"ask":
            self._stream(src, b"question")

    def handle_stream(self, src: Address, data: bytes, now: float) -> bytes | None:
        self.handled.append((src, data, now))
        self.out_datagrams.append((src, b"side-effect"))
        return None if data == b"none" else b"re:" + data

    def answer_key_query(self, answer: KeyAnswer) -> bytes:
        raise AssertionError("the fake core hands out no key queries")

    def query_keys(self, op: str, key: bytes, timeout: float, now: float) -> KeyRound:
        return KeyRound(op, ())

    def stream_result(self, request_id: int, reply: bytes | None, now: float) -> None:
        self.results.append((request_id, reply, now))
        addr = self._pending.pop(request_id)
        if reply is not None:
            self._alive = 2
            self.out_datagrams.append((addr, b"thanks"))

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        self.deadline = self.schedule.pop(0) if self.schedule else FAR
        if self.left_at is not None:
            self.ticks_since_leave += 1

    def join(self, seeds: Sequence[Address], now: float) -> None:
        self.joins.append((list(seeds), now))
        for seed in seeds:
            self._stream(seed, b"join")

    def alive_count(self) -> int:
        return self._alive

    def leave(self, now: float) -> None:
        self.left_at = now
        # Off the 50 ms grid on purpose: leave() must wake on progress, not only when polling.
        self.deadline = now + 0.23
        self.schedule = [now + 0.46, now + 0.69, now + 0.92, now + 1.15]
        self.out_datagrams.append((B, b"bye"))

    def leave_done(self) -> bool:
        return self.ticks_since_leave >= self.leave_ticks

    def set_meta(self, meta: bytes, now: float) -> None:
        self.meta_calls.append((meta, now))
        self.out_datagrams.append((B, b"meta:" + meta))

    def set_kv(self, key: str, value: bytes | None, now: float) -> None:
        self.kv_calls.append((key, value, now))
        self.out_events.append(MemberEvent(EventKind.KV, self.name, 1, self.addr, now, key=key))

    def publish(self, key: str, payload: bytes, now: float) -> None:
        self.out_datagrams.append((B, b"app:" + key.encode() + b"=" + payload))

    # outputs
    def next_deadline(self) -> float:
        return self.deadline

    def take_datagrams(self) -> list[tuple[Address, bytes]]:
        out, self.out_datagrams = self.out_datagrams, []
        return out

    def take_stream_requests(self) -> list[FakeStreamRequest]:
        out, self.out_streams = self.out_streams, []
        return out

    def take_events(self) -> list[MemberEvent]:
        out, self.out_events = self.out_events, []
        return out

    # queries
    def members(self) -> list[MemberInfo]:
        return [MemberInfo(self.name, self.addr, 1, MemberState.ALIVE, 0.0, b"")]

    def snapshot(self, now: float) -> dict[str, Any]:
        return {"name": self.name, "now": now}


@pytest.fixture
async def net() -> AsyncIterator[MemoryNetwork]:
    network = MemoryNetwork(random.Random(1), default_latency=LATENCY)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        nursery.start_soon(watchdog)
        yield network
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(core: FakeCore, transport: Transport) -> AsyncIterator[GossipNode]:
    node = GossipNode(core, transport)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        yield node
        nursery.cancel_scope.cancel()


async def _answer(src: Address, data: bytes) -> bytes | None:
    return b"answer:" + data


async def test_datagrams_flow_both_ways(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        await peer.send_datagram(A, b"echo:1")
        assert await peer.receive_datagram() == (A, b"echo:1")
        assert trio.current_time() == pytest.approx(t0 + 2 * LATENCY)
        assert node.stats.datagrams_received == 1 and node.stats.datagrams_sent == 1
    [(src, data, at)] = core.received
    assert (src, data) == (B, b"echo:1")
    assert at == pytest.approx(t0 + LATENCY)


async def test_tick_called_at_each_deadline(clock: MockClock, net: MemoryNetwork) -> None:
    core = FakeCore("a", A)
    t0 = trio.current_time()
    core.deadline = t0 + 1.0
    core.schedule = [t0 + 2.5, t0 + 4.0]
    async with running(core, net.endpoint(A)):
        await trio.sleep(10.0)
    assert core.ticks == [pytest.approx(t0 + 1.0), pytest.approx(t0 + 2.5), pytest.approx(t0 + 4.0)]


async def test_input_that_moves_deadline_earlier_wakes_timer(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    t0 = trio.current_time()
    core.deadline = t0 + 100.0
    async with running(core, net.endpoint(A)):
        await trio.sleep(1.0)
        await peer.send_datagram(A, b"wake:0.5")
        await trio.sleep(2.0)
    assert core.ticks == [pytest.approx(t0 + 1.0 + LATENCY + 0.5)]


async def test_deadline_that_does_not_advance_cannot_spin(clock: MockClock, net: MemoryNetwork) -> None:
    """A core stuck in the past is ticked at the minimum spacing instead of freezing simulated time."""

    class StuckCore(FakeCore):
        def tick(self, now: float) -> None:
            self.ticks.append(now)

    core = StuckCore("a", A)
    core.deadline = trio.current_time()
    async with running(core, net.endpoint(A)):
        await trio.sleep(0.1)
    assert 90 <= len(core.ticks) <= 101


async def test_stream_request_executed_and_result_fed_back(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node, trio.open_nursery() as nursery:
        await nursery.start(peer.serve_streams, _answer)
        t0 = trio.current_time()
        await peer.send_datagram(A, b"ask")
        # The core thanks the peer once the reply is in: proves the flush after stream_result.
        assert await peer.receive_datagram() == (A, b"thanks")
        nursery.cancel_scope.cancel()
    [(request_id, reply, at)] = core.results
    assert (request_id, reply) == (1, b"answer:question")
    assert at == pytest.approx(t0 + 3 * LATENCY)
    assert node.stats.stream_requests == 1 and node.stats.stream_requests_failed == 0


async def test_failed_stream_request_reports_none_at_timeout(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    core.stream_timeout = 3.0
    net.set_latency(A, B, 1.0, one_way=True)
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        await peer.send_datagram(A, b"ask")
        await trio.sleep(0.1)
        net.kill(B)  # dies while our request is on its way: the request hangs until its timeout
        await trio.sleep(5.0)
    [(request_id, reply, at)] = core.results
    assert (request_id, reply) == (1, None)
    assert at == pytest.approx(t0 + LATENCY + 3.0)
    assert node.stats.stream_requests_failed == 1


async def test_inbound_stream_goes_to_handle_stream(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)):
        t0 = trio.current_time()
        assert await peer.request(A, b"hello", timeout=1.0) == b"re:hello"
        # What handle_stream queued was flushed right away, not at some later input.
        assert await peer.receive_datagram() == (A, b"side-effect")
        assert trio.current_time() == pytest.approx(t0 + 2 * LATENCY)
        assert await peer.request(A, b"none", timeout=1.0) is None
    src, _, at = core.handled[0]
    assert src == B
    assert at == pytest.approx(t0 + LATENCY)
    assert [data for _, data, _ in core.handled] == [b"hello", b"none"]


async def test_events_reach_subscribers_and_a_full_one_does_not_block(
    clock: MockClock, net: MemoryNetwork
) -> None:
    core = FakeCore("a", A)
    async with running(core, net.endpoint(A)) as node:
        reader = node.subscribe()
        stuck = node.subscribe(max_buffer=1)
        gone = node.subscribe()
        await gone.aclose()
        with trio.fail_after(1.0):  # in simulated time: the node must not wait for ``stuck``
            for i in range(5):
                await node.set_kv(f"k{i}", b"v")
        got = [reader.receive_nowait() for _ in range(5)]
        assert [(e.kind, e.key) for e in got] == [(EventKind.KV, f"k{i}") for i in range(5)]
        assert stuck.receive_nowait().key == "k0"
        with pytest.raises(trio.WouldBlock):
            stuck.receive_nowait()
        driver = node.snapshot()["driver"]
        assert driver["subscriber_drops"] == 4
        assert driver["subscribers"] == 2  # the closed one was dropped
        assert driver["events"] == 5
    # Stopping the node ends the event stream.
    with pytest.raises(trio.EndOfChannel):
        await reader.receive()


async def test_events_are_logged_one_line_each(
    clock: MockClock, net: MemoryNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    core = FakeCore("a", A)
    caplog.set_level(logging.DEBUG, logger="wiremesh.gossip")
    async with running(core, net.endpoint(A)) as node:
        core.out_events.append(MemberEvent(EventKind.SUSPECT, "b", 3, B, trio.current_time()))
        core.out_events.append(MemberEvent(EventKind.JOIN, "c", 1, ("::1", 7946), trio.current_time()))
        await node.set_meta(b"")  # any input flushes
    records = [r for r in caplog.records if r.name == "wiremesh.gossip"]
    assert [r.getMessage() for r in records] == [
        "member b suspect (incarnation 3, 127.0.0.1:7002)",
        "member c join (incarnation 1, [::1]:7946)",
    ]
    suspect = records[0]
    assert suspect.levelno == logging.WARNING
    fields = {k: suspect.__dict__[k] for k in ("node", "event", "member", "incarnation", "addr", "key")}
    assert fields == {
        "node": "a",
        "event": "suspect",
        "member": "b",
        "incarnation": 3,
        "addr": "127.0.0.1:7002",
        "key": None,
    }
    assert records[1].levelno == logging.INFO


async def test_join_without_seeds_or_only_self_is_immediate(clock: MockClock, net: MemoryNetwork) -> None:
    core = FakeCore("a", A)
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        assert await node.join([])
        assert await node.join([A])
        assert trio.current_time() == t0
    assert core.joins == []


async def test_join_succeeds_when_a_seed_answers(clock: MockClock, net: MemoryNetwork) -> None:
    core, seed = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node, trio.open_nursery() as nursery:
        await nursery.start(seed.serve_streams, _answer)
        t0 = trio.current_time()
        assert await node.join([A, B, C], retry_interval=2.0)
        assert trio.current_time() == pytest.approx(t0 + 2 * LATENCY)
        nursery.cancel_scope.cancel()
    assert core.joins == [([B, C], t0)]  # our own address is left out


async def test_join_retries_then_gives_up(clock: MockClock, net: MemoryNetwork) -> None:
    core = FakeCore("a", A)
    net.endpoint(B)
    net.kill(B)  # a silent seed: every attempt hangs until its retry interval
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        assert not await node.join([B], attempts=3, retry_interval=2.0)
        assert trio.current_time() == pytest.approx(t0 + 6.0)
    assert [at for _, at in core.joins] == [t0, pytest.approx(t0 + 2.0), pytest.approx(t0 + 4.0)]


async def test_join_succeeds_on_a_later_attempt(clock: MockClock, net: MemoryNetwork) -> None:
    core, seed = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node, trio.open_nursery() as nursery:
        t0 = trio.current_time()

        async def seed_starts_late() -> None:
            await trio.sleep(1.0)
            await nursery.start(seed.serve_streams, _answer)

        nursery.start_soon(seed_starts_late)
        assert await node.join([B], attempts=5, retry_interval=2.0)
        assert trio.current_time() == pytest.approx(t0 + 2.0 + 2 * LATENCY)
        nursery.cancel_scope.cancel()
    assert len(core.joins) == 2
    assert core.results[0][1] is None  # the first attempt was refused


async def test_leave_waits_until_done(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        await node.leave(timeout=5.0)
        # leave_done after the third tick, at +0.23, +0.46, +0.69; the flush after a tick wakes leave().
        assert trio.current_time() == pytest.approx(t0 + 0.69)
        assert await peer.receive_datagram() == (A, b"bye")
    assert core.left_at == t0


async def test_leave_is_bounded_by_timeout(clock: MockClock, net: MemoryNetwork) -> None:
    core = FakeCore("a", A)
    core.leave_ticks = 1000
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        await node.leave(timeout=1.0)
        assert trio.current_time() == pytest.approx(t0 + 1.0)


async def test_commands_need_a_running_node(clock: MockClock, net: MemoryNetwork) -> None:
    node = GossipNode(FakeCore("a", A), net.endpoint(A))
    with pytest.raises(RuntimeError):
        await node.join([B])
    with pytest.raises(RuntimeError):
        await node.leave()


async def test_run_twice_is_refused(clock: MockClock, net: MemoryNetwork) -> None:
    async with running(FakeCore("a", A), net.endpoint(A)) as node:
        with pytest.raises(RuntimeError):
            await node.run()


async def test_set_meta_and_kv_pass_through_and_flush(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node:
        t0 = trio.current_time()
        await node.set_meta(b"m1")
        await node.set_kv("k", b"v")
        await node.set_kv("k", None)
        assert await peer.receive_datagram() == (A, b"meta:m1")
    assert core.meta_calls == [(b"m1", t0)]
    assert core.kv_calls == [("k", b"v", t0), ("k", None, t0)]


async def test_publish_passes_through_and_flushes(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    async with running(core, net.endpoint(A)) as node:
        await node.publish("vip/web", b"record")
        assert await peer.receive_datagram() == (A, b"app:vip/web=record")


async def test_set_meta_before_run_is_sent_when_run_starts(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    node = GossipNode(core, net.endpoint(A))
    await node.set_meta(b"early")
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        assert await peer.receive_datagram() == (A, b"meta:early")
        nursery.cancel_scope.cancel()


async def test_queries_pass_through(clock: MockClock, net: MemoryNetwork) -> None:
    core = FakeCore("a", A)
    async with running(core, net.endpoint(A)) as node:
        assert [m.name for m in node.members()] == ["a"]
        snap = node.snapshot()
        assert snap["name"] == "a" and snap["now"] == trio.current_time()
        assert snap["driver"]["running"] is True
        assert snap["driver"]["local_addr"] == "127.0.0.1:7001"


async def test_cancelling_run_stops_everything_it_started(clock: MockClock, net: MemoryNetwork) -> None:
    core, peer = FakeCore("a", A), net.endpoint(B)
    core.stream_timeout = 100.0
    net.set_latency(A, B, 50.0, one_way=True)  # the stream request will still be on its way at +1s
    node = GossipNode(core, net.endpoint(A))
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await peer.send_datagram(A, b"ask")
        await trio.sleep(1.0)
        assert node.stats.stream_requests == 1
        t_cancel = trio.current_time()
        nursery.cancel_scope.cancel()
    assert trio.current_time() == t_cancel
    assert not node.running
    assert core.results == []
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before


async def test_driver_on_real_udp_and_tcp() -> None:
    """The same driver on real loopback sockets (real clock)."""
    core = FakeCore("a", ("127.0.0.1", 0))
    with trio.fail_after(10.0):
        async with (
            open_udp_tcp_transport("127.0.0.1", 0) as transport,
            open_udp_tcp_transport("127.0.0.1", 0) as peer,
            running(core, transport),
        ):
            await peer.send_datagram(transport.local_addr, b"echo:real")
            assert await peer.receive_datagram() == (transport.local_addr, b"echo:real")
            assert await peer.request(transport.local_addr, b"q", timeout=5.0) == b"re:q"


class OrderedCore(FakeCore):
    """FakeCore that also records the order of its inputs: datagram payloads and ``"tick"``."""

    def __init__(self, name: str, addr: Address) -> None:
        super().__init__(name, addr)
        self.order: list[str] = []

    def receive_datagram(self, src: Address, data: bytes, now: float) -> None:
        self.order.append(data.decode())
        super().receive_datagram(src, data, now)

    def tick(self, now: float) -> None:
        self.order.append("tick")
        super().tick(now)


async def test_what_arrived_while_the_process_was_starved_is_read_before_the_tick() -> None:
    """A node woken late (its CPU starved) finds a deadline passed and a datagram, say the ack of the
    probe that deadline is for, waiting in the socket: the datagram must reach the core first, or the
    core suspects a live member for our own slowness. Trio may run the receive loop or the timer loop
    first, so each round gives the wrong order its chance."""
    core = OrderedCore("a", A)
    rounds = 12
    async with open_udp_tcp_transport("127.0.0.1", 0) as transport, running(core, transport):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for i in range(rounds):
                peer.sendto(b"wake:0.05", transport.local_addr)  # a deadline 50 ms from now
                with trio.fail_after(5):
                    while core.deadline == FAR:
                        await trio.sleep(0.005)
                peer.sendto(f"ack-{i}".encode(), transport.local_addr)
                time.sleep(0.1)  # the whole Trio run starved past the deadline, the ack in the socket
                with trio.fail_after(5):
                    while core.order.count("tick") <= i:
                        await trio.sleep(0.005)
    expected = [step for i in range(rounds) for step in ("wake:0.05", f"ack-{i}", "tick")]
    assert core.order == expected
