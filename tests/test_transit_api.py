"""``GET /v1/peers``, ``wiremesh peers`` and the reachability vectors in ``/debug/gossip``, with a fake
transit driver (the real one runs in tests/test_transit_netns.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from agent.cli import main as cli
from agent.cli.peers import format_bytes, peers_table
from agent.http.app import create_app, serve_api
from gossip.events import MemberInfo, MemberState
from tests.fakes import FakeNode
from transit.reachability import DIRECT, REACH, REACH_KEY, UNREACHABLE, PeerReach, ReachRoute, ReachVector
from transit.report import PeerReport, TransitReport, path_text

TOKEN = "peers-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WALL = 1_700_000_000.0


def peer(name: str, path: str, relay: str | None = None, **kw: Any) -> PeerReport:
    base: dict[str, Any] = {
        "name": name,
        "public_key": "k" * 43 + "=",
        "mesh_address": "100.64.0.2",
        "holds_address": True,
        "member": "alive",
        "endpoint": "198.18.0.2:51820",
        "path": path,
        "relay": relay,
        "reason": "direct path down; best relay, 4 ms",
        "since": WALL - 75,
        "direct": "down",
        "direct_reason": "no reply for 3.5 s (12 probes lost)",
        "rtt_ms": 4.0,
        "direct_rtt_ms": None,
        "loss": 0.35,
        "last_handshake": WALL - 130,
        "rx_bytes": 3 * 1024 * 1024,
        "tx_bytes": 1500,
    }
    base.update(kw)
    return PeerReport(**base)


REPORT = TransitReport(
    name="a",
    interface="wmesh0",
    backend="userspace (wireguard-go)",
    public_key="p" * 43 + "=",
    mesh_address="100.64.0.1",
    holds_address=True,
    probe_address="fd77:6d65:7368::1",
    listen_port=51820,
    endpoints=("198.18.0.1:51820",),
    errors=("mesh address 100.64.0.1 is also claimed by x; a keeps it",),
    peers=(
        peer("b", "transit via c", "c"),
        peer("c", "direct", mesh_address="100.64.0.3", direct="up", rtt_ms=0.8, direct_rtt_ms=0.8, loss=0.0),
        peer(
            "x",
            "unreachable",
            mesh_address="100.64.0.1",
            holds_address=False,
            member="dead",
            rtt_ms=None,
            last_handshake=None,
        ),
    ),
)


class FakeTransit:
    def report(self) -> TransitReport:
        return REPORT


def fake_node() -> FakeNode:
    vector = ReachVector({"a": PeerReach(False, 0, ReachRoute.via("c")), "c": PeerReach(True, 2)})
    members = [
        MemberInfo("a", ("198.18.0.1", 7946), 1, MemberState.ALIVE, 0.0, b""),
        MemberInfo(
            "b",
            ("198.18.0.2", 7946),
            1,
            MemberState.ALIVE,
            0.0,
            b"",
            {REACH_KEY: (3, REACH.encode(vector))},
        ),
        MemberInfo("x", ("198.18.0.9", 7946), 1, MemberState.ALIVE, 0.0, b"", {REACH_KEY: (1, b"\x01junk")}),
    ]
    return FakeNode("a", members, {"members": [{"name": m.name, "kv": {}} for m in members]})


def app(with_transit: bool = True) -> Any:
    return create_app(
        fake_node(),
        token=TOKEN,
        peers=FakeTransit() if with_transit else None,
        clock=lambda: 1.0,
        wall_clock=lambda: WALL,
    )


async def get(path: str, with_transit: bool = True) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(with_transit))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as client:
        return await client.get(path)


async def test_peers_endpoint() -> None:
    response = await get("/v1/peers")
    assert response.status_code == 200
    view = response.json()
    assert (view["name"], view["mesh_address"], view["listen_port"]) == ("a", "100.64.0.1", 51820)
    assert view["errors"] == list(REPORT.errors)
    b, c, x = view["peers"]
    assert (b["path"], b["relay"], b["rtt_ms"], b["loss"]) == ("transit via c", "c", 4.0, 0.35)
    assert b["since"] == "2023-11-14T22:12:05.000Z" and b["for_seconds"] == 75.0
    assert b["last_handshake"] == "2023-11-14T22:11:10.000Z" and b["handshake_age_seconds"] == 130.0
    assert (c["path"], c["direct"], c["direct_rtt_ms"]) == ("direct", "up", 0.8)
    assert (x["path"], x["holds_address"], x["last_handshake"], x["handshake_age_seconds"]) == (
        "unreachable",
        False,
        None,
        None,
    )


async def test_peers_without_wireguard_is_a_404_that_says_why() -> None:
    response = await get("/v1/peers", with_transit=False)
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"error", "detail"} and "WireGuard is not enabled" in body["error"]


async def test_gossip_debug_shows_each_members_reachability_vector() -> None:
    members = {m["name"]: m for m in (await get("/debug/gossip")).json()["members"]}
    assert "reachability" not in members["a"]  # publishes none
    assert members["b"]["reachability"] == {
        "a": {"direct": "down", "rtt_ms": 0, "route": "via c"},
        "c": {"direct": "up", "rtt_ms": 2, "route": "direct"},
    }
    assert "error" in members["x"]["reachability"]


def test_path_text() -> None:
    assert [path_text(r) for r in (ReachRoute.via("c"), DIRECT, UNREACHABLE)] == [
        "transit via c",
        "direct",
        "unreachable",
    ]


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 3 * 1024 * 1024, 5 * 1024**5)] == [
        "0B",
        "1023B",
        "1.0KiB",
        "3.0MiB",
        "5120.0TiB",
    ]


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("WIREMESH_TOKEN", raising=False)
    monkeypatch.delenv("WIREMESH_TOKEN_FILE", raising=False)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, app(), "127.0.0.1:0")
        yield ["--api", f"127.0.0.1:{port}", "--token-file", str(token_file)]
        nursery.cancel_scope.cancel()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code: int = await trio.to_thread.run_sync(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_cli_peers_table_and_json(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run(capsys, "peers", *api)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("a: 100.64.0.1 on wmesh0")
    assert lines[1].split() == [
        "PEER", "MESH", "ADDRESS", "ENDPOINT", "PATH", "RTT", "LOSS", "HANDSHAKE", "RX", "TX", "SINCE"
    ]  # fmt: skip
    row_b = lines[2]
    for cell in ("b", "100.64.0.2", "198.18.0.2:51820", "transit via c", "4.0ms", "35%", "2m10s ago"):
        assert cell in row_b
    assert "3.0MiB" in row_b and "1.5KiB" in row_b and row_b.rstrip().endswith("1m15s")
    assert lines[3].startswith("c ") and "direct" in lines[3] and "0.8ms" in lines[3]
    assert lines[4].startswith("x (dead)") and "(held by another)" in lines[4] and "never" in lines[4]
    assert lines[5] == f"error: {REPORT.errors[0]}"

    code, out, _ = await run(capsys, "peers", "--json", *api)
    assert code == 0 and '"path": "transit via c"' in out


def test_peers_table_with_no_rows_is_just_the_header() -> None:
    assert peers_table([]).split() == [
        "PEER", "MESH", "ADDRESS", "ENDPOINT", "PATH", "RTT", "LOSS", "HANDSHAKE", "RX", "TX", "SINCE"
    ]  # fmt: skip
