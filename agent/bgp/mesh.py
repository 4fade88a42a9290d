"""Who this machine peers with, without I/O: every live mesh member that runs a speaker, plus the
external routers of the config file.

A machine running the speaker publishes a node-local gossip value ``bgp`` (:class:`SpeakerInfo`):
its ASN, router id, peering address, and the object keys it has on the wire. A member without it runs
no speaker (BGP off in its config), so it gets no session: no half-configured neighbor sits in
``connect`` forever. Its ASN comes from there in per-machine mode, so explicitly configured ASNs work
without any other coordination; its router id breaks the last ties of best-path selection.

Peering address: the member's gossip (underlay) address for now. Once the WireGuard mesh is up the
sessions should move to the mesh addresses (a later step: the published ``address`` is what peers use,
so only the publisher has to change).

Sessions between two machines: both sides configure each other, and the one with the lower address is
passive, so exactly one TCP connection is opened and there is no collision to resolve (RFC 4271 6.8).
Suspect members keep their session (they may be alive); dead or left members lose it (their paths
were already invalidated the moment gossip said so; see :mod:`agent.speaker`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from agent.bgp.config import AsnPlan, MeshAsnMode, Neighbor, mesh_neighbor
from agent.bgp.settings import BgpSettings
from gossip.events import MemberInfo, MemberState

log = logging.getLogger("wiremesh.bgp.mesh")

BGP_KEY = "bgp"
WIRE_VERSION = 1
PEERING_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})


@dataclass(frozen=True, slots=True)
class SpeakerInfo:
    """What a machine's speaker publishes about itself. ``sent``: the ``vip/NAME`` / ``route/NAME``
    keys whose routes it has on the wire to at least one established session (``announced_by`` in
    VIP status)."""

    asn: int
    router_id: str
    address: str
    sent: tuple[str, ...] = ()

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(
            {"v": WIRE_VERSION, "asn": self.asn, "rid": self.router_id, "addr": self.address,
             "sent": sorted(self.sent)},
            use_bin_type=True,
        )  # fmt: skip
        return packed


def decode_info(data: bytes | None) -> SpeakerInfo | None:
    """A peer's ``bgp`` value, or ``None`` if absent or not understood (a newer wire version)."""
    if data is None:
        return None
    try:
        raw: Any = msgpack.unpackb(data, raw=False)
        if not isinstance(raw, dict) or raw.get("v") != WIRE_VERSION:
            return None
        asn, rid, addr, sent = raw["asn"], raw["rid"], raw["addr"], raw.get("sent", [])
        if not isinstance(asn, int) or not 1 <= asn < 1 << 32:
            return None
        ipaddress.IPv4Address(rid)
        addr = str(ipaddress.ip_address(addr))
        if not isinstance(sent, list) or not all(isinstance(k, str) for k in sent):
            return None
        return SpeakerInfo(asn, str(rid), addr, tuple(sent))
    except Exception:
        return None


@dataclass(frozen=True, slots=True)
class MeshPeer:
    """A member we peer with."""

    name: str
    address: str
    asn: int
    router_id: str


def mesh_peers(
    members: Iterable[MemberInfo], own_name: str, plan: AsnPlan, own_asn: int
) -> dict[str, MeshPeer]:
    """Live members that publish speaker info, by peering address. In shared mode every machine's ASN
    is the plan's; a member publishing another one is misconfigured and gets our ASN as its peer AS,
    so the session's OPEN fails visibly (``bgp neighbors`` shows the error) instead of silently
    becoming eBGP."""
    out: dict[str, MeshPeer] = {}
    for member in members:
        if member.name == own_name or member.state not in PEERING_STATES:
            continue
        info = decode_info(member.kv.get(BGP_KEY, (0, None))[1])
        if info is None:
            continue
        asn = own_asn if plan.mode is MeshAsnMode.SHARED else info.asn
        if info.address in out:
            log.warning("members %s and %s both claim peering address %s", out[info.address].name,
                        member.name, info.address)  # fmt: skip
            continue
        out[info.address] = MeshPeer(member.name, info.address, asn, info.router_id)
    return out


def neighbors(
    settings: BgpSettings,
    *,
    own_name: str,
    own_address: str,
    router_id: str,
    peers: Mapping[str, MeshPeer],
) -> list[Neighbor]:
    """ExaBGP's neighbor set: mesh peers of our address family, then external peers (an external peer
    on a mesh member's address is the operator's explicit choice and wins)."""
    own_asn = settings.machine_asn(own_name)
    out: dict[str, Neighbor] = {}
    own_ip = ipaddress.ip_address(own_address)
    for address, peer in sorted(peers.items()):
        ip = ipaddress.ip_address(address)
        if ip.version != own_ip.version or ip == own_ip:
            continue
        n = mesh_neighbor(
            address=address,
            name=peer.name,
            local_name=own_name,
            local_address=own_address,
            router_id=router_id,
            plan=settings.plan,
            peer_asn=peer.asn,
            local_asn=own_asn,
            hold_time=settings.hold_time,
        )
        if (own_ip.version, int(own_ip)) < (
            ip.version,
            int(ip),
        ):  # the lower address waits, the higher connects
            n = Neighbor(
                address=n.address, peer_as=n.peer_as, local_as=n.local_as, router_id=n.router_id,
                local_address=n.local_address, hold_time=n.hold_time, passive=True, description=n.description,
            )  # fmt: skip
        out[address] = n
    for external in settings.peers:
        out[external.address] = external.neighbor(router_id, own_asn)
    return list(out.values())
