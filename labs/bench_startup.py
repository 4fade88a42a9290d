"""What one client machine costs: the agent's start-up time, and the RSS and idle CPU of the agent,
its ExaBGP speaker and ExaBGP's API bridge, with BGP on and one peer (BIRD) in network namespaces.

Per run: a fresh state directory, the agent spawned, and timed until ``GET /healthz`` answers (polled
every 10 ms over the namespace's loopback), in wall-clock time and in the agent's CPU time (which
other load on the machine barely moves); then, once BIRD's session is Established and ``--settle``
seconds have passed, each process's RSS (``/proc/PID/status``), PSS and USS (``smaps_rollup``), its CPU
over ``--window`` seconds (utime + stime from ``/proc/PID/stat``) and its wakeups over the same window
(context switches of its threads). The figures are the median of ``--runs`` runs; ``/proc/loadavg`` is
printed beside them because another job on the machine skews CPU and start-up time.

    python -m labs.bench_startup                         # 3 runs, BGP on, 10 s settle, 20 s window
    python -m labs.bench_startup --runs 5 --window 60
    python -m labs.bench_startup --no-bgp                # the agent alone
    python -m labs.bench_startup --env WIREMESH_X=1      # extra environment for the agent (A/B a lever)

Needs root, ``ip`` and Debian's ``bird2`` (for ``--no-bgp``, only ``ip``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from labs.kit.bird import bird_edge_conf
from labs.kit.netns import Agent, NetnsLab
from labs.kit.proc import cmdline, cpu_seconds, sh, smaps_mib
from labs.kit.wait import eventually_blocking

ROUTER, EDGE = "198.18.0.1", "198.18.0.10"
ROUTER_AS, MESH_AS = 65000, 64512
HTTP_PORT = 7947

BGP_CONF = f"""
[bgp]
enabled = true
asn = {MESH_AS}
drain_time = 0

[[bgp.peers]]
address = "{ROUTER}"
peer_asn = {ROUTER_AS}
local_address = "{EDGE}"
hold_time = 90
"""


@dataclass(frozen=True)
class Sample:
    """One process's figures in one run."""

    rss_mib: float
    cpu_pct: float
    wakeups_per_s: float


def cpu_s(pid: int) -> float:
    used = cpu_seconds(pid)
    if used is None:
        raise RuntimeError(f"pid {pid} is gone")
    return used


def switches(pid: int) -> dict[int, int]:
    """Context switches of each thread of ``pid``: how often it went to sleep and was woken. Compare
    two readings over the threads present in both (Trio's worker threads come and go)."""
    out: dict[int, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a worker thread that ended
        out[int(task.name)] = sum(
            int(line.split()[1])
            for line in text.splitlines()
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"))
        )
    return out


def roles(ns: str) -> dict[str, int]:
    """The pids of the agent, ExaBGP and the bridge in namespace ``ns``, by their command lines."""
    found: dict[str, int] = {}
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        argv = cmdline(int(pid))
        if any(a.endswith("bridge.py") for a in argv):
            found["bridge"] = int(pid)
        elif any(a.endswith("/exabgp") for a in argv) and "server" in argv:
            found["exabgp"] = int(pid)
        elif "agent" in argv and "-m" in argv:
            found["agent"] = int(pid)
    return found


def healthz(lab: NetnsLab, agent: Agent) -> bool:
    """True once the agent's API answers ``GET /healthz`` with 200 (over the namespace's loopback)."""
    try:
        return lab.request(agent, "GET", "/healthz", timeout=2)[0] == 200
    except OSError:
        return False


def one_run(bgp: bool, settle: float, window: float, env: dict[str, str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="wm-bench-startup-") as tmp, NetnsLab(Path(tmp)) as lab:
        ns = lab.add_node("edge", [EDGE])
        if bgp:
            lab.add_node("router", [ROUTER])
            bird = lab.start_bird(
                "router",
                bird_edge_conf(
                    router_id=ROUTER, local=ROUTER, local_as=ROUTER_AS, neighbor=EDGE, neighbor_as=MESH_AS
                ),
            )
        agent = lab.agent("edge", "edge1", EDGE, BGP_CONF if bgp else "", http_port=HTTP_PORT)
        started = time.monotonic()
        agent.proc = lab.spawn(
            agent.name, ns, [sys.executable, "-m", "agent", "agent", "--config", str(agent.config)], env
        )
        eventually_blocking(lambda: healthz(lab, agent), what="/healthz", timeout=60, poll=0.01)
        out: dict[str, float] = {"startup_s": time.monotonic() - started}
        # CPU the agent spent getting there: unlike the wall-clock time, barely moved by other load.
        out["startup_cpu_s"] = cpu_s(agent.proc.pid)
        if bgp:
            eventually_blocking(
                lambda: "Established" in bird.birdc("show", "protocols"),
                what="BIRD's session to Established",
                timeout=120,
                poll=0.2,
            )
        time.sleep(settle)
        pids = roles(ns)
        want = {"agent", "exabgp", "bridge"} if bgp else {"agent"}
        if set(pids) != want:
            raise RuntimeError(f"expected {sorted(want)} in {ns}, found {pids}: {lab.tail(agent)}")
        before = {r: (cpu_s(p), switches(p)) for r, p in pids.items()}
        time.sleep(window)
        for role, pid in pids.items():
            used, now = cpu_s(pid) - before[role][0], switches(pid)
            ctx = sum(n - before[role][1][tid] for tid, n in now.items() if tid in before[role][1])
            smaps = smaps_mib(pid)
            out[f"{role}_rss_mib"] = smaps["Rss"]
            out[f"{role}_pss_mib"], out[f"{role}_uss_mib"] = smaps["Pss"], smaps["Uss"]
            out[f"{role}_cpu_pct"] = 100 * used / window
            out[f"{role}_wakeups_per_s"] = ctx / window
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--settle", type=float, default=10.0, help="seconds after Established before measuring"
    )
    parser.add_argument("--window", type=float, default=20.0, help="seconds over which CPU is measured")
    parser.add_argument("--no-bgp", action="store_true", help="the agent alone, BGP off")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the agent's environment")
    parser.add_argument("--json", type=Path, help="also write the runs and medians here")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    runs = []
    for i in range(args.runs):
        load = Path("/proc/loadavg").read_text().split()[:3]
        run = one_run(not args.no_bgp, args.settle, args.window, env)
        runs.append(run)
        figures = "  ".join(f"{k}={v:.3g}" for k, v in run.items())
        print(f"run {i + 1}: loadavg {' '.join(load)}  {figures}", flush=True)
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"median of {args.runs} (loadavg now {Path('/proc/loadavg').read_text().strip()}):")
    print(
        f"  start-up (spawn to /healthz 200)  {medians['startup_s']:.2f} s wall,"
        f" {medians['startup_cpu_s']:.2f} s of the agent's CPU"
    )
    total_rss = total_cpu = 0.0
    for role in ("agent", "exabgp", "bridge"):
        if f"{role}_rss_mib" in medians:
            rss, uss, cpu, wake = (
                medians[f"{role}_{what}"] for what in ("rss_mib", "uss_mib", "cpu_pct", "wakeups_per_s")
            )
            total_rss, total_cpu = total_rss + rss, total_cpu + cpu
            print(
                f"  {role:8} RSS {rss:6.1f} MiB  USS {uss:6.1f} MiB  CPU {cpu:5.2f} %  wakeups {wake:6.1f}/s"
            )
    # ExaBGP and the bridge share the interpreter and the C libraries with the agent: what the machine
    # spends on the three is the agent's RSS plus the pages only they have.
    machine = medians["agent_rss_mib"] + medians.get("exabgp_uss_mib", 0) + medians.get("bridge_uss_mib", 0)
    print(f"  total    RSS {total_rss:6.1f} MiB (shared pages counted in each)  CPU {total_cpu:5.2f} %")
    print(f"  machine  {machine:6.1f} MiB (agent RSS + ExaBGP USS + bridge USS)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "median": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
