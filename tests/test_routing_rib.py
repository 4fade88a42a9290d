"""The RIB: Adj-RIB-In before and after policy, Loc-RIB selections, invalidation and relearning, the
diffs, and that a change re-decides only its own destination."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cluster.objects import PolicySet
from agent.routing.decision import DecisionOptions, Selection, Step, select
from agent.routing.path import AsPath, Attributes, Origin, Path, Peer, PeerKind, Prefix
from agent.routing.policy import CompiledPolicySet, PolicyChain
from agent.routing.rib import RETAIN_MIN, Rib

P = Prefix.parse
NET = P("203.0.113.0/24")
V6 = P("fd00:1::/48")
ROUTER_ID = ipaddress.IPv4Address("198.18.255.1")
LOCAL_ASN = 65000


def peer(n: int, kind: PeerKind = PeerKind.EXTERNAL, asn: int | None = None) -> Peer:
    address = ipaddress.IPv4Address(f"198.18.0.{n}")
    return Peer(address, asn if asn is not None else 65000 + n, address, kind)


A, B, C = peer(1), peer(2), peer(3)
IBGP = peer(4, PeerKind.INTERNAL, LOCAL_ASN)


def attrs(*asns: int, lp: int | None = None, med: int | None = None, nh: int = 1, **kw: Any) -> Attributes:
    return Attributes(
        next_hop=ipaddress.IPv4Address(f"198.18.0.{nh}"),
        as_path=AsPath.of(*asns),
        med=med,
        local_pref=lp,
        **kw,
    )


def chain(*rules: dict[str, Any], default: str = "reject") -> PolicyChain:
    return PolicyChain(
        (
            CompiledPolicySet.compile(
                PolicySet.model_validate({"name": "in", "rules": list(rules), "default": default})
            ),
        )
    )


def make(*peers: Peer, options: DecisionOptions | None = None, policy: PolicyChain | None = None) -> Rib:
    rib = Rib(router_id=ROUTER_ID, asn=LOCAL_ASN, options=options or DecisionOptions(), import_policy=policy)
    for p in peers:
        rib.peer_up(p)
    return rib


def best(rib: Rib, prefix: Prefix = NET) -> Path | None:
    sel = rib.selection(prefix)
    return sel.best if sel is not None else None


# -- announce, withdraw, diffs ---------------------------------------------------------------------


def test_a_new_destination_shows_in_the_diff_and_the_loc_rib() -> None:
    rib = make(A)
    rib.announce(A, NET, attrs(65001), now=1.0)
    diff = rib.take_diff()
    assert len(diff) == 1
    (change,) = diff
    assert change.prefix == NET and change.before is None and change.after is not None
    assert change.best_changed and change.next_hops_changed
    path = change.after.best
    assert (path.peer, path.received, path.attrs.as_path.text) == (A, 1.0, "65001")
    assert rib.take_diff().changes == ()  # drained
    assert NET in rib and len(rib) == 1
    dest = rib.destination(NET)
    assert dest is not None and dest.candidates == (path,) and dest.selection.best is path


def test_withdraw_removes_the_destination() -> None:
    rib = make(A)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.take_diff()
    rib.withdraw(A, NET)
    (change,) = rib.take_diff()
    assert change.after is None and change.before is not None and change.best_changed
    assert NET not in rib and rib.destination(NET) is None and rib.explain(NET) == ()
    rib.withdraw(A, NET)  # withdrawing what is not there is harmless
    assert not rib.take_diff()


def test_the_better_path_wins_and_its_withdrawal_promotes_the_other() -> None:
    rib = make(A, B)
    rib.announce(A, NET, attrs(65001, 65010), 1.0)
    rib.announce(B, NET, attrs(65002), 2.0)
    assert best(rib) is not None and best(rib).peer == B  # type: ignore[union-attr]
    rib.take_diff()
    rib.withdraw(B, NET)
    (change,) = rib.take_diff()
    assert change.before is not None and change.before.best.peer == B
    assert change.after is not None and change.after.best.peer == A


def test_a_worse_path_arriving_changes_nothing_visible() -> None:
    rib = make(A, B)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.take_diff()
    rib.announce(B, NET, attrs(65002, 65010), 2.0)
    assert not rib.take_diff()
    dest = rib.destination(NET)
    assert dest is not None and len(dest.candidates) == 2


def test_re_announcing_the_same_attributes_is_a_no_op_and_keeps_the_age() -> None:
    rib = make(A)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.take_diff()
    rib.announce(A, NET, attrs(65001), 5.0)  # equal, not the same object
    assert not rib.take_diff()
    assert rib.adj_rib_in(A, post_policy=False)[NET].received == 1.0


def test_an_implicit_withdraw_replaces_the_peers_path() -> None:
    rib = make(A)
    rib.announce(A, NET, attrs(65001, med=5), 1.0)
    rib.take_diff()
    rib.announce(A, NET, attrs(65001, med=7), 2.0)
    (change,) = rib.take_diff()
    assert change.after is not None and change.after.best.attrs.med == 7
    dest = rib.destination(NET)
    assert dest is not None and len(dest.candidates) == 1
    assert change.best_changed and not change.next_hops_changed


def test_a_flap_inside_one_batch_reports_nothing() -> None:
    rib = make(A, B)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.take_diff()
    rib.announce(B, NET, attrs(65002), 2.0)  # as good, but A's lower router id keeps A best
    rib.withdraw(A, NET)  # B best
    rib.announce(A, NET, attrs(65001), 1.0)  # A back as it was
    rib.withdraw(B, NET)
    assert not rib.take_diff()


def test_the_multipath_set_changing_alone_is_a_change_for_the_fib() -> None:
    rib = make(A, B, options=DecisionOptions(max_paths=4))
    rib.announce(A, NET, attrs(65001, nh=1), 1.0)
    rib.take_diff()
    rib.announce(B, NET, attrs(65002, nh=2), 2.0)
    (change,) = rib.take_diff()
    assert change.before is not None and change.after is not None
    assert not change.best_changed and change.next_hops_changed
    assert change.after.next_hops == (
        ipaddress.IPv4Address("198.18.0.1"),
        ipaddress.IPv4Address("198.18.0.2"),
    )


def test_ipv4_and_ipv6_destinations_live_side_by_side() -> None:
    rib = make(A)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.announce(A, V6, Attributes(next_hop=ipaddress.IPv6Address("fd00::1"), as_path=AsPath.of(65001)), 1.0)
    assert {c.prefix for c in rib.take_diff()} == {NET, V6}
    assert sorted(p for p, _ in rib.selections()) == [NET, V6]


def test_every_change_decides_only_its_own_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    rib = make(A, B)
    prefixes = [P(f"10.0.{i}.0/24") for i in range(200)]
    rib.announce_many(A, prefixes, attrs(65001), 1.0)
    rib.announce_many(B, prefixes, attrs(65002, 65010), 1.0)
    rib.take_diff()
    decided: list[Sequence[Path]] = []

    def counting(paths: Sequence[Path], options: DecisionOptions) -> Selection | None:
        decided.append(list(paths))
        return select(paths, options)

    monkeypatch.setattr("agent.routing.rib.select", counting)
    rib.announce(A, prefixes[7], attrs(65001, 65010, 65011), 2.0)
    assert len(decided) == 1 and {p.prefix for p in decided[0]} == {prefixes[7]}
    (change,) = rib.take_diff()
    assert change.prefix == prefixes[7]
    assert change.after is not None and change.after.best.peer == B


# -- Adj-RIB-In and import policy -------------------------------------------------------------------


def test_adj_rib_in_keeps_what_was_sent_and_what_was_accepted() -> None:
    policy = chain(
        {"match": {"as_path": "_65666_"}, "result": "reject"},
        {"match": {"prefix_list": [{"prefix": "203.0.113.0/24"}]}, "actions": {"set_local_pref": 300}},
        {},
    )
    rib = make(A, policy=policy)
    other = P("198.51.100.0/24")
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.announce(A, other, attrs(65001), 1.0)
    rib.announce(A, P("192.0.2.0/24"), attrs(65001, 65666), 1.0)
    pre, post = rib.adj_rib_in(A, post_policy=False), rib.adj_rib_in(A, post_policy=True)
    assert len(pre) == 3 and len(post) == 2
    assert pre[NET].attrs.local_pref is None and post[NET].attrs.local_pref == 300
    assert post[other] is pre[other]  # unchanged by policy: one object in both tables
    assert P("192.0.2.0/24") not in rib
    assert len(rib) == 2 and rib.path_count() == 3
    explanation = rib.explain_import(A, P("192.0.2.0/24"))
    assert explanation is not None and not explanation.accepted
    assert explanation.outcomes[0].rule is not None and explanation.outcomes[0].rule.index == 0
    assert rib.explain_import(A, P("192.0.3.0/24")) is None


def test_a_new_import_policy_runs_the_stored_routes_again() -> None:
    rib = make(A, B, policy=chain({}))
    for n in range(3):
        rib.announce(A, P(f"10.{n}.0.0/16"), attrs(65001), 1.0)
        rib.announce(B, P(f"10.{n}.0.0/16"), attrs(65002, 65010), 1.0)
    rib.take_diff()
    rib.set_import_policy(
        chain(
            {"match": {"prefix_list": [{"prefix": "10.0.0.0/16"}], "as_path": "^65001_"}, "result": "reject"},
            {"match": {"prefix_list": [{"prefix": "10.1.0.0/16"}]}, "result": "reject"},
            {},
        )
    )
    changes = rib.take_diff().by_prefix()
    assert set(changes) == {P("10.0.0.0/16"), P("10.1.0.0/16")}  # 10.2/16 untouched
    assert best(rib, P("10.0.0.0/16")).peer == B  # type: ignore[union-attr]
    assert P("10.1.0.0/16") not in rib
    assert len(rib.adj_rib_in(A, post_policy=False)) == 3  # nothing is lost: back with the old policy
    rib.set_import_policy(chain({}))
    assert set(rib.take_diff().by_prefix()) == {P("10.0.0.0/16"), P("10.1.0.0/16")}
    assert best(rib, P("10.0.0.0/16")).peer == A  # type: ignore[union-attr]
    rib.set_import_policy(chain({}))  # same outcome: nothing to report
    assert not rib.take_diff()


def test_an_external_path_through_our_own_as_is_dropped() -> None:
    rib = make(A, IBGP)
    rib.announce(A, NET, attrs(65001, LOCAL_ASN, 65009), 1.0)
    assert NET not in rib and NET in rib.adj_rib_in(A, post_policy=False)
    rib.announce(IBGP, NET, attrs(65009), 1.0)
    assert NET in rib


def test_local_routes_skip_import_policy_and_win_at_local_route() -> None:
    rib = make(A, policy=chain())  # rejects everything learned
    rib.announce(A, NET, attrs(65001), 1.0)
    assert NET not in rib
    rib.originate(NET, attrs(nh=9), 2.0)
    assert best(rib) is not None and best(rib).peer == rib.local  # type: ignore[union-attr]
    rib.set_import_policy(chain({}))
    ranked = rib.explain(NET)
    assert [r.path.peer for r in ranked] == [rib.local, A]
    assert ranked[1].lost_at is Step.LOCAL_ROUTE
    rib.withdraw_origin(NET)
    assert best(rib) is not None and best(rib).peer == A  # type: ignore[union-attr]


def test_unknown_peers_are_refused() -> None:
    rib = make()
    with pytest.raises(KeyError, match="peer_up first"):
        rib.announce(A, NET, attrs(65001), 1.0)
    with pytest.raises(ValueError, match="local"):
        rib.peer_up(rib.local)
    with pytest.raises(ValueError, match="local"):
        rib.peer_down(rib.local)


# -- sessions, invalidation, relearning --------------------------------------------------------------


def load(rib: Rib) -> None:
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.announce(B, NET, attrs(65002, 65010), 1.0)
    rib.announce(A, V6, Attributes(next_hop=ipaddress.IPv6Address("fd00::1"), as_path=AsPath.of(65001)), 1.0)


def test_invalidating_a_peer_drops_its_paths_at_once_and_revalidating_restores_them() -> None:
    rib = make(A, B)
    load(rib)
    rib.take_diff()
    before = dict(rib.selections())
    rib.invalidate(A.address)
    assert not rib.is_valid(A.address)
    changes = rib.take_diff().by_prefix()
    assert set(changes) == {NET, V6}
    assert changes[V6].after is None and best(rib).peer == B  # type: ignore[union-attr]
    rib.revalidate(A.address)
    changes = rib.take_diff().by_prefix()
    assert set(changes) == {NET, V6}
    assert dict(rib.selections()) == before


def test_an_invalid_peer_keeps_learning_out_of_sight() -> None:
    rib = make(A, B)
    load(rib)
    rib.invalidate(A.address)
    rib.take_diff()
    rib.announce(A, NET, attrs(65001, med=3), 2.0)
    rib.announce(A, P("10.9.0.0/16"), attrs(65001), 2.0)
    rib.withdraw(A, V6)
    assert not rib.take_diff()
    rib.revalidate(A.address)
    assert set(rib.take_diff().by_prefix()) == {NET, P("10.9.0.0/16")}
    assert best(rib).attrs.med == 3  # type: ignore[union-attr]


def test_invalidate_and_revalidate_inside_one_batch_report_nothing() -> None:
    rib = make(A, B)
    load(rib)
    rib.take_diff()
    rib.invalidate(A.address)
    rib.invalidate(A.address)
    rib.revalidate(A.address)
    rib.revalidate(A.address)
    assert not rib.take_diff()


def test_session_down_forgets_and_the_next_session_relearns() -> None:
    rib = make(A, B)
    load(rib)
    rib.take_diff()
    before = rib.selection(NET)
    rib.peer_down(A)
    assert rib.peers == (B,)
    assert set(rib.take_diff().by_prefix()) == {NET, V6}
    with pytest.raises(KeyError):
        rib.adj_rib_in(A, post_policy=False)
    rib.peer_up(A)
    load(rib)
    assert rib.selection(NET) == before


def test_a_new_session_to_the_same_address_replaces_the_old_one() -> None:
    rib = make(A)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.take_diff()
    restarted = Peer(A.address, A.asn, ipaddress.IPv4Address("198.18.9.9"), A.kind)
    rib.peer_up(restarted)
    assert rib.peers == (restarted,) and NET not in rib
    (change,) = rib.take_diff()
    assert change.after is None


def test_invalidation_outlives_the_session() -> None:
    """A member gossip calls dead stays out even if its BGP session comes back before gossip agrees."""
    rib = make(A, B)
    load(rib)
    rib.invalidate(A.address)
    rib.peer_down(A)
    rib.peer_up(A)
    load(rib)
    assert best(rib).peer == B and V6 not in rib  # type: ignore[union-attr]
    rib.revalidate(A.address)
    assert best(rib).peer == A and V6 in rib  # type: ignore[union-attr]


def test_options_change_decides_everything_again() -> None:
    rib = make(A, B)
    rib.announce(A, NET, attrs(65001), 1.0)
    rib.announce(B, NET, attrs(65002), 1.0)
    rib.take_diff()
    rib.set_options(DecisionOptions(max_paths=2))
    (change,) = rib.take_diff()
    assert change.after is not None and len(change.after.multipath) == 2
    assert rib.options.max_paths == 2


def test_equal_attributes_are_shared_and_unused_ones_forgotten() -> None:
    rib = make(A, B)
    rib.announce(A, NET, attrs(65001, 65010), 1.0)
    rib.announce(B, V6, attrs(65001, 65010), 1.0)
    assert rib.adj_rib_in(A, post_policy=False)[NET].attrs is rib.adj_rib_in(B, post_policy=False)[V6].attrs
    for med in range(3 * RETAIN_MIN):  # churn through many distinct attribute sets on one prefix
        rib.announce(A, NET, attrs(65001, med=med), 2.0)
    assert rib.attribute_sets <= 2 * RETAIN_MIN + 1


# -- properties ------------------------------------------------------------------------------------

PEERS = [
    peer(1),
    peer(2),
    peer(3),
    peer(4, PeerKind.INTERNAL, LOCAL_ASN),
    peer(5, PeerKind.INTERNAL, LOCAL_ASN),
]
PREFIXES = [P("10.0.0.0/24"), P("10.0.1.0/24"), P("fd00:2::/48")]


@st.composite
def announcements(draw: st.DrawFn) -> list[tuple[int, int, Attributes]]:
    """(peer index, prefix index, attributes): each peer at most once per prefix."""
    out = []
    for peer_index in range(len(PEERS)):
        for prefix_index in draw(st.sets(st.integers(0, len(PREFIXES) - 1))):
            asns = draw(st.lists(st.sampled_from([65001, 65002, 65003]), min_size=0, max_size=3))
            a = Attributes(
                next_hop=ipaddress.IPv4Address(f"198.18.1.{peer_index + 1}"),
                as_path=AsPath.of(*asns),
                origin=draw(st.sampled_from(Origin)),
                med=draw(st.sampled_from([None, 0, 5])),
                local_pref=draw(st.sampled_from([None, 50, 100, 150])),
            )
            out.append((peer_index, prefix_index, a))
    return out


def feed(rib: Rib, items: Sequence[tuple[int, int, Attributes]]) -> None:
    """Announce ``items`` in order, one time unit apart."""
    for i, (peer_index, prefix_index, a) in enumerate(items):
        rib.announce(PEERS[peer_index], PREFIXES[prefix_index], a, float(i))


OPTIONS = st.builds(
    DecisionOptions,
    always_compare_med=st.booleans(),
    prefer_oldest=st.booleans(),
    max_paths=st.integers(1, 3),
)


@settings(max_examples=200, deadline=None)
@given(items=announcements(), options=OPTIONS, data=st.data())
def test_the_result_does_not_depend_on_arrival_order_except_at_older_path(
    items: list[tuple[int, int, Attributes]], options: DecisionOptions, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(items))
    one, two = make(*PEERS, options=options), make(*PEERS, options=options)
    feed(one, items)
    feed(two, shuffled)
    for prefix in PREFIXES:
        first, second = one.selection(prefix), two.selection(prefix)
        if first is None or second is None:
            assert first is second is None
            continue
        same = (first.best.peer, [p.peer for p in first.multipath]) == (
            second.best.peer,
            [p.peer for p in second.multipath],
        )
        if not same:
            # only when the oldest-path rule decided in one of the two worlds
            assert options.prefer_oldest
            deciders = {r.lost_at for rib in (one, two) for r in rib.explain(prefix)[1:]}
            assert Step.OLDER_PATH in deciders


@settings(max_examples=200, deadline=None)
@given(
    items=announcements(), victim=st.integers(0, len(PEERS) - 1), via_session=st.booleans(), options=OPTIONS
)
def test_invalidating_a_peer_then_relearning_restores_the_same_best(
    items: list[tuple[int, int, Attributes]], victim: int, via_session: bool, options: DecisionOptions
) -> None:
    rib = make(*PEERS, options=options)
    feed(rib, items)
    rib.take_diff()
    before = {p: rib.selection(p) for p in PREFIXES}
    gone = PEERS[victim]
    if via_session:
        rib.peer_down(gone)
    else:
        rib.invalidate(gone.address)
    during = {p: rib.selection(p) for p in PREFIXES}
    for sel in during.values():
        assert sel is None or all(path.peer != gone for path in sel.multipath)
    diff = rib.take_diff().by_prefix()
    assert set(diff) == {p for p in PREFIXES if before[p] != during[p]}
    if via_session:
        rib.peer_up(gone)
        # relearned: the peer sends the same routes again (at their first times, so the paths are equal)
        for i, (peer_index, prefix_index, a) in enumerate(items):
            if peer_index == victim:
                rib.announce(gone, PREFIXES[prefix_index], a, float(i))
    else:
        rib.revalidate(gone.address)
    after = {p: rib.selection(p) for p in PREFIXES}
    assert after == before
    assert set(rib.take_diff().by_prefix()) == {p for p in PREFIXES if after[p] != during[p]}
