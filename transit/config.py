"""The transit settings one machine runs with (the ``[wireguard]`` section of the agent's config).

Plain data, no I/O: :mod:`agent.config.wireguard` reads it from TOML and validates it, :mod:`transit.driver`
runs it. The thresholds of the path monitor and of relay selection are the cores' own config objects
(:class:`transit.pathmon.PathConfig`, :class:`transit.relay.SelectorConfig`), so their docstrings'
arithmetic applies unchanged to whatever an operator tunes.

Two numbers are fixed for the whole mesh rather than configurable, because every machine must agree
on them without being told: the probe port (:data:`PROBE_PORT`) and the probe prefix
(:data:`transit.meta.PROBE_PREFIX`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from common.address import IPAddress
from transit.endpoint import Endpoint
from transit.pathmon import PathConfig
from transit.relay import SelectorConfig

Backend = Literal["auto", "kernel", "userspace"]
BACKENDS: tuple[Backend, ...] = ("auto", "kernel", "userspace")

# UDP port of the direct-path prober/responder, on each machine's probe address inside the tunnel. Next
# to gossip (7946) and the API (7947); the whole mesh must use the same one.
PROBE_PORT = 7949
# rtnetlink protocol number on every kernel route the agent adds ("W", 87). Unassigned in
# /etc/iproute2/rt_protos and by the kernel (which reserves 0-4 and names a few dozen daemons, none at
# 87); ``ip route show proto 87`` lists exactly the agent's routes, and only those are ever removed.
DEFAULT_ROUTE_PROTOCOL = 0x57
DEFAULT_INTERFACE = "wmesh0"
DEFAULT_LISTEN_PORT = 51820

_IFNAME = re.compile(r"[A-Za-z0-9_.-]{1,15}")


def check_ifname(name: str) -> str:
    """Interface names are at most 15 characters and become a file name: allow only safe ones."""
    if not _IFNAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"bad interface name {name!r}: 1-15 of A-Z a-z 0-9 _ . -")
    return name


@dataclass(frozen=True)
class TransitConfig:
    enabled: bool = False
    interface: str = DEFAULT_INTERFACE
    listen_port: int = DEFAULT_LISTEN_PORT
    mesh_address: IPAddress | None = None  # required when enabled
    endpoint: Endpoint | None = None  # this machine's public endpoint, offered to peers first
    backend: Backend = "auto"
    wireguard_go: str = "wireguard-go"  # the userspace implementation's binary
    persistent_keepalive: int = 25  # seconds; keeps NAT mappings and the direct entry's handshakes alive
    route_protocol: int = DEFAULT_ROUTE_PROTOCOL
    # A dead or left member stays a WireGuard peer (and keeps its route) this long: a reboot or a short
    # partition does not churn the device, and a member that is gone for good is removed.
    remove_grace: float = 60.0
    path: PathConfig = field(default_factory=PathConfig)
    relay: SelectorConfig = field(default_factory=SelectorConfig)
    # False ([wireguard.relay] enabled = false): this machine never carries other machines' traffic. It
    # says so in its metadata, so relay selection everywhere skips it, and it does not turn on
    # forwarding on its interface. It may still use relays itself.
    relay_enabled: bool = True

    def __post_init__(self) -> None:
        check_ifname(self.interface)
        if not 1 <= self.listen_port <= 65535:
            raise ValueError(f"listen_port must be in 1..65535 (got {self.listen_port})")
        if self.enabled and self.mesh_address is None:
            raise ValueError("mesh_address is required when WireGuard is enabled")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)} (got {self.backend!r})")
        if not 0 <= self.persistent_keepalive <= 65535:
            raise ValueError("persistent_keepalive must be in 0..65535")
        if not 5 <= self.route_protocol <= 255:
            raise ValueError("route_protocol must be in 5..255 (0-4 belong to the kernel)")
        if self.remove_grace < 0:
            raise ValueError("remove_grace must not be negative")


__all__ = [
    "BACKENDS",
    "DEFAULT_INTERFACE",
    "DEFAULT_LISTEN_PORT",
    "DEFAULT_ROUTE_PROTOCOL",
    "PROBE_PORT",
    "Backend",
    "TransitConfig",
    "check_ifname",
]
