"""The speaker's wiring of route reflection (agent.bgp.reflectors) without ExaBGP or BIRD running: what
it publishes, which neighbors it hands ExaBGP and which clients its BIRD gets, from a gossip view."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio

from agent.bgp.api import ApiPeer, PeerState, SessionState
from agent.bgp.bird import BirdOptions
from agent.bgp.birdconf import REFLECTOR_PORT
from agent.bgp.config import AddPath, Neighbor
from agent.bgp.reflection import Disagreement
from agent.bgp.reflectors import name_hash
from agent.bgp.speaker import BgpSpeaker
from agent.bgp.supervisor import SupervisorOptions
from agent.cluster.store import ObjectStore
from agent.config.bgp import AsnPlan, BgpSettings, MeshAsnMode
from agent.published import BGP, BGP_KEY, Eligibility, ReflectorInfo, ReflectorKnobs, SpeakerInfo
from gossip.codec import Codec, DecodeCache, Refusals
from gossip.events import MemberEvent, MemberInfo, MemberState

ASN = 64512
AUTO = ReflectorInfo()  # what an agent of today publishes by default


def address(i: int) -> str:
    return f"198.18.0.{10 + i}"


class Gossip:
    def __init__(self, members: list[MemberInfo]) -> None:
        self.others = members
        self.kv: dict[str, bytes | None] = {}

    def members(self) -> list[MemberInfo]:
        return list(self.others)

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        return trio.open_memory_channel[MemberEvent](max_buffer)[1]

    async def set_kv(self, key: str, value: bytes | None) -> None:
        self.kv[key] = value


def member(i: int, rr: ReflectorInfo | None = AUTO) -> MemberInfo:
    info = BGP.encode(SpeakerInfo(ASN, address(i), address(i), reflector=rr))
    return MemberInfo(f"m{i}", (address(i), 7946), 1, MemberState.ALIVE, 0.0, b"", {BGP_KEY: (1, info)})


def speaker(tmp_path: Path, members: list[MemberInfo], name: str = "m0", **settings: object) -> BgpSpeaker:
    sp = BgpSpeaker(
        BgpSettings(enabled=True, **settings),  # type: ignore[arg-type]
        machine=name,
        address=address(int(name[1:])),
        store=ObjectStore(name, lambda: set()),
        node=Gossip(members),
        decisions=dict,
        supervisor=SupervisorOptions(state_dir=tmp_path / "exabgp"),
        bird=BirdOptions(state_dir=tmp_path / "bird"),
    )
    sp._refresh_mesh()
    sp._replan()
    return sp


def mesh(neighbors: list[Neighbor]) -> dict[str, Neighbor]:
    return {n.address: n for n in neighbors}


def names(count: int) -> list[str]:
    return [f"m{i}" for i in range(count)]


def expected_reflectors(count: int, k: int = 2) -> list[str]:
    return sorted(sorted(names(count), key=name_hash)[:k])


async def test_below_full_mesh_below_the_neighbors_are_todays_full_mesh(tmp_path: Path) -> None:
    sp = speaker(tmp_path, [member(i) for i in range(1, 5)])
    assert sp.reflection.placement.mode.value == "full-mesh"
    out = mesh(sp._neighbors())
    assert set(out) == {address(i) for i in range(1, 5)}
    assert all(n.port == 179 and n.add_path is None and n.listen for n in out.values())
    assert all(n.passive for n in out.values())  # m0 has the lowest address: it waits
    published = BGP.decode(BGP.encode(sp._own_info()), "m0", Refusals())
    assert published is not None and published.reflector == ReflectorInfo(
        Eligibility.AUTO, None, None, ReflectorKnobs(2, 8, 2, 30.0)
    )


async def test_a_client_peers_with_each_reflectors_bird_only(tmp_path: Path) -> None:
    reflectors = expected_reflectors(8)
    client = next(n for n in names(8) if n not in reflectors)
    others = [member(i) for i in range(8) if f"m{i}" != client]
    sp = speaker(tmp_path, others, name=client)
    assert (
        sp.reflection.placement.mode.value == "reflected"
        and list(sp.reflection.placement.reflectors) == reflectors
    )
    out = mesh(sp._neighbors())
    assert set(out) == {address(int(r[1:])) for r in reflectors}
    for n in out.values():
        assert (n.port, n.listen, n.passive, n.add_path) == (REFLECTOR_PORT, False, False, AddPath.RECEIVE)
    assert sp.reflection.claim is None and sp.bird is not None and sp.bird.spec is None
    assert {v.name for v in sp.neighbor_views()} == set()  # nothing configured in ExaBGP yet


async def test_a_reflector_claims_runs_bird_for_every_machine_and_peers_with_its_own(tmp_path: Path) -> None:
    reflectors = expected_reflectors(8)
    me = reflectors[0]
    sp = speaker(tmp_path, [member(i) for i in range(8) if f"m{i}" != me], name=me)
    assert sp.reflection.claim is not None  # published: the role is sticky from here on
    published = BGP.decode(BGP.encode(sp._own_info()), me, Refusals())
    assert (
        published is not None
        and published.reflector is not None
        and published.reflector.claim == sp.reflection.claim
    )
    out = mesh(sp._neighbors())
    assert set(out) == {address(int(r[1:])) for r in reflectors}  # its own BIRD and the other's
    own = out[address(int(me[1:]))]
    assert own.local_address == own.address and own.port == REFLECTOR_PORT and not own.listen
    assert sp.bird is not None and sp.bird.spec is not None
    spec = sp.bird.spec
    assert {c.name for c in spec.clients} == set(names(8)) and spec.peers == ()
    assert all(c.port == 179 and c.asn == ASN for c in spec.clients)
    assert spec.router_id != sp.router_id  # ExaBGP refuses an OPEN with its own identifier


async def test_a_legacy_member_keeps_a_direct_session(tmp_path: Path) -> None:
    reflectors = expected_reflectors(8)
    client = next(n for n in names(8) if n not in reflectors)
    legacy = next(n for n in names(8) if n not in reflectors and n != client)
    others = [member(i, None if f"m{i}" == legacy else AUTO) for i in range(8) if f"m{i}" != client]
    out = mesh(speaker(tmp_path, others, name=client)._neighbors())
    direct = out[address(int(legacy[1:]))]
    assert direct.port == 179 and direct.add_path is None
    assert len(out) == 3


async def test_per_machine_asns_refuse_the_role_and_keep_the_full_mesh(tmp_path: Path) -> None:
    plan = AsnPlan(mode=MeshAsnMode.PER_MACHINE)
    sp = speaker(tmp_path, [member(i, ReflectorInfo(Eligibility.NEVER)) for i in range(1, 9)], plan=plan)
    assert (
        sp.reflection.eligibility is Eligibility.NEVER
        and sp.reflection.refused is not None
        and "per-machine" in sp.reflection.refused
    )
    assert (
        sp.reflection.placement.mode.value == "full-mesh"
        and sp.reflection_view().refused == sp.reflection.refused
    )
    assert len(sp._neighbors()) == 8


async def test_a_replan_decodes_each_members_bgp_value_once_per_change(
    tmp_path: Path, monkeypatch: Any
) -> None:
    me = expected_reflectors(8)[0]
    members = [member(i) for i in range(8) if f"m{i}" != me]
    sp = speaker(tmp_path, members, name=me)
    decoded: list[str] = []
    real = Codec.decode

    def counting(self: Codec[Any], data: bytes | None, sender: str, refusals: Refusals) -> Any:
        if self.key == BGP_KEY:
            decoded.append(sender)
        return real(self, data, sender, refusals)

    monkeypatch.setattr(Codec, "decode", counting)
    sp.bgp_values = DecodeCache(BGP, sp.refusals)  # what the speaker decoded before counting began
    sp.reflection.claim = None  # a reflector without its claim takes one: the rule runs twice
    sp._replan()
    assert sp.reflection.claim is not None
    assert sorted(decoded) == sorted(m.name for m in members)
    decoded.clear()
    sp._replan()
    sp._refresh_mesh()
    assert decoded == []  # nothing changed: nothing decoded again
    changed = members[0]
    was = sp.bgp_values.decode(changed.kv[BGP_KEY][1], changed.name)  # cached: not counted
    assert was is not None
    changed.kv[BGP_KEY] = (2, BGP.encode(replace(was, sent=("vip/web",))))  # it announces something
    sp._replan()
    assert decoded == [changed.name]


def as_member(sp: BgpSpeaker) -> MemberInfo:
    """``sp``'s ``bgp`` value as another machine's gossip holds it."""
    i = int(sp.machine[1:])
    value = BGP.encode(sp._own_info())
    return MemberInfo(sp.machine, (address(i), 7946), 1, MemberState.ALIVE, 0.0, b"", {BGP_KEY: (1, value)})


async def test_knobs_that_differ_are_reported_once_and_placement_keeps_our_own(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    others = [member(i) for i in range(2, 9)]  # publish no knobs (older agents): not reported
    a = speaker(tmp_path / "a", others, name="m0", reflectors=3)
    b = speaker(tmp_path / "b", others, name="m1", reflector_hold=10.0)
    own_a, own_b = a._own_info().reflector, b._own_info().reflector
    assert own_a is not None and own_a.knobs == ReflectorKnobs(3, 8, 2, 30.0)
    assert own_b is not None and own_b.knobs == ReflectorKnobs(2, 8, 2, 10.0)
    assert isinstance(a.node, Gossip) and isinstance(b.node, Gossip)
    a.node.others = [*others, as_member(b)]
    b.node.others = [*others, as_member(a)]
    with caplog.at_level(logging.WARNING, logger="wiremesh.bgp.reflection"):
        a._replan()
        a._replan()  # nothing changed: nothing logged again
        b._replan()
    assert a.reflection_view().disagree == (
        Disagreement("m1", "reflectors", 3, 2),
        Disagreement("m1", "reflector_hold", 30.0, 10.0),
    )
    assert b.reflection_view().disagree == (
        Disagreement("m0", "reflectors", 2, 3),
        Disagreement("m0", "reflector_hold", 10.0, 30.0),
    )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    assert "m1 uses reflectors = 2, this machine 3" in warnings[0]
    assert "m1 uses reflector_hold = 10.0, this machine 30.0" in warnings[1]
    # each keeps computing with its own knobs: a 3 reflectors, b 2
    assert len(a.reflection.placement.reflectors) == 3 and len(b.reflection.placement.reflectors) == 2

    caplog.clear()
    fixed = speaker(tmp_path / "c", others, name="m1", reflectors=3)
    a.node.others = [*others, as_member(fixed)]
    with caplog.at_level(logging.INFO, logger="wiremesh.bgp.reflection"):
        a._replan()
    assert a.reflection_view().disagree == ()
    assert any("m1's knobs agree" in r.getMessage() for r in caplog.records)


async def test_the_speaker_names_an_originator_by_the_router_id_its_member_publishes(tmp_path: Path) -> None:
    sp = speaker(tmp_path, [member(i) for i in range(1, 4)])
    assert sp.originator_name(address(2)) == "m2" and sp.originator_name(sp.router_id) == "m0"
    assert sp.originator_name("192.0.2.1") is None
    sp._remember_router_id("m2", "192.0.2.2")  # m2 renumbered: its old id is no one's now
    assert sp.originator_name(address(2)) is None and sp.originator_name("192.0.2.2") == "m2"


async def test_the_neighbor_view_lists_the_plan_only(tmp_path: Path) -> None:
    """A session ExaBGP reports for an address not in the plan (one it failed to drop) is not shown."""
    sp = speaker(tmp_path, [member(1), member(2)])
    sp._reconfigure()
    planned = {n.address for n in sp.supervisor.neighbors}
    assert planned == {address(1), address(2)}
    stray = ApiPeer(address(9), address(0), ASN, ASN)
    sp.sessions.apply(PeerState(stray, SessionState.CONNECTED), now=1.0)
    sp.sessions.apply(PeerState(stray, SessionState.DOWN, "notification received (6,3)"), now=2.0)
    assert {v.address for v in sp.neighbor_views()} == planned
