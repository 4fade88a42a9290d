"""Who this machine peers with, without I/O: every live mesh member that runs a speaker, plus the
external routers of the config file.

A machine running the speaker publishes a node-local gossip value ``bgp`` (:data:`agent.published.BGP`):
its ASN, router id, underlay (gossip advertise) address, its mesh address when it has one, and the
object keys it has on the wire. A member without it runs no speaker (BGP off in its config), so it
gets no session: no half-configured neighbor sits in ``connect`` forever. Its ASN comes from there in
per-machine mode, so explicitly configured ASNs work without any other coordination; its router id
breaks the last ties of best-path selection.

**Peering addresses** (:func:`session_addresses`): between two machines that both publish a mesh
address (WireGuard on, the address held and up on the interface), the session runs between the mesh
addresses; otherwise between the underlay addresses. Both ends compute the pair from the same two
published values, so they agree without talking, and a mesh with some machines on WireGuard and some
without still peers fully. Over the mesh, the session's packets are encrypted and follow the transit
routes: when the direct path between two machines fails and their traffic moves to a relay, the TCP
connection moves with it and the session stays up (the switch takes seconds, the hold time is 90).
A machine with WireGuard on publishes nothing until its mesh address is up (see
:meth:`agent.bgp.speaker.BgpSpeaker.set_mesh_address`), so sessions never start on the underlay only to
be moved (reset) to the mesh a few seconds later.

Sessions between two machines: both sides configure each other, and the one with the lower address is
passive, so exactly one TCP connection is opened and there is no collision to resolve (RFC 4271 6.8).
Suspect members keep their session (they may be alive); dead or left members lose it (their paths
were already invalidated the moment gossip said so; see :mod:`agent.bgp.speaker`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agent.bgp.birdconf import REFLECTOR_PORT
from agent.bgp.config import AddPath, Neighbor, external_neighbor, mesh_neighbor
from agent.config.bgp import AsnPlan, BgpSettings, MeshAsnMode
from agent.published import BGP_KEY, SpeakerInfo
from gossip import DecodeCache, MemberInfo, MemberState

log = logging.getLogger("wiremesh.bgp.mesh")

PEERING_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})


def session_addresses(own: SpeakerInfo, peer: SpeakerInfo) -> tuple[str, str] | None:
    """``(local, remote)`` for the session between two machines, from what both publish: their mesh
    addresses if both have one of the same family, else their underlay addresses if of the same
    family, else ``None`` (no session). Symmetric: swapping the arguments swaps the pair."""
    if (
        own.mesh is not None
        and peer.mesh is not None
        and ipaddress.ip_address(own.mesh).version == ipaddress.ip_address(peer.mesh).version
    ):
        return own.mesh, peer.mesh
    if ipaddress.ip_address(own.address).version == ipaddress.ip_address(peer.address).version:
        return own.address, peer.address
    return None


@dataclass(frozen=True, slots=True)
class MeshPeer:
    """A member we peer with: ``address`` is its end of the session, ``local_address`` ours."""

    name: str
    address: str
    asn: int
    router_id: str
    local_address: str | None = None  # None: the caller's own (underlay) address

    @property
    def over_mesh(self) -> bool:
        """Whether the session runs between mesh addresses (its next hops are WireGuard peers)."""
        return self.local_address is not None


def mesh_peers(
    members: Iterable[MemberInfo],
    own_name: str,
    plan: AsnPlan,
    own_asn: int,
    own: SpeakerInfo | None = None,
    *,
    values: DecodeCache[SpeakerInfo],
) -> dict[str, MeshPeer]:
    """Live members that publish speaker info, by their session address (:func:`session_addresses`
    with ``own``, our own published info; without it, the underlay addresses). In shared mode every
    machine's ASN is the plan's; a member publishing another one is misconfigured and gets our ASN as
    its peer AS, so the session's OPEN fails visibly (``bgp neighbors`` shows the error) instead of
    silently becoming eBGP. ``values`` decodes the ``bgp`` values (once per change; one this agent
    cannot read is reported to its refusals)."""
    out: dict[str, MeshPeer] = {}
    for member in members:
        if member.name == own_name or member.state not in PEERING_STATES:
            continue
        info = values.decode(member.kv.get(BGP_KEY, (0, None))[1], member.name)
        if info is None:
            continue
        asn = own_asn if plan.mode is MeshAsnMode.SHARED else info.asn
        local: str | None = None
        address = info.address
        if own is not None:
            pair = session_addresses(own, info)
            if pair is None:
                continue
            local, address = pair
            if local == own.address:
                local = None
        if address in out:
            log.warning("members %s and %s both claim peering address %s", out[address].name,
                        member.name, address)  # fmt: skip
            continue
        out[address] = MeshPeer(member.name, address, asn, info.router_id, local)
    return out


def neighbors(
    settings: BgpSettings,
    *,
    own_name: str,
    own_address: str,
    router_id: str,
    peers: Mapping[str, MeshPeer],
    reflectors: Mapping[str, MeshPeer] | None = None,
) -> list[Neighbor]:
    """ExaBGP's neighbor set: mesh peers (each from its session's local address: ``own_address``, the
    underlay, unless the peer says otherwise), then the route reflectors' BIRDs (``reflectors``, by
    their session address; this machine's own BIRD among them when it is one: the same address as
    ours, port :data:`REFLECTOR_PORT`), then external peers (an external peer on a mesh member's
    address is the operator's explicit choice and wins).

    A session to a reflector's BIRD: we connect (BIRD is passive toward its clients), nobody connects
    to us (``listen`` off: ExaBGP's port 179 stays for the direct and external sessions), and ADD-PATH
    receive, so every announcer of a prefix reaches us, not only the reflector's best."""
    own_asn = settings.machine_asn(own_name)
    out: dict[str, Neighbor] = {}
    own_ip = ipaddress.ip_address(own_address)
    for address, peer in sorted(peers.items()):
        ip = ipaddress.ip_address(address)
        local_ip = ipaddress.ip_address(peer.local_address) if peer.local_address else own_ip
        if ip.version != local_ip.version or ip == local_ip:
            continue
        n = mesh_neighbor(
            address=address,
            name=peer.name,
            local_name=own_name,
            local_address=str(local_ip),
            router_id=router_id,
            plan=settings.plan,
            peer_asn=peer.asn,
            local_asn=own_asn,
            hold_time=settings.hold_time,
        )
        # The lower address waits, the higher connects.
        out[address] = replace(n, passive=True) if int(local_ip) < int(ip) else n
    for address, peer in sorted((reflectors or {}).items()):
        local = peer.local_address or own_address
        if ipaddress.ip_address(address).version != ipaddress.ip_address(local).version:
            continue
        n = mesh_neighbor(
            address=address,
            name=peer.name,
            local_name=own_name,
            local_address=local,
            router_id=router_id,
            plan=settings.plan,
            peer_asn=peer.asn,
            local_asn=own_asn,
            hold_time=settings.hold_time,
            add_path=AddPath.RECEIVE,
        )
        out[address] = replace(n, port=REFLECTOR_PORT, listen=False, description=f"reflector {peer.name}")
    for external in settings.peers:
        out[external.address] = external_neighbor(external, router_id, own_asn)
    return list(out.values())
