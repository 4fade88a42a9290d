"""The API's one error shape, ``{"error": "...", "detail": [{"loc": [...], "msg": "..."}]}``, for every
error FastAPI, the store or a bug can raise; ``loc`` is a field path starting with ``"body"`` for fields
of the request body, like FastAPI's own validation errors."""

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent.cluster.objects import Problem
from agent.cluster.replication import CommitFailed
from agent.cluster.store import AlreadyExists, InUse, Invalid, NotFound

log = logging.getLogger("wiremesh.api")


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorBody(BaseModel):
    error: str
    detail: list[ErrorDetail]


def error_response(status: int, error: str, detail: Iterable[ErrorDetail] = ()) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, detail=list(detail)).model_dump(), status_code=status)


def problems_detail(
    problems: Iterable[Problem], prefix: Sequence[str | int] = ("body",)
) -> list[ErrorDetail]:
    return [ErrorDetail(loc=[*prefix, *p.loc], msg=p.msg) for p in problems]


def pydantic_detail(errors: Sequence[Any], prefix: Sequence[str | int] = ()) -> list[ErrorDetail]:
    """Pydantic's error dicts as field paths; only loc and msg, since ``input`` may echo anything back."""
    return [
        ErrorDetail(
            loc=[*prefix, *(p if isinstance(p, int) else str(p) for p in e.get("loc", ()))],
            msg=str(e.get("msg", "")).removeprefix("Value error, "),
        )
        for e in errors
    ]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (400, "Malformed request"),
        (401, "Missing or wrong bearer token"),
        (404, "No such object"),
        (409, "Conflict: the name is taken, or the object is still in use"),
        (422, "Invalid object: detail names each field and why"),
    )
}


def install_error_handlers(app: FastAPI) -> None:
    """Every error in the project's shape; a malformed JSON body is a 400, a well-formed wrong one a 422."""

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "malformed JSON body", pydantic_detail(errors))
        return error_response(422, "invalid request", pydantic_detail(errors))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        response = error_response(exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    async def on_not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, str(exc) or "not found")

    async def on_exists(request: Request, exc: Exception) -> Response:
        return error_response(
            409, str(exc) or "already exists", [ErrorDetail(loc=["body", "name"], msg=str(exc))]
        )

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Invalid)
        return error_response(422, str(exc) or "invalid object", problems_detail(exc.problems))

    async def on_in_use(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InUse)
        return error_response(
            409, str(exc) or "still in use", [ErrorDetail(loc=[], msg=f"used by {w}") for w in exc.where]
        )

    async def on_not_committed(request: Request, exc: Exception) -> Response:
        # The change is in memory but not on disk: not acknowledged, so the client knows to retry.
        return error_response(503, f"the change could not be saved to disk: {exc}", [])

    async def on_model(request: Request, exc: Exception) -> Response:
        # A merge patch or a settings default that does not make a valid object.
        assert isinstance(exc, ValidationError)
        return error_response(422, "invalid object", pydantic_detail(exc.errors(), ("body",)))

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(NotFound, on_not_found)
    app.add_exception_handler(AlreadyExists, on_exists)
    app.add_exception_handler(Invalid, on_invalid)
    app.add_exception_handler(InUse, on_in_use)
    app.add_exception_handler(ValidationError, on_model)
    app.add_exception_handler(CommitFailed, on_not_committed)


class CatchAllMiddleware:
    """Turns a bug (any exception that escaped the handlers) into a logged, clean JSON 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_note(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        except Exception:
            log.exception("API bug while handling %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise  # too late for a clean answer: let the server drop the connection
            await error_response(500, "internal error (a bug; the agent's log has the details)")(
                scope, receive, send
            )
