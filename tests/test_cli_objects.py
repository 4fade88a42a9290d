"""``wiremesh vip|route|policy|machine`` against a real API server (hypercorn on loopback, real store)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agent.cli import main as cli
from agent.cli.client import resolve_token
from agent.cluster.store import ObjectStore
from agent.http.app import create_app, serve_api
from gossip.events import MemberInfo, MemberState
from tests.fakes import FakeNode

REPO = Path(__file__).resolve().parent.parent
TOKEN = "cli-objects-token"


def fake_node() -> FakeNode:
    members = [
        MemberInfo("node-a", ("127.0.0.1", 7000), 1, MemberState.ALIVE, 0.0, b""),
        MemberInfo("node-b", ("127.0.0.1", 7001), 1, MemberState.ALIVE, 0.0, b""),
    ]
    return FakeNode("node-a", members)


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[str]]:
    """The --api and --token-file options for an agent API on an ephemeral loopback port."""
    token_file = tmp_path / "api-token"
    token_file.write_text(TOKEN + "\n")
    monkeypatch.delenv("WIREMESH_TOKEN", raising=False)
    monkeypatch.delenv("WIREMESH_TOKEN_FILE", raising=False)
    store = ObjectStore("node-a", lambda: frozenset({"node-a", "node-b"}))
    app = create_app(fake_node(), token=TOKEN, store=lambda: store)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, app, "127.0.0.1:0")
        yield ["--api", f"127.0.0.1:{port}", "--token-file", str(token_file)]
        nursery.cancel_scope.cancel()


async def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """In a thread: the CLI uses blocking httpx, and the server it talks to runs on this Trio loop."""
    code: int = await trio.to_thread.run_sync(cli.main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_vip_commands(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run(
        capsys,
        *[
            "vip",
            "create",
            "k8s-api",
            "--address",
            "100.96.0.10",
            "--machine",
            "node-a",
            "--machine",
            "node-b",
        ],
        *["--check-type", "tcp", "--check-target", ":6443", "--interval", "5", "--timeout", "1"],
        *["--healthy-threshold", "2", "--unhealthy-threshold", "3", *api],
    )
    assert (code, err) == (0, "")
    assert "health check" in out and "tcp :6443" in out
    assert [line.split() for line in out.splitlines()[-3:]] == [
        ["MACHINE", "HEALTH", "ANNOUNCING", "DECISION"],
        ["node-a", "unknown", "no", "unknown:", "no", "decision", "published", "yet"],  # no announcer here
        ["node-b", "unknown", "no", "unknown:", "no", "decision", "published", "yet"],
    ]

    code, out, _ = await run(capsys, "vip", "list", *api)
    header, row = out.splitlines()
    assert header.split() == ["NAME", "ADDRESS", "ENABLED", "ANNOUNCED", "HEALTH", "CHECK", "MACHINES"]
    assert row.split() == ["k8s-api", "100.96.0.10", "yes", "no", "tcp", ":6443", "node-a,node-b"]

    code, out, _ = await run(capsys, "vip", "update", "k8s-api", "--holdoff", "30", "--json", *api)
    updated = json.loads(out)
    assert code == 0 and updated["holdoff"] == 30.0 and updated["health_check"]["interval"] == 5.0

    code, out, _ = await run(capsys, "vip", "disable", "k8s-api", "--json", *api)
    assert code == 0 and json.loads(out)["enabled"] is False
    code, out, _ = await run(capsys, "vip", "show", "k8s-api", *api)
    words = " ".join(out.split())
    assert code == 0 and "enabled no announced no" in words and "holdoff 30.0s" in words
    code, out, _ = await run(capsys, "vip", "enable", "k8s-api", "--json", *api)
    assert json.loads(out)["enabled"] is True

    code, out, _ = await run(capsys, "vip", "list", "--json", *api)
    assert [v["name"] for v in json.loads(out)] == ["k8s-api"]
    code, out, _ = await run(capsys, "vip", "delete", "k8s-api", *api)
    assert (code, out) == (0, "deleted vip k8s-api\n")
    code, out, _ = await run(capsys, "vip", "list", *api)
    assert (code, out) == (0, "no vips\n")


async def test_vip_errors_print_the_field_paths(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = await run(
        capsys, "vip", "create", "web", "--address", "8.8.8.8", "--machine", "ghost", *api
    )
    assert code == 1 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("wiremesh: error: ") and lines[0].endswith("(HTTP 422)")
    assert lines[1].startswith("  address: 8.8.8.8 is outside every routable CIDR")
    assert lines[2].startswith("  machines.0: unknown machine 'ghost'")

    code, _, err = await run(
        capsys, "vip", "create", "web", "--address", "100.96.0.1", "--check-type", "tcp",
        "--check-target", ":80", "--interval", "1", "--timeout", "2", *api,
    )  # fmt: skip
    assert code == 1 and "  health_check.timeout: must be less than interval (1 s)" in err.splitlines()

    code, _, err = await run(capsys, "vip", "show", "nope", *api)
    assert (code, err) == (1, "wiremesh: error: no vip named 'nope' (HTTP 404)\n")
    code, _, err = await run(capsys, "vip", "update", "nope", *api)
    assert code == 1 and "nothing to update" in err


async def test_route_commands(api: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = await run(capsys, "route", "create", "lan", "--prefix", "192.168.1.1/24", *api)
    assert code == 1 and "  prefix: host bits set; did you mean 192.168.1.0/24?" in err.splitlines()
    code, _, _ = await run(
        capsys, "route", "create", "lan", "--prefix", "192.168.1.0/24", "--machine", "node-a", *api
    )
    assert code == 0
    code, out, _ = await run(capsys, "route", "list", *api)
    assert out.splitlines()[1].split() == ["lan", "192.168.1.0/24", "yes", "no", "node-a"]
    code, out, _ = await run(capsys, "route", "disable", "lan", "--json", *api)
    assert json.loads(out)["enabled"] is False
    assert (await run(capsys, "route", "delete", "lan", *api))[0] == 0


async def test_policy_and_machine_commands(
    api: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            [{"name": "pref", "match": {"communities": ["65000:1"]}, "actions": {"set_local_pref": 200}}]
        )
    )
    code, out, err = await run(
        capsys, "policy", "create", "prefer", "--file", str(rules), "--default", "accept", *api
    )
    assert (code, err) == (0, "")
    assert "default  accept" in out and "1. pref -> accept" in out and "actions set_local_pref: 200" in out
    code, out, _ = await run(capsys, "policy", "list", *api)
    assert out.splitlines()[1].split() == ["prefer", "1", "accept"]
    code, out, _ = await run(capsys, "policy", "update", "prefer", "--default", "reject", "--json", *api)
    assert json.loads(out)["default"] == "reject" and len(json.loads(out)["rules"]) == 1
    rules.write_text(json.dumps({"rules": []}))
    code, out, _ = await run(capsys, "policy", "update", "prefer", "--file", str(rules), "--json", *api)
    assert json.loads(out)["rules"] == [] and json.loads(out)["default"] == "reject"  # kept
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"match": {"as_path": "(("}}]}')
    code, _, err = await run(capsys, "policy", "create", "broken", "--file", str(bad), *api)
    assert code == 1 and "  rules.0.match.as_path: bad regex" in err

    code, out, _ = await run(capsys, "machine", "list", *api)
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["NAME", "STATE", "ENABLED"],
        ["node-a", "alive", "yes"],
        ["node-b", "alive", "yes"],
    ]
    code, out, _ = await run(capsys, "machine", "disable", "node-b", "--json", *api)
    assert json.loads(out)["settings"]["enabled"] is False
    code, out, _ = await run(capsys, "machine", "show", "node-b", *api)
    assert "enabled          no" in out and "state            alive" in out
    assert (await run(capsys, "machine", "enable", "node-b", *api))[0] == 0
    code, _, err = await run(capsys, "machine", "show", "ghost", *api)
    assert (code, err) == (1, "wiremesh: error: no machine named 'ghost' (HTTP 404)\n")

    # Attached to a machine, it cannot be deleted; detached, it can.
    assert (await run(capsys, "machine", "set", "node-b", "--export", "prefer", *api))[0] == 0
    code, _, err = await run(capsys, "policy", "delete", "prefer", *api)
    assert code == 1 and "(HTTP 409)" in err.splitlines()[0] and "node-b" in err
    assert (await run(capsys, "machine", "set", "node-b", "--clear-export", *api))[0] == 0
    assert (await run(capsys, "policy", "delete", "prefer", *api))[:2] == (0, "deleted policy set prefer\n")


async def test_machine_set_attaches_policy_sets(
    api: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text("[]")
    for name in ("in-a", "in-b", "out"):
        assert (await run(capsys, "policy", "create", name, "--file", str(rules), *api))[0] == 0
    code, out, err = await run(
        capsys, "machine", "set", "node-a", "--import", "in-b", "--import", "in-a", "--export", "out", *api
    )
    assert (code, err) == (0, "")
    assert "import policies  in-b, in-a" in out and "export policies  out" in out  # in the order given
    code, out, _ = await run(capsys, "machine", "list", *api)
    assert out.splitlines()[1].split() == ["node-a", "alive", "yes", "in-b,in-a", "out"]

    # Only the lists given change: a merge patch.
    code, out, _ = await run(capsys, "machine", "set", "node-a", "--import", "in-a", "--json", *api)
    settings = json.loads(out)["settings"]
    assert code == 0 and (settings["import_policies"], settings["export_policies"]) == (["in-a"], ["out"])
    code, out, _ = await run(capsys, "machine", "set", "node-a", "--clear-import", "--json", *api)
    settings = json.loads(out)["settings"]
    assert (settings["import_policies"], settings["export_policies"]) == ([], ["out"])
    assert settings["enabled"] is True

    code, out, err = await run(capsys, "machine", "set", "node-a", "--import", "ghost", *api)
    assert (code, out) == (1, "")
    assert err.splitlines()[0].endswith("(HTTP 422)")
    assert err.splitlines()[1].startswith("  import_policies.0: ") and "ghost" in err.splitlines()[1]
    code, _, err = await run(capsys, "machine", "set", "ghost", "--export", "out", *api)
    assert (code, err) == (1, "wiremesh: error: no machine named 'ghost' (HTTP 404)\n")
    code, _, err = await run(capsys, "machine", "set", "node-a", *api)
    assert code == 1 and "nothing to set" in err
    with pytest.raises(SystemExit) as usage:  # contradictory flags are a usage error, like argparse's own
        await run(capsys, "machine", "set", "node-a", "--import", "in-a", "--clear-import", *api)
    assert usage.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


async def test_token_errors(api: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = api[:2]
    wrong = tmp_path / "wrong"
    wrong.write_text("not-it\n")
    code, _, err = await run(capsys, "vip", "list", *url, "--token-file", str(wrong))
    assert (code, err) == (
        1,
        f"wiremesh: error: invalid bearer token (the token is from {wrong}) (HTTP 401)\n",
    )
    code, _, err = await run(capsys, "members", *url, "--token-file", str(tmp_path / "missing"))
    assert code == 1
    assert err.startswith("wiremesh: error: missing bearer token: send 'Authorization: Bearer <token>'")
    assert f"{tmp_path / 'missing'}: no such token file; pass --token-file or set $WIREMESH_TOKEN" in err


def test_token_sources_in_order(tmp_path: Path) -> None:
    file_a, file_b = tmp_path / "a", tmp_path / "b"
    file_a.write_text("from-flag\n")
    file_b.write_text("from-env-file\n")
    env = {"WIREMESH_TOKEN": "from-env", "WIREMESH_TOKEN_FILE": str(file_b)}
    assert resolve_token(str(file_a), env) == ("from-flag", str(file_a))
    assert resolve_token(None, env) == ("from-env", "$WIREMESH_TOKEN")
    assert resolve_token(None, {"WIREMESH_TOKEN_FILE": str(file_b)}) == ("from-env-file", str(file_b))
    token, why = resolve_token(None, {})
    assert token is None and why.startswith("/var/lib/wiremesh/api-token")


async def test_as_a_real_process(api: list[str]) -> None:
    await trio.to_thread.run_sync(
        cli.main, ["vip", "create", "web", "--address", "100.96.0.1", "--disabled", "--json", *api]
    )
    proc = await trio.run_process(
        [sys.executable, "-m", "agent", "vip", "list", "--json", *api],
        capture_stdout=True,
        capture_stderr=True,
        env={"PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert [(v["name"], v["enabled"]) for v in json.loads(proc.stdout)] == [("web", False)]
    proc = await trio.run_process(
        [sys.executable, "-m", "agent", "vip", "delete", "nope", *api],
        capture_stdout=True,
        capture_stderr=True,
        env={"PYTHONPATH": str(REPO)},
        check=False,
    )
    assert proc.returncode == 1 and proc.stderr == b"wiremesh: error: no vip named 'nope' (HTTP 404)\n"
