"""``/v1/machines/{name}/rib``: another machine's RIB through its own agent, with the caller's token,
the same JSON as ``/v1/rib``, and errors that name the machine; and the API address each agent
publishes for it (:mod:`agent.http.advertise`). The other agent is a real app behind an
in-memory transport."""

from __future__ import annotations

import ipaddress
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from agent.http.advertise import api_address
from agent.http.bgp import create_bgp_router
from agent.http.errors import install_error_handlers
from agent.kernel.fib import FibState
from agent.published import API, API_KEY, BGP, BGP_KEY, SpeakerInfo
from agent.routing import Attributes, DecisionOptions, Prefix, Rib
from gossip.codec import Refusals
from gossip.events import MemberInfo, MemberState

TOKEN = "cluster-token"


class FakeSpeaker:
    def __init__(self, machine: str, prefixes: list[str]) -> None:
        self.machine, self.router_id, self.asn = machine, "198.18.0.2", 64512
        self.rib = Rib(router_id=ipaddress.IPv4Address(self.router_id), asn=64512, options=DecisionOptions())
        self.fib_state = FibState()
        for p in prefixes:
            self.rib.originate(Prefix.parse(p), Attributes(), 1.0)

    def peer_name(self, address: str) -> str | None:
        return None

    def neighbor_views(self) -> list[Any]:
        return []


def app_for(speaker: FakeSpeaker | None, machine: str, members: list[MemberInfo], **kw: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = create_bgp_router(
        speaker, clock=lambda: 2.0, wall_clock=lambda: 0.0, machine=machine, members=lambda: members, **kw
    )
    app.include_router(router)
    return app


def decode_api(data: bytes | None) -> str | None:
    return API.decode(data, "peer", Refusals())


def member(
    name: str, state: MemberState = MemberState.ALIVE, api: str | None = None, bgp: bool = True
) -> MemberInfo:
    kv: dict[str, tuple[int, bytes | None]] = {}
    if api is not None:
        kv[API_KEY] = (1, API.encode(api))
    if bgp:
        kv[BGP_KEY] = (1, BGP.encode(SpeakerInfo(64512, "198.18.0.2", "198.18.0.2")))
    return MemberInfo(name, ("198.18.0.2", 7946), 1, state, 0.0, b"", kv)


class Recorder(httpx.AsyncBaseTransport):
    """Machine b's agent in memory; remembers the headers it was called with."""

    def __init__(self, app: FastAPI) -> None:
        self.inner = httpx.ASGITransport(app=app)
        self.seen: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"error": "missing or invalid bearer token"})
        return await self.inner.handle_async_request(request)


async def get(app: FastAPI, path: str, token: str = TOKEN) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://a") as client:
        return await client.get(path, headers={"authorization": f"Bearer {token}"})


async def test_another_machines_rib_through_its_agent_same_shape_as_v1_rib() -> None:
    b_speaker = FakeSpeaker("b", ["100.96.0.2/32", "203.0.113.0/24"])
    b_app = app_for(b_speaker, "b", [])
    remote = Recorder(b_app)
    members = [member("a", api="100.64.0.1:7947"), member("b", api="100.64.0.2:7947")]
    a_app = app_for(FakeSpeaker("a", ["100.96.0.1/32"]), "a", members, proxy_transport=remote)

    proxied = await get(a_app, "/v1/machines/b/rib?limit=1")
    direct = await get(b_app, "/v1/rib?limit=1")
    assert proxied.status_code == 200 and proxied.json() == direct.json()
    assert proxied.json()["machine"] == "b" and proxied.json()["truncated"] is True
    (request,) = remote.seen
    assert request.url.host == "100.64.0.2" and request.url.port == 7947 and request.url.path == "/v1/rib"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"  # the caller's token, passed on

    one = await get(a_app, "/v1/machines/b/rib?prefix=203.0.113.7")
    assert [r["prefix"] for r in one.json()["routes"]] == ["203.0.113.0/24"]
    missing = await get(a_app, "/v1/machines/b/rib?prefix=192.0.2.0/24")
    assert missing.status_code == 404 and missing.json()["error"] == "machine b: no route for 192.0.2.0/24"

    own = await get(a_app, "/v1/machines/a/rib")  # this machine: served here, no request out
    assert own.json()["machine"] == "a" and len(remote.seen) == 3

    refused = await get(a_app, "/v1/machines/b/rib", token="other")  # b uses another token
    assert refused.status_code == 502 and "refused our token" in refused.json()["error"]


@pytest.mark.parametrize(
    ("members", "status", "words"),
    [
        ([], 404, "no machine named 'b' in the cluster"),
        (
            [member("b", MemberState.DEAD, api="100.64.0.2:7947")],
            502,
            "machine b is dead (API at 100.64.0.2:7947)",
        ),
        ([member("b", bgp=False)], 404, "machine b runs no BGP speaker"),
        ([member("b")], 502, "machine b publishes no API address"),
    ],
)
async def test_errors_name_the_machine(members: list[MemberInfo], status: int, words: str) -> None:
    response = await get(app_for(None, "a", members), "/v1/machines/b/rib")
    assert response.status_code == status and words in response.json()["error"]


async def test_unreachable_and_slow_machines() -> None:
    members = [member("b", api="100.64.0.2:7947")]

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    down = await get(
        app_for(None, "a", members, proxy_transport=httpx.MockTransport(refuse)), "/v1/machines/b/rib"
    )
    assert down.status_code == 502
    assert down.json()["error"] == "cannot reach machine b's API at 100.64.0.2:7947: connection refused"
    late = await get(
        app_for(None, "a", members, proxy_transport=httpx.MockTransport(slow), proxy_timeout=2.0),
        "/v1/machines/b/rib",
    )
    assert late.status_code == 504 and late.json()["error"] == (
        "machine b's API at 100.64.0.2:7947 did not answer within 2 s"
    )
    off = await get(app_for(None, "b", []), "/v1/machines/b/rib")  # this machine, BGP off
    assert off.status_code == 404 and "BGP is not enabled" in off.json()["error"]


def test_published_api_address() -> None:
    assert api_address("127.0.0.1", 7947, advertise_host="198.18.0.1", mesh_address=None) is None
    assert api_address("0.0.0.0", 7947, advertise_host="198.18.0.1", mesh_address=None) == "198.18.0.1:7947"
    assert (
        api_address("0.0.0.0", 7947, advertise_host="198.18.0.1", mesh_address="100.64.0.1")
        == "100.64.0.1:7947"
    )
    assert (
        api_address("::", 80, advertise_host="2001:db8::1", mesh_address="100.64.0.1") == "[2001:db8::1]:80"
    )
    assert (
        api_address("198.18.0.1", 8080, advertise_host="198.18.0.1", mesh_address="100.64.0.1")
        == "198.18.0.1:8080"
    )
    assert api_address("localhost", 7947, advertise_host="198.18.0.1", mesh_address=None) is None
    assert decode_api(API.encode("[2001:db8::1]:80")) == "[2001:db8::1]:80"
    assert decode_api(None) is None and decode_api(b"\xc1") is None
    assert decode_api(API.encode("example.com:80")) is None and decode_api(API.encode("1.2.3.4:0")) is None
