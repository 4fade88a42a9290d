"""schemathesis against /openapi.json: no generated request gets a 500; errors keep the project's shape."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings

from agent.cluster.store import ObjectStore
from agent.http.app import create_app
from gossip.events import MemberInfo, MemberState
from tests.fakes import FakeNode

TOKEN = "schema-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def fake_node() -> FakeNode:
    members = [
        MemberInfo("node-a", ("127.0.0.1", 7000), 1, MemberState.ALIVE, 0.0, b""),
        MemberInfo("node-b", ("::1", 7001), 2, MemberState.DEAD, 0.0, b"\x01"),
    ]
    return FakeNode("node-a", members, {"traffic": {"datagrams_in": 1}})


def _app() -> Any:
    node = fake_node()
    store = ObjectStore("node-a", lambda: frozenset({"node-a", "node-b"}))
    # One app for the whole run, so generated writes pile up and later requests meet existing objects.
    return create_app(node, token=TOKEN, store=lambda: store, clock=lambda: 1.0, wall_clock=lambda: 1.7e9)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app(), headers=AUTH)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: Any) -> None:
    response = case.call(headers=AUTH)
    assert response.status_code < 500, (case.method, case.formatted_path, case.body, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error", "detail"}
