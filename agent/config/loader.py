"""The agent's configuration: one TOML file, optionally overridden by command-line flags.

Both sources go through the same validation, so a value is checked the same way wherever it came
from, and every error names where it came from (file or flag), the key, and what is wrong. Loading is
pure apart from reading the file: the host name and the advertise-address probe are passed in.

Addresses are ``host:port`` strings; IPv6 hosts are bracketed (``[::1]:7946``). A bare string with
several colons is taken as an IPv6 address with no port.

Advertise address: when not set, it is the bind address; when the bind host is unspecified
(``0.0.0.0`` or ``::``) the address the kernel would use towards the default route is advertised, and
if there is none (no default route, e.g. in a lab namespace) ``advertise`` must be set explicitly. An
advertise port of 0 (the default when binding port 0) means "the port the transport actually bound".

Relative paths in the file are relative to the file's directory; relative paths given as flags are
relative to the working directory.

Exec health checks run commands as the agent's user, so only the machine's own config file can allow
them: ``allow_exec_checks`` and ``exec_check_paths`` are refused when they come from anywhere else.
``agent.health.execpolicy`` turns them into the yes/no (and the reason) a check gets.

``[wireguard]`` (off by default) becomes :class:`transit.config.TransitConfig`; its ``[wireguard.path]``
and ``[wireguard.relay]`` tables are the path monitor's and relay selection's thresholds, field for field,
plus ``[wireguard.relay] enabled`` (default true): false keeps this machine from relaying for others.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_type_hints

from agent.bgp.settings import DEFAULT_ROUTE_PROTOCOL as BGP_ROUTE_PROTOCOL
from agent.bgp.settings import BgpSettings, parse_bgp
from common.address import Address, format_address, split_hostport
from gossip.config import GossipConfig
from gossip.keyring import Keyring, KeyringError
from gossip.wire import MAX_NAME_LEN
from transit.config import BACKENDS, TransitConfig, check_ifname
from transit.endpoint import Endpoint
from transit.pathmon import PathConfig
from transit.relay import SelectorConfig

DEFAULT_GOSSIP_PORT = 7946
DEFAULT_HTTP_LISTEN = "127.0.0.1:7947"
DEFAULT_STATE_DIR = "/var/lib/wiremesh"
DEFAULT_TOMBSTONE_KEEP_S = (
    7 * 24 * 3600.0
)  # agent.cluster.replication's default; not imported (it pulls in trio)
COMMAND_LINE = "command line"

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Top-level keys whose command-line flag is not simply ``--key-with-dashes``.
_FLAG_NAMES = MappingProxyType({"keyring_file": "--keyring", "http_listen": "--http"})
_TOP_KEYS = (
    "name",
    "bind",
    "advertise",
    "join",
    "join_attempts",
    "join_retry_interval",
    "keyring_file",
    "insecure",
    "cluster",
    "http_listen",
    "state_dir",
    "log_format",
    "log_level",
    "tombstone_keep",
    "allow_exec_checks",
    "exec_check_paths",
    "gossip",
    "bgp",
    "wireguard",
)
# Keys that only the config file may set: they let cluster objects run commands on this machine.
_FILE_ONLY_KEYS = ("allow_exec_checks", "exec_check_paths")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")


def flag_for(key: str) -> str:
    """The command-line flag that stands in for a top-level config key."""
    return _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


class ConfigError(ValueError):
    """A configuration that cannot be used; ``str()`` is the one line the CLI prints."""

    def __init__(self, source: str, key: str | None, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return format_address((self.host, self.port))

    @property
    def address(self) -> Address:
        return (self.host, self.port)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    bind: HostPort
    advertise: HostPort  # port 0: whatever port the transport bound
    join: tuple[HostPort, ...]
    join_attempts: int
    join_retry_interval: float
    keyring_file: Path | None
    insecure: bool
    cluster: str
    http_listen: HostPort
    state_dir: Path
    log_format: LogFormat
    log_level: str
    tombstone_keep: float  # seconds a deleted object's tombstone is kept before it is forgotten
    allow_exec_checks: bool
    exec_check_paths: tuple[str, ...]  # absolute paths; empty: any command, once allowed
    gossip: GossipConfig
    bgp: BgpSettings = field(default_factory=BgpSettings)  # off unless the file's [bgp] table enables it
    wireguard: TransitConfig = field(default_factory=TransitConfig)  # off unless [wireguard] enables it


def parse_listen(text: str) -> HostPort:
    """A listen address given as a string (``serve_api``); ValueError when it is not one."""
    host, port = split_hostport(text, None)
    return HostPort(host, port)


def default_route_address(family: socket.AddressFamily) -> str | None:
    """The source address the kernel picks towards the default route, or None.

    Connecting a UDP socket sends nothing; it only asks the routing table. The destinations are
    documentation addresses, so no real host is ever named.
    """
    target = "2001:db8::1" if family == socket.AF_INET6 else "192.0.2.1"
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))
            host = str(sock.getsockname()[0])
    except OSError:
        return None
    ip = ipaddress.ip_address(host.split("%")[0])
    return None if ip.is_loopback or ip.is_unspecified else host


_TYPE_NAMES = MappingProxyType(
    {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "table"}
)


def _type_name(kind: type) -> str:
    return _TYPE_NAMES.get(kind, kind.__name__)


class _Reader:
    """Typed access to the merged raw values, raising ConfigError labelled with each value's origin."""

    def __init__(self, path: Path | None, file_values: Mapping[str, Any], flags: Mapping[str, Any]) -> None:
        self.path = path
        self.values: dict[str, Any] = {**file_values, **flags}
        self.from_flag = frozenset(flags)

    def error(self, key: str, problem: str) -> ConfigError:
        top = key.split(".")[0].split("[")[0]
        if top in self.from_flag or self.path is None:
            return ConfigError(COMMAND_LINE, flag_for(top), problem)
        return ConfigError(str(self.path), key, problem)

    def base_dir(self, key: str) -> Path | None:
        return None if key in self.from_flag or self.path is None else self.path.parent

    def typed(self, key: str, value: Any, kind: type) -> Any:
        if kind is float and type(value) is int:
            return float(value)
        if type(value) is not kind:
            raise self.error(key, f"expected {_type_name(kind)}, got {_type_name(type(value))} {value!r}")
        return value

    def get(self, key: str, kind: type, default: Any) -> Any:
        return self.typed(key, self.values[key], kind) if key in self.values else default

    def text(self, key: str, default: str) -> str:
        value: str = self.get(key, str, default)
        if not value or any(c.isspace() or not c.isprintable() for c in value):
            raise self.error(key, f"must be non-empty with no spaces or control characters (got {value!r})")
        return value

    def number(self, key: str, kind: type, default: float, minimum: float, *, exclusive: bool = False) -> Any:
        value = self.get(key, kind, default)
        if not math.isfinite(value):  # TOML has inf and nan
            raise self.error(key, f"must be a finite number (got {value})")
        if value < minimum or (exclusive and value == minimum):
            raise self.error(key, f"out of range: {value} (must be {'>' if exclusive else '>='} {minimum})")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value: str = self.get(key, str, default)
        if value not in options:
            raise self.error(key, f"must be one of {', '.join(options)} (got {value!r})")
        return value

    def address(
        self, key: str, text: str, default_port: int | None, *, names: bool, min_port: int = 0
    ) -> HostPort:
        try:
            host, port = split_hostport(text, default_port)
        except ValueError as exc:
            raise self.error(key, f"bad address {text!r}: {exc}") from None
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            if not names or not _HOSTNAME_RE.match(host) or host.replace(".", "").isdigit():
                wanted = "an IP address or host name" if names else "an IP address"
                raise self.error(key, f"bad address {text!r}: host must be {wanted}") from None
        if port < min_port:
            raise self.error(key, f"bad address {text!r}: port must be {min_port}-65535")
        return HostPort(host, port)

    def path_value(self, key: str) -> Path | None:
        value: str | None = self.get(key, str, None)
        if value is None:
            return None
        if not value:
            raise self.error(key, "must not be empty")
        path = Path(value).expanduser()
        base = self.base_dir(key)
        return base / path if base is not None and not path.is_absolute() else path


def _check_unknown(reader: _Reader, table: Mapping[str, Any], known: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {prefix + close[0]!r}?)" if close else ""
            raise reader.error(prefix + key, f"unknown key{hint}")


def _table(reader: _Reader, key: str, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise reader.error(key, f"expected table, got {_type_name(type(table))}")
    return table


def _fields_table(reader: _Reader, key: str, table: Any, cls: type, *, non_negative: bool = False) -> Any:
    """A table that is a core's own config class, field for field (``[gossip]``, ``[wireguard.path]``,
    ``[wireguard.relay]``): unknown keys, types and the class's own checks, each error naming its key
    (the class names the offending field first in its messages; failing that, the only key given)."""
    table = _table(reader, key, table)
    names = tuple(f.name for f in fields(cls))
    _check_unknown(reader, table, names, f"{key}.")
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, raw in table.items():
        value = reader.typed(f"{key}.{name}", raw, hints[name])
        if non_negative and (not math.isfinite(value) or value < 0):
            raise reader.error(f"{key}.{name}", f"must be a finite number >= 0 (got {value})")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except ValueError as exc:
        message = str(exc)
        culprit = min((n for n in names if n in message), key=message.find, default=None)
        if culprit is None and len(kwargs) == 1:
            culprit = next(iter(kwargs))
        raise reader.error(f"{key}.{culprit}" if culprit else key, message) from None


_WIREGUARD_KEYS = (
    "enabled",
    "interface",
    "listen_port",
    "mesh_address",
    "endpoint",
    "backend",
    "wireguard_go",
    "persistent_keepalive",
    "route_protocol",
    "remove_grace",
    "path",
    "relay",
)


def _wireguard_config(reader: _Reader) -> TransitConfig:
    """The ``[wireguard]`` table; off (and everything else ignored but still checked) by default."""
    table = _table(reader, "wireguard", reader.values.get("wireguard", {}))
    _check_unknown(reader, table, _WIREGUARD_KEYS, "wireguard.")
    default = TransitConfig()

    def get(name: str, kind: type, fallback: Any) -> Any:
        return reader.typed(f"wireguard.{name}", table[name], kind) if name in table else fallback

    def ranged(name: str, fallback: int, lo: int, hi: int) -> int:
        value: int = get(name, int, fallback)
        if not lo <= value <= hi:
            raise reader.error(f"wireguard.{name}", f"out of range: {value} (must be {lo}-{hi})")
        return value

    enabled: bool = get("enabled", bool, False)
    interface: str = get("interface", str, default.interface)
    try:
        check_ifname(interface)
    except ValueError as exc:
        raise reader.error("wireguard.interface", str(exc)) from None
    listen_port = ranged("listen_port", default.listen_port, 1, 65535)
    mesh_address = None
    if "mesh_address" in table:
        text: str = get("mesh_address", str, "")
        try:
            mesh_address = ipaddress.ip_address(text)
        except ValueError:
            raise reader.error("wireguard.mesh_address", f"not an IP address: {text!r}") from None
        if mesh_address.is_unspecified or mesh_address.is_loopback or mesh_address.is_multicast:
            raise reader.error("wireguard.mesh_address", f"{text} cannot be a machine's mesh address")
    elif enabled:
        raise reader.error(
            "wireguard.mesh_address",
            "missing required key: this machine's address in the mesh (e.g. 100.64.0.1), unique per machine",
        )
    endpoint = None
    if "endpoint" in table:
        text = get("endpoint", str, "")
        hp = reader.address("wireguard.endpoint", text, listen_port, names=False, min_port=1)
        endpoint = Endpoint(ipaddress.ip_address(hp.host), hp.port)
    backend: str = get("backend", str, default.backend)
    if backend not in BACKENDS:
        raise reader.error("wireguard.backend", f"must be one of {', '.join(BACKENDS)} (got {backend!r})")
    binary: str = get("wireguard_go", str, default.wireguard_go)
    if not binary.strip():
        raise reader.error("wireguard.wireguard_go", "must not be empty")
    remove_grace: float = get("remove_grace", float, default.remove_grace)
    if not math.isfinite(remove_grace) or remove_grace < 0:
        raise reader.error("wireguard.remove_grace", f"must be a finite number >= 0 (got {remove_grace})")
    keepalive = ranged("persistent_keepalive", default.persistent_keepalive, 0, 65535)
    protocol = ranged("route_protocol", default.route_protocol, 5, 255)
    bgp = reader.values.get("bgp")
    if isinstance(bgp, dict) and protocol == bgp.get("route_protocol", BGP_ROUTE_PROTOCOL):
        raise reader.error(
            "wireguard.route_protocol",
            f"{protocol} is bgp.route_protocol too: each must mark only its own kernel routes",
        )
    path = _fields_table(reader, "wireguard.path", table.get("path", {}), PathConfig, non_negative=True)
    relay_table = dict(_table(reader, "wireguard.relay", table.get("relay", {})))
    relay_enabled: bool = (
        reader.typed("wireguard.relay.enabled", relay_table.pop("enabled"), bool)
        if "enabled" in relay_table
        else True
    )
    relay = _fields_table(reader, "wireguard.relay", relay_table, SelectorConfig, non_negative=True)
    try:
        return TransitConfig(
            enabled=enabled,
            interface=interface,
            listen_port=listen_port,
            mesh_address=mesh_address,
            endpoint=endpoint,
            backend="kernel" if backend == "kernel" else "userspace" if backend == "userspace" else "auto",
            wireguard_go=binary,
            persistent_keepalive=keepalive,
            route_protocol=protocol,
            remove_grace=remove_grace,
            path=path,
            relay=relay,
            relay_enabled=relay_enabled,
        )
    except ValueError as exc:  # only cross-field rules are left for TransitConfig to find
        raise reader.error("wireguard", str(exc)) from None


def _exec_check_paths(reader: _Reader) -> tuple[str, ...]:
    paths: list[str] = []
    for i, value in enumerate(reader.get("exec_check_paths", list, [])):
        key = f"exec_check_paths[{i}]"
        path: str = reader.typed(key, value, str)
        if not path.startswith("/"):
            raise reader.error(key, f"must be an absolute path to an executable (got {path!r})")
        if any(not c.isprintable() for c in path):
            raise reader.error(key, f"must contain no control characters (got {path!r})")
        paths.append(path)
    return tuple(paths)


def _resolve_advertise(
    reader: _Reader, bind: HostPort, detect: Callable[[socket.AddressFamily], str | None]
) -> HostPort:
    if "advertise" in reader.values:
        adv = reader.address("advertise", reader.get("advertise", str, ""), bind.port, names=False)
        if ipaddress.ip_address(adv.host).is_unspecified:
            raise reader.error("advertise", f"cannot advertise the unspecified address {adv.host}")
        return adv
    if not ipaddress.ip_address(bind.host).is_unspecified:
        return bind
    family = socket.AF_INET6 if ":" in bind.host else socket.AF_INET
    host = detect(family)
    if host is None:
        raise reader.error(
            "advertise",
            f"missing required key: bind is {bind.host} and no non-loopback address was found to advertise",
        )
    return HostPort(host, bind.port)


def read_config_file(path: Path) -> dict[str, Any]:
    """The raw TOML table, or a ConfigError naming the file (and the line, for syntax errors)."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read config file ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), None, f"TOML syntax error: {exc}") from None


def load_config(
    path: Path | None,
    overrides: Mapping[str, Any] | None = None,
    *,
    hostname: Callable[[], str] = socket.gethostname,
    detect_address: Callable[[socket.AddressFamily], str | None] = default_route_address,
) -> AgentConfig:
    """Validate the file (if any) with ``overrides`` (top-level keys, from flags) winning over it."""
    file_values = read_config_file(path) if path is not None else {}
    reader = _Reader(path, file_values, {k: v for k, v in (overrides or {}).items() if v is not None})
    _check_unknown(reader, reader.values, _TOP_KEYS, "")
    for key in _FILE_ONLY_KEYS:
        if key in reader.from_flag:
            raise ConfigError(COMMAND_LINE, key, "can only be set in the machine's config file")

    name = reader.text("name", hostname())
    if len(name.encode()) > MAX_NAME_LEN:
        raise reader.error("name", f"too long ({len(name.encode())} bytes, at most {MAX_NAME_LEN})")
    bind_text = reader.get("bind", str, f"0.0.0.0:{DEFAULT_GOSSIP_PORT}")
    bind = reader.address("bind", bind_text, DEFAULT_GOSSIP_PORT, names=False)
    advertise = _resolve_advertise(reader, bind, detect_address)

    seeds = reader.get("join", list, [])
    join = tuple(
        reader.address(
            f"join[{i}]", reader.typed(f"join[{i}]", s, str), DEFAULT_GOSSIP_PORT, names=True, min_port=1
        )
        for i, s in enumerate(seeds)
    )
    insecure: bool = reader.get("insecure", bool, False)
    keyring_file = reader.path_value("keyring_file")
    if not insecure and keyring_file is None:
        raise reader.error(
            "keyring_file",
            "missing required key: set a keyring file (make one with `wiremesh keygen > FILE`) "
            "or insecure = true to run unencrypted",
        )
    if insecure and keyring_file is not None:
        raise reader.error("insecure", "insecure = true contradicts keyring_file; set only one")
    http_text = reader.get("http_listen", str, DEFAULT_HTTP_LISTEN)
    http_listen = reader.address("http_listen", http_text, None, names=True)
    log_format: LogFormat = "json" if reader.choice("log_format", LOG_FORMATS, "text") == "json" else "text"

    return AgentConfig(
        name=name,
        bind=bind,
        advertise=advertise,
        join=join,
        join_attempts=reader.number("join_attempts", int, 5, 1),
        join_retry_interval=reader.number("join_retry_interval", float, 2.0, 0.0, exclusive=True),
        keyring_file=keyring_file,
        insecure=insecure,
        cluster=reader.text("cluster", "wiremesh"),
        http_listen=http_listen,
        state_dir=reader.path_value("state_dir") or Path(DEFAULT_STATE_DIR),
        log_format=log_format,
        log_level=reader.choice("log_level", LOG_LEVELS, "info"),
        tombstone_keep=reader.number("tombstone_keep", float, DEFAULT_TOMBSTONE_KEEP_S, 0.0, exclusive=True),
        allow_exec_checks=reader.get("allow_exec_checks", bool, False),
        exec_check_paths=_exec_check_paths(reader),
        gossip=_fields_table(reader, "gossip", reader.values.get("gossip", {}), GossipConfig),
        bgp=parse_bgp(reader.values.get("bgp"), advertise.host, reader.error),
        wireguard=_wireguard_config(reader),
    )


def load_keyring(cfg: AgentConfig) -> Keyring | None:
    """The keyring the config names (None when insecure), as a ConfigError pointing at keyring_file."""
    if cfg.keyring_file is None:
        return None
    try:
        return Keyring.from_file(cfg.keyring_file)
    except KeyringError as exc:
        raise ConfigError("keyring_file", None, str(exc)) from None
