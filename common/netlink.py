"""pyroute2, imported in one place, and its blocking calls run on a socket of their own.

pyroute2 is blocking and its sockets are not for sharing between threads, so every operation opens a
fresh socket, does its calls and closes it: in the caller's worker thread (:func:`call`), or in a Trio
worker thread of its own (:func:`run`). It is imported on first use, so a process that never touches
netlink never loads it. pyroute2's ``NetlinkError`` is not an ``OSError``; each caller says what a
failure becomes (its own error type, with the step that failed), and :func:`error_code` reads the errno
out of either.
"""

from __future__ import annotations

import errno
import functools
import importlib
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import trio

T = TypeVar("T")


class Closable(Protocol):
    def close(self) -> None: ...


S = TypeVar("S", bound=Closable)
ErrorMap = Callable[[Exception], BaseException]


def pyroute2() -> Any:
    """The pyroute2 module (a dependency of the project, so there is no fallback without it)."""
    return importlib.import_module("pyroute2")


def netlink_error() -> type[Exception]:
    """pyroute2's ``NetlinkError``, the kernel's refusal of a request."""
    error: type[Exception] = importlib.import_module("pyroute2.netlink.exceptions").NetlinkError
    return error


def error_code(exc: BaseException) -> int:
    """The errno of a failure: ``NetlinkError.code``, ``OSError.errno``; anything else is EIO."""
    for attr in ("code", "errno"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and value:
            return abs(value)
    return errno.EIO


def call(
    open_: Callable[[], S],
    fn: Callable[[S], T],
    *,
    errors: ErrorMap,
    open_errors: ErrorMap | None = None,
    translate: tuple[type[Exception], ...] = (Exception,),
    passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """Blocking: ``fn`` on a fresh socket from ``open_``, closed afterwards. An exception of a
    ``translate`` type from opening goes through ``open_errors`` (default ``errors``), one from ``fn``
    through ``errors``; ``passthrough`` types (the caller's own errors) and anything else propagate."""
    try:
        sock = open_()
    except translate as exc:
        raise (open_errors or errors)(exc) from None
    try:
        return fn(sock)
    except passthrough:
        raise
    except translate as exc:
        raise errors(exc) from None
    finally:
        sock.close()


async def run(
    open_: Callable[[], S],
    fn: Callable[[S], T],
    *,
    errors: ErrorMap,
    open_errors: ErrorMap | None = None,
    translate: tuple[type[Exception], ...] = (Exception,),
    passthrough: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`call` in a Trio worker thread."""
    job = functools.partial(
        call, open_, fn, errors=errors, open_errors=open_errors, translate=translate, passthrough=passthrough
    )
    return await trio.to_thread.run_sync(job)


__all__ = ["call", "error_code", "netlink_error", "pyroute2", "run"]
