"""ExaBGP's config file: the neighbor model, the mesh ASN plan, and the renderer, checked with
``exabgp validate`` (ExaBGP's own parser) as well as by reading the text."""

from __future__ import annotations

import base64
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from agent.bgp.api import configured_descriptions
from agent.bgp.config import ApiProcess, Neighbor, Stamps, mesh_neighbor, render_config, stamps_shown
from agent.bgp.supervisor import default_exabgp_argv
from agent.config.bgp import PRIVATE_ASN4_FIRST, PRIVATE_ASN4_LAST, AsnPlan, MeshAsnMode, derive_private_asn

PASSWORD = "p\"a ss\\w;rd#{}'"  # every character ExaBGP's tokeniser treats specially

PROCESS = ApiProcess((sys.executable, "-m", "agent.bgp.bridge", "/tmp/state dir/api.sock"))


def neighbors() -> list[Neighbor]:
    return [
        Neighbor(
            "198.18.0.1",
            peer_as=65000,
            local_as=65001,
            router_id="198.18.0.2",
            local_address="198.18.0.2",
            hold_time=9,
            md5_password=PASSWORD,
            multihop=2,
            passive=True,
            description="external r1",
        ),
        Neighbor("2001:db8::1", 65000, 65001, "198.18.0.2", hold_time=0, port=1179, listen=False),
        mesh_neighbor(
            address="100.64.0.7",
            name="node-b",
            local_name="node-a",
            local_address="100.64.0.6",
            router_id="100.64.0.6",
            plan=AsnPlan(MeshAsnMode.PER_MACHINE),
        ),
    ]


def block(text: str, address: str) -> str:
    start = text.index(f"neighbor {address} {{")
    return text[start : text.index("\n}\n", start)]


def test_render_neighbor_settings() -> None:
    text = render_config(neighbors(), PROCESS)
    r1 = block(text, "198.18.0.1")
    for line in (
        'description "external r1";',
        "router-id 198.18.0.2;",
        "local-address 198.18.0.2;",
        "local-as 65001;",
        "peer-as 65000;",
        "hold-time 9;",
        "listen 179;",
        "passive true;",
        "md5-base64 true;",
        "outgoing-ttl 2;",
        "ipv4 unicast;",
        "processes [ wiremesh ];",
        "neighbor-changes;",
    ):
        assert line in r1
    encoded = base64.b64encode(PASSWORD.encode()).decode()
    assert f"md5-password {encoded};" in r1 and PASSWORD not in text
    v6 = block(text, "2001:db8::1")
    assert "ipv6 unicast;" in v6 and "ipv4 unicast" not in v6  # next-hop self needs the session's family
    assert "connect 1179;" in v6 and "listen" not in v6 and "local-address" not in v6
    assert "run /" in text and '"/tmp/state dir/api.sock";' in text and "encoder json;" in text


def test_render_is_stable_and_sorted() -> None:
    ns = neighbors()
    assert render_config(ns, PROCESS) == render_config(list(reversed(ns)), PROCESS)
    text = render_config(ns, PROCESS)
    order = [text.index(f"neighbor {a} ") for a in ("100.64.0.7", "198.18.0.1", "2001:db8::1")]
    assert order == sorted(order)
    with pytest.raises(ValueError):
        render_config([ns[0], Neighbor("198.18.0.1", 65002, 65001, "198.18.0.2")], PROCESS)


def test_password_is_never_in_repr() -> None:
    n = neighbors()[0]
    assert PASSWORD not in repr(n) and "md5" not in repr(n)
    assert 'p\\"a' not in str(n)


@pytest.mark.parametrize(
    "changes",
    [
        {"hold_time": 2},
        {"hold_time": 70000},
        {"peer_as": 0},
        {"peer_as": 23456},
        {"local_as": 1 << 32},
        {"router_id": "2001:db8::1"},
        {"local_address": "2001:db8::2"},  # other family than the peer
        {"multihop": 0},
        {"passive": True, "local_address": None},
        {"md5_password": ""},
        {"md5_password": "x" * 81},
        {"description": 'has a "quote"'},
        {"address": "198.18.0.256"},
    ],
)
def test_neighbor_validation(changes: dict[str, Any]) -> None:
    base: dict[str, Any] = {
        "address": "198.18.0.1",
        "peer_as": 65000,
        "local_as": 65001,
        "router_id": "198.18.0.2",
        "local_address": "198.18.0.2",
    }
    with pytest.raises(ValueError):
        Neighbor(**(base | changes))


def test_api_process_validation() -> None:
    with pytest.raises(ValueError):
        ApiProcess(("python3", "-m", "agent.bgp.bridge"))  # ExaBGP looks relative paths up in /etc/exabgp
    with pytest.raises(ValueError):
        ApiProcess((sys.executable, 'sock"et'))


def test_asn_plan() -> None:
    shared = AsnPlan()
    assert shared.asn_for("a") == shared.asn_for("b") == 64512
    assert shared.asn_for("a", configured=65123) == 64512  # shared means shared
    per = AsnPlan(MeshAsnMode.PER_MACHINE)
    a, b = per.asn_for("node-a"), per.asn_for("node-b")
    assert a != b and a == derive_private_asn("node-a")
    assert all(PRIVATE_ASN4_FIRST <= x <= PRIVATE_ASN4_LAST for x in (a, b))
    assert per.asn_for("node-a", configured=4200000123) == 4200000123
    with pytest.raises(ValueError):
        AsnPlan(asn=0)


def test_mesh_neighbor_follows_the_plan() -> None:
    kwargs: dict[str, Any] = {
        "address": "100.64.0.7",
        "name": "node-b",
        "local_name": "node-a",
        "local_address": "100.64.0.6",
        "router_id": "100.64.0.6",
    }
    ibgp = mesh_neighbor(plan=AsnPlan(asn=65010), **kwargs)
    assert ibgp.internal and ibgp.peer_as == 65010 and ibgp.description == "mesh node-b"
    ebgp = mesh_neighbor(plan=AsnPlan(MeshAsnMode.PER_MACHINE), **kwargs)
    assert not ebgp.internal and ebgp.peer_as == derive_private_asn("node-b")


def test_exabgp_accepts_the_rendered_config(tmp_path: Path) -> None:
    """ExaBGP's own parser, through ``exabgp validate``; ``-v`` prints each token as it parsed it."""
    exabgp = Path(default_exabgp_argv()[0])
    assert exabgp.exists(), "exabgp 5 is a dependency: pip install 'exabgp>=5,<6'"
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config(neighbors(), PROCESS))
    result = subprocess.run(
        [str(exabgp), "validate", "-n", "-v", str(conf)], capture_output=True, text=True, timeout=60
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    for token in ("198.18.0.1", "2001:db8::1", "100.64.0.7"):
        assert f"neighbor  {token}" in out  # its "checking neighbors" list
    assert "'/tmp/state dir/api.sock'" in out  # the quoted argument stayed one argument
    assert "'-m' 'agent.bgp.bridge'" in out
    assert "'outgoing-ttl 2'" not in out and "outgoing-ttl     | '2'" in out


def test_exabgp_rejects_what_we_would_never_render(tmp_path: Path) -> None:
    """The validation test above can fail: a broken file is refused with a non-zero status."""
    exabgp = Path(default_exabgp_argv()[0])
    conf = tmp_path / "exabgp.conf"
    conf.write_text(render_config(neighbors(), PROCESS).replace("hold-time 9;", "hold-time 2;"))
    result = subprocess.run([str(exabgp), "validate", str(conf)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_stamps_change_only_with_a_neighbors_settings() -> None:
    a = Neighbor("198.18.0.1", 65000, 65000, "198.18.0.2", description="mesh m1")
    b = Neighbor("198.18.0.3", 65000, 65000, "198.18.0.2")
    stamps = Stamps()
    written, expected = stamps.apply([a, b])
    assert [n.description for n in written] == ["mesh m1 [g1]", "[g1]"]
    assert expected == {"198.18.0.1": 1, "198.18.0.3": 1}
    written, expected = stamps.apply([a, replace(b, hold_time=30)])
    assert [n.description for n in written] == ["mesh m1 [g1]", "[g2]"]  # a keeps its session
    _, expected = stamps.apply([b])  # b back to its first settings: still a change
    assert expected == {"198.18.0.3": 3}


def test_configured_descriptions_read_exabgps_neighbor_blocks() -> None:
    # as ``show neighbor configuration`` prints them (exabgp/bgp/neighbor.py, Neighbor.string)
    lines = [
        "neighbor 198.18.0.1 {",
        '\tdescription "mesh m1 [g4]";',
        "\trouter-id 198.18.0.2;",
        "\thold-time 180;",
        "}",
        "neighbor 2001:db8::0001 {",
        '\tdescription "";',
        "}",
        "done",
    ]
    shown = configured_descriptions(lines)
    assert shown == {"198.18.0.1": "mesh m1 [g4]", "2001:db8::1": ""}
    assert stamps_shown(shown) == {"198.18.0.1": 4, "2001:db8::1": None}
