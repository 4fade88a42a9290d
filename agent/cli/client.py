"""The CLI's client for the agent's HTTP API: where the agent is, which token to send, and what the
API said when it refused.

The bearer token comes from ``--token-file``, then ``$WIREMESH_TOKEN`` (the token itself), then
``$WIREMESH_TOKEN_FILE``, then ``/var/lib/wiremesh/api-token``. A token that cannot be read is not an
error until the agent asks for one, so "cannot reach the agent" is still what an unreachable agent says.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from agent.config.loader import DEFAULT_STATE_DIR
from agent.http.auth import TOKEN_ENV, TOKEN_FILE_ENV, TokenError, read_token, token_path

DEFAULT_API = "http://127.0.0.1:7947"
API_ENV = "WIREMESH_API"
Handler = Callable[[argparse.Namespace, TextIO], int]


class RequestFailed(Exception):
    """The agent's API could not be used or refused the request (or the request could not be made
    from what was given); ``str()`` is meant for the user as is:
    the first line says what happened, one indented line per field the API named."""

    def __init__(self, message: str, detail: Sequence[Mapping[str, Any]] = ()) -> None:
        self.message = message
        self.detail = list(detail)
        lines = [message, *(f"  {_field_path(d.get('loc', []))}{d.get('msg', '')}" for d in self.detail)]
        super().__init__("\n".join(lines))


def _field_path(loc: Sequence[Any]) -> str:
    """``["body", "health_check", "timeout"]`` as ``health_check.timeout: ``; the ``body`` (or ``query``)
    prefix is noise."""
    parts = [str(p) for p in loc]
    if parts[:1] in (["body"], ["query"]):
        parts = parts[1:]
    return ".".join(parts) + ": " if parts else ""


def api_base(url: str) -> str:
    """Accept ``host:port`` as well as a full URL, since that is what people type."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def resolve_token(token_file: str | None, env: Mapping[str, str] = os.environ) -> tuple[str | None, str]:
    """The bearer token (or None), and where it came from or why there is none, for error messages."""
    if token_file:
        source = Path(token_file)
    elif env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    elif env.get(TOKEN_FILE_ENV):
        source = Path(env[TOKEN_FILE_ENV])
    else:
        source = token_path(Path(DEFAULT_STATE_DIR))
    try:
        return read_token(source), str(source)
    except TokenError as exc:
        return None, f"{exc}; pass --token-file or set ${TOKEN_ENV}"


class ApiClient:
    """Blocking JSON calls to one agent; every failure is an :class:`RequestFailed`."""

    def __init__(self, api: str, token: str | None, token_source: str = "", *, timeout: float = 5.0) -> None:
        self.base = api_base(api)
        self.token = token
        self.token_source = token_source
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx  # only the client commands need it; the agent process is leaner without it

        headers = {"accept": "application/json"}
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["content-type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        url = self.base + path
        try:
            response = httpx.request(
                method,
                url,
                headers=headers,
                content=None if body is None else json.dumps(body).encode(),
                timeout=self.timeout,
            )
        except httpx.TransportError as exc:
            raise RequestFailed(
                f"cannot reach the agent at {self.base} ({exc or type(exc).__name__})"
            ) from None
        except httpx.InvalidURL as exc:
            raise RequestFailed(f"bad --api URL {self.base!r}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            payload = response.json()
        except ValueError:
            if response.is_success:
                raise RequestFailed(f"{url}: the answer is not JSON (is this a wiremesh agent?)") from None
            payload = None
        if response.is_success:
            return payload
        raise self._error(response.status_code, response.reason_phrase, payload)

    def _error(self, status: int, reason: str, payload: Any) -> RequestFailed:
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            message, detail = payload["error"], payload.get("detail")
        else:
            message, detail = reason, None
        details = [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []
        if status == 401:
            message += (
                f" (the token is from {self.token_source})" if self.token else f" ({self.token_source})"
            )
            details = []
        return RequestFailed(f"{message} (HTTP {status})", details)

    def get(self, path: str) -> Any:
        return self.request("GET", path)


def client_for(args: argparse.Namespace) -> ApiClient:
    token, source = resolve_token(getattr(args, "token_file", None))
    return ApiClient(args.api, token, source)


def add_client_options(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """--api and --token-file (and --json) for a command that talks to a running agent."""
    default_api = os.environ.get(API_ENV) or DEFAULT_API
    parser.add_argument(
        "--api", default=default_api, help=f"agent API URL (default ${API_ENV} or {DEFAULT_API})"
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"API token file (default ${TOKEN_ENV}, ${TOKEN_FILE_ENV}, or <state_dir>/api-token)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
