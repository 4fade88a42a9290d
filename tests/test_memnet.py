"""The in-memory network: latency, loss, partitions, crashed hosts and streams, under MockClock."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from trio.testing import MockClock

from common.address import Address
from gossip.memnet import MemoryNetwork, MemoryTransport
from tests.conftest import watchdog

A: Address = ("127.0.0.1", 7001)
B: Address = ("127.0.0.1", 7002)
C: Address = ("127.0.0.1", 7003)
D: Address = ("127.0.0.1", 7004)


@pytest.fixture
async def net(clock: MockClock) -> AsyncIterator[MemoryNetwork]:
    network = MemoryNetwork(random.Random(7), default_latency=0.010)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        nursery.start_soon(watchdog)
        yield network
        nursery.cancel_scope.cancel()


async def _receive_all(ep: MemoryTransport, within: float) -> list[tuple[float, Address, bytes]]:
    """Everything that arrives at ``ep`` during the next ``within`` seconds, with arrival times."""
    got: list[tuple[float, Address, bytes]] = []
    with trio.move_on_after(within):
        while True:
            src, data = await ep.receive_datagram()
            got.append((trio.current_time(), src, data))
    return got


async def _echo(src: Address, data: bytes) -> bytes | None:
    return b"echo:" + data


async def test_default_latency_and_link_override(clock: MockClock, net: MemoryNetwork) -> None:
    a, b, c = net.endpoint(A), net.endpoint(B), net.endpoint(C)
    net.set_latency(A, C, 0.5)
    t0 = trio.current_time()
    await a.send_datagram(C, b"slow")
    await a.send_datagram(B, b"fast")
    assert await b.receive_datagram() == (A, b"fast")
    assert trio.current_time() - t0 == pytest.approx(0.010)
    assert await c.receive_datagram() == (A, b"slow")
    assert trio.current_time() - t0 == pytest.approx(0.5)
    # The override is symmetric by default.
    await c.send_datagram(A, b"back")
    t1 = trio.current_time()
    assert await a.receive_datagram() == (C, b"back")
    assert trio.current_time() - t1 == pytest.approx(0.5)


async def test_one_way_latency(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    net.set_latency(A, B, 0.2, one_way=True)
    t0 = trio.current_time()
    await b.send_datagram(A, b"x")
    await a.receive_datagram()
    assert trio.current_time() - t0 == pytest.approx(0.010)


async def test_earlier_delivery_wakes_the_delivery_task(clock: MockClock, net: MemoryNetwork) -> None:
    """A short-latency datagram sent after a long one must not wait behind it."""
    a, b = net.endpoint(A), net.endpoint(B)
    c = net.endpoint(C)
    net.set_latency(A, C, 5.0)
    await a.send_datagram(C, b"late")
    await trio.sleep(1.0)
    t0 = trio.current_time()
    await a.send_datagram(B, b"soon")
    assert await b.receive_datagram() == (A, b"soon")
    assert trio.current_time() - t0 == pytest.approx(0.010)
    assert await c.receive_datagram() == (A, b"late")
    assert trio.current_time() == pytest.approx(t0 + 4.0)


async def test_global_loss_rate_is_roughly_as_set(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    net.set_loss(0.3)
    n = 2000
    for i in range(n):
        await a.send_datagram(B, i.to_bytes(2, "big"))
        if i % 500 == 499:  # keep within b's buffer
            got = await _receive_all(b, 0.1)
            assert got
    await _receive_all(b, 0.1)
    stats = net.stats
    assert stats.datagrams_sent == n
    assert stats.datagrams_delivered + stats.dropped_loss == n
    assert 0.25 * n < stats.dropped_loss < 0.35 * n


async def test_loss_is_reproducible_with_the_same_seed(clock: MockClock) -> None:
    async def delivered(seed: int) -> list[bytes]:
        network = MemoryNetwork(random.Random(seed), loss=0.5)
        async with trio.open_nursery() as nursery:
            await nursery.start(network.run)
            a, b = network.endpoint(A), network.endpoint(B)
            for i in range(100):
                await a.send_datagram(B, bytes([i]))
            got = [data for _, _, data in await _receive_all(b, 1.0)]
            nursery.cancel_scope.cancel()
        return got

    first, second, other = await delivered(1), await delivered(1), await delivered(2)
    assert first == second
    assert first != other


async def test_link_loss_applies_to_that_link_only(clock: MockClock, net: MemoryNetwork) -> None:
    a, b, c = net.endpoint(A), net.endpoint(B), net.endpoint(C)
    net.set_link_loss(A, B, 1.0)
    for _ in range(10):
        await a.send_datagram(B, b"x")
        await b.send_datagram(A, b"x")
        await a.send_datagram(C, b"y")
    assert await _receive_all(b, 0.1) == []
    assert await _receive_all(a, 0.1) == []
    assert len(await _receive_all(c, 0.1)) == 10
    assert net.stats.dropped_loss == 20


async def test_partition_blocks_datagrams_and_heal_restores(clock: MockClock, net: MemoryNetwork) -> None:
    a, b, c, d = (net.endpoint(x) for x in (A, B, C, D))
    net.partition([{A, B}, {C}])  # D is in no group: it forms its own
    for dst in (B, C, D):
        await a.send_datagram(dst, b"p")
    await d.send_datagram(C, b"q")
    assert [data for _, _, data in await _receive_all(b, 0.1)] == [b"p"]
    assert await _receive_all(c, 0.1) == []
    assert await _receive_all(d, 0.1) == []
    assert net.stats.dropped_partition == 3
    assert not net.can_reach(A, C)

    net.heal()
    for dst in (B, C, D):
        await a.send_datagram(dst, b"h")
    for ep in (b, c, d):
        assert [data for _, _, data in await _receive_all(ep, 0.1)] == [b"h"]


async def test_partition_drops_datagrams_already_in_flight(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    net.set_latency(A, B, 1.0)
    await a.send_datagram(B, b"x")
    await trio.sleep(0.5)
    net.partition([{A}, {B}])
    assert await _receive_all(b, 1.0) == []
    assert net.stats.dropped_partition == 1


async def test_partition_rejects_overlapping_groups(clock: MockClock, net: MemoryNetwork) -> None:
    with pytest.raises(ValueError):
        net.partition([{A, B}, {B, C}])


async def test_kill_and_revive(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    await a.send_datagram(B, b"buffered")
    await trio.sleep(0.1)  # delivered into b's buffer, not yet read
    net.kill(B)
    await a.send_datagram(B, b"to-dead")
    await b.send_datagram(A, b"from-dead")
    assert await _receive_all(b, 0.1) == []  # the buffered datagram was lost with the host
    assert await _receive_all(a, 0.1) == []
    assert net.stats.dropped_dead == 2

    net.revive(B)
    await a.send_datagram(B, b"again")
    await b.send_datagram(A, b"me too")
    assert [data for _, _, data in await _receive_all(b, 0.1)] == [b"again"]
    assert [data for _, _, data in await _receive_all(a, 0.1)] == [b"me too"]


async def test_full_receive_buffer_drops_and_counts(clock: MockClock) -> None:
    network = MemoryNetwork(random.Random(0), buffer_size=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(network.run)
        a, b = network.endpoint(A), network.endpoint(B)
        for i in range(10):
            await a.send_datagram(B, bytes([i]))
        await trio.sleep(0.1)
        got = [data for _, _, data in await _receive_all(b, 0.1)]
        nursery.cancel_scope.cancel()
    assert got == [bytes([i]) for i in range(4)]
    assert network.stats.dropped_full == 6


async def test_stream_round_trip_takes_two_one_way_latencies(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    net.set_latency(A, B, 0.25)
    seen: list[tuple[float, Address, bytes]] = []

    async def handler(src: Address, data: bytes) -> bytes | None:
        seen.append((trio.current_time(), src, data))
        return b"reply"

    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve_streams, handler)
        t0 = trio.current_time()
        assert await a.request(B, b"req", timeout=5.0) == b"reply"
        assert trio.current_time() - t0 == pytest.approx(0.5)
        nursery.cancel_scope.cancel()
    [(at, src, data)] = seen
    assert (src, data) == (A, b"req")
    assert at == pytest.approx(t0 + 0.25)
    assert net.stats.streams_completed == 1


async def test_stream_without_reply_and_without_server(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)

    async def silent(src: Address, data: bytes) -> bytes | None:
        return None

    t0 = trio.current_time()
    assert await a.request(B, b"x", timeout=5.0) is None  # nobody serving: refused after one round trip
    assert trio.current_time() - t0 == pytest.approx(0.020)
    assert await a.request(("127.0.0.1", 9), b"x", timeout=5.0) is None  # no endpoint at all
    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve_streams, silent)
        assert await a.request(B, b"x", timeout=5.0) is None
        nursery.cancel_scope.cancel()
    assert net.stats.streams_failed == 3


async def test_stream_timeout_with_slow_handler(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    finished: list[float] = []

    async def slow(src: Address, data: bytes) -> bytes | None:
        await trio.sleep(3.0)
        finished.append(trio.current_time())
        return b"too late"

    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve_streams, slow)
        t0 = trio.current_time()
        assert await a.request(B, b"x", timeout=1.0) is None
        assert trio.current_time() - t0 == pytest.approx(1.0)
        # The handler runs in the server's own task and is not cut short by the client's timeout.
        await trio.sleep(3.0)
        assert finished == [pytest.approx(t0 + 0.010 + 3.0)]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fault", ["partition", "kill-server", "kill-client"])
async def test_stream_blocked_by_fault_hangs_until_timeout(
    clock: MockClock, net: MemoryNetwork, fault: str
) -> None:
    a, b = net.endpoint(A), net.endpoint(B)
    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve_streams, _echo)
        if fault == "partition":
            net.partition([{A}, {B}])
        else:
            net.kill(B if fault == "kill-server" else A)
        t0 = trio.current_time()
        assert await a.request(B, b"x", timeout=2.0) is None
        assert trio.current_time() - t0 == pytest.approx(2.0)
        net.heal()
        net.revive(A)
        net.revive(B)
        assert await a.request(B, b"x", timeout=2.0) == b"echo:x"
        nursery.cancel_scope.cancel()


async def test_reply_lost_when_partitioned_mid_request(clock: MockClock, net: MemoryNetwork) -> None:
    a, b = net.endpoint(A), net.endpoint(B)

    async def partition_then_reply(src: Address, data: bytes) -> bytes | None:
        net.partition([{A}, {B}])
        return b"lost"

    async with trio.open_nursery() as nursery:
        await nursery.start(b.serve_streams, partition_then_reply)
        assert await a.request(B, b"x", timeout=1.0) is None
        nursery.cancel_scope.cancel()


async def test_endpoint_address_is_exclusive_until_closed(clock: MockClock, net: MemoryNetwork) -> None:
    a = net.endpoint(A)
    with pytest.raises(ValueError):
        net.endpoint(A)
    await a.aclose()
    again = net.endpoint(A)
    assert again.local_addr == A


async def test_aclose_ends_pending_receive(clock: MockClock, net: MemoryNetwork) -> None:
    a = net.endpoint(A)
    with trio.fail_after(1.0):
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                with pytest.raises(trio.ClosedResourceError):
                    await a.receive_datagram()

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await a.aclose()


async def test_thousand_endpoints_share_one_delivery_task(clock: MockClock, net: MemoryNetwork) -> None:
    """Datagrams in flight must not cost tasks: the task count stays flat however many are queued."""
    rng = random.Random(3)
    addrs = [("127.0.0.1", 10000 + i) for i in range(1000)]
    eps = [net.endpoint(addr) for addr in addrs]
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    for ep in eps:
        for _ in range(5):
            await ep.send_datagram(rng.choice(addrs), b"gossip")
    assert net.in_flight() == 5000
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before
    await trio.sleep(0.1)
    assert net.in_flight() == 0
    assert net.stats.datagrams_delivered == 5000
    total = 0
    for ep in eps:
        total += len(await _receive_all(ep, 0.001))
    assert total == 5000


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        MemoryNetwork(random.Random(0), loss=1.5)
    network = MemoryNetwork(random.Random(0))
    with pytest.raises(ValueError):
        network.set_loss(-0.1)
    with pytest.raises(ValueError):
        network.set_latency(A, B, -1.0)
