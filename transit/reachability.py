"""The reachability vector: what this machine measured on its direct paths, shared over gossip.

Every machine publishes one node-local gossip value, ``transit.reach``: per peer with a verdict, the
direct path up or down, its smoothed RTT in whole milliseconds, and the route this machine currently
uses to that peer (direct, a relay, or none). Relay selection reads only these published vectors (its
own included), which is what lets both ends of a pair compute the same relay; the route field lets the
follower of a pair converge on the leader's choice (see :mod:`transit.relay`).

Wire form (:data:`REACH`, framed by :mod:`gossip.codec`), msgpack: ``[1, {peer: [flags, rtt_ms]}]``
or ``[flags, rtt_ms, relay]`` for a relayed peer; flags bit 0 = direct up, bit 1 = unreachable (no
route). Peers without a verdict yet are left out. Keys are sorted so an unchanged vector encodes to
identical bytes (gossip drops an unchanged value). The gossip value's own version orders updates; the
leading 1 is the format version.

Publishing every RTT wobble would make every machine re-gossip its vector every second, so
:class:`VectorPublisher` sends state and route changes at once (the relay switch depends on them) and
RTT-only changes only when large and at most every ``rtt_interval`` seconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gossip import Codec, Framing, WireError
from transit.pathmon import PathState, PathStatus

REACH_KEY = "transit.reach"
REACH_VERSION = 1
MAX_RTT_MS = 65535
MAX_PEERS = 4096
MAX_NAME = 255
_FLAG_UP = 1
_FLAG_UNREACHABLE = 2


class RouteKind(StrEnum):
    DIRECT = "direct"
    RELAY = "relay"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True, slots=True)
class ReachRoute:
    """How this machine reaches a peer: directly, through ``relay``, or not at all (not a BGP route,
    nor the cluster's route object)."""

    kind: RouteKind
    relay: str | None = None

    def __post_init__(self) -> None:
        if (self.kind is RouteKind.RELAY) != (self.relay is not None):
            raise ValueError("a relay route names its relay, and only a relay route does")

    @classmethod
    def via(cls, relay: str) -> ReachRoute:
        return cls(RouteKind.RELAY, relay)

    def __str__(self) -> str:
        return f"via {self.relay}" if self.kind is RouteKind.RELAY else self.kind.value


DIRECT = ReachRoute(RouteKind.DIRECT)
UNREACHABLE = ReachRoute(RouteKind.UNREACHABLE)


@dataclass(frozen=True, slots=True)
class PeerReach:
    up: bool
    rtt_ms: int = 0
    route: ReachRoute = DIRECT

    def __post_init__(self) -> None:
        if not 0 <= self.rtt_ms <= MAX_RTT_MS:
            raise ValueError(f"rtt_ms must be in 0..{MAX_RTT_MS}")


@dataclass(frozen=True, slots=True)
class ReachVector:
    """One machine's published view; treat ``entries`` as read-only."""

    entries: Mapping[str, PeerReach] = field(default_factory=dict)

    def get(self, peer: str) -> PeerReach | None:
        return self.entries.get(peer)


def rtt_to_ms(rtt: float | None) -> int:
    """Seconds to whole ms, rounded up (a 0.3 ms LAN path is 1 ms, never free) and capped."""
    if rtt is None or not math.isfinite(rtt) or rtt <= 0:
        return 0
    return min(MAX_RTT_MS, max(1, math.ceil(rtt * 1000.0)))


def vector_from_paths(paths: Mapping[str, PathStatus], routes: Mapping[str, ReachRoute]) -> ReachVector:
    """This machine's vector from its monitors' statuses and its current routes (DIRECT if absent)."""
    entries: dict[str, PeerReach] = {}
    for peer, status in paths.items():
        if status.state is PathState.PENDING:
            continue
        up = status.state is PathState.UP
        entries[peer] = PeerReach(up, rtt_to_ms(status.rtt) if up else 0, routes.get(peer, DIRECT))
    return ReachVector(entries)


def _vector_body(vector: ReachVector) -> list[Any]:
    body: dict[str, list[Any]] = {}
    for peer in sorted(vector.entries):
        e = vector.entries[peer]
        unreachable = e.route.kind is RouteKind.UNREACHABLE
        flags = (_FLAG_UP if e.up else 0) | (_FLAG_UNREACHABLE if unreachable else 0)
        body[peer] = [flags, e.rtt_ms] if e.route.relay is None else [flags, e.rtt_ms, e.route.relay]
    return [body]


def _int(value: Any, what: str, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= hi:
        raise WireError(f"{what}: expected an integer in 0..{hi}")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME:
        raise WireError(f"{what}: expected a name of 1..{MAX_NAME} characters")
    return value


def _vector_from_body(fields: list[Any]) -> ReachVector:
    """A peer's vector; any deviation raises :class:`WireError` (peers are not trusted)."""
    if len(fields) != 1:
        raise WireError("expected [version, entries]")
    body = fields[0]
    if not isinstance(body, dict) or len(body) > MAX_PEERS:
        raise WireError(f"entries: expected a map of at most {MAX_PEERS} peers")
    entries: dict[str, PeerReach] = {}
    for key, item in body.items():
        peer = _name(key, "peer")
        if not isinstance(item, list) or len(item) not in (2, 3):
            raise WireError(f"{peer}: expected [flags, rtt_ms] or [flags, rtt_ms, relay]")
        flags = _int(item[0], f"{peer}: flags", _FLAG_UP | _FLAG_UNREACHABLE)
        rtt = _int(item[1], f"{peer}: rtt_ms", MAX_RTT_MS)
        if len(item) == 3:
            relay = _name(item[2], f"{peer}: relay")
            if flags & _FLAG_UNREACHABLE or relay == peer:
                raise WireError(f"{peer}: a relay route cannot be unreachable or via the peer itself")
            route = ReachRoute.via(relay)
        else:
            route = UNREACHABLE if flags & _FLAG_UNREACHABLE else DIRECT
        entries[peer] = PeerReach(bool(flags & _FLAG_UP), rtt, route)
    return ReachVector(entries)


# The ``transit.reach`` value; declared with the agent's other published values in agent.published.
REACH = Codec(REACH_KEY, REACH_VERSION, Framing.ARRAY, _vector_body, _vector_from_body, strict_map_key=False)


@dataclass(frozen=True)
class PublishConfig:
    rtt_interval: float = 5.0  # RTT-only changes go out at most this often
    rtt_change_ratio: float = 0.25  # ... and only when an RTT moved by this share
    rtt_change_ms: int = 5  # ... and by at least this much


class VectorPublisher:
    """Decides when this machine's vector is worth re-gossiping (see the module docstring)."""

    def __init__(self, config: PublishConfig | None = None) -> None:
        self.config = config or PublishConfig()
        self._last: ReachVector | None = None
        self._last_at = -math.inf

    def _rtt_moved(self, old: ReachVector, new: ReachVector) -> bool:
        c = self.config
        for peer, e in new.entries.items():
            o = old.entries[peer]
            delta = abs(e.rtt_ms - o.rtt_ms)
            if delta >= c.rtt_change_ms and delta >= c.rtt_change_ratio * max(o.rtt_ms, 1):
                return True
        return False

    def offer(self, vector: ReachVector, now: float) -> bytes | None:
        """The bytes to publish now, or None when the last published vector is still good enough."""
        last = self._last
        structural = last is None or {p: (e.up, e.route) for p, e in vector.entries.items()} != {
            p: (e.up, e.route) for p, e in last.entries.items()
        }
        if not structural:
            assert last is not None
            if now - self._last_at < self.config.rtt_interval or not self._rtt_moved(last, vector):
                return None
        self._last, self._last_at = vector, now
        return REACH.encode(vector)


__all__ = [
    "DIRECT",
    "REACH",
    "REACH_KEY",
    "REACH_VERSION",
    "UNREACHABLE",
    "PeerReach",
    "PublishConfig",
    "ReachRoute",
    "ReachVector",
    "RouteKind",
    "VectorPublisher",
    "rtt_to_ms",
    "vector_from_paths",
]
