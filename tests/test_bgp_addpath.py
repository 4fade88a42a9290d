"""A client behind a route reflector, on the ExaBGP side: the ADD-PATH capability in the neighbor
config (checked by ``exabgp validate``), the path ids, ORIGINATOR_ID and CLUSTER_LIST in ExaBGP 5's
JSON, and the session table and ingest keeping one path per path id.

``reflector_addpath.jsonl`` is what ExaBGP 5 (``add-path receive``) wrote to its API process behind
BIRD 2.0.12 as route reflector (``rr client; add paths tx;``, cluster id 198.18.0.1) in network
namespaces: clients 198.18.0.11 and .12 both announce 100.96.0.10/32 (path ids 0.0.0.2 and 0.0.0.3),
.12 also 100.96.0.11/32 with a MED and a community; then .12's routes are withdrawn, then .11's.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.bgp.api import (
    ApiCodecError,
    EndOfRib,
    Open,
    PeerState,
    RouteAttributes,
    Shutdown,
    Update,
    parse_line,
)
from agent.bgp.config import AddPath, ApiProcess, Neighbor, mesh_neighbor, render_config
from agent.bgp.ingest import Ingest
from agent.bgp.status import SessionTable
from agent.bgp.supervisor import default_exabgp_argv
from agent.cli.bgp import destination_detail, rib_table
from agent.config.bgp import AsnPlan
from agent.http.bgp import destination
from agent.kernel.fib import FibState
from agent.routing import DecisionOptions, Prefix, Rib

FIXTURES = Path(__file__).parent / "fixtures" / "exabgp"
PROCESS = ApiProcess((sys.executable, "-m", "agent.bgp.bridge", "/tmp/api.sock"))
RR, C1, C2, ME = "198.18.0.1", "198.18.0.11", "198.18.0.12", "198.18.0.20"
VIP, OTHER = "100.96.0.10/32", "100.96.0.11/32"


def lines() -> list[str]:
    return (FIXTURES / "reflector_addpath.jsonl").read_text().splitlines()


def messages() -> list[Any]:
    return [parse_line(line) for line in lines()]


def updates() -> list[Update]:
    return [m for m in messages() if isinstance(m, Update)]


def client(add_path: AddPath | None) -> Neighbor:
    return Neighbor(RR, 65000, 65000, ME, local_address=ME, hold_time=9, add_path=add_path)


# --- config ---------------------------------------------------------------------------------------


def test_add_path_is_off_by_default_and_renders_nothing() -> None:
    assert client(None).add_path is None
    text = render_config([client(None)], PROCESS)
    assert "capability" not in text and "add-path" not in text


@pytest.mark.parametrize("mode", list(AddPath))
def test_add_path_renders_a_capability_block(mode: AddPath) -> None:
    text = render_config([client(mode)], PROCESS)
    assert f"    capability {{\n        add-path {mode.value};\n    }}\n    family {{" in text
    without = render_config([client(None)], PROCESS)
    assert text.replace(f"    capability {{\n        add-path {mode.value};\n    }}\n", "") == without


def test_add_path_validation_names_the_neighbor() -> None:
    with pytest.raises(ValueError, match=r"neighbor 198.18.0.1: add-path must be one of receive, send"):
        Neighbor(RR, 65000, 65000, ME, add_path="both")  # type: ignore[arg-type]
    assert Neighbor(RR, 65000, 65000, ME, add_path="receive").add_path is AddPath.RECEIVE  # type: ignore[arg-type]


def test_mesh_neighbor_passes_add_path() -> None:
    n = mesh_neighbor(
        address=RR,
        name="rr",
        local_name="me",
        local_address=ME,
        router_id=ME,
        plan=AsnPlan(asn=65000),
        add_path=AddPath.RECEIVE,
    )
    assert n.add_path is AddPath.RECEIVE


@pytest.mark.parametrize("mode", list(AddPath))
def test_exabgp_accepts_the_add_path_capability(tmp_path: Path, mode: AddPath) -> None:
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config([client(mode)], PROCESS))
    exabgp = default_exabgp_argv()[0]
    result = subprocess.run(
        [exabgp, "validate", "-n", "-v", str(conf)], capture_output=True, text=True, timeout=60
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "add-path" in out


def test_exabgp_refuses_an_add_path_it_does_not_know(tmp_path: Path) -> None:
    """The acceptance test above can fail."""
    conf = tmp_path / "exabgp.conf"
    conf.write_text(
        render_config([client(AddPath.RECEIVE)], PROCESS).replace("add-path receive", "add-path both")
    )
    result = subprocess.run(
        [default_exabgp_argv()[0], "validate", str(conf)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


# --- ExaBGP's JSON --------------------------------------------------------------------------------


def test_fixture_parses_completely() -> None:
    kinds = [type(m) for m in messages()]
    assert kinds == [
        PeerState,
        Open,
        PeerState,
        Update,
        Update,
        Update,
        EndOfRib,
        Update,
        Update,
        PeerState,
        Shutdown,
    ]


def test_reflected_routes_carry_path_id_originator_and_cluster_list() -> None:
    announced = [r for u in updates() for r in u.announced]
    assert [(r.prefix, r.next_hop, r.path_id) for r in announced] == [
        (OTHER, C2, 3),
        (VIP, C1, 2),
        (VIP, C2, 3),
    ]
    assert announced[0].attributes == RouteAttributes(
        med=5,
        local_pref=100,
        communities=((65000, 7),),
        originator_id=C2,
        cluster_list=(RR,),
    )
    assert announced[1].attributes.originator_id == C1
    assert announced[1].attributes.cluster_list == (RR,)


def test_withdrawals_name_their_path_id() -> None:
    withdrawals = [u for u in updates() if u.withdrawn_paths]
    assert [u.withdrawn_paths for u in withdrawals] == [((OTHER, 3), (VIP, 3)), ((VIP, 2),)]
    assert all(u.withdrawn == () and u.announced == () for u in withdrawals)


def test_routes_without_add_path_have_no_path_id() -> None:
    plain = [
        m for m in (parse_line(line) for line in (FIXTURES / "bird_session.jsonl").read_text().splitlines())
    ]
    routes = [r for m in plain if isinstance(m, Update) for r in m.announced]
    assert routes and all(r.path_id is None for r in routes)
    assert all(r.attributes.originator_id is None and r.attributes.cluster_list == () for r in routes)
    assert all(m.withdrawn_paths == () for m in plain if isinstance(m, Update))


def edited(index: int, edit: Any) -> str:
    """A fixture line with its JSON changed by ``edit`` (for the shapes one capture did not show)."""
    msg = json.loads(lines()[index])
    edit(msg["neighbor"]["message"]["update"])
    return json.dumps(msg)


def test_one_update_with_the_same_prefix_under_two_path_ids_keeps_both() -> None:
    def two(update: dict[str, Any]) -> None:
        update["announce"]["ipv4 unicast"][C1] = [
            {"nlri": VIP, "path-information": "0.0.0.2"},
            {"nlri": VIP, "path-information": "0.0.1.0"},
        ]

    parsed = parse_line(edited(4, two))
    assert isinstance(parsed, Update)
    assert [(r.prefix, r.path_id) for r in parsed.announced] == [(VIP, 2), (VIP, 256)]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("originator-id", "198.18.0.300", "originator-id: expected a dotted quad"),
        ("originator-id", 7, "originator-id: expected a string"),
        ("cluster-list", ["198.18.0.1", "x"], "cluster-list: expected a dotted quad"),
        ("cluster-list", "198.18.0.1", "cluster-list: expected a list"),
    ],
)
def test_bad_reflection_attributes_name_the_field(field: str, value: Any, message: str) -> None:
    line = edited(4, lambda u: u["attribute"].__setitem__(field, value))
    with pytest.raises(ApiCodecError, match=message):
        parse_line(line)


@pytest.mark.parametrize(
    ("index", "where", "value"),
    [
        (4, "announce", "2"),
        (4, "announce", 2),
        (7, "withdraw", "0.0.0.0.1"),
    ],
)
def test_a_bad_path_id_names_the_field(index: int, where: str, value: Any) -> None:
    def bad(update: dict[str, Any]) -> None:
        entries = update[where]["ipv4 unicast"]
        entry = (next(iter(entries.values())) if isinstance(entries, dict) else entries)[0]
        entry["path-information"] = value

    with pytest.raises(ApiCodecError, match=rf"{where} ipv4 unicast path-information"):
        parse_line(edited(index, bad))


def test_route_attributes_refuse_a_bad_originator() -> None:
    with pytest.raises(ValueError, match="ORIGINATOR_ID must be a dotted quad"):
        RouteAttributes(originator_id="nope")
    with pytest.raises(ValueError, match="CLUSTER_LIST must be a dotted quad"):
        RouteAttributes(cluster_list=(RR, "1.2.3"))


# --- the session table and ingest -----------------------------------------------------------------


def test_session_table_counts_prefixes_and_drops_one_path_at_a_time() -> None:
    table = SessionTable([RR])
    seen: list[frozenset[str]] = []
    for m in messages()[:-2]:
        table.apply(m, 0.0)
        seen.append(table.prefixes(RR))
    assert seen[6] == {VIP, OTHER}  # after the end of RIB
    assert seen[7] == {VIP}  # .12's paths withdrawn: .11's path to the VIP is still there
    assert seen[8] == frozenset()
    assert table.snapshot(0.0)[0].prefixes_in == 0


def test_ingest_keeps_one_path_per_path_id_and_withdraws_each_alone() -> None:
    rib = Rib(router_id=ipaddress.IPv4Address(ME), asn=65000, options=DecisionOptions(max_paths=4))
    ingest = Ingest(rib, SessionTable([RR]))
    msgs = messages()
    for m in msgs[:7]:  # up to the end of RIB
        ingest.apply(m, 1.0)
    vip = Prefix.parse(VIP)
    destination = rib.destination(vip)
    assert destination is not None
    assert sorted((p.path_id, str(p.attrs.originator_id)) for p in destination.candidates) == [
        (2, C1),
        (3, C2),
    ]
    selection = rib.selection(vip)
    assert selection is not None
    assert [str(h) for h in selection.next_hops] == [C1, C2]  # ECMP across the two originators
    assert str(selection.best.attrs.originator_id) == C1  # the lower ORIGINATOR_ID, same session
    ingest.apply(msgs[7], 2.0)  # .12 withdrawn
    selection = rib.selection(vip)
    assert selection is not None and [str(h) for h in selection.next_hops] == [C1]
    assert Prefix.parse(OTHER) not in rib
    ingest.apply(msgs[8], 3.0)
    assert vip not in rib and rib.path_count() == 0


class _View:
    """Just what :func:`agent.http.bgp.destination` reads of a speaker."""

    def __init__(self, rib: Rib) -> None:
        self.machine, self.router_id, self.asn, self.rib = "me", ME, 65000, rib
        self.fib_state = FibState()

    def peer_name(self, address: str) -> str | None:
        return "rr" if address == RR else None


def test_the_rib_endpoint_shows_path_id_originator_and_cluster_list() -> None:
    rib = Rib(router_id=ipaddress.IPv4Address(ME), asn=65000, options=DecisionOptions(max_paths=4))
    ingest = Ingest(rib, SessionTable([RR]))
    for m in messages()[:7]:
        ingest.apply(m, 1.0)
    out = destination(_View(rib), Prefix.parse(VIP), 2.0)  # type: ignore[arg-type]
    assert out is not None and out.ecmp == [C1, C2]
    assert [(p.peer, p.peer_name, p.path_id, p.originator_id, p.cluster_list) for p in out.paths] == [
        (RR, "rr", 2, C1, [RR]),
        (RR, "rr", 3, C2, [RR]),
    ]
    assert out.paths[1].lost_at == "Router ID"
    assert out.paths[1].reason == (
        "multipath, behind best at Router ID: 198.18.0.12 (originator) vs 198.18.0.11 (originator)"
        " (via 198.18.0.1 path 2)"
    )


class _Naming(_View):
    """A speaker that knows one of the two originators' router ids (as gossip told it)."""

    def originator_name(self, router_id: str) -> str | None:
        return "m11" if router_id == C1 else None


def test_a_reflected_paths_origin_machine_is_its_originator_not_the_reflector() -> None:
    rib = Rib(router_id=ipaddress.IPv4Address(ME), asn=65000, options=DecisionOptions(max_paths=4))
    ingest = Ingest(rib, SessionTable([RR]))
    for m in messages()[:7]:
        ingest.apply(m, 1.0)
    out = destination(_Naming(rib), Prefix.parse(VIP), 2.0)  # type: ignore[arg-type]
    assert out is not None
    assert [(p.peer_name, p.originator_id, p.origin_machine) for p in out.paths] == [
        ("rr", C1, "m11"),
        ("rr", C2, None),  # a router id no member publishes: not guessed from the reflector
    ]
    data = {"routes": [out.model_dump()], "destinations": 1, "truncated": False}
    assert "m11 via rr AS65000" in rib_table(data, all_paths=True)
    detail = destination_detail(out.model_dump())
    assert "from m11 via rr AS65000" in detail and "from rr AS65000" in detail
    unnamed = destination(_View(rib), Prefix.parse(VIP), 2.0)  # type: ignore[arg-type]
    assert unnamed is not None and [p.origin_machine for p in unnamed.paths] == [None, None]  # no mapping
