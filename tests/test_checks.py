"""The probes against real servers and processes started here, on 127.0.0.1, on the real clock."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from trio.testing import MockClock

from agent.cluster.objects import HealthCheck
from agent.health.execpolicy import ExecPolicy
from agent.health.probes import OUTPUT_LIMIT, CheckResult, TlsContexts, run_check
from common.address import split_hostport
from labs.kit.wait import eventually_blocking

ALLOW = ExecPolicy(allowed=True)
TIMEOUT = 0.5


def check(kind: str, target: str, **kw: Any) -> HealthCheck:
    return HealthCheck.model_validate({"type": kind, "target": target, "timeout": TIMEOUT, **kw})


async def run(hc: HealthCheck, policy: ExecPolicy = ALLOW) -> CheckResult:
    return await run_check(hc, exec_policy=policy)


def closed_port() -> int:
    """A port nothing listens on: bound, then closed (not reused this fast on 127.0.0.1)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_split_hostport_for_checks() -> None:
    assert split_hostport(":6443", default_host="127.0.0.1") == ("127.0.0.1", 6443)
    assert split_hostport("example.com:80", default_host="127.0.0.1") == ("example.com", 80)
    assert split_hostport("[::1]:9", default_host="127.0.0.1") == ("::1", 9)


# --- TCP ---------------------------------------------------------------------------------------------


async def test_tcp_listener_passes_and_empty_host_is_localhost() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        result = await run(check("tcp", f"127.0.0.1:{port}"))
        assert result.ok and result.error is None and 0 <= result.latency < TIMEOUT
        assert (await run(check("tcp", f":{port}"))).ok
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_tcp_closed_port_fails() -> None:
    result = await run(check("tcp", f"127.0.0.1:{closed_port()}"))
    assert not result.ok
    assert result.error and "refused" in result.error.lower()


async def test_tcp_name_with_several_addresses_tries_them_all() -> None:
    """One address is connected to directly; a name with several goes through happy eyeballs, so a
    refusing first address does not fail the check while another one answers."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    refusing = closed_port()
    asked: list[bytes | str | None] = []

    class Resolver(trio.abc.HostnameResolver):
        async def getaddrinfo(
            self,
            host: bytes | None,
            port: bytes | str | int | None,
            family: int = 0,
            type: int = 0,
            proto: int = 0,
            flags: int = 0,
        ) -> list[Any]:
            asked.append(host)
            tcp = (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "")
            if host == b"one.test":
                return [(*tcp, ("127.0.0.1", refusing))]
            return [(*tcp, ("127.0.0.1", refusing)), (*tcp, ("127.0.0.1", port))]

        async def getnameinfo(self, sockaddr: tuple[Any, ...], flags: int) -> tuple[str, str]:
            raise NotImplementedError

    previous = trio.socket.set_custom_hostname_resolver(Resolver())
    try:
        result = await run(check("tcp", f"two.test:{port}"))
        assert result.ok, result.error
        single = await run(check("tcp", f"one.test:{port}"))
        assert not single.ok
        assert single.error and "refused" in single.error.lower()
        assert asked.count(b"one.test") == 1  # resolved once, then a plain connect
    finally:
        trio.socket.set_custom_hostname_resolver(previous)
        for listener in listeners:
            await listener.aclose()


# --- HTTP --------------------------------------------------------------------------------------------


async def _answer(stream: trio.abc.Stream) -> None:
    """A minimal HTTP/1.1 server: GET /status/N answers N; /hang never answers."""
    request = b""
    try:
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        path = request.split(b" ", 2)[1].decode()
        if path == "/hang":
            await trio.sleep_forever()
        status = int(path.rsplit("/", 1)[1])
        await stream.send_all(
            f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


@pytest.fixture
async def http_port() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _answer, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("status", [200, 204, 301, 399])
async def test_http_status_in_default_range_passes(http_port: int, status: int) -> None:
    result = await run(check("http", f"http://127.0.0.1:{http_port}/status/{status}"))
    assert result.ok, result.error


@pytest.mark.parametrize("status", [400, 404, 500, 503])
async def test_http_status_out_of_range_fails(http_port: int, status: int) -> None:
    result = await run(check("http", f"http://127.0.0.1:{http_port}/status/{status}"))
    assert not result.ok
    assert result.error == f"HTTP status {status}, expected 200-399"


async def test_http_expected_status_range(http_port: int) -> None:
    url = f"http://127.0.0.1:{http_port}/status/"
    assert (await run(check("http", url + "503", expected_status=(500, 503)))).ok
    assert not (await run(check("http", url + "200", expected_status=(500, 503)))).ok


async def test_http_hang_times_out(http_port: int) -> None:
    t0 = time.monotonic()
    result = await run(check("http", f"http://127.0.0.1:{http_port}/hang"))
    assert not result.ok and result.error == "timed out after 0.5 s"
    assert TIMEOUT <= time.monotonic() - t0 < TIMEOUT + 0.5


async def test_http_connection_refused_fails() -> None:
    result = await run(check("http", f"http://127.0.0.1:{closed_port()}/"))
    assert not result.ok and result.error


def _self_signed(tmp: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    (tmp / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx


async def test_https_self_signed_needs_tls_skip_verify(tmp_path: Path) -> None:
    ctx = _self_signed(tmp_path)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_ssl_over_tcp, _answer, 0, ctx, host="127.0.0.1"))
        url = f"https://127.0.0.1:{listeners[0].transport_listener.socket.getsockname()[1]}/status/200"
        refused = await run(check("http", url))
        assert not refused.ok
        assert refused.error and "certificate" in refused.error.lower()
        result = await run(check("http", url, tls_skip_verify=True))
        assert result.ok, result.error
        tls = TlsContexts.create()  # the shared contexts an agent builds once behave the same
        assert not (await run_check(check("http", url), exec_policy=ALLOW, tls=tls)).ok
        assert (await run_check(check("http", url, tls_skip_verify=True), exec_policy=ALLOW, tls=tls)).ok
        nursery.cancel_scope.cancel()


# --- gRPC --------------------------------------------------------------------------------------------


@pytest.fixture
def grpc_health() -> Iterator[tuple[int, health.HealthServicer]]:
    """grpcio's own health servicer on 127.0.0.1:0, in its thread pool."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, servicer
    finally:
        server.stop(None).wait()


ServingStatus = health_pb2.HealthCheckResponse


async def test_grpc_serving_passes_not_serving_fails(grpc_health: tuple[int, Any]) -> None:
    port, servicer = grpc_health
    servicer.set("", ServingStatus.SERVING)
    result = await run(check("grpc", f"127.0.0.1:{port}"))
    assert result.ok, result.error
    servicer.set("", ServingStatus.NOT_SERVING)
    result = await run(check("grpc", f":{port}"))
    assert not result.ok
    assert result.error == "gRPC health status NOT_SERVING"


async def test_grpc_named_service(grpc_health: tuple[int, Any]) -> None:
    port, servicer = grpc_health
    servicer.set("", ServingStatus.NOT_SERVING)
    servicer.set("api.v1.Users", ServingStatus.SERVING)
    assert (await run(check("grpc", f"127.0.0.1:{port}", service="api.v1.Users"))).ok
    unknown = await run(check("grpc", f"127.0.0.1:{port}", service="nope"))
    assert not unknown.ok and unknown.error and unknown.error.startswith("gRPC NOT_FOUND")


async def test_grpc_closed_port_fails() -> None:
    result = await run(check("grpc", f"127.0.0.1:{closed_port()}"))
    assert not result.ok and result.error and "UNAVAILABLE" in result.error


async def test_grpc_silent_server_times_out() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")  # accepts, never speaks HTTP/2
    try:
        t0 = time.monotonic()
        result = await run(check("grpc", f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"))
        assert not result.ok and result.error == "timed out after 0.5 s"
        assert time.monotonic() - t0 < TIMEOUT + 0.5
    finally:
        for listener in listeners:
            await listener.aclose()


# --- Exec --------------------------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """Dead: no such process, or a zombie waiting for whichever reaper inherited it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def test_exec_true_passes_false_fails() -> None:
    assert (await run(check("exec", "true"))).ok
    result = await run(check("exec", "false"))
    assert not result.ok and result.error == "exit status 1"


async def test_exec_output_is_kept_and_truncated_to_the_tail() -> None:
    result = await run(check("exec", "sh -c 'echo hello; echo oops >&2; exit 3'"))
    assert not result.ok and result.error == "exit status 3"
    assert result.output == "hello\noops\n"
    big = await run(check("exec", f'{sys.executable} -c \'print("a" * 10000 + "END")\''))
    assert big.ok and len(big.output.encode()) == OUTPUT_LIMIT and big.output.endswith("END\n")


async def test_exec_uses_argv_not_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    result = await run(check("exec", f"echo hi; touch {marker}"))
    assert result.ok and result.output == f"hi; touch {marker}\n"  # ';' is an argument to echo
    assert not marker.exists()


async def test_exec_hang_times_out_and_kills_the_process_group() -> None:
    t0 = time.monotonic()
    result = await run(check("exec", "sh -c 'sleep 30 & echo $!; sleep 30'"))
    elapsed = time.monotonic() - t0
    assert not result.ok and result.error == "timed out after 0.5 s"
    assert TIMEOUT <= elapsed < TIMEOUT + 0.5
    grandchild = int(result.output.split()[0])  # printed before the hang, kept through the timeout
    assert eventually_blocking(
        lambda: gone(grandchild),
        what=f"pid {grandchild} gone (it survived the check)",
        timeout=2.0,
        poll=0.01,
    )


async def test_exec_leftover_children_are_killed_when_it_exits() -> None:
    t0 = time.monotonic()
    result = await run(check("exec", "sh -c 'sleep 30 & echo $!'"))
    assert result.ok, result.error
    assert time.monotonic() - t0 < TIMEOUT  # not held open by the child's copy of the pipe
    pid = int(result.output.split()[0])
    assert eventually_blocking(lambda: gone(pid), what=f"pid {pid} gone", timeout=2.0, poll=0.01)


async def test_exec_missing_executable_fails() -> None:
    result = await run(check("exec", "/nonexistent/check --flag"))
    assert not result.ok and result.error and "No such file" in result.error


async def test_exec_killed_by_signal() -> None:
    result = await run(check("exec", "sh -c 'kill -TERM $$'"))
    assert not result.ok and result.error == "killed by SIGTERM"


@pytest.mark.parametrize(
    "policy",
    [ExecPolicy(), ExecPolicy(allowed=True, paths=("/usr/bin/true",))],
    ids=["disabled", "not-in-paths"],
)
async def test_exec_refused_by_policy_runs_nothing(policy: ExecPolicy, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    command = f"touch {marker}"
    result = await run(check("exec", command), policy)
    assert not result.ok and result.error == policy.refusal(command)
    assert result.error and ("allow_exec_checks" in result.error or "exec_check_paths" in result.error)
    assert not marker.exists()


async def test_exec_allowed_path_runs() -> None:
    policy = ExecPolicy(allowed=True, paths=("/bin/sh",))
    assert (await run(check("exec", "/bin/sh -c 'exit 0'"), policy)).ok


async def test_many_checks_run_concurrently() -> None:
    """Hundreds of checks must not delay each other: 50 half-second hangs take ~one timeout, not 50."""
    results: list[CheckResult] = []

    async def one() -> None:
        results.append(await run(check("exec", "sleep 30")))

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(one)
    assert len(results) == 50 and not any(r.ok for r in results)
    assert time.monotonic() - t0 < TIMEOUT + 1.5


async def test_timeout_is_exact_under_mock_clock(clock: MockClock) -> None:
    """The timeout is the cancel scope's, on Trio's clock: under MockClock it fires at exactly 0.5 s."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        hung = await run(check("grpc", f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"))
    finally:
        for listener in listeners:
            await listener.aclose()
    result = await run(check("exec", "sleep 30"))
    for r in (hung, result):
        assert not r.ok and r.error == "timed out after 0.5 s" and r.latency == TIMEOUT
