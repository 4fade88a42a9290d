"""Gossip figures from real agent processes on loopback (memberlist LAN defaults, encryption on).

For each cluster size: idle CPU % (of one core) and RSS per agent, then several SIGKILLs, each
followed by a restart of the victim: detection time of each kill as the time until the first and
the last surviving agent logged it dead. Reports p50 and max.

    python -m labs.bench_gossip_real                 # N = 5, 10, 20; 9 kills each
    python -m labs.bench_gossip_real --sizes 10 --kills 15
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from labs.kit.localcluster import LocalCluster, process_usage

RESULTS = Path(__file__).parent / "results"


def idle_usage(cluster: LocalCluster, window: float) -> tuple[list[float], list[int]]:
    """CPU % of one core and RSS bytes of every running agent over ``window`` seconds."""
    pids = [a.process.pid for a in cluster.agents.values() if a.process is not None and a.running]
    before = {pid: process_usage(pid)[0] for pid in pids}
    t0 = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - t0
    cpu, rss = [], []
    for pid in pids:
        used, resident = process_usage(pid)
        cpu.append(100.0 * (used - before[pid]) / elapsed)
        rss.append(resident)
    return cpu, rss


def one_kill(cluster: LocalCluster, victim: str, timeout: float) -> tuple[float, float]:
    survivors = [a for a in cluster.agents if a != victim and cluster.agents[a].running]
    cluster.read_events()  # skip what is already logged
    killed = cluster.kill(victim, signal.SIGKILL)
    cluster.wait_exit(victim)
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(survivors) and time.monotonic() < deadline:
        time.sleep(0.2)
        for e in cluster.read_events():
            if e.member == victim and e.event == "dead" and e.at >= killed:
                seen.setdefault(e.observer, e.at - killed)
    if len(seen) < len(survivors):
        raise TimeoutError(f"only {len(seen)}/{len(survivors)} saw {victim} dead within {timeout}s")
    return min(seen.values()), max(seen.values())


def run_size(n: int, kills: int, idle_window: float, workdir: Path) -> dict[str, Any]:
    with LocalCluster(n, workdir / f"n{n}", cluster=f"bench{n}") as cluster:
        cluster.start_all()
        cluster.wait_converged(timeout=60 + n)
        time.sleep(3.0)
        cpu, rss = idle_usage(cluster, idle_window)
        firsts, lasts = [], []
        names = list(cluster.agents)
        for i in range(kills):
            victim = names[1 + i % (n - 1)]  # never the seed, so restarts can rejoin through it
            first, last = one_kill(cluster, victim, timeout=120)
            firsts.append(first)
            lasts.append(last)
            print(f"  N={n} kill {i + 1}/{kills} {victim}: first {first:.2f}s, last {last:.2f}s", flush=True)
            cluster.start(victim)
            cluster.wait_converged(timeout=60)
            time.sleep(1.0)
    return {
        "n": n,
        "kills": kills,
        "detect_first_p50_s": round(statistics.median(firsts), 2),
        "detect_last_p50_s": round(statistics.median(lasts), 2),
        "detect_last_max_s": round(max(lasts), 2),
        "idle_cpu_pct_mean": round(statistics.mean(cpu), 2),
        "idle_cpu_pct_max": round(max(cpu), 2),
        "rss_mb_mean": round(statistics.mean(rss) / 2**20, 1),
        "rss_mb_max": round(max(rss) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 20])
    parser.add_argument("--kills", type=int, default=9)
    parser.add_argument("--idle-window", type=float, default=20.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="wiremesh-bench-"))
    rows = []
    try:
        for n in args.sizes:
            rows.append(run_size(n, args.kills, args.idle_window, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"{'N':>3} {'kills':>5} {'first p50':>9} {'last p50':>8} {'last max':>8} "
        f"{'idle CPU % mean/max':>19} {'RSS MB mean/max':>15}"
    )
    for r in rows:
        print(
            f"{r['n']:>3} {r['kills']:>5} {r['detect_first_p50_s']:>9} {r['detect_last_p50_s']:>8} "
            f"{r['detect_last_max_s']:>8} {r['idle_cpu_pct_mean']:>9}/{r['idle_cpu_pct_max']:<9} "
            f"{r['rss_mb_mean']:>7}/{r['rss_mb_max']:<7}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_gossip_real.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
