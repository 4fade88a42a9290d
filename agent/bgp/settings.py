"""The ``[bgp]`` section of the agent's config file, as a frozen value, and its parser.

Off by default, so an agent configured before the BGP speaker existed keeps running as it did. The
parser takes the raw TOML table and an ``error(key, problem)`` callback that builds the caller's
error type, so every message names the file and the key (``bgp.peers[1].peer_asn``) without this
module knowing about :mod:`agent.config.loader` (which imports it).

::

    [bgp]
    enabled = true
    asn_plan = "shared"          # or "per-machine" (see agent.bgp.config.AsnPlan)
    asn = 64512                  # shared: the mesh's ASN; per-machine: this machine's (default: derived)
    router_id = "198.18.0.2"     # default: the advertise address (required if that is IPv6)
    hold_time = 90               # mesh sessions
    drain_time = 5.0             # GRACEFUL_SHUTDOWN announced this long before the withdrawal
    max_paths = 4                # ECMP: next hops installed per destination
    route_protocol = 200         # kernel route protocol number marking the agent's routes
    route_table = 254            # kernel table the routes go in (254: main)

    [[bgp.peers]]                # external routers
    address = "198.18.0.1"
    peer_asn = 65000
    local_asn = 65001            # default: this machine's ASN
    local_address = "198.18.0.2" # default: the kernel picks; needed for passive
    hold_time = 90
    md5_password = "secret"
    multihop = 2                 # outgoing TTL
    passive = false
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.bgp.config import (
    DEFAULT_HOLD_TIME,
    DEFAULT_SHARED_ASN,
    AsnPlan,
    MeshAsnMode,
    Neighbor,
)

DEFAULT_DRAIN_TIME = 5.0
DEFAULT_MAX_PATHS = 4
DEFAULT_ROUTE_PROTOCOL = 200  # unassigned in iproute2's rt_protos (BIRD is 12, FRR's bgp 186)
DEFAULT_ROUTE_TABLE = 254  # main
RESERVED_TABLES = (0, 253, 255)  # unspec, default, local: never ours to fill
MIN_ROUTE_PROTOCOL = 5  # 0-4 are the kernel's own (unspec, redirect, kernel, boot, static)

ErrorFactory = Callable[[str, str], Exception]

_TOP = (
    "enabled",
    "asn_plan",
    "asn",
    "router_id",
    "hold_time",
    "drain_time",
    "max_paths",
    "route_protocol",
    "route_table",
    "peers",
)
_PEER = (
    "address",
    "peer_asn",
    "local_asn",
    "local_address",
    "hold_time",
    "md5_password",
    "multihop",
    "passive",
    "description",
)


@dataclass(frozen=True, slots=True)
class ExternalPeer:
    """A router outside the mesh, from the config file. ``local_asn`` ``None``: this machine's ASN."""

    address: str
    peer_asn: int
    local_asn: int | None = None
    local_address: str | None = None
    hold_time: int = DEFAULT_HOLD_TIME
    md5_password: str | None = None
    multihop: int | None = None
    passive: bool = False
    description: str = ""

    def neighbor(self, router_id: str, machine_asn: int) -> Neighbor:
        return Neighbor(
            address=self.address,
            peer_as=self.peer_asn,
            local_as=self.local_asn if self.local_asn is not None else machine_asn,
            router_id=router_id,
            local_address=self.local_address,
            hold_time=self.hold_time,
            md5_password=self.md5_password,
            multihop=self.multihop,
            passive=self.passive,
            listen=self.local_address is not None,
            description=self.description or f"external AS{self.peer_asn}",
        )


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

    def machine_asn(self, machine: str) -> int:
        return self.plan.asn_for(machine, self.asn)

    def resolved_router_id(self, advertise_host: str) -> str:
        """The router id: configured, or the advertise address (an IPv4 one; checked at load)."""
        return self.router_id if self.router_id is not None else advertise_host


def _typed(error: ErrorFactory, key: str, value: Any, kind: type) -> Any:
    if kind is float and type(value) is int:
        return float(value)
    if type(value) is not kind:
        raise error(key, f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _int(error: ErrorFactory, key: str, value: Any, low: int, high: int) -> int:
    number: int = _typed(error, key, value, int)
    if not low <= number <= high:
        raise error(key, f"out of range: {number} (must be {low}..{high})")
    return number


def _address(error: ErrorFactory, key: str, value: Any) -> str:
    text: str = _typed(error, key, value, str)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise error(key, f"not an IP address: {text!r}") from None
    if address.is_unspecified or address.is_multicast:
        raise error(key, f"cannot peer with {text}")
    return str(address)


def _hold_time(error: ErrorFactory, key: str, value: Any) -> int:
    hold = _int(error, key, value, 0, 65535)
    if hold in (1, 2):
        raise error(key, f"must be 0 or 3..65535 s (RFC 4271), not {hold}")
    return hold


def _asn(error: ErrorFactory, key: str, value: Any) -> int:
    asn = _int(error, key, value, 1, (1 << 32) - 1)
    if asn == 23456:
        raise error(key, "23456 is AS_TRANS (RFC 6793) and cannot be a real ASN")
    return asn


def _unknown(error: ErrorFactory, table: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise error(prefix + key, f"unknown key (known: {', '.join(known)})")


def _peer(error: ErrorFactory, key: str, raw: Any) -> ExternalPeer:
    if not isinstance(raw, dict):
        raise error(key, f"expected a table ([[bgp.peers]]), got {type(raw).__name__}")
    _unknown(error, raw, _PEER, f"{key}.")
    for required in ("address", "peer_asn"):
        if required not in raw:
            raise error(f"{key}.{required}", "missing required key")
    address = _address(error, f"{key}.address", raw["address"])
    local_address = (
        _address(error, f"{key}.local_address", raw["local_address"]) if "local_address" in raw else None
    )
    if local_address is not None and (":" in local_address) != (":" in address):
        raise error(f"{key}.local_address", f"{local_address} is not of the same family as {address}")
    password = raw.get("md5_password")
    if password is not None:
        password = _typed(error, f"{key}.md5_password", password, str)
        if not 1 <= len(password.encode()) <= 80:
            raise error(f"{key}.md5_password", "must be 1..80 bytes (RFC 2385)")
    passive: bool = _typed(error, f"{key}.passive", raw.get("passive", False), bool)
    if passive and local_address is None:
        raise error(f"{key}.passive", "a passive peer needs local_address (the address to listen on)")
    description: str = _typed(error, f"{key}.description", raw.get("description", ""), str)
    if any(c in description for c in '"\\') or not description.isprintable():
        raise error(f"{key}.description", "no quotes, backslashes or control characters")
    peer = ExternalPeer(
        address=address,
        peer_asn=_asn(error, f"{key}.peer_asn", raw["peer_asn"]),
        local_asn=_asn(error, f"{key}.local_asn", raw["local_asn"]) if "local_asn" in raw else None,
        local_address=local_address,
        hold_time=_hold_time(error, f"{key}.hold_time", raw.get("hold_time", DEFAULT_HOLD_TIME)),
        md5_password=password,
        multihop=_int(error, f"{key}.multihop", raw["multihop"], 1, 255) if "multihop" in raw else None,
        passive=passive,
        description=description,
    )
    return peer


def parse_bgp(raw: Any, advertise_host: str, error: ErrorFactory) -> BgpSettings:
    """The ``[bgp]`` table (``None``: absent) as settings; ``error(key, problem)`` makes the exception
    raised for a bad value. ``advertise_host`` is where the default router id comes from."""
    if raw is None:
        return BgpSettings()
    if not isinstance(raw, dict):
        raise error("bgp", f"expected a table, got {type(raw).__name__}")
    _unknown(error, raw, _TOP, "bgp.")
    enabled: bool = _typed(error, "bgp.enabled", raw.get("enabled", False), bool)
    mode_text: str = _typed(error, "bgp.asn_plan", raw.get("asn_plan", MeshAsnMode.SHARED.value), str)
    try:
        mode = MeshAsnMode(mode_text)
    except ValueError:
        options = ", ".join(m.value for m in MeshAsnMode)
        raise error("bgp.asn_plan", f"must be one of {options} (got {mode_text!r})") from None
    asn = _asn(error, "bgp.asn", raw["asn"]) if "asn" in raw else None
    if mode is MeshAsnMode.SHARED:
        plan = AsnPlan(mode, asn if asn is not None else DEFAULT_SHARED_ASN)
        own: int | None = None
    else:
        plan = AsnPlan(mode)
        own = asn
    router_id = raw.get("router_id")
    if router_id is not None:
        text: str = _typed(error, "bgp.router_id", router_id, str)
        try:
            router_id = str(ipaddress.IPv4Address(text))
        except ValueError:
            raise error("bgp.router_id", f"must be a dotted quad (an IPv4 address), not {text!r}") from None
    elif enabled:
        try:
            ipaddress.IPv4Address(advertise_host)
        except ValueError:
            raise error(
                "bgp.router_id",
                f"missing required key: the advertise address {advertise_host} is not IPv4, so there "
                "is no default router id",
            ) from None
    drain: float = _typed(error, "bgp.drain_time", raw.get("drain_time", DEFAULT_DRAIN_TIME), float)
    if not math.isfinite(drain) or not 0 <= drain <= 3600:
        raise error("bgp.drain_time", f"must be 0..3600 seconds (got {drain})")
    table = _int(error, "bgp.route_table", raw.get("route_table", DEFAULT_ROUTE_TABLE), 1, (1 << 32) - 1)
    if table in RESERVED_TABLES:
        raise error("bgp.route_table", f"table {table} is reserved (0 unspec, 253 default, 255 local)")
    peers_raw = raw.get("peers", [])
    if not isinstance(peers_raw, list):
        raise error(
            "bgp.peers", f"expected an array of tables ([[bgp.peers]]), got {type(peers_raw).__name__}"
        )
    peers = tuple(_peer(error, f"bgp.peers[{i}]", p) for i, p in enumerate(peers_raw))
    seen: set[str] = set()
    for i, peer in enumerate(peers):
        if peer.address in seen:
            raise error(f"bgp.peers[{i}].address", f"{peer.address} is listed twice")
        seen.add(peer.address)
    return BgpSettings(
        enabled=enabled,
        plan=plan,
        asn=own,
        router_id=router_id,
        hold_time=_hold_time(error, "bgp.hold_time", raw.get("hold_time", DEFAULT_HOLD_TIME)),
        drain_time=drain,
        max_paths=_int(error, "bgp.max_paths", raw.get("max_paths", DEFAULT_MAX_PATHS), 1, 256),
        route_protocol=_int(
            error,
            "bgp.route_protocol",
            raw.get("route_protocol", DEFAULT_ROUTE_PROTOCOL),
            MIN_ROUTE_PROTOCOL,
            255,
        ),
        route_table=table,
        peers=peers,
    )
