"""Routes and their attributes: what the policy engine and the decision process work on.

Everything here is a frozen, slotted value. A full table shares a few thousand attribute sets between
hundreds of thousands of prefixes (one UPDATE carries many prefixes with one set), so attributes are
:class:`Attributes` objects shared through an :class:`Interner`; a :class:`Path` is then a handful of
references. Values the decision process compares on every update (AS-path length, the neighbouring AS,
the AS path as regex text, hashes) are computed once when an object is made, not per comparison.

Communities are plain integers (standard: ``asn << 16 | value``) and 3-tuples (large), so matching is
set arithmetic; names and ``a:b`` text exist only at the edges (:func:`parse_community`,
:func:`format_community`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import TypeAlias

from agent.cluster.objects import parse_cidr
from agent.cluster.objects import parse_community as canonical_community
from common.address import IPAddress

LargeCommunity: TypeAlias = tuple[int, int, int]

MAX_U32 = (1 << 32) - 1
DEFAULT_LOCAL_PREF = 100  # what a path without LOCAL_PREF (e.g. from an external peer) is compared with

GRACEFUL_SHUTDOWN = 0xFFFF0000  # 65535:0, RFC 8326; the one definition, the wire form included
WELL_KNOWN_COMMUNITIES: Mapping[str, int] = MappingProxyType(
    {
        "graceful-shutdown": GRACEFUL_SHUTDOWN,
        "blackhole": 0xFFFF029A,  # 65535:666, RFC 7999
        "no-export": 0xFFFFFF01,  # RFC 1997
        "no-advertise": 0xFFFFFF02,
        "no-export-subconfed": 0xFFFFFF03,
    }
)
_NAMES_BY_VALUE: Mapping[int, str] = MappingProxyType({v: k for k, v in WELL_KNOWN_COMMUNITIES.items()})


class Origin(IntEnum):
    """ORIGIN; lower is preferred."""

    IGP = 0
    EGP = 1
    INCOMPLETE = 2


class SegmentType(IntEnum):
    """AS_PATH segment types, with their wire codes."""

    AS_SET = 1
    AS_SEQUENCE = 2


class PeerKind(IntEnum):
    """Where a path came from. ``LOCAL`` is this machine's own origination (preferred at "Local Route")."""

    EXTERNAL = 0
    INTERNAL = 1
    LOCAL = 2


def parse_community(text: str) -> int | LargeCommunity:
    """``a:b`` or a well-known name as a standard community integer, ``a:b:c`` as a large one."""
    canonical = canonical_community(text)
    if canonical in WELL_KNOWN_COMMUNITIES:
        return WELL_KNOWN_COMMUNITIES[canonical]
    parts = tuple(int(p) for p in canonical.split(":"))
    if len(parts) == 2:
        return parts[0] << 16 | parts[1]
    return parts[0], parts[1], parts[2]


def split_communities(texts: Iterable[str]) -> tuple[frozenset[int], frozenset[LargeCommunity]]:
    """Community strings as (standard, large) sets."""
    standard: set[int] = set()
    large: set[LargeCommunity] = set()
    for text in texts:
        value = parse_community(text)
        if isinstance(value, int):
            standard.add(value)
        else:
            large.add(value)
    return frozenset(standard), frozenset(large)


def format_community(value: int) -> str:
    """A standard community as its well-known name or ``asn:value``."""
    name = _NAMES_BY_VALUE.get(value)
    return name if name is not None else f"{value >> 16}:{value & 0xFFFF}"


def format_large_community(value: LargeCommunity) -> str:
    return f"{value[0]}:{value[1]}:{value[2]}"


@dataclass(frozen=True, slots=True, order=True)
class Prefix:
    """A destination: IP version, network as an integer, length. Cheaper to hash, compare and keep
    than :mod:`ipaddress` networks (the RIB holds one per destination); ordered by version, network,
    length."""

    version: int
    network: int
    length: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        bits = 32 if self.version == 4 else 128 if self.version == 6 else 0
        if not bits:
            raise ValueError(f"IP version must be 4 or 6, not {self.version}")
        if not 0 <= self.length <= bits or not 0 <= self.network < 1 << bits:
            raise ValueError(f"bad IPv{self.version} prefix {self.network}/{self.length}")
        if self.network & ((1 << (bits - self.length)) - 1):
            raise ValueError("host bits set")
        object.__setattr__(self, "_hash", hash((self.version, self.network, self.length)))

    def __hash__(self) -> int:  # every table is keyed by prefix: hash once, not per lookup
        return self._hash

    @classmethod
    def parse(cls, text: str) -> Prefix:
        """``10.1.0.0/16`` or ``fd00::/8``; host bits are refused (the error names the network meant)."""
        if "/" in text:
            try:
                return cls.from_network(ipaddress.ip_network(text))  # one strict parse on the hot path
            except ValueError:
                pass
        return cls.from_network(parse_cidr(text))  # raises, with the operator-friendly message

    @classmethod
    def from_network(cls, net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Prefix:
        return cls(net.version, int(net.network_address), net.prefixlen)

    @property
    def max_length(self) -> int:
        return 32 if self.version == 4 else 128

    def to_network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        if self.version == 4:
            return ipaddress.IPv4Network((self.network, self.length))
        return ipaddress.IPv6Network((self.network, self.length))

    def __str__(self) -> str:
        return str(self.to_network())


_SEGMENT_TOKEN = re.compile(r"\s*(?:(\d+)|\{([\d\s,]*)\})\s*")


@dataclass(frozen=True, slots=True)
class AsPath:
    """AS_PATH as segments (type, AS numbers), in a canonical form so equal paths compare equal: an
    AS_SET's members sorted and unique (a set has no order), adjacent AS_SEQUENCEs joined, empty
    segments dropped (the wire encoder splits sequences longer than 255). ``length`` is what best-path
    selection compares (a set counts as one, RFC 4271 9.1.2.2), ``text`` is what AS-path regexes see
    (see :func:`agent.cluster.objects.as_path_pattern`), ``neighbor_as`` the AS the path was received from
    (the first of a leading AS_SEQUENCE), which decides whether two MEDs may be compared, ``asns``
    every AS on it (loop detection)."""

    segments: tuple[tuple[SegmentType, tuple[int, ...]], ...] = ()
    length: int = field(init=False, repr=False, compare=False)
    text: str = field(init=False, repr=False, compare=False)
    neighbor_as: int | None = field(init=False, repr=False, compare=False)
    asns: frozenset[int] = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        segments: list[tuple[SegmentType, tuple[int, ...]]] = []
        for kind, numbers in self.segments:
            kind = SegmentType(kind)
            if any(not 0 <= n <= MAX_U32 for n in numbers):
                raise ValueError(f"AS numbers are 0..{MAX_U32}")
            if kind is SegmentType.AS_SET:
                numbers = tuple(sorted(set(numbers)))
            if not numbers:
                continue
            if kind is SegmentType.AS_SEQUENCE and segments and segments[-1][0] is SegmentType.AS_SEQUENCE:
                segments[-1] = (kind, segments[-1][1] + tuple(numbers))
            else:
                segments.append((kind, tuple(numbers)))
        canonical = tuple(segments)
        words = [
            " ".join(map(str, numbers))
            if kind is SegmentType.AS_SEQUENCE
            else "{" + ",".join(map(str, numbers)) + "}"
            for kind, numbers in canonical
        ]
        first = canonical[0] if canonical else None
        setattr_ = object.__setattr__
        setattr_(self, "segments", canonical)
        setattr_(self, "length", sum(len(n) if k is SegmentType.AS_SEQUENCE else 1 for k, n in canonical))
        setattr_(self, "text", " ".join(words))
        setattr_(self, "neighbor_as", first[1][0] if first and first[0] is SegmentType.AS_SEQUENCE else None)
        setattr_(self, "asns", frozenset(n for _, numbers in canonical for n in numbers))
        setattr_(self, "_hash", hash(canonical))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, *asns: int) -> AsPath:
        """One AS_SEQUENCE, leftmost (most recent) first."""
        return cls(((SegmentType.AS_SEQUENCE, asns),)) if asns else cls()

    @classmethod
    def parse(cls, text: str) -> AsPath:
        """The :attr:`text` form back: ``"65001 65002 {65003,65004}"`` (sets may use spaces too)."""
        segments: list[tuple[SegmentType, tuple[int, ...]]] = []
        run: list[int] = []
        pos = 0
        while pos < len(text):
            m = _SEGMENT_TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise ValueError(f"{text!r} is not an AS path (e.g. 65001 65002 {{65003,65004}})")
            pos = m.end()
            if m.group(1) is not None:
                run.append(int(m.group(1)))
                continue
            if run:
                segments.append((SegmentType.AS_SEQUENCE, tuple(run)))
                run = []
            members = [int(n) for n in re.split(r"[\s,]+", m.group(2).strip()) if n]
            if not members:
                raise ValueError(f"{text!r}: empty AS set")
            segments.append((SegmentType.AS_SET, tuple(members)))
        if run:
            segments.append((SegmentType.AS_SEQUENCE, tuple(run)))
        return cls(tuple(segments))

    def prepend(self, asn: int, count: int = 1) -> AsPath:
        """``asn`` ``count`` times in front, into the leading AS_SEQUENCE (a new one before a set)."""
        head = (asn,) * count
        if self.segments and self.segments[0][0] is SegmentType.AS_SEQUENCE:
            first = (SegmentType.AS_SEQUENCE, head + self.segments[0][1])
            return AsPath((first, *self.segments[1:]))
        return AsPath(((SegmentType.AS_SEQUENCE, head), *self.segments))

    def __str__(self) -> str:
        return self.text


EMPTY_AS_PATH = AsPath()
NO_COMMUNITIES: frozenset[int] = frozenset()
NO_LARGE_COMMUNITIES: frozenset[LargeCommunity] = frozenset()


@dataclass(frozen=True, slots=True)
class Attributes:
    """The path attributes of a route, shared by every prefix that carries the same ones. ``med`` and
    ``local_pref`` are ``None`` when the attribute is absent (a missing LOCAL_PREF compares as
    :data:`DEFAULT_LOCAL_PREF`; a missing MED as 0 unless the decision options say worst);
    ``next_hop`` is ``None`` for a route this machine originates (nothing to install).

    ``originator_id`` and ``cluster_list`` are RFC 4456's, set on a route a reflector passed on: the
    machine that first announced it into the AS and the reflectors' cluster ids, the last one first.
    ``originator_key`` (the originator as an integer) and ``cluster_length`` are what the decision
    process compares."""

    next_hop: IPAddress | None = None
    as_path: AsPath = EMPTY_AS_PATH
    origin: Origin = Origin.IGP
    med: int | None = None
    local_pref: int | None = None
    communities: frozenset[int] = NO_COMMUNITIES
    large_communities: frozenset[LargeCommunity] = NO_LARGE_COMMUNITIES
    originator_id: ipaddress.IPv4Address | None = None
    cluster_list: tuple[ipaddress.IPv4Address, ...] = ()
    originator_key: int | None = field(init=False, repr=False, compare=False)
    cluster_length: int = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("med", self.med), ("local_pref", self.local_pref)):
            if value is not None and not 0 <= value <= MAX_U32:
                raise ValueError(f"{name} must be 0..{MAX_U32}, got {value}")
        setattr_ = object.__setattr__
        originator = self.originator_id
        if originator is not None and not isinstance(originator, ipaddress.IPv4Address):
            originator = ipaddress.IPv4Address(originator)
            setattr_(self, "originator_id", originator)
        if self.cluster_list:
            setattr_(self, "cluster_list", tuple(ipaddress.IPv4Address(c) for c in self.cluster_list))
        setattr_(self, "originator_key", int(originator) if originator is not None else None)
        setattr_(self, "cluster_length", len(self.cluster_list))
        setattr_(
            self,
            "_hash",
            hash(
                (
                    self.next_hop,
                    self.as_path,
                    self.origin,
                    self.med,
                    self.local_pref,
                    self.communities,
                    self.large_communities,
                    originator,
                    self.cluster_list,
                )
            ),
        )

    def __hash__(self) -> int:
        return self._hash

    @property
    def effective_local_pref(self) -> int:
        return DEFAULT_LOCAL_PREF if self.local_pref is None else self.local_pref

    def replace(
        self,
        *,
        as_path: AsPath | None = None,
        med: int | None = None,
        local_pref: int | None = None,
        communities: frozenset[int] | None = None,
        large_communities: frozenset[LargeCommunity] | None = None,
    ) -> Attributes:
        """A copy with the given attributes set (``None`` keeps the current value)."""
        return dataclasses.replace(
            self,
            as_path=self.as_path if as_path is None else as_path,
            med=self.med if med is None else med,
            local_pref=self.local_pref if local_pref is None else local_pref,
            communities=self.communities if communities is None else communities,
            large_communities=self.large_communities if large_communities is None else large_communities,
        )

    def community_texts(self) -> list[str]:
        """Standard then large communities, sorted, as an operator writes them."""
        return [format_community(c) for c in sorted(self.communities)] + [
            format_large_community(c) for c in sorted(self.large_communities)
        ]


@dataclass(frozen=True, slots=True)
class Peer:
    """A BGP neighbour as the RIB knows it: one session. ``address_key`` and ``router_id_key`` are the
    integers the last two decision steps compare."""

    address: IPAddress
    asn: int
    router_id: ipaddress.IPv4Address
    kind: PeerKind
    address_key: tuple[int, int] = field(init=False, repr=False, compare=False)
    router_id_key: int = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 <= self.asn <= MAX_U32:
            raise ValueError(f"ASN must be 0..{MAX_U32}")
        object.__setattr__(self, "address_key", (self.address.version, int(self.address)))
        object.__setattr__(self, "router_id_key", int(self.router_id))
        object.__setattr__(self, "_hash", hash((self.address_key, self.asn, self.router_id_key, self.kind)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def local(cls, router_id: ipaddress.IPv4Address, asn: int) -> Peer:
        """The pseudo-peer of routes this machine originates itself."""
        return cls(ipaddress.IPv4Address(0), asn, router_id, PeerKind.LOCAL)

    @property
    def internal(self) -> bool:
        return self.kind is PeerKind.INTERNAL

    def __str__(self) -> str:
        return f"{self.address} (AS{self.asn}, {self.kind.name.lower()})"


@dataclass(frozen=True, slots=True)
class Path:
    """One route to ``prefix`` from ``peer``: received at ``received`` (the caller's clock, used by the
    optional "oldest path" step), reaching its next hop at ``igp_cost``. ``path_id`` is the RFC 7911
    path identifier: a session with ADD-PATH (a route reflector's) sends several paths to one prefix,
    and a path is known by (peer, prefix, path id); 0 on a session without it."""

    prefix: Prefix
    attrs: Attributes
    peer: Peer
    received: float
    igp_cost: int = 0
    path_id: int = 0


class Interner:
    """Shares equal attribute objects (and their AS paths and community sets) so a table of many
    prefixes holds each distinct set once. :meth:`retain` drops everything no longer in use; the RIB
    calls it as the table churns."""

    __slots__ = ("_as_paths", "_attrs", "_communities", "_large")

    def __init__(self) -> None:
        self._attrs: dict[Attributes, Attributes] = {}
        self._as_paths: dict[AsPath, AsPath] = {}
        self._communities: dict[frozenset[int], frozenset[int]] = {}
        self._large: dict[frozenset[LargeCommunity], frozenset[LargeCommunity]] = {}

    def __len__(self) -> int:
        return len(self._attrs)

    def attributes(self, attrs: Attributes) -> Attributes:
        """The shared object equal to ``attrs`` (``attrs`` itself the first time it is seen)."""
        known = self._attrs.get(attrs)
        if known is not None:
            return known
        as_path = self._as_paths.setdefault(attrs.as_path, attrs.as_path)
        communities = self._communities.setdefault(attrs.communities, attrs.communities)
        large = self._large.setdefault(attrs.large_communities, attrs.large_communities)
        if (
            as_path is not attrs.as_path
            or communities is not attrs.communities
            or large is not attrs.large_communities
        ):
            attrs = dataclasses.replace(
                attrs, as_path=as_path, communities=communities, large_communities=large
            )
        self._attrs[attrs] = attrs
        return attrs

    def retain(self, live: Iterable[Attributes]) -> None:
        """Forget every object not reachable from ``live``."""
        keep = {id(a): a for a in live}
        self._attrs = {a: a for a in keep.values() if self._attrs.get(a) is a}
        self._as_paths = {a.as_path: a.as_path for a in self._attrs}
        self._communities = {a.communities: a.communities for a in self._attrs}
        self._large = {a.large_communities: a.large_communities for a in self._attrs}
