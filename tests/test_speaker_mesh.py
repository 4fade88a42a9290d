"""Who peers with whom: members that publish speaker info, ASNs by plan, one active side per pair."""

from __future__ import annotations

import msgpack

from agent.bgp.mesh import mesh_peers, neighbors, session_addresses
from agent.config.bgp import AsnPlan, BgpSettings, ExternalPeer, MeshAsnMode
from agent.published import BGP, BGP_KEY, SpeakerInfo
from gossip.codec import DecodeCache, Refusals
from gossip.events import MemberInfo, MemberState


def decode_info(data: bytes | None) -> SpeakerInfo | None:
    return BGP.decode(data, "peer", Refusals())


def member(
    name: str, address: str, state: MemberState = MemberState.ALIVE, info: bytes | None = None
) -> MemberInfo:
    kv: dict[str, tuple[int, bytes | None]] = {BGP_KEY: (1, info)} if info is not None else {}
    return MemberInfo(name, (address, 7946), 1, state, 0.0, b"", kv)


def info(asn: int, address: str, sent: tuple[str, ...] = ()) -> bytes:
    return BGP.encode(SpeakerInfo(asn, address, address, sent))


def test_speaker_info_round_trip_and_junk() -> None:
    value = SpeakerInfo(64512, "198.18.0.10", "198.18.0.10", ("vip/web",))
    assert decode_info(BGP.encode(value)) == value
    assert decode_info(None) is None
    assert decode_info(b"\xff\x00") is None
    assert decode_info(msgpack.packb({"v": 99, "asn": 1, "rid": "1.1.1.1", "addr": "1.1.1.1"})) is None
    assert decode_info(msgpack.packb({"v": 1, "asn": 0, "rid": "1.1.1.1", "addr": "1.1.1.1"})) is None


def test_only_live_members_running_a_speaker_are_peers() -> None:
    members = [
        member("me", "198.18.0.10", info=info(64512, "198.18.0.10")),
        member("a2", "198.18.0.11", info=info(64512, "198.18.0.11")),
        member("a3", "198.18.0.12", MemberState.SUSPECT, info=info(64512, "198.18.0.12")),
        member("a4", "198.18.0.13", MemberState.DEAD, info=info(64512, "198.18.0.13")),
        member("a5", "198.18.0.14", MemberState.LEFT, info=info(64512, "198.18.0.14")),
        member("nobgp", "198.18.0.15"),
    ]
    peers = mesh_peers(members, "me", AsnPlan(), 64512, values=DecodeCache(BGP, Refusals()))
    assert {p.name for p in peers.values()} == {"a2", "a3"}


def test_asns_follow_the_plan() -> None:
    members = [member("a2", "198.18.0.11", info=info(4200000002, "198.18.0.11"))]
    shared = mesh_peers(
        members, "me", AsnPlan(MeshAsnMode.SHARED, 64512), 64512, values=DecodeCache(BGP, Refusals())
    )
    assert shared["198.18.0.11"].asn == 64512  # a misconfigured member gets our ASN: its OPEN fails loudly
    per_machine = mesh_peers(
        members, "me", AsnPlan(MeshAsnMode.PER_MACHINE), 4200000001, values=DecodeCache(BGP, Refusals())
    )
    assert per_machine["198.18.0.11"].asn == 4200000002


def test_neighbors_mesh_and_external() -> None:
    settings = BgpSettings(
        enabled=True,
        hold_time=30,
        peers=(ExternalPeer("198.18.0.1", 65000, local_address="198.18.0.11"),),
    )
    members = [
        member("a1", "198.18.0.10", info=info(64512, "198.18.0.10")),
        member("a3", "198.18.0.12", info=info(64512, "198.18.0.12")),
        member("v6", "2001:db8::5", info=info(64512, "2001:db8::5")),
    ]
    peers = mesh_peers(members, "a2", settings.plan, 64512, values=DecodeCache(BGP, Refusals()))
    out = {n.address: n for n in neighbors(settings, own_name="a2", own_address="198.18.0.11",
                                           router_id="198.18.0.11", peers=peers)}  # fmt: skip
    assert set(out) == {"198.18.0.10", "198.18.0.12", "198.18.0.1"}  # no IPv6 session over an IPv4 underlay
    lower, higher = out["198.18.0.10"], out["198.18.0.12"]
    assert not lower.passive  # we (.11) are the higher address towards .10: we connect
    assert higher.passive  # and the lower one towards .12: we wait for it
    assert lower.internal and lower.hold_time == 30 and lower.description == "mesh a1"
    external = out["198.18.0.1"]
    assert external.peer_as == 65000 and external.local_as == 64512 and not external.internal


# --- peering over the mesh addresses --------------------------------------------------------------


def mesh_info(address: str, mesh: str | None) -> SpeakerInfo:
    return SpeakerInfo(64512, address, address, (), mesh)


def test_mesh_address_round_trips_and_older_values_still_read() -> None:
    value = mesh_info("198.18.0.10", "100.64.0.1")
    assert decode_info(BGP.encode(value)) == value
    old = msgpack.packb({"v": 1, "asn": 64512, "rid": "1.1.1.1", "addr": "198.18.0.10", "sent": []})
    decoded = decode_info(old)
    assert decoded is not None and decoded.mesh is None
    assert (
        decode_info(msgpack.packb({"v": 1, "asn": 1, "rid": "1.1.1.1", "addr": "1.1.1.1", "mesh": "x"}))
        is None
    )


def test_session_addresses_use_the_mesh_only_when_both_ends_have_it() -> None:
    a, b = mesh_info("198.18.0.1", "100.64.0.1"), mesh_info("198.18.0.2", "100.64.0.2")
    plain = mesh_info("198.18.0.3", None)
    assert session_addresses(a, b) == ("100.64.0.1", "100.64.0.2")
    assert session_addresses(b, a) == ("100.64.0.2", "100.64.0.1")  # symmetric
    assert session_addresses(a, plain) == ("198.18.0.1", "198.18.0.3")  # mixed mesh: underlay
    assert session_addresses(plain, a) == ("198.18.0.3", "198.18.0.1")
    v6 = mesh_info("198.18.0.4", "fd00::4")
    assert session_addresses(a, v6) == ("198.18.0.1", "198.18.0.4")  # mesh families differ: underlay
    assert session_addresses(a, mesh_info("2001:db8::5", None)) is None


def test_neighbors_over_the_mesh_use_mesh_addresses_at_both_ends() -> None:
    settings = BgpSettings(enabled=True)
    own = mesh_info("198.18.0.11", "100.64.0.2")
    members = [
        member("a1", "198.18.0.10", info=BGP.encode(mesh_info("198.18.0.10", "100.64.0.1"))),
        member("a3", "198.18.0.12", info=BGP.encode(mesh_info("198.18.0.12", "100.64.0.3"))),
        member("old", "198.18.0.13", info=info(64512, "198.18.0.13")),  # no WireGuard: underlay
    ]
    peers = mesh_peers(members, "a2", settings.plan, 64512, own, values=DecodeCache(BGP, Refusals()))
    assert set(peers) == {"100.64.0.1", "100.64.0.3", "198.18.0.13"}
    assert peers["100.64.0.1"].over_mesh and not peers["198.18.0.13"].over_mesh
    out = {n.address: n for n in neighbors(settings, own_name="a2", own_address="198.18.0.11",
                                           router_id="198.18.0.11", peers=peers)}  # fmt: skip
    assert out["100.64.0.1"].local_address == "100.64.0.2" and not out["100.64.0.1"].passive
    assert out["100.64.0.3"].local_address == "100.64.0.2" and out["100.64.0.3"].passive  # lower waits
    assert out["198.18.0.13"].local_address == "198.18.0.11" and out["198.18.0.13"].passive
