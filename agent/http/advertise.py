"""Where another machine reaches this agent's HTTP API: chosen without I/O, published in gossip.

``/v1/machines/{name}/rib`` is served by the agent the caller talks to, which fetches the answer from
the named machine's own API (:mod:`agent.http.bgp`). For that it needs the machine's API address, which
each agent publishes as a node-local gossip value ``api`` (like ``bgp`` and ``transit.reach``: the
metadata blob is transit's), msgpack ``{"v": 1, "addr": "host:port"}``.

Which address (:func:`api_address`):

* ``http_listen`` on a loopback address (the default, ``127.0.0.1:7947``): nothing is published, since
  no other machine can reach it; asking for this machine's RIB elsewhere says so.
* on the unspecified address (``0.0.0.0`` / ``::``): the mesh address when WireGuard is on (the
  request, with its bearer token, then travels encrypted, and through a relay if need be), else the
  gossip advertise address.
* on a specific address: that address.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import msgpack

from common.address import format_address

API_KEY = "api"
API_VERSION = 1


def api_address(listen_host: str, port: int, *, advertise_host: str, mesh_address: str | None) -> str | None:
    """``host:port`` that other machines should use for this agent's API, or ``None`` (see above)."""
    try:
        ip = ipaddress.ip_address(listen_host)
    except ValueError:
        return None  # a host name: whatever it resolves to here means nothing elsewhere
    if ip.is_loopback:
        return None
    if ip.is_unspecified:
        host = advertise_host
        if mesh_address is not None and ipaddress.ip_address(mesh_address).version == ip.version:
            host = mesh_address
    else:
        host = str(ip)
    return format_address((host, port))


def encode_api(address: str) -> bytes:
    packed: bytes = msgpack.packb({"v": API_VERSION, "addr": address}, use_bin_type=True)
    return packed


def decode_api(data: bytes | None) -> str | None:
    """A member's published API address, or ``None`` if absent or not understood."""
    if data is None:
        return None
    try:
        raw: Any = msgpack.unpackb(data, raw=False)
    except Exception:  # msgpack raises several unrelated types for bad input
        return None
    if not isinstance(raw, dict) or raw.get("v") != API_VERSION or not isinstance(raw.get("addr"), str):
        return None
    addr: str = raw["addr"]
    host, _, port = addr.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return None
    return addr


__all__ = ["API_KEY", "api_address", "decode_api", "encode_api"]
