"""The peers view (``GET /v1/peers``, ``wiremesh peers``) as plain data, built by the driver.

Times are wall-clock seconds (Unix time): the driver converts from the Trio clock, so the API needs no
clock of its own to show them. ``rtt_ms`` is the round trip of the path in use: the measured direct RTT
when direct, and the relay's score (RTT to the relay plus the relay's RTT to the peer, from the
published vectors) when in transit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from transit.reachability import ReachRoute, RouteKind


def path_text(route: ReachRoute) -> str:
    """``direct``, ``transit via R`` or ``unreachable``: the peers view's path column."""
    if route.kind is RouteKind.RELAY:
        return f"transit via {route.relay}"
    return route.kind.value


@dataclass(frozen=True, slots=True)
class PeerReport:
    name: str
    public_key: str
    mesh_address: str
    holds_address: bool  # False: another member holds the address this peer claims
    member: str  # gossip state: alive, suspect, dead, left
    endpoint: str | None  # what the device uses now (it may have learned a roamed one)
    path: str  # see path_text
    relay: str | None
    reason: str  # why this path (relay selection's own words)
    since: float  # wall clock: when this path was taken
    direct: str  # the direct path's monitor state: pending, up, down
    direct_reason: str
    rtt_ms: float | None
    direct_rtt_ms: float | None
    loss: float  # direct path, share of recent probes lost
    last_handshake: float | None  # wall clock of the direct entry's last handshake; None: never
    rx_bytes: int
    tx_bytes: int


@dataclass(frozen=True, slots=True)
class TransitReport:
    name: str
    interface: str
    backend: str
    public_key: str
    mesh_address: str
    holds_address: bool
    probe_address: str
    listen_port: int
    endpoints: tuple[str, ...]
    errors: tuple[str, ...]  # address conflicts, refused members, device trouble
    peers: tuple[PeerReport, ...]
    # Changes of the route to a peer since start, by the kind taken (direct, relay, unreachable): a
    # counter for the metrics, so flapping shows even between scrapes.
    route_changes: Mapping[str, int] = field(default_factory=dict)


__all__ = ["PeerReport", "TransitReport", "path_text"]
