"""The driver's pure parts: who is a peer (grace, conflicts, clones), which endpoint to enforce, and the
desired device and kernel state for direct, relayed and unreachable peers."""

from __future__ import annotations

import ipaddress

from common.address import IPNetwork
from gossip.events import MemberInfo, MemberState
from transit.desired import (
    KernelRoute,
    KernelState,
    carrier,
    desired_device,
    desired_kernel,
    plan_kernel,
)
from transit.endpoint import Endpoint, host_network, parse_network
from transit.keys import PrivateKey, PublicKey
from transit.meta import META, PROBE_PREFIX, TransitMeta, probe_address
from transit.peers import EndpointChooser, MeshPeer, PeerBook
from transit.reachability import DIRECT, UNREACHABLE, ReachRoute
from transit.wgdevice import plan

ME = PrivateKey(bytes(range(32)))
KEYS = {n: PublicKey(bytes([i + 1]) * 32) for i, n in enumerate("abcdx")}
EP = {n: Endpoint.parse(f"198.18.0.{i + 1}:51820") for i, n in enumerate("abcdx")}


def meta(name: str, addr: str | None = None, at: int = 1000, key: PublicKey | None = None) -> TransitMeta:
    i = "abcdx".index(name) + 1
    return TransitMeta(key or KEYS[name], ipaddress.ip_address(addr or f"100.64.0.{i}"), at, (EP[name],))


def member(name: str, m: TransitMeta | None, state: MemberState = MemberState.ALIVE) -> MemberInfo:
    return MemberInfo(name, ("198.18.0.1", 7946), 1, state, 0.0, META.encode(m) if m else b"")


def own(addr: str = "100.64.0.9") -> MemberInfo:
    return member("me", TransitMeta(ME.public_key, ipaddress.ip_address(addr), 500, ()))


# --- peers -----------------------------------------------------------------------------------------


def test_live_members_with_metadata_are_peers_and_others_are_not() -> None:
    book = PeerBook("me", ME.public_key, grace=60)
    ps = book.update([own(), member("a", meta("a")), member("b", None), member("c", meta("c"))], 0.0)
    assert sorted(ps.peers) == ["a", "c"]  # b runs no transit; we are not our own peer
    assert all(p.live and p.holds_address for p in ps.peers.values())
    assert ps.holds_own_address and ps.conflict is None and not ps.errors


def test_dead_members_stay_for_the_grace_period_then_go() -> None:
    book = PeerBook("me", ME.public_key, grace=60)
    book.update([own(), member("a", meta("a"))], 0.0)
    dead = [own(), member("a", meta("a"), MemberState.DEAD)]
    ps = book.update(dead, 30.0)
    assert ps.peers["a"] == MeshPeer("a", meta("a"), live=False, holds_address=True)
    assert book.next_deadline() == 60.0
    assert "a" not in book.update(dead, 60.0).peers
    # back alive: a peer again, at once
    assert book.update([own(), member("a", meta("a"))], 61.0).peers["a"].live


def test_a_member_in_grace_loses_its_address_to_a_live_claimant() -> None:
    book = PeerBook("me", ME.public_key, grace=60)
    book.update([own(), member("a", meta("a"))], 0.0)
    ps = book.update(
        [own(), member("a", meta("a"), MemberState.LEFT), member("x", meta("x", "100.64.0.1"))], 5
    )
    assert not ps.peers["a"].holds_address and ps.peers["x"].holds_address


def test_the_later_claim_is_refused_and_told() -> None:
    book = PeerBook("me", ME.public_key, grace=60)
    early = member("a", meta("a", "100.64.0.9", at=100))
    ps = book.update([own("100.64.0.9"), early], 0.0)  # we claimed at 500: later
    assert not ps.holds_own_address and ps.conflict is not None
    assert "already held by a" in ps.conflict.message_for("me")
    assert ps.peers["a"].holds_address


def test_clones_of_a_key_are_not_configured_and_are_reported() -> None:
    book = PeerBook("me", ME.public_key, grace=60)
    ps = book.update(
        [
            own(),
            member("a", meta("a")),
            member("b", meta("b", key=KEYS["a"])),
            member("c", meta("c", key=ME.public_key)),
        ],
        0.0,
    )
    assert sorted(ps.peers) == []
    assert "also published by b" in ps.errors["a"] and "also published by a" in ps.errors["b"]
    assert "own public key" in ps.errors["c"]


def test_endpoint_is_enforced_when_new_changed_or_without_handshake() -> None:
    ch = EndpointChooser(retry=15, stale=185)
    e1, e2 = EP["a"], EP["b"]
    assert ch.choose("a", (e1, e2), on_device=False, handshake=None, now=0) == e1
    assert ch.choose("a", (e1, e2), on_device=True, handshake=None, now=10) is None  # give it time
    assert ch.choose("a", (e1, e2), on_device=True, handshake=None, now=15) == e2  # nothing: next one
    assert ch.choose("a", (e1, e2), on_device=True, handshake=16, now=20) is None  # it works: leave it
    assert ch.choose("a", (e1, e2), on_device=True, handshake=16, now=100) is None
    # the peer roamed away and the session expired: re-set the one that worked, then move on
    assert ch.choose("a", (e1, e2), on_device=True, handshake=16, now=202) == e2
    assert ch.choose("a", (e1, e2), on_device=True, handshake=16, now=217) == e1
    # new endpoints in the metadata are followed at once, as is a restarted (blank) device
    assert ch.choose("a", (e2,), on_device=True, handshake=216, now=218) == e2
    assert ch.choose("a", (e2,), on_device=False, handshake=None, now=219) == e2
    assert ch.current("a") == e2
    ch.forget([])
    assert ch.current("a") is None


# --- desired device and kernel -------------------------------------------------------------------


def peers(*names: str, holds: bool = True) -> dict[str, MeshPeer]:
    return {n: MeshPeer(n, meta(n), True, holds) for n in names}


def allowed(device: object, name: str) -> frozenset[object]:
    from transit.wgdevice import DesiredDevice

    assert isinstance(device, DesiredDevice)
    return device.peers[KEYS[name]].allowed_ips


def mesh(name: str) -> object:
    return host_network(meta(name).mesh_address)


def probe(name: str) -> object:
    return host_network(probe_address(KEYS[name]))


def test_direct_peers_carry_their_mesh_and_probe_addresses() -> None:
    d = desired_device(ME, 51820, 25, peers("a", "b"), {"a": DIRECT}, {"a": EP["a"], "b": None})
    assert allowed(d, "a") == {mesh("a"), probe("a")} and allowed(d, "b") == {mesh("b"), probe("b")}
    assert d.peers[KEYS["a"]].endpoint == EP["a"] and d.peers[KEYS["b"]].endpoint is None
    assert d.peers[KEYS["a"]].persistent_keepalive == 25 and d.listen_port == 51820


def test_a_relayed_peer_keeps_only_its_probe_address_and_the_relay_carries_its_mesh_address() -> None:
    routes = {"a": DIRECT, "b": ReachRoute.via("c"), "c": DIRECT}
    d = desired_device(ME, 51820, 25, peers("a", "b", "c"), routes, {})
    assert allowed(d, "b") == {probe("b")}
    assert allowed(d, "c") == {mesh("c"), probe("c"), mesh("b")}
    assert carrier("b", routes, peers("a", "b", "c")) == "c"
    # the same device, read back, needs nothing more; failing back is one set
    from transit.uapi import DeviceState, PeerState

    state = DeviceState(
        ME,
        51820,
        0,
        {p.public_key: PeerState(p.public_key, None, p.allowed_ips, 25) for p in d.peers.values()},
    )
    assert plan(d, state) is None
    back = desired_device(ME, 51820, 25, peers("a", "b", "c"), {"b": DIRECT}, {})
    request = plan(back, state)
    assert request is not None and allowed(back, "b") == {mesh("b"), probe("b")}


def test_unreachable_peers_and_unknown_relays_keep_their_address_on_their_own_entry() -> None:
    d = desired_device(ME, 51820, 25, peers("a", "b"), {"a": UNREACHABLE, "b": ReachRoute.via("zz")}, {})
    assert allowed(d, "a") == {mesh("a"), probe("a")} and allowed(d, "b") == {mesh("b"), probe("b")}


def test_a_peer_whose_claim_is_refused_gets_no_mesh_address_and_no_route() -> None:
    ps = {**peers("a"), **peers("x", holds=False)}
    d = desired_device(ME, 51820, 25, ps, {}, {})
    assert allowed(d, "x") == {probe("x")}
    k = desired_kernel(ipaddress.ip_address("100.64.0.9"), probe_address(ME.public_key), ps)
    assert {r.dst for r in k.routes} == {mesh("a"), PROBE_PREFIX}


def test_kernel_state_and_plan() -> None:
    me4 = ipaddress.ip_address("100.64.0.9")
    me6 = probe_address(ME.public_key)
    k = desired_kernel(me4, me6, peers("a", "b"))
    assert k.addresses == {ipaddress.ip_interface("100.64.0.9/32"), ipaddress.ip_interface(f"{me6}/128")}
    assert k.routes == {
        KernelRoute(parse_network("100.64.0.1/32"), me4),
        KernelRoute(parse_network("100.64.0.2/32"), me4),
        KernelRoute(PROBE_PREFIX, me6),
    }
    # refused: no own mesh address, routes without a source
    refused = desired_kernel(None, me6, peers("a"))
    assert ipaddress.ip_interface("100.64.0.9/32") not in refused.addresses
    assert KernelRoute(parse_network("100.64.0.1/32"), None) in refused.routes

    stranger = ipaddress.ip_interface("10.9.9.9/32")  # put there by someone else: not ours to remove
    stale_probe = ipaddress.ip_interface("fd77:6d65:7368::1/128")
    old_mesh = ipaddress.ip_interface("100.64.0.8/32")
    actual = KernelState(
        frozenset({stranger, stale_probe, old_mesh}),
        frozenset(
            {KernelRoute(parse_network("100.64.0.1/32"), None), KernelRoute(parse_network("100.64.0.7/32"))}
        ),
    )
    p = plan_kernel(k, actual, added={old_mesh})
    assert set(p.add_addresses) == k.addresses
    assert set(p.del_addresses) == {stale_probe, old_mesh}
    assert set(p.set_routes) == k.routes  # 100.64.0.1 is replaced because its source changed
    assert p.del_routes == (KernelRoute(parse_network("100.64.0.7/32")),)
    assert plan_kernel(k, k, added=set()).empty


def test_two_gone_members_with_one_address_do_not_both_hold_it() -> None:
    book = PeerBook("me", ME.public_key, grace=60)
    first, second = meta("a", "100.64.0.5", at=100), meta("b", "100.64.0.5", at=200)
    book.update([own(), member("a", first), member("b", second)], 0.0)
    dead = [own(), member("a", first, MemberState.DEAD), member("b", second, MemberState.DEAD)]
    ps = book.update(dead, 10.0)
    assert (ps.peers["a"].holds_address, ps.peers["b"].holds_address) == (True, False)
    desired_device(ME, 51820, 25, ps.peers, {}, {})  # one owner per prefix: builds


def test_routed_prefixes_follow_the_peer_and_its_relay() -> None:
    vip = parse_network("100.96.0.2/32")
    routed: dict[str, set[IPNetwork]] = {
        "b": {vip, host_network(meta("a").mesh_address), parse_network("fd77:6d65:7368::1/128")},
        "a": {vip},
    }
    d = desired_device(ME, 51820, 25, peers("a", "b", "c"), {}, {}, routed)
    # the first by name wins a prefix claimed for two; never a peer's mesh or probe address
    assert allowed(d, "a") == {mesh("a"), probe("a"), vip}
    assert allowed(d, "b") == {mesh("b"), probe("b")}
    relayed = desired_device(ME, 51820, 25, peers("b", "c"), {"b": ReachRoute.via("c")}, {}, {"b": {vip}})
    assert allowed(relayed, "b") == {probe("b")}
    assert allowed(relayed, "c") == {mesh("c"), probe("c"), mesh("b"), vip}
