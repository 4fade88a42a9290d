"""ExaBGP's events into the RIB without I/O: updates through the import policy, sessions going down,
the speaker going away, GRACEFUL_SHUTDOWN on receipt, and gossip-driven invalidation."""

from __future__ import annotations

import ipaddress

from agent.bgp.api import (
    ApiPeer,
    ApiRoute,
    Notification,
    Open,
    Origin,
    PeerState,
    RouteAttributes,
    SessionState,
    Update,
    parse_line,
)
from agent.bgp.ingest import Ingest, routing_attributes
from agent.bgp.status import SessionTable
from agent.cluster.objects import PolicySet
from agent.routing import AsPath, DecisionOptions, PeerKind, PolicyChain, Prefix, Rib

ROUTER1 = ApiPeer("198.18.0.1", "198.18.0.10", 65000, 64512)
ROUTER2 = ApiPeer("198.18.0.3", "198.18.0.10", 65010, 64512)
MESH = ApiPeer("198.18.0.11", "198.18.0.10", 64512, 64512)

IMPORT = PolicySet.model_validate(
    {
        "name": "in",
        "rules": [
            {"match": {"prefix_list": [{"prefix": "198.18.200.0/24"}]}, "result": "reject"},
            {
                "match": {"prefix_list": [{"prefix": "192.0.2.0/24"}], "as_path": "^65010_"},
                "actions": {"set_local_pref": 200},
            },
        ],
        "default": "accept",
    }
)


def p(text: str) -> Prefix:
    return Prefix.parse(text)


def up(peer: ApiPeer) -> PeerState:
    return PeerState(peer, SessionState.UP)


def update(peer: ApiPeer, *prefixes: str, path: tuple[int, ...] | None = None, **attrs: object) -> Update:
    attributes = RouteAttributes(as_path=path if path is not None else (peer.asn,), **attrs)  # type: ignore[arg-type]
    return Update(peer, tuple(ApiRoute(x, peer.address, attributes) for x in prefixes))


def make(router_ids: dict[str, str] | None = None) -> Ingest:
    rib = Rib(
        router_id=ipaddress.IPv4Address("198.18.0.10"),
        asn=64512,
        options=DecisionOptions(max_paths=4),
        import_policy=PolicyChain.of([IMPORT]),
    )
    return Ingest(rib, SessionTable(), (router_ids or {}).get)


def test_conversion_keeps_every_attribute() -> None:
    wire = RouteAttributes(
        origin=Origin.INCOMPLETE,
        as_path=(65000, 65001),
        as_sets=((65003, 65002),),
        med=10,
        local_pref=120,
        communities=((65000, 1),),
        large_communities=((65000, 1, 2),),
    )
    attrs = routing_attributes(wire, "198.18.0.1")
    assert attrs.next_hop == ipaddress.ip_address("198.18.0.1")
    assert attrs.as_path.text == "65000 65001 {65002,65003}" and attrs.as_path.length == 3
    assert (attrs.med, attrs.local_pref, attrs.origin.name) == (10, 120, "INCOMPLETE")
    assert attrs.community_texts() == ["65000:1", "65000:1:2"]


def test_updates_go_through_the_import_policy_and_the_decision() -> None:
    ingest = make()
    rib = ingest.rib
    for peer in (ROUTER1, ROUTER2):
        ingest.apply(up(peer), 0.0)
    ingest.apply(update(ROUTER1, "203.0.113.0/24", "192.0.2.0/24", "198.18.200.0/24", "198.51.100.0/24"), 1.0)
    ingest.apply(update(ROUTER2, "192.0.2.0/24", "198.51.100.0/24"), 1.0)
    ingest.apply(update(ROUTER2, "203.0.113.0/24", path=(65010, 65010)), 1.0)

    assert p("198.18.200.0/24") not in rib  # rejected by the import policy
    best = rib.selection(p("203.0.113.0/24"))
    assert best is not None and str(best.best.peer.address) == ROUTER1.address
    loser = rib.explain(p("203.0.113.0/24"))[1]
    assert loser.reason() == "lost at AS Path: 2 vs 1 (via 198.18.0.1)"
    rewritten = rib.selection(p("192.0.2.0/24"))
    assert rewritten is not None and str(rewritten.best.peer.address) == ROUTER2.address
    assert rewritten.best.attrs.local_pref == 200
    ecmp = rib.selection(p("198.51.100.0/24"))
    assert ecmp is not None and {str(h) for h in ecmp.next_hops} == {ROUTER1.address, ROUTER2.address}
    assert all(peer.kind is PeerKind.EXTERNAL for peer in rib.peers)
    assert ingest.sessions.prefixes(ROUTER1.address) == {
        "203.0.113.0/24",
        "192.0.2.0/24",
        "198.18.200.0/24",
        "198.51.100.0/24",
    }

    ingest.apply(Update(ROUTER1, withdrawn=("203.0.113.0/24",)), 2.0)
    after = rib.selection(p("203.0.113.0/24"))
    assert after is not None and str(after.best.peer.address) == ROUTER2.address


def test_a_session_going_down_takes_its_paths() -> None:
    ingest = make()
    rib = ingest.rib
    for peer in (ROUTER1, ROUTER2):
        ingest.apply(up(peer), 0.0)
        ingest.apply(update(peer, "198.51.100.0/24"), 0.0)
    rib.take_diff()
    ingest.apply(Notification(ROUTER1, "receive", 6, 2, message="bye"), 1.0)
    ingest.apply(PeerState(ROUTER1, SessionState.DOWN, "notification received (6,2)"), 1.0)
    sel = rib.selection(p("198.51.100.0/24"))
    assert sel is not None and [str(h) for h in sel.next_hops] == [ROUTER2.address]
    assert len(rib.take_diff()) == 1
    status = {s.address: s for s in ingest.sessions.snapshot(2.0)}
    assert status[ROUTER1.address].state == "down" and status[ROUTER1.address].prefixes_in == 0
    ingest.speaker_down("exabgp exited with status -9", 3.0)
    assert len(rib) == 0
    assert all(s.last_error == "exabgp exited with status -9" for s in ingest.sessions.snapshot(3.0))


def test_an_update_before_its_session_event_still_counts() -> None:
    ingest = make()
    ingest.apply(update(ROUTER1, "203.0.113.0/24"), 0.0)  # "up" was missed (e.g. events dropped)
    assert p("203.0.113.0/24") in ingest.rib


def test_a_new_session_replaces_the_old_ones_paths() -> None:
    ingest = make()
    ingest.apply(up(ROUTER1), 0.0)
    ingest.apply(update(ROUTER1, "203.0.113.0/24"), 0.0)
    ingest.apply(up(ROUTER1), 5.0)  # the peer reconnected without us seeing "down"
    assert p("203.0.113.0/24") not in ingest.rib


def test_graceful_shutdown_received_means_local_pref_zero() -> None:
    ingest = make({MESH.address: "198.18.0.11"})
    ingest.apply(up(MESH), 0.0)
    ingest.apply(up(ROUTER1), 0.0)
    ingest.apply(update(MESH, "100.96.1.1/32", path=(), communities=((65535, 0),)), 0.0)
    ingest.apply(update(ROUTER1, "100.96.1.1/32", path=(65000, 65001, 65002)), 0.0)
    sel = ingest.rib.selection(p("100.96.1.1/32"))
    assert sel is not None and str(sel.best.peer.address) == ROUTER1.address  # the draining path lost
    mesh_path = next(r for r in ingest.rib.explain(p("100.96.1.1/32")) if not r.best)
    assert mesh_path.path.attrs.local_pref == 0 and mesh_path.path.peer.kind is PeerKind.INTERNAL
    assert "graceful-shutdown" in mesh_path.path.attrs.community_texts()


def test_gossip_invalidation_drops_and_restores_paths() -> None:
    ingest = make()
    rib = ingest.rib
    ingest.apply(up(MESH), 0.0)
    ingest.apply(update(MESH, "100.96.1.1/32", path=()), 0.0)
    rib.take_diff()
    rib.invalidate(ipaddress.ip_address(MESH.address))  # gossip: dead
    assert p("100.96.1.1/32") not in rib
    diff = rib.take_diff()
    assert [c.after for c in diff] == [None]
    ingest.apply(update(MESH, "100.96.1.2/32", path=()), 1.0)  # still recorded while invalid
    rib.revalidate(ipaddress.ip_address(MESH.address))  # alive again
    assert p("100.96.1.1/32") in rib and p("100.96.1.2/32") in rib


def test_router_ids_come_from_the_open_the_lookup_or_the_address() -> None:
    ingest = make({MESH.address: "10.0.0.11"})
    ingest.apply(Open(ROUTER2, "10.9.9.9", 9), 0.0)
    for wire in (MESH, ROUTER1, ROUTER2):
        ingest.apply(up(wire), 0.0)
    ids = {str(peer.address): str(peer.router_id) for peer in ingest.rib.peers}
    assert ids == {MESH.address: "10.0.0.11", ROUTER1.address: ROUTER1.address, ROUTER2.address: "10.9.9.9"}
    v6 = ApiPeer("2001:db8::1", "2001:db8::10", 65000, 64512)
    ingest.apply(up(v6), 0.0)
    v6_peer = ingest.peer("2001:db8::1")
    assert v6_peer is not None and str(v6_peer.router_id) == "0.0.0.0"
    assert AsPath.of(1).length == 1


def test_an_open_as_exabgp_writes_it() -> None:
    line = (
        '{ "exabgp": "5.0.0", "time": 1.5, "host" : "h", "pid" : 1, "ppid" : 1, "type": "open", '
        '"neighbor": { "address": { "local": "198.18.0.10", "peer": "198.18.0.3" }, '
        '"asn": { "local": 64512, "peer": 65010 }, "router-id": "198.18.0.10" , "direction": "receive", '
        '"open": { "version": 4, "asn": 65010, "hold_time": 9, "router_id": "10.0.0.3", '
        '"capabilities": { "65": { "name": "asn4", "asn4": 65010 } } } } }'
    )
    parsed = parse_line(line)
    assert parsed == Open(ROUTER2, "10.0.0.3", 9, 1.5)
