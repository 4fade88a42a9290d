"""The RIB behind route reflectors: ADD-PATH path identity (RFC 7911), the RFC 4456 decision steps in
the explanations, ECMP across originators through one reflector, loop prevention, and dropping a dead
machine's paths by its ORIGINATOR_ID whichever reflector brought them."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cluster.objects import PolicySet
from agent.routing.decision import DecisionOptions, Step, select
from agent.routing.path import Attributes, Peer, PeerKind, Prefix
from agent.routing.policy import CompiledPolicySet, PolicyChain
from agent.routing.rib import Rib

VIP = Prefix.parse("100.96.0.10/32")
OTHER = Prefix.parse("100.96.0.11/32")
ASN = 65000
ME = ipaddress.IPv4Address("198.18.0.20")
RR1 = Peer(ipaddress.IPv4Address("198.18.0.1"), ASN, ipaddress.IPv4Address("198.18.0.1"), PeerKind.INTERNAL)
RR2 = Peer(ipaddress.IPv4Address("198.18.0.2"), ASN, ipaddress.IPv4Address("198.18.0.2"), PeerKind.INTERNAL)
ECMP = DecisionOptions(max_paths=4)


def machine(n: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(f"198.18.0.{n}")


def reflected(n: int, *clusters: str, **kw: Any) -> Attributes:
    """Machine ``n``'s route as a reflector passes it on: next hop and ORIGINATOR_ID are machine n."""
    return Attributes(
        next_hop=machine(n),
        local_pref=100,
        originator_id=machine(n),
        cluster_list=tuple(ipaddress.IPv4Address(c) for c in clusters or ("198.18.0.1",)),
        **kw,
    )


def make(*peers: Peer, options: DecisionOptions = ECMP, **kw: Any) -> Rib:
    rib = Rib(router_id=ME, asn=ASN, options=options, **kw)
    for p in peers:
        rib.peer_up(p)
    return rib


def hops(rib: Rib, prefix: Prefix = VIP) -> list[str]:
    selection = rib.selection(prefix)
    return [str(h) for h in selection.next_hops] if selection is not None else []


# -- ADD-PATH: one path per path id ---------------------------------------------------------------


def test_two_paths_from_one_session_with_different_path_ids_are_both_kept() -> None:
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    rib.announce(RR1, VIP, reflected(12), 1.0, path_id=3)
    destination = rib.destination(VIP)
    assert destination is not None and [p.path_id for p in destination.candidates] == [2, 3]
    assert hops(rib) == ["198.18.0.11", "198.18.0.12"]  # ECMP across the two originators
    assert rib.path_count() == 2 and rib.path_ids(RR1) == (0, 2, 3)


def test_without_path_ids_the_second_path_replaces_the_first() -> None:
    """What the RIB did before ADD-PATH, and still does for a session without it."""
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11), 1.0)
    rib.announce(RR1, VIP, reflected(12), 1.0)
    assert hops(rib) == ["198.18.0.12"] and rib.path_count() == 1


def test_a_withdrawal_with_a_path_id_removes_only_that_path() -> None:
    rib = make(RR1)
    rib.announce_many(RR1, [VIP, OTHER], reflected(11), 1.0, path_id=2)
    rib.announce_many(RR1, [VIP, OTHER], reflected(12), 1.0, path_id=3)
    rib.take_diff()
    rib.withdraw(RR1, VIP, path_id=3)
    assert hops(rib) == ["198.18.0.11"] and hops(rib, OTHER) == ["198.18.0.11", "198.18.0.12"]
    change = rib.take_diff().by_prefix()[VIP]
    assert change.next_hops_changed and not change.best_changed
    rib.withdraw(RR1, VIP, path_id=9)  # never announced: nothing happens
    rib.withdraw(RR1, VIP)  # path id 0: none there either
    assert hops(rib) == ["198.18.0.11"] and not rib.take_diff()
    rib.withdraw_many(RR1, [VIP, OTHER], path_id=2)
    assert VIP not in rib and hops(rib, OTHER) == ["198.18.0.12"]
    assert rib.path_ids(RR1) == (0, 3)  # the emptied table is gone


def test_re_announcing_one_path_id_replaces_only_that_path() -> None:
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    rib.announce(RR1, VIP, reflected(12), 1.0, path_id=3)
    rib.announce(RR1, VIP, reflected(12, med=50), 2.0, path_id=3)  # implicit withdraw of path 3 only
    destination = rib.destination(VIP)
    assert destination is not None
    assert sorted((p.path_id, p.attrs.med) for p in destination.candidates) == [(2, None), (3, 50)]


def test_session_down_and_invalidation_cover_every_path_id() -> None:
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    rib.announce(RR1, VIP, reflected(12), 1.0, path_id=3)
    rib.invalidate(RR1.address)
    assert VIP not in rib
    rib.revalidate(RR1.address)
    assert hops(rib) == ["198.18.0.11", "198.18.0.12"]
    rib.peer_down(RR1)
    assert VIP not in rib and rib.path_count() == 0


def test_a_new_import_policy_runs_every_path_id_again() -> None:
    def chain(*rules: dict[str, Any]) -> PolicyChain:
        model = PolicySet.model_validate({"name": "in", "rules": list(rules), "default": "accept"})
        return PolicyChain((CompiledPolicySet.compile(model),))

    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    rib.announce(RR1, VIP, reflected(12, communities=frozenset({65000 << 16 | 7})), 1.0, path_id=3)
    rib.set_import_policy(chain({"match": {"communities": ["65000:7"]}, "result": "reject"}))
    assert hops(rib) == ["198.18.0.11"]
    assert VIP in rib.adj_rib_in(RR1, post_policy=False, path_id=3)
    assert VIP not in rib.adj_rib_in(RR1, post_policy=True, path_id=3)
    explanation = rib.explain_import(RR1, VIP, path_id=3)
    assert explanation is not None and not explanation.accepted
    rib.set_import_policy(PolicyChain())
    assert hops(rib) == ["198.18.0.11", "198.18.0.12"]


# -- RFC 4456 decision steps in the explanations --------------------------------------------------


def test_originator_id_breaks_the_tie_and_is_named_in_the_explanation() -> None:
    rib = make(RR1, options=DecisionOptions())  # no ECMP
    rib.announce(RR1, VIP, reflected(12), 1.0, path_id=3)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    best, other = rib.explain(VIP)
    assert best.best and best.path.path_id == 2
    assert other.lost_at is Step.ROUTER_ID
    assert other.reason() == (
        "lost at Router ID: 198.18.0.12 (originator) vs 198.18.0.11 (originator) (via 198.18.0.1 path 2)"
    )


def test_ecmp_members_through_one_reflector_say_where_they_are_behind_the_best() -> None:
    rib = make(RR1)
    for n, path_id in ((13, 4), (11, 2), (12, 3)):
        rib.announce(RR1, VIP, reflected(n), 1.0, path_id=path_id)
    ranked = rib.explain(VIP)
    assert [str(r.path.attrs.originator_id) for r in ranked] == ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
    assert all(r.multipath for r in ranked)
    assert ranked[2].reason() == (
        "multipath, behind best at Router ID: 198.18.0.13 (originator) vs 198.18.0.11 (originator)"
        " (via 198.18.0.1 path 2)"
    )


def test_the_same_originator_through_two_reflectors_ties_on_cluster_length_then_address() -> None:
    rib = make(RR1, RR2, options=DecisionOptions())
    rib.announce(RR1, VIP, reflected(11, "198.18.0.1", "198.18.0.9"), 1.0, path_id=2)
    rib.announce(RR2, VIP, reflected(11, "198.18.0.2"), 1.0, path_id=5)
    best, other = rib.explain(VIP)
    assert best.path.peer == RR2  # the shorter CLUSTER_LIST, although RR1's address is lower
    assert other.lost_at is Step.CLUSTER_LENGTH
    assert other.reason() == "lost at Cluster length: 2 vs 1 (via 198.18.0.2 path 5)"
    rib.announce(RR1, VIP, reflected(11, "198.18.0.1"), 2.0, path_id=2)  # now equally long
    best, other = rib.explain(VIP)
    assert best.path.peer == RR1 and other.lost_at is Step.NEIGHBOR_IP


def test_a_direct_path_and_a_reflected_one_compare_router_id_with_originator_id() -> None:
    direct = Peer(machine(30), ASN, machine(30), PeerKind.INTERNAL)  # a full-mesh session, router id .30
    rib = make(RR1, direct, options=DecisionOptions())
    rib.announce(direct, VIP, Attributes(next_hop=machine(30), local_pref=100), 1.0)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)  # originator .11 beats .30, not RR1's .1
    best, other = rib.explain(VIP)
    assert best.path.peer == RR1 and other.lost_at is Step.ROUTER_ID
    assert (other.value, other.winning_value) == ("198.18.0.30", "198.18.0.11 (originator)")


@settings(max_examples=60, deadline=None)
@given(st.permutations([(11, 2), (12, 3), (13, 4), (11, 5)]), st.booleans())
def test_the_outcome_does_not_depend_on_arrival_order(order: list[tuple[int, int]], ecmp: bool) -> None:
    """Even two paths with the same originator through the same reflector (path ids 2 and 5)."""
    options = ECMP if ecmp else DecisionOptions()
    rib = make(RR1, options=options)
    for n, path_id in order:
        rib.announce(RR1, VIP, reflected(n), 1.0, path_id=path_id)
    selection = rib.selection(VIP)
    assert selection is not None
    assert selection.best.path_id == 2
    assert [p.path_id for p in selection.multipath] == ([2, 5, 3, 4] if ecmp else [2])
    destination = rib.destination(VIP)
    assert destination is not None and select(list(destination.candidates), options) == selection
    assert rib.explain(VIP)[0].path is selection.best


# -- loop prevention (RFC 4456 section 8) ---------------------------------------------------------


def test_a_route_we_originated_coming_back_is_dropped_and_counted() -> None:
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(20), 1.0, path_id=2)  # ORIGINATOR_ID is our router id
    assert VIP not in rib and VIP in rib.adj_rib_in(RR1, post_policy=False, path_id=2)
    assert rib.loop_drops["originator-id"] == 1
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=3)
    assert hops(rib) == ["198.18.0.11"] and rib.loop_drops["originator-id"] == 1


def test_our_cluster_id_in_the_cluster_list_is_a_loop_only_while_we_reflect() -> None:
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11, "198.18.0.1", "198.18.0.20"), 1.0, path_id=2)
    assert hops(rib) == ["198.18.0.11"]  # a client has no cluster id: nothing to loop on
    assert rib.loop_drops["cluster-list"] == 0
    rib.set_cluster_id(ME)  # this machine became a reflector with cluster id 198.18.0.20
    assert VIP not in rib and rib.cluster_id == ME
    rib.announce(RR1, OTHER, reflected(12, "198.18.0.20"), 2.0, path_id=3)
    assert OTHER not in rib and rib.loop_drops["cluster-list"] == 1
    rib.set_cluster_id(None)
    assert hops(rib) == ["198.18.0.11"] and hops(rib, OTHER) == ["198.18.0.12"]


def test_a_reflector_of_our_own_is_configured_at_construction() -> None:
    rib = make(RR1, cluster_id=ipaddress.IPv4Address("10.9.9.9"))
    rib.announce(RR1, VIP, reflected(11, "10.9.9.9"), 1.0, path_id=2)
    assert VIP not in rib and rib.loop_drops == {"as-path": 0, "originator-id": 0, "cluster-list": 1}


# -- a dead machine's paths, by ORIGINATOR_ID ------------------------------------------------------


def test_a_dead_originators_paths_leave_through_every_reflector_and_come_back() -> None:
    rib = make(RR1, RR2)
    for rr in (RR1, RR2):
        rib.announce_many(rr, [VIP, OTHER], reflected(11), 1.0, path_id=2)
        rib.announce(rr, VIP, reflected(12), 1.0, path_id=3)
    rib.take_diff()
    rib.invalidate_originator(machine(11))
    assert hops(rib) == ["198.18.0.12"] and OTHER not in rib
    assert not rib.is_valid_originator(machine(11)) and rib.is_valid_originator(machine(12))
    assert set(rib.take_diff().by_prefix()) == {VIP, OTHER}
    assert rib.path_count() == 6  # still tracked in the Adj-RIBs-In
    rib.invalidate_originator(machine(11))  # again: nothing to do
    assert not rib.take_diff()
    rib.revalidate_originator(machine(11))
    assert hops(rib) == ["198.18.0.11", "198.18.0.12"] and hops(rib, OTHER) == ["198.18.0.11"]


def test_paths_of_a_dead_originator_that_arrive_later_stay_out() -> None:
    """A reflector may still pass the dead machine's routes on until its own session times out."""
    rib = make(RR1)
    rib.invalidate_originator(machine(11))
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    assert VIP not in rib
    rib.announce(RR1, VIP, reflected(11, med=5), 2.0, path_id=2)  # an update changes nothing
    assert VIP not in rib
    rib.revalidate_originator(machine(11))
    assert hops(rib) == ["198.18.0.11"]


def test_a_dead_originator_stays_out_when_its_reflector_is_revalidated() -> None:
    rib = make(RR1)
    rib.announce(RR1, VIP, reflected(11), 1.0, path_id=2)
    rib.announce(RR1, VIP, reflected(12), 1.0, path_id=3)
    rib.invalidate(RR1.address)
    rib.invalidate_originator(machine(11))
    rib.revalidate(RR1.address)
    assert hops(rib) == ["198.18.0.12"]
    rib.revalidate_originator(machine(11))
    assert hops(rib) == ["198.18.0.11", "198.18.0.12"]


def test_a_dead_originator_leaves_direct_sessions_alone() -> None:
    """Invalidation by ORIGINATOR_ID touches reflected paths only; a full-mesh session is by address."""
    direct = Peer(machine(11), ASN, machine(11), PeerKind.INTERNAL)
    rib = make(direct)
    rib.announce(direct, VIP, Attributes(next_hop=machine(11), local_pref=100), 1.0)
    rib.invalidate_originator(machine(11))
    assert hops(rib) == ["198.18.0.11"]
    rib.invalidate(direct.address)
    assert VIP not in rib
