"""Route reflection as the API, the CLI and the UI show it: ``GET /v1/bgp/reflectors``, the routing tab's
line, ``wiremesh bgp reflectors`` and the neighbors table's RR column (from a speaker fake)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

import httpx

from agent.bgp.bird import ReflectorSession
from agent.bgp.reflection import Disagreement, ReflectionView
from agent.cli.bgp import neighbors_table, reflectors_text, rib_table
from agent.routing import Attributes, Peer, PeerKind, Prefix, Rib
from tests.test_ui_kit import ASN, AUTH, TOKEN, WALL, Fakes, FakeSpeaker

BASE = "http://agent"
VIEW = ReflectionView(
    mode="reflected",
    reflectors=("node-a", "node-c"),
    role="reflector",
    eligibility="auto",
    claim=7 << 16,
    switching=False,
    refused=None,
    bird_pid=4242,
    bird_sessions=(
        ReflectorSession(
            "m198_18_0_1", "node-b", "198.18.0.1", "client", "up", "2026-12-02 02:00:00", "Established"
        ),
    ),
)


@dataclass
class ReflectingSpeaker(FakeSpeaker):
    def reflection_view(self) -> ReflectionView:
        return VIEW


async def test_the_reflectors_endpoint_and_the_routing_tab_show_the_role() -> None:
    fakes = Fakes(speaker=ReflectingSpeaker())
    transport = httpx.ASGITransport(app=fakes.app(clock=lambda: 10.0, wall_clock=lambda: WALL))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        data = (await client.get("/v1/bgp/reflectors", headers=AUTH)).json()
        assert data["mode"] == "reflected" and data["reflectors"] == ["node-a", "node-c"]
        assert data["role"] == "reflector" and data["bird_pid"] == 4242
        assert data["bird_sessions"][0]["machine"] == "node-b"
        assert "reflector" in reflectors_text(data) and "node-b" in reflectors_text(data)
        assert (await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/vips"})).status_code == 303
        routing = (await client.get("/ui/machines/node-a?tab=routing")).text
        assert "via route reflectors node-a, node-c" in routing and "<strong>reflector</strong>" in routing


async def test_a_speaker_that_places_no_reflectors_answers_404() -> None:
    transport = httpx.ASGITransport(app=Fakes().app())
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        assert (await client.get("/v1/bgp/reflectors", headers=AUTH)).status_code == 404


def test_the_neighbors_table_marks_sessions_to_a_reflector() -> None:
    row = {"address": "198.18.0.3", "name": "node-c", "description": "", "peer_as": 64512, "type": "internal",
           "state": "up", "passive": False, "uptime_seconds": 5.0, "prefixes_in": 3, "prefixes_out": 1,
           "last_error": None}  # fmt: skip
    text = neighbors_table([{**row, "reflector": True}, {**row, "address": "198.18.0.4", "name": "old"}])
    lines = text.splitlines()
    assert "RR" in lines[0] and "reflector" in lines[1] and "reflector" not in lines[2]


@dataclass
class DisagreeingSpeaker(FakeSpeaker):
    def reflection_view(self) -> ReflectionView:
        return replace(VIEW, disagree=(Disagreement("node-b", "reflectors", 2, 3),))


async def test_knobs_that_differ_show_in_the_api_the_cli_and_the_routing_tab() -> None:
    fakes = Fakes(speaker=DisagreeingSpeaker())
    transport = httpx.ASGITransport(app=fakes.app(clock=lambda: 10.0, wall_clock=lambda: WALL))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        data = (await client.get("/v1/bgp/reflectors", headers=AUTH)).json()
        assert data["disagree"] == [{"machine": "node-b", "knob": "reflectors", "ours": 2, "theirs": 3}]
        text = reflectors_text(data)
        assert "knobs differ: node-b has reflectors = 3, this machine 2" in text
        assert (await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/vips"})).status_code == 303
        routing = (await client.get("/ui/machines/node-a?tab=routing")).text
        assert "knobs differ" in routing and "node-b has reflectors = 3, this machine 2" in routing


def test_an_older_agents_reflectors_answer_has_no_disagree() -> None:
    data: dict[str, object] = {"mode": "full-mesh", "reflectors": [], "role": "peer", "eligibility": "auto",
                               "claim": None, "switching": False, "refused": None, "bird_pid": None,
                               "bird_sessions": []}  # fmt: skip
    assert "knobs differ" not in reflectors_text(data)


@dataclass
class ReflectedRibSpeaker(FakeSpeaker):
    """node-c (198.18.0.3) reflects a path node-d (router id 198.18.0.9) announced."""

    def __post_init__(self) -> None:
        self.rib = Rib(router_id=ipaddress.IPv4Address(self.router_id), asn=ASN)
        rr = ipaddress.IPv4Address("198.18.0.3")
        peer = Peer(rr, ASN, rr, PeerKind.INTERNAL)
        self.rib.peer_up(peer)
        attrs = Attributes(
            next_hop=ipaddress.IPv4Address("198.18.0.9"),
            originator_id=ipaddress.IPv4Address("198.18.0.9"),
            cluster_list=(rr,),
        )
        self.rib.announce(peer, Prefix.parse("100.96.0.20/32"), attrs, now=1.0)
        self.rib.take_diff()

    def originator_name(self, router_id: str) -> str | None:
        return {"198.18.0.9": "node-d", self.router_id: self.machine}.get(router_id)


async def test_the_rib_names_the_machine_that_originated_a_reflected_path() -> None:
    fakes = Fakes(speaker=ReflectedRibSpeaker())
    transport = httpx.ASGITransport(app=fakes.app(clock=lambda: 10.0, wall_clock=lambda: WALL))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        data = (await client.get("/v1/rib", headers=AUTH)).json()
        best = data["routes"][0]["best"]
        assert (best["peer_name"], best["origin_machine"]) == ("node-c", "node-d")
        assert "node-d via node-c" in rib_table(data, all_paths=False)
        assert (await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/vips"})).status_code == 303
        routing = (await client.get("/ui/machines/node-a?tab=routing")).text
        assert "from node-d via node-c" in routing


async def test_a_direct_paths_origin_machine_is_its_peer() -> None:
    transport = httpx.ASGITransport(app=Fakes().app(clock=lambda: 10.0, wall_clock=lambda: WALL))
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
        data = (await client.get("/v1/rib", headers=AUTH)).json()
    paths = [p for d in data["routes"] for p in d["paths"]]
    assert {(p["peer"], p["origin_machine"]) for p in paths} == {
        ("198.18.0.1", "node-b"),
        ("198.18.0.2", None),  # an external router: no machine
        ("198.18.0.3", "node-c"),
        ("local", "node-a"),
    }
    assert "node-c AS" in rib_table(data, all_paths=True) and " via node-c" not in rib_table(
        data, all_paths=True
    )
