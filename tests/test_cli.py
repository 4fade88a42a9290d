"""The ``wiremesh`` command: keygen, config errors (in-process and as a real process), and the API clients."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from agent.cli import main as cli
from agent.http.app import create_app, serve_api
from gossip.events import MemberInfo, MemberState
from gossip.keyring import KEY_SIZE, parse_key
from tests.fakes import FakeNode

REPO = Path(__file__).resolve().parent.parent
BAD_CONFIG = "name = 'a'\ninsecure = true\nbind = '127.0.0.1:7946'\n[gossip]\nprobe_timeout = 5.0\n"


def test_keygen_prints_a_usable_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["keygen"]) == 0
    assert cli.main(["keygen"]) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert len(parse_key(first)) == len(base64.b64decode(first)) == KEY_SIZE
    assert first != second


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG)
    assert cli.main(["agent", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    problem = "probe_timeout must be shorter than probe_interval"
    assert err == f"wiremesh: error: {path}: gossip.probe_timeout: {problem}\n"


def test_bad_flag_value_names_the_flag(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "--insecure", "--bind", "127.0.0.1:70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wiremesh: error: command line: --bind: bad address '127.0.0.1:70000'")
    assert err.count("\n") == 1


def test_bad_keyring_file_is_a_config_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ring").write_text("short\n")
    assert cli.main(["agent", "--bind", "127.0.0.1:0", "--keyring", str(tmp_path / "ring")]) == 2
    assert (
        capsys.readouterr().err == f"wiremesh: error: keyring_file: {tmp_path / 'ring'}:1: not valid base64\n"
    )


def test_bad_config_as_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD_CONFIG)
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "agent", "--config", "bad.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "wiremesh: error: bad.toml: gossip.probe_timeout: probe_timeout must be shorter than probe_interval"
    ]


@pytest.mark.usefixtures("restore_root_logger")
def test_taken_http_port_exits_1_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["agent", "--insecure", "--bind", "127.0.0.1:0", "--http", f"127.0.0.1:{port}"]
        code = cli.main([*argv, "--state-dir", str(tmp_path)])
    assert code == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert (
        last == f"wiremesh: error: cannot listen on 127.0.0.1:{port} for the HTTP API: Address already in use"
    )


def fake_node() -> FakeNode:
    def members() -> list[MemberInfo]:
        now = trio.current_time()
        return [
            MemberInfo("alpha-long-name", ("127.0.0.1", 7946), 12, MemberState.ALIVE, now - 3725, b""),
            MemberInfo("b", ("::1", 7000), 0, MemberState.DEAD, now - 5, b""),
        ]

    return FakeNode("a", snap={"name": "a", "incarnation": 12, "members": []}, members_at=members)


TOKEN = "cli-test-token"


@pytest.fixture
async def api_url(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("WIREMESH_TOKEN", TOKEN)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_api, create_app(fake_node(), token=TOKEN), "127.0.0.1:0")
        yield f"http://127.0.0.1:{port}"
        nursery.cancel_scope.cancel()


async def run_cli(*argv: str) -> int:
    """In a thread: the CLI uses blocking httpx, and the server it talks to runs on this Trio loop."""
    code: int = await trio.to_thread.run_sync(cli.main, list(argv))
    return code


async def test_members_table(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("members", "--api", api_url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "STATE", "INCARNATION", "SINCE"]
    assert lines[1].split() == ["alpha-long-name", "127.0.0.1:7946", "alive", "12", "1h2m"]
    assert lines[2].split() == ["b", "[::1]:7000", "dead", "0", "5s"]
    # Aligned: every column starts at the same offset on every line.
    for column in ("ADDRESS", "STATE", "INCARNATION", "SINCE"):
        offset = lines[0].index(column)
        assert all(line[offset - 2 : offset] == "  " and line[offset] != " " for line in lines)


async def test_members_json_and_env_default(
    api_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WIREMESH_API", api_url.removeprefix("http://"))  # host:port is accepted too
    assert await run_cli("members", "--json") == 0
    members = json.loads(capsys.readouterr().out)
    assert [(m["name"], m["addr"], m["state"]) for m in members] == [
        ("alpha-long-name", "127.0.0.1:7946", "alive"),
        ("b", "[::1]:7000", "dead"),
    ]


async def test_debug_gossip(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run_cli("debug", "gossip", "--api", api_url) == 0
    assert json.loads(capsys.readouterr().out) == fake_node().snapshot()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("argv", [["members"], ["debug", "gossip"]])
def test_unreachable_agent_exits_1(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main([*argv, "--api", url]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"wiremesh: error: cannot reach the agent at {url} (")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.9, "59s"), (60, "1m"), (61, "1m1s"), (3725, "1h2m"), (90000, "1d1h")]
)
def test_format_age(seconds: float, text: str) -> None:
    assert cli.format_age(seconds) == text


def test_tombstone_keep_flag_is_validated_like_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["agent", "--insecure", "--name", "a", "--tombstone-keep", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tombstone-keep" in err[0]


def test_every_config_problem_is_a_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG + "gossip_nods = 4\n[wireguard]\nlisten_port = 0\n")
    assert cli.main(["agent", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert sorted(err.splitlines()) == [
        f"wiremesh: error: {path}: gossip.gossip_nods: unknown key (did you mean 'gossip.gossip_nodes'?)",
        f"wiremesh: error: {path}: wireguard.listen_port: out of range: 0 (must be 1-65535)",
    ]


def test_lab_runs_the_scenario_as_its_own_process(capfd: pytest.CaptureFixture[str]) -> None:
    """From a checkout: the scenario runs as ``python -m labs.NAME`` with our remaining arguments, and
    the CLI never imports it (the labs are not part of the package)."""
    before = set(sys.modules)
    assert cli.main(["lab", "holdoff", "--help"]) == 0
    assert "usage: python -m labs.holdoff" in capfd.readouterr().out
    assert cli.main(["lab", "holdoff", "--no-such-option"]) == 2  # the scenario's own parser said no
    assert "unrecognized arguments: --no-such-option" in capfd.readouterr().err
    assert not {m for m in set(sys.modules) - before if m == "labs" or m.startswith("labs.")}


def test_lab_without_the_source_tree_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert cli.main(["lab", "demo"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("wiremesh: error: the labs ship with the source tree") and err.count("\n") == 1
