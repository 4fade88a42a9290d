"""The ``[bgp]`` section: the settings the BGP speaker runs with, and the table they are read from.

Off by default, so an agent configured before the BGP speaker existed keeps running as it did. The
settings (:class:`BgpSettings`, :class:`ExternalPeer`, :class:`AsnPlan`) are plain data that
:mod:`agent.bgp` turns into ExaBGP neighbors; they live here so that reading a config file needs
nothing from the speaker.

::

    [bgp]
    enabled = true
    asn_plan = "shared"          # or "per-machine" (see AsnPlan)
    asn = 64512                  # shared: the mesh's ASN; per-machine: this machine's (default: derived)
    router_id = "198.18.0.2"     # default: the advertise address (required if that is IPv6)
    hold_time = 90               # mesh sessions
    drain_time = 5.0             # GRACEFUL_SHUTDOWN announced this long before the withdrawal
    max_paths = 4                # ECMP: next hops installed per destination
    route_protocol = 200         # kernel route protocol number marking the agent's routes
    route_table = 254            # kernel table the routes go in (254: main)
    reflector = "auto"           # may this machine be a route reflector: "auto", "always", "never"
    reflectors = 2               # k: reflectors in a reflected mesh (same on every machine)
    full_mesh_below = 8          # full mesh below this many machines (same on every machine)
    reflector_hold = 30.0        # s a suspect reflector keeps its role (same on every machine)

    [[bgp.peers]]                # external routers
    address = "198.18.0.1"
    peer_asn = 65000
    local_asn = 65001            # default: this machine's ASN
    local_address = "198.18.0.2" # default: the kernel picks; needed for passive
    hold_time = 90
    md5_password = "secret"
    multihop = 2                 # outgoing TTL
    passive = false

ASN plan inside the mesh:

- ``shared`` (the default): every machine uses the same ASN and mesh sessions are iBGP. Nothing to
  allocate, and external routers see the mesh as one AS. LOCAL_PREF travels between machines. iBGP
  does not re-advertise what it learned from another iBGP peer, which suits the mesh: each machine
  announces only what its own planner decided, straight to every other machine (a full mesh).
- ``per-machine``: each machine has its own private 4-byte ASN (RFC 6996: 4200000000-4294967294),
  taken from its config or derived from its name by hash; mesh sessions are eBGP. AS paths then say
  which machine a route came from and loop detection works across the mesh, at the cost of a number
  per machine to keep unique (a derived ASN collides with probability ~n^2 / 1.9e8 for n machines:
  about 0.5% at 1,000 machines, so set them explicitly in large meshes).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from agent.config.base import Section, between
from agent.config.errors import Loc

DEFAULT_SHARED_ASN = 64512
PRIVATE_ASN4_FIRST = 4_200_000_000
PRIVATE_ASN4_LAST = 4_294_967_294
MAX_ASN = (1 << 32) - 1
AS_TRANS = 23456  # RFC 6793: stands in for a 4-byte ASN on old sessions, never a real one
MAX_MD5_KEY = 80  # bytes; RFC 2385 and the kernel's TCP_MD5SIG_MAXKEYLEN
DEFAULT_HOLD_TIME = 90
DEFAULT_DRAIN_TIME = 5.0
DEFAULT_MAX_PATHS = 4
DEFAULT_ROUTE_PROTOCOL = 200  # unassigned in iproute2's rt_protos (BIRD is 12, FRR's bgp 186)
DEFAULT_ROUTE_TABLE = 254  # main
# Route reflector placement (agent/bgp/reflectors.py says why these values).
DEFAULT_REFLECTORS = 2
DEFAULT_FULL_MESH_BELOW = 8
DEFAULT_REFLECTOR_HOLD = 30.0
RESERVED_TABLES = (0, 253, 255)  # unspec, default, local: never ours to fill
MIN_ROUTE_PROTOCOL = 5  # 0-4 are the kernel's own (unspec, redirect, kernel, boot, static)


class MeshAsnMode(StrEnum):
    SHARED = "shared"
    PER_MACHINE = "per-machine"


def derive_private_asn(machine_name: str) -> int:
    """A stable private 4-byte ASN for a machine name: the same on every machine that computes it."""
    digest = hashlib.sha256(machine_name.encode("utf-8")).digest()
    return PRIVATE_ASN4_FIRST + int.from_bytes(digest[:8], "big") % (
        PRIVATE_ASN4_LAST - PRIVATE_ASN4_FIRST + 1
    )


def check_asn(name: str, asn: int) -> None:
    """For values built in code rather than read from a file (those get the section's checks)."""
    if isinstance(asn, bool) or not isinstance(asn, int) or not 1 <= asn <= MAX_ASN:
        raise ValueError(f"{name} must be an ASN in 1..{MAX_ASN}, not {asn!r}")
    if asn == AS_TRANS:
        raise ValueError(f"{name}: 23456 is AS_TRANS (RFC 6793) and cannot be a real ASN")


@dataclass(frozen=True, slots=True)
class AsnPlan:
    """Which ASN each machine of the mesh uses (see the module docstring)."""

    mode: MeshAsnMode = MeshAsnMode.SHARED
    asn: int = DEFAULT_SHARED_ASN  # the mesh's ASN in shared mode; unused in per-machine mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", MeshAsnMode(self.mode))
        check_asn("asn", self.asn)

    def asn_for(self, machine_name: str, configured: int | None = None) -> int:
        """The ASN of ``machine_name``; ``configured`` is that machine's own setting, if it has one
        (per-machine mode only: in shared mode every machine must agree, so there is nothing to set)."""
        if self.mode is MeshAsnMode.SHARED:
            return self.asn
        if configured is not None:
            check_asn("configured asn", configured)
            return configured
        return derive_private_asn(machine_name)


@dataclass(frozen=True, slots=True)
class ExternalPeer:
    """A router outside the mesh, from the config file. ``local_asn`` ``None``: this machine's ASN."""

    address: str
    peer_asn: int
    local_asn: int | None = None
    local_address: str | None = None
    hold_time: int = DEFAULT_HOLD_TIME
    md5_password: str | None = field(default=None, repr=False)
    multihop: int | None = None
    passive: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class BgpSettings:
    enabled: bool = False
    plan: AsnPlan = field(default_factory=AsnPlan)
    asn: int | None = None  # this machine's own ASN in per-machine mode; None: derived from the name
    router_id: str | None = None  # None: the advertise address
    hold_time: int = DEFAULT_HOLD_TIME
    drain_time: float = DEFAULT_DRAIN_TIME
    max_paths: int = DEFAULT_MAX_PATHS
    route_protocol: int = DEFAULT_ROUTE_PROTOCOL
    route_table: int = DEFAULT_ROUTE_TABLE
    peers: tuple[ExternalPeer, ...] = ()
    reflector: Literal["auto", "always", "never"] = "auto"
    reflectors: int = DEFAULT_REFLECTORS
    full_mesh_below: int = DEFAULT_FULL_MESH_BELOW
    reflector_hold: float = DEFAULT_REFLECTOR_HOLD

    def machine_asn(self, machine: str) -> int:
        return self.plan.asn_for(machine, self.asn)

    def resolved_router_id(self, advertise_host: str) -> str:
        """The router id: configured, or the advertise address (an IPv4 one; checked at load)."""
        return self.router_id if self.router_id is not None else advertise_host


# --- the table -------------------------------------------------------------------------------------


def _not_as_trans(asn: int) -> int:
    if asn == AS_TRANS:
        raise ValueError("23456 is AS_TRANS (RFC 6793) and cannot be a real ASN")
    return asn


def _hold_time(hold: int) -> int:
    if hold in (1, 2):
        raise ValueError(f"must be 0 or 3-65535 s (RFC 4271), not {hold}")
    return hold


def _peer_address(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"cannot peer with {text}")
    return str(address)


def _router_id(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ValueError(f"must be a dotted quad (an IPv4 address), not {text!r}") from None


def _md5_password(password: str) -> str:
    if not 1 <= len(password.encode()) <= MAX_MD5_KEY:
        raise ValueError(f"must be 1-{MAX_MD5_KEY} bytes (RFC 2385)")
    return password


def _description(text: str) -> str:
    # ExaBGP's tokeniser unescapes before it splits, so these cannot be written in its config at all.
    if any(c in text for c in '"\\') or not text.isprintable():
        raise ValueError("no quotes, backslashes or control characters")
    return text


def _drain_time(seconds: float) -> float:
    if not 0 <= seconds <= 3600:
        raise ValueError(f"out of range: {seconds} (must be 0-3600 seconds)")
    return seconds


def _route_table(table: int) -> int:
    if table in RESERVED_TABLES:
        raise ValueError(f"table {table} is reserved (0 unspec, 253 default, 255 local)")
    return table


Asn = Annotated[int, between(1, MAX_ASN), AfterValidator(_not_as_trans)]
HoldTime = Annotated[int, between(0, 65535), AfterValidator(_hold_time)]
PeerAddress = Annotated[str, AfterValidator(_peer_address)]


class PeerSection(Section):
    """One ``[[bgp.peers]]`` table."""

    address: PeerAddress
    peer_asn: Asn
    local_asn: Asn | None = None
    local_address: PeerAddress | None = None
    hold_time: HoldTime = DEFAULT_HOLD_TIME
    md5_password: Annotated[str, AfterValidator(_md5_password)] | None = None
    multihop: Annotated[int, between(1, 255)] | None = None
    passive: bool = False
    description: Annotated[str, AfterValidator(_description)] = ""

    def rules(self) -> Iterator[tuple[Loc, str]]:
        local = self.local_address
        if local is not None and (":" in local) != (":" in self.address):
            yield ("local_address",), f"{local} is not of the same family as {self.address}"
        if self.passive and local is None:
            yield ("passive",), "a passive peer needs local_address (the address to listen on)"

    def peer(self) -> ExternalPeer:
        return ExternalPeer(**self.model_dump())


class BgpSection(Section):
    """The ``[bgp]`` table. The default router id (the advertise address) is checked by the loader,
    which knows that address."""

    enabled: bool = False
    asn_plan: Literal["shared", "per-machine"] = "shared"
    asn: Asn | None = None
    router_id: Annotated[str, AfterValidator(_router_id)] | None = None
    hold_time: HoldTime = DEFAULT_HOLD_TIME
    drain_time: Annotated[float, AfterValidator(_drain_time)] = DEFAULT_DRAIN_TIME
    max_paths: Annotated[int, between(1, 256)] = DEFAULT_MAX_PATHS
    route_protocol: Annotated[int, between(MIN_ROUTE_PROTOCOL, 255)] = DEFAULT_ROUTE_PROTOCOL
    route_table: Annotated[int, between(1, MAX_ASN), AfterValidator(_route_table)] = DEFAULT_ROUTE_TABLE
    peers: list[PeerSection] = Field(default_factory=list)
    reflector: Literal["auto", "always", "never"] = "auto"
    reflectors: Annotated[int, between(1, 16)] = DEFAULT_REFLECTORS
    full_mesh_below: Annotated[int, between(0, 100_000)] = DEFAULT_FULL_MESH_BELOW
    reflector_hold: Annotated[float, between(0, 3600)] = DEFAULT_REFLECTOR_HOLD

    def rules(self) -> Iterator[tuple[Loc, str]]:
        seen: set[str] = set()
        for i, peer in enumerate(self.peers):
            if peer.address in seen:
                yield ("peers", i, "address"), f"{peer.address} is listed twice"
            seen.add(peer.address)

    def settings(self) -> BgpSettings:
        mode = MeshAsnMode(self.asn_plan)
        shared = mode is MeshAsnMode.SHARED
        return BgpSettings(
            enabled=self.enabled,
            plan=AsnPlan(mode, self.asn or DEFAULT_SHARED_ASN) if shared else AsnPlan(mode),
            asn=None if shared else self.asn,
            router_id=self.router_id,
            hold_time=self.hold_time,
            drain_time=self.drain_time,
            max_paths=self.max_paths,
            route_protocol=self.route_protocol,
            route_table=self.route_table,
            peers=tuple(p.peer() for p in self.peers),
            reflector=self.reflector,
            reflectors=self.reflectors,
            full_mesh_below=self.full_mesh_below,
            reflector_hold=self.reflector_hold,
        )
