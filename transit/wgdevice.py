"""Desired WireGuard device state -> the smallest ``set`` that makes the device match it.

The transit driver says what the device should look like (our key and port; per peer its key, allowed
IPs, keepalive and possibly an endpoint); :func:`plan` compares that with what the device reports and
returns only the differences, or None. Re-running it after a crash, a restart of wireguard-go or a
half-applied ``set`` converges, and running it twice changes nothing the second time.

Rules that keep it minimal and idempotent:

* The private key is compared in clamped form (the device reports it clamped).
* Peers the device has but the desired state lacks are removed; the device may hold no peer the agent
  did not put there (the interface is the agent's own).
* Allowed IPs are compared as canonical prefixes. If only additions are needed they are added without
  ``replace_allowed_ips`` (no moment without the old ones); a removal sends the full list with it.
  WireGuard gives a prefix to one peer only, so moving a mesh /32 to a relay is "add it to the relay",
  and the direct peer loses it in the same ``set``.
* ``endpoint = None`` leaves the device's endpoint alone: WireGuard learns a roaming peer's endpoint
  from its packets (NAT), and re-setting a stale configured one each round would undo that. The driver
  passes an endpoint when it wants one enforced (a new peer, or a handshake gone stale).

Two backends implement :class:`WireGuardBackend`: wireguard-go through :class:`transit.uapi.UapiClient`
and the kernel module through netlink (:class:`transit.wgkernel.KernelWireGuard`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from common.address import IPNetwork
from transit.endpoint import Endpoint
from transit.keys import PrivateKey, PublicKey
from transit.uapi import DeviceState, PeerUpdate, SetRequest


@dataclass(frozen=True, slots=True)
class DesiredPeer:
    public_key: PublicKey
    allowed_ips: frozenset[IPNetwork] = frozenset()
    endpoint: Endpoint | None = None  # None: keep whatever the device has (see the module docstring)
    persistent_keepalive: int = 0


@dataclass(frozen=True, slots=True)
class DesiredDevice:
    private_key: PrivateKey
    listen_port: int | None = None  # None: keep the device's port
    peers: Mapping[PublicKey, DesiredPeer] = field(default_factory=dict)

    @classmethod
    def build(
        cls, private_key: PrivateKey, listen_port: int | None, peers: Iterable[DesiredPeer]
    ) -> DesiredDevice:
        """Validate and index: one entry per key, and no prefix given to two peers (WireGuard would keep
        whichever came last, and the reconcile would move it back and forth forever)."""
        by_key: dict[PublicKey, DesiredPeer] = {}
        owner: dict[IPNetwork, PublicKey] = {}
        for p in peers:
            if p.public_key in by_key:
                raise ValueError(f"peer {p.public_key} listed twice")
            if p.public_key == private_key.public_key:
                raise ValueError("the device's own key cannot be a peer")
            for net in p.allowed_ips:
                if net in owner:
                    raise ValueError(f"{net} is in the allowed IPs of both {owner[net]} and {p.public_key}")
                owner[net] = p.public_key
            by_key[p.public_key] = p
        return cls(private_key, listen_port, by_key)


def _peer_update(want: DesiredPeer, have: DeviceState, key: PublicKey) -> PeerUpdate | None:
    cur = have.peers.get(key)
    if cur is None:
        return PeerUpdate(
            key,
            endpoint=want.endpoint,
            persistent_keepalive=want.persistent_keepalive,
            replace_allowed_ips=True,
            allowed_ips=tuple(sorted(want.allowed_ips, key=_net_key)),
        )
    endpoint = want.endpoint if want.endpoint is not None and want.endpoint != cur.endpoint else None
    keepalive = want.persistent_keepalive if want.persistent_keepalive != cur.persistent_keepalive else None
    replace = False
    ips: tuple[IPNetwork, ...] = ()
    if want.allowed_ips != cur.allowed_ips:
        if cur.allowed_ips <= want.allowed_ips:
            ips = tuple(sorted(want.allowed_ips - cur.allowed_ips, key=_net_key))
        else:
            replace, ips = True, tuple(sorted(want.allowed_ips, key=_net_key))
    if endpoint is None and keepalive is None and not replace and not ips:
        return None
    return PeerUpdate(
        key,
        update_only=True,
        endpoint=endpoint,
        persistent_keepalive=keepalive,
        replace_allowed_ips=replace,
        allowed_ips=ips,
    )


def _net_key(net: IPNetwork) -> tuple[int, bytes, int]:
    return (net.version, net.network_address.packed, net.prefixlen)


def plan(desired: DesiredDevice, actual: DeviceState) -> SetRequest | None:
    """The minimal ``set`` from ``actual`` to ``desired``; None when they already match."""
    private = None
    if actual.private_key is None or actual.private_key != desired.private_key:
        private = desired.private_key
    port = None
    if desired.listen_port is not None and desired.listen_port != actual.listen_port:
        port = desired.listen_port
    updates = [PeerUpdate(k, remove=True) for k in sorted(actual.peers) if k not in desired.peers]
    for key in sorted(desired.peers):
        up = _peer_update(desired.peers[key], actual, key)
        if up is not None:
            updates.append(up)
    request = SetRequest(private_key=private, listen_port=port, peers=tuple(updates))
    return None if request.empty else request


class WireGuardBackend(Protocol):
    """What the reconcile needs from a device, whichever implementation is behind it."""

    async def get(self) -> DeviceState: ...

    async def set(self, request: SetRequest) -> None: ...


async def reconcile(backend: WireGuardBackend, desired: DesiredDevice) -> SetRequest | None:
    """Read the device, apply the difference, return what was sent (None: nothing to do)."""
    request = plan(desired, await backend.get())
    if request is not None:
        await backend.set(request)
    return request


__all__ = ["DesiredDevice", "DesiredPeer", "WireGuardBackend", "plan", "reconcile"]
