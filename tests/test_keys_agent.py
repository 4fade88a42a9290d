"""Keyring rotation in the agent: the keyring file rewritten before the ring changes, the /v1/keys API
and its errors, the CLI's tables, and three real agents rotating under traffic."""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest

from agent.cli.keys import show
from agent.cli.main import main as cli_main
from agent.http.app import create_app
from agent.keyfile import HEADER, KeyFileStore, render_keyring
from gossip import KeyAnswer, Keyring, KeyringError, MemoryKeys, fingerprint, generate_key, parse_key
from labs.kit.localcluster import LocalCluster
from labs.kit.wait import eventually_blocking
from tests.fakes import FakeNode

OLD = b"\x01" * 32
NEW = b"\x02" * 32
TOKEN = "keys-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
FAST = {"probe_interval": 0.5, "probe_timeout": 0.25, "gossip_interval": 0.1, "suspicion_mult": 3}


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


# --- the keyring file ------------------------------------------------------------------------------


def _store(tmp_path: Path, *keys: bytes) -> tuple[KeyFileStore, Path]:
    path = tmp_path / "keyring"
    path.write_bytes(render_keyring(keys))
    path.chmod(0o600)
    return KeyFileStore(Keyring.from_file(path), path), path


async def test_each_change_is_on_disk_primary_first_and_0600(tmp_path: Path) -> None:
    store, path = _store(tmp_path, OLD)
    path.chmod(0o644)  # the rewrite does not keep a too-open mode
    assert await store.apply("install", NEW) == KeyAnswer(None, (fingerprint(OLD), fingerprint(NEW)))
    assert Keyring.from_file(path).keys == (OLD, NEW)
    assert await store.apply("use", NEW) == KeyAnswer(None, (fingerprint(NEW), fingerprint(OLD)))
    assert Keyring.from_file(path).keys == (NEW, OLD)
    assert await store.apply("remove", OLD) == KeyAnswer(None, (fingerprint(NEW),))
    assert path.read_text() == HEADER + b64(NEW) + "\n"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["keyring"]  # no temporary file left behind


async def test_a_failed_write_changes_neither_the_file_nor_the_ring(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_bytes(render_keyring([OLD]))
    ring = Keyring([OLD])

    def fail(target: Path, keys: Sequence[bytes]) -> None:
        raise OSError(28, "No space left on device")

    store = KeyFileStore(ring, path, write=fail)
    answer = await store.apply("install", NEW)
    assert (
        answer.error is not None
        and "No space left on device" in answer.error
        and "nothing changed" in answer.error
    )
    assert answer.keys == (fingerprint(OLD),)
    assert ring.keys == (OLD,) and Keyring.from_file(path).keys == (OLD,)


async def test_refusals_and_no_ops_do_not_touch_the_file(tmp_path: Path) -> None:
    store, path = _store(tmp_path, OLD, NEW)
    before = path.stat().st_mtime_ns, path.read_bytes()
    unknown = b"\x09" * 32
    assert (
        await store.apply("use", unknown)
    ).error == f"key {fingerprint(unknown)} is not installed; install it first"
    assert "is the primary key" in str((await store.apply("remove", OLD)).error)
    assert await store.apply("install", NEW) == KeyAnswer(None, (fingerprint(OLD), fingerprint(NEW)))
    assert await store.apply("remove", b"\x07" * 32) == KeyAnswer(None, (fingerprint(OLD), fingerprint(NEW)))
    assert (path.stat().st_mtime_ns, path.read_bytes()) == before
    assert KeyFileStore(None, None).check("list", b"") is not None  # insecure: no keyring to change


async def test_a_symlinked_keyring_file_is_rewritten_where_it_points(tmp_path: Path) -> None:
    store, target = _store(tmp_path, OLD)
    link = tmp_path / "link"
    link.symlink_to(target)
    store = KeyFileStore(Keyring([OLD]), link)
    await store.apply("install", NEW)
    assert link.is_symlink() and Keyring.from_file(target).keys == (OLD, NEW)


# --- the API ---------------------------------------------------------------------------------------


class Rotator:
    """The gossip node's ``rotate_keys`` over in-memory rings, one per member name."""

    def __init__(self, rings: Mapping[str, Keyring | None], here: str = "node-a") -> None:
        self.stores = {name: MemoryKeys(ring) for name, ring in rings.items()}
        self.here = here
        self.calls: list[str] = []

    async def rotate_keys(self, op: str, key: bytes) -> dict[str, KeyAnswer | None]:
        why = self.stores[self.here].check(op, key)
        if why is not None:
            raise KeyringError(why)
        self.calls.append(op)
        return {
            name: None if s.keyring is None else await s.apply(op, key) for name, s in self.stores.items()
        }


def _client(rotator: Rotator | None) -> httpx.AsyncClient:
    app = create_app(FakeNode("node-a"), token=TOKEN, keys=rotator)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent", headers=AUTH)


async def test_install_reports_every_member_and_counts_each_key() -> None:
    rings = {"node-a": Keyring([OLD]), "node-b": Keyring([OLD]), "node-c": None}
    async with _client(Rotator(rings)) as client:
        response = await client.post("/v1/keys/install", json={"key": b64(NEW)})
        assert response.status_code == 200
        view = response.json()
        assert (view["op"], view["key"], view["asked"], view["answered"], view["ok"]) == (
            "install", fingerprint(NEW), 3, 2, 2
        )  # fmt: skip
        assert view["keys"] == [
            {"fingerprint": fingerprint(OLD), "members": 2, "primary": 2},
            {"fingerprint": fingerprint(NEW), "members": 2, "primary": 0},
        ]
        assert [(m["name"], m["status"]) for m in view["members"]] == [
            ("node-a", "ok"), ("node-b", "ok"), ("node-c", "no answer")
        ]  # fmt: skip
        assert b64(NEW) not in response.text and b64(OLD) not in response.text
        listed = (await client.get("/v1/keys")).json()
        assert listed["op"] == "list" and listed["key"] is None and listed["ok"] == 2


async def test_bad_requests_are_one_clear_error_and_change_nothing() -> None:
    rings = {"node-a": Keyring([OLD]), "node-b": Keyring([OLD])}
    rotator = Rotator(rings)
    cases = [
        ("/v1/keys/install", "not base64!", 422, "key: not valid base64"),
        ("/v1/keys/install", b64(b"\x05" * 16), 422, "key: expected 32 bytes (AES-256), got 16"),
        ("/v1/keys/use", b64(NEW), 409, "is not installed"),
        ("/v1/keys/remove", b64(OLD), 409, "is the primary key"),
    ]
    async with _client(rotator) as client:
        for path, key, status, message in cases:
            response = await client.post(path, json={"key": key})
            assert response.status_code == status, (path, key)
            assert set(response.json()) == {"error", "detail"}
            assert message in response.text
            assert key not in response.text  # neither a key nor a malformed one is echoed back
        assert (await client.post("/v1/keys/install", json={"key": b64(NEW), "x": 1})).status_code == 422
    assert rotator.calls == []
    assert {name: ring.keys for name, ring in rings.items() if ring} == {"node-a": (OLD,), "node-b": (OLD,)}


async def test_keys_need_the_token_and_a_node() -> None:
    async with _client(Rotator({"node-a": Keyring([OLD])})) as client:
        assert (await client.get("/v1/keys", headers={"authorization": "Bearer wrong"})).status_code == 401
    async with _client(None) as client:
        response = await client.get("/v1/keys")
        assert response.status_code == 404 and set(response.json()) == {"error", "detail"}


# --- the CLI's tables ------------------------------------------------------------------------------


def test_cli_shows_counts_and_only_failing_members_for_list() -> None:
    view = {
        "op": "use", "key": "aaaaaaaaaaaa", "asked": 3, "answered": 2, "ok": 1,
        "keys": [{"fingerprint": "aaaaaaaaaaaa", "members": 2, "primary": 1},
                 {"fingerprint": "bbbbbbbbbbbb", "members": 1, "primary": 1}],
        "members": [
            {"name": "a", "status": "ok", "error": None, "primary": "aaaaaaaaaaaa", "keys": ["a", "b"]},
            {"name": "b", "status": "error", "error": "key aaaaaaaaaaaa is not installed",
             "primary": "bbbbbbbbbbbb", "keys": ["b"]},
            {"name": "c", "status": "no answer", "error": None, "primary": None, "keys": []},
        ],
    }  # fmt: skip
    out = io.StringIO()
    show(view, out)
    text = out.getvalue()
    assert text.splitlines()[0] == "use key aaaaaaaaaaaa: 1 of 3 members ok, 2 answered"
    assert "aaaaaaaaaaaa  2/2      1/2" in text
    assert "b       error: key aaaaaaaaaaaa is not installed" in text
    assert "c       no answer" in text


# --- three real agents -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _cli(cluster: LocalCluster, name: str, *args: str, stdin: str | None = None) -> Ran:
    """``wiremesh keys ...`` against agent ``name``, in this process: the agents are separate processes
    already, and a fresh interpreter per command would cost seconds of imports."""
    token_file = cluster.state_dir(name) / "api-token"
    argv = ["keys", *args, "--api", cluster.agents[name].api, "--token-file", str(token_file)]
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch.object(sys, "stdin", io.StringIO(stdin or "")),
    ):
        code = cli_main(argv)
    return Ran(code, out.getvalue(), err.getvalue())


def _answers(result: Ran) -> dict[str, str]:
    assert result.returncode == 0, result.stdout + result.stderr
    view: dict[str, Any] = json.loads(result.stdout)
    return {m["name"]: m["status"] for m in view["members"]}


@pytest.mark.integration
def test_three_agents_rotate_under_traffic_and_a_restart_keeps_the_new_key(tmp_path: Path) -> None:
    with LocalCluster(3, tmp_path / "agents", cluster="keys", gossip=FAST) as cluster:
        names = list(cluster.agents)
        cluster.start_all()
        cluster.wait_converged(timeout=60)
        cluster.read_events()
        old, new = cluster.key, generate_key()
        everyone = dict.fromkeys(names, "ok")

        # Traffic: objects created on one agent replicate to the others over gossip throughout.
        stop = threading.Event()
        sent: list[int] = []

        def traffic() -> None:
            with httpx.Client(
                base_url=cluster.seed.api, headers=cluster.api_headers(names[0]), timeout=5
            ) as http:
                for i in range(2000):
                    if stop.wait(0.05):
                        return
                    vip = {"name": f"t{i}", "address": str(ipaddress.IPv4Address("100.64.0.1") + i)}
                    try:
                        if http.post("/v1/vips", json=vip).status_code == 201:
                            sent.append(len(sent) + 1)
                    except httpx.HTTPError:
                        return

        thread = threading.Thread(target=traffic)
        thread.start()
        try:
            eventually_blocking(lambda: len(sent) >= 3, what="traffic flows", timeout=30)
            before = len(sent)
            assert _answers(_cli(cluster, names[1], "install", "-", "--json", stdin=new + "\n")) == everyone
            assert _answers(_cli(cluster, names[1], "use", new, "--json")) == everyone
            assert _answers(_cli(cluster, names[2], "remove", old, "--json")) == everyone
            listed = _cli(cluster, names[0], "list")
            assert listed.returncode == 0, listed.stderr
            assert f"{fingerprint(parse_key(new))}  3/3      3/3" in listed.stdout
            assert fingerprint(parse_key(old)) not in listed.stdout
        finally:
            stop.set()
            thread.join(timeout=10)

        assert len(sent) > before  # traffic flowed throughout

        assert [e for e in cluster.read_events() if e.event in ("suspect", "dead")] == []
        for name in names:
            path = cluster.keyring_file(name)
            assert Keyring.from_file(path).keys == (parse_key(new),)
            assert os.stat(path).st_mode & 0o777 == 0o600
            logs = cluster.agents[name].log.read_text()
            assert new not in logs and old not in logs
            assert fingerprint(parse_key(new)) in logs  # the changes are logged, by fingerprint
            snapshot = cluster.state_dir(name) / "members.json"
            assert not snapshot.exists() or new not in snapshot.read_text()
            debug = cluster.request(name, "GET", "/debug/gossip")
            assert new not in json.dumps(debug)

        # A restarted agent reads the rotated file: it rejoins a cluster that holds the new key only.
        victim = names[2]
        cluster.kill(victim, signal.SIGTERM)
        assert cluster.wait_exit(victim, timeout=15) == 0
        cluster.start(victim)

        # Meanwhile, refusals: clear, and nothing changed anywhere.
        refused = _cli(cluster, names[0], "use", generate_key())
        assert refused.returncode == 1, refused.stdout
        assert "is not installed" in refused.stderr and "nothing changed" in refused.stderr
        for key, message in (
            ("%%%", "not valid base64"),
            (b64(b"\x05" * 31), "expected 32 bytes"),
            (new, "primary"),
        ):
            response = httpx.post(
                cluster.seed.api + "/v1/keys/remove",
                json={"key": key},
                headers=cluster.api_headers(names[0]),
                timeout=10,
            )
            assert response.status_code in (409, 422) and message in response.text
        assert all(Keyring.from_file(cluster.keyring_file(n)).keys == (parse_key(new),) for n in names)

        cluster.wait_converged(timeout=60)
        view = cluster.request(victim, "GET", "/v1/keys")
        assert view["ok"] == 3 and view["keys"] == [
            {"fingerprint": fingerprint(parse_key(new)), "members": 3, "primary": 3}
        ]
