"""``wiremesh health`` and the per-machine decisions of ``vip show`` / ``route show``, against a real API
server (hypercorn on loopback) whose status provider is a real Announcer over the scenario of
tests/test_api_health.py."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
import trio

from agent.announce.planner import Reason
from agent.cli import main as cli
from agent.cli.announce import decision_summary
from agent.cli.output import ERROR_WIDTH
from agent.http.app import create_app, serve_api
from tests.test_api_health import HOLD_LEFT, TOKEN, WALL, build_scenario


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """--api and --token-file for the scenario's agent. The wall clock stands still at WALL; the Trio
    clock runs, so a hold's end moves (a few ms per test) against it: HOLD_LEFT ends on a half second."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("WIREMESH_TOKEN", raising=False)
    monkeypatch.delenv("WIREMESH_TOKEN_FILE", raising=False)
    s = build_scenario()
    app = create_app(
        s.gossip, token=TOKEN, store=lambda: s.store, status=s.announcer, wall_clock=lambda: WALL
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, app, "127.0.0.1:0")
        yield ["--api", f"127.0.0.1:{port}", "--token-file", str(token_file)]
        nursery.cancel_scope.cancel()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """In a thread: the CLI uses blocking httpx, and the server it talks to runs on this Trio loop."""
    code: int = await trio.to_thread.run_sync(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def local_hms(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).strftime("%H:%M:%S")


# --- wiremesh health ---------------------------------------------------------------------------------


async def test_health_table(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run(capsys, "health", *api)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "MACHINE",
        "OBJECT",
        "STATE",
        "FOR",
        "CONSECUTIVE",
        "LATENCY",
        "LAST",
        "ERROR",
    ]
    assert lines[1].split() == ["node-a", "vip/web", "healthy", "1m40s", "7", "passed", "2.1ms"]
    b_row = lines[2].split(maxsplit=7)
    assert b_row[:7] == ["node-b", "vip/web", "unhealthy", "5s", "3", "failed", "1000.0ms"]
    assert len(b_row[7]) == ERROR_WIDTH and b_row[7].startswith("connect: connection refused xxx")
    assert b_row[7].endswith("...")  # cut: --json has it whole
    assert lines[3].split() == [
        "node-c",
        "vip/web",
        "unhealthy",
        "8s",
        "4",
        "failed",
        "500.0ms",
        "timed",
        "out",
    ]
    assert lines[4].split() == ["node-f", "(dead)", "vip/web", "healthy", "8m20s", "9", "passed", "3.0ms"]
    assert len(lines) == 5
    # Aligned: the STATE column starts at the same offset on every line.
    offset = lines[0].index("STATE")
    assert all(line[offset - 2 : offset] == "  " and line[offset] != " " for line in lines)


async def test_health_filters_and_json(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run(capsys, "health", "--machine", "node-b", *api)
    assert code == 0 and [line.split()[:2] for line in out.splitlines()[1:]] == [["node-b", "vip/web"]]
    code, out, _ = await run(capsys, "health", "--object", "vip/web", "--machine", "node-c", "--json", *api)
    rows = json.loads(out)
    assert code == 0 and [(r["machine"], r["object"], r["consecutive"]) for r in rows] == [
        ("node-c", "vip/web", 4)
    ]
    assert rows[0]["last_error"] == "timed out" and rows[0]["for_seconds"] == 8.0
    code, out, _ = await run(capsys, "health", "--json", *api)
    assert code == 0 and [r["machine"] for r in json.loads(out)] == ["node-a", "node-b", "node-c", "node-f"]
    code, out, _ = await run(capsys, "health", "--machine", "node-e", *api)
    assert (code, out) == (0, "no health check verdicts\n")


async def test_health_errors(api: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = await run(capsys, "health", "--object", "web", *api)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "wiremesh: error: invalid request (HTTP 422)",
        "  object: expected vip/NAME or route/NAME, got 'web'",
    ]
    code, _, err = await run(capsys, "health", "--machine", "ghost", *api)
    assert code == 1 and err.splitlines() == [
        "wiremesh: error: no machine named 'ghost' (HTTP 404)",
        "  machine: no machine named 'ghost'",
    ]
    code, _, err = await run(capsys, "health", "--object", "vip/nope", *api)
    assert code == 1 and err.splitlines()[1] == "  object: no vip named 'nope'"
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    code, _, err = await run(capsys, "health", *api[:2], "--token-file", str(wrong))
    assert (code, err) == (
        1,
        f"wiremesh: error: invalid bearer token (the token is from {wrong}) (HTTP 401)\n",
    )


# --- vip show / route show ---------------------------------------------------------------------------


async def test_vip_show_explains_each_machines_decision(
    api: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await run(capsys, "vip", "show", "web", *api)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("MACHINE")))
    header, *rows = lines[start:]
    assert header.split() == ["MACHINE", "HEALTH", "ANNOUNCING", "DECISION"]
    decision_at = header.index("DECISION")
    table = {row.split()[0]: (row[:decision_at].split()[1:], row[decision_at:]) for row in rows}
    assert table == {
        "node-a": (["healthy", "for", "1m40s", "yes"], "announcing: healthy"),
        "node-b": (
            ["unhealthy", "for", "5s", "yes"],
            f"held until {local_hms(WALL + HOLD_LEFT)} (no healthy peer)",
        ),
        "node-c": (["unhealthy", "for", "8s", "no"], "withdrawn: node-a is healthy"),
        "node-d": (["unknown", "no"], "withdrawn: machine disabled"),
        "node-e": (["unknown", "no"], "withdrawn: not assigned"),
        "node-f": (["healthy", "for", "8m20s", "(dead)", "no"], "unknown: machine dead"),
    }
    assert "announced yes (node-a,node-b)" in [" ".join(line.split()) for line in lines]


async def test_vip_show_lists_an_unassigned_machine_that_announces(
    api: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = await run(capsys, "vip", "show", "api", *api)
    rows = out.splitlines()[-2:]
    assert code == 0
    assert rows[0].split() == ["node-b", "unknown", "no", "unknown:", "no", "decision", "published", "yet"]
    assert rows[1].split() == [
        "node-c",
        "(not",
        "assigned)",
        "unknown",
        "yes",
        "announcing:",
        "no",
        "health",
        "check",
    ]


async def test_route_show_and_json(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = await run(capsys, "route", "show", "lan", *api)
    assert code == 0 and out.splitlines()[-1].split() == [
        "node-a",
        "unknown",
        "yes",
        "announcing:",
        "no",
        "health",
        "check",
    ]
    code, out, _ = await run(capsys, "vip", "show", "web", "--json", *api)
    machines = {m["name"]: m for m in json.loads(out)["status"]["machines"]}
    assert machines["node-c"]["decision"]["explanation"].startswith("withdrawn: the health check fails here")
    assert machines["node-b"]["decision"]["held_until"].endswith("Z")


def test_every_reason_has_a_phrase() -> None:
    """A reason the planner gains must get its own words here, not fall through to the raw value."""
    for reason in Reason:
        text = decision_summary({"decision": {"reason": reason.value, "explanation": "FALLBACK"}})
        assert text not in ("FALLBACK", reason.value), reason
    assert decision_summary({"decision": {"reason": "withdrawn_disabled"}}) == "withdrawn: disabled"
    assert (
        decision_summary({"decision": {"reason": "withdrawn_peer_healthy", "peers": ["vip-b", "vip-c"]}})
        == "withdrawn: vip-b, vip-c are healthy"
    )
    # From a newer agent: the API's own sentence, else the reason as is.
    assert decision_summary({"decision": {"reason": "later", "explanation": "why"}}) == "why"
    assert decision_summary({"decision": {"reason": "later"}}) == "later"
    assert decision_summary({"member": None}) == "unknown: machine never seen"
