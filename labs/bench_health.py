"""Health-check figures from the real agent pieces on loopback (issue 4).

1. **Withdrawal time.** A real service (a helper process listening on 127.0.0.1, which answers HTTP
   and so also serves as a TCP target) backs one VIP with a check of interval I, timeout T, unhealthy
   threshold U and holdoff 0, run by a :class:`HealthRunner`, planned by an :class:`Announcer` on a real
   :class:`GossipNode` (alone on loopback). The service is killed (SIGKILL, then reaped: from then on its
   port refuses) at a uniformly random phase of the check interval, and the time until the Announcer
   publishes ``withdrawn_unhealthy`` is measured. The hook is exact, not polled: the Announcer's gossip
   view is wrapped, and the moment it hands its ``announce`` value with the withdrawal to gossip is the
   withdrawal time.

   The bound is ``B = I x U``. A service that dies at phase ``p`` of the interval (``p`` seconds after a
   check started and passed) fails the next U checks, the last of which starts ``U x I - p`` after the
   death, so the ideal time is ``B - p``: always within the bound, by ``p`` on average ``I/2``.
   Reported: the measured time, ``measured - B`` (the target: at most +50 ms), and the overhead past the
   ideal (``measured - (B - p)``, i.e. from the scheduled start of the deciding check to the withdrawal:
   its lateness, the refused connect, recording, planning and publishing).

2. **Load.** One HealthRunner with N checks (default 1,000 TCP checks, interval 1 s, timeout 0.5 s)
   against a few listening ports of a helper process, plus the Announcer (one VIP per check) on a real
   GossipNode, for a measured window after a warm-up: the CPU % of one core of this process (process CPU
   time / wall time; the helper's CPU is reported apart), and how late each run starts (actual start -
   scheduled slot, from ``HealthRunner``'s ``on_run_start`` hook): p50, p99 and max. Target: p99 < 100 ms.

    python -m labs.bench_health                         # tcp+http withdrawal x20, tcp+http load 1,000 x 60 s
    python -m labs.bench_health --skip-load --reps 5
    python -m labs.bench_health --skip-withdraw --checks 1000 --duration 30 --load-types tcp
    python -m labs.bench_health --json labs/results/bench_health.json --profile /tmp/load.prof

The machine's load average is printed with the figures: CPU % and lateness depend on what else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import math
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

from agent.announce.driver import Announcer
from agent.announce.planner import Reason, from_wire
from agent.cluster.objects import Kind
from agent.cluster.replication import wall_ms
from agent.cluster.store import ObjectStore
from agent.health.execpolicy import ExecPolicy
from agent.health.runner import HealthRunner
from agent.published import ANNOUNCE_KEY
from gossip import (
    GossipConfig,
    GossipNode,
    Keyring,
    MemberEvent,
    MemberInfo,
    Sealer,
    Swim,
    open_udp_tcp_transport,
)
from labs.kit.localcluster import process_usage

ME = "bench"
HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
TARGET_EXCESS = 0.050  # withdrawal: measured - bound must stay under this
TARGET_P99 = 0.100  # load: p99 start lateness must stay under this


# --- the helper service (a separate process, so its work is not counted as ours) ----------------------

_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
)


async def _serve_async(ports: Sequence[int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            data = await reader.read(4096)  # a TCP check closes at once: EOF, nothing to answer
            while data and b"\r\n\r\n" not in data and len(data) < 65536:
                more = await reader.read(4096)
                if not more:
                    break
                data += more
            if data:
                writer.write(_RESPONSE)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    servers = [await asyncio.start_server(handle, HOST, port, backlog=4096) for port in ports]
    print(" ".join(str(s.sockets[0].getsockname()[1]) for s in servers), flush=True)
    await asyncio.Event().wait()


def serve(ports: Sequence[int]) -> None:
    """Listen on ``ports`` (0: any) of 127.0.0.1, print the bound ports on one line, answer every HTTP
    request with 200 and close every connection; exit when stdin closes (the benchmark is gone)."""

    def watch_stdin() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    asyncio.run(_serve_async(ports))


class Service:
    """The helper process: started, killed and reaped by pid."""

    def __init__(self) -> None:
        self.proc: trio.Process | None = None
        self.ports: list[int] = []

    async def start(self, ports: Sequence[int]) -> list[int]:
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "labs.bench_health", "--serve", *map(str, ports)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
        )
        self.proc = proc
        assert proc.stdout is not None
        line = b""
        with trio.fail_after(30):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError("the helper service exited before listening")
                line += chunk
        self.ports = [int(p) for p in line.split()]
        return self.ports

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def kill(self) -> tuple[float, float]:
        """SIGKILL and reap; returns (signalled at, reaped at) on the Trio clock."""
        proc = self.proc
        assert proc is not None
        killed = trio.current_time()
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        reaped = trio.current_time()
        await self._close_pipes()
        self.proc = None
        return killed, reaped

    async def stop(self) -> None:
        if self.proc is not None:
            with trio.CancelScope(shield=True):
                await self.kill()

    async def _close_pipes(self) -> None:
        assert self.proc is not None
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                await stream.aclose()


# --- the agent pieces ---------------------------------------------------------------------------------


class TimedView:
    """The Announcer's gossip view: a real GossipNode, with every ``announce`` publication timed. This is
    the withdrawal hook: the moment the Announcer hands its decision to gossip (and so to BGP and peers)."""

    def __init__(self, node: GossipNode) -> None:
        self.node = node
        self.published: list[tuple[float, bytes | None]] = []
        self.listeners: list[Callable[[float, bytes | None], None]] = []

    def members(self) -> list[MemberInfo]:
        return self.node.members()

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        return self.node.subscribe(max_buffer)

    async def set_kv(self, key: str, value: bytes | None) -> None:
        if key == ANNOUNCE_KEY:
            now = trio.current_time()
            for listener in self.listeners:
                listener(now, value)
        await self.node.set_kv(key, value)


@dataclass
class Agent:
    store: ObjectStore
    node: GossipNode
    view: TimedView
    runner: HealthRunner
    announcer: Announcer
    runs: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    publishes: list[int] = field(default_factory=list)  # sizes of the published `health` values


def make_vip(i: int, check: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "name": f"v{i}",
        "address": f"100.96.{i // 256}.{i % 256}",
        "machines": [ME],
        "health_check": check,
        "holdoff": 0,
    }


def check_body(kind: str, port: int, interval: float, timeout: float, unhealthy: int) -> dict[str, Any]:
    target = f"{HOST}:{port}" if kind == "tcp" else f"http://{HOST}:{port}/healthz"
    return {
        "type": kind,
        "target": target,
        "interval": interval,
        "timeout": timeout,
        "healthy_threshold": 1,
        "unhealthy_threshold": unhealthy,
    }


async def start_agent(
    nursery: trio.Nursery,
    vips: list[dict[str, Any]],
    *,
    record_runs: Callable[[float], bool],
    announcer: bool = True,
) -> Agent:
    """Store, GossipNode (alone, on loopback), HealthRunner and Announcer, started in ``nursery``.
    ``record_runs(started)`` says whether a run starting then is kept in ``Agent.runs``."""
    store = ObjectStore(ME, lambda: {ME})
    for i, body in enumerate(vips):
        store.create(Kind.VIP, body, wall_ms() + i)
    transport = await nursery.start(_transport)
    sealer = Sealer(Keyring([os.urandom(32)]), "bench-health")
    core = Swim(GossipConfig(), ME, transport.local_addr, sealer, random.Random(), trio.current_time())
    node = GossipNode(core, transport)
    await nursery.start(node.run)
    runs: dict[str, list[tuple[float, float]]] = {}
    publishes: list[int] = []

    def on_run_start(key: str, slot: float, started: float) -> None:
        if record_runs(started):
            runs.setdefault(key, []).append((slot, started))

    async def publish(key: str, value: bytes | None) -> None:
        publishes.append(0 if value is None else len(value))
        await node.set_kv(key, value)

    runner = HealthRunner(store, ExecPolicy(), ME, publish, on_run_start=on_run_start)
    view = TimedView(node)
    ann = Announcer(store, view, ME, runner)
    await nursery.start(runner.run)
    if announcer:
        await nursery.start(ann.run)
    return Agent(store, node, view, runner, ann, runs, publishes)


async def _transport(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    async with open_udp_tcp_transport(HOST, 0) as transport:
        task_status.started(transport)
        await trio.sleep_forever()


# --- figures ------------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(x: float) -> float:
    return round(1000 * x, 1)


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# --- 1. withdrawal time -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Withdrawal:
    measured: float  # service down (reaped) -> withdrawal published
    phase: float  # seconds since the latest check's scheduled start when the service went down
    deciding_overhead: float  # withdrawal - scheduled start of the check that made it unhealthy
    failing_runs: int  # checks started between the death and the withdrawal (should be U)
    kill_to_reap: float


async def withdrawal_runs(
    kind: str, reps: int, interval: float, timeout: float, unhealthy: int, rng: random.Random
) -> list[Withdrawal]:
    key = "vip/v0"
    out: list[Withdrawal] = []
    service = Service()
    try:
        (port,) = await service.start([0])
        async with trio.open_nursery() as nursery:
            agent = await start_agent(
                nursery,
                [make_vip(0, check_body(kind, port, interval, timeout, unhealthy))],
                record_runs=lambda _started: True,
            )
            withdrawn: list[float] = []

            def on_announce(at: float, value: bytes | None) -> None:
                if value is None:
                    return
                decision = from_wire(msgpack.unpackb(value), at).get(key)
                if decision is not None and decision.reason is Reason.WITHDRAWN_UNHEALTHY:
                    withdrawn.append(at)

            agent.view.listeners.append(on_announce)
            for rep in range(reps):
                if rep:
                    await service.start([port])
                with trio.fail_after(10 * interval + 30):
                    while (d := agent.announcer.decisions.get(key)) is None or d.reason is not Reason.HEALTHY:
                        await trio.sleep(0.01)
                # Kill at a random phase of the interval, in the slot after next (past the first pass).
                slot, _started = agent.runs[key][-1]
                target_phase = rng.random() * interval
                kill_at = slot + 2 * interval + target_phase
                await trio.sleep_until(kill_at)
                withdrawn.clear()
                killed, down = await service.kill()
                with trio.fail_after((unhealthy + 2) * interval + timeout + 30):
                    while not withdrawn:
                        await trio.sleep(0.01)
                at = withdrawn[0]
                runs = agent.runs[key]
                before = [s for s, st in runs if st <= down]
                deciding = max(s for s, st in runs if st <= at)
                failing = sum(1 for _s, st in runs if down < st <= at)
                w = Withdrawal(
                    measured=at - down,
                    phase=down - before[-1],
                    deciding_overhead=at - deciding,
                    failing_runs=failing,
                    kill_to_reap=down - killed,
                )
                out.append(w)
                print(
                    f"  {kind} {rep + 1}/{reps}: down at phase {w.phase:.3f} s, withdrawn after "
                    f"{w.measured:.3f} s (bound {interval * unhealthy:g} s, "
                    f"{ms(w.measured - interval * unhealthy):+.1f} ms; "
                    f"overhead {ms(w.deciding_overhead)} ms, "
                    f"{w.failing_runs} failing runs)",
                    flush=True,
                )
            nursery.cancel_scope.cancel()
    finally:
        await service.stop()
    return out


def withdrawal_row(
    kind: str, ws: list[Withdrawal], interval: float, timeout: float, unhealthy: int
) -> dict[str, Any]:
    bound = interval * unhealthy
    excess = [w.measured - bound for w in ws]
    over_ideal = [w.measured - (bound - w.phase) for w in ws]
    deciding = [w.deciding_overhead for w in ws]
    return {
        "type": kind,
        "reps": len(ws),
        "interval_s": interval,
        "timeout_s": timeout,
        "unhealthy_threshold": unhealthy,
        "bound_s": bound,
        "measured_p50_s": round(pct([w.measured for w in ws], 50), 4),
        "measured_p95_s": round(pct([w.measured for w in ws], 95), 4),
        "measured_max_s": round(max(w.measured for w in ws), 4),
        "minus_bound_p50_ms": ms(pct(excess, 50)),
        "minus_bound_p95_ms": ms(pct(excess, 95)),
        "minus_bound_max_ms": ms(max(excess)),
        "over_ideal_p50_ms": ms(pct(over_ideal, 50)),
        "over_ideal_p95_ms": ms(pct(over_ideal, 95)),
        "over_ideal_max_ms": ms(max(over_ideal)),
        "deciding_overhead_max_ms": ms(max(deciding)),
        "failing_runs": sorted({w.failing_runs for w in ws}),
        "kill_to_reap_max_ms": ms(max(w.kill_to_reap for w in ws)),
        "within_target": max(excess) <= TARGET_EXCESS,
    }


# --- 2. load ------------------------------------------------------------------------------------------


class GcPauses:
    """Collections of the oldest generation (the ones long enough to delay checks) while installed."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.young = 0.0
        self._start = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif info["generation"] == 2:
            self.pauses.append(time.perf_counter() - self._start)
        else:
            self.young += time.perf_counter() - self._start


def raise_nofile(need: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need and soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


async def load_run(
    kind: str,
    checks: int,
    listeners: int,
    interval: float,
    timeout: float,
    warmup: float,
    duration: float,
    announcer: bool,
    freeze: bool,
) -> dict[str, Any]:
    service = Service()
    try:
        ports = await service.start([0] * listeners)
        vips = [
            make_vip(i, check_body(kind, ports[i % len(ports)], interval, timeout, 3)) for i in range(checks)
        ]
        window: list[float] = [math.inf, math.inf]  # [start, end) of the measured window
        async with trio.open_nursery() as nursery:
            agent = await start_agent(
                nursery,
                vips,
                record_runs=lambda started: window[0] <= started < window[1],
                announcer=announcer,
            )
            plans = [0]
            step = agent.announcer.step

            async def counted_step() -> None:
                plans[0] += 1
                await step()

            agent.announcer.step = counted_step  # type: ignore[method-assign]
            if freeze:  # as `wiremesh agent` does once started: keep startup objects out of collections
                gc.freeze()
            await trio.sleep(warmup)
            with GcPauses() as gc_pauses:
                window[0] = trio.current_time()
                cpu0, wall0 = time.process_time(), time.monotonic()
                helper0 = process_usage(service.pid)[0]
                plans0, publishes0 = plans[0], len(agent.publishes)
                await trio.sleep(duration)
                window[1] = trio.current_time()
            cpu1, wall1 = time.process_time(), time.monotonic()
            helper1 = process_usage(service.pid)[0]
            plans1, publishes1 = plans[0], len(agent.publishes)
            states = [s.state for s in agent.runner.states.values()]
            failed = sum(1 for s in agent.runner.states.values() if s.last_ok is False)
            nursery.cancel_scope.cancel()
    finally:
        await service.stop()
        if freeze:
            gc.unfreeze()
    late = [st - s for runs in agent.runs.values() for s, st in runs]
    elapsed = wall1 - wall0
    expected = checks * duration / interval
    return {
        "type": kind,
        "checks": checks,
        "listeners": listeners,
        "interval_s": interval,
        "timeout_s": timeout,
        "announcer": announcer,
        "duration_s": round(elapsed, 1),
        "runs": len(late),
        "runs_expected": round(expected),
        "cpu_pct": round(100 * (cpu1 - cpu0) / elapsed, 1),
        "helper_cpu_pct": round(100 * (helper1 - helper0) / elapsed, 1),
        "late_p50_ms": ms(pct(late, 50)),
        "late_p99_ms": ms(pct(late, 99)),
        "late_max_ms": ms(max(late)),
        "gc_freeze": freeze,
        "gc_full_collections": len(gc_pauses.pauses),
        "gc_full_max_ms": ms(max(gc_pauses.pauses, default=0.0)),
        "gc_pct": round(100 * (sum(gc_pauses.pauses) + gc_pauses.young) / elapsed, 1),
        "plans_per_s": round((plans1 - plans0) / elapsed, 1),
        "publishes_per_s": round((publishes1 - publishes0) / elapsed, 1),
        "health_value_bytes": agent.publishes[-1] if agent.publishes else 0,
        "healthy_at_end": states.count("healthy"),
        "last_run_failed": failed,
        "within_target": pct(late, 99) < TARGET_P99,
    }


# --- main ---------------------------------------------------------------------------------------------


def print_withdrawals(rows: list[dict[str, Any]]) -> None:
    print()
    print("Withdrawal time (service killed at a random phase -> Announcer publishes withdrawn_unhealthy)")
    print(
        f"{'type':>4} {'reps':>4} {'bound s':>7} {'measured p50/p95/max s':>24} "
        f"{'- bound p50/p95/max ms':>24} {'over ideal p50/p95/max ms':>26} {'fails':>5} {'ok':>3}"
    )
    for r in rows:
        measured = f"{r['measured_p50_s']:.3f}/{r['measured_p95_s']:.3f}/{r['measured_max_s']:.3f}"
        minus = f"{r['minus_bound_p50_ms']}/{r['minus_bound_p95_ms']}/{r['minus_bound_max_ms']}"
        over = f"{r['over_ideal_p50_ms']}/{r['over_ideal_p95_ms']}/{r['over_ideal_max_ms']}"
        fails = ",".join(map(str, r["failing_runs"]))
        ok = "yes" if r["within_target"] else "NO"
        print(
            f"{r['type']:>4} {r['reps']:>4} {r['bound_s']:>7g} {measured:>24} {minus:>24} {over:>26} "
            f"{fails:>5} {ok:>3}"
        )
    print(
        "  bound = interval x unhealthy threshold; ideal = bound - phase; target: measured - bound <= "
        f"{ms(TARGET_EXCESS):g} ms"
    )


def print_loads(rows: list[dict[str, Any]]) -> None:
    print()
    print("Load (one agent, checks spread over the interval; CPU % of one core)")
    print(
        f"{'type':>4} {'checks':>6} {'window s':>8} {'runs':>7} {'CPU %':>6} {'helper %':>8} "
        f"{'late p50/p99/max ms':>20} {'full GCs':>8} {'GC max ms':>9} {'plans/s':>7} {'pub/s':>5} "
        f"{'healthy':>7} {'ok':>3}"
    )
    for r in rows:
        late = f"{r['late_p50_ms']}/{r['late_p99_ms']}/{r['late_max_ms']}"
        ok = "yes" if r["within_target"] else "NO"
        print(
            f"{r['type']:>4} {r['checks']:>6} {r['duration_s']:>8} {r['runs']:>7} {r['cpu_pct']:>6} "
            f"{r['helper_cpu_pct']:>8} {late:>20} {r['gc_full_collections']:>8} {r['gc_full_max_ms']:>9} "
            f"{r['plans_per_s']:>7} {r['publishes_per_s']:>5} "
            f"{r['healthy_at_end']:>7} {ok:>3}"
        )
    print(f"  lateness = actual start - scheduled slot; target: p99 < {ms(TARGET_P99):g} ms")


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    result: dict[str, Any] = {"loadavg_before": loadavg(), "withdrawal": [], "load": []}
    print(f"load average: {result['loadavg_before']}", flush=True)
    if not args.skip_withdraw:
        for kind in args.withdraw_types:
            ws = await withdrawal_runs(kind, args.reps, args.interval, args.timeout, args.unhealthy, rng)
            result["withdrawal"].append(withdrawal_row(kind, ws, args.interval, args.timeout, args.unhealthy))
    if not args.skip_load:
        limits = raise_nofile(4 * args.checks + 256)
        print(f"RLIMIT_NOFILE: {limits[0]} (hard {limits[1]})", flush=True)
        for kind in args.load_types:
            print(
                f"  load: {args.checks} {kind} checks, {args.warmup:g} s warm-up, {args.duration:g} s",
                flush=True,
            )
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            row = await load_run(
                kind,
                args.checks,
                args.listeners,
                args.interval,
                args.timeout,
                args.warmup,
                args.duration,
                not args.no_announcer,
                args.gc_freeze,
            )
            if profiler is not None:
                profiler.disable()
                path = f"{args.profile}.{kind}"
                profiler.dump_stats(path)
                print(f"  profile: {path}", flush=True)
            result["load"].append(row)
    result["loadavg_after"] = loadavg()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=20, help="withdrawals per check type (default 20)")
    parser.add_argument("--withdraw-types", nargs="+", choices=["tcp", "http"], default=["tcp", "http"])
    parser.add_argument("--interval", type=float, default=1.0, help="check interval, s (default 1)")
    parser.add_argument("--timeout", type=float, default=0.5, help="check timeout, s (default 0.5)")
    parser.add_argument("--unhealthy", type=int, default=3, help="unhealthy threshold (default 3)")
    parser.add_argument("--checks", type=int, default=1000, help="checks in the load run (default 1000)")
    parser.add_argument("--listeners", type=int, default=8, help="listening ports they share (default 8)")
    parser.add_argument("--load-types", nargs="+", choices=["tcp", "http"], default=["tcp", "http"])
    parser.add_argument("--warmup", type=float, default=5.0, help="s before the window (default 5)")
    parser.add_argument("--duration", type=float, default=60.0, help="measured window, s (default 60)")
    parser.add_argument("--no-announcer", action="store_true", help="load run: the HealthRunner alone")
    parser.add_argument(
        "--no-gc-freeze",
        dest="gc_freeze",
        action="store_false",
        help="load run: skip the gc.freeze() that `wiremesh agent` does once started",
    )
    parser.add_argument("--skip-withdraw", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--seed", type=int, default=1, help="for the kill phases")
    parser.add_argument("--profile", metavar="PATH", help="cProfile each load run into PATH.<type>")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve)
        return 0
    result = trio.run(bench, args)
    if result["withdrawal"]:
        print_withdrawals(result["withdrawal"])
    if result["load"]:
        print_loads(result["load"])
    print(f"\nload average: before {result['loadavg_before']}, after {result['loadavg_after']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
