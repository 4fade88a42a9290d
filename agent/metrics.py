"""Prometheus metrics for one agent: its own registry, a request-counting middleware, and a collector.

Each app gets its own ``CollectorRegistry`` (never the process-wide default), so several agents or test
apps in one process do not share or double-register series. Gossip, membership and object counts are
not mirrored into counters as they change: a collector reads them from their owners at scrape time,
so they can never drift from what ``/debug/gossip`` and the object API report.

The ``route`` label is the route's template (``/v1/vips/{name}``), never the raw path, and unknown
methods collapse to ``OTHER``, so a client cannot grow the series without bound.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"
MEMBER_STATES = ("alive", "suspect", "dead", "left")
# Scalar traffic counters in the gossip snapshot's "traffic" section, with their help text.
GOSSIP_COUNTERS = {
    "datagrams_in": "Datagrams received",
    "datagrams_out": "Datagrams sent",
    "bytes_in": "Bytes received in datagrams",
    "bytes_out": "Bytes sent in datagrams",
    "streams_in": "TCP streams accepted",
    "streams_out": "TCP streams opened",
    "stream_failures": "TCP streams that failed",
    "decode_failures": "Packets refused because they did not decode",
    "auth_failures": "Packets refused because they did not authenticate",
    "ignored": "Messages ignored",
}

log = logging.getLogger("wiremesh.api")


class ApiMetrics:
    """The per-app registry and the API's own request series."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "wiremesh_api_requests",
            "HTTP API requests by method, route template and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "wiremesh_api_request_duration_seconds",
            "HTTP API request handling time by method and route template",
            ["method", "route"],
            registry=self.registry,
        )

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in KNOWN_METHODS else "OTHER"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template, set on the scope by Starlette's router once it matched."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestMetricsMiddleware:
    """Counts every HTTP request by its final status, 401s and 500s included (so it sits outermost)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, clock: Callable[[], float] = time.perf_counter):
        self.app = app
        self.metrics = metrics
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before starting a response
        start = self.clock()

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.observe(scope["method"], route_template(scope), status, self.clock() - start)


class StateCollector(Collector):
    """Gossip traffic, members by state and objects by kind, read from their owners at scrape time.

    ``snapshot`` is the gossip node's debug snapshot (its ``traffic`` section holds the counters);
    ``member_states`` the state of every known member; ``object_counts`` live objects per kind.
    A provider that fails is logged and skipped: a broken part must not take the whole scrape down.
    """

    def __init__(
        self,
        snapshot: Callable[[], Mapping[str, Any]],
        member_states: Callable[[], list[str]],
        object_counts: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.member_states = member_states
        self.object_counts = object_counts

    def collect(self) -> Iterator[Metric]:
        yield from self._guarded("gossip traffic", self._gossip)
        yield from self._guarded("members", self._members)
        if self.object_counts is not None:
            yield from self._guarded("objects", self._objects)

    def _guarded(self, what: str, part: Callable[[], list[Metric]]) -> list[Metric]:
        try:
            return part()
        except Exception:
            log.exception("metrics: cannot read %s", what)
            return []

    def _gossip(self) -> list[Metric]:
        traffic = self.snapshot().get("traffic", {})
        metrics: list[Metric] = []
        for key, help_text in GOSSIP_COUNTERS.items():
            if isinstance(traffic.get(key), int):
                metrics.append(CounterMetricFamily(f"wiremesh_gossip_{key}", help_text, value=traffic[key]))
        messages = CounterMetricFamily(
            "wiremesh_gossip_messages", "Gossip messages by direction and type", labels=["direction", "type"]
        )
        message_bytes = CounterMetricFamily(
            "wiremesh_gossip_message_bytes",
            "Gossip message bytes by direction and type",
            labels=["direction", "type"],
        )
        for direction, per_type in sorted(traffic.get("per_type", {}).items()):
            for kind, counts in sorted(per_type.items()):
                messages.add_metric([direction, kind], counts.get("messages", 0))
                message_bytes.add_metric([direction, kind], counts.get("bytes", 0))
        return [*metrics, messages, message_bytes]

    def _members(self) -> list[Metric]:
        tally = Tally(self.member_states())
        gauge = GaugeMetricFamily("wiremesh_members", "Gossip members by state", labels=["state"])
        for state in sorted(set(MEMBER_STATES) | set(tally)):
            gauge.add_metric([state], tally.get(state, 0))
        return [gauge]

    def _objects(self) -> list[Metric]:
        assert self.object_counts is not None
        gauge = GaugeMetricFamily("wiremesh_objects", "Live cluster objects by kind", labels=["kind"])
        for kind, count in sorted(self.object_counts().items()):
            gauge.add_metric([kind], count)
        return [gauge]
