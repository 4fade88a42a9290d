"""GET /metrics: Prometheus text that parses, with gossip, member, object, request, health check and
announcement series."""

from __future__ import annotations

import random
from typing import Any

import httpx
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from agent.announce.planner import Decision, Reason
from agent.cluster.hlc import Timestamp, Version
from agent.cluster.objects import HealthCheck, Kind
from agent.cluster.store import ObjectStore, Record
from agent.health.execpolicy import ExecPolicy
from agent.health.probes import CheckResult
from agent.health.runner import HealthRunner
from agent.health.verdict import STATES, Verdict
from agent.http.app import create_app
from agent.http.metrics import ApiMetrics, StateCollector
from gossip.events import MemberInfo, MemberState
from tests.fakes import FakeNode
from tests.test_api_health import build_scenario
from tests.test_healthd import Published

TOKEN = "metrics-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def fake_node() -> FakeNode:
    members = [
        MemberInfo("node-a", ("127.0.0.1", 1), 1, MemberState.ALIVE, 0.0, b""),
        MemberInfo("node-b", ("127.0.0.1", 2), 1, MemberState.ALIVE, 0.0, b""),
        MemberInfo("node-c", ("127.0.0.1", 3), 1, MemberState.SUSPECT, 0.0, b""),
    ]
    snapshot = {
        "traffic": {
            "datagrams_in": 12,
            "datagrams_out": 9,
            "bytes_in": 1200,
            "auth_failures": 2,
            "per_type": {
                "in": {"ping": {"messages": 5, "bytes": 300}},
                "out": {"ack": {"messages": 4, "bytes": 200}},
            },
        }
    }
    return FakeNode("node-a", members, snapshot)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_text_parses_and_counts() -> None:
    store = ObjectStore("node-a", lambda: frozenset({"node-a", "node-b", "node-c"}))
    app = create_app(
        fake_node(), token=TOKEN, store=lambda: store, clock=lambda: 1.0, wall_clock=lambda: 1.7e9
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as c:
        await c.post("/v1/vips", json={"name": "web", "address": "100.96.0.1"})
        await c.get("/v1/vips/web")
        await c.get("/v1/vips/nope")
        await c.get("/v1/vips/other")
        await c.get("/v1/members", headers={"authorization": "Bearer wrong"})
        await c.get("/no/such/path")
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)

    def req(method: str, route: str, status: str) -> float:
        return got.get(
            ("wiremesh_api_requests_total", (("method", method), ("route", route), ("status", status))), 0
        )

    assert req("POST", "/v1/vips", "201") == 1
    assert req("GET", "/v1/vips/{name}", "200") == 1
    assert req("GET", "/v1/vips/{name}", "404") == 2  # by template: names do not multiply the series
    assert req("GET", "unmatched", "401") == 1  # refused before routing
    assert req("GET", "unmatched", "404") == 1
    assert got[("wiremesh_gossip_datagrams_in_total", ())] == 12
    assert got[("wiremesh_gossip_auth_failures_total", ())] == 2
    assert got[("wiremesh_gossip_messages_total", (("direction", "in"), ("type", "ping")))] == 5
    assert got[("wiremesh_gossip_message_bytes_total", (("direction", "out"), ("type", "ack")))] == 200
    assert got[("wiremesh_members", (("state", "alive"),))] == 2
    assert got[("wiremesh_members", (("state", "suspect"),))] == 1
    assert got[("wiremesh_members", (("state", "dead"),))] == 0
    assert got[("wiremesh_objects", (("kind", "vip"),))] == 1
    assert got[("wiremesh_objects", (("kind", "route"),))] == 0
    assert got[("wiremesh_objects", (("kind", "machine"),))] == 3  # implicit settings of known machines
    assert ("wiremesh_api_request_duration_seconds_count", (("method", "POST"), ("route", "/v1/vips"))) in got


def test_stream_guards_of_the_transport() -> None:
    transport = {
        "streams_rejected": 5,
        "streams_rejected_capacity": 3,
        "streams_rejected_slow": 2,
        "streams_evicted": 1,
        "streams_active": 4,
        "buffered_bytes": 1024,
        "buffer_budget": 4096,
    }
    metrics = ApiMetrics()
    metrics.add_collector(StateCollector(lambda: {"transport": transport}, lambda: []))
    got = samples(metrics.render().decode())
    assert got[("wiremesh_gossip_streams_rejected_total", (("reason", "capacity"),))] == 3
    assert got[("wiremesh_gossip_streams_rejected_total", (("reason", "slow"),))] == 2
    assert got[("wiremesh_gossip_streams_rejected_total", (("reason", "evicted"),))] == 1
    assert got[("wiremesh_gossip_stream_connections", ())] == 4
    assert got[("wiremesh_gossip_stream_buffered_bytes", ())] == 1024
    assert got[("wiremesh_gossip_stream_buffer_budget_bytes", ())] == 4096


def test_registries_are_per_app_and_a_failing_provider_is_skipped() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no snapshot")

    first, second = ApiMetrics(), ApiMetrics()
    first.add_collector(StateCollector(broken, lambda: ["alive"]))
    second.add_collector(StateCollector(lambda: {}, lambda: []))  # same names, no clash
    first.observe("BREW", "/v1/x", 418, 0.01)
    text = first.render().decode()
    got = samples(text)
    assert got[("wiremesh_members", (("state", "alive"),))] == 1
    assert not any(name.startswith("wiremesh_gossip") for name, _ in got)
    assert (
        got[("wiremesh_api_requests_total", (("method", "OTHER"), ("route", "/v1/x"), ("status", "418")))]
        == 1
    )
    assert "wiremesh_api_requests_total{" not in second.render().decode()


# --- health checks and announcements ----------------------------------------------------------------


async def test_check_verdicts_and_announcements_of_this_machine(mock_clock: trio.testing.MockClock) -> None:
    """Only this machine's (node-a's) series: peers export their own."""
    s = build_scenario()
    app = create_app(
        s.gossip, token=TOKEN, store=lambda: s.store, status=s.announcer, wall_clock=lambda: 1.7e9
    )
    got = samples(await scrape(app))
    assert {state: got[("wiremesh_health_checks", (("state", state),))] for state in STATES} == {
        "unknown": 0,
        "healthy": 1,
        "unhealthy": 0,
    }
    reasons = {r.value: got[("wiremesh_announcements", (("reason", r.value),))] for r in Reason}
    assert {r: n for r, n in reasons.items() if n} == {
        "healthy": 1,
        "no_check": 1,
        "withdrawn_not_assigned": 1,
    }
    assert not any(name.startswith("wiremesh_health_check_runs") for name, _ in got)  # no runner given

    s.health.mine["route/lan"] = Verdict("unhealthy", 1.0)
    s.announcer.decisions["route/lan"] = Decision(True, Reason.HELD, trio.current_time() + 5)
    got = samples(await scrape(app))
    assert got[("wiremesh_health_checks", (("state", "unhealthy"),))] == 1
    assert got[("wiremesh_announcements", (("reason", "held"),))] == 1
    assert got[("wiremesh_announcements", (("reason", "no_check"),))] == 0


def scripted_runner(results: list[bool]) -> tuple[ObjectStore, HealthRunner, Any, trio.Event]:
    """A real HealthRunner on one VIP whose check returns ``results`` in turn, then hangs (the returned
    event is set then); and an app that scrapes it."""
    script = iter(results)
    done = trio.Event()

    async def probe(check: HealthCheck) -> CheckResult:
        await trio.sleep(0.01)
        ok = next(script, None)
        if ok is None:
            done.set()
            await trio.sleep_forever()
        return CheckResult(ok=bool(ok), latency=0.01, error=None if ok else "refused")

    store = ObjectStore("node-a", lambda: {"node-a"})
    check = {"type": "tcp", "target": ":80", "interval": 1, "timeout": 0.5}
    store.create(
        Kind.VIP, {"name": "web", "address": "100.96.0.1", "machines": ["node-a"], "health_check": check}, 1
    )
    runner = HealthRunner(store, ExecPolicy(), "node-a", Published(), rng=random.Random(1), probe=probe)
    app = create_app(fake_node(), token=TOKEN, store=lambda: store, checks=runner, wall_clock=lambda: 1.7e9)
    return store, runner, app, done


async def test_check_runs_and_failures_from_the_runner(clock: trio.testing.MockClock) -> None:
    """Scraped between results: every failure counted, and a check that goes away takes its series
    with it."""
    store, runner, app, done = scripted_runner([True, False, False, True, False])
    runs = ("wiremesh_health_check_runs_total", (("object", "vip/web"),))
    failures = ("wiremesh_health_check_failures_total", (("object", "vip/web"),))
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        got = samples(await scrape(app))
        assert (got[runs], got[failures]) == (0, 0)  # the check exists, nothing ran yet
        seen = []
        for n in range(1, 6):
            while runner.runs.get("vip/web", 0) < n:
                await trio.sleep(0.01)  # runs are 1 s apart: this looks once after each
            got = samples(await scrape(app))
            seen.append((got[runs], got[failures]))
        assert seen == [(1, 0), (2, 1), (3, 2), (4, 2), (5, 3)]
        await done.wait()
        store.delete(Kind.VIP, "web", 2)
        while "vip/web" in runner.states:
            await trio.sleep(0.1)
        got = samples(await scrape(app))
        assert runs not in got and failures not in got
        nursery.cancel_scope.cancel()


async def test_failures_are_exact_however_often_results_flip(clock: trio.testing.MockClock) -> None:
    """Results that flip many times between two scrapes: every failure is counted, none inferred."""
    script = [False, True, False, True, True, False, False, True, False, True, False, False, True]
    _store, runner, app, done = scripted_runner(script)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        await done.wait()
        got = samples(await scrape(app))
        assert got[("wiremesh_health_check_runs_total", (("object", "vip/web"),))] == len(script)
        assert got[("wiremesh_health_check_failures_total", (("object", "vip/web"),))] == script.count(False)
        nursery.cancel_scope.cancel()


async def scrape(app: Any) -> str:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    return response.text


# --- transit ------------------------------------------------------------------------------------------


def test_transit_peers_by_path_and_relay_switches() -> None:
    from agent.http.metrics import TransitCollector
    from transit.report import PeerReport, TransitReport

    def peer(name: str, path: str, relay: str | None = None) -> PeerReport:
        return PeerReport(name, "k", "100.64.0.9", True, "alive", None, path, relay, "", 0.0, "up", "",
                          None, None, 0.0, None, 0, 0)  # fmt: skip

    report = TransitReport(
        "a", "wm0", "userspace", "k", "100.64.0.1", True, "fd77::1", 51820, (), (),
        (peer("b", "transit via c", "c"), peer("c", "direct"), peer("d", "direct")),
        {"relay": 3, "direct": 2},
    )  # fmt: skip
    metrics = ApiMetrics()
    metrics.add_collector(TransitCollector(lambda: report))
    got = samples(metrics.render().decode())
    assert {
        p: got[("wiremesh_transit_peers", (("path", p),))] for p in ("direct", "relay", "unreachable")
    } == {
        "direct": 2,
        "relay": 1,
        "unreachable": 0,
    }
    assert got[("wiremesh_transit_relay_switches_total", (("to", "relay"),))] == 3
    assert got[("wiremesh_transit_relay_switches_total", (("to", "unreachable"),))] == 0


async def test_a_conflict_is_counted_and_shown_in_the_objects_problems() -> None:
    store = ObjectStore("node-a", lambda: frozenset({"node-a", "node-b"}))
    mine = store.create(Kind.VIP, {"name": "web", "address": "100.96.0.1"}, 1_000)
    theirs = Record(
        Kind.VIP, "web", Version(Timestamp(2_000, 0), "node-b"), {"name": "web", "address": "100.96.0.2"}
    )
    assert store.merge(theirs, 2_500)
    app = create_app(
        fake_node(), token=TOKEN, store=lambda: store, clock=lambda: 1.0, wall_clock=lambda: 1.7e9
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as c:
        text = (await c.get("/metrics")).text
        view = (await c.get("/v1/vips/web")).json()
        listed = (await c.get("/v1/vips")).json()
    got = samples(text)
    assert got[("wiremesh_object_conflicts_total", (("kind", "vip"), ("type", "concurrent_write")))] == 1
    (problem,) = view["problems"]
    assert f"written by node-a at HLC {mine.version.ts.wall_ms}.0 lost to node-b's" in problem["msg"]
    assert listed[0]["problems"] == view["problems"]
