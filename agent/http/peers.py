"""``GET /v1/peers``: this machine's WireGuard peers and the path to each (the seed's Peers tab), and the
reachability vectors shown by ``GET /debug/gossip``.

The path is ``direct``, ``transit via R`` or ``unreachable``; ``reason`` says why in relay selection's
own words, ``since`` when it was taken. Times are RFC 3339; ages are seconds. On a machine without
WireGuard (``[wireguard] enabled = false``) the endpoint answers 404 saying so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from agent.http.errors import ErrorBody
from agent.logs import rfc3339
from gossip import MemberInfo, WireError
from transit import REACH, REACH_KEY, PeerReport, TransitReport


class PeersSource(Protocol):
    """The transit driver, as the API sees it."""

    def report(self) -> TransitReport: ...


class PeerView(BaseModel):
    name: str
    public_key: str
    mesh_address: str
    holds_address: bool
    member: str
    endpoint: str | None
    path: str
    relay: str | None
    reason: str
    since: str
    for_seconds: float
    direct: str
    direct_reason: str
    rtt_ms: float | None
    direct_rtt_ms: float | None
    loss: float
    last_handshake: str | None
    handshake_age_seconds: float | None
    rx_bytes: int
    tx_bytes: int


class PeersView(BaseModel):
    name: str
    interface: str
    backend: str
    public_key: str
    mesh_address: str
    holds_address: bool
    probe_address: str
    listen_port: int
    endpoints: list[str]
    errors: list[str]
    peers: list[PeerView]


def peer_view(p: PeerReport, wall_now: float) -> PeerView:
    shake = p.last_handshake
    return PeerView(
        name=p.name,
        public_key=p.public_key,
        mesh_address=p.mesh_address,
        holds_address=p.holds_address,
        member=p.member,
        endpoint=p.endpoint,
        path=p.path,
        relay=p.relay,
        reason=p.reason,
        since=rfc3339(p.since),
        for_seconds=round(max(0.0, wall_now - p.since), 3),
        direct=p.direct,
        direct_reason=p.direct_reason,
        rtt_ms=p.rtt_ms,
        direct_rtt_ms=p.direct_rtt_ms,
        loss=p.loss,
        last_handshake=None if shake is None else rfc3339(shake),
        handshake_age_seconds=None if shake is None else round(max(0.0, wall_now - shake), 3),
        rx_bytes=p.rx_bytes,
        tx_bytes=p.tx_bytes,
    )


def peers_view(r: TransitReport, wall_now: float) -> PeersView:
    return PeersView(
        name=r.name,
        interface=r.interface,
        backend=r.backend,
        public_key=r.public_key,
        mesh_address=r.mesh_address,
        holds_address=r.holds_address,
        probe_address=r.probe_address,
        listen_port=r.listen_port,
        endpoints=list(r.endpoints),
        errors=list(r.errors),
        peers=[peer_view(p, wall_now) for p in r.peers],
    )


def create_peers_router(
    source: PeersSource | None, *, wall_clock: Callable[[], float] = time.time
) -> APIRouter:
    router = APIRouter(tags=["transit"])

    @router.get("/v1/peers", responses={404: {"model": ErrorBody, "description": "WireGuard is off here"}})
    async def peers() -> PeersView:
        """Every WireGuard peer of this machine: mesh address, endpoint, path, RTT, loss, handshake,
        bytes, and since when the path is what it is."""
        if source is None:
            raise HTTPException(404, "WireGuard is not enabled on this machine ([wireguard] enabled = false)")
        return peers_view(source.report(), wall_clock())

    return router


def reachability(member: MemberInfo) -> dict[str, Any] | None:
    """A member's published reachability vector, readable: per peer ``direct`` up/down, ``rtt_ms`` and
    the ``route`` it uses; None if it publishes none (no WireGuard)."""
    entry = member.kv.get(REACH_KEY)
    if entry is None or entry[1] is None:
        return None
    try:
        vector = REACH.parse(entry[1])
    except WireError as exc:
        return {"error": str(exc)}
    return {
        peer: {"direct": "up" if e.up else "down", "rtt_ms": e.rtt_ms, "route": str(e.route)}
        for peer, e in sorted(vector.entries.items())
    }


def with_reachability(snapshot: dict[str, Any], members: Iterable[MemberInfo]) -> dict[str, Any]:
    """The gossip debug snapshot with each member's reachability vector added to its entry."""
    vectors = {m.name: reachability(m) for m in members}
    for entry in snapshot.get("members", []):
        if isinstance(entry, dict) and vectors.get(entry.get("name", "")) is not None:
            entry["reachability"] = vectors[entry["name"]]
    return snapshot


__all__ = [
    "PeerView",
    "PeersSource",
    "PeersView",
    "create_peers_router",
    "peer_view",
    "peers_view",
    "reachability",
    "with_reachability",
]
