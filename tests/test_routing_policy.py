"""Route policy: every match kind and action, rule order, defaults, chains, explain(), and the
compiled fast path against plain references (``ipaddress``, the rule-by-rule loop)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.cluster.objects import PolicySet, PrefixMatch, as_path_pattern, as_path_source
from agent.routing.path import (
    WELL_KNOWN_COMMUNITIES,
    AsPath,
    Attributes,
    Origin,
    Path,
    Peer,
    PeerKind,
    Prefix,
    SegmentType,
    parse_community,
    split_communities,
)
from agent.routing.policy import CompiledPolicySet, PolicyChain, PrefixList, explain

NH = ipaddress.IPv4Address("198.18.0.1")
P = Prefix.parse


def attrs(
    *asns: int,
    communities: tuple[str, ...] = (),
    med: int | None = None,
    local_pref: int | None = None,
    as_path: AsPath | None = None,
) -> Attributes:
    standard, large = split_communities(communities)
    return Attributes(
        next_hop=NH,
        as_path=as_path if as_path is not None else AsPath.of(*asns),
        med=med,
        local_pref=local_pref,
        communities=standard,
        large_communities=large,
    )


def pset(*rules: dict[str, Any], default: str = "reject", name: str = "p") -> CompiledPolicySet:
    return CompiledPolicySet.compile(
        PolicySet.model_validate({"name": name, "rules": list(rules), "default": default})
    )


def accepts(policy: CompiledPolicySet, prefix: str, a: Attributes) -> bool:
    return policy.evaluate(P(prefix), a) is not None


def only(**match: Any) -> CompiledPolicySet:
    """One accepting rule with ``match``; everything else falls to the default reject."""
    return pset({"match": match})


# -- match conditions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "prefix", "found"),
    [
        ({"prefix": "10.0.0.0/8"}, "10.0.0.0/8", True),
        ({"prefix": "10.0.0.0/8"}, "10.1.0.0/16", False),  # without ge/le: exactly the prefix
        ({"prefix": "10.0.0.0/8", "le": 24}, "10.1.0.0/16", True),
        ({"prefix": "10.0.0.0/8", "le": 24}, "10.0.0.0/8", True),
        ({"prefix": "10.0.0.0/8", "le": 24}, "10.1.1.0/25", False),
        ({"prefix": "10.0.0.0/8", "ge": 16}, "10.0.0.0/8", False),
        ({"prefix": "10.0.0.0/8", "ge": 16}, "10.1.1.1/32", True),
        ({"prefix": "10.0.0.0/8", "ge": 16, "le": 24}, "10.1.1.0/24", True),
        ({"prefix": "10.0.0.0/8", "ge": 16, "le": 24}, "11.1.1.0/24", False),
        ({"prefix": "0.0.0.0/0", "le": 32}, "203.0.113.7/32", True),
        ({"prefix": "0.0.0.0/0"}, "0.0.0.0/0", True),
        ({"prefix": "fd00::/8", "ge": 48, "le": 64}, "fd12:3456::/48", True),
        ({"prefix": "fd00::/8", "ge": 48, "le": 64}, "fd12:3456::/40", False),
        ({"prefix": "0.0.0.0/0", "le": 32}, "::/0", False),  # never across IP versions
        ({"prefix": "::/0", "le": 128}, "10.0.0.0/8", False),
    ],
)
def test_prefix_list_entries(entry: dict[str, Any], prefix: str, found: bool) -> None:
    assert (P(prefix) in PrefixList([PrefixMatch.model_validate(entry)])) is found
    assert accepts(only(prefix_list=[entry]), prefix, attrs(65001)) is found


def test_a_prefix_list_matches_if_any_entry_does() -> None:
    policy = only(prefix_list=[{"prefix": "10.0.0.0/8"}, {"prefix": "192.168.0.0/16", "le": 24}])
    assert accepts(policy, "10.0.0.0/8", attrs())
    assert accepts(policy, "192.168.7.0/24", attrs())
    assert not accepts(policy, "172.16.0.0/12", attrs())


@st.composite
def v4_entries(draw: st.DrawFn) -> tuple[ipaddress.IPv4Network, int | None, int | None]:
    length = draw(st.integers(0, 32))
    net = ipaddress.IPv4Network((draw(st.integers(0, 2**32 - 1)), length), strict=False)
    ge = draw(st.none() | st.integers(length, 32))
    le = draw(st.none() | st.integers(ge if ge is not None else length, 32))
    return net, ge, le


@st.composite
def v4_prefixes(draw: st.DrawFn) -> ipaddress.IPv4Network:
    # Mostly near 10.0.0.0/8 so that containment happens often.
    base = draw(st.sampled_from([10 << 24, (10 << 24) + (1 << 16), 0, draw(st.integers(0, 2**32 - 1))]))
    noise = draw(st.integers(0, 2**16 - 1))
    return ipaddress.IPv4Network(((base + noise) % 2**32, draw(st.integers(0, 32))), strict=False)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(v4_entries(), min_size=1, max_size=6), prefix=v4_prefixes())
def test_prefix_lists_agree_with_ipaddress(
    entries: list[tuple[ipaddress.IPv4Network, int | None, int | None]], prefix: ipaddress.IPv4Network
) -> None:
    def reference(net: ipaddress.IPv4Network, ge: int | None, le: int | None) -> bool:
        low, high = (
            (net.prefixlen, net.prefixlen)
            if ge is None and le is None
            else (
                ge if ge is not None else net.prefixlen,
                le if le is not None else 32,
            )
        )
        return prefix.subnet_of(net) and low <= prefix.prefixlen <= high

    models = [PrefixMatch(prefix=str(n), ge=ge, le=le) for n, ge, le in entries]
    expected = any(reference(*e) for e in entries)
    assert (Prefix.from_network(prefix) in PrefixList(models)) is expected
    # The set-level index (one lookup for all rules) must pick the same rule as a rule-by-rule scan.
    rules = [
        {"match": {"prefix_list": [m.model_dump()]}, "actions": {"set_med": i}} for i, m in enumerate(models)
    ]
    policy = pset(*rules)
    out = policy.evaluate(Prefix.from_network(prefix), attrs())
    first = next((i for i, e in enumerate(entries) if reference(*e)), None)
    assert (out.med if out is not None else None) == first


def test_community_conditions_match_any_standard_large_or_well_known() -> None:
    policy = only(communities=["65001:10", "65001:1:2", "no-export"])
    assert accepts(policy, "10.0.0.0/8", attrs(communities=("65001:10", "65009:9")))
    assert accepts(policy, "10.0.0.0/8", attrs(communities=("65001:1:2",)))
    assert accepts(policy, "10.0.0.0/8", attrs(communities=("65535:65281",)))  # no-export by number
    assert not accepts(policy, "10.0.0.0/8", attrs(communities=("65001:11", "65001:1:3")))
    assert not accepts(policy, "10.0.0.0/8", attrs())


def test_well_known_communities_have_their_rfc_values() -> None:
    assert WELL_KNOWN_COMMUNITIES["graceful-shutdown"] == 65535 << 16 | 0
    assert WELL_KNOWN_COMMUNITIES["blackhole"] == 65535 << 16 | 666
    assert WELL_KNOWN_COMMUNITIES["no-export"] == 0xFFFFFF01
    assert WELL_KNOWN_COMMUNITIES["no-advertise"] == 0xFFFFFF02
    assert parse_community("65535:0") == parse_community("graceful-shutdown")
    assert attrs(communities=("65535:0", "1:2:3")).community_texts() == ["graceful-shutdown", "1:2:3"]
    policy = only(communities=["graceful-shutdown"])
    assert accepts(policy, "10.0.0.0/8", attrs(communities=("65535:0",)))


@pytest.mark.parametrize(
    ("regex", "path", "found"),
    [
        ("_65001_", "65001", True),
        ("_65001_", "65000 65001 65002", True),
        ("_65001_", "650010 165001", False),
        ("^65001_", "65001 65002", True),
        ("^65001_", "65002 65001", False),
        ("_65002$", "65001 65002", True),
        ("^$", "", True),
        ("^$", "65001", False),
        ("^65001_[0-9]+$", "65001 65002", True),
        ("^65001_[0-9]+$", "65001 65002 65003", False),
        ("^(65001_)+65002$", "65001 65001 65001 65002", True),
        ("_65003_", "65001 {65003,65004}", True),  # a member of an AS_SET
        ("_65004_", "65001 {65003,65004}", True),
        ("_65001_65002_", "65001 65002", True),
        ("_65001_65002_", "65001 65003 65002", False),
        ("[_]", "65001", False),
    ],
)
def test_as_path_regex_examples(regex: str, path: str, found: bool) -> None:
    text = AsPath.parse(path).text
    assert text == path
    assert accepts(only(as_path=regex), "10.0.0.0/8", attrs(as_path=AsPath.parse(path))) is found
    assert (as_path_pattern(regex).search(text) is not None) is found


ASNS = st.integers(1, 70000)
SEGMENT = st.tuples(st.sampled_from(SegmentType), st.lists(ASNS, min_size=1, max_size=4).map(tuple))


@settings(max_examples=300, deadline=None)
@given(segments=st.lists(SEGMENT, max_size=4), asn=ASNS)
def test_as_path_regex_boundaries(segments: list[tuple[SegmentType, tuple[int, ...]]], asn: int) -> None:
    path = AsPath(tuple(segments))
    seq_first = (
        path.segments[0][1][0] if path.segments and path.segments[0][0] is SegmentType.AS_SEQUENCE else None
    )
    last = path.segments[-1] if path.segments else None
    seq_last = last[1][-1] if last is not None and last[0] is SegmentType.AS_SEQUENCE else None

    def found(regex: str) -> bool:
        return as_path_pattern(regex).search(path.text) is not None

    assert found(f"_{asn}_") is (asn in path.asns)  # a whole AS number, never a digit run inside one
    assert found(f"^{asn}_") is (seq_first == asn)
    assert found(f"_{asn}$") is (seq_last == asn)
    assert found("^$") is (not path.segments)
    assert AsPath.parse(path.text) == path


def test_bad_regex_is_refused_when_saved_not_at_match_time() -> None:
    with pytest.raises(ValidationError, match="bad regex"):
        PolicySet.model_validate({"name": "p", "rules": [{"match": {"as_path": "_650(01_"}}]})
    # A saved set always compiles.
    assert only(as_path="^(65001_)+$").rules[0].as_path is not None


def test_all_conditions_of_a_rule_must_hold() -> None:
    policy = only(
        prefix_list=[{"prefix": "10.0.0.0/8", "le": 24}], communities=["65001:1"], as_path="^65001_"
    )
    good = attrs(65001, 65002, communities=("65001:1",))
    assert accepts(policy, "10.1.0.0/16", good)
    assert not accepts(policy, "11.0.0.0/8", good)
    assert not accepts(policy, "10.1.0.0/16", attrs(65001, 65002))
    assert not accepts(policy, "10.1.0.0/16", attrs(65002, 65001, communities=("65001:1",)))


def test_an_empty_match_matches_every_route() -> None:
    assert accepts(pset({}), "::/0", attrs())


# -- actions ---------------------------------------------------------------------------------------


def run(actions: dict[str, Any], a: Attributes) -> Attributes:
    out = pset({"actions": actions}).evaluate(P("10.0.0.0/8"), a)
    assert out is not None
    return out


def test_set_local_pref_and_med() -> None:
    out = run({"set_local_pref": 250, "set_med": 0}, attrs(65001, med=50))
    assert (out.local_pref, out.med) == (250, 0)


def test_communities_add_remove_replace() -> None:
    before = attrs(communities=("65001:1", "65001:2", "no-export", "1:2:3"))
    added = run({"communities": {"add": ["65000:9", "4:5:6", "graceful-shutdown"]}}, before)
    # standard then large, numerically (a well-known name sorts by its value)
    assert added.community_texts() == [
        "65000:9", "65001:1", "65001:2", "graceful-shutdown", "no-export", "1:2:3", "4:5:6",
    ]  # fmt: skip
    removed = run({"communities": {"remove": ["65001:1", "no-export", "1:2:3", "7:7"]}}, before)
    assert removed.community_texts() == ["65001:2"]
    # remove first, then add: removing and adding the same one keeps it
    both = run({"communities": {"remove": ["65001:1"], "add": ["65001:1", "65001:3"]}}, before)
    assert both.community_texts() == ["65001:1", "65001:2", "65001:3", "no-export", "1:2:3"]
    replaced = run({"communities": {"replace": ["65000:1", "9:9:9"]}}, before)
    assert replaced.community_texts() == ["65000:1", "9:9:9"]
    assert run({"communities": {"replace": []}}, before).community_texts() == []


def test_as_prepend() -> None:
    out = run({"as_prepend": {"asn": 65000, "count": 3}}, attrs(65001, 65002))
    assert out.as_path.text == "65000 65000 65000 65001 65002"
    assert out.as_path.length == 5
    onto_set = run({"as_prepend": {"asn": 65000}}, attrs(as_path=AsPath.parse("{1,2} 3")))
    assert onto_set.as_path.text == "65000 {1,2} 3"
    assert run({"as_prepend": {"asn": 65000}}, attrs()).as_path.text == "65000"


def test_all_actions_of_a_rule_apply_together_and_nothing_else_changes() -> None:
    before = Attributes(NH, AsPath.of(65001), Origin.EGP, med=1, local_pref=None, communities=frozenset({5}))
    out = run(
        {
            "set_local_pref": 10,
            "set_med": 20,
            "communities": {"add": ["65000:1"]},
            "as_prepend": {"asn": 65000},
        },
        before,
    )
    assert out == Attributes(
        NH,
        AsPath.of(65000, 65001),
        Origin.EGP,
        med=20,
        local_pref=10,
        communities=frozenset({5, 65000 << 16 | 1}),
    )


def test_a_rule_without_actions_returns_the_same_shared_object() -> None:
    a = attrs(65001)
    assert pset({}).evaluate(P("10.0.0.0/8"), a) is a
    changed = pset({"actions": {"set_med": 5}})
    first = changed.evaluate(P("10.0.0.0/8"), a)
    assert first is not None and first is not a
    assert changed.evaluate(P("10.9.0.0/16"), a) is first  # memoised per attribute object


# -- rule order, results, defaults -----------------------------------------------------------------


def test_the_first_matching_rule_decides() -> None:
    policy = pset(
        {"match": {"communities": ["65001:1"]}, "result": "reject"},
        {"match": {"prefix_list": [{"prefix": "10.0.0.0/8", "le": 32}]}, "actions": {"set_med": 1}},
        {"actions": {"set_med": 2}},
    )
    assert policy.evaluate(P("10.1.0.0/16"), attrs(communities=("65001:1",))) is None
    out = policy.evaluate(P("10.1.0.0/16"), attrs())
    assert out is not None and out.med == 1
    out = policy.evaluate(P("11.0.0.0/8"), attrs())
    assert out is not None and out.med == 2


def test_a_rejecting_rule_rejects_even_if_a_later_rule_would_accept() -> None:
    policy = pset({"match": {"as_path": "_65666_"}, "result": "reject"}, {}, default="accept")
    assert not accepts(policy, "10.0.0.0/8", attrs(65001, 65666))
    assert accepts(policy, "10.0.0.0/8", attrs(65001))


@pytest.mark.parametrize("default", ["accept", "reject"])
def test_no_match_falls_to_the_default(default: str) -> None:
    policy = pset({"match": {"communities": ["1:1"]}, "actions": {"set_med": 1}}, default=default)
    a = attrs()
    out = policy.evaluate(P("10.0.0.0/8"), a)
    assert (out is a) if default == "accept" else (out is None)
    empty = pset(default=default)
    assert accepts(empty, "10.0.0.0/8", a) is (default == "accept")


def test_the_default_default_is_reject() -> None:
    assert not accepts(CompiledPolicySet.compile(PolicySet(name="p")), "10.0.0.0/8", attrs())


# -- chains --------------------------------------------------------------------------------------------


def test_sets_in_a_chain_run_in_order_on_each_others_output() -> None:
    first = pset({"actions": {"set_local_pref": 200, "communities": {"add": ["65000:1"]}}}, name="first")
    # the second set sees what the first set did
    second = pset(
        {"match": {"communities": ["65000:1"]}, "actions": {"set_med": 7}}, name="second", default="reject"
    )
    out = PolicyChain((first, second)).evaluate(P("10.0.0.0/8"), attrs())
    assert out is not None and (out.local_pref, out.med) == (200, 7)
    assert PolicyChain((second, first)).evaluate(P("10.0.0.0/8"), attrs()) is None  # order matters


def test_a_reject_ends_the_chain() -> None:
    reject = pset(name="reject-all")
    accept = pset({"actions": {"set_med": 1}}, name="accept-all")
    chain = PolicyChain.of([accept.model, reject, accept])
    assert chain.evaluate(P("10.0.0.0/8"), attrs()) is None
    explanation = chain.explain(P("10.0.0.0/8"), attrs())
    assert [o.policy_set for o in explanation.outcomes] == ["accept-all", "reject-all"]


def test_an_empty_chain_accepts_unchanged() -> None:
    a = attrs(65001)
    assert PolicyChain().evaluate(P("10.0.0.0/8"), a) is a


# -- explain ---------------------------------------------------------------------------------------


def test_explain_names_the_rule_in_each_set_and_what_it_changed() -> None:
    tagging = pset(
        {"name": "bogons", "match": {"prefix_list": [{"prefix": "0.0.0.0/8", "le": 32}]}, "result": "reject"},
        {
            "name": "from-upstream",
            "match": {"as_path": "^65001_"},
            "actions": {
                "set_local_pref": 150,
                "communities": {"add": ["65000:1"]},
                "as_prepend": {"asn": 65000},
            },
        },
        name="tagging",
    )
    fallthrough = pset(
        {"match": {"communities": ["9:9"]}, "result": "reject"}, name="filter", default="accept"
    )
    route = Path(P("10.0.0.0/8"), attrs(65001, med=5), Peer(NH, 65001, NH, PeerKind.EXTERNAL), 0.0)
    result = explain(route, [tagging, fallthrough])
    assert result.accepted and result.after is not None
    assert result.after.local_pref == 150
    tag, rest = result.outcomes
    assert tag.policy_set == "tagging" and tag.rule is not None
    assert (tag.rule.index, tag.rule.name, tag.accepted) == (1, "from-upstream", True)
    assert [(c.attribute, c.before, c.after) for c in tag.changes] == [
        ("local_pref", "None", "150"),
        ("communities", "(none)", "65000:1"),
        ("as_path", "65001", "65000 65001"),
    ]
    assert rest.rule is None and rest.accepted and rest.changes == ()
    assert result.lines() == [
        "10.0.0.0/8: accepted",
        '  tagging: rule #1 "from-upstream": accept (local_pref None -> 150; communities (none) -> 65000:1; '
        "as_path 65001 -> 65000 65001)",
        "  filter: no rule matched, default: accept",
    ]
    data = result.to_dict()
    assert data["accepted"] is True
    assert data["sets"][0]["rule_index"] == 1 and data["sets"][1]["rule_index"] is None

    bogon = Path(P("0.1.0.0/16"), attrs(65001), route.peer, 0.0)
    rejected = explain(bogon, PolicyChain((tagging, fallthrough)))
    assert not rejected.accepted and rejected.after is None
    assert len(rejected.outcomes) == 1
    assert rejected.outcomes[0].describe() == 'tagging: rule #0 "bogons": reject'


def test_explain_with_no_sets() -> None:
    route = Path(P("10.0.0.0/8"), attrs(), Peer(NH, 65001, NH, PeerKind.EXTERNAL), 0.0)
    assert explain(route, []).lines() == ["10.0.0.0/8: accepted (no policy sets)"]


# -- the fast path agrees with the plain one ---------------------------------------------------------

COMMUNITY_POOL = ["65001:1", "65001:2", "65002:1", "no-export", "graceful-shutdown", "1:2:3", "1:2:4"]
REGEX_POOL = ["^65001_", "_65002_", "_65003$", "^$", "^65001_65002_"]
PREFIX_POOL = [
    {"prefix": "10.0.0.0/8", "le": 24},
    {"prefix": "10.1.0.0/16"},
    {"prefix": "10.1.0.0/16", "ge": 20},
    {"prefix": "0.0.0.0/0", "ge": 25, "le": 32},
    {"prefix": "fd00::/8", "le": 64},
]


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if draw(st.booleans()):
        match["prefix_list"] = draw(
            st.lists(st.sampled_from(PREFIX_POOL), min_size=1, max_size=2, unique_by=str)
        )
    if draw(st.booleans()):
        match["communities"] = draw(
            st.lists(st.sampled_from(COMMUNITY_POOL), min_size=1, max_size=2, unique=True)
        )
    if draw(st.booleans()):
        match["as_path"] = draw(st.sampled_from(REGEX_POOL))
    return {
        "match": match,
        "actions": {"set_med": draw(st.integers(0, 5))},
        "result": draw(st.sampled_from(["accept", "reject"])),
    }


@settings(max_examples=300, deadline=None)
@given(
    rule_list=st.lists(rules(), max_size=8),
    default=st.sampled_from(["accept", "reject"]),
    prefix=st.sampled_from(["10.1.0.0/16", "10.1.2.0/24", "10.1.2.128/25", "11.0.0.0/8", "fd00:1::/48"]),
    asns=st.lists(st.sampled_from([65001, 65002, 65003]), max_size=3),
    communities=st.lists(st.sampled_from(COMMUNITY_POOL), max_size=3, unique=True),
)
def test_compiled_evaluation_equals_the_rule_by_rule_loop(
    rule_list: list[dict[str, Any]], default: str, prefix: str, asns: list[int], communities: list[str]
) -> None:
    policy = pset(*rule_list, default=default)
    a = attrs(*asns, communities=tuple(communities))
    rule = policy.first_match(P(prefix), a)
    if rule is None:
        expected = a if default == "accept" else None
    else:
        expected = rule.actions(a) if rule.accept else None
    for _ in range(2):  # second time from the memo
        assert policy.evaluate(P(prefix), a) == expected


# -- linear-time matching ----------------------------------------------------------------------------

LONG_PATH = AsPath.parse(" ".join(["65001"] * 3000 + ["65002"]))


@pytest.mark.parametrize(
    ("regex", "found"),
    [
        ("^(65001_?)+$", False),
        ("^(65001_|65001)+$", False),
        ("^([0-9]+_?)+,$", False),
        ("^((65001_)*)*$", False),
        ("^(6|5|0|1|_)*$", False),
        ("^([0-9]+_?)+$", True),
    ],
)
def test_catastrophic_backtracking_patterns_finish_on_a_long_path(regex: str, found: bool) -> None:
    """The ``(a+)+`` shape takes exponential time in Python's re on a path that almost matches; RE2
    answers at once. The assertion is on the answer: a timing assertion would be flaky."""
    assert accepts(only(as_path=regex), "10.0.0.0/8", attrs(as_path=LONG_PATH)) is found
    # and the same machinery still finds a match on the long path when there is one
    assert accepts(only(as_path="^(65001_)+65002$"), "10.0.0.0/8", attrs(as_path=LONG_PATH)) is True


# The documented subset: AS numbers, boundaries, classes, ``.``, groups, alternation, quantifiers, anchors.
QUANTIFIERS = st.sampled_from(["", "", "+", "*", "?"])
ATOMS = st.tuples(
    st.one_of(
        st.integers(1, 70000).map(str),
        st.sampled_from(["_", ".", "[0-9]", "[_]", "650[0-9][0-9]", " ", ",", r"\{", r"\}"]),
    ),
    QUANTIFIERS,
).map("".join)


def _regexes(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    groups = st.one_of(
        children.map(lambda r: f"(?:{r})"),
        st.lists(children, min_size=2, max_size=3).map("|".join).map(lambda r: f"({r})"),
    )
    return st.one_of(
        st.tuples(groups, QUANTIFIERS).map("".join),  # a quantifier only ever follows an atom or a group
        st.lists(children, min_size=2, max_size=3).map("".join),
    )


# Python's re is the reference here, and it backtracks: nested or stacked quantifiers over a long text
# can take it exponential (or high-polynomial) time, which is the very thing RE2 is for. So the
# reference only ever sees small patterns (at most 4 leaves) over short paths (at most 2 ASNs), which
# bounds its work per example; RE2 on long paths is covered by the test above.
AS_PATH_REGEXES = st.tuples(
    st.sampled_from(["", "^"]), st.recursive(ATOMS, _regexes, max_leaves=4), st.sampled_from(["", "$"])
).map("".join)
SMALL_ASNS = st.sampled_from([1, 7, 650, 6500, 65000, 65001, 65002, 4200000000])
SMALL_PATHS = st.lists(
    st.tuples(st.sampled_from(SegmentType), st.lists(SMALL_ASNS, min_size=1, max_size=1).map(tuple)),
    max_size=2,
).map(lambda segments: AsPath(tuple(segments)))


@settings(max_examples=500, deadline=None)
@given(regex=AS_PATH_REGEXES, path=SMALL_PATHS)
def test_re2_and_python_re_agree_on_the_documented_subset(regex: str, path: AsPath) -> None:
    source = as_path_source(regex)
    expected = re.search(source, path.text)
    found = as_path_pattern(regex).search(path.text)
    assert (found is not None) is (expected is not None), (regex, source, path.text)
    if expected is not None:
        assert found.span() == expected.span()  # type: ignore[attr-defined]
