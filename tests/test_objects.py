"""Cluster object models and the context checks: every rule, with the field path and the reason."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.cluster.objects import (
    MODELS,
    ClusterObject,
    HealthCheck,
    Kind,
    MachineSettings,
    MeshSettings,
    PolicySet,
    PrefixMatch,
    Problem,
    Route,
    View,
    Vip,
    as_path_pattern,
    key_of,
    kind_of,
    parse,
    parse_community,
    problems_from_error,
    validate,
    validate_delete,
)


def problems(kind: Kind, data: dict[str, Any]) -> list[Problem]:
    with pytest.raises(ValidationError) as info:
        parse(kind, data)
    return problems_from_error(info.value)


def vip(**fields: Any) -> dict[str, Any]:
    return {"name": "web", "address": "100.96.0.1", **fields}


def check(**fields: Any) -> dict[str, Any]:
    return vip(health_check={"type": "tcp", "target": ":6443", **fields})


def rule(**match: Any) -> dict[str, Any]:
    return {"name": "p", "rules": [{"match": match}]}


def action(**actions: Any) -> dict[str, Any]:
    return {"name": "p", "rules": [{"actions": actions}]}


HC = ("health_check",)
M = ("rules", 0, "match")
A = ("rules", 0, "actions")

SHAPE_ERRORS: list[tuple[Kind, dict[str, Any], tuple[str | int, ...], str]] = [
    (Kind.VIP, vip(name="Web"), ("name",), "should match pattern"),
    (Kind.VIP, vip(name="-web"), ("name",), "should match pattern"),
    (Kind.VIP, vip(name="a" * 64), ("name",), "should match pattern"),
    (Kind.VIP, vip(address="100.96.0.300"), ("address",), "'100.96.0.300' is not an IPv4 or IPv6 address"),
    (Kind.VIP, vip(address="fe80::1%eth0"), ("address",), "scoped"),
    (Kind.VIP, vip(machines=["a", "b", "a"]), ("machines",), "duplicate machine 'a'"),
    (Kind.VIP, vip(machines=["has space"]), ("machines", 0), "no spaces"),
    (Kind.VIP, vip(holdoff=-1), ("holdoff",), "greater than or equal to 0"),
    (Kind.VIP, vip(colour="red"), ("colour",), "Extra inputs are not permitted"),
    (Kind.VIP, check(type="icmp"), (*HC, "type"), "Input should be 'tcp', 'http', 'grpc' or 'exec'"),
    (Kind.VIP, check(target="nohost"), (*HC, "target"), "expected host:port"),
    (Kind.VIP, check(target="h:0"), (*HC, "target"), "port must be 1..65535"),
    (Kind.VIP, check(target="h:99999"), (*HC, "target"), "port must be 1..65535"),
    (Kind.VIP, check(target="::1:80"), (*HC, "target"), "an IPv6 host goes in brackets"),
    (Kind.VIP, check(target="[zz]:80"), (*HC, "target"), "'zz' is not an IPv6 address"),
    (Kind.VIP, check(target="bad host:80"), (*HC, "target"), "is not a host name or address"),
    (Kind.VIP, check(type="grpc", target="x"), (*HC, "target"), "expected host:port"),
    (Kind.VIP, check(type="http", target="ftp://x/"), (*HC, "target"), "expected an http:// or https:// URL"),
    (Kind.VIP, check(type="http", target="http://x:99999/"), (*HC, "target"), "bad port in URL"),
    (Kind.VIP, check(type="exec", target="   "), (*HC, "target"), "the command is empty"),
    (Kind.VIP, check(type="exec", target="a\x00b"), (*HC, "target"), "NUL"),
    (Kind.VIP, check(interval=0), (*HC, "interval"), "greater than 0"),
    (Kind.VIP, check(interval=float("inf")), (*HC, "interval"), "finite number"),
    (Kind.VIP, check(timeout=0), (*HC, "timeout"), "greater than 0"),
    (Kind.VIP, check(timeout=10), (*HC, "timeout"), "must be less than interval (10 s)"),
    (Kind.VIP, check(interval=1, timeout=1.5), (*HC, "timeout"), "must be less than interval (1 s)"),
    (Kind.VIP, check(healthy_threshold=0), (*HC, "healthy_threshold"), "greater than or equal to 1"),
    (Kind.VIP, check(unhealthy_threshold=0), (*HC, "unhealthy_threshold"), "greater than or equal to 1"),
    (Kind.VIP, check(expected_status=[200, 299]), (*HC, "expected_status"), "only for http checks, not tcp"),
    (Kind.VIP, check(tls_skip_verify=True), (*HC, "tls_skip_verify"), "only for http checks, not tcp"),
    (Kind.VIP, check(service="x"), (*HC, "service"), "only for grpc checks, not tcp"),
    (
        Kind.VIP,
        check(type="http", target="http://h/", expected_status=[300, 200]),
        (*HC, "expected_status"),
        "lo <= hi",
    ),
    (
        Kind.VIP,
        check(type="http", target="http://h/", expected_status=[99, 200]),
        (*HC, "expected_status"),
        "100..599",
    ),
    (
        Kind.ROUTE,
        {"name": "lan", "prefix": "10.1.2.3/16"},
        ("prefix",),
        "host bits set; did you mean 10.1.0.0/16?",
    ),
    (Kind.ROUTE, {"name": "lan", "prefix": "10.1.0.0"}, ("prefix",), "is not a CIDR"),
    (Kind.ROUTE, {"name": "lan", "prefix": "10.1.0.0/33"}, ("prefix",), "is not a CIDR"),
    (Kind.ROUTE, {"name": "lan", "prefix": "fd00::1/64"}, ("prefix",), "did you mean fd00::/64?"),
    (Kind.POLICY_SET, {"name": "p", "default": "drop"}, ("default",), "'accept' or 'reject'"),
    (
        Kind.POLICY_SET,
        rule(prefix_list=[{"prefix": "10.0.0.0/8", "ge": 7}]),
        (*M, "prefix_list", 0, "ge"),
        "8..32",
    ),
    (
        Kind.POLICY_SET,
        rule(prefix_list=[{"prefix": "10.0.0.0/8", "ge": 20, "le": 16}]),
        (*M, "prefix_list", 0, "le"),
        "must be in 20..32",
    ),
    (
        Kind.POLICY_SET,
        rule(prefix_list=[{"prefix": "10.0.0.0/8", "le": 33}]),
        (*M, "prefix_list", 0, "le"),
        "8..32",
    ),
    (
        Kind.POLICY_SET,
        rule(prefix_list=[{"prefix": "10.0.0.1/8"}]),
        (*M, "prefix_list", 0, "prefix"),
        "host bits",
    ),
    (Kind.POLICY_SET, rule(communities=["65000:1", "70000:1"]), (*M, "communities", 1), "out of range"),
    (Kind.POLICY_SET, rule(communities=["1:2:4294967296"]), (*M, "communities", 0), "large: 0..4294967295"),
    (Kind.POLICY_SET, rule(communities=["65000"]), (*M, "communities", 0), "is not a community"),
    (Kind.POLICY_SET, rule(communities=["a:b"]), (*M, "communities", 0), "is not a community"),
    (Kind.POLICY_SET, rule(communities=["no-such-name"]), (*M, "communities", 0), "no-export"),
    (Kind.POLICY_SET, rule(communities=["65000:1", "65000:01"]), (*M, "communities"), "duplicate community"),
    # what Python's re accepts but a linear-time engine cannot run
    (
        Kind.POLICY_SET,
        rule(as_path=r"^(65001)_\1$"),
        (*M, "as_path"),
        "bad regex: not supported by RE2",
    ),
    (
        Kind.POLICY_SET,
        rule(as_path="^(?=65001)"),
        (*M, "as_path"),
        "RE2 (linear time): invalid perl operator",
    ),
    (Kind.POLICY_SET, rule(as_path="^(65001_){1001}$"), (*M, "as_path"), "invalid repetition size"),
    (
        Kind.POLICY_SET,
        rule(as_path="_650(01_"),
        (*M, "as_path"),
        "bad regex: missing ), unterminated subpattern",
    ),
    (Kind.POLICY_SET, action(set_local_pref=-1), (*A, "set_local_pref"), "greater than or equal to 0"),
    (Kind.POLICY_SET, action(set_med=2**32), (*A, "set_med"), "less than or equal to 4294967295"),
    (Kind.POLICY_SET, action(communities={}), (*A, "communities"), "give add, remove or replace"),
    (
        Kind.POLICY_SET,
        action(communities={"add": ["1:1"], "replace": ["2:2"]}),
        (*A, "communities"),
        "replace cannot be combined",
    ),
    (Kind.POLICY_SET, action(communities={"add": ["1:x"]}), (*A, "communities", "add", 0), "not a community"),
    (Kind.POLICY_SET, action(as_prepend={"asn": 0}), (*A, "as_prepend", "asn"), "greater than or equal to 1"),
    (
        Kind.POLICY_SET,
        action(as_prepend={"asn": 65000, "count": 11}),
        (*A, "as_prepend", "count"),
        "less than or equal to 10",
    ),
    (
        Kind.POLICY_SET,
        {"name": "p", "rules": [{"result": "maybe"}]},
        ("rules", 0, "result"),
        "'accept' or 'reject'",
    ),
    (
        Kind.MACHINE,
        {"name": "n", "export_policies": ["a", "a"]},
        ("export_policies",),
        "duplicate policy set 'a'",
    ),
    (Kind.MACHINE, {"name": "n", "import_policies": ["Bad"]}, ("import_policies", 0), "should match pattern"),
    (Kind.MACHINE, {"name": "a/b"}, ("name",), "no '/'"),
    (Kind.MESH, {"routable_cidrs": []}, ("routable_cidrs",), "at least 1 item"),
    (Kind.MESH, {"routable_cidrs": ["100.64.0.1/10"]}, ("routable_cidrs",), "did you mean 100.64.0.0/10?"),
]


@pytest.mark.parametrize(("kind", "data", "loc", "msg"), SHAPE_ERRORS)
def test_shape_errors_name_the_field_and_the_reason(
    kind: Kind, data: dict[str, Any], loc: tuple[str | int, ...], msg: str
) -> None:
    found = problems(kind, data)
    assert any(p.loc == loc and msg in p.msg for p in found), found


def test_defaults() -> None:
    v = Vip.model_validate(vip(health_check={"type": "tcp", "target": "10.0.0.1:6443"}))
    assert (v.enabled, v.machines, v.holdoff) == (True, [], 0.0)
    assert v.health_check is not None
    hc = v.health_check
    assert (hc.interval, hc.timeout, hc.healthy_threshold, hc.unhealthy_threshold) == (10.0, 2.0, 2, 3)
    assert (hc.expected_status, hc.tls_skip_verify, hc.service) == (None, None, None)
    http = HealthCheck(type="http", target="https://h:8443/healthz")
    assert (http.expected_status, http.tls_skip_verify) == ((200, 399), False)
    assert HealthCheck(type="grpc", target="[::1]:50051", service="api").service == "api"
    assert PolicySet(name="p").default == "reject"
    assert MeshSettings().routable_cidrs == ["100.64.0.0/10", "fd00::/8"]
    assert MachineSettings(name="n").enabled is True


def test_addresses_and_prefixes_are_stored_canonical() -> None:
    assert Vip.model_validate(vip(address="FD00:0::0001")).address == "fd00::1"
    assert Route(name="r", prefix="FD00:0:0::/48").prefix == "fd00::/48"
    assert parse_community("065000:0001") == "65000:1"
    assert parse_community("4294967295:0:1") == "4294967295:0:1"
    assert parse_community("graceful-shutdown") == "graceful-shutdown"


def test_models_are_frozen() -> None:
    v = Vip.model_validate(vip())
    with pytest.raises(ValidationError):
        v.name = "other"


@pytest.mark.parametrize(
    ("regex", "path", "found"),
    [
        ("_65001_", "65001", True),
        ("_65001_", "65000 65001 65002", True),
        ("_65001_", "650010", False),
        ("_6500_", "65000 65001", False),
        ("^65000_", "65000 65001", True),
        ("^65001_", "65000 65001", False),
        ("_65001$", "65000 65001", True),
        ("_6500[0-9]_65002_", "65001 65002", True),
        ("[_]", "65001", False),  # inside a class, _ is literal
        (r"\_", "_", True),
        ("^$", "", True),
    ],
)
def test_as_path_regex_underscore_means_a_boundary(regex: str, path: str, found: bool) -> None:
    assert bool(as_path_pattern(regex).search(path)) is found


def test_prefix_match_length_ranges() -> None:
    assert PrefixMatch(prefix="10.0.0.0/8").length_range() == (8, 8)
    assert PrefixMatch(prefix="10.0.0.0/8", ge=16).length_range() == (16, 32)
    assert PrefixMatch(prefix="10.0.0.0/8", le=24).length_range() == (8, 24)
    assert PrefixMatch(prefix="fd00::/8", ge=48, le=64).length_range() == (48, 64)


def test_key_and_kind_of_each_model() -> None:
    objs: list[ClusterObject] = [
        Vip.model_validate(vip()),
        Route(name="r", prefix="10.0.0.0/8"),
        PolicySet(name="p"),
        MachineSettings(name="n1"),
        MeshSettings(),
    ]
    assert [kind_of(o) for o in objs] == list(Kind)
    assert [key_of(o) for o in objs] == ["web", "r", "p", "n1", "mesh"]
    assert set(MODELS) == set(Kind)


# ---- context checks ----------------------------------------------------------------------------------

KNOWN = frozenset({"node1", "node2"})


def view(*objs: ClusterObject, known: frozenset[str] = KNOWN) -> View:
    objects: dict[Kind, dict[str, ClusterObject]] = {}
    for obj in objs:
        objects.setdefault(kind_of(obj), {})[key_of(obj)] = obj
    return View(objects, known)


def test_vip_address_must_be_inside_a_routable_cidr() -> None:
    outside = Vip.model_validate(vip(address="192.0.2.1"))
    assert validate(Kind.VIP, outside, view()) == [
        Problem(("address",), "192.0.2.1 is outside every routable CIDR (routable: 100.64.0.0/10, fd00::/8)")
    ]
    assert validate(Kind.VIP, Vip.model_validate(vip(address="fd12::1")), view()) == []
    mesh = MeshSettings(routable_cidrs=["192.0.2.0/24"])
    assert validate(Kind.VIP, outside, view(mesh)) == []
    assert validate(Kind.VIP, Vip.model_validate(vip()), view(mesh))[0].loc == ("address",)


def test_unknown_machines_are_named_with_the_known_ones() -> None:
    v = Vip.model_validate(vip(machines=["node1", "nodeX"]))
    assert validate(Kind.VIP, v, view()) == [
        Problem(("machines", 1), "unknown machine 'nodeX' (known: node1, node2)")
    ]
    r = Route(name="r", prefix="10.0.0.0/8", machines=["ghost"])
    assert validate(Kind.ROUTE, r, view(known=frozenset())) == [
        Problem(("machines", 0), "unknown machine 'ghost' (known: none)")
    ]
    assert validate(Kind.MACHINE, MachineSettings(name="ghost"), view())[0].loc == ("name",)


def test_machines_already_on_the_object_are_not_rechecked_on_edit() -> None:
    before = Vip.model_validate(vip(machines=["reaped"]))
    after = Vip.model_validate(vip(machines=["reaped"], holdoff=5))
    assert validate(Kind.VIP, after, view(before), previous=before) == []
    added = Vip.model_validate(vip(machines=["reaped", "typo"]))
    assert [p.loc for p in validate(Kind.VIP, added, view(before), previous=before)] == [("machines", 1)]


def test_long_known_machine_lists_are_shortened() -> None:
    known = frozenset(f"n{i:03}" for i in range(30))
    msg = validate(Kind.VIP, Vip.model_validate(vip(machines=["x"])), view(known=known))[0].msg
    assert msg.endswith("n019 and 10 more)")


def test_unknown_policy_sets() -> None:
    settings = MachineSettings(name="node2", import_policies=["in"], export_policies=["out", "nope"])
    assert validate(Kind.MACHINE, settings, view(PolicySet(name="in"), PolicySet(name="out"))) == [
        Problem(("export_policies", 1), "unknown policy set 'nope' (defined: in, out)")
    ]


def test_duplicate_name_on_create_only() -> None:
    existing = Vip.model_validate(vip())
    assert validate(Kind.VIP, existing, view(existing), creating=True) == [
        Problem(("name",), "a vip named 'web' already exists")
    ]
    assert validate(Kind.VIP, existing, view(existing)) == []


def test_mesh_cidrs_may_not_strand_an_existing_vip() -> None:
    mesh = MeshSettings(routable_cidrs=["fd00::/8"])
    assert validate(Kind.MESH, mesh, view(Vip.model_validate(vip()))) == [
        Problem(("routable_cidrs",), "vip web (100.96.0.1) would be outside every routable CIDR")
    ]


def test_deleting_an_attached_policy_set_says_where() -> None:
    v = view(
        PolicySet(name="p"),
        MachineSettings(name="node1", import_policies=["p"]),
        MachineSettings(name="node2", export_policies=["p"]),
    )
    assert validate_delete(Kind.POLICY_SET, "p", v) == [
        "machine node1 import_policies",
        "machine node2 export_policies",
    ]
    assert validate_delete(Kind.POLICY_SET, "other", v) == []
    assert validate_delete(Kind.VIP, "web", v) == []


# ---- open-ended input --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
FIELDS = {
    Kind.VIP: ["name", "address", "enabled", "machines", "health_check", "holdoff"],
    Kind.ROUTE: ["name", "prefix", "enabled", "machines", "health_check"],
    Kind.POLICY_SET: ["name", "rules", "default"],
    Kind.MACHINE: ["name", "enabled", "import_policies", "export_policies"],
    Kind.MESH: ["routable_cidrs"],
}


@st.composite
def near_objects(draw: st.DrawFn) -> tuple[Kind, dict[str, Any]]:
    kind = draw(st.sampled_from(list(Kind)))
    keys = st.sampled_from([*FIELDS[kind], "type", "target", "prefix", "ge", "le"]) | st.text(max_size=8)
    return kind, draw(st.dictionaries(keys, json_values, max_size=6))


@settings(max_examples=300)
@given(near_objects())
def test_any_input_is_an_object_or_a_validation_error(case: tuple[Kind, dict[str, Any]]) -> None:
    kind, data = case
    try:
        obj = parse(kind, data)
    except ValidationError as err:
        assert all(isinstance(p.msg, str) and p.msg for p in problems_from_error(err))
        return
    assert parse(kind, obj.model_dump(mode="json")) == obj


checks: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(
        dict,
        type=st.just("tcp"),
        target=st.sampled_from([":80", "127.0.0.1:6443", "[::1]:1", "db.internal:5432"]),
        interval=st.floats(min_value=1, max_value=100),
        timeout=st.floats(min_value=0.01, max_value=0.99),
    ),
    st.builds(
        dict,
        type=st.just("http"),
        target=st.just("https://h/healthz"),
        expected_status=st.tuples(st.integers(100, 300), st.integers(300, 599)).map(list),
        tls_skip_verify=st.booleans(),
    ),
    st.builds(dict, type=st.just("grpc"), target=st.just("h:50051"), service=st.text(max_size=5)),
    st.builds(dict, type=st.just("exec"), target=st.just("/usr/bin/true")),
)


@given(
    st.ip_addresses().map(str),
    st.lists(st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True), unique=True, max_size=4),
    st.none() | checks,
    st.floats(min_value=0, max_value=3600),
)
def test_valid_vips_round_trip_through_json(
    address: str, machines: list[str], hc: dict[str, Any] | None, holdoff: float
) -> None:
    v = Vip.model_validate(vip(address=address, machines=machines, health_check=hc, holdoff=holdoff))
    assert Vip.model_validate(v.model_dump(mode="json")) == v
    assert Vip.model_validate_json(v.model_dump_json()) == v
