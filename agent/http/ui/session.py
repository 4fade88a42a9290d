"""The web UI's session: the operator pastes the API token once on ``/ui/login``; the browser then holds
an HttpOnly, SameSite=Strict cookie that stands in for the bearer token on the UI's own requests.

Why a cookie at all: a browser cannot attach an ``Authorization`` header to page loads and form posts.
Why not the token itself in the cookie: the cookie holds an HMAC of the token, so a leaked cookie is
worth only what the UI paths give, and rotating the token ends every session.

:class:`UiSessionMiddleware` sits just outside :class:`agent.http.auth.BearerAuthMiddleware` (which stays the
one place a token is compared). On the paths the UI covers — ``/ui`` and below, plus the few JSON reads
its pages fetch (:data:`UI_API_READS`) — a request without an ``Authorization`` header but with a valid
session cookie gets the bearer header added, so the auth middleware lets it through; anywhere else the
cookie is ignored and the auth middleware refuses the request as usual. A page request under ``/ui``
with no valid credential is redirected to the login page instead of getting the JSON 401. Writes made
with the cookie must come from the UI's own origin (``Origin`` / ``Sec-Fetch-Site``), on top of
SameSite=Strict, as a second line against cross-site request forgery.

The login page and the static assets are open (:func:`ui_open_paths`, passed to the auth middleware's
``open_paths``); they show nothing about the cluster.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from starlette.types import ASGIApp, Receive, Scope, Send

from agent.http.auth import bearer_from_headers

COOKIE_NAME = "wiremesh_ui"
UI_PREFIX = "/ui"
LOGIN_PATH = "/ui/login"
STATIC_DIR = Path(__file__).parent / "static"
# JSON reads the UI's pages make from the browser (another machine's RIB); GET only.
UI_API_READS = (re.compile(r"^/v1/machines/[^/]+/rib$"),)
SAFE_METHODS = frozenset({"GET", "HEAD"})


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: an HMAC of it, never the token itself."""
    return hmac.new(token.encode(), b"wiremesh-ui-session-v1", hashlib.sha256).hexdigest()


def ui_open_paths() -> frozenset[tuple[str, str]]:
    """The (method, path) pairs the auth middleware lets through: the login page and each static asset."""
    pairs = {("GET", LOGIN_PATH), ("HEAD", LOGIN_PATH), ("POST", LOGIN_PATH)}
    for asset in sorted(STATIC_DIR.iterdir()):
        if asset.is_file():
            for method in ("GET", "HEAD"):
                pairs.add((method, f"{UI_PREFIX}/static/{asset.name}"))
    return frozenset(pairs)


def is_ui_path(path: str) -> bool:
    return path == UI_PREFIX or path.startswith(UI_PREFIX + "/")


def cookie_covers(method: str, path: str) -> bool:
    """Whether the session cookie may stand in for the token on this request."""
    if is_ui_path(path):
        return True
    return method in SAFE_METHODS and any(p.match(path) for p in UI_API_READS)


def cookie_from_headers(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie ``name``; the first one wins, as browsers send the most specific first."""
    for key, value in headers:
        if key.lower() != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v.strip().strip('"')
    return None


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def same_origin(headers: list[tuple[bytes, bytes]]) -> bool:
    """False when the browser says the request came from another site. Browsers send ``Origin`` on
    every POST and ``Sec-Fetch-Site`` on every request; a client sending neither is not a browser
    acting for another site, so it passes (the cookie still has to be valid)."""
    site = _header(headers, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = _header(headers, b"origin")
    if origin is None or origin == "null":
        return origin is None
    host = _header(headers, b"host")
    return host is not None and origin.split("://", 1)[-1] == host


class UiSessionMiddleware:
    """See the module docstring. Must be added after (so it runs outside) the bearer auth middleware."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token
        self.expected = session_value(token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers: list[tuple[bytes, bytes]] = list(scope.get("headers", []))
        if not cookie_covers(method, path) or bearer_from_headers(headers) is not None:
            await self.app(scope, receive, send)  # the auth middleware decides, as for any API call
            return
        cookie = cookie_from_headers(headers, COOKIE_NAME)
        valid = cookie is not None and hmac.compare_digest(cookie.encode("latin-1"), self.expected.encode())
        if valid and (method in SAFE_METHODS or same_origin(headers)):
            headers.append((b"authorization", f"Bearer {self.token}".encode()))
            await self.app({**scope, "headers": headers}, receive, send)
            return
        if valid:  # the right cookie on a write another site's page made: refuse it, keep the session
            await _plain(send, 403, b"cross-site request refused\n")
            return
        if is_ui_path(path) and path != LOGIN_PATH and not path.startswith(UI_PREFIX + "/static/"):
            await _redirect_to_login(scope, send, expired=cookie is not None)
            return
        await self.app(scope, receive, send)  # no usable credential: the auth middleware answers 401


async def _redirect_to_login(scope: Scope, send: Send, *, expired: bool) -> None:
    target = scope["path"] if scope["method"] in SAFE_METHODS else UI_PREFIX
    query = scope.get("query_string", b"").decode("latin-1")
    if query and scope["method"] in SAFE_METHODS:
        target += "?" + query
    location = f"{LOGIN_PATH}?next={quote(target, safe='')}" + ("&expired=1" if expired else "")
    headers = [(b"location", location.encode()), (b"content-length", b"0"), (b"cache-control", b"no-store")]
    if expired:  # a cookie that no longer matches the token (rotated, or forged): drop it
        headers.append((b"set-cookie", clear_cookie_header().encode()))
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _plain(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def set_cookie_header(token: str, *, secure: bool) -> str:
    """A session cookie (no Max-Age: it ends with the browser session); Path=/ so the UI's JSON reads
    under /v1 carry it too (the middleware accepts it only where :func:`cookie_covers` says)."""
    flags = "; Secure" if secure else ""
    return f"{COOKIE_NAME}={session_value(token)}; Path=/; HttpOnly; SameSite=Strict{flags}"


def clear_cookie_header() -> str:
    return f"{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path under /ui only, so the login page is no open redirect."""
    if value and is_ui_path(value.split("?", 1)[0]) and not value.startswith("//") and "\\" not in value:
        return value
    return UI_PREFIX + "/vips"
