"""The object API (/v1/vips, routes, policy-sets, machines, mesh) over a real store, in process."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.announce.planner import Decision
from agent.cluster.objects import Kind
from agent.cluster.store import ObjectStore
from agent.health.verdict import Verdict
from agent.http.app import create_app
from gossip.events import MemberInfo, MemberState
from tests.fakes import FakeNode

TOKEN = "objects-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WALL = 1_700_000_000.0
CHECK = {"type": "tcp", "target": ":6443", "interval": 5, "timeout": 1}
NO_DETAIL = {"assigned": True, "check": None, "decision": None}  # FakeStatus has no verdicts or decisions


def fake_node() -> FakeNode:
    members = [
        MemberInfo("node-a", ("127.0.0.1", 7000), 3, MemberState.ALIVE, 10.0, b""),
        MemberInfo("node-b", ("127.0.0.1", 7001), 1, MemberState.SUSPECT, 10.0, b""),
        MemberInfo("node-c", ("127.0.0.1", 7002), 5, MemberState.DEAD, 10.0, b""),
    ]
    return FakeNode("node-a", members, {"traffic": {"datagrams_in": 7}})


@dataclass
class FakeStatus:
    announcing: dict[str, list[str]] = field(default_factory=dict)
    healthy: dict[tuple[str, str], str] = field(default_factory=dict)

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        return self.announcing.get(name, [])

    def health(self, kind: Kind, name: str, machine: str) -> str:
        return self.healthy.get((name, machine), "unknown")

    def verdicts(self) -> dict[str, dict[str, Verdict]]:
        return {}  # verdict and decision details: tests/test_api_health.py

    def all_decisions(self) -> tuple[float, dict[str, dict[str, Decision]]]:
        return 0.0, {}


@dataclass
class Env:
    client: httpx.AsyncClient
    store: ObjectStore
    status: FakeStatus


def make_store(node: FakeNode) -> ObjectStore:
    return ObjectStore("node-a", lambda: frozenset(m.name for m in node.members()))


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    node, status = fake_node(), FakeStatus()
    store = make_store(node)
    app = create_app(
        node, token=TOKEN, store=lambda: store, status=status, clock=lambda: 100.0, wall_clock=lambda: WALL
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as client:
        yield Env(client, store, status)


def locs(response: httpx.Response) -> list[list[Any]]:
    body = response.json()
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str) and body["error"]
    return [d["loc"] for d in body["detail"]]


def vip(name: str = "web", **extra: Any) -> dict[str, Any]:
    return {"name": name, "address": "100.96.0.1", "machines": ["node-a", "node-b"], **extra}


# --- VIPs --------------------------------------------------------------------------------------------


async def test_vip_lifecycle(env: Env) -> None:
    c = env.client
    created = await c.post("/v1/vips", json=vip(health_check=CHECK))
    assert created.status_code == 201
    assert created.headers["location"] == "/v1/vips/web"
    body = created.json()
    assert body["address"] == "100.96.0.1" and body["enabled"] is True and body["holdoff"] == 0.0
    assert body["health_check"]["healthy_threshold"] == 2  # defaults filled in
    assert body["version"] == {"wall_ms": int(WALL * 1000), "counter": 0, "origin": "node-a"}
    assert body["status"] == {
        "announced": False,
        "announced_by": [],
        "machines": [
            {"name": "node-a", "health": "unknown", "announcing": False, "member": "alive"} | NO_DETAIL,
            {"name": "node-b", "health": "unknown", "announcing": False, "member": "suspect"} | NO_DETAIL,
        ],
    }
    assert (await c.get("/v1/vips/web")).json() == body
    assert [v["name"] for v in (await c.get("/v1/vips")).json()] == ["web"]

    patched = await c.patch("/v1/vips/web", json={"holdoff": 30, "health_check": {"timeout": 2}})
    assert patched.status_code == 200
    assert patched.json()["holdoff"] == 30.0
    assert patched.json()["health_check"]["timeout"] == 2.0  # merged into the check, type kept
    assert patched.json()["health_check"]["type"] == "tcp"
    assert patched.json()["version"]["counter"] == 1

    removed = await c.patch(
        "/v1/vips/web", json={"health_check": None}, headers={"content-type": "application/merge-patch+json"}
    )
    assert removed.status_code == 200 and removed.json()["health_check"] is None

    replaced = await c.put("/v1/vips/web", json={"name": "web", "address": "100.96.0.9"})
    assert replaced.status_code == 200
    assert (replaced.json()["address"], replaced.json()["machines"], replaced.json()["holdoff"]) == (
        "100.96.0.9",
        [],
        0.0,
    )

    assert (await c.delete("/v1/vips/web")).status_code == 204
    gone = await c.get("/v1/vips/web")
    assert gone.status_code == 404 and gone.json() == {"error": "no vip named 'web'", "detail": []}
    assert (await c.get("/v1/vips")).json() == []
    assert (await c.delete("/v1/vips/web")).status_code == 404


async def test_vip_live_status_comes_from_the_status_provider(env: Env) -> None:
    env.status.announcing["web"] = ["node-b"]
    env.status.healthy.update({("web", "node-a"): "unhealthy", ("web", "node-b"): "healthy"})
    await env.client.post("/v1/vips", json=vip())
    status = (await env.client.get("/v1/vips")).json()[0]["status"]
    assert status == {
        "announced": True,
        "announced_by": ["node-b"],
        "machines": [
            {"name": "node-a", "health": "unhealthy", "announcing": False, "member": "alive"} | NO_DETAIL,
            {"name": "node-b", "health": "healthy", "announcing": True, "member": "suspect"} | NO_DETAIL,
        ],
    }


@pytest.mark.parametrize(
    ("payload", "loc"),
    [
        (vip(address="8.8.8.8"), ["body", "address"]),  # outside every routable CIDR
        (vip(address="not-an-ip"), ["body", "address"]),
        (vip(machines=["node-a", "ghost"]), ["body", "machines", 1]),
        (vip(name="Bad_Name"), ["body", "name"]),
        (vip(health_check={**CHECK, "timeout": 5}), ["body", "health_check", "timeout"]),
        (vip(health_check={**CHECK, "healthy_threshold": 0}), ["body", "health_check", "healthy_threshold"]),
        (
            vip(health_check={**CHECK, "unhealthy_threshold": 0}),
            ["body", "health_check", "unhealthy_threshold"],
        ),
        (vip(health_check={**CHECK, "type": "icmp"}), ["body", "health_check", "type"]),
        (vip(holdoff=-1), ["body", "holdoff"]),
        (vip(colour="red"), ["body", "colour"]),
        ({"name": "web"}, ["body", "address"]),
    ],
)
async def test_vip_validation_names_the_field(env: Env, payload: dict[str, Any], loc: list[Any]) -> None:
    response = await env.client.post("/v1/vips", json=payload)
    assert response.status_code == 422
    assert loc in locs(response)
    assert (await env.client.get("/v1/vips")).json() == []  # nothing was written


async def test_vip_conflicts_and_mismatches(env: Env) -> None:
    c = env.client
    assert (await c.post("/v1/vips", json=vip())).status_code == 201
    dup = await c.post("/v1/vips", json=vip())
    assert dup.status_code == 409 and locs(dup) == [["body", "name"]]
    renamed = await c.put("/v1/vips/web", json=vip(name="other"))
    assert renamed.status_code == 422 and locs(renamed) == [["body", "name"]]
    assert (await c.put("/v1/vips/nope", json=vip(name="nope"))).status_code == 404
    assert (await c.patch("/v1/vips/nope", json={"holdoff": 1})).status_code == 404
    bad_patch = await c.patch("/v1/vips/web", json={"address": "8.8.8.8"})
    assert bad_patch.status_code == 422 and locs(bad_patch) == [["body", "address"]]
    assert (await c.get("/v1/vips/web")).json()["address"] == "100.96.0.1"


async def test_malformed_and_wrongly_typed_bodies_are_4xx(env: Env) -> None:
    c = env.client
    raw = {"content-type": "application/json"}
    malformed = await c.post("/v1/vips", content=b"{nope", headers=raw)
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed JSON body"
    assert (await c.post("/v1/vips", json=[1, 2])).status_code == 422
    assert (await c.patch("/v1/vips/web", json="text")).status_code == 422
    nan = await c.post(
        "/v1/vips", content=b'{"name": "n", "address": "100.96.0.2", "holdoff": NaN}', headers=raw
    )
    assert nan.status_code == 422 and locs(nan) == [["body", "holdoff"]]
    assert (await c.request("TRACE", "/v1/vips")).status_code == 405
    assert (await c.get("/v1/nothing-here")).status_code == 404
    assert (await c.get("/v1/nothing-here")).json() == {"error": "Not Found", "detail": []}


# --- routes and policy sets ---------------------------------------------------------------------------


async def test_route_lifecycle_and_host_bits(env: Env) -> None:
    c = env.client
    bad = await c.post("/v1/routes", json={"name": "lan", "prefix": "192.168.1.1/24", "machines": ["node-a"]})
    assert bad.status_code == 422 and locs(bad) == [["body", "prefix"]]
    assert "did you mean 192.168.1.0/24" in bad.json()["detail"][0]["msg"]
    created = await c.post(
        "/v1/routes", json={"name": "lan", "prefix": "192.168.1.0/24", "machines": ["node-a"]}
    )
    assert created.status_code == 201 and created.json()["status"]["announced"] is False
    assert (await c.post("/v1/routes/lan", json={})).status_code == 405
    assert (await c.patch("/v1/routes/lan", json={"enabled": False})).json()["enabled"] is False
    assert [r["name"] for r in (await c.get("/v1/routes")).json()] == ["lan"]
    assert (await c.delete("/v1/routes/lan")).status_code == 204


POLICY = {
    "name": "prefer-local",
    "rules": [
        {
            "match": {"prefix_list": [{"prefix": "100.96.0.0/16", "le": 32}], "communities": ["65000:1"]},
            "actions": {"set_local_pref": 200, "as_prepend": {"asn": 65001, "count": 2}},
            "result": "accept",
        }
    ],
    "default": "reject",
}


async def test_policy_set_lifecycle_and_in_use(env: Env) -> None:
    c = env.client
    created = await c.post("/v1/policy-sets", json=POLICY)
    assert created.status_code == 201 and created.json()["rules"][0]["actions"]["set_local_pref"] == 200
    attach = await c.patch("/v1/machines/node-b", json={"export_policies": ["prefer-local"]})
    assert attach.status_code == 200 and attach.json()["settings"]["export_policies"] == ["prefer-local"]
    refused = await c.delete("/v1/policy-sets/prefer-local")
    assert refused.status_code == 409
    assert refused.json()["detail"] == [{"loc": [], "msg": "used by machine node-b export_policies"}]
    assert (await c.patch("/v1/machines/node-b", json={"export_policies": []})).status_code == 200
    assert (await c.delete("/v1/policy-sets/prefer-local")).status_code == 204


@pytest.mark.parametrize(
    ("rule", "loc"),
    [
        ({"match": {"as_path": "(65001"}}, ["body", "rules", 0, "match", "as_path"]),
        ({"match": {"communities": ["65000:99999"]}}, ["body", "rules", 0, "match", "communities", 0]),
        (
            {"match": {"prefix_list": [{"prefix": "10.0.0.1/8"}]}},
            ["body", "rules", 0, "match", "prefix_list", 0, "prefix"],
        ),
        ({"result": "maybe"}, ["body", "rules", 0, "result"]),
    ],
)
async def test_policy_set_validation(env: Env, rule: dict[str, Any], loc: list[Any]) -> None:
    response = await env.client.post("/v1/policy-sets", json={"name": "p", "rules": [rule]})
    assert response.status_code == 422 and loc in locs(response)


# --- machines and mesh --------------------------------------------------------------------------------


async def test_machines_list_and_show(env: Env) -> None:
    c = env.client
    await c.post("/v1/vips", json=vip(machines=["node-a"]))
    await c.post("/v1/vips", json=vip("db", address="100.96.0.2", machines=["node-a", "node-c"]))
    listed = (await c.get("/v1/machines")).json()
    assert [(m["name"], m["member"]["state"], m["vips"], m["settings"]["enabled"]) for m in listed] == [
        ("node-a", "alive", ["db", "web"], True),
        ("node-b", "suspect", [], True),
        ("node-c", "dead", ["db"], True),
    ]
    shown = (await c.get("/v1/machines/node-c")).json()
    assert shown["member"] == {"state": "dead", "incarnation": 5, "addr": "127.0.0.1:7002"}
    assert shown["version"] is None  # never written: implicit defaults
    assert [v["name"] for v in shown["vips"]] == ["db"] and "status" in shown["vips"][0]
    vips = (await c.get("/v1/machines/node-a/vips")).json()
    assert [v["name"] for v in vips] == ["db", "web"]
    assert (await c.get("/v1/machines/ghost")).status_code == 404
    assert (await c.get("/v1/machines/ghost/vips")).status_code == 404


async def test_machine_settings_writes(env: Env) -> None:
    c = env.client
    disabled = await c.patch("/v1/machines/node-a", json={"enabled": False})
    assert disabled.status_code == 200
    assert (
        disabled.json()["settings"]["enabled"] is False and disabled.json()["version"]["origin"] == "node-a"
    )
    unknown_policy = await c.put("/v1/machines/node-a", json={"name": "node-a", "import_policies": ["nope"]})
    assert unknown_policy.status_code == 422 and locs(unknown_policy) == [["body", "import_policies", 0]]
    assert (await c.put("/v1/machines/node-a", json={"name": "node-a"})).json()["settings"]["enabled"] is True
    assert (await c.patch("/v1/machines/ghost", json={"enabled": False})).status_code == 404
    renamed = await c.put("/v1/machines/node-a", json={"name": "node-b"})
    assert renamed.status_code == 422 and locs(renamed) == [["body", "name"]]


async def test_mesh_settings(env: Env) -> None:
    c = env.client
    mesh = (await c.get("/v1/mesh")).json()
    assert mesh["routable_cidrs"] == ["100.64.0.0/10", "fd00::/8"] and mesh["version"] is None
    await c.post("/v1/vips", json=vip())
    refused = await c.patch("/v1/mesh", json={"routable_cidrs": ["10.0.0.0/8"]})
    assert refused.status_code == 422 and locs(refused) == [["body", "routable_cidrs"]]
    bad = await c.put("/v1/mesh", json={"routable_cidrs": ["10.0.0.1/8"]})
    assert bad.status_code == 422 and locs(bad) == [["body", "routable_cidrs"]]
    widened = await c.put("/v1/mesh", json={"routable_cidrs": ["100.64.0.0/10", "10.0.0.0/8"]})
    assert widened.status_code == 200 and widened.json()["routable_cidrs"] == ["100.64.0.0/10", "10.0.0.0/8"]
    assert (await c.post("/v1/vips", json=vip("lan", address="10.1.2.3"))).status_code == 201
    assert (await c.delete("/v1/mesh")).status_code == 405


async def test_openapi_lists_every_endpoint(env: Env) -> None:
    paths = (await env.client.get("/openapi.json")).json()["paths"]
    for collection in ("vips", "routes", "policy-sets"):
        assert set(paths[f"/v1/{collection}"]) == {"get", "post"}
        assert set(paths[f"/v1/{collection}/{{name}}"]) == {"get", "put", "patch", "delete"}
    assert set(paths["/v1/machines/{name}"]) == {"get", "put", "patch"}
    assert set(paths["/v1/mesh"]) == {"get", "put", "patch"}
    assert {"/v1/machines", "/v1/machines/{name}/vips", "/v1/members", "/metrics"} <= set(paths)
    assert "/healthz" not in paths  # the unauthenticated probe is not part of the API


# --- bugs are clean 500s; inputs never are -----------------------------------------------------------


class BrokenStore:
    def __getattr__(self, name: str) -> Any:
        raise RuntimeError("store exploded")


async def test_a_bug_is_a_logged_clean_500(caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(fake_node(), token=TOKEN, store=lambda: BrokenStore(), clock=lambda: 1.0)  # type: ignore[arg-type, return-value]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as client:
        with caplog.at_level(logging.ERROR, "wiremesh.api"):
            response = await client.get("/v1/vips")
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal error (a bug; the agent's log has the details)",
        "detail": [],
    }
    assert "store exploded" in caplog.text and "GET /v1/vips" in caplog.text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "name",
        "address",
        "prefix",
        "machines",
        "enabled",
        "holdoff",
        "health_check",
        "rules",
        "default",
        "routable_cidrs",
        "import_policies",
        "export_policies",
        "type",
        "target",
        "interval",
        "timeout",
    ]
)
BODIES = st.dictionaries(FIELD_NAMES | st.text(max_size=8), JSON_VALUES, max_size=6) | JSON_VALUES
PATHS = st.sampled_from(
    [
        "/v1/vips",
        "/v1/vips/web",
        "/v1/routes",
        "/v1/routes/lan",
        "/v1/policy-sets",
        "/v1/policy-sets/p",
        "/v1/machines",
        "/v1/machines/node-a",
        "/v1/machines/node-a/vips",
        "/v1/mesh",
    ]
) | st.text(max_size=30).map(lambda s: "/v1/vips/" + s)
METHODS = st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"])


@dataclass
class SharedApp:
    """One app for every example (building one takes ~0.5 s, most of this test's time before), over a
    store that each example replaces, so no example sees another's objects."""

    node: FakeNode
    stores: list[ObjectStore]
    transport: httpx.ASGITransport

    def fresh(self) -> None:
        self.stores[0] = make_store(self.node)


@pytest.fixture
def shared_app() -> SharedApp:
    node = fake_node()
    stores = [make_store(node)]
    app = create_app(node, token=TOKEN, store=lambda: stores[0], clock=lambda: 1.0, wall_clock=lambda: WALL)
    return SharedApp(node, stores, httpx.ASGITransport(app=app))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(st.tuples(METHODS, PATHS, BODIES), min_size=1, max_size=6))
async def test_random_requests_never_500(shared_app: SharedApp, requests: list[tuple[str, str, Any]]) -> None:
    shared_app.fresh()
    transport = shared_app.transport
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as client:
        await client.post("/v1/vips", json=vip())
        for method, path, body in requests:
            try:
                response = await client.request(method, path, content=json.dumps(body))
            except httpx.InvalidURL:
                continue  # the client refused the URL; nothing reached the app
            assert response.status_code < 500, (method, path, body, response.text)
            if response.status_code >= 400:
                locs(response)  # the project's error shape
