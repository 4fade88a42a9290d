"""The cluster objects an operator edits on any machine and every machine holds: VIPs, routes, route
policy sets, per-machine settings and mesh settings.

Two layers of validation, on purpose:

* **Shape** (the pydantic models): everything that can be decided from one object alone — field types,
  ranges, a prefix with host bits, a bad regex, a malformed community, fields that mean nothing for a
  health check's type. Errors carry the field path.
* **Context** (:func:`validate`): everything that depends on the rest of the cluster — an address
  outside every routable CIDR, an unknown machine, an unknown policy set, a duplicate name, deleting a
  policy set still attached. It is a pure function of the object and a :class:`View`, so the store can
  run it on local writes and the API can report it for replicated objects that no longer fit.

Replicated objects are accepted even when their context no longer validates (replicas must converge);
only local writes are refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any, Literal, Protocol, TypeAlias
from urllib.parse import urlsplit

import re2
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gossip import check_member_name

MAX_U32 = (1 << 32) - 1
MAX_U16 = (1 << 16) - 1
MAX_SECONDS = 86_400.0
MAX_THRESHOLD = 1_000
MAX_LIST = 1_000
MAX_REGEX = 1_024

# VIP, route and policy-set names: a lowercase DNS label, so they work in URLs, CLI args and logs as-is.
Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
# Machine names are gossip member names (by default the host name), so gossip's one rule decides them
# (gossip.names): the decoder refuses a message naming a member this model could not hold.
MachineName = Annotated[str, AfterValidator(check_member_name)]

WELL_KNOWN_COMMUNITIES = frozenset(
    {"no-export", "no-advertise", "no-export-subconfed", "graceful-shutdown", "blackhole"}
)
DEFAULT_ROUTABLE_CIDRS = ("100.64.0.0/10", "fd00::/8")
MESH_KEY = "mesh"


class Kind(StrEnum):
    VIP = "vip"
    ROUTE = "route"
    POLICY_SET = "policy-set"
    MACHINE = "machine"
    MESH = "mesh"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _unique(values: Sequence[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


def parse_cidr(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR with an explicit length and no host bits; the error suggests the network that was meant."""
    if "/" not in value:
        raise ValueError(f"{value!r} is not a CIDR (expected address/length, e.g. 10.1.0.0/16)")
    try:
        loose = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR (expected address/length, e.g. 10.1.0.0/16)") from None
    if ipaddress.ip_interface(value).ip != loose.network_address:
        raise ValueError(f"host bits set; did you mean {loose}?")
    return loose


def _parse_host_port(value: str) -> None:
    """``host:port``, ``[v6]:port`` or ``:port`` (the machine running the check)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ValueError("expected host:port, e.g. 127.0.0.1:6443 or :6443")
    if not port.isdigit() or not 1 <= int(port) <= MAX_U16:
        raise ValueError(f"port must be 1..65535, got {port!r}")
    if host.startswith("["):
        if not host.endswith("]"):
            raise ValueError("unbalanced [ in host")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host[1:-1]!r} is not an IPv6 address") from None
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets: [::1]:6443")
    elif host and not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})", host):
        raise ValueError(f"{host!r} is not a host name or address")


class HealthCheck(_Model):
    """When a VIP or route may be announced. Fields that mean nothing for ``type`` are refused rather
    than ignored, so an operator never believes a setting is in force when it is not.

    ``target``: ``host:port`` for tcp and grpc (an empty host, ``:6443``, is the machine running the
    check), an ``http://`` or ``https://`` URL for http, a command line for exec."""

    type: Literal["tcp", "http", "grpc", "exec"]
    target: str = Field(min_length=1, max_length=2048)
    interval: float = Field(default=10.0, gt=0, le=MAX_SECONDS)
    timeout: float = Field(default=2.0, gt=0, le=MAX_SECONDS, validate_default=True)
    healthy_threshold: int = Field(default=2, ge=1, le=MAX_THRESHOLD)
    unhealthy_threshold: int = Field(default=3, ge=1, le=MAX_THRESHOLD)
    expected_status: tuple[int, int] | None = Field(default=None, validate_default=True)
    tls_skip_verify: bool | None = Field(default=None, validate_default=True)
    service: str | None = Field(default=None, max_length=1024)

    @field_validator("target")
    @classmethod
    def _target(cls, value: str, info: ValidationInfo) -> str:
        kind = info.data.get("type")
        if kind in ("tcp", "grpc"):
            _parse_host_port(value)
        elif kind == "http":
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("expected an http:// or https:// URL, e.g. http://127.0.0.1:8080/healthz")
            try:
                parts.port  # noqa: B018 -- raises on a bad port
            except ValueError as err:
                raise ValueError(f"bad port in URL: {err}") from None
        elif kind == "exec":
            if not value.strip():
                raise ValueError("the command is empty")
            if "\x00" in value:
                raise ValueError("the command contains a NUL byte")
        return value

    @field_validator("timeout")
    @classmethod
    def _timeout(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("interval")
        if interval is not None and value >= interval:
            raise ValueError(f"must be less than interval ({interval:g} s)")
        return value

    @field_validator("expected_status")
    @classmethod
    def _expected_status(cls, value: tuple[int, int] | None, info: ValidationInfo) -> tuple[int, int] | None:
        kind = info.data.get("type")
        if kind != "http":
            if value is not None:
                raise ValueError(f"only for http checks, not {kind}")
            return None
        if value is None:
            return (200, 399)
        lo, hi = value
        if not (100 <= lo <= 599 and 100 <= hi <= 599):
            raise ValueError("status codes are 100..599")
        if lo > hi:
            raise ValueError(f"[lo, hi] with lo <= hi, got [{lo}, {hi}]")
        return value

    @field_validator("tls_skip_verify")
    @classmethod
    def _tls_skip_verify(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        kind = info.data.get("type")
        if kind != "http":
            if value is not None:
                raise ValueError(f"only for http checks, not {kind}")
            return None
        return bool(value)

    @field_validator("service")
    @classmethod
    def _service(cls, value: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if value is not None and kind != "grpc":
            raise ValueError(f"only for grpc checks, not {kind}")
        return value


def _unique_machines(values: list[str]) -> list[str]:
    _unique(values, "machine")
    return values


Machines = Annotated[list[MachineName], Field(max_length=MAX_LIST), AfterValidator(_unique_machines)]


class Vip(_Model):
    """A single address announced (as a /32 or /128) by whichever assigned machines are healthy."""

    name: Name
    address: str
    enabled: bool = True
    machines: Machines = Field(default_factory=list)
    health_check: HealthCheck | None = None
    holdoff: float = Field(default=0.0, ge=0, le=MAX_SECONDS)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise ValueError("a scoped (link-local %zone) address cannot be announced")
        return str(address)


class Route(_Model):
    """A prefix announced by the assigned machines, e.g. a LAN behind a gateway."""

    name: Name
    prefix: str
    enabled: bool = True
    machines: Machines = Field(default_factory=list)
    health_check: HealthCheck | None = None

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return str(parse_cidr(value))


class PrefixMatch(_Model):
    """A prefix-list entry. Without ``ge``/``le`` it matches exactly ``prefix``; with them it matches
    ``prefix`` and its more-specifics whose length is in ``[ge, le]`` (``ge`` defaults to the prefix's own
    length, ``le`` to 32 or 128), as on Cisco and BIRD."""

    prefix: str
    ge: int | None = Field(default=None, ge=0, le=128)
    le: int | None = Field(default=None, ge=0, le=128)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return str(parse_cidr(value))

    @field_validator("ge")
    @classmethod
    def _ge(cls, value: int | None, info: ValidationInfo) -> int | None:
        prefix = info.data.get("prefix")
        if value is not None and prefix is not None:
            net = ipaddress.ip_network(prefix)
            if not net.prefixlen <= value <= net.max_prefixlen:
                raise ValueError(f"must be in {net.prefixlen}..{net.max_prefixlen} for {prefix}")
        return value

    @field_validator("le")
    @classmethod
    def _le(cls, value: int | None, info: ValidationInfo) -> int | None:
        prefix = info.data.get("prefix")
        if value is not None and prefix is not None:
            net = ipaddress.ip_network(prefix)
            low = info.data.get("ge") or net.prefixlen
            if not low <= value <= net.max_prefixlen:
                raise ValueError(f"must be in {low}..{net.max_prefixlen} for {prefix} (len <= ge <= le)")
        return value

    def length_range(self) -> tuple[int, int]:
        """The prefix lengths this entry matches."""
        net = ipaddress.ip_network(self.prefix)
        if self.ge is None and self.le is None:
            return net.prefixlen, net.prefixlen
        low = self.ge if self.ge is not None else net.prefixlen
        return low, self.le if self.le is not None else net.max_prefixlen


def parse_community(value: str) -> str:
    """A community in canonical form: standard ``ASN:VAL`` (16 bits each), large ``A:B:C`` (32 bits
    each), or a well-known name (``no-export``, ``no-advertise``, ``no-export-subconfed``,
    ``graceful-shutdown``, ``blackhole``)."""
    if value in WELL_KNOWN_COMMUNITIES:
        return value
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(p.isascii() and p.isdigit() for p in parts):
        raise ValueError(
            f"{value!r} is not a community: expected ASN:VALUE, A:B:C (large) or one of "
            + ", ".join(sorted(WELL_KNOWN_COMMUNITIES))
        )
    limit = MAX_U16 if len(parts) == 2 else MAX_U32
    numbers = [int(p) for p in parts]
    if any(n > limit for n in numbers):
        size = "standard communities are 0..65535:0..65535" if len(parts) == 2 else "large: 0..4294967295"
        raise ValueError(f"{value!r} out of range ({size})")
    return ":".join(str(n) for n in numbers)


def _unique_communities(values: list[str]) -> list[str]:
    _unique(values, "community")
    return values


Community = Annotated[str, AfterValidator(parse_community)]
Communities = Annotated[list[Community], Field(max_length=MAX_LIST), AfterValidator(_unique_communities)]


class AsPathPattern(Protocol):
    """A compiled AS-path regex. RE2 runs it, so matching takes time linear in the path whatever the
    pattern: ``^(65001_?)+$`` cannot backtrack exponentially on the routing path."""

    def search(self, text: str) -> object | None: ...


def as_path_pattern(regex: str) -> AsPathPattern:
    """Compile an AS-path regex (Python :mod:`re` syntax, the subset RE2 runs). The path is matched as
    space-separated AS numbers, an AS_SET written in braces with commas as routers show it
    (``"65001 65002 {65003,65004}"``, an empty path is ``""``), with ``search``. ``_`` outside a
    character class means a boundary (the start, the end, a space, a comma or a brace) as on routers,
    so ``_65001_`` matches the AS anywhere (in a set too), ``^65001_`` a path received from it,
    ``_65001$`` a path it originated, ``^$`` a path originated in this AS, and ``^65001_[0-9]+$`` one
    exactly two ASes long. ``_`` consumes the separator, so ``_65001_65002_`` means 65002 straight
    after 65001; ``[_]`` is a literal underscore. :class:`ValueError` for a pattern RE2 refuses
    (backreferences, lookaround, counted repetitions over 1000, too large a program)."""
    options = re2.Options()
    options.log_errors = False  # the refusal goes to whoever saves the set, not to stderr
    try:
        pattern: AsPathPattern = re2.compile(as_path_source(regex), options)
    except re2.error as err:
        reason = err.args[0] if err.args else err
        if isinstance(reason, bytes):
            reason = reason.decode(errors="replace")
        raise ValueError(f"not supported by RE2 (linear time): {reason}") from None
    return pattern


def as_path_source(regex: str) -> str:
    """The regex :func:`as_path_pattern` compiles: ``regex`` with each boundary ``_`` spelled out."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(regex):
        char = regex[i]
        if char == "\\" and i + 1 < len(regex):
            out.append(regex[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # "[]...]" and "[^]...]": a leading ] is literal and does not close the class.
            j = i + 1
            if regex[j : j + 1] == "^":
                j += 1
            if regex[j : j + 1] == "]":
                out.append(regex[i : j + 1])
                i = j + 1
                continue
        elif char == "_":
            out.append("(?:^|[ ,{}]|$)")
            i += 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


class PolicyMatch(_Model):
    """A rule matches a route when every condition given holds (an empty match matches every route):
    its prefix is in any ``prefix_list`` entry, it carries any of ``communities``, and ``as_path``
    (see :func:`as_path_pattern`) is found in its AS path."""

    prefix_list: list[PrefixMatch] = Field(default_factory=list, max_length=MAX_LIST)
    communities: Communities = Field(default_factory=list)
    as_path: str | None = Field(default=None, max_length=MAX_REGEX)

    @field_validator("as_path")
    @classmethod
    def _as_path(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)  # first as written, so the error's position is in the operator's text
            except re.error as err:
                raise ValueError(f"bad regex: {err}") from None
            try:
                as_path_pattern(value)
            except ValueError as err:
                raise ValueError(f"bad regex: {err}") from None
        return value


class CommunityActions(_Model):
    """``replace`` sets the route's communities outright; ``add`` and ``remove`` edit them (remove first)."""

    add: Communities | None = None
    remove: Communities | None = None
    replace: Communities | None = None

    @model_validator(mode="after")
    def _one_mode(self) -> CommunityActions:
        if self.replace is not None and (self.add is not None or self.remove is not None):
            raise ValueError("replace cannot be combined with add or remove")
        if self.add is None and self.remove is None and self.replace is None:
            raise ValueError("give add, remove or replace")
        return self


class AsPrepend(_Model):
    asn: int = Field(ge=1, le=MAX_U32)
    count: int = Field(default=1, ge=1, le=10)


class PolicyActions(_Model):
    set_local_pref: int | None = Field(default=None, ge=0, le=MAX_U32)
    set_med: int | None = Field(default=None, ge=0, le=MAX_U32)
    communities: CommunityActions | None = None
    as_prepend: AsPrepend | None = None


class PolicyRule(_Model):
    """Rules are tried in order; the first that matches applies its actions and decides ``result``."""

    name: str | None = Field(default=None, max_length=128)
    description: str | None = Field(default=None, max_length=1024)
    match: PolicyMatch = Field(default_factory=PolicyMatch)
    actions: PolicyActions = Field(default_factory=PolicyActions)
    result: Literal["accept", "reject"] = "accept"


class PolicySet(_Model):
    """An ordered rule list applied on import or export. ``default`` (for a route no rule matched) is
    ``reject`` unless said otherwise, as RFC 8212 asks: a forgotten rule then drops a route rather than
    leaking one."""

    name: Name
    rules: list[PolicyRule] = Field(default_factory=list, max_length=MAX_LIST)
    default: Literal["accept", "reject"] = "reject"


def _unique_policies(values: list[str]) -> list[str]:
    _unique(values, "policy set")
    return values


PolicyNames = Annotated[list[Name], Field(max_length=100), AfterValidator(_unique_policies)]


class MachineSettings(_Model):
    """Per-machine settings. A disabled machine announces nothing (maintenance, drain)."""

    name: MachineName
    enabled: bool = True
    import_policies: PolicyNames = Field(default_factory=list)
    export_policies: PolicyNames = Field(default_factory=list)


class MeshSettings(_Model):
    """Mesh-wide settings; a singleton keyed ``mesh``. ``routable_cidrs`` defaults to the CGNAT range and
    the IPv6 ULA range: addresses no public network routes, which is what a mesh's VIPs should be."""

    routable_cidrs: list[str] = Field(
        default_factory=lambda: list(DEFAULT_ROUTABLE_CIDRS), min_length=1, max_length=MAX_LIST
    )

    @field_validator("routable_cidrs")
    @classmethod
    def _cidrs(cls, values: list[str]) -> list[str]:
        out = [str(parse_cidr(v)) for v in values]
        _unique(out, "CIDR")
        return out

    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c) for c in self.routable_cidrs]


ClusterObject: TypeAlias = Vip | Route | PolicySet | MachineSettings | MeshSettings

MODELS: Mapping[Kind, type[ClusterObject]] = MappingProxyType(
    {
        Kind.VIP: Vip,
        Kind.ROUTE: Route,
        Kind.POLICY_SET: PolicySet,
        Kind.MACHINE: MachineSettings,
        Kind.MESH: MeshSettings,
    }
)


def key_of(obj: ClusterObject) -> str:
    """The object's name within its kind; the mesh settings are a singleton keyed ``mesh``."""
    return MESH_KEY if isinstance(obj, MeshSettings) else obj.name


def kind_of(obj: ClusterObject) -> Kind:
    for kind, model in MODELS.items():
        if type(obj) is model:
            return kind
    raise TypeError(f"not a cluster object: {type(obj).__name__}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation failure: ``loc`` is the field path (as pydantic reports it), ``msg`` the reason."""

    loc: tuple[str | int, ...]
    msg: str

    def __str__(self) -> str:
        path = ".".join(str(p) for p in self.loc)
        return f"{path}: {self.msg}" if path else self.msg


def problems_from_error(error: ValidationError) -> list[Problem]:
    """pydantic's errors as :class:`Problem` s, without its ``Value error,`` prefix."""
    out = []
    for item in error.errors(include_url=False):
        msg = str(item["msg"])
        msg = msg.removeprefix("Value error, ")
        out.append(Problem(tuple(item["loc"]), msg))
    return out


def parse(kind: Kind, data: Mapping[str, Any]) -> ClusterObject:
    """Validate a JSON-like mapping as an object of ``kind``; raises :class:`pydantic.ValidationError`."""
    return MODELS[kind].model_validate(data)


@dataclass(frozen=True)
class View:
    """What the context checks see: the live objects by kind and name, and the machines gossip knows of
    (current or past members)."""

    objects: Mapping[Kind, Mapping[str, ClusterObject]] = field(default_factory=dict)
    known_machines: frozenset[str] = frozenset()

    def of(self, kind: Kind) -> Mapping[str, ClusterObject]:
        return self.objects.get(kind, {})

    def mesh(self) -> MeshSettings:
        mesh = self.of(Kind.MESH).get(MESH_KEY)
        return mesh if isinstance(mesh, MeshSettings) else MeshSettings()


def _listing(names: set[str] | frozenset[str], limit: int = 20) -> str:
    if not names:
        return "none"
    ordered = sorted(names)
    text = ", ".join(ordered[:limit])
    return text + (f" and {len(ordered) - limit} more" if len(ordered) > limit else "")


def _check_machines(
    machines: Sequence[str], view: View, previous: ClusterObject | None, loc: str
) -> list[Problem]:
    grandfathered = set(getattr(previous, "machines", ()) or ())
    return [
        Problem((loc, i), f"unknown machine {m!r} (known: {_listing(view.known_machines)})")
        for i, m in enumerate(machines)
        if m not in view.known_machines and m not in grandfathered
    ]


def _outside(address: str, mesh: MeshSettings) -> bool:
    ip = ipaddress.ip_address(address)
    return not any(ip.version == net.version and ip in net for net in mesh.networks())


def validate(
    kind: Kind,
    obj: ClusterObject,
    view: View,
    *,
    creating: bool = False,
    previous: ClusterObject | None = None,
) -> list[Problem]:
    """The context checks for writing ``obj``. ``creating`` adds the duplicate-name check; machines
    already listed by ``previous`` (the version being replaced) are not re-checked, so an edit to an
    object is not refused because a machine it already named has since been reaped from gossip."""
    problems: list[Problem] = []
    if creating and key_of(obj) in view.of(kind):
        problems.append(Problem(("name",), f"a {kind.value} named {key_of(obj)!r} already exists"))
    if isinstance(obj, Vip):
        mesh = view.mesh()
        if _outside(obj.address, mesh):
            problems.append(
                Problem(
                    ("address",),
                    f"{obj.address} is outside every routable CIDR "
                    f"(routable: {', '.join(mesh.routable_cidrs)})",
                )
            )
        problems += _check_machines(obj.machines, view, previous, "machines")
    elif isinstance(obj, Route):
        problems += _check_machines(obj.machines, view, previous, "machines")
    elif isinstance(obj, MachineSettings):
        if obj.name not in view.known_machines and previous is None:
            problems.append(
                Problem(("name",), f"unknown machine {obj.name!r} (known: {_listing(view.known_machines)})")
            )
        defined = set(view.of(Kind.POLICY_SET))
        for loc in ("import_policies", "export_policies"):
            for i, name in enumerate(getattr(obj, loc)):
                if name not in defined:
                    problems.append(
                        Problem((loc, i), f"unknown policy set {name!r} (defined: {_listing(defined)})")
                    )
    elif isinstance(obj, MeshSettings):
        for vip in view.of(Kind.VIP).values():
            if isinstance(vip, Vip) and _outside(vip.address, obj):
                problems.append(
                    Problem(
                        ("routable_cidrs",),
                        f"vip {vip.name} ({vip.address}) would be outside every routable CIDR",
                    )
                )
    return problems


def validate_delete(kind: Kind, name: str, view: View) -> list[str]:
    """Where the object is still in use (e.g. ``machine node2 export_policies``); empty if it may go."""
    where: list[str] = []
    if kind is Kind.POLICY_SET:
        for machine in sorted(view.of(Kind.MACHINE)):
            settings = view.of(Kind.MACHINE)[machine]
            assert isinstance(settings, MachineSettings)
            for loc in ("import_policies", "export_policies"):
                if name in getattr(settings, loc):
                    where.append(f"machine {machine} {loc}")
    return where
