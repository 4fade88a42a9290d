"""Bearer-token auth for the HTTP API: the token file, and the ASGI middleware that checks it.

The agent makes one random token in its state dir on first start and keeps it across restarts, so a
CLI on the same machine (or anyone the operator gives the file to) can call the API; the file is the
only place the token lives, mode 0600. It is created under a temporary name and hard-linked into
place, so a crash never leaves a half-written token and two agents starting at once on the same state
dir end up with the same token instead of one overwriting the other's.

The check is ASGI middleware rather than a FastAPI dependency so that it covers every path, unknown
ones included: an unauthenticated caller learns nothing, not even which routes exist. Only
``GET /healthz`` is open, for liveness probes, plus what the app adds to ``open_paths``: the web UI's
login page and static assets, whose session cookie stands in for the token on the UI's own paths only
(:mod:`agent.http.ui.session`, a middleware around this one; the token is still compared here).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_FILE_NAME = "api-token"
TOKEN_ENV = "WIREMESH_TOKEN"
TOKEN_FILE_ENV = "WIREMESH_TOKEN_FILE"
OPEN_PATHS = frozenset({("GET", "/healthz"), ("HEAD", "/healthz")})

log = logging.getLogger("wiremesh.api")


class TokenError(OSError):
    """The token file cannot be used; the message says which file and why. An OSError, so the agent's
    startup reports it like any other file it cannot use."""


def token_path(state_dir: Path) -> Path:
    return state_dir / TOKEN_FILE_NAME


def read_token(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace ignored), or TokenError naming the file."""
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise TokenError(f"{path}: no such token file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokenError(
            f"{path}: cannot read the API token ({getattr(exc, 'strerror', None) or exc})"
        ) from None
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise TokenError(f"{path}: not a valid API token (empty or has spaces or control characters)")
    return token


def load_or_create_token(state_dir: Path) -> str:
    """The agent's API token: read from ``<state_dir>/api-token``, or made there (mode 0600) if missing."""
    path = token_path(state_dir)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):  # no token yet (creating it says what is wrong)
        mode = None
    except OSError as exc:
        raise TokenError(f"{path}: cannot read the API token ({exc.strerror or exc})") from None
    if mode is not None:
        if mode & 0o077:
            log.warning("API token file %s is readable by others (mode %o); chmod 600 it", path, mode)
        return read_token(path)
    try:
        return _create_token(state_dir, path)
    except TokenError:
        raise
    except OSError as exc:
        raise TokenError(f"{path}: cannot create the API token ({exc.strerror or exc})") from None


def _create_token(state_dir: Path, path: Path) -> str:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    tmp = state_dir / f".{TOKEN_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # never replaces: if another process won the race, use its token
        except FileExistsError:
            return read_token(path)
        _fsync_dir(state_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return token


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def token_matches(presented: str, token: str) -> bool:
    """Constant-time, so response timing does not reveal how much of a guess was right."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), token.encode())


def bearer_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key.lower() == b"authorization":
            scheme, _, credentials = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
            return None
    return None


class BearerAuthMiddleware:
    """Refuses every HTTP request without the right bearer token with 401, except ``OPEN_PATHS``."""

    def __init__(self, app: ASGIApp, token: str, open_paths: frozenset[tuple[str, str]] = OPEN_PATHS) -> None:
        self.app = app
        self.token = token
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (scope["method"], scope["path"]) in self.open_paths:
            await self.app(scope, receive, send)
            return
        presented = bearer_from_headers(scope.get("headers", []))
        if presented is None:
            message = (
                "missing bearer token: send 'Authorization: Bearer <token>'; the token is in the "
                f"agent's state dir, file {TOKEN_FILE_NAME}"
            )
        elif not token_matches(presented, self.token):
            message = "invalid bearer token"
        else:
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {"error": message, "detail": [{"loc": ["header", "Authorization"], "msg": message}]}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b'Bearer realm="wiremesh"'),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
