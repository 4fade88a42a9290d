"""Best-path selection: one case per step and reason in both directions, the MED cycle that makes
pairwise comparison order-dependent, multipath, and properties over random candidate sets."""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.routing.decision import (
    STEPS,
    DecisionOptions,
    Ranked,
    Selection,
    Step,
    compare,
    rank,
    select,
    step_value,
)
from agent.routing.path import AsPath, Attributes, Origin, Path, Peer, PeerKind, Prefix

PREFIX = Prefix.parse("203.0.113.0/24")
EXT, INT, LOCAL = PeerKind.EXTERNAL, PeerKind.INTERNAL, PeerKind.LOCAL


def peer(n: int, kind: PeerKind = EXT, router_id: int | None = None, asn: int = 65001) -> Peer:
    rid = ipaddress.IPv4Address(f"10.0.0.{router_id if router_id is not None else n}")
    if kind is LOCAL:
        return Peer.local(rid, 65000)
    return Peer(ipaddress.IPv4Address(f"198.18.0.{n}"), asn, rid, kind)


@dataclass
class P:
    """A compact path description for the tables below."""

    n: int
    kind: PeerKind = EXT
    lp: int | None = None
    as_path: str = "65001"
    origin: Origin = Origin.IGP
    med: int | None = None
    igp: int = 0
    received: float = 0.0
    router_id: int | None = None
    next_hop: str | None = None
    originator: int | None = None  # ORIGINATOR_ID 10.0.1.N: reflected
    clusters: int = 0  # CLUSTER_LIST length
    path_id: int = 0

    def path(self) -> Path:
        originator = None if self.originator is None else ipaddress.IPv4Address(f"10.0.1.{self.originator}")
        attrs = Attributes(
            next_hop=ipaddress.IPv4Address(self.next_hop or f"198.18.0.{self.n}"),
            as_path=AsPath.parse(self.as_path),
            origin=self.origin,
            med=self.med,
            local_pref=self.lp,
            originator_id=originator,
            cluster_list=tuple(ipaddress.IPv4Address(f"10.0.2.{i}") for i in range(self.clusters)),
        )
        peer_ = peer(self.n, self.kind, self.router_id)
        return Path(PREFIX, attrs, peer_, self.received, self.igp, self.path_id)


def by_path(ranked: tuple[Ranked, ...]) -> dict[int, Ranked]:
    return {id(r.path): r for r in ranked}


OLDEST = DecisionOptions(prefer_oldest=True)
ALWAYS_MED = DecisionOptions(always_compare_med=True)
MED_WORST = DecisionOptions(med_missing_as_worst=True)

# (id, step, better, worse, options, better's value, worse's value)
CASES: list[tuple[str, Step, P, P, DecisionOptions, str, str]] = [
    ("higher local pref", Step.LOCAL_PREF, P(2, lp=200), P(1, lp=100), DecisionOptions(), "200", "100"),
    ("missing local pref is 100", Step.LOCAL_PREF, P(2), P(1, lp=99), DecisionOptions(), "100", "99"),
    (
        "local route over learned",
        Step.LOCAL_ROUTE,
        P(2, LOCAL, as_path=""),
        P(1, as_path=""),
        DecisionOptions(),
        "local",
        "learned",
    ),
    (
        "shorter AS path",
        Step.AS_PATH,
        P(2, as_path="65001"),
        P(1, as_path="65002 65003"),
        DecisionOptions(),
        "1",
        "2",
    ),
    (
        "an AS set counts as one",
        Step.AS_PATH,
        P(2, as_path="65001 {65010,65011,65012}"),
        P(1, as_path="65002 65003 65004"),
        DecisionOptions(),
        "2",
        "3",
    ),
    (
        "igp over incomplete",
        Step.ORIGIN,
        P(2),
        P(1, origin=Origin.INCOMPLETE),
        DecisionOptions(),
        "igp",
        "incomplete",
    ),
    ("igp over egp", Step.ORIGIN, P(2), P(1, origin=Origin.EGP), DecisionOptions(), "igp", "egp"),
    ("lower MED, same AS", Step.MED, P(2, med=10), P(1, med=20), DecisionOptions(), "10", "20"),
    ("missing MED is 0", Step.MED, P(2), P(1, med=5), DecisionOptions(), "missing (0)", "5"),
    ("missing MED as worst", Step.MED, P(2, med=5), P(1), MED_WORST, "5", "missing (4294967295)"),
    (
        "MED across ASes only if always compared",
        Step.MED,
        P(2, as_path="65002", med=10),
        P(1, as_path="65001", med=50),
        ALWAYS_MED,
        "10",
        "50",
    ),
    (
        "MED not compared across ASes",
        Step.ROUTER_ID,
        P(1, as_path="65001", med=50),
        P(2, as_path="65002", med=10),
        DecisionOptions(),
        "10.0.0.1",
        "10.0.0.2",
    ),
    (
        "MED compared between paths originated in this AS",
        Step.MED,
        P(2, INT, as_path="", med=1),
        P(1, INT, as_path="", med=2),
        DecisionOptions(),
        "1",
        "2",
    ),
    ("external over internal", Step.PEER_TYPE, P(2), P(1, INT), DecisionOptions(), "external", "internal"),
    (
        "lower IGP metric",
        Step.IGP_METRIC,
        P(2, INT, igp=10),
        P(1, INT, igp=20),
        DecisionOptions(),
        "10",
        "20",
    ),
    (
        "older external path",
        Step.OLDER_PATH,
        P(2, received=1.0),
        P(1, received=2.0),
        OLDEST,
        "received 1",
        "received 2",
    ),
    (
        "oldest is for external paths only",
        Step.ROUTER_ID,
        P(1, INT, received=2.0),
        P(2, INT, received=1.0),
        OLDEST,
        "10.0.0.1",
        "10.0.0.2",
    ),
    (
        "oldest is off by default",
        Step.ROUTER_ID,
        P(1, received=2.0),
        P(2, received=1.0),
        DecisionOptions(),
        "10.0.0.1",
        "10.0.0.2",
    ),
    (
        "lower router id",
        Step.ROUTER_ID,
        P(2, router_id=1),
        P(1, router_id=2),
        DecisionOptions(),
        "10.0.0.1",
        "10.0.0.2",
    ),
    (
        "ORIGINATOR_ID stands in for the router id (RFC 4456 9)",
        Step.ROUTER_ID,
        P(1, INT, as_path="", router_id=9, originator=2, path_id=7),
        P(1, INT, as_path="", router_id=9, originator=3, path_id=1),
        DecisionOptions(),
        "10.0.1.2 (originator)",
        "10.0.1.3 (originator)",
    ),
    (
        "ORIGINATOR_ID against a direct peer's router id",
        Step.ROUTER_ID,
        P(2, INT, as_path="", router_id=5),
        P(1, INT, as_path="", router_id=1, originator=6),
        DecisionOptions(),
        "10.0.0.5",
        "10.0.1.6 (originator)",
    ),
    (
        "shorter CLUSTER_LIST, before the neighbor address (RFC 4456 9)",
        Step.CLUSTER_LENGTH,
        P(2, INT, as_path="", originator=4, clusters=1),
        P(1, INT, as_path="", originator=4, clusters=2),
        DecisionOptions(),
        "1",
        "2",
    ),
    (
        "missing CLUSTER_LIST counts as empty",
        Step.CLUSTER_LENGTH,
        P(2, INT, as_path="", originator=4),
        P(1, INT, as_path="", originator=4, clusters=1),
        DecisionOptions(),
        "0",
        "1",
    ),
    (
        "lower neighbor address",
        Step.NEIGHBOR_IP,
        P(1, router_id=9),
        P(2, router_id=9),
        DecisionOptions(),
        "198.18.0.1",
        "198.18.0.2",
    ),
]


@pytest.mark.parametrize(
    ("step", "better", "worse", "options", "good", "bad"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("flip", [False, True], ids=["better-first", "worse-first"])
def test_each_step_decides_in_both_directions(
    step: Step, better: P, worse: P, options: DecisionOptions, good: str, bad: str, flip: bool
) -> None:
    a, b = better.path(), worse.path()
    candidates = [b, a] if flip else [a, b]
    ranked = rank(candidates, options)
    assert [r.path for r in ranked] == [a, b]
    winner, loser = ranked
    assert winner.best and winner.lost_at is None and winner.reason() == "best"
    assert (loser.best, loser.lost_at, loser.value, loser.winning_value) == (False, step, bad, good)
    assert loser.beaten_by is a
    assert not loser.multipath  # max_paths 1
    assert select(candidates, options) == Selection(a, (a,))
    assert compare(a, b, options) == (a, step)
    assert compare(b, a, options) == (a, step)


def test_steps_are_named_as_frr_names_them_in_order() -> None:
    assert [str(s) for s in STEPS] == [
        "Local Pref",
        "Local Route",
        "AS Path",
        "Origin",
        "MED",
        "Peer Type",
        "IGP Metric",
        "Older Path",
        "Router ID",
        "Cluster length",
        "Neighbor IP",
    ]


def test_reason_lines() -> None:
    a, b = P(2, lp=200).path(), P(1, lp=100).path()
    assert rank([a, b])[1].reason() == "lost at Local Pref: 100 vs 200 (via 198.18.0.2)"


def test_med_cycle_is_decided_by_elimination_whatever_the_order() -> None:
    """Pairwise: W beats Y on MED (same AS), Y beats X on peer type, X beats W on router id. RFC 4271's
    elimination removes Y at MED first (W has the lower MED in AS 65001), then X beats W."""
    x = P(1, INT, as_path="65002").path()
    y = P(3, as_path="65001", med=10).path()
    w = P(2, INT, as_path="65001", med=5).path()
    assert compare(w, y) == (w, Step.MED)
    assert compare(y, x) == (y, Step.PEER_TYPE)
    assert compare(x, w) == (x, Step.ROUTER_ID)
    for order in itertools.permutations([x, y, w]):
        ranked = by_path(rank(list(order)))
        assert select(list(order)) == Selection(x, (x,))
        assert ranked[id(x)].best
        assert (ranked[id(w)].lost_at, ranked[id(w)].beaten_by) == (Step.ROUTER_ID, x)
        assert (ranked[id(y)].lost_at, ranked[id(y)].beaten_by) == (Step.MED, w)
        assert (ranked[id(y)].value, ranked[id(y)].winning_value) == ("10", "5")


def test_a_path_starting_with_an_as_set_has_no_neighbour_to_compare_meds_with() -> None:
    a = P(1, as_path="{65001,65002}", med=50).path()
    b = P(2, as_path="{65001,65002}", med=10).path()
    assert by_path(rank([a, b]))[id(b)].lost_at is Step.ROUTER_ID


# -- multipath -------------------------------------------------------------------------------------


def equal_paths(*ns: int) -> list[Path]:
    """External paths from different neighbouring ASes, equal down to the router id."""
    return [P(n, as_path=f"6500{n}").path() for n in ns]


def test_paths_equal_down_to_router_id_form_the_ecmp_set_best_first() -> None:
    c, a, b = equal_paths(3, 1, 2)
    sel = select([c, a, b], DecisionOptions(max_paths=4))
    assert sel == Selection(a, (a, b, c))
    assert sel.next_hops == tuple(ipaddress.IPv4Address(f"198.18.0.{n}") for n in (1, 2, 3))
    ranked = rank([c, a, b], DecisionOptions(max_paths=4))
    assert [(r.path, r.best, r.multipath, r.lost_at) for r in ranked] == [
        (a, True, True, None),
        (b, False, True, Step.ROUTER_ID),
        (c, False, True, Step.ROUTER_ID),
    ]
    assert ranked[1].reason().startswith("multipath, behind best at Router ID")


def test_the_ecmp_set_is_cut_at_max_paths() -> None:
    a, b, c = equal_paths(1, 2, 3)
    assert select([c, b, a], DecisionOptions(max_paths=2)) == Selection(a, (a, b))
    assert [r.multipath for r in rank([c, b, a], DecisionOptions(max_paths=2))] == [True, True, False]
    assert select([c, b, a]) == Selection(a, (a,))  # default: no ECMP


def test_a_difference_before_router_id_keeps_a_path_out_of_the_ecmp_set() -> None:
    a, b = equal_paths(1, 2)
    costly = P(3, as_path="65003", igp=5).path()
    longer = P(4, as_path="65004 65005").path()
    same_as_higher_med = P(5, as_path="65001", med=9).path()
    options = DecisionOptions(max_paths=8)
    sel = select([a, b, costly, longer, same_as_higher_med], options)
    assert sel is not None and sel.multipath == (a, b)
    ranked = by_path(rank([a, b, costly, longer, same_as_higher_med], options))
    assert ranked[id(costly)].lost_at is Step.IGP_METRIC
    assert ranked[id(longer)].lost_at is Step.AS_PATH
    assert ranked[id(same_as_higher_med)].lost_at is Step.MED


def test_the_oldest_path_is_best_but_does_not_split_the_ecmp_set() -> None:
    a, b = P(1, as_path="65001", received=5.0).path(), P(2, as_path="65002", received=1.0).path()
    assert select([a, b], DecisionOptions(prefer_oldest=True, max_paths=2)) == Selection(b, (b, a))


def test_next_hops_are_distinct() -> None:
    a = P(1, as_path="65001", next_hop="198.18.1.1").path()
    b = P(2, as_path="65002", next_hop="198.18.1.1").path()
    sel = select([a, b], DecisionOptions(max_paths=2))
    assert sel is not None and sel.next_hops == (ipaddress.IPv4Address("198.18.1.1"),)


def test_no_candidates() -> None:
    assert select([]) is None
    assert rank([]) == ()
    with pytest.raises(ValueError, match="max_paths"):
        DecisionOptions(max_paths=0)


# -- properties --------------------------------------------------------------------------------------


@st.composite
def candidate_sets(draw: st.DrawFn) -> list[Path]:
    count = draw(st.integers(1, 6))
    local_at = draw(st.none() | st.integers(0, count - 1))
    paths = []
    for n in range(count):
        kind = LOCAL if n == local_at else draw(st.sampled_from([EXT, INT]))
        as_path = draw(
            st.sampled_from(
                ["", "65001", "65002", "65001 65010", "65002 65010", "65001 {65010,65011}", "{65003}"]
            )
        )
        spec = P(
            n + 1,
            kind,
            lp=draw(st.sampled_from([None, 100, 200])),
            as_path=as_path,
            origin=draw(st.sampled_from(Origin)),
            med=draw(st.sampled_from([None, 0, 10, 20])),
            igp=draw(st.sampled_from([0, 10])),
            received=draw(st.sampled_from([0.0, 1.0, 2.0])),
            router_id=draw(st.integers(1, 3)),  # ties happen: then the neighbour address decides
        )
        paths.append(spec.path())
    return paths


OPTIONS = st.builds(
    DecisionOptions,
    always_compare_med=st.booleans(),
    med_missing_as_worst=st.booleans(),
    prefer_oldest=st.booleans(),
    max_paths=st.integers(1, 4),
)


@settings(max_examples=500, deadline=None)
@given(paths=candidate_sets(), options=OPTIONS)
def test_select_and_rank_agree(paths: list[Path], options: DecisionOptions) -> None:
    ranked = rank(paths, options)
    sel = select(paths, options)
    assert sel is not None
    assert ranked[0].path is sel.best and ranked[0].best
    assert tuple(r.path for r in ranked if r.multipath) == sel.multipath
    assert sel.multipath[0] is sel.best and len(sel.multipath) <= options.max_paths
    assert sorted(map(id, (r.path for r in ranked))) == sorted(map(id, paths))


@settings(max_examples=500, deadline=None)
@given(paths=candidate_sets(), options=OPTIONS)
def test_the_best_is_never_beaten_by_a_candidate_under_the_same_order(
    paths: list[Path], options: DecisionOptions
) -> None:
    """Pairwise, every loser loses to the best at the step where it was eliminated, except a path
    eliminated at MED by a path of its own neighbouring AS: MED is not compared across ASes, so such a
    path may beat the best pairwise; it never does when MEDs are always compared."""
    ranked = rank(paths, options)
    best = ranked[0].path
    for r in ranked[1:]:
        assert r.lost_at is not None and r.beaten_by is not None
        if r.lost_at is Step.MED:
            assert compare(r.beaten_by, r.path, options) == (r.beaten_by, Step.MED)
            if not options.always_compare_med:
                continue
        assert compare(best, r.path, options) == (best, r.lost_at)
        assert compare(r.path, best, options) == (best, r.lost_at)
    if options.always_compare_med:
        assert all(compare(p, best, options)[0] is best for p in paths)


@settings(max_examples=300, deadline=None)
@given(paths=candidate_sets(), options=OPTIONS, data=st.data())
def test_the_result_does_not_depend_on_the_order_of_candidates(
    paths: list[Path], options: DecisionOptions, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(paths))
    assert select(shuffled, options) == select(paths, options)
    assert [r.path for r in rank(shuffled, options)] == [r.path for r in rank(paths, options)]


@settings(max_examples=300, deadline=None)
@given(paths=candidate_sets(), options=OPTIONS)
def test_ecmp_members_equal_the_best_on_every_step_before_the_tie_breaks(
    paths: list[Path], options: DecisionOptions
) -> None:
    sel = select(paths, options)
    assert sel is not None
    before_tie_breaks = (
        Step.LOCAL_PREF,
        Step.LOCAL_ROUTE,
        Step.AS_PATH,
        Step.ORIGIN,
        Step.PEER_TYPE,
        Step.IGP_METRIC,
    )
    for p in sel.multipath:
        for step in before_tie_breaks:
            assert step_value(step, p, options) == step_value(step, sel.best, options)


def test_copies_of_one_announcer_through_several_reflectors_count_once_against_max_paths() -> None:
    # Announcers 1 and 2 behind two reflectors (peers 8 and 9): each announcer's path arrives twice,
    # and the copies of the first must not crowd the second out of a two-way ECMP set.
    copies = [
        P(via, INT, as_path="", next_hop=f"198.18.0.{origin}", originator=origin, path_id=origin).path()
        for origin in (1, 2)
        for via in (8, 9)
    ]
    options = DecisionOptions(max_paths=2)
    hops = tuple(ipaddress.IPv4Address(f"198.18.0.{n}") for n in (1, 2))
    both, one = select(copies, options), select(copies, DecisionOptions(max_paths=1))
    assert both is not None and both.next_hops == hops
    assert all(r.multipath for r in rank(copies, options))
    assert one is not None and one.next_hops == hops[:1]
