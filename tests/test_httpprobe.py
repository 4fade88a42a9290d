"""The HTTP check's own GET (agent.health.httpprobe): what goes on the wire, and every way an answer
can fail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from agent.cluster.objects import HealthCheck
from agent.health.execpolicy import ExecPolicy
from agent.health.httpprobe import USER_AGENT, start_request
from agent.health.probes import run_check

Handler = Callable[[trio.SocketStream], Awaitable[None]]


@pytest.mark.parametrize(
    ("url", "host", "port", "tls", "target", "authority"),
    [
        ("http://127.0.0.1/healthz", "127.0.0.1", 80, False, "/healthz", "127.0.0.1"),
        ("http://127.0.0.1:8080/a/b?x=1&y=2", "127.0.0.1", 8080, False, "/a/b?x=1&y=2", "127.0.0.1:8080"),
        ("https://svc.example:443", "svc.example", 443, True, "/", "svc.example"),
        ("https://[2001:db8::1]:8443/h", "2001:db8::1", 8443, True, "/h", "[2001:db8::1]:8443"),
    ],
)
def test_the_request_on_the_wire(
    url: str, host: str, port: int, tls: bool, target: str, authority: str
) -> None:
    got_host, got_port, got_tls, _conn, data = start_request(url)
    assert (got_host, got_port, got_tls) == (host, port, tls)
    head = data.decode().split("\r\n")
    assert head[0] == f"GET {target} HTTP/1.1"
    headers = {line.split(": ", 1)[0].lower(): line.split(": ", 1)[1] for line in head[1:] if line}
    assert headers["host"] == authority
    assert headers["connection"] == "close"  # every run tests a new connection
    assert headers["user-agent"] == USER_AGENT


async def probe(handler: Handler, *, timeout: float = 1.0) -> tuple[bool, str | None, bytes]:
    """Run an HTTP check against ``handler``; also returns what the server received."""
    received = bytearray()

    async def serve(stream: trio.SocketStream) -> None:
        received.extend(await stream.receive_some(4096))
        await handler(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, serve, 0)
        port = listeners[0].socket.getsockname()[1]
        check = HealthCheck(
            type="http", target=f"http://127.0.0.1:{port}/ready?deep=1", interval=5, timeout=timeout
        )
        result = await run_check(check, exec_policy=ExecPolicy())
        nursery.cancel_scope.cancel()
    return result.ok, result.error, bytes(received)


async def test_the_status_counts_before_the_body_arrives() -> None:
    async def headers_then_hang(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 204 No Content\r\nServer: t\r\n\r\n")
        await trio.sleep_forever()

    ok, error, received = await probe(headers_then_hang)
    assert ok, error
    assert received.startswith(b"GET /ready?deep=1 HTTP/1.1\r\n")


async def test_informational_responses_are_skipped() -> None:
    async def continue_then_503(stream: trio.SocketStream) -> None:
        await stream.send_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n"
        )

    ok, error, _ = await probe(continue_then_503)
    assert not ok
    assert error == "HTTP status 503, expected 200-399"


async def test_a_response_that_is_not_http_fails_with_what_was_wrong() -> None:
    async def garbage(stream: trio.SocketStream) -> None:
        await stream.send_all(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")

    ok, error, _ = await probe(garbage)
    assert not ok
    assert error is not None and error.startswith("bad HTTP response: ") and error.count("illegal") == 1


async def test_a_server_that_closes_without_answering_fails() -> None:
    async def close(stream: trio.SocketStream) -> None:
        await stream.aclose()

    ok, error, _ = await probe(close)
    assert (ok, error) == (False, "the server closed the connection without answering")


async def test_a_server_that_answers_part_of_a_status_line_then_hangs_times_out() -> None:
    async def partial(stream: trio.SocketStream) -> None:
        await stream.send_all(b"HTTP/1.1 2")
        await trio.sleep_forever()

    ok, error, _ = await probe(partial, timeout=0.3)
    assert (ok, error) == (False, "timed out after 0.3 s")
