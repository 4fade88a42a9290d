"""transit: WireGuard peers, direct-path monitoring and relay selection.

Sans-I/O cores: ``meta`` (gossip metadata, mesh-address claims), ``pathmon`` (per-peer probes, RTT,
loss, up/down), ``reachability`` (the vector each machine publishes), ``relay`` (which relay, with
hysteresis), ``peers`` (who is a peer, which endpoint), ``desired`` (device and kernel state from the
chosen routes), ``wgdevice`` (desired -> actual peer reconcile), the ``uapi`` codec, and the plain data of
``config`` and ``report``. I/O: ``keys`` and ``claimfile`` (state directory), ``uapi.UapiClient`` and
``wggo`` (the wireguard-go child process), ``kernel`` (link, addresses, routes, forwarding), and
``driver``, the Trio task that runs it all for one machine.

What other packages may import is the names below, resolved lazily (importing a config type does
not load the driver, Trio or pyroute2); the modules behind them are transit's own business.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from common.face import lazy_face

if TYPE_CHECKING:
    from transit.config import BACKENDS, DEFAULT_LISTEN_PORT, TransitConfig, check_ifname
    from transit.driver import TransitDriver
    from transit.endpoint import Endpoint
    from transit.meta import META, TransitMeta
    from transit.pathmon import PathConfig
    from transit.reachability import REACH, REACH_KEY, ReachVector
    from transit.relay import SelectorConfig
    from transit.report import PeerReport, TransitReport

__all__ = [
    "BACKENDS",
    "DEFAULT_LISTEN_PORT",
    "META",
    "REACH",
    "REACH_KEY",
    "Endpoint",
    "PathConfig",
    "PeerReport",
    "ReachVector",
    "SelectorConfig",
    "TransitConfig",
    "TransitDriver",
    "TransitMeta",
    "TransitReport",
    "check_ifname",
]

_HOME = MappingProxyType(
    {
        "BACKENDS": "transit.config",
        "DEFAULT_LISTEN_PORT": "transit.config",
        "TransitConfig": "transit.config",
        "check_ifname": "transit.config",
        "TransitDriver": "transit.driver",
        "Endpoint": "transit.endpoint",
        "META": "transit.meta",
        "TransitMeta": "transit.meta",
        "PathConfig": "transit.pathmon",
        "REACH": "transit.reachability",
        "REACH_KEY": "transit.reachability",
        "ReachVector": "transit.reachability",
        "SelectorConfig": "transit.relay",
        "PeerReport": "transit.report",
        "TransitReport": "transit.report",
    }
)

if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt import from transit still fails there
    __getattr__, __dir__ = lazy_face(__name__, _HOME)
