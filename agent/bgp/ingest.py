"""ExaBGP's events into the routing core, without I/O: sessions up and down, updates through the
machine's import policy (the :class:`agent.routing.Rib` runs it), and the speaker going away.

The RIB knows a neighbor as a :class:`agent.routing.Peer` (address, ASN, router id, internal or
external). ExaBGP's session and update JSON names the peer's address and ASN but not its router id:
that comes from the peer's OPEN (:class:`agent.bgp.api.Open`, which arrives before "up"), else from a
lookup the owner passes in (a mesh member publishes its own over gossip); failing both the peer's IPv4
address stands in, or 0.0.0.0 for an IPv6 peer: it only breaks the last ties.

Behind a route reflector (ADD-PATH receive), each route carries its path id and the reflector's
ORIGINATOR_ID and CLUSTER_LIST; they go to the RIB as they are (path identity, the RFC 4456 decision
steps and loop checks live there).

Received GRACEFUL_SHUTDOWN (RFC 8326): a path carrying 65535:0 gets LOCAL_PREF 0 before the import
policy sees it, as the RFC asks of a receiver, so traffic moves to any other path during a peer's
drain (a policy can still set it back).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.bgp.api import (
    ApiPeer,
    EndOfRib,
    Event,
    Notification,
    Open,
    PeerState,
    RouteAttributes,
    SessionState,
    Shutdown,
    Update,
    community_value,
)
from agent.bgp.api import Origin as WireOrigin
from agent.bgp.status import SessionTable
from agent.routing import (
    GRACEFUL_SHUTDOWN,
    AsPath,
    Attributes,
    Origin,
    Peer,
    PeerKind,
    Prefix,
    Rib,
    SegmentType,
)

log = logging.getLogger("wiremesh.bgp.ingest")

_ORIGIN = {WireOrigin.IGP: Origin.IGP, WireOrigin.EGP: Origin.EGP, WireOrigin.INCOMPLETE: Origin.INCOMPLETE}
NO_ROUTER_ID = ipaddress.IPv4Address(0)

RouterIds = Callable[[str], str | None]


def routing_attributes(attrs: RouteAttributes, next_hop: str | None) -> Attributes:
    """ExaBGP's parsed attributes (and the route's next hop) as the routing core's."""
    segments: list[tuple[SegmentType, tuple[int, ...]]] = []
    if attrs.as_path:
        segments.append((SegmentType.AS_SEQUENCE, attrs.as_path))
    segments += [(SegmentType.AS_SET, s) for s in attrs.as_sets]
    communities = frozenset(community_value(c) for c in attrs.communities)
    local_pref = attrs.local_pref
    if GRACEFUL_SHUTDOWN in communities:
        local_pref = 0
    return Attributes(
        next_hop=ipaddress.ip_address(next_hop) if next_hop is not None else None,
        as_path=AsPath(tuple(segments)),
        origin=_ORIGIN[attrs.origin],
        med=attrs.med,
        local_pref=local_pref,
        communities=communities,
        large_communities=frozenset(attrs.large_communities),
        originator_id=ipaddress.IPv4Address(attrs.originator_id) if attrs.originator_id is not None else None,
        cluster_list=tuple(ipaddress.IPv4Address(c) for c in attrs.cluster_list),
    )


@dataclass(frozen=True, slots=True)
class IngestStats:
    updates: int = 0
    announced: int = 0
    withdrawn: int = 0
    skipped: int = 0  # routes with no usable next hop


class Ingest:
    """Feeds one :class:`Rib` and one :class:`SessionTable` from supervisor events."""

    def __init__(self, rib: Rib, sessions: SessionTable, router_ids: RouterIds | None = None) -> None:
        self.rib = rib
        self.sessions = sessions
        self._router_ids = router_ids
        self._peers: dict[str, Peer] = {}  # peer address -> the RIB's peer for its current session
        self._opened: dict[str, str] = {}  # peer address -> router id from its latest OPEN
        self._updates = self._announced = self._withdrawn = self._skipped = 0

    @property
    def stats(self) -> IngestStats:
        return IngestStats(self._updates, self._announced, self._withdrawn, self._skipped)

    def peer(self, address: str) -> Peer | None:
        return self._peers.get(address)

    def _router_id(self, address: str) -> ipaddress.IPv4Address:
        known = self._opened.get(address)
        if known is None and self._router_ids is not None:
            known = self._router_ids(address)
        if known is not None:
            try:
                return ipaddress.IPv4Address(known)
            except ValueError:
                pass
        ip = ipaddress.ip_address(address)
        return ip if isinstance(ip, ipaddress.IPv4Address) else NO_ROUTER_ID

    def _up(self, wire: ApiPeer) -> Peer:
        kind = PeerKind.INTERNAL if wire.asn == wire.local_asn else PeerKind.EXTERNAL
        peer = Peer(ipaddress.ip_address(wire.address), wire.asn, self._router_id(wire.address), kind)
        if self._peers.get(wire.address) != peer:
            self._down(wire.address)
            self.rib.peer_up(peer)
            self._peers[wire.address] = peer
        return peer

    def _down(self, address: str) -> None:
        peer = self._peers.pop(address, None)
        if peer is not None:
            self.rib.peer_down(peer)

    def apply(self, event: Event, now: float) -> None:
        """One event from ExaBGP (``now``: the caller's clock, for path ages and session times)."""
        self.sessions.apply(event, now)
        if isinstance(event, Shutdown):
            self.speaker_down()
        elif isinstance(event, PeerState):
            if event.state is SessionState.UP:
                self._down(event.peer.address)  # a new session: whatever the old one sent is gone
                self._up(event.peer)
            elif event.state is SessionState.DOWN:
                self._down(event.peer.address)
        elif isinstance(event, Update):
            self._update(event, now)
        elif isinstance(event, Open):
            self._opened[event.peer.address] = event.router_id
        elif isinstance(event, EndOfRib | Notification):
            pass  # the session table keeps what the CLI shows of them

    def _update(self, event: Update, now: float) -> None:
        peer = self._peers.get(event.peer.address) or self._up(event.peer)  # "up" may have been missed
        self._updates += 1
        if event.withdrawn:
            self.rib.withdraw_many(peer, (Prefix.parse(p) for p in event.withdrawn))
            self._withdrawn += len(event.withdrawn)
        if event.withdrawn_paths:
            by_id: dict[int, list[Prefix]] = {}
            for text, path_id in event.withdrawn_paths:
                by_id.setdefault(path_id, []).append(Prefix.parse(text))
            for path_id, prefixes in by_id.items():
                self.rib.withdraw_many(peer, prefixes, path_id)
            self._withdrawn += len(event.withdrawn_paths)
        groups: dict[tuple[str | None, RouteAttributes, int], list[Prefix]] = {}
        for route in event.announced:
            key = (route.next_hop, route.attributes, route.path_id or 0)
            groups.setdefault(key, []).append(Prefix.parse(route.prefix))
        for (next_hop, wire, path_id), prefixes in groups.items():
            if next_hop is None:
                self._skipped += len(prefixes)  # nothing to forward to: not a usable path
                continue
            self.rib.announce_many(peer, prefixes, routing_attributes(wire, next_hop), now, path_id=path_id)
            self._announced += len(prefixes)

    def speaker_down(self, reason: str | None = None, now: float = 0.0) -> None:
        """ExaBGP is gone: every session went with it (``reason`` is recorded as their last error)."""
        if reason is not None:
            self.sessions.speaker_down(reason, now)
        for address in list(self._peers):
            self._down(address)

    def removed(self, addresses: Iterable[str]) -> None:
        """Neighbors taken out of ExaBGP's config: their sessions end without a "down" event."""
        for address in addresses:
            self._down(address)
