"""BIRD 2's config for a machine in the reflector role: a pure renderer.

Why BIRD and not our routing core over ExaBGP: measured with ``python -m labs.bench_reflector`` (100
clients; README, "Route reflectors"), BIRD held every session in a few MiB with no idle CPU and fanned
an update out to all clients in tens of milliseconds, where ExaBGP with the reflection in Python took
ten times the memory, a sixth of a core idle and hundreds of milliseconds per fan-out.

What the reflector does, in BIRD's terms:

* **Shared ASN (iBGP)**: every client is an ``rr client`` (RFC 4456): BIRD reflects what one client
  sends to all the others, sets ORIGINATOR_ID and prepends its CLUSTER_LIST, and keeps the next hop.
  **Per-machine ASNs (eBGP)**: the same role is a route server (``rs client``, RFC 7947): no AS of its
  own in the path, next hop kept, so the paths read as if the machines peered directly.
* ``add paths tx`` to clients (RFC 7911): every announcer of a VIP reaches every machine, not just the
  reflector's best, so ECMP and the RIB's alternatives work as in a full mesh. ``peers`` (sessions
  between reflectors, ``add paths`` both ways) is supported but the speaker leaves it empty: every
  machine is a client of every reflector, so each reflector hears every route from its announcer, and
  BIRD, which matches a connection by address only, could not tell a peer reflector's BIRD from that
  machine's ExaBGP on the same address.
* Next hops are resolved in a table of their own (``igp4`` / ``igp6``, fed by the kernel's routes and
  the directly connected networks) that BGP never exports: the reflector needs the next hops to be
  valid, and must never reflect the kernel's routes (the VIPs the agent itself installed) back.
* A session's protocol name is derived from the peer's address (its identity), so that ``birdc
  configure`` after a membership change keeps every protocol whose definition did not change: adding
  or removing a client resets no other session.
* The reflector listens on its own port (``port``, default 1790), so it can share its address with
  the machine's ExaBGP, which keeps port 179 for the machine's own and external sessions.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from agent.config.bgp import DEFAULT_HOLD_TIME, check_asn

REFLECTOR_PORT = 1790
_DESCRIPTION = re.compile(r"[A-Za-z0-9 _.:@/+=%-]*")


class ReflectorMode(StrEnum):
    REFLECT = "reflect"  # iBGP: rr client (RFC 4456)
    ROUTE_SERVER = "route-server"  # eBGP: rs client (RFC 7947)


@dataclass(frozen=True, slots=True)
class Session:
    """One BGP session of the reflector: to a client machine, or to another reflector."""

    name: str  # the machine's name, for the description only
    address: str
    asn: int
    port: int = REFLECTOR_PORT  # the peer's port: ExaBGP's 179 for a client, REFLECTOR_PORT for a peer

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", str(ipaddress.ip_address(self.address)))
        check_asn("asn", self.asn)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"session {self.address}: bad port {self.port}")
        if not _DESCRIPTION.fullmatch(self.name):
            raise ValueError(f"session {self.address}: machine name {self.name!r} cannot go in a BIRD string")

    @property
    def protocol(self) -> str:
        """BIRD's protocol name: the address made an identifier (``m198_18_0_10``, ``m2001_db8__1``)."""
        return "m" + re.sub(r"[.:]", "_", self.address)

    @property
    def ipv6(self) -> bool:
        return ":" in self.address


@dataclass(frozen=True, slots=True)
class ReflectorSpec:
    router_id: str
    cluster_id: str  # dotted quad; the router id unless the operator groups reflectors
    asn: int
    local_address: str  # where the reflector listens and what it connects from
    clients: tuple[Session, ...]
    peers: tuple[Session, ...] = ()  # the other reflectors
    mode: ReflectorMode = ReflectorMode.REFLECT
    port: int = REFLECTOR_PORT
    hold_time: int = DEFAULT_HOLD_TIME
    log: str = "syslog"  # BIRD's log destination clause; the agent reads sessions over birdc

    def __post_init__(self) -> None:
        for what in ("router_id", "cluster_id"):
            try:
                ipaddress.IPv4Address(getattr(self, what))
            except ValueError:
                raise ValueError(f"{what} must be a dotted quad, not {getattr(self, what)!r}") from None
        object.__setattr__(self, "local_address", str(ipaddress.ip_address(self.local_address)))
        check_asn("asn", self.asn)
        if self.hold_time != 0 and not 3 <= self.hold_time <= 65535:
            raise ValueError(f"hold time must be 0 or 3..65535 s, not {self.hold_time}")
        seen: dict[str, str] = {}
        for s in (*self.clients, *self.peers):
            if s.address in seen:
                raise ValueError(f"{s.address} is both {seen[s.address]} and {s.name}")
            seen[s.address] = s.name
            if s.ipv6 != (":" in self.local_address):
                raise ValueError(
                    f"session {s.address}: another family than local address {self.local_address}"
                )
            if self.mode is ReflectorMode.REFLECT and s.asn != self.asn:
                raise ValueError(f"session {s.address}: AS{s.asn} in a shared-ASN mesh of AS{self.asn}")


def _family(spec: ReflectorSpec) -> tuple[str, str]:
    return ("ipv6", "igp6") if ":" in spec.local_address else ("ipv4", "igp4")


def render(spec: ReflectorSpec) -> str:
    """The whole config. Sessions are sorted by address, so the same spec always renders the same text
    (and ``configure`` with no change is a no-op)."""
    family, igp = _family(spec)
    if spec.mode is ReflectorMode.REFLECT:
        role = f"rr client;\n  rr cluster id {spec.cluster_id};"
    else:
        role = "rs client;"
    lines = [
        "# Written by wiremesh for this machine's reflector role; rewritten on every change. Do not edit.",
        f"router id {spec.router_id};",
        f"log {spec.log} {{ warning, error, fatal }};",
        "timeformat protocol iso long;",
        f"{family} table {igp};",
        "protocol device {}",
        f"protocol direct {{ {family} {{ table {igp}; }}; }}",
        f"protocol kernel {{ {family} {{ table {igp}; import all; export none; }}; learn; scan time 10; }}",
        "",
        "template bgp mesh_client {",
        f"  local {spec.local_address} port {spec.port} as {spec.asn};",
        f"  {role}",
        "  passive;  # the client's ExaBGP connects out: one TCP connection, no collision",
        f"  hold time {spec.hold_time};",
        "  multihop;",
        f"  {family} {{ import all; export all; add paths tx; igp table {igp}; next hop keep; }};",
        "}",
        "",
        "template bgp mesh_reflector {",
        f"  local {spec.local_address} port {spec.port} as {spec.asn};",
        f"  hold time {spec.hold_time};",
        "  multihop;",
        "  connect delay time 1;",
        f"  {family} {{ import all; export all; add paths on; igp table {igp}; next hop keep; }};",
        "}",
    ]
    for template, sessions in (("mesh_client", spec.clients), ("mesh_reflector", spec.peers)):
        for s in sorted(sessions, key=lambda s: ipaddress.ip_address(s.address)):
            lines += [
                "",
                f"protocol bgp {s.protocol} from {template} {{",
                f'  description "{template.removeprefix("mesh_")} {s.name}";',
                f"  neighbor {s.address} port {s.port} as {s.asn};",
                "}",
            ]
    return "\n".join(lines) + "\n"


def sessions_by_protocol(spec: ReflectorSpec) -> dict[str, Session]:
    return {s.protocol: s for s in (*spec.clients, *spec.peers)}


def clients_of(machines: Iterable[tuple[str, str, int]], port: int = 179) -> tuple[Session, ...]:
    """``(name, address, asn)`` of the machines this reflector serves, as client sessions."""
    return tuple(Session(name, address, asn, port) for name, address, asn in machines)
