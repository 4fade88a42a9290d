"""Bounded polling: wait for a condition, and say what was awaited and what was last seen if it never came.

:func:`eventually` is for Trio code; it measures time with ``trio.current_time`` and sleeps with
``trio.sleep``, so it also runs under Trio's ``MockClock`` (autojump: virtual seconds cost nothing).
:func:`eventually_blocking` is the same loop for the labs' threads and plain scripts.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

import trio

T = TypeVar("T")


class WaitTimeout(AssertionError, TimeoutError):
    """A wait that ran out: a failed assertion to pytest, a TimeoutError to the labs' callers."""


def _message(what: str, timeout: float, last: object, detail: Callable[[], str] | None) -> str:
    text = f"timed out after {timeout:g} s waiting for {what}; last value: {last!r}"
    return f"{text}\n{detail()}" if detail is not None else text


@overload
async def eventually(  # an async predicate: awaited, its result returned
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    what: str = ...,
    poll: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
    failing: Callable[[], str | None] | None = ...,
    detail: Callable[[], str] | None = ...,
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T | None],
    *,
    timeout: float = ...,
    what: str = ...,
    poll: float = ...,
    ignore: tuple[type[BaseException], ...] = ...,
    failing: Callable[[], str | None] | None = ...,
    detail: Callable[[], str] | None = ...,
) -> T: ...


async def eventually(
    predicate: Callable[[], Any],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    poll: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
    failing: Callable[[], str | None] | None = None,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    ``ignore``: exceptions that count as "not yet" (an API still starting). ``failing``: returns text
    when waiting is pointless (a process died): fail at once with it. ``detail``: extra diagnostics
    appended to the timeout message.
    """
    deadline = trio.current_time() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            last = value
        except ignore as exc:
            last = exc
        if failing is not None and (reason := failing()) is not None:
            raise WaitTimeout(f"while waiting for {what}: {reason}")
        if trio.current_time() >= deadline:
            raise WaitTimeout(_message(what, timeout, last, detail))
        await trio.sleep(poll)


def eventually_blocking(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    what: str = "the condition",
    poll: float = 0.1,
    ignore: tuple[type[BaseException], ...] = (),
    failing: Callable[[], str | None] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """:func:`eventually` for code outside Trio: the same contract, ``time.sleep`` between polls."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except ignore as exc:
            last = exc
        if failing is not None and (reason := failing()) is not None:
            raise WaitTimeout(f"while waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            raise WaitTimeout(_message(what, timeout, last, detail))
        time.sleep(poll)
