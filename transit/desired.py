"""What the WireGuard device and the kernel should look like, given the peers and the chosen routes
(sans-I/O; :mod:`transit.driver` applies it).

**Device.** Every peer gets its probe address (:func:`transit.meta.probe_address`) in its AllowedIPs,
always: that keeps direct-path probes on the direct entry whatever the route. A peer reached directly
also gets its mesh /32. A peer B reached through relay R has its mesh /32 in *R's* AllowedIPs instead;
B's own entry keeps its endpoint, the persistent keepalive and its probe address, so the direct path
keeps being tried and measured, and a fresh handshake plus probe replies show when it is back. An
unreachable peer keeps its /32 on its own entry: packets to it are dropped in the tunnel rather than
leaking to another route, and nothing needs to move when its direct path returns.

**Routed prefixes.** Prefixes the BGP speaker installed with a peer's mesh address as next hop (its
VIPs, its routes) go where that peer's mesh /32 goes: WireGuard picks the peer by destination address,
not by the kernel's next hop. They follow the relay like the /32, and a reply from such an address is
accepted because the same entry holds it. A prefix never takes a peer's mesh or probe address, and
one claimed for two peers goes to the first by name (deterministic; the speaker sends one hop each).

**Kernel.** This machine's mesh address as a /32 (only while its claim holds) and its probe address as
a /128 on the interface; a route per peer mesh /32 through the interface with the mesh address as
preferred source (the route does not change with the relay: WireGuard's AllowedIPs pick the peer), and
one route for the probe prefix. Every route carries the agent's protocol number. :func:`plan_kernel`
removes only routes with that number on this interface, and only addresses this agent added.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from common.address import IPAddress, IPNetwork
from transit.endpoint import Endpoint, host_network
from transit.keys import PrivateKey
from transit.meta import PROBE_PREFIX, probe_address
from transit.peers import MeshPeer
from transit.reachability import ReachRoute
from transit.wgdevice import DesiredDevice, DesiredPeer

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


def carrier(peer: str, routes: Mapping[str, ReachRoute], peers: Mapping[str, MeshPeer]) -> str:
    """The peer whose entry carries ``peer``'s mesh address: its relay when relayed through a relay
    that is itself a configured peer, else ``peer`` itself."""
    route = routes.get(peer)
    relay = route.relay if route is not None else None
    return relay if relay is not None and relay in peers else peer


def desired_device(
    private_key: PrivateKey,
    listen_port: int,
    keepalive: int,
    peers: Mapping[str, MeshPeer],
    routes: Mapping[str, ReachRoute],
    endpoints: Mapping[str, Endpoint | None],
    routed: Mapping[str, Collection[IPNetwork]] | None = None,
) -> DesiredDevice:
    """The device as in the module docstring; ``endpoints`` holds the endpoint to enforce this round;
    ``routed`` the prefixes to reach through each peer (by peer name)."""
    allowed: dict[str, set[IPNetwork]] = {
        name: {host_network(probe_address(p.meta.public_key))} for name, p in peers.items()
    }
    for name, p in peers.items():
        if p.holds_address:
            allowed[carrier(name, routes, peers)].add(host_network(p.meta.mesh_address))
    taken: set[IPNetwork] = set().union(*allowed.values())
    for name, nets in sorted((routed or {}).items()):
        via = peers.get(name)
        if via is None or not via.holds_address:
            continue
        for net in sorted(nets, key=str):
            if net in taken or net.overlaps(PROBE_PREFIX):
                continue
            taken.add(net)
            allowed[carrier(name, routes, peers)].add(net)
    return DesiredDevice.build(
        private_key,
        listen_port,
        (
            DesiredPeer(p.meta.public_key, frozenset(allowed[name]), endpoints.get(name), keepalive)
            for name, p in peers.items()
        ),
    )


@dataclass(frozen=True, slots=True, order=True)
class KernelRoute:
    dst: IPNetwork
    src: IPAddress | None = None

    def __str__(self) -> str:
        return f"{self.dst}" + (f" src {self.src}" if self.src is not None else "")


@dataclass(frozen=True, slots=True)
class KernelState:
    """Addresses on the interface and the agent's routes through it (proto = the agent's number)."""

    addresses: frozenset[IPInterface] = frozenset()
    routes: frozenset[KernelRoute] = frozenset()


def desired_kernel(
    own_mesh: IPAddress | None, own_probe: ipaddress.IPv6Address, peers: Mapping[str, MeshPeer]
) -> KernelState:
    """``own_mesh`` is None while another machine holds this machine's claimed address."""
    addresses: set[IPInterface] = {ipaddress.IPv6Interface(f"{own_probe}/128")}
    if own_mesh is not None:
        addresses.add(ipaddress.ip_interface(f"{own_mesh}/{own_mesh.max_prefixlen}"))
    routes = {KernelRoute(PROBE_PREFIX, own_probe)}
    for p in peers.values():
        if not p.holds_address:
            continue
        mesh = p.meta.mesh_address
        src = own_mesh if own_mesh is not None and own_mesh.version == mesh.version else None
        routes.add(KernelRoute(host_network(mesh), src))
    return KernelState(frozenset(addresses), frozenset(routes))


@dataclass(frozen=True, slots=True)
class KernelPlan:
    add_addresses: tuple[IPInterface, ...] = ()
    del_addresses: tuple[IPInterface, ...] = ()
    set_routes: tuple[KernelRoute, ...] = ()  # added or replaced (a changed source replaces)
    del_routes: tuple[KernelRoute, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add_addresses or self.del_addresses or self.set_routes or self.del_routes)


def _owned(addr: IPInterface, added: Collection[IPInterface]) -> bool:
    return addr in added or (addr.version == 6 and addr.ip in PROBE_PREFIX)


def plan_kernel(desired: KernelState, actual: KernelState, added: Collection[IPInterface]) -> KernelPlan:
    """The changes from ``actual`` to ``desired``. An address is removed only if this agent added it
    (``added``) or it is in the probe prefix; every route in ``actual`` is the agent's by its protocol
    number, so any of them may go."""
    want_routes = {r.dst: r for r in desired.routes}
    have_routes = {r.dst: r for r in actual.routes}
    return KernelPlan(
        add_addresses=tuple(sorted(desired.addresses - actual.addresses, key=str)),
        del_addresses=tuple(
            sorted((a for a in actual.addresses - desired.addresses if _owned(a, added)), key=str)
        ),
        set_routes=tuple(sorted((r for d, r in want_routes.items() if have_routes.get(d) != r), key=str)),
        del_routes=tuple(sorted((r for d, r in have_routes.items() if d not in want_routes), key=str)),
    )


__all__ = [
    "IPInterface",
    "KernelPlan",
    "KernelRoute",
    "KernelState",
    "carrier",
    "desired_device",
    "desired_kernel",
    "plan_kernel",
]
