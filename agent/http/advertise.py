"""Where another machine reaches this agent's HTTP API: chosen without I/O, published in gossip.

``/v1/machines/{name}/rib`` is served by the agent the caller talks to, which fetches the answer from
the named machine's own API (:mod:`agent.http.bgp`). For that it needs the machine's API address, which
each agent publishes as a node-local gossip value ``api`` (like ``bgp`` and ``transit.reach``: the
metadata blob is transit's), :data:`agent.published.API`: msgpack ``{"v": 1, "addr": "host:port"}``.

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

from common.address import format_address


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


__all__ = ["api_address"]
