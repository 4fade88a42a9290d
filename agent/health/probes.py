"""The health-check probes: one run of one check, bounded by its timeout.

Each probe only reports what happened (:class:`CheckResult`); thresholds live in
:mod:`agent.health.verdict`. Every probe runs inside ``trio.move_on_after(check.timeout)`` so one hung
target cannot delay the others, and a probe never raises for a failing target: a failure is a result.
"""

from __future__ import annotations

import shlex
import signal
import ssl
import subprocess
from dataclasses import dataclass

import trio

from agent.cluster.objects import HealthCheck
from agent.health.execpolicy import ExecPolicy
from agent.health.httpprobe import HttpProbeError, connect, get_status
from common import process
from common.address import split_hostport

OUTPUT_LIMIT = 4096  # bytes of an exec check's output kept: the tail, where the error usually is
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    latency: float  # seconds from the start of the run to its result
    error: str | None = None  # why it failed, one line; None when ok
    output: str = ""  # exec checks: the last OUTPUT_LIMIT bytes of stdout and stderr


@dataclass(frozen=True, slots=True)
class TlsContexts:
    """The two client TLS contexts HTTPS checks use, built once per agent: loading the CA bundle costs
    ~30 ms of CPU, too much to pay on every run of hundreds of checks."""

    verify: ssl.SSLContext
    skip_verify: ssl.SSLContext

    @classmethod
    def create(cls) -> TlsContexts:
        import httpx  # here, not at the top: ~6 MiB that a machine without HTTPS checks never needs

        return cls(verify=httpx.create_ssl_context(), skip_verify=httpx.create_ssl_context(verify=False))


async def run_check(
    check: HealthCheck, *, exec_policy: ExecPolicy, tls: TlsContexts | None = None
) -> CheckResult:
    """Run ``check`` once. Exec checks are refused (a failing result naming the config key) unless this
    machine's ``exec_policy`` allows the command: the cluster object does not get to decide that.
    ``tls``: shared contexts for HTTPS checks (built per run when not given)."""
    if check.type == "exec":
        refusal = exec_policy.refusal(check.target)
        if refusal is not None:
            return CheckResult(ok=False, latency=0.0, error=refusal)
    start = trio.current_time()
    tail = bytearray()  # outside the scope, so a timed-out exec check still shows what it printed
    error: str | None = f"timed out after {check.timeout:g} s"
    with trio.move_on_after(check.timeout):
        try:
            if check.type == "tcp":
                error = await _tcp(check.target)
            elif check.type == "http":
                error = await _http(check, tls)
            elif check.type == "grpc":
                error = await _grpc(check)
            else:
                error = await _exec(check.target, tail)
        except (OSError, HttpProbeError, trio.BrokenResourceError) as exc:
            error = _describe(exc)
        except Exception as exc:  # a library's surprise at a strange target is a failed check, not a crash
            error = f"{type(exc).__name__}: {_describe(exc)}"
    return CheckResult(error is None, trio.current_time() - start, error, _text(tail))


def _text(output: bytes | bytearray) -> str:
    return output.decode("utf-8", errors="replace")


def _describe(exc: BaseException) -> str:
    """One line, with the reasons from the cause chain: trio's "all attempts to connect failed" and
    httpx's bare ``ConnectError`` hide what an operator needs (refused? certificate?) in their causes."""
    reasons: dict[str, None] = {}
    todo: list[BaseException] = [exc]
    while todo and len(reasons) < 4:
        e = todo.pop(0)
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        elif str(e):
            reasons[" ".join(str(e).split())] = None
        # httpcore re-raises "from None", so the context is followed even when suppressed.
        if (nxt := e.__cause__ or e.__context__) is not None:
            todo.append(nxt)
    return ": ".join(reasons) or type(exc).__name__


async def _tcp(target: str) -> str | None:
    """Connect (as the HTTP check does, see :func:`agent.health.httpprobe.connect`), then close."""
    host, port = split_hostport(target, default_host=LOCALHOST)
    stream = await connect(host, port)
    await stream.aclose()
    return None


async def _http(check: HealthCheck, tls: TlsContexts | None) -> str | None:
    """A new connection per run (:mod:`agent.health.httpprobe`); the timeout is ours (the cancel scope)."""
    lo, hi = check.expected_status or (200, 399)
    context: ssl.SSLContext | None = None
    if check.target.startswith("https:"):
        if tls is None:  # callers that share none (the health runner does): built off the Trio thread
            tls = await trio.to_thread.run_sync(TlsContexts.create)
        context = tls.skip_verify if check.tls_skip_verify else tls.verify
    status = await get_status(check.target, context)
    if lo <= status <= hi:
        return None
    return f"HTTP status {status}, expected {lo}-{hi}"


async def _grpc(check: HealthCheck) -> str | None:
    """grpcio is blocking, so it runs in a worker thread with a grpc deadline equal to the timeout: the
    thread ends by itself, and the cancel scope abandons it only if grpc overruns its own deadline."""
    host, port = split_hostport(check.target, default_host=LOCALHOST)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return await trio.to_thread.run_sync(
        _grpc_probe, address, check.service or "", check.timeout, abandon_on_cancel=True
    )


def _grpc_probe(address: str, service: str, timeout: float) -> str | None:
    # Imported here: grpcio takes ~0.1 s to import, which agents without gRPC checks need not pay.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return f"timed out after {timeout:g} s"
            details = " ".join((exc.details() or "").split())
            return f"gRPC {code.name}: {details}" if details else f"gRPC {code.name}"
    status: int = response.status
    if status == health_pb2.HealthCheckResponse.SERVING:
        return None
    return f"gRPC health status {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"


async def _exec(command: str, tail: bytearray) -> str | None:
    """Run ``command`` as ``shlex.split`` argv (no shell: the exec policy judged exactly that argv[0]) in
    a new session, so that on timeout, or when the command exits leaving children behind, the whole
    process group can be killed and nothing a check started outlives its run."""
    argv = shlex.split(command)
    proc = await process.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    stdout = proc.stdout

    async def read_output() -> None:
        while chunk := await stdout.receive_some(65536):
            tail.extend(chunk)
            del tail[:-OUTPUT_LIMIT]

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_output)
            returncode = await proc.wait()
            # Leftover children hold the pipe open; killed, the reader sees EOF. The leader is reaped,
            # but its pid stays reserved as the group's id while any member lives, so this is safe.
            process.kill_group(proc.pid)
    finally:
        with trio.CancelScope(shield=True):
            if proc.returncode is None:  # cancelled (timed out): the group is ours until we reap it
                await process.stop(proc, grace=0)
            await stdout.aclose()
    if returncode == 0:
        return None
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"
