"""The ``[wireguard]`` section, read into :class:`transit.config.TransitConfig`.

Off by default; a table that is present is still checked when it is off. ``[wireguard.path]`` and
``[wireguard.relay]`` are the path monitor's and relay selection's thresholds, field for field, plus
``[wireguard.relay] enabled`` (default true): false keeps this machine from relaying for others. Keys
left out take the core classes' own defaults, so those stay defined in one place.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import fields
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from agent.config.base import (
    NonEmpty,
    NonNegativeFloat,
    NonNegativeInt,
    Section,
    address,
    between,
    core_rules,
    parse_address,
)
from agent.config.errors import Loc
from transit import DEFAULT_LISTEN_PORT, Endpoint, PathConfig, SelectorConfig, TransitConfig, check_ifname


def _mesh_address(text: str) -> str:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast:
        raise ValueError(f"{text} cannot be a machine's mesh address")
    return text


class PathSection(Section):
    """``[wireguard.path]``: :class:`transit.pathmon.PathConfig`, which checks how the values relate."""

    probe_interval: NonNegativeFloat | None = None
    fast_probe_interval: NonNegativeFloat | None = None
    min_probe_timeout: NonNegativeFloat | None = None
    max_probe_timeout: NonNegativeFloat | None = None
    down_after: NonNegativeFloat | None = None
    down_min_lost: NonNegativeInt | None = None
    rise: NonNegativeInt | None = None
    loss_window: NonNegativeInt | None = None
    loss_timeout: NonNegativeFloat | None = None
    handshake_stale: NonNegativeFloat | None = None
    max_outstanding: NonNegativeInt | None = None

    def config(self) -> PathConfig:
        return PathConfig(**self.given())

    def rules(self) -> Iterator[tuple[Loc, str]]:
        return core_rules(self.config, [f.name for f in fields(PathConfig)], self.given())


class RelaySection(Section):
    """``[wireguard.relay]``: :class:`transit.relay.SelectorConfig`, and whether this machine relays."""

    enabled: bool = True
    switch_margin_ms: NonNegativeInt | None = None
    switch_margin_ratio: NonNegativeFloat | None = None
    switch_hold: NonNegativeFloat | None = None
    failback_hold: NonNegativeFloat | None = None

    def config(self) -> SelectorConfig:
        return SelectorConfig(**{k: v for k, v in self.given().items() if k != "enabled"})

    def rules(self) -> Iterator[tuple[Loc, str]]:
        given = [k for k in self.given() if k != "enabled"]
        return core_rules(self.config, [f.name for f in fields(SelectorConfig)], given)


class WireguardSection(Section):
    enabled: bool = False
    interface: Annotated[str, AfterValidator(check_ifname)] | None = None
    listen_port: Annotated[int, between(1, 65535)] | None = None
    mesh_address: Annotated[str, AfterValidator(_mesh_address)] | None = None
    # An IP address, not a name: peers dial it as given. No port: the listen port.
    endpoint: Annotated[str, address(1, names=False, min_port=1)] | None = None
    backend: Literal["auto", "kernel", "userspace"] | None = None
    wireguard_go: NonEmpty | None = None
    persistent_keepalive: Annotated[int, between(0, 65535)] | None = None
    route_protocol: Annotated[int, between(5, 255)] | None = None
    remove_grace: NonNegativeFloat | None = None
    path: PathSection = Field(default_factory=PathSection)
    relay: RelaySection = Field(default_factory=RelaySection)

    def config(self) -> TransitConfig:
        kwargs: dict[str, Any] = self.given()
        kwargs.update(path=self.path.config(), relay=self.relay.config(), relay_enabled=self.relay.enabled)
        if self.mesh_address is not None:
            kwargs["mesh_address"] = ipaddress.ip_address(self.mesh_address)
        if self.endpoint is not None:
            hp = parse_address(self.endpoint, self.listen_port or DEFAULT_LISTEN_PORT, names=False)
            kwargs["endpoint"] = Endpoint(ipaddress.ip_address(hp.host), hp.port)
        return TransitConfig(**kwargs)

    def rules(self) -> Iterator[tuple[Loc, str]]:
        if self.enabled and self.mesh_address is None:
            yield (
                ("mesh_address",),
                "missing required key: this machine's address in the mesh (e.g. 100.64.0.1), "
                "unique per machine",
            )
            return
        yield from core_rules(self.config, [f.name for f in fields(TransitConfig)], ())
