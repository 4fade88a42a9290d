"""Prometheus metrics for one agent: its own registry, a request-counting middleware, and collectors.

Each app gets its own ``CollectorRegistry`` (never the process-wide default), so several agents or test
apps in one process do not share or double-register series. Gossip, membership, object counts, check
verdicts, check runs and failures and announcement decisions are not mirrored into counters as they
change: a collector reads them from their owners at scrape time, so they can never drift from what
``/debug/gossip`` and the API report.

The gossip stream port's guards (real sockets only): ``wiremesh_gossip_streams_rejected_total{reason}``
counts connections closed by a guard (capacity, per_source, slow, oversize, budget, evicted), and
gauges show open connections and the bytes reserved for inbound frames against their cap.

Transit (with WireGuard on): ``wiremesh_transit_peers{path}`` counts peers by the path in use
(direct, relay, unreachable) and ``wiremesh_transit_relay_switches_total{to}`` counts every change of
a peer's path since start by the path taken, so a flapping pair shows even between scrapes.

Check and announcement series are this machine's only: every agent exports its own, so a cluster-wide
query does not count a verdict once per machine that heard of it.

The ``route`` label is the route's template (``/v1/vips/{name}``), never the raw path, and unknown
methods collapse to ``OTHER``, so a client cannot grow the series without bound.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.announce.planner import Reason
from agent.health.verdict import STATES, CheckState
from transit import TransitReport

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
    "invalid_names": "Authentic packets refused because they named a member by an invalid name",
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
        object_conflicts: Callable[[], Mapping[tuple[str, str], int]] | None = None,
        objects_refused_ahead: Callable[[], int] | None = None,
    ) -> None:
        """``object_conflicts``: conflicts recorded so far per (object kind, conflict type)."""
        self.snapshot = snapshot
        self.member_states = member_states
        self.object_counts = object_counts
        self.object_conflicts = object_conflicts
        self.objects_refused_ahead = objects_refused_ahead

    def collect(self) -> Iterator[Metric]:
        yield from _guarded("gossip traffic", self._gossip)
        yield from _guarded("gossip transport", self._transport)
        yield from _guarded("members", self._members)
        if self.object_counts is not None:
            yield from _guarded("objects", self._objects)
        if self.object_conflicts is not None:
            yield from _guarded("object conflicts", self._conflicts)

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

    def _transport(self) -> list[Metric]:
        """The stream port's guards (``transport`` section, present on real sockets only)."""
        stats = self.snapshot().get("transport")
        if not isinstance(stats, Mapping):
            return []
        rejected = CounterMetricFamily(
            "wiremesh_gossip_streams_rejected",
            "Inbound gossip TCP connections closed by a guard, by reason",
            labels=["reason"],
        )
        prefix = "streams_rejected_"
        for key, value in sorted(stats.items()):
            if key.startswith(prefix) and isinstance(value, int):
                rejected.add_metric([key.removeprefix(prefix)], value)
        if isinstance(stats.get("streams_evicted"), int):
            rejected.add_metric(["evicted"], stats["streams_evicted"])
        metrics: list[Metric] = [rejected]
        for key, name, help_text in (
            ("streams_active", "wiremesh_gossip_stream_connections", "Open inbound gossip TCP connections"),
            ("buffered_bytes", "wiremesh_gossip_stream_buffered_bytes", "Bytes reserved for inbound frames"),
            ("buffer_budget", "wiremesh_gossip_stream_buffer_budget_bytes", "Cap on those bytes"),
        ):
            if isinstance(stats.get(key), int):
                metrics.append(GaugeMetricFamily(name, help_text, value=stats[key]))
        return metrics

    def _members(self) -> list[Metric]:
        return [
            _tally_gauge(
                "wiremesh_members", "Gossip members by state", "state", MEMBER_STATES, self.member_states()
            )
        ]

    def _objects(self) -> list[Metric]:
        assert self.object_counts is not None
        gauge = GaugeMetricFamily("wiremesh_objects", "Live cluster objects by kind", labels=["kind"])
        for kind, count in sorted(self.object_counts().items()):
            gauge.add_metric([kind], count)
        if self.objects_refused_ahead is None:
            return [gauge]
        refused = CounterMetricFamily(
            "wiremesh_objects_refused_ahead",
            "Replicated object records refused because their timestamp was too far ahead of this clock",
            value=self.objects_refused_ahead(),
        )
        return [gauge, refused]

    def _conflicts(self) -> list[Metric]:
        assert self.object_conflicts is not None
        counter = CounterMetricFamily(
            "wiremesh_object_conflicts",
            "Concurrent writes to one object whose loser last-writer-wins dropped, by object kind and type",
            labels=["kind", "type"],
        )
        for (kind, type_), count in sorted(self.object_conflicts().items()):
            counter.add_metric([kind, type_], count)
        return [counter]


class CheckSource(Protocol):
    """What the metrics read of the health runner (:class:`agent.health.runner.HealthRunner`)."""

    @property
    def states(self) -> Mapping[str, CheckState]: ...

    @property
    def runs(self) -> Mapping[str, int]: ...

    @property
    def failures(self) -> Mapping[str, int]: ...

    def on_change(self, listener: Callable[[], None]) -> None: ...


class HealthCollector(Collector):
    """This machine's check verdicts by state, runs and failures per check, and announcement decisions
    by reason. ``verdict_states`` and ``reasons`` list one entry per object; ``checks`` is None when
    the agent does not run checks here (then the run and failure series are absent, not zero)."""

    def __init__(
        self,
        verdict_states: Callable[[], Iterable[str]],
        reasons: Callable[[], Iterable[str]],
        checks: CheckSource | None = None,
    ) -> None:
        self.verdict_states = verdict_states
        self.reasons = reasons
        self.checks = checks

    def collect(self) -> Iterator[Metric]:
        yield from _guarded("check verdicts", self._verdicts)
        yield from _guarded("announcements", self._announcements)
        if self.checks is not None:
            yield from _guarded("check runs", self._runs)

    def _verdicts(self) -> list[Metric]:
        return [
            _tally_gauge(
                "wiremesh_health_checks",
                "This machine's health checks by verdict state",
                "state",
                STATES,
                self.verdict_states(),
            )
        ]

    def _announcements(self) -> list[Metric]:
        return [
            _tally_gauge(
                "wiremesh_announcements",
                "This machine's announcement decisions (VIPs and routes) by reason",
                "reason",
                [r.value for r in Reason],
                self.reasons(),
            )
        ]

    def _runs(self) -> list[Metric]:
        assert self.checks is not None
        checks = self.checks
        runs = CounterMetricFamily(
            "wiremesh_health_check_runs", "Completed health check runs by object", labels=["object"]
        )
        failures = CounterMetricFamily(
            "wiremesh_health_check_failures",
            "Failed health check runs by object",
            labels=["object"],
        )
        run_counts, failure_counts = dict(checks.runs), dict(checks.failures)
        for key in sorted(checks.states):
            runs.add_metric([key], run_counts.get(key, 0))
            failures.add_metric([key], failure_counts.get(key, 0))
        return [runs, failures]


PATH_KINDS = ("direct", "relay", "unreachable")


class TransitCollector(Collector):
    """Transit peers by path type and path changes, from the driver's report at scrape time."""

    def __init__(self, report: Callable[[], TransitReport]) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        yield from _guarded("transit", self._transit)

    def _transit(self) -> list[Metric]:
        report = self.report()
        kinds = ["relay" if p.relay is not None else p.path for p in report.peers]
        peers = _tally_gauge(
            "wiremesh_transit_peers", "WireGuard peers by path in use", "path", PATH_KINDS, kinds
        )
        switches = CounterMetricFamily(
            "wiremesh_transit_relay_switches",
            "Changes of the path to a peer since start, by the path taken",
            labels=["to"],
        )
        for kind in sorted(set(PATH_KINDS) | set(report.route_changes)):
            switches.add_metric([kind], report.route_changes.get(kind, 0))
        return [peers, switches]


def _tally_gauge(
    name: str, help_text: str, label: str, known: Iterable[str], values: Iterable[str]
) -> GaugeMetricFamily:
    """A gauge counting ``values`` by label value, with every ``known`` value present (0 if none)."""
    tally = Tally(values)
    gauge = GaugeMetricFamily(name, help_text, labels=[label])
    for value in sorted(set(known) | set(tally)):
        gauge.add_metric([value], tally.get(value, 0))
    return gauge


def _guarded(what: str, part: Callable[[], list[Metric]]) -> list[Metric]:
    """A provider that fails is logged and skipped: a broken part must not take the whole scrape down."""
    try:
        return part()
    except Exception:
        log.exception("metrics: cannot read %s", what)
        return []
