"""The agent's config file as pydantic models (top-level keys and ``[gossip]``), and the value the
agent runs with (:class:`AgentConfig`).

Addresses are ``host:port`` strings; IPv6 hosts are bracketed (``[::1]:7946``). A bare string with
several colons is taken as an IPv6 address with no port.

``[gossip] profile`` picks one of memberlist's presets (:data:`gossip.config.PROFILES`: ``lan``, the
default, ``wan`` or ``local``); the table's other keys override single fields of it, and
``[gossip.streams]`` single fields of the profile's :class:`gossip.config.StreamLimits`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from agent.config.base import HostPort, NonEmpty, Section, Text, address, core_rules, parse_address
from agent.config.bgp import BgpSection, BgpSettings
from agent.config.errors import Loc
from agent.config.wireguard import WireguardSection
from gossip import PROFILES, GossipConfig, StreamLimits, check_member_name
from transit import TransitConfig

DEFAULT_GOSSIP_PORT = 7946
DEFAULT_BIND = f"0.0.0.0:{DEFAULT_GOSSIP_PORT}"
DEFAULT_HTTP_LISTEN = "127.0.0.1:7947"
DEFAULT_STATE_DIR = "/var/lib/wiremesh"
# agent.cluster.replication's default; not imported (it pulls in trio)
DEFAULT_TOMBSTONE_KEEP_S = 7 * 24 * 3600.0
# agent.cluster.store's default (10 s), in seconds; not imported (config sits below the cluster room)
DEFAULT_CONFLICT_WINDOW_S = 10.0
MAX_CONFLICT_WINDOW_S = 3600.0

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


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
    # Two machines' writes to one object closer than this (HLC wall time, seconds) are a conflict.
    conflict_window: float = DEFAULT_CONFLICT_WINDOW_S


class StreamsSection(Section):
    """``[gossip.streams]``: what peers may hold of the TCP stream server, over the profile's limits."""

    timeout: float | None = None
    first_frame_timeout: float | None = None
    max_frame: int | None = None
    max_connections: int | None = None
    member_reserve: int | None = None
    per_source: int | None = None
    stranger_frame_max: int | None = None
    buffer_budget: int | None = None

    def limits(self, base: StreamLimits) -> StreamLimits:
        return replace(base, **self.given())


class GossipSection(Section):
    """``[gossip]``: a profile, then single fields of :class:`gossip.config.GossipConfig` over it."""

    profile: Literal["lan", "wan", "local"] = "lan"
    probe_interval: float | None = None
    probe_timeout: float | None = None
    indirect_checks: int | None = None
    suspicion_mult: int | None = None
    suspicion_max_timeout_mult: int | None = None
    gossip_interval: float | None = None
    gossip_nodes: int | None = None
    gossip_to_the_dead_time: float | None = None
    retransmit_mult: int | None = None
    push_pull_interval: float | None = None
    awareness_max_multiplier: int | None = None
    udp_buffer_size: int | None = None
    tcp_timeout: float | None = None
    disable_tcp_pings: bool | None = None
    meta_max_size: int | None = None
    kv_datagram_max: int | None = None
    kv_value_max: int | None = None
    dead_member_reap_time: float | None = None
    reconnect_interval: float | None = None
    nack_fraction: float | None = None
    leave_propagate_delay: float | None = None
    streams: StreamsSection = Field(default_factory=StreamsSection)

    def overrides(self) -> dict[str, Any]:
        return {k: v for k, v in self.given().items() if k not in ("profile", "streams")}

    def config(self) -> GossipConfig:
        profile = PROFILES[self.profile]
        return replace(profile, **self.overrides(), streams=self.streams.limits(profile.streams))

    def rules(self) -> Iterator[tuple[Loc, str]]:
        # The streams' checks are blamed on their keys inside [gossip.streams]; they are run here, not
        # in StreamsSection, because the values they check come from the profile too.
        profile = PROFILES[self.profile]
        names = [f.name for f in fields(GossipConfig)]
        yield from core_rules(lambda: replace(profile, **self.overrides()), names, self.overrides())
        limits = partial(self.streams.limits, profile.streams)
        stream_names = [f.name for f in fields(StreamLimits)]
        for where, problem in core_rules(limits, stream_names, self.streams.given()):
            yield ("streams", *where), problem


def _advertisable(text: str) -> str:
    host = parse_address(text, 0, names=False).host
    if ipaddress.ip_address(host).is_unspecified:
        raise ValueError(f"cannot advertise the unspecified address {host}")
    return text


def _exec_path(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"must be an absolute path to an executable (got {path!r})")
    if any(not c.isprintable() for c in path):
        raise ValueError(f"must contain no control characters (got {path!r})")
    return path


class AgentFile(Section):
    """The whole file, with the command line's values merged over its top-level keys.

    ``name`` has no default here: the loader supplies the host name, so it is checked like any other.
    Paths stay text, because what they are relative to depends on where each came from."""

    name: Annotated[str, AfterValidator(check_member_name)]  # gossip's rule, as for the API's machines
    bind: Annotated[str, address(DEFAULT_GOSSIP_PORT, names=False)] = DEFAULT_BIND
    advertise: Annotated[str, AfterValidator(_advertisable)] | None = None
    join: list[Annotated[str, address(DEFAULT_GOSSIP_PORT, names=True, min_port=1)]] = Field(
        default_factory=list
    )
    join_attempts: int = Field(default=5, ge=1)
    join_retry_interval: float = Field(default=2.0, gt=0.0)
    keyring_file: NonEmpty | None = None
    insecure: bool = False
    cluster: Text = "wiremesh"
    http_listen: Annotated[str, address(None, names=True)] = DEFAULT_HTTP_LISTEN
    state_dir: NonEmpty | None = None
    log_format: LogFormat = "text"
    log_level: LogLevel = "info"
    tombstone_keep: float = Field(default=DEFAULT_TOMBSTONE_KEEP_S, gt=0.0)
    conflict_window: float = Field(default=DEFAULT_CONFLICT_WINDOW_S, ge=0.0, le=MAX_CONFLICT_WINDOW_S)
    allow_exec_checks: bool = False
    exec_check_paths: list[Annotated[str, AfterValidator(_exec_path)]] = Field(default_factory=list)
    gossip: GossipSection = Field(default_factory=GossipSection)
    bgp: BgpSection = Field(default_factory=BgpSection)
    wireguard: WireguardSection = Field(default_factory=WireguardSection)

    def rules(self) -> Iterator[tuple[Loc, str]]:
        if not self.insecure and self.keyring_file is None:
            yield (
                ("keyring_file",),
                "missing required key: set a keyring file (make one with `wiremesh keygen > FILE`) "
                "or insecure = true to run unencrypted",
            )
        if self.insecure and self.keyring_file is not None:
            yield ("insecure",), "insecure = true contradicts keyring_file; set only one"
        # Each marks its own kernel routes and removes only those: sharing a number would make each
        # remove the other's. Checked only with a [bgp] table, as a file without one has no BGP routes.
        protocol = self.wireguard.config().route_protocol
        if "bgp" in self.model_fields_set and protocol == self.bgp.route_protocol:
            yield (
                ("wireguard", "route_protocol"),
                f"{protocol} is bgp.route_protocol too: each must mark only its own kernel routes",
            )
