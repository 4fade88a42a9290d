"""GET /metrics: Prometheus text that parses, with gossip, member, object and request series."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agent.api import create_app
from agent.metrics import ApiMetrics, StateCollector
from agent.store import ObjectStore
from gossip.events import MemberInfo, MemberState

TOKEN = "metrics-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


class FakeNode:
    name = "node-a"

    def members(self) -> list[MemberInfo]:
        return [
            MemberInfo("node-a", ("127.0.0.1", 1), 1, MemberState.ALIVE, 0.0, b""),
            MemberInfo("node-b", ("127.0.0.1", 2), 1, MemberState.ALIVE, 0.0, b""),
            MemberInfo("node-c", ("127.0.0.1", 3), 1, MemberState.SUSPECT, 0.0, b""),
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
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


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_text_parses_and_counts() -> None:
    store = ObjectStore("node-a", lambda: frozenset({"node-a", "node-b", "node-c"}))
    app = create_app(
        FakeNode(), token=TOKEN, store=lambda: store, clock=lambda: 1.0, wall_clock=lambda: 1.7e9
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
