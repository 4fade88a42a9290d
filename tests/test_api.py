"""The HTTP API on a fake node (in-process ASGI and real hypercorn), log formats, and whole agents."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import socket
from datetime import datetime
from typing import Any

import httpx
import pytest
import trio

from agent.config.loader import load_config
from agent.http.app import create_app, serve_api
from agent.logs import JsonFormatter, TextFormatter, configure_logging
from agent.runner import AgentInfo, run_agent
from gossip.events import MemberInfo, MemberState
from labs.kit.wait import eventually
from tests.fakes import FakeNode


def fake_node() -> FakeNode:
    members = [
        MemberInfo("node-b", ("::1", 7001), 4, MemberState.SUSPECT, 90.0, b"\x00\xffmeta"),
        MemberInfo("node-a", ("127.0.0.1", 7000), 1, MemberState.ALIVE, 40.0, b""),
    ]
    return FakeNode("node-a", members, {"name": "node-a", "members": [{"name": "node-b"}], "health_score": 2})


TOKEN = "test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def asgi_client(node: FakeNode) -> httpx.AsyncClient:
    app = create_app(node, token=TOKEN, clock=lambda: 100.0, wall_clock=lambda: 1_700_000_000.0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent", headers=AUTH)


async def test_members_endpoint() -> None:
    async with asgi_client(fake_node()) as client:
        response = await client.get("/v1/members")
    assert response.status_code == 200
    assert response.json() == [
        {
            "name": "node-a",
            "addr": "127.0.0.1:7000",
            "state": "alive",
            "incarnation": 1,
            "since": "2023-11-14T22:12:20.000Z",  # wall clock minus the 60 s age
            "age_seconds": 60.0,
            "meta": "",
        },
        {
            "name": "node-b",
            "addr": "[::1]:7001",
            "state": "suspect",
            "incarnation": 4,
            "since": "2023-11-14T22:13:10.000Z",
            "age_seconds": 10.0,
            "meta": base64.b64encode(b"\x00\xffmeta").decode(),
        },
    ]


async def test_debug_and_health_endpoints() -> None:
    node = fake_node()
    async with asgi_client(node) as client:
        debug = await client.get("/debug/gossip")
        node.snap = {"changed": True}
        debug_again = await client.get("/debug/gossip")
        health = await client.get("/v1/health")
    assert debug.json() == {"name": "node-a", "members": [{"name": "node-b"}], "health_score": 2}
    assert debug_again.json() == {"changed": True}  # read per request, not cached
    assert health.json() == {"status": "ok", "name": "node-a"}


async def test_real_server_on_ephemeral_port_and_clean_shutdown() -> None:
    node = fake_node()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, create_app(node, token=TOKEN), "127.0.0.1:0")
        assert port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=AUTH) as client:
            members = (await client.get("/v1/members")).json()
            assert [m["name"] for m in members] == ["node-a", "node-b"]
            # Members' ages come from trio's clock, the one the real gossip core runs on.
            assert members[0]["age_seconds"] == pytest.approx(trio.current_time() - 40.0, abs=5)
            assert (await client.get("/debug/gossip")).json() == node.snap
            nursery.cancel_scope.cancel()
    with pytest.raises(httpx.ConnectError):  # cancellation really closed the listener
        async with httpx.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/v1/health")


def test_create_app_leaves_the_ui_templates_to_warm_up() -> None:
    """Start-up does not wait for the UI's templates (~0.3 s): create_app leaves them uncompiled, and
    its warm_up (run by the runner in a worker thread once the API is up) compiles every one."""
    app = create_app(fake_node(), token=TOKEN)
    env = app.state.warm_up.args[0]
    assert len(env.cache) == 0
    app.state.warm_up()
    assert len(env.cache) == len(env.list_templates()) > 0


async def test_taken_port_is_a_plain_error_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{port} for the HTTP API"):
            await serve_api(create_app(fake_node(), token=TOKEN), f"127.0.0.1:{port}")


def make_record(**extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(
        "wiremesh.gossip", logging.INFO, __file__, 1, "member %s %s", ("b", "join"), None
    )
    record.__dict__.update(extra)
    return record


def test_json_log_lines_carry_the_extras() -> None:
    line = JsonFormatter().format(
        make_record(event="join", member="b", incarnation=3, addr=("::1", 7946), key=None, custom=object)
    )
    entry = json.loads(line)
    assert (
        entry["level"] == "info" and entry["logger"] == "wiremesh.gossip" and entry["msg"] == "member b join"
    )
    assert (entry["event"], entry["member"], entry["incarnation"], entry["addr"]) == (
        "join",
        "b",
        3,
        "[::1]:7946",
    )
    assert "key" not in entry  # None extras are left out
    assert entry["custom"] == str(object)
    assert entry["time"].endswith("Z")
    assert datetime.fromisoformat(entry["time"]).utcoffset() is not None


def test_text_log_line_is_one_readable_line() -> None:
    line = TextFormatter().format(make_record(event="join", member="b c", incarnation=3))
    assert line.endswith(' INFO    wiremesh.gossip: member b join event=join member="b c" incarnation=3')
    assert "\n" not in line


@pytest.mark.usefixtures("restore_root_logger")
def test_configure_logging_json_end_to_end() -> None:
    first, stream = io.StringIO(), io.StringIO()
    configure_logging("text", "info", first)
    configure_logging("json", "debug", stream)  # replaces the first handler instead of adding a second
    log = logging.getLogger("wiremesh.gossip")
    log.debug(
        "member %s joined", "b", extra={"event": "join", "member": "b", "incarnation": 1, "addr": "h:1"}
    )
    log.warning("plain")
    assert first.getvalue() == ""
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["msg"] for e in entries] == ["member b joined", "plain"]
    assert entries[0] | {"time": None} == {
        "time": None,
        "level": "debug",
        "logger": "wiremesh.gossip",
        "msg": "member b joined",
        "event": "join",
        "member": "b",
        "incarnation": 1,
        "addr": "h:1",
    }


async def wait_for_states(port: int, want: dict[str, str], token: str) -> list[dict[str, Any]]:
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:

        async def members() -> list[dict[str, Any]] | None:
            found: list[dict[str, Any]] = (await client.get("/v1/members")).json()
            return found if {m["name"]: m["state"] for m in found} == want else None

        return await eventually(members, what=f"members {want}", timeout=30.0, poll=0.05)


async def test_two_agents_join_and_leave_on_sigterm(tmp_path: Any) -> None:
    keyring = tmp_path / "ring"
    keyring.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    base = {"bind": "127.0.0.1:0", "http_listen": "127.0.0.1:0", "keyring_file": str(keyring)}
    cfg_a = load_config(None, {**base, "name": "a", "state_dir": str(tmp_path / "a")})
    done_b = trio.Event()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            info_a: AgentInfo = await nursery.start(run_agent, cfg_a)
            assert info_a.advertise_addr == info_a.gossip_addr  # port 0 advertises the port actually bound
            seed = f"127.0.0.1:{info_a.gossip_addr[1]}"
            cfg_b = load_config(None, {**base, "name": "b", "join": [seed], "state_dir": str(tmp_path / "b")})

            async def run_b(*, task_status: trio.TaskStatus[AgentInfo]) -> None:
                await run_agent(cfg_b, task_status=task_status)
                done_b.set()

            info_b: AgentInfo = await nursery.start(run_b)
            token_a = (tmp_path / "a" / "api-token").read_text().strip()  # made by a on start
            members = await wait_for_states(info_a.api_port, {"a": "alive", "b": "alive"}, token_a)
            assert {m["name"]: m["addr"] for m in members} == {
                "a": f"127.0.0.1:{info_a.gossip_addr[1]}",
                "b": f"127.0.0.1:{info_b.gossip_addr[1]}",
            }
            # A signal goes to the most recently opened receiver: b's. It leaves gracefully and returns...
            os.kill(os.getpid(), signal.SIGTERM)
            await done_b.wait()
            # ...so a marks it "left" at once rather than suspecting it; the next signal reaches a.
            await wait_for_states(info_a.api_port, {"a": "alive", "b": "left"}, token_a)
            os.kill(os.getpid(), signal.SIGTERM)
    # Both returned (the nursery closed); each wrote only its API token (mode 0600), its object
    # database and the members it knew (gossip/snapshot.py) in its state dir, and closed the database
    # cleanly (no WAL left behind).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "ring"]
    for name in ("a", "b"):
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == [
            "api-token",
            "members.json",
            "objects.db",
        ]
        assert (tmp_path / name / "api-token").stat().st_mode & 0o777 == 0o600


async def test_the_agent_runs_with_the_configured_stream_limits(tmp_path: Any) -> None:
    """``[gossip.streams]`` reaches the transport the agent binds (seen in its own /metrics)."""
    conf = tmp_path / "agent.toml"
    conf.write_text(
        "insecure = true\nname = 'a'\nbind = '127.0.0.1:0'\nhttp_listen = '127.0.0.1:0'\n"
        f"state_dir = '{tmp_path / 'a'}'\n[gossip.streams]\nbuffer_budget = 1048576\n"
    )
    cfg = load_config(conf)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            info: AgentInfo = await nursery.start(run_agent, cfg)
            token = (tmp_path / "a" / "api-token").read_text().strip()
            headers = {"authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{info.api_port}", headers=headers) as c:
                text = (await c.get("/metrics")).text
                # The UI's templates are compiled after start-up, but a page asked for earlier renders.
                assert (await c.get("/ui/login")).status_code == 200
            nursery.cancel_scope.cancel()
    assert "wiremesh_gossip_stream_buffer_budget_bytes 1.048576e+06" in text, text[-2000:]
