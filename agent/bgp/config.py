"""ExaBGP's config file: the neighbor model, the mesh ASN plan, and a pure renderer.

ExaBGP has no API verb to add or remove a neighbor, so the neighbor set lives in its config file: the
supervisor rewrites the file and asks ExaBGP to reload it. Routes never go in the file; they are sent
through the API, so a reload never has to diff routes.

ASN plan inside the mesh (:class:`AsnPlan`, configurable):

- ``shared`` (the default): every machine uses the same ASN and mesh sessions are iBGP. Nothing to
  allocate, and external routers see the mesh as one AS. LOCAL_PREF travels between machines. iBGP
  does not re-advertise what it learned from another iBGP peer, which suits the mesh: each machine
  announces only what its own planner decided, straight to every other machine (a full mesh).
- ``per-machine``: each machine has its own private 4-byte ASN (RFC 6996: 4200000000-4294967294),
  taken from its config or derived from its name by hash; mesh sessions are eBGP. AS paths then say
  which machine a route came from and loop detection works across the mesh, at the cost of a number
  per machine to keep unique (a derived ASN collides with probability ~n^2 / 1.9e8 for n machines:
  about 0.5% at 1,000 machines, so set them explicitly in large meshes).

Each session carries the unicast family of its own transport (IPv4 session: ipv4 unicast). ExaBGP's
``next-hop self`` fails for a route of the other family, and every route we send is next-hop self.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from agent.bgp.api import MAX_U32, Family, normalize_address

PROCESS_NAME = "wiremesh"
DEFAULT_SHARED_ASN = 64512
PRIVATE_ASN4_FIRST = 4_200_000_000
PRIVATE_ASN4_LAST = 4_294_967_294
MAX_MD5_KEY = 80  # bytes; RFC 2385 and the kernel's TCP_MD5SIG_MAXKEYLEN
DEFAULT_HOLD_TIME = 90
BGP_PORT = 179

_BARE_TOKEN = re.compile(r"[A-Za-z0-9_./:@+=%-]+")


class MeshAsnMode(StrEnum):
    SHARED = "shared"
    PER_MACHINE = "per-machine"


def derive_private_asn(machine_name: str) -> int:
    """A stable private 4-byte ASN for a machine name: the same on every machine that computes it."""
    digest = hashlib.sha256(machine_name.encode("utf-8")).digest()
    return PRIVATE_ASN4_FIRST + int.from_bytes(digest[:8], "big") % (
        PRIVATE_ASN4_LAST - PRIVATE_ASN4_FIRST + 1
    )


def _check_asn(name: str, asn: int) -> None:
    if isinstance(asn, bool) or not isinstance(asn, int) or not 1 <= asn <= MAX_U32:
        raise ValueError(f"{name} must be an ASN in 1..{MAX_U32}, not {asn!r}")
    if asn == 23456:
        raise ValueError(f"{name}: 23456 is AS_TRANS (RFC 6793) and cannot be a real ASN")


@dataclass(frozen=True, slots=True)
class AsnPlan:
    """Which ASN each machine of the mesh uses (see the module docstring)."""

    mode: MeshAsnMode = MeshAsnMode.SHARED
    asn: int = DEFAULT_SHARED_ASN  # the mesh's ASN in shared mode; unused in per-machine mode

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", MeshAsnMode(self.mode))
        _check_asn("asn", self.asn)

    def asn_for(self, machine_name: str, configured: int | None = None) -> int:
        """The ASN of ``machine_name``; ``configured`` is that machine's own setting, if it has one
        (per-machine mode only: in shared mode every machine must agree, so there is nothing to set)."""
        if self.mode is MeshAsnMode.SHARED:
            return self.asn
        if configured is not None:
            _check_asn("configured asn", configured)
            return configured
        return derive_private_asn(machine_name)


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One BGP session as ExaBGP configures it. ``md5_password`` is left out of repr so that logging a
    neighbor never prints it; it is written to the config file base64-encoded (any bytes, no quoting)."""

    address: str  # the peer's address; the neighbor's identity
    peer_as: int
    local_as: int
    router_id: str  # dotted quad; required because an IPv6-only machine has none to derive
    local_address: str | None = None  # needed to listen (and so for passive); None: the kernel picks
    hold_time: int = DEFAULT_HOLD_TIME
    md5_password: str | None = field(default=None, repr=False)
    multihop: int | None = None  # TTL of the packets we send; None: the OS default (64)
    passive: bool = False  # wait for the peer to connect; never connect out
    listen: bool = True  # accept the peer's connections on ``local_address``:``port``
    port: int = BGP_PORT
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalize_address(self.address))
        if self.local_address is not None:
            object.__setattr__(self, "local_address", normalize_address(self.local_address))
            if ipaddress.ip_address(self.local_address).version != ipaddress.ip_address(self.address).version:
                raise ValueError(
                    f"neighbor {self.address}: local address {self.local_address} is another family"
                )
        _check_asn("peer_as", self.peer_as)
        _check_asn("local_as", self.local_as)
        try:
            ipaddress.IPv4Address(self.router_id)
        except ValueError:
            raise ValueError(
                f"neighbor {self.address}: router id must be a dotted quad: {self.router_id!r}"
            ) from None
        if self.hold_time != 0 and not 3 <= self.hold_time <= 65535:
            raise ValueError(
                f"neighbor {self.address}: hold time must be 0 or 3..65535 s, not {self.hold_time}"
            )
        if self.multihop is not None and not 1 <= self.multihop <= 255:
            raise ValueError(f"neighbor {self.address}: multihop TTL must be 1..255, not {self.multihop}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"neighbor {self.address}: bad port {self.port}")
        if self.passive and not (self.listen and self.local_address):
            raise ValueError(
                f"neighbor {self.address}: passive needs listen and a local address to listen on"
            )
        if self.md5_password is not None:
            size = len(self.md5_password.encode("utf-8"))
            if not 1 <= size <= MAX_MD5_KEY:
                raise ValueError(f"neighbor {self.address}: MD5 password must be 1..{MAX_MD5_KEY} bytes")
        _quoted(self.description)  # refuse what the config syntax cannot carry now, not at render time

    @property
    def family(self) -> Family:
        return Family.IPV6_UNICAST if ":" in self.address else Family.IPV4_UNICAST

    @property
    def internal(self) -> bool:
        return self.peer_as == self.local_as


def mesh_neighbor(
    *,
    address: str,
    name: str,
    local_name: str,
    local_address: str,
    router_id: str,
    plan: AsnPlan,
    peer_asn: int | None = None,
    local_asn: int | None = None,
    hold_time: int = DEFAULT_HOLD_TIME,
) -> Neighbor:
    """The session to another mesh machine (over its mesh address), ASNs from the plan. ``peer_asn`` /
    ``local_asn`` are the machines' configured ASNs, if any (per-machine mode)."""
    return Neighbor(
        address=address,
        peer_as=plan.asn_for(name, peer_asn),
        local_as=plan.asn_for(local_name, local_asn),
        router_id=router_id,
        local_address=local_address,
        hold_time=hold_time,
        description=f"mesh {name}",
    )


@dataclass(frozen=True, slots=True)
class ApiProcess:
    """The program ExaBGP runs as its API process (the bridge) and the name it is known by."""

    argv: tuple[str, ...]
    name: str = PROCESS_NAME

    def __post_init__(self) -> None:
        if not self.argv or not self.argv[0].startswith("/"):
            raise ValueError("the API process needs an absolute program path (ExaBGP searches /etc/exabgp)")
        if not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"bad process name {self.name!r}")
        for arg in self.argv:
            _token(arg)


def _quoted(text: str) -> str:
    """``text`` as one ExaBGP config token. Its tokeniser unescapes backslashes before it splits, so a
    quote inside a quoted string cannot be escaped: refuse such text instead of mangling it."""
    if any(c in text for c in '"\\') or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError(
            f"cannot write {text!r} in an ExaBGP config: no quotes, backslashes or control chars"
        )
    return f'"{text}"'


def _token(text: str) -> str:
    return text if _BARE_TOKEN.fullmatch(text) else _quoted(text)


def _render_neighbor(n: Neighbor, process: str) -> list[str]:
    lines = [f"neighbor {n.address} {{"]
    if n.description:
        lines.append(f"    description {_quoted(n.description)};")
    lines.append(f"    router-id {n.router_id};")
    if n.local_address:
        lines.append(f"    local-address {n.local_address};")
    lines += [
        f"    local-as {n.local_as};",
        f"    peer-as {n.peer_as};",
        f"    hold-time {n.hold_time};",
    ]
    if n.listen and n.local_address:
        lines.append(f"    listen {n.port};")
    if n.port != BGP_PORT:
        lines.append(f"    connect {n.port};")
    if n.passive:
        lines.append("    passive true;")
    if n.md5_password is not None:
        encoded = base64.b64encode(n.md5_password.encode("utf-8")).decode("ascii")
        lines += [f"    md5-password {encoded};", "    md5-base64 true;"]
    if n.multihop is not None:
        lines.append(f"    outgoing-ttl {n.multihop};")
    lines += [
        "    family {",
        f"        {n.family.value};",
        "    }",
        "    api {",
        f"        processes [ {process} ];",
        "        neighbor-changes;",
        "        receive {",
        "            open;",  # the peer's router id (agent.bgp.api.Open)
        "            parsed;",
        "            update;",
        "            notification;",
        "        }",
        "    }",
        "}",
    ]
    return lines


def render_config(neighbors: Iterable[Neighbor], process: ApiProcess) -> str:
    """The whole ExaBGP config file. Neighbors are sorted by address, so the same set always renders
    the same text (a reload with no change can be skipped by comparing files)."""
    by_address: dict[str, Neighbor] = {}
    for n in neighbors:
        if n.address in by_address and by_address[n.address] != n:
            raise ValueError(f"two different neighbors with address {n.address}")
        by_address[n.address] = n
    lines = [
        "# Written by wiremesh; rewritten on every neighbor change. Do not edit.",
        "",
        f"process {process.name} {{",
        f"    run {' '.join(_token(a) for a in process.argv)};",
        "    encoder json;",
        "    respawn false;",
        "}",
    ]
    for address in sorted(by_address, key=lambda a: (":" in a, ipaddress.ip_address(a))):
        lines.append("")
        lines += _render_neighbor(by_address[address], process.name)
    return "\n".join(lines) + "\n"
