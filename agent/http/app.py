"""The agent's HTTP API: membership, health, the gossip debug snapshot, metrics and (with a store) the
cluster objects and every machine's check verdicts (:mod:`agent.http.objects`), served by hypercorn on
Trio. Every request but ``GET /healthz`` needs the bearer token (:mod:`agent.http.auth`); ``GET /metrics``
is Prometheus text (:mod:`agent.http.metrics`); every error is
``{"error": ..., "detail": [{"loc": [...], "msg": ...}]}``.

Endpoints are ``async def`` on purpose: FastAPI runs plain ``def`` endpoints in worker threads, where
the gossip node (a single-threaded Trio object) and ``trio.current_time`` must not be touched.

Member ``meta`` is always base64: it is opaque bytes (usually msgpack), so one encoding keeps clients
simple. ``since`` in the gossip core is on the Trio clock, which means nothing to a client, so the API
reports ``age_seconds`` and a wall-clock ``since`` (RFC 3339) derived from it.
"""

from __future__ import annotations

import base64
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Protocol, cast

import trio
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from hypercorn.typing import ASGIFramework
from pydantic import BaseModel

from agent.announce.status import NoStatus, StatusProvider
from agent.cluster.store import ObjectStore
from agent.config.loader import HostPort, parse_listen
from agent.http.auth import OPEN_PATHS, BearerAuthMiddleware
from agent.http.bgp import SpeakerView, create_bgp_router
from agent.http.errors import CatchAllMiddleware, install_error_handlers
from agent.http.keys import KeyRotator, create_keys_router
from agent.http.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from agent.http.metrics import (
    ApiMetrics,
    CheckSource,
    HealthCollector,
    RequestMetricsMiddleware,
    StateCollector,
    TransitCollector,
)
from agent.http.objects import create_objects_router, nothing_to_wait_for, object_counts
from agent.http.peers import PeersSource, create_peers_router, with_reachability
from agent.http.ui import Ui, UiSessionMiddleware, compile_templates, ui_open_paths, ui_router
from agent.logs import rfc3339
from common.address import format_address
from gossip import MemberInfo

log = logging.getLogger("wiremesh.api")


class NodeView(Protocol):
    """What the API reads from the gossip node; tests pass a fake."""

    @property
    def name(self) -> str: ...

    def members(self) -> list[MemberInfo]: ...

    def snapshot(self) -> dict[str, Any]: ...


class Member(BaseModel):
    name: str
    addr: str
    state: str
    incarnation: int
    since: str
    age_seconds: float
    meta: str


class Health(BaseModel):
    status: str
    name: str


def member_view(member: MemberInfo, now: float, wall_now: float) -> Member:
    age = max(0.0, now - member.since)
    return Member(
        name=member.name,
        addr=format_address(member.addr),
        state=str(member.state),
        incarnation=member.incarnation,
        since=rfc3339(wall_now - age),
        age_seconds=round(age, 3),
        meta=base64.b64encode(member.meta).decode(),
    )


def create_app(
    node: NodeView,
    *,
    token: str,
    store: Callable[[], ObjectStore] | None = None,
    committed: Callable[[], Awaitable[None]] | None = None,
    status: StatusProvider | None = None,
    checks: CheckSource | None = None,
    peers: PeersSource | None = None,
    bgp: SpeakerView | None = None,
    keys: KeyRotator | None = None,
    clock: Callable[[], float] = trio.current_time,
    wall_clock: Callable[[], float] = time.time,
) -> FastAPI:
    """``clock`` must be the clock the gossip core is driven with, since member ages are measured on it.

    ``token`` is the bearer token every request but ``GET /healthz`` must carry. The object endpoints
    are there when a ``store`` is given (called per request, so it may be opened after the app is built);
    ``committed`` waits until the store's writes so far are on disk, so a write's 2xx means durable.
    ``status`` (health verdicts and announcement decisions) feeds the object views and the metrics;
    ``checks``, this machine's health runner, adds check run and failure counts to the metrics.
    ``peers``, the transit driver when WireGuard is on, serves ``/v1/peers`` (:mod:`agent.http.peers`).
    ``keys``, the gossip node, lists and rotates the keyring at ``/v1/keys`` (:mod:`agent.http.keys`).
    Middleware, outermost first: request metrics (so 401s and 500s are counted), the catch-all that turns
    a bug into a clean 500, the web UI's session cookie (:mod:`agent.http.ui.session`), then auth.
    """
    app = FastAPI(title="wiremesh agent", version="0.1.0")
    live: StatusProvider = status if status is not None else NoStatus()
    metrics = ApiMetrics()
    metrics.add_collector(
        StateCollector(
            node.snapshot,
            lambda: [str(m.state) for m in node.members()],
            None if store is None else object_counts(store),
            None if store is None else (lambda: dict(store().conflict_counts)),
            None if store is None else (lambda: store().refused_ahead),
        )
    )
    metrics.add_collector(
        HealthCollector(
            lambda: [v.state for v in live.verdicts().get(node.name, {}).values()],
            lambda: [d.reason.value for d in live.all_decisions()[1].get(node.name, {}).values()],
            checks,
        )
    )
    if peers is not None:
        metrics.add_collector(TransitCollector(peers.report))
    install_error_handlers(app)
    # The web UI's login page and assets are open; its session cookie stands in for the token on the UI's
    # own paths only (agent.http.ui.session), so its middleware wraps the auth middleware.
    app.add_middleware(BearerAuthMiddleware, token=token, open_paths=OPEN_PATHS | ui_open_paths())
    app.add_middleware(UiSessionMiddleware, token=token)
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Health:
        """Liveness, for probes: the only endpoint without auth, so it says nothing but the name."""
        return Health(status="ok", name=node.name)

    @app.get("/v1/health")
    async def health() -> Health:
        return Health(status="ok", name=node.name)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=METRICS_CONTENT_TYPE)

    if store is not None:
        app.include_router(
            create_objects_router(
                store, live, members=node.members, wall_clock=wall_clock, committed=committed
            )
        )

    # The RIB and BGP neighbors (agent.http.bgp); without a speaker they answer 404 saying BGP is off.
    app.include_router(
        create_bgp_router(bgp, clock=clock, wall_clock=wall_clock, machine=node.name, members=node.members)
    )

    @app.get("/v1/members")
    async def members() -> list[Member]:
        now, wall_now = clock(), wall_clock()
        return [member_view(m, now, wall_now) for m in sorted(node.members(), key=lambda m: m.name)]

    app.include_router(create_peers_router(peers, wall_clock=wall_clock))
    app.include_router(create_keys_router(keys))

    # The web UI at /ui (agent.http.ui), over the same sources as the JSON endpoints. Its templates are
    # not compiled here but by warm_up (blocking, ~0.3 s), which the runner calls in a worker thread
    # once the API is up: start-up need not wait for it, and no request need compile one.
    ui = Ui(
        node,
        token=token,
        store=store,
        status=live,
        checks=checks,
        peers=peers,
        bgp=bgp,
        clock=clock,
        wall_clock=wall_clock,
        committed=committed or nothing_to_wait_for,
    )
    app.include_router(ui_router(ui))
    app.state.warm_up = partial(compile_templates, ui.env)

    @app.get("/debug/gossip")
    async def debug_gossip() -> dict[str, Any]:
        """The gossip snapshot; each member's entry also shows its transit reachability vector."""
        return with_reachability(node.snapshot(), node.members())

    return app


async def _serve_shielded(
    app: FastAPI,
    config: HypercornConfig,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    # Shielded so that cancelling serve_api becomes hypercorn's own graceful shutdown (via ``stop``)
    # instead of tearing its tasks down mid-response; graceful_timeout bounds how long that takes.
    with trio.CancelScope(shield=True):
        # Starlette's ASGI signature is looser than hypercorn's protocol; the app is a valid ASGI 3 app.
        asgi_app = cast(ASGIFramework, app)
        await serve(asgi_app, config, shutdown_trigger=stop.wait, task_status=task_status)


def bind_listener(hp: HostPort) -> socket.socket:
    """Bound here rather than by hypercorn so a taken port is one plain OSError naming the address."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            hp.host, hp.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {hp} for the HTTP API: {exc.strerror}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(sockaddr)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {hp} for the HTTP API: {exc.strerror}") from None
    return sock


async def serve_api(
    app: FastAPI,
    listen: str,
    *,
    graceful_timeout: float = 2.0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``listen`` (``host:port``, port 0 for any) until cancelled; reports the bound port.

    Cancelling it is a graceful shutdown: open requests get up to ``graceful_timeout`` to finish.
    """
    sock = bind_listener(parse_listen(listen))
    port = int(sock.getsockname()[1])
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (listens on, closes) the socket from here
    config.graceful_timeout = graceful_timeout
    config.errorlog = log
    config.accesslog = None
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(_serve_shielded, app, config, stop)
            task_status.started(port)
            await trio.sleep_forever()
        finally:
            stop.set()
