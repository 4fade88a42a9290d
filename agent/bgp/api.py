"""Sans-I/O codec for ExaBGP 5's process API: the commands we write and the lines ExaBGP writes back.

ExaBGP talks to its API process over two pipes (we see them through :mod:`agent.bgp.bridge`). We write
one command per line (:class:`Announce`, :class:`Withdraw`, :class:`Reload`, the two ``show`` commands);
ExaBGP writes back one line per message: a JSON object for BGP events (``encoder json``), ``done`` /
``error`` acks (plain text even with the JSON encoder), and a few other plain lines (``reload`` answers
"reload in progress" before its ``done``, the ``show`` commands their text).

Facts checked against ExaBGP 5.0.15 (see the fixtures in ``tests/fixtures/exabgp``):

- The JSON header's ``"exabgp"`` field says ``"5.0.0"``, whatever the release.
- An explicit ``as-path`` is sent as given: ExaBGP does not put its own ASN in front of it, even on
  eBGP. With no ``as-path`` it sends ``[local-as]`` on eBGP and an empty path on iBGP. So a prepend on
  eBGP is ``as-path [ L L ... ]`` with one more ``L`` than the prepend count (:func:`prepend_path`).
- LOCAL_PREF is sent on iBGP sessions only; on eBGP ExaBGP drops it without a word (RFC 4271 5.1.5).
- ``next-hop self`` fails (``error``) when any targeted session's transport is of the other family
  (an IPv6 route to all neighbors, one of them over IPv4), withdrawals with ``next-hop self``
  included; so sessions carry their own family only and withdrawals carry no next hop.
- Acks are not in command order across command kinds: route commands are queued inside ExaBGP and
  answered later, while ``reload``/``version``/unknown commands are answered at once. Only one command
  may be in flight if acks are to be matched to commands (the supervisor does that).
- ``reload`` is answered ``done`` before it is applied, and is then dropped without a word if any peer
  has routes waiting in its adj-rib-out, such as one still connecting with routes queued for it
  (``Reactor.run`` in ``exabgp/reactor/loop.py`` re-arms the signal, then skips the reload while
  ``_pending_adjribout()``). So a reload is confirmed with :class:`ShowConfiguration` (the settings
  applied) and :class:`ShowNeighbors` (the peers held), and sent again.
- A route sent to a neighbor name that is not configured is answered ``error``; a withdrawal of a
  route that was never announced is answered ``done``.
- IPv6 updates from a peer that sends a link-local next hop as well list every prefix twice, once under
  each next hop; the parser keeps the global one.
- Confederation segments are reported as ``as-sequence`` like plain sequences; they cannot be told
  apart in the JSON.
- With ADD-PATH receive negotiated (RFC 7911; behind a BIRD 2 route reflector, see
  ``reflector_addpath.jsonl``) every NLRI, announced or withdrawn, carries ``"path-information"`` as a
  dotted quad (``"0.0.0.3"``); one UPDATE may list the same prefix twice under different path ids.
  Reflected routes carry ``"originator-id": "a.b.c.d"`` and ``"cluster-list": ["a.b.c.d", ...]``.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, TypeAlias

log = logging.getLogger("wiremesh.bgp.api")

MAX_U16 = (1 << 16) - 1
MAX_U32 = (1 << 32) - 1
MAX_LINE = 1 << 22  # 4 MiB: far above any UPDATE ExaBGP can render (a BGP message is at most 64 KiB)

Community: TypeAlias = tuple[int, int]
LargeCommunity: TypeAlias = tuple[int, int, int]


class ApiCodecError(ValueError):
    """A line from ExaBGP we cannot turn into a message: malformed JSON or a shape we do not know."""


class UnsupportedMessage(ApiCodecError):
    """A well-formed message of a kind we did not ask for (``open``, ``keepalive``, other families)."""


class Origin(StrEnum):
    IGP = "igp"
    EGP = "egp"
    INCOMPLETE = "incomplete"


class Family(StrEnum):
    """The address families this speaker carries; the value is ExaBGP's spelling."""

    IPV4_UNICAST = "ipv4 unicast"
    IPV6_UNICAST = "ipv6 unicast"


class SessionState(StrEnum):
    CONNECTED = "connected"  # TCP up, OPEN not yet agreed
    UP = "up"  # Established
    DOWN = "down"


def _check_range(name: str, value: int, maximum: int, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in {minimum}..{maximum}, not {value!r}")


def _dotted_quad(name: str, value: object) -> str:
    try:
        if not isinstance(value, str):
            raise TypeError
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise ValueError(f"{name} must be a dotted quad, not {value!r}") from None


def community_pair(value: int) -> Community:
    """A standard community as the routing core keeps it (``asn << 16 | value``, e.g.
    :data:`agent.routing.GRACEFUL_SHUTDOWN`) in the (asn, value) form ExaBGP reads and writes."""
    _check_range("community", value, MAX_U32)
    return value >> 16, value & MAX_U16


def community_value(pair: Community) -> int:
    """The inverse of :func:`community_pair`."""
    return pair[0] << 16 | pair[1]


def normalize_prefix(text: str) -> str:
    """``a.b.c.d/n`` or ``x::/n`` in canonical form; host bits set is an error, as ExaBGP would send
    a different prefix from the one asked for."""
    try:
        return str(ipaddress.ip_network(text, strict=True))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a prefix: {text!r} ({exc})") from None


def normalize_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except (ValueError, TypeError):
        raise ValueError(f"not an IP address: {text!r}") from None


def prefix_family(prefix: str) -> Family:
    return Family.IPV6_UNICAST if ":" in prefix else Family.IPV4_UNICAST


def prepend_path(local_as: int, peer_as: int, prepend: int = 0) -> tuple[int, ...]:
    """The ``as_path`` to give :class:`RouteAttributes` for a locally originated route prepended
    ``prepend`` times. ExaBGP sends an explicit path verbatim, so on eBGP our own ASN has to be in it
    once more than the prepend count; on iBGP the path stays empty unless prepending (RFC 4271 5.1.2).
    ``()`` means "ExaBGP's default", which is the same as ``prepend == 0``."""
    _check_range("prepend", prepend, 255)
    if prepend == 0:
        return ()
    return (local_as,) * (prepend + (0 if local_as == peer_as else 1))


@dataclass(frozen=True, slots=True)
class RouteAttributes:
    """Path attributes as plain values. Communities are sets in BGP: they are kept sorted and unique
    so two attribute sets that mean the same compare equal (the desired-state diff relies on it).

    ``as_path`` is the AS_SEQUENCE; ``as_sets`` are AS_SET segments, which come after the sequence
    (aggregation appends them). Empty ``as_path`` on a route we send means ExaBGP's default.

    ``originator_id`` and ``cluster_list`` (RFC 4456, dotted quads, the list in wire order: the last
    reflector first) are what a route reflector adds; they are read from received routes only, a route
    we send never carries them (a client does not reflect)."""

    origin: Origin = Origin.IGP
    as_path: tuple[int, ...] = ()
    as_sets: tuple[tuple[int, ...], ...] = ()
    med: int | None = None
    local_pref: int | None = None
    communities: tuple[Community, ...] = ()
    large_communities: tuple[LargeCommunity, ...] = ()
    originator_id: str | None = None
    cluster_list: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", Origin(self.origin))
        if self.originator_id is not None:
            object.__setattr__(self, "originator_id", _dotted_quad("ORIGINATOR_ID", self.originator_id))
        if self.cluster_list:
            object.__setattr__(
                self, "cluster_list", tuple(_dotted_quad("CLUSTER_LIST", c) for c in self.cluster_list)
            )
        for asn in self.as_path:
            _check_range("AS number", asn, MAX_U32)
        sets = tuple(tuple(sorted(set(s))) for s in self.as_sets)
        for asn in (a for s in sets for a in s):
            _check_range("AS number", asn, MAX_U32)
        if any(not s for s in sets):
            raise ValueError("an AS_SET cannot be empty")
        object.__setattr__(self, "as_sets", sets)
        object.__setattr__(self, "as_path", tuple(self.as_path))
        if self.med is not None:
            _check_range("MED", self.med, MAX_U32)
        if self.local_pref is not None:
            _check_range("LOCAL_PREF", self.local_pref, MAX_U32)
        for c in self.communities:
            if len(c) != 2:
                raise ValueError(f"a community is two numbers, not {c!r}")
            _check_range("community part", c[0], MAX_U16)
            _check_range("community part", c[1], MAX_U16)
        for lc in self.large_communities:
            if len(lc) != 3:
                raise ValueError(f"a large community is three numbers, not {lc!r}")
            for part in lc:
                _check_range("large community part", part, MAX_U32)
        object.__setattr__(self, "communities", tuple(sorted({(c[0], c[1]) for c in self.communities})))
        object.__setattr__(
            self, "large_communities", tuple(sorted({(c[0], c[1], c[2]) for c in self.large_communities}))
        )

    def with_communities(self, *extra: Community) -> RouteAttributes:
        return replace(self, communities=self.communities + extra)


# --- commands -----------------------------------------------------------------------------------


def _target(neighbor: str | None) -> str:
    return "" if neighbor is None else f"neighbor {neighbor} "


@dataclass(frozen=True, slots=True)
class Announce:
    """Announce ``prefix`` to one neighbor (its peer address) or to every neighbor (``None``).
    ``next_hop`` ``None`` is ``next-hop self``: the session's local address."""

    prefix: str
    attributes: RouteAttributes = field(default_factory=RouteAttributes)
    neighbor: str | None = None
    next_hop: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalize_prefix(self.prefix))
        if self.neighbor is not None:
            object.__setattr__(self, "neighbor", normalize_address(self.neighbor))
        if self.next_hop is not None:
            object.__setattr__(self, "next_hop", normalize_address(self.next_hop))

    def encode(self) -> str:
        a = self.attributes
        parts = [
            f"{_target(self.neighbor)}announce route {self.prefix}",
            f"next-hop {self.next_hop or 'self'}",
        ]
        parts.append(f"origin {a.origin.value}")
        if a.as_path or a.as_sets:
            path = [f"[ {' '.join(map(str, a.as_path))} ]"] if a.as_path else []
            path += [f"( {' '.join(map(str, s))} )" for s in a.as_sets]
            parts.append("as-path " + " ".join(path))
        if a.med is not None:
            parts.append(f"med {a.med}")
        if a.local_pref is not None:
            parts.append(f"local-preference {a.local_pref}")
        if a.communities:
            parts.append(f"community [ {' '.join(f'{x}:{y}' for x, y in a.communities)} ]")
        if a.large_communities:
            parts.append(f"large-community [ {' '.join(f'{x}:{y}:{z}' for x, y, z in a.large_communities)} ]")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Withdraw ``prefix`` from one neighbor or all. No next hop: ExaBGP rejects ``next-hop self`` on
    an IPv6 withdrawal, and a withdrawal is matched on the prefix alone."""

    prefix: str
    neighbor: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", normalize_prefix(self.prefix))
        if self.neighbor is not None:
            object.__setattr__(self, "neighbor", normalize_address(self.neighbor))

    def encode(self) -> str:
        return f"{_target(self.neighbor)}withdraw route {self.prefix}"


@dataclass(frozen=True, slots=True)
class Reload:
    """Re-read the config file (same as SIGUSR1): unchanged neighbors keep their sessions."""

    def encode(self) -> str:
        return "reload"


@dataclass(frozen=True, slots=True)
class ShowNeighbors:
    """List the peers ExaBGP holds (``show neighbor summary``): one text line per peer, then ``done``.
    Read with :func:`summary_addresses`. With :class:`ShowConfiguration`, how a reload is confirmed:
    ExaBGP 5.0.15 answers ``reload`` with ``done`` before applying it, and may then drop it."""

    def encode(self) -> str:
        return "show neighbor summary"


@dataclass(frozen=True, slots=True)
class ShowConfiguration:
    """The neighbor configuration ExaBGP applied (``show neighbor configuration``: each neighbor's block
    as its last applied reload parsed it, then ``done``). Read with :func:`configured_descriptions`.
    Where :class:`ShowNeighbors` shows that a reload which added or removed neighbors was applied, this
    shows it for one that only changed a neighbor's settings, through the stamp in its description."""

    def encode(self) -> str:
        return "show neighbor configuration"


Command: TypeAlias = Announce | Withdraw | Reload | ShowNeighbors | ShowConfiguration


def summary_addresses(lines: Iterable[str]) -> frozenset[str]:
    """The peer addresses in ``show neighbor summary``'s answer: each peer line starts with its address
    (``%-15s``), the header and anything else do not."""
    out: set[str] = set()
    for line in lines:
        first = line.split(maxsplit=1)[0] if line.strip() else ""
        try:
            out.add(normalize_address(first))
        except ValueError:
            continue
    return frozenset(out)


_BLOCK_START = re.compile(r"^neighbor (\S+) \{$")
_DESCRIPTION = re.compile(r'^description "(.*)";$')


def configured_descriptions(lines: Iterable[str]) -> dict[str, str]:
    """Each neighbor's description, by address, in ``show neighbor configuration``'s answer (a block per
    neighbor: ``neighbor <address> {``, then ``description "...";`` among its settings)."""
    out: dict[str, str] = {}
    current: str | None = None
    for raw in lines:
        line = raw.strip()
        if (start := _BLOCK_START.match(line)) is not None:
            try:
                current = normalize_address(start.group(1))
            except ValueError:
                current = None
            continue
        if current is not None and (found := _DESCRIPTION.match(line)) is not None:
            out[current] = found.group(1)
            current = None
    return out


def encode_command(command: Command) -> bytes:
    line = command.encode()
    if "\n" in line or "\r" in line:  # every field is validated, so this is a bug, not input
        raise ValueError(f"command contains a line break: {line!r}")
    return line.encode("ascii") + b"\n"


# --- messages from ExaBGP -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiPeer:
    """Which session a message is about, as ExaBGP names it (the RIB's peer is
    :class:`agent.routing.Peer`)."""

    address: str
    local_address: str
    asn: int
    local_asn: int


@dataclass(frozen=True, slots=True)
class ApiRoute:
    """One prefix of an UPDATE as ExaBGP reports it (the cluster's route object is
    :class:`agent.cluster.objects.Route`)."""

    prefix: str
    next_hop: str | None
    attributes: RouteAttributes
    path_id: int | None = None  # RFC 7911 path identifier; None: the session has no ADD-PATH receive


@dataclass(frozen=True, slots=True)
class PeerState:
    peer: ApiPeer
    state: SessionState
    reason: str = ""  # for down: "notification received (6,2)", "closing connection", ...
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Update:
    """One UPDATE. Withdrawals without a path id (no ADD-PATH) are ``withdrawn``; with one they are
    ``withdrawn_paths``, (prefix, path id), and remove only that path of the prefix."""

    peer: ApiPeer
    announced: tuple[ApiRoute, ...] = ()
    withdrawn: tuple[str, ...] = ()  # prefixes
    time: float = 0.0
    withdrawn_paths: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Open:
    """The OPEN the peer sent (``receive { open; }``): its router id, which the JSON of the other
    messages does not carry (their ``router-id`` is ours) and best-path selection breaks ties on."""

    peer: ApiPeer
    router_id: str
    hold_time: int
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class EndOfRib:
    peer: ApiPeer
    family: str  # "ipv4 unicast"
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Notification:
    """A BGP NOTIFICATION sent or received; the session goes down right after it."""

    peer: ApiPeer
    direction: str  # "receive" or "send"
    code: int
    subcode: int
    data: str = ""  # hex
    message: str = ""  # the data as text (shutdown communication, RFC 8203)
    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Shutdown:
    """ExaBGP is exiting."""

    time: float = 0.0


@dataclass(frozen=True, slots=True)
class Ack:
    ok: bool


@dataclass(frozen=True, slots=True)
class Text:
    """Any other plain line: answers such as "reload in progress" that precede an ack."""

    text: str


Event: TypeAlias = PeerState | Update | EndOfRib | Notification | Shutdown | Open
Message: TypeAlias = Event | Ack | Text


def _get(obj: Any, key: str, what: str) -> Any:
    if not isinstance(obj, dict):
        raise ApiCodecError(f"{what}: expected an object, got {type(obj).__name__}")
    if key not in obj:
        raise ApiCodecError(f"{what}: missing {key!r}")
    return obj[key]


def _int(value: Any, what: str, maximum: int = MAX_U32) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= maximum:
        raise ApiCodecError(f"{what}: expected an integer in 0..{maximum}, got {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ApiCodecError(f"{what}: expected a string, got {type(value).__name__}")
    return value


def _time(msg: dict[str, Any]) -> float:
    value = msg.get("time", 0.0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiCodecError(f"time: expected a number, got {value!r}")
    return float(value)


def _address(value: Any, what: str) -> str:
    try:
        return normalize_address(_str(value, what))
    except ValueError as exc:
        raise ApiCodecError(f"{what}: {exc}") from None


def _peer(msg: dict[str, Any]) -> tuple[ApiPeer, dict[str, Any]]:
    neighbor = _get(msg, "neighbor", "message")
    address = _get(neighbor, "address", "neighbor")
    asn = _get(neighbor, "asn", "neighbor")
    peer = ApiPeer(
        address=_address(_get(address, "peer", "neighbor.address"), "neighbor.address.peer"),
        local_address=_address(_get(address, "local", "neighbor.address"), "neighbor.address.local"),
        asn=_int(_get(asn, "peer", "neighbor.asn"), "neighbor.asn.peer"),
        local_asn=_int(_get(asn, "local", "neighbor.asn"), "neighbor.asn.local"),
    )
    return peer, neighbor


def _as_path(value: Any) -> tuple[tuple[int, ...], tuple[tuple[int, ...], ...]]:
    if not isinstance(value, dict):
        raise ApiCodecError("as-path: expected an object")
    sequence: list[int] = []
    sets: list[tuple[int, ...]] = []
    try:
        keys = sorted(value, key=int)
    except ValueError:
        raise ApiCodecError(f"as-path: segment keys must be numbers, got {list(value)!r}") from None
    for key in keys:
        segment = value[key]
        element = _str(_get(segment, "element", "as-path segment"), "as-path element")
        members = _get(segment, "value", "as-path segment")
        if not isinstance(members, list):
            raise ApiCodecError("as-path segment value: expected a list")
        asns = [_int(a, "AS number") for a in members]
        if element == "as-sequence":
            sequence.extend(asns)
        elif element == "as-set":
            if asns:
                sets.append(tuple(asns))
        else:
            raise ApiCodecError(f"as-path: unknown segment type {element!r}")
    return tuple(sequence), tuple(sets)


def _attributes(value: Any) -> RouteAttributes:
    if not isinstance(value, dict):
        raise ApiCodecError("attribute: expected an object")
    origin = Origin.IGP
    if "origin" in value:
        try:
            origin = Origin(_str(value["origin"], "origin"))
        except ValueError:
            raise ApiCodecError(f"origin: unknown value {value['origin']!r}") from None
    as_path: tuple[int, ...] = ()
    as_sets: tuple[tuple[int, ...], ...] = ()
    if "as-path" in value:
        as_path, as_sets = _as_path(value["as-path"])
    med = _int(value["med"], "med") if "med" in value else None
    local_pref = _int(value["local-preference"], "local-preference") if "local-preference" in value else None
    communities: list[Community] = []
    for c in _list(value.get("community", []), "community"):
        parts = _list(c, "community")
        if len(parts) != 2:
            raise ApiCodecError(f"community: expected two numbers, got {c!r}")
        communities.append((_int(parts[0], "community", MAX_U16), _int(parts[1], "community", MAX_U16)))
    large: list[LargeCommunity] = []
    for c in _list(value.get("large-community", []), "large-community"):
        parts = _list(c, "large-community")
        if len(parts) != 3:
            raise ApiCodecError(f"large-community: expected three numbers, got {c!r}")
        a, b, c = (_int(part, "large-community") for part in parts)
        large.append((a, b, c))
    originator_id = _quad(value["originator-id"], "originator-id") if "originator-id" in value else None
    cluster_list = tuple(
        _quad(c, "cluster-list") for c in _list(value.get("cluster-list", []), "cluster-list")
    )
    return RouteAttributes(
        origin=origin,
        as_path=as_path,
        as_sets=as_sets,
        med=med,
        local_pref=local_pref,
        communities=tuple(communities),
        large_communities=tuple(large),
        originator_id=originator_id,
        cluster_list=cluster_list,
    )


def _quad(value: Any, what: str) -> str:
    """A dotted-quad field (originator id, cluster id, path id) in canonical form."""
    text = _str(value, what)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise ApiCodecError(f"{what}: expected a dotted quad, got {value!r}") from None


def _path_id(entry: Any, what: str) -> int | None:
    """The NLRI's RFC 7911 path identifier, which ExaBGP prints as a dotted quad; ``None`` if absent."""
    if not isinstance(entry, dict) or "path-information" not in entry:
        return None
    return int(ipaddress.IPv4Address(_quad(entry["path-information"], f"{what} path-information")))


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ApiCodecError(f"{what}: expected a list, got {type(value).__name__}")
    return value


def _nlri(entry: Any, what: str) -> str:
    text = _str(_get(entry, "nlri", what), f"{what} nlri")
    try:
        return normalize_prefix(text)
    except ValueError as exc:
        raise ApiCodecError(f"{what}: {exc}") from None


def _is_link_local(next_hop: str | None) -> bool:
    return next_hop is not None and ipaddress.ip_address(next_hop).is_link_local


def _update(peer: ApiPeer, update: Any, time: float) -> Update:
    if not isinstance(update, dict):
        raise ApiCodecError("update: expected an object")
    attributes = _attributes(update.get("attribute", {}))
    announced: dict[tuple[str, int | None], ApiRoute] = {}
    for family, by_next_hop in _dict(update.get("announce", {}), "announce").items():
        if family not in Family._value2member_map_:
            log.debug("skipping announcements of family %s from %s", family, peer.address)
            continue
        for next_hop_text, entries in _dict(by_next_hop, f"announce {family}").items():
            next_hop = None if next_hop_text == "null" else _address(next_hop_text, "next hop")
            for entry in _list(entries, f"announce {family}"):
                prefix = _nlri(entry, f"announce {family}")
                path_id = _path_id(entry, f"announce {family}")
                known = announced.get((prefix, path_id))
                # A prefix listed under a global and a link-local next hop: keep the global one.
                if known is None or (_is_link_local(known.next_hop) and not _is_link_local(next_hop)):
                    announced[prefix, path_id] = ApiRoute(prefix, next_hop, attributes, path_id)
    withdrawn: list[str] = []
    withdrawn_paths: list[tuple[str, int]] = []
    for family, entries in _dict(update.get("withdraw", {}), "withdraw").items():
        if family not in Family._value2member_map_:
            log.debug("skipping withdrawals of family %s from %s", family, peer.address)
            continue
        for entry in _list(entries, f"withdraw {family}"):
            prefix = _nlri(entry, f"withdraw {family}")
            path_id = _path_id(entry, f"withdraw {family}")
            if path_id is None:
                withdrawn.append(prefix)
            else:
                withdrawn_paths.append((prefix, path_id))
    return Update(
        peer,
        tuple(announced.values()),
        tuple(dict.fromkeys(withdrawn)),
        time,
        tuple(dict.fromkeys(withdrawn_paths)),
    )


def _dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiCodecError(f"{what}: expected an object, got {type(value).__name__}")
    return value


def _json_message(msg: Any) -> Event:
    if not isinstance(msg, dict):
        raise ApiCodecError(f"expected a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    time = _time(msg)
    if kind == "notification" and msg.get("notification") == "shutdown":
        return Shutdown(time)
    if kind == "state":
        peer, neighbor = _peer(msg)
        state_text = _str(_get(neighbor, "state", "neighbor"), "state")
        try:
            state = SessionState(state_text)
        except ValueError:
            raise ApiCodecError(f"unknown session state {state_text!r}") from None
        reason = neighbor.get("reason", "")
        return PeerState(peer, state, reason if isinstance(reason, str) else str(reason), time)
    if kind == "notification":
        peer, neighbor = _peer(msg)
        body = _get(neighbor, "notification", "neighbor")
        data = body.get("data", "") if isinstance(body, dict) else ""
        text = body.get("message", "") if isinstance(body, dict) else ""
        return Notification(
            peer,
            direction=_str(neighbor.get("direction", ""), "direction"),
            code=_int(_get(body, "code", "notification"), "notification code", 255),
            subcode=_int(_get(body, "subcode", "notification"), "notification subcode", 255),
            data=data if isinstance(data, str) else "",
            message=text if isinstance(text, str) else "",
            time=time,
        )
    if kind == "open":
        peer, neighbor = _peer(msg)
        direction = neighbor.get("direction")
        if direction != "receive":
            raise UnsupportedMessage(f"open with direction {direction!r}")
        body = _get(neighbor, "open", "neighbor")
        try:
            router_id = str(ipaddress.IPv4Address(_str(_get(body, "router_id", "open"), "open router_id")))
        except ValueError:
            raise ApiCodecError(f"open: bad router id {body.get('router_id')!r}") from None
        hold = _int(_get(body, "hold_time", "open"), "open hold_time", MAX_U16)
        return Open(peer, router_id, hold, time)
    if kind == "update":
        peer, neighbor = _peer(msg)
        direction = neighbor.get("direction")
        if direction != "receive":
            raise UnsupportedMessage(f"update with direction {direction!r}")
        message = _get(neighbor, "message", "neighbor")
        if isinstance(message, dict) and "eor" in message:
            eor = message["eor"]
            afi = _str(_get(eor, "afi", "eor"), "eor afi")
            safi = _str(_get(eor, "safi", "eor"), "eor safi")
            return EndOfRib(peer, f"{afi} {safi}", time)
        return _update(peer, _get(message, "update", "message"), time)
    raise UnsupportedMessage(f"message type {kind!r}")


def parse_line(line: str) -> Message:
    """One line from ExaBGP (without its newline) as a message; :class:`ApiCodecError` if it is not one."""
    text = line.strip()
    if text == "done":
        return Ack(ok=True)
    if text == "error":
        return Ack(ok=False)
    if not text.startswith("{"):
        return Text(text)
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ApiCodecError(f"bad JSON: {exc}") from None
    try:
        return _json_message(msg)
    except ApiCodecError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ApiCodecError(f"{type(exc).__name__}: {exc}") from None


class ApiDecoder:
    """Bytes from ExaBGP in, messages out. Partial lines wait for the rest; a line that cannot be
    parsed is logged and skipped, so one odd message never stops the stream."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self._buffer = bytearray()
        self._max_line = max_line
        self._discarding = False  # inside an over-long line: drop bytes up to its newline
        self.skipped = 0

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        out: list[Message] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line:
                    if not self._discarding:
                        log.warning("skipping a line from exabgp longer than %d bytes", self._max_line)
                        self.skipped += 1
                    self._discarding = True
                    self._buffer.clear()
                return out
            raw = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            if self._discarding:
                self._discarding = False
                continue
            message = self._parse(raw)
            if message is not None:
                out.append(message)

    def _parse(self, raw: bytes) -> Message | None:
        text = raw.decode("utf-8", errors="replace")
        if not text.strip():
            return None
        try:
            return parse_line(text)
        except UnsupportedMessage as exc:
            log.debug("ignoring exabgp message: %s", exc)
        except ApiCodecError as exc:
            log.warning("skipping a line from exabgp: %s: %.200s", exc, text)
        self.skipped += 1
        return None
