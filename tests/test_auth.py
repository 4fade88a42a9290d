"""The API token file and the bearer-token check on every endpoint but /healthz."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from agent.cluster.store import ObjectStore
from agent.http.app import create_app
from agent.http.auth import TokenError, bearer_from_headers, load_or_create_token, read_token, token_matches
from tests.fakes import FakeNode

TOKEN = "auth-test-token"


def fake_node() -> FakeNode:
    return FakeNode("node-a")


def test_token_is_created_once_private_and_reused(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nested"
    first = load_or_create_token(state)
    path = state / "api-token"
    assert len(first) >= 43 and path.read_text() == first + "\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert state.stat().st_mode & 0o777 == 0o700
    assert load_or_create_token(state) == first  # a restart keeps the token
    assert sorted(p.name for p in state.iterdir()) == ["api-token"]  # no temporary file left behind
    other = tmp_path / "other"
    assert load_or_create_token(other) != first


def test_an_existing_token_wins_over_a_new_one(tmp_path: Path) -> None:
    (tmp_path / "api-token").write_text("  operator-chosen\n")
    os.chmod(tmp_path / "api-token", 0o600)
    assert load_or_create_token(tmp_path) == "operator-chosen"


@pytest.mark.parametrize("content", ["", "   \n", "two words\n", "bad\x00byte"])
def test_a_bad_token_file_is_an_error_naming_it(tmp_path: Path, content: str) -> None:
    (tmp_path / "api-token").write_text(content)
    with pytest.raises(TokenError, match="api-token: not a valid API token"):
        load_or_create_token(tmp_path)


def test_unusable_state_dir_is_a_token_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(TokenError, match="cannot create the API token"):
        load_or_create_token(blocker / "state")
    with pytest.raises(TokenError, match="no such token file"):
        read_token(tmp_path / "missing")


def test_header_parsing_and_compare() -> None:
    assert bearer_from_headers([(b"Authorization", b"Bearer abc")]) == "abc"
    assert bearer_from_headers([(b"authorization", b"bearer  abc ")]) == "abc"
    assert bearer_from_headers([(b"authorization", b"Basic abc")]) is None
    assert bearer_from_headers([(b"authorization", b"Bearer ")]) is None
    assert bearer_from_headers([]) is None
    assert token_matches("abc", "abc") and not token_matches("abd", "abc") and not token_matches("ab", "abc")
    assert not token_matches("\udcff", "abc")  # undecodable input is just wrong, not a crash


def client(**headers: str) -> httpx.AsyncClient:
    store = ObjectStore("node-a", lambda: frozenset({"node-a"}))
    app = create_app(fake_node(), token=TOKEN, store=lambda: store, clock=lambda: 1.0)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://agent", headers=headers)


PROTECTED = [
    ("GET", "/v1/health"),
    ("GET", "/v1/members"),
    ("GET", "/debug/gossip"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/vips"),
    ("POST", "/v1/vips"),
    ("DELETE", "/v1/vips/web"),
    ("PATCH", "/v1/mesh"),
    ("GET", "/v1/no-such-path"),  # unknown paths too: no hint which routes exist
    ("POST", "/healthz"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
async def test_missing_token_is_401(method: str, path: str) -> None:
    async with client() as c:
        response = await c.request(method, path, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["error"].startswith("missing bearer token: send 'Authorization: Bearer <token>'")
    assert body["detail"] == [{"loc": ["header", "Authorization"], "msg": body["error"]}]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("Bearer wrong", "invalid bearer token"),
        (f"Bearer {TOKEN}x", "invalid bearer token"),
        (f"Bearer {TOKEN[:-1]}", "invalid bearer token"),
        (f"Basic {TOKEN}", "missing bearer token"),
        (TOKEN, "missing bearer token"),
        ("Bearer", "missing bearer token"),
    ],
)
async def test_wrong_token_is_401(value: str, error: str) -> None:
    async with client(authorization=value) as c:
        response = await c.get("/v1/members")
    assert response.status_code == 401
    assert response.json()["error"].startswith(error)


async def test_right_token_passes_and_healthz_is_open() -> None:
    async with client(authorization=f"Bearer {TOKEN}") as c:
        assert (await c.get("/v1/health")).json() == {"status": "ok", "name": "node-a"}
        assert (await c.get("/v1/vips")).json() == []
    async with client() as c:
        open_probe = await c.get("/healthz")
        assert open_probe.status_code == 200 and open_probe.json() == {"status": "ok", "name": "node-a"}
        assert (await c.head("/healthz")).status_code == 405  # open, but only GET is a route
