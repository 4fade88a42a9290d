"""The health-check runner: real TCP checks on the Trio clock, verdicts published as one gossip value."""

from __future__ import annotations

import itertools
import random
import socket
import time

import msgpack
import pytest
import trio
import trio.testing

from agent.cluster.objects import HealthCheck, Kind
from agent.cluster.store import ObjectStore
from agent.health.execpolicy import ExecPolicy
from agent.health.probes import CheckResult
from agent.health.runner import LATENESS_KEEP, HealthRunner
from agent.health.verdict import Verdict
from agent.published import HEALTH, HEALTH_KEY
from gossip.codec import Refusals

ME = "m1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_store() -> ObjectStore:
    return ObjectStore(ME, lambda: {ME, "m2"})


def vip(name: str, check: dict[str, object] | None, machines: list[str] | None = None) -> dict[str, object]:
    return {
        "name": name,
        "address": "100.64.0.1",
        "machines": machines if machines is not None else [ME],
        "health_check": check,
    }


def decode_health(data: bytes | None) -> dict[str, Verdict]:
    return dict(HEALTH.decode(data, "peer", Refusals()) or {})


class Published:
    def __init__(self) -> None:
        self.values: list[tuple[float, bytes | None]] = []

    async def __call__(self, key: str, value: bytes | None) -> None:
        assert key == HEALTH_KEY
        self.values.append((trio.current_time(), value))

    def last(self) -> dict[str, Verdict]:
        return decode_health(self.values[-1][1])


async def test_tcp_check_turns_healthy_after_exactly_healthy_threshold_runs(
    clock: trio.testing.MockClock,
) -> None:
    port = free_port()
    store = make_store()
    check = {
        "type": "tcp",
        "target": f"127.0.0.1:{port}",
        "interval": 1.0,
        "timeout": 0.5,
        "healthy_threshold": 3,
        "unhealthy_threshold": 2,
    }
    store.create(Kind.VIP, vip("web", check), 1)
    published = Published()
    runner = HealthRunner(store, ExecPolicy(), ME, published, rng=random.Random(7))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        assert runner.local()["vip/web"].state == "unknown"
        start = trio.current_time()
        # Closed port: two failures make it unhealthy.
        while runner.runs.get("vip/web", 0) < 2:
            await trio.sleep(0.01)
        assert runner.states["vip/web"].state == "unhealthy"
        first = runner.states["vip/web"].checked_at  # the second run
        assert first is not None
        assert start <= first - 1.0 < start + 1.0  # the first run was jittered within one interval
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")

        async def accept() -> None:
            while True:
                stream = await listeners[0].accept()
                await stream.aclose()

        nursery.start_soon(accept)
        for n in (1, 2):
            while runner.runs["vip/web"] < 2 + n:
                await trio.sleep(0.01)
            assert runner.states["vip/web"].state == "unhealthy", n
            assert runner.states["vip/web"].consecutive == n
        while runner.runs["vip/web"] < 5:
            await trio.sleep(0.01)
        state = runner.states["vip/web"]
        assert state.state == "healthy"
        # Runs stay on the interval grid (no drift).
        assert state.checked_at is not None
        assert abs((state.checked_at - first) - 3.0) < 0.01
        await trio.sleep(0.5)  # the publisher's rate limit
        verdict = published.last()["vip/web"]
        assert verdict.state == "healthy"
        assert verdict.consecutive == 3
        # Published times are wall-clock seconds, not the Trio clock.
        assert verdict.since > 1_000_000_000
        nursery.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()


async def test_removed_and_unassigned_checks_stop(clock: trio.testing.MockClock) -> None:
    store = make_store()
    check = {"type": "tcp", "target": ":1", "interval": 1.0, "timeout": 0.5}
    store.create(Kind.VIP, vip("a", check), 1)
    store.create(Kind.VIP, vip("b", check), 2)
    store.create(Kind.VIP, vip("other", check, machines=["m2"]), 3)
    store.create(Kind.VIP, vip("nocheck", None), 4)
    calls: list[str] = []

    async def probe(c: HealthCheck) -> CheckResult:
        calls.append(c.target)
        return CheckResult(ok=True, latency=0.001)

    published = Published()
    runner = HealthRunner(store, ExecPolicy(), ME, published, rng=random.Random(1), probe=probe)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(2.5)
        assert set(runner.states) == {"vip/a", "vip/b"}
        assert set(published.last()) == {"vip/a", "vip/b"}
        store.delete(Kind.VIP, "a", 5)
        store.patch(Kind.VIP, "b", {"machines": ["m2"]}, 6)
        await trio.sleep(0.5)
        assert runner.states == {}
        assert published.last() == {}
        count = len(calls)
        await trio.sleep(5)
        assert len(calls) == count
        nursery.cancel_scope.cancel()


async def test_publishing_is_rate_limited(clock: trio.testing.MockClock) -> None:
    store = make_store()
    for i in range(50):
        check = {"type": "tcp", "target": ":1", "interval": 0.05, "timeout": 0.01}
        store.create(Kind.VIP, vip(f"v{i}", check), i + 1)

    async def probe(c: HealthCheck) -> CheckResult:
        return CheckResult(ok=False, latency=0.0, error="down")

    published = Published()
    runner = HealthRunner(store, ExecPolicy(), ME, published, probe=probe)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    times = [t for t, _ in published.values]
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(times))
    assert len(times) <= 11
    data = msgpack.unpackb(published.values[-1][1])
    assert len(data) == 50
    assert all(v["s"] == "unhealthy" for v in data.values())


async def test_run_starts_stay_on_the_interval_grid_and_lateness_is_recorded(
    clock: trio.testing.MockClock,
) -> None:
    """Each run's scheduled slot and actual start reach ``on_run_start``; slots stay on the grid of the
    first one (a slow run skips slots, never shifts them), and a late wake is recorded as lateness."""
    store = make_store()
    check = {"type": "tcp", "target": ":1", "interval": 1.0, "timeout": 0.5}
    store.create(Kind.VIP, vip("web", check), 1)
    durations = iter([0.1, 2.5] + [0.1] * 100)  # the second run overruns two slots

    async def probe(c: HealthCheck) -> CheckResult:
        await trio.sleep(next(durations))
        return CheckResult(ok=True, latency=0.0)

    starts: list[tuple[str, float, float]] = []
    runner = HealthRunner(
        store,
        ExecPolicy(),
        ME,
        Published(),
        rng=random.Random(3),
        probe=probe,
        on_run_start=lambda key, slot, started: starts.append((key, slot, started)),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(6.0)
        # Wake the next run late: jump past its slot while it sleeps.
        _key, last_slot, _started = starts[-1]
        await trio.sleep_until(last_slot + 0.8)
        clock.jump(0.5)
        await trio.sleep(3.0)
        nursery.cancel_scope.cancel()
    slots = [slot for _key, slot, _started in starts]
    first = slots[0]
    steps = [(slot - first) / 1.0 for slot in slots]
    assert all(abs(k - round(k)) < 1e-9 for k in steps), steps
    assert round(steps[2]) - round(steps[1]) == 3  # slots 2 and 3 were skipped, not run back to back
    assert all(key == "vip/web" for key, _slot, _started in starts)
    late = [started - slot for _key, slot, started in starts]
    assert sum(1 for x in late if abs(x - 0.3) < 1e-9) == 1
    assert all(abs(x) < 1e-9 or abs(x - 0.3) < 1e-9 for x in late)
    assert list(runner.lateness) == late
    assert abs(runner.max_lateness - 0.3) < 1e-9


async def test_lateness_record_is_bounded(clock: trio.testing.MockClock) -> None:
    store = make_store()
    check = {"type": "tcp", "target": ":1", "interval": 0.01, "timeout": 0.005}
    store.create(Kind.VIP, vip("web", check), 1)

    async def probe(c: HealthCheck) -> CheckResult:
        return CheckResult(ok=True, latency=0.0)

    runner = HealthRunner(store, ExecPolicy(), ME, Published(), probe=probe)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        while runner.runs.get("vip/web", 0) < LATENESS_KEEP + 100:
            await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert len(runner.lateness) == LATENESS_KEEP


async def test_listeners_hear_state_changes_not_every_result(clock: trio.testing.MockClock) -> None:
    """The planner reads only the states (``local()``), so listeners are called when a state changes
    or a check comes or goes; every result is still published."""
    store = make_store()
    check = {
        "type": "tcp",
        "target": ":1",
        "interval": 1.0,
        "timeout": 0.5,
        "healthy_threshold": 2,
        "unhealthy_threshold": 2,
    }
    store.create(Kind.VIP, vip("web", check), 1)
    results = iter([True] * 5 + [False] * 5 + [True] * 100)

    async def probe(c: HealthCheck) -> CheckResult:
        ok = next(results)
        return CheckResult(ok=ok, latency=0.0, error=None if ok else "down")

    published = Published()
    runner = HealthRunner(store, ExecPolicy(), ME, published, rng=random.Random(5), probe=probe)
    seen: list[tuple[int, str | None]] = []

    def listener() -> None:
        state = runner.states.get("vip/web")
        seen.append((runner.runs.get("vip/web", 0), None if state is None else state.state))

    runner.on_change(listener)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        while runner.runs.get("vip/web", 0) < 10:
            await trio.sleep(0.1)
        await trio.sleep(0.5)
        consecutive = [decode_health(v)["vip/web"].consecutive for _t, v in published.values[1:]]
        store.delete(Kind.VIP, "web", 2)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    # Added (unknown), healthy on the 2nd pass, unhealthy on the 2nd failure, removed.
    assert seen == [(0, "unknown"), (2, "healthy"), (7, "unhealthy"), (0, None)]
    # Meanwhile every result went out: the consecutive counts climb 1..5 twice.
    assert consecutive == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]


async def test_http_checks_build_the_tls_contexts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many HTTPS checks share one pair of TLS contexts, built once even when they all start while it is
    being built (real clock: the build runs in a thread)."""
    built: list[object] = []

    class FakeContexts:
        @classmethod
        def create(cls) -> object:
            time.sleep(0.1)
            made = object()
            built.append(made)
            return made

    used: list[object] = []

    async def fake_run_check(check: HealthCheck, *, exec_policy: ExecPolicy, tls: object) -> CheckResult:
        used.append(tls)
        return CheckResult(ok=True, latency=0.0)

    monkeypatch.setattr("agent.health.runner.TlsContexts", FakeContexts)
    monkeypatch.setattr("agent.health.runner.run_check", fake_run_check)
    store = make_store()
    for i in range(20):
        check = {"type": "http", "target": f"https://127.0.0.1:{i + 1}/", "interval": 0.05, "timeout": 0.02}
        store.create(Kind.VIP, vip(f"v{i}", check), i + 1)
    runner = HealthRunner(store, ExecPolicy(), ME, Published())
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await trio.sleep(0.4)
        nursery.cancel_scope.cancel()
    assert len(built) == 1
    assert len(used) >= 20 and all(t is built[0] for t in used)
