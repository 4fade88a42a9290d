"""The reflector role's BIRD config: what it says, what it refuses, and that BIRD itself accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agent.bgp.birdconf import ReflectorMode, ReflectorSpec, Session, clients_of, render

CLIENTS = clients_of([("a2", "198.18.0.11", 64512), ("a1", "198.18.0.10", 64512)])


def spec(**overrides: object) -> ReflectorSpec:
    values: dict[str, object] = {
        "router_id": "198.18.0.1",
        "cluster_id": "198.18.0.1",
        "asn": 64512,
        "local_address": "198.18.0.1",
        "clients": CLIENTS,
        "peers": (Session("rr2", "198.18.0.2", 64512),),
    }
    values.update(overrides)
    return ReflectorSpec(**values)  # type: ignore[arg-type]


def test_clients_are_reflected_with_add_path_and_peers_exchange_all_paths() -> None:
    text = render(spec())
    client = text.split("template bgp mesh_client {", 1)[1].split("}\n", 1)[0]
    assert "rr client;" in client and "rr cluster id 198.18.0.1;" in client
    assert "add paths tx;" in client and "passive;" in client
    peer = text.split("template bgp mesh_reflector {", 1)[1].split("}\n", 1)[0]
    assert "add paths on;" in peer and "rr client" not in peer
    assert 'protocol bgp m198_18_0_10 from mesh_client {\n  description "client a1";' in text
    assert "neighbor 198.18.0.2 port 1790 as 64512;" in text


def test_same_sessions_in_any_order_render_the_same_text() -> None:
    assert render(spec()) == render(spec(clients=tuple(reversed(CLIENTS))))
    # a1 sorts before a2 by address, whatever order the caller gave
    text = render(spec())
    assert text.index("m198_18_0_10") < text.index("m198_18_0_11")


def test_protocol_names_come_from_the_address_so_a_rename_keeps_the_session() -> None:
    assert Session("a1", "198.18.0.10", 1).protocol == Session("renamed", "198.18.0.10", 1).protocol
    assert Session("v6", "2001:db8::1", 1).protocol == "m2001_db8__1"


def test_route_server_mode_for_per_machine_asns() -> None:
    machines = clients_of([("a1", "198.18.0.10", 4200000001), ("a2", "198.18.0.11", 4200000002)])
    text = render(spec(mode=ReflectorMode.ROUTE_SERVER, asn=4200000100, clients=machines, peers=()))
    assert "rs client;" in text and "rr client" not in text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"router_id": "2001:db8::1"}, "router_id must be a dotted quad"),
        ({"cluster_id": "x"}, "cluster_id must be a dotted quad"),
        ({"hold_time": 2}, "hold time must be 0 or 3..65535"),
        ({"local_address": "2001:db8::1"}, "another family"),
        ({"clients": (*CLIENTS, Session("a3", "198.18.0.12", 65000))}, "AS65000 in a shared-ASN mesh"),
        ({"peers": (Session("rr2", "198.18.0.10", 64512),)}, "198.18.0.10 is both a1 and rr2"),
    ],
)
def test_bad_specs_are_refused_with_what_is_wrong(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        spec(**overrides)


def test_a_machine_name_bird_cannot_quote_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot go in a BIRD string"):
        Session('a"1', "198.18.0.10", 64512)


@pytest.mark.skipif(shutil.which("bird") is None, reason="needs Debian's bird2 (make deps)")
@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"mode": ReflectorMode.ROUTE_SERVER, "asn": 4200000100, "peers": ()},
        {
            "router_id": "198.18.0.1",
            "local_address": "2001:db8::1",
            "clients": clients_of([("a1", "2001:db8::10", 64512)]),
            "peers": (Session("rr2", "2001:db8::2", 64512),),
        },
    ],
)
def test_bird_parses_what_we_render(variant: dict[str, object], tmp_path: Path) -> None:
    if variant.get("mode") is ReflectorMode.ROUTE_SERVER:
        variant["clients"] = clients_of([("a1", "198.18.0.10", 4200000001)])
    conf = tmp_path / "bird.conf"
    conf.write_text(render(spec(**variant)))
    done = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
