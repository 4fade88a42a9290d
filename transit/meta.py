"""What a machine tells the mesh about itself in gossip metadata, and who may use which mesh address.

**Metadata.** Gossip metadata is one small blob per member (512 bytes at most) that travels with every
alive message, so it holds only what changes rarely: the WireGuard public key, the mesh address, when
this machine first claimed that address, and its UDP endpoints in order of preference (the configured
public endpoint first, then local addresses). The wire form is a msgpack array whose first element is
the format version (:data:`META`, framed by :mod:`gossip.codec`)::

    [1, public_key(32 bytes), mesh_address(4|16 bytes), claimed_at_ms, [[ip(4|16 bytes), port], ...],
     flags]

``flags`` (optional, appended later): bit 0 set = this machine does not relay for others
(``[wireguard.relay] enabled = false``); absent = 0. Elements after the last known one are ignored,
so a later minor version can append fields without cutting off older agents; anything else
malformed is refused with :class:`gossip.codec.WireError` (a peer's blob is not trusted).

**Mesh address claims.** Two live members may claim the same mesh address (a copied config). Every
member resolves that with the same rule over the same gossip data, so all agree without talking:
the claim with the smaller ``(claimed_at_ms, name)`` holds the address. ``claimed_at_ms`` is the wall
clock when the machine first claimed that address, kept in its state directory (see
:mod:`transit.claimfile`), so a machine keeps its seniority across restarts and a newcomer with a copied
config is always the later one; the name only breaks exact ties. Both sides get a message saying who
holds the address and why; the holder keeps it, the others must not configure it. Dead and left members
hold nothing (the caller passes only live members' claims), so a machine that is gone for good frees
its address.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from common.address import IPAddress
from gossip import Codec, Framing, MemberInfo, MemberState, WireError
from transit.endpoint import Endpoint
from transit.keys import KEY_LEN, PublicKey

META_KEY = "transit.meta"
META_VERSION = 1
FLAG_NO_RELAY = 1
MAX_ENDPOINTS = 8
# Member states whose claims count: a suspect member may well be alive, so it keeps its address.
LIVE_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})


@dataclass(frozen=True, slots=True)
class TransitMeta:
    """One machine's transit identity as the mesh sees it."""

    public_key: PublicKey
    mesh_address: IPAddress
    claimed_at_ms: int
    endpoints: tuple[Endpoint, ...] = ()
    relay: bool = True  # False: never pick this machine as a relay

    def __post_init__(self) -> None:
        if self.claimed_at_ms < 0:
            raise ValueError("claimed_at_ms must not be negative")
        if len(self.endpoints) > MAX_ENDPOINTS:
            raise ValueError(f"at most {MAX_ENDPOINTS} endpoints (got {len(self.endpoints)})")


def _meta_body(meta: TransitMeta) -> list[Any]:
    endpoints = [[e.host.packed, e.port] for e in meta.endpoints]
    flags = 0 if meta.relay else FLAG_NO_RELAY
    return [meta.public_key.raw, meta.mesh_address.packed, meta.claimed_at_ms, endpoints, flags]


def _address(value: Any, what: str) -> IPAddress:
    if not isinstance(value, bytes) or len(value) not in (4, 16):
        raise WireError(f"{what}: expected 4 or 16 address bytes")
    return ipaddress.IPv4Address(value) if len(value) == 4 else ipaddress.IPv6Address(value)


def _meta_from_body(fields: list[Any]) -> TransitMeta:
    """A peer's metadata; every deviation from the format raises :class:`WireError`."""
    if len(fields) < 4:
        raise WireError(f"expected at least 5 elements, got {len(fields) + 1}")
    key, mesh, claimed, eps = fields[:4]
    if not isinstance(key, bytes) or len(key) != KEY_LEN:
        raise WireError("public key: expected 32 bytes")
    if not isinstance(claimed, int) or isinstance(claimed, bool) or not 0 <= claimed < 1 << 63:
        raise WireError("claimed_at_ms: expected a non-negative integer")
    if not isinstance(eps, list) or len(eps) > MAX_ENDPOINTS:
        raise WireError(f"endpoints: expected an array of at most {MAX_ENDPOINTS}")
    endpoints: list[Endpoint] = []
    for item in eps:
        if not isinstance(item, list) or len(item) != 2:
            raise WireError("endpoint: expected [address, port]")
        port = item[1]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise WireError("endpoint: port must be in 1..65535")
        endpoints.append(Endpoint(_address(item[0], "endpoint"), port))
    flags = fields[4] if len(fields) > 4 else 0
    if not isinstance(flags, int) or isinstance(flags, bool) or flags < 0:
        raise WireError("flags: expected a non-negative integer")
    return TransitMeta(
        PublicKey(key), _address(mesh, "mesh address"), claimed, tuple(endpoints), not flags & FLAG_NO_RELAY
    )


# The gossip metadata blob (set with ``set_meta``, not a key/value; ``key`` names it in messages).
META = Codec(META_KEY, META_VERSION, Framing.ARRAY, _meta_body, _meta_from_body)


# A ULA /48 ("wmesh" in its bytes) for the probe addresses below.
PROBE_PREFIX = ipaddress.IPv6Network("fd77:6d65:7368::/48")


def probe_address(key: PublicKey) -> ipaddress.IPv6Address:
    """Where direct-path probes to a machine go: an address derived from its public key (so it costs
    no metadata) that stays in that machine's *direct* peer entry even while its mesh address is moved
    to a relay. Probing the mesh address itself would, once relayed, measure the relayed path and
    report the direct one up. Each agent adds its own probe address to its WireGuard interface."""
    suffix = int.from_bytes(hashlib.sha256(b"wiremesh probe\0" + key.raw).digest()[:10], "big")
    return PROBE_PREFIX[suffix]


# --- mesh address claims --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    """A member's claim on a mesh address."""

    name: str
    address: IPAddress
    claimed_at_ms: int

    @property
    def rank(self) -> tuple[int, str]:
        """Smaller holds: the earlier claim, then the smaller name."""
        return (self.claimed_at_ms, self.name)


@dataclass(frozen=True, slots=True)
class ClaimConflict:
    """Several live members claim one address; ``holder`` keeps it, ``refused`` must not use it."""

    address: IPAddress
    holder: Claim
    refused: tuple[Claim, ...]

    def message_for(self, name: str) -> str:
        """What to tell member ``name`` (holder or refused), in words an operator can act on."""
        others = ", ".join(c.name for c in self.refused)
        if name == self.holder.name:
            return (
                f"mesh address {self.address} is also claimed by {others}; {name} keeps it "
                f"(its claim, at {self.holder.claimed_at_ms} ms, is the earliest); give the other "
                "machine(s) a different mesh_address"
            )
        mine = next((c for c in self.refused if c.name == name), None)
        if mine is None:
            raise KeyError(name)
        return (
            f"mesh address {self.address} is already held by {self.holder.name} (claimed at "
            f"{self.holder.claimed_at_ms} ms, before this machine's claim at {mine.claimed_at_ms} ms); "
            f"{name} does not take it: give {name} a different mesh_address"
        )


@dataclass(frozen=True, slots=True)
class ClaimResolution:
    """Who holds each claimed address, and the conflicts behind that."""

    holders: Mapping[IPAddress, str]
    conflicts: tuple[ClaimConflict, ...] = ()
    _by_name: Mapping[str, ClaimConflict] = field(default_factory=dict, repr=False, compare=False)

    def conflict_for(self, name: str) -> ClaimConflict | None:
        return self._by_name.get(name)

    def holds(self, name: str, address: IPAddress) -> bool:
        return self.holders.get(address) == name


def resolve_claims(claims: Iterable[Claim]) -> ClaimResolution:
    """Apply the rule in the module docstring; independent of input order. Pass live members only."""
    by_address: dict[IPAddress, list[Claim]] = {}
    seen: set[str] = set()
    for claim in claims:
        if claim.name in seen:
            raise ValueError(f"two claims from member {claim.name!r}")
        seen.add(claim.name)
        by_address.setdefault(claim.address, []).append(claim)
    holders: dict[IPAddress, str] = {}
    conflicts: list[ClaimConflict] = []
    by_name: dict[str, ClaimConflict] = {}
    for address in sorted(by_address, key=lambda a: (a.version, a.packed)):
        ranked = sorted(by_address[address], key=lambda c: c.rank)
        holders[address] = ranked[0].name
        if len(ranked) > 1:
            conflict = ClaimConflict(address, ranked[0], tuple(ranked[1:]))
            conflicts.append(conflict)
            for c in ranked:
                by_name[c.name] = conflict
    return ClaimResolution(holders, tuple(conflicts), by_name)


@dataclass(frozen=True, slots=True)
class MeshView:
    """The transit records of the live members, decoded once per membership change."""

    metas: Mapping[str, TransitMeta]
    errors: Mapping[str, str]  # member name -> why its metadata was refused
    claims: ClaimResolution
    # Public keys that more than one member publishes (a cloned state directory), with those members:
    # WireGuard keeps one peer per key, so none of them can be configured until the clone is re-keyed.
    shared_keys: Mapping[PublicKey, tuple[str, ...]] = field(default_factory=dict)


def mesh_view(members: Iterable[MemberInfo]) -> MeshView:
    """Decode the live members' metadata and resolve their address claims. A member with empty
    metadata runs no transit (not an error); one with undecodable metadata is listed in ``errors``."""
    metas: dict[str, TransitMeta] = {}
    errors: dict[str, str] = {}
    for m in members:
        if m.state not in LIVE_STATES or not m.meta:
            continue
        try:
            metas[m.name] = META.parse(m.meta)
        except WireError as exc:
            errors[m.name] = str(exc)
    claims = resolve_claims(Claim(name, m.mesh_address, m.claimed_at_ms) for name, m in metas.items())
    by_key: dict[PublicKey, list[str]] = {}
    for name, meta in metas.items():
        by_key.setdefault(meta.public_key, []).append(name)
    shared = {key: tuple(sorted(names)) for key, names in by_key.items() if len(names) > 1}
    return MeshView(metas, errors, claims, shared)


__all__ = [
    "LIVE_STATES",
    "MAX_ENDPOINTS",
    "META",
    "META_KEY",
    "META_VERSION",
    "PROBE_PREFIX",
    "Claim",
    "ClaimConflict",
    "ClaimResolution",
    "MeshView",
    "TransitMeta",
    "mesh_view",
    "probe_address",
    "resolve_claims",
]
