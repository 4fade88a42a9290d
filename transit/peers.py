"""Who this machine's WireGuard peers are, and which of a peer's endpoints to configure (sans-I/O).

**Peers.** Every live member (alive or suspect) that publishes transit metadata is a peer. A member
that goes dead or leaves stays one for ``grace`` seconds with the metadata it last had: a reboot or a
short partition does not tear down and rebuild its entry, its route and its monitor. After that it is
removed. Members whose metadata does not decode, and members that share a public key (a cloned state
directory: WireGuard keeps one peer per key, so none of them can be configured), are not peers; they
are listed in :attr:`PeerSet.errors` so the operator sees why.

**Mesh addresses.** A peer's mesh address is routed to it only if its claim holds
(:func:`transit.meta.resolve_claims`, live members only). A peer kept for its grace period holds its
address unless a live member claims it meanwhile (among such peers, the same earliest-claim rule).

**Endpoints.** A peer publishes its endpoints best first. :class:`EndpointChooser` configures the
first one, and moves to the next when no handshake has happened for ``retry`` seconds since it was set
(the address may be one this machine cannot reach), and re-sets it when a handshake that did happen
has gone stale (older than WireGuard's 180 s session lifetime: the peer roamed away, or a NAT mapping
expired). It says to enforce an endpoint only when it wants
to change what the device has: WireGuard follows a roaming peer by itself, and re-setting a configured
endpoint every round would undo that (see :mod:`transit.wgdevice`). A new set of endpoints in the
metadata is followed at once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gossip import MemberInfo
from transit.endpoint import Endpoint
from transit.keys import PublicKey
from transit.meta import ClaimConflict, MeshView, TransitMeta, mesh_view


@dataclass(frozen=True, slots=True)
class MeshPeer:
    """Another machine of the mesh as transit sees it (the BGP RIB's peer is
    :class:`agent.routing.Peer`)."""

    name: str
    meta: TransitMeta
    live: bool  # False: dead or left, kept for the grace period
    holds_address: bool  # its mesh address is routed to it


@dataclass(frozen=True, slots=True)
class PeerSet:
    """The outcome of one :meth:`PeerBook.update`."""

    peers: Mapping[str, MeshPeer]
    view: MeshView  # the live members' records, this machine's own included
    holds_own_address: bool
    conflict: ClaimConflict | None  # a conflict this machine is part of (holder or refused)
    errors: Mapping[str, str] = field(default_factory=dict)  # member -> why it is not a peer

    @property
    def live(self) -> list[str]:
        return sorted(n for n, p in self.peers.items() if p.live)


@dataclass(slots=True)
class _Known:
    meta: TransitMeta
    last_live: float


class PeerBook:
    """Tracks members across updates for the grace period; everything else is recomputed each time."""

    def __init__(self, me: str, my_key: PublicKey, grace: float) -> None:
        self.me = me
        self.my_key = my_key
        self.grace = grace
        self._known: dict[str, _Known] = {}

    def next_deadline(self) -> float:
        """When a member in its grace period is due for removal."""
        return min((k.last_live + self.grace for k in self._known.values()), default=math.inf)

    def update(self, members: Iterable[MemberInfo], now: float) -> PeerSet:
        view = mesh_view(members)
        errors = {name: f"transit metadata refused: {why}" for name, why in view.errors.items()}
        for name, meta in view.metas.items():
            if name != self.me and meta.public_key == self.my_key:
                errors[name] = f"publishes this machine's own public key {self.my_key}: not configured"
        for key, names in view.shared_keys.items():
            for name in names:
                if name != self.me and name not in errors:
                    errors[name] = (
                        f"public key {key} is also published by {', '.join(n for n in names if n != name)} "
                        "(a copied state directory?): not configured until one of them gets a new key"
                    )
        for name, meta in view.metas.items():
            if name != self.me:
                self._known[name] = _Known(meta, now)
        for name in [
            n for n, k in self._known.items() if n not in view.metas and now - k.last_live >= self.grace
        ]:
            del self._known[name]
        holders = dict(view.claims.holders)
        # Members in their grace period hold what no live member claims, by the same rule among them.
        gone = sorted(
            (k.meta.claimed_at_ms, n, k.meta.mesh_address)
            for n, k in self._known.items()
            if n not in view.metas and n not in errors
        )
        for _, name, addr in gone:
            holders.setdefault(addr, name)
        peers: dict[str, MeshPeer] = {}
        for name, known in sorted(self._known.items()):
            if name not in errors:
                live = name in view.metas
                holds = holders.get(known.meta.mesh_address) == name
                peers[name] = MeshPeer(name, known.meta, live, holds)
        conflict = view.claims.conflict_for(self.me)
        holds_own = conflict is None or conflict.holder.name == self.me
        return PeerSet(peers, view, holds_own, conflict, errors)


@dataclass(slots=True)
class _Choice:
    endpoints: tuple[Endpoint, ...]
    index: int
    set_at: float | None  # when we last enforced it; None: never (enforce at the next round)


class EndpointChooser:
    """The endpoint policy in the module docstring, one record per peer."""

    def __init__(self, retry: float = 15.0, stale: float = 185.0) -> None:
        self.retry = retry
        self.stale = stale
        self._choices: dict[str, _Choice] = {}

    def current(self, peer: str) -> Endpoint | None:
        c = self._choices.get(peer)
        return c.endpoints[c.index] if c is not None and c.endpoints else None

    def forget(self, keep: Iterable[str]) -> None:
        wanted = set(keep)
        for name in [n for n in self._choices if n not in wanted]:
            del self._choices[name]

    def choose(
        self,
        peer: str,
        endpoints: tuple[Endpoint, ...],
        *,
        on_device: bool,
        handshake: float | None,
        now: float,
    ) -> Endpoint | None:
        """The endpoint to write to the device this round, or None to leave the device's alone.

        ``handshake`` is the time of the peer's last handshake on the same clock as ``now`` (None:
        never); ``on_device`` is False for a peer the device does not have (new, or a restarted device).
        """
        c = self._choices.get(peer)
        if c is None or c.endpoints != endpoints:
            c = self._choices[peer] = _Choice(endpoints, 0, None)
        if not endpoints:
            return None
        if c.set_at is not None and on_device:
            recent = handshake is not None and now - handshake < self.stale
            if recent or now - c.set_at < self.retry:
                return None
            if handshake is None or handshake < c.set_at:  # nothing since we set it: try the next one
                c.index = (c.index + 1) % len(endpoints)
        c.set_at = now
        return endpoints[c.index]


__all__ = ["EndpointChooser", "MeshPeer", "PeerBook", "PeerSet"]
