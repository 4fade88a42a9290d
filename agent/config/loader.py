"""The agent's configuration: one TOML file, optionally overridden by command-line flags.

Both sources are merged (a flag replaces the file's top-level key) and validated once by
:class:`agent.config.model.AgentFile`, so a value is checked the same way wherever it came from.
Every problem found is reported, each naming where it came from (file or flag), the key and what is
wrong (see :mod:`agent.config.errors`). Loading is pure apart from reading the file: the host name
and the advertise-address probe are passed in.

Advertise address: when not set, it is the bind address; when the bind host is unspecified
(``0.0.0.0`` or ``::``) the address the kernel would use towards the default route is advertised, and
if there is none (no default route, e.g. in a lab namespace) ``advertise`` must be set explicitly. An
advertise port of 0 (the default when binding port 0) means "the port the transport actually bound".

Relative paths in the file are relative to the file's directory; relative paths given as flags are
relative to the working directory.

Exec health checks run commands as the agent's user, so only the machine's own config file can allow
them: ``allow_exec_checks`` and ``exec_check_paths`` are refused when they come from anywhere else.
``agent.health.execpolicy`` turns them into the yes/no (and the reason) a check gets.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, get_args

from pydantic import ValidationError

from agent.config.base import HostPort, parse_address
from agent.config.errors import ConfigError, Loc, Problem, explain, key_path
from agent.config.model import (
    DEFAULT_GOSSIP_PORT,
    DEFAULT_STATE_DIR,
    AgentConfig,
    AgentFile,
    LogFormat,
    LogLevel,
)
from common.address import split_hostport
from gossip import Keyring, KeyringError

COMMAND_LINE = "command line"
LOG_FORMATS: tuple[LogFormat, ...] = get_args(LogFormat)
LOG_LEVELS: tuple[str, ...] = get_args(LogLevel)

# Top-level keys whose command-line flag is not simply ``--key-with-dashes``.
_FLAG_NAMES = MappingProxyType({"keyring_file": "--keyring", "http_listen": "--http"})
# Keys that only the config file may set: they let cluster objects run commands on this machine.
_FILE_ONLY_KEYS = ("allow_exec_checks", "exec_check_paths")

DetectAddress = Callable[[socket.AddressFamily], str | None]

log = logging.getLogger("wiremesh.config")


def flag_for(key: str) -> str:
    """The command-line flag that stands in for a top-level config key."""
    return _FLAG_NAMES.get(key, "--" + key.replace("_", "-"))


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


@dataclass(frozen=True, slots=True)
class _Origin:
    """Where each top-level key came from, so a problem names the file and key, or the flag."""

    path: Path | None
    flags: frozenset[str]

    def problem(self, loc: Loc, problem: str) -> Problem:
        top = str(loc[0]) if loc else ""
        if self.path is None or top in self.flags:
            return Problem(COMMAND_LINE, flag_for(top) if top else None, problem)
        return Problem(str(self.path), key_path(loc) or None, problem)

    def path_value(self, key: str, value: str | None) -> Path | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        if self.path is None or key in self.flags or path.is_absolute():
            return path
        return self.path.parent / path


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
    detect_address: DetectAddress = default_route_address,
) -> AgentConfig:
    """Validate the file (if any) with ``overrides`` (top-level keys, from flags) winning over it;
    a ConfigError carries every problem found."""
    file_values = read_config_file(path) if path is not None else {}
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    origin = _Origin(path, frozenset(flags))
    problems = [
        Problem(COMMAND_LINE, key, "can only be set in the machine's config file")
        for key in _FILE_ONLY_KEYS
        if key in flags
    ]
    values = {**file_values, **flags}
    if "name" not in values:
        values["name"] = hostname()
    try:
        model = AgentFile.model_validate(values)
    except ValidationError as exc:
        problems += [origin.problem(loc, text) for loc, text in explain(exc, AgentFile)]
    else:
        found: list[tuple[Loc, str]] = []
        config = _resolve(model, origin, detect_address, found)
        problems += [origin.problem(loc, text) for loc, text in found]
        if not problems:
            return config
    raise ConfigError.of(problems)


def _resolve(
    model: AgentFile, origin: _Origin, detect: DetectAddress, found: list[tuple[Loc, str]]
) -> AgentConfig:
    """The config the agent runs with, from a valid file; what depends on this machine (the advertise
    address, and from it the default router id) is checked here and added to ``found``."""
    bind = parse_address(model.bind, DEFAULT_GOSSIP_PORT, names=False)
    advertise = _advertise(model.advertise, bind, detect)
    if advertise is None:
        found.append(
            (
                ("advertise",),
                f"missing required key: bind is {bind.host} and no non-loopback address was found "
                "to advertise",
            )
        )
        advertise = bind
    bgp = model.bgp.settings()
    if bgp.enabled and bgp.router_id is None and ":" in advertise.host:
        found.append(
            (
                ("bgp", "router_id"),
                f"missing required key: the advertise address {advertise.host} is not IPv4, so there "
                "is no default router id",
            )
        )
    return AgentConfig(
        name=model.name,
        bind=bind,
        advertise=advertise,
        join=tuple(parse_address(s, DEFAULT_GOSSIP_PORT, names=True) for s in model.join),
        join_attempts=model.join_attempts,
        join_retry_interval=model.join_retry_interval,
        keyring_file=origin.path_value("keyring_file", model.keyring_file),
        insecure=model.insecure,
        cluster=model.cluster,
        http_listen=parse_address(model.http_listen, None, names=True),
        state_dir=origin.path_value("state_dir", model.state_dir) or Path(DEFAULT_STATE_DIR),
        log_format=model.log_format,
        log_level=model.log_level,
        tombstone_keep=model.tombstone_keep,
        conflict_window=model.conflict_window,
        allow_exec_checks=model.allow_exec_checks,
        exec_check_paths=tuple(model.exec_check_paths),
        gossip=model.gossip.config(),
        bgp=bgp,
        wireguard=model.wireguard.config(),
    )


def _advertise(text: str | None, bind: HostPort, detect: DetectAddress) -> HostPort | None:
    """The configured advertise address (its port defaults to bind's), else bind, else for an
    unspecified bind host the default-route address; None when there is none to find."""
    if text is not None:
        return parse_address(text, bind.port, names=False)
    if not ipaddress.ip_address(bind.host).is_unspecified:
        return bind
    host = detect(socket.AF_INET6 if ":" in bind.host else socket.AF_INET)
    return None if host is None else HostPort(host, bind.port)


def load_keyring(cfg: AgentConfig) -> Keyring | None:
    """The keyring the config names (None when insecure), as a ConfigError pointing at keyring_file.

    A keyring others can read lets them join the cluster and write its objects, so such a file is
    warned about, as the API token file is (a warning, not a refusal, so existing setups keep running)."""
    if cfg.keyring_file is None:
        return None
    try:
        keyring = Keyring.from_file(cfg.keyring_file)
    except KeyringError as exc:
        raise ConfigError("keyring_file", None, str(exc)) from None
    try:
        mode = stat.S_IMODE(Path(cfg.keyring_file).stat().st_mode)
    except OSError:
        return keyring  # it was just read; a vanished file is not this check's concern
    if mode & 0o077:
        log.warning("keyring file %s is readable by others (mode %o); chmod 600 it", cfg.keyring_file, mode)
    return keyring


__all__ = [
    "COMMAND_LINE",
    "DEFAULT_STATE_DIR",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "AgentConfig",
    "ConfigError",
    "HostPort",
    "LogFormat",
    "flag_for",
    "load_config",
    "load_keyring",
    "parse_listen",
]
