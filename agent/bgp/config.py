"""ExaBGP's config file: the neighbor model and a pure renderer.

ExaBGP has no API verb to add or remove a neighbor, so the neighbor set lives in its config file: the
supervisor rewrites the file and asks ExaBGP to reload it. Routes never go in the file; they are sent
through the API, so a reload never has to diff routes.

The mesh's ASN plan and the external peers are config data (:mod:`agent.config.bgp`); this module
turns them into sessions.

Each session carries the unicast family of its own transport (IPv4 session: ipv4 unicast). ExaBGP's
``next-hop self`` fails for a route of the other family, and every route we send is next-hop self.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from agent.bgp.api import Family, normalize_address
from agent.config.bgp import DEFAULT_HOLD_TIME, MAX_MD5_KEY, AsnPlan, ExternalPeer, check_asn

PROCESS_NAME = "wiremesh"
BGP_PORT = 179

_BARE_TOKEN = re.compile(r"[A-Za-z0-9_./:@+=%-]+")


class AddPath(StrEnum):
    """The ADD-PATH capability (RFC 7911) a session offers, in ExaBGP's spelling. A client behind a
    route reflector receives (so it sees every announcer of a prefix, not the reflector's best only);
    a reflector sends."""

    RECEIVE = "receive"
    SEND = "send"
    SEND_RECEIVE = "send/receive"


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
    add_path: AddPath | None = None  # None: no ADD-PATH capability (the config renders as before)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalize_address(self.address))
        if self.add_path is not None:
            try:
                object.__setattr__(self, "add_path", AddPath(self.add_path))
            except ValueError:
                choices = ", ".join(a.value for a in AddPath)
                raise ValueError(
                    f"neighbor {self.address}: add-path must be one of {choices}, not {self.add_path!r}"
                ) from None
        if self.local_address is not None:
            object.__setattr__(self, "local_address", normalize_address(self.local_address))
            if ipaddress.ip_address(self.local_address).version != ipaddress.ip_address(self.address).version:
                raise ValueError(
                    f"neighbor {self.address}: local address {self.local_address} is another family"
                )
        check_asn("peer_as", self.peer_as)
        check_asn("local_as", self.local_as)
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
    add_path: AddPath | None = None,
) -> Neighbor:
    """The session to another mesh machine (over its mesh address), ASNs from the plan. ``peer_asn`` /
    ``local_asn`` are the machines' configured ASNs, if any (per-machine mode); ``add_path`` is
    :attr:`AddPath.RECEIVE` on a client's session to a route reflector."""
    return Neighbor(
        address=address,
        peer_as=plan.asn_for(name, peer_asn),
        local_as=plan.asn_for(local_name, local_asn),
        router_id=router_id,
        local_address=local_address,
        hold_time=hold_time,
        description=f"mesh {name}",
        add_path=add_path,
    )


def external_neighbor(peer: ExternalPeer, router_id: str, machine_asn: int) -> Neighbor:
    """The session to a router outside the mesh; its local ASN defaults to this machine's."""
    return Neighbor(
        address=peer.address,
        peer_as=peer.peer_asn,
        local_as=peer.local_asn if peer.local_asn is not None else machine_asn,
        router_id=router_id,
        local_address=peer.local_address,
        hold_time=peer.hold_time,
        md5_password=peer.md5_password,
        multihop=peer.multihop,
        passive=peer.passive,
        listen=peer.local_address is not None,
        description=peer.description or f"external AS{peer.peer_asn}",
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
    if n.add_path is not None:  # for every family of the session (ExaBGP's default with no family list)
        lines += ["    capability {", f"        add-path {n.add_path.value};", "    }"]
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


_STAMP = re.compile(r"\[g(\d+)\]$")


class Stamps:
    """Each neighbor is written with the generation at which its settings last changed at the end of its
    description (``mesh m7 [g12]``), so ``show neighbor configuration`` tells whether ExaBGP applied a
    reload that only changed a neighbor, which the list of its peers cannot. An unchanged neighbor keeps
    its stamp, so it is still unchanged to ExaBGP and keeps its session."""

    def __init__(self) -> None:
        self._generation = 0
        self._last: dict[str, tuple[Neighbor, int]] = {}

    def apply(self, neighbors: Iterable[Neighbor]) -> tuple[list[Neighbor], dict[str, int]]:
        """The neighbors as written, and the stamp each address must show once they are applied."""
        self._generation += 1
        kept: dict[str, tuple[Neighbor, int]] = {}
        for n in neighbors:
            previous = self._last.get(n.address)
            kept[n.address] = (
                n,
                previous[1] if previous is not None and previous[0] == n else self._generation,
            )
        self._last = kept
        written = [replace(n, description=f"{n.description} [g{gen}]".lstrip()) for n, gen in kept.values()]
        return written, {address: gen for address, (_n, gen) in kept.items()}


def stamps_shown(descriptions: dict[str, str]) -> dict[str, int | None]:
    """The stamp at the end of each description ExaBGP shows (None: none there)."""
    return {a: int(m.group(1)) if (m := _STAMP.search(d)) else None for a, d in descriptions.items()}


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
