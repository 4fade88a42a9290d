"""Gossip figures from the discrete-event simulator (memberlist LAN defaults).

For each cluster size and loss rate: false deaths over a steady window, detection time of a killed
member (first and last member to know), time for a metadata update to reach 99.9% and 100% of the
live members, bytes sent per member per second, and how fast the simulation itself runs.

    python -m labs.bench_gossip_sim                # N = 50, 200, 1000 at 0%, 5%, 10% loss
    python -m labs.bench_gossip_sim --sizes 50 200 --steady 60
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from gossip import EventKind, Simulation

RESULTS = Path(__file__).parent / "results"


@dataclass
class Figures:
    n: int
    loss: float
    false_deaths: int
    false_suspicions: int
    detect_first_s: float | None
    detect_last_s: float | None
    detected_by: int
    update_999_s: float | None
    update_100_s: float | None
    update_reached: int
    bytes_per_member_s: float
    sim_seconds_per_wall_second: float


def _quantile_time(times: list[float], need: int) -> float | None:
    return round(sorted(times)[need - 1], 3) if len(times) >= need else None


def run_one(n: int, loss: float, steady: float, seed: int) -> Figures:
    wall0 = time.perf_counter()
    sim = Simulation(n, loss=loss, seed=seed)
    sim.join_all(stagger=0.02)
    sim.run_until(sim.now + 20.0)

    steady_start, bytes_start = sim.now, sim.stats.bytes
    first_event = len(sim.events)
    sim.run_until(sim.now + steady)
    steady_events = sim.events[first_event:]
    false_suspicions = sum(1 for o in steady_events if o.event.kind is EventKind.SUSPECT)
    bytes_rate = (sim.stats.bytes - bytes_start) / n / (sim.now - steady_start)

    victim = sim.names[n // 2]
    sim.kill(victim)
    killed_at, mark = sim.now, len(sim.events)
    sim.run_until(sim.now + 90.0)
    detect = [
        o.at - killed_at
        for o in sim.events[mark:]
        if o.event.kind is EventKind.DEAD and o.event.name == victim
    ]

    updater = sim.names[1]
    mark, updated_at = len(sim.events), sim.now
    sim.node(updater).set_meta(b"v2", sim.now)
    sim.run_until(sim.now + 15.0)
    spread = [
        o.at - updated_at
        for o in sim.events[mark:]
        if o.event.kind is EventKind.UPDATE and o.event.name == updater and o.observer != updater
    ]
    audience = n - 2  # everyone but the updater and the killed member

    false_deaths = sum(
        1
        for o in sim.events
        if o.event.kind is EventKind.DEAD and o.event.name != victim and o.at >= steady_start
    )
    wall = time.perf_counter() - wall0
    return Figures(
        n=n,
        loss=loss,
        false_deaths=false_deaths,
        false_suspicions=false_suspicions,
        detect_first_s=round(min(detect), 3) if detect else None,
        detect_last_s=round(max(detect), 3) if detect else None,
        detected_by=len(detect),
        update_999_s=_quantile_time(spread, math.ceil(0.999 * audience)),
        update_100_s=_quantile_time(spread, audience),
        update_reached=len(spread),
        bytes_per_member_s=round(bytes_rate, 1),
        sim_seconds_per_wall_second=round(sim.now / wall, 2),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 1000])
    parser.add_argument("--losses", type=float, nargs="+", default=[0.0, 0.05, 0.10])
    parser.add_argument(
        "--steady", type=float, default=120.0, help="simulated seconds watched for false deaths"
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    header = (
        f"{'N':>5} {'loss':>5} {'false dead':>10} {'false susp':>10} "
        f"{'detect first':>12} {'detect last':>11} "
        f"{'upd 99.9%':>9} {'upd 100%':>8} {'B/member/s':>10} {'sim s/wall s':>12}"
    )
    print(header, flush=True)
    rows = []
    for n in args.sizes:
        for loss in args.losses:
            f = run_one(n, loss, args.steady, args.seed)
            rows.append(f)
            print(
                f"{f.n:>5} {f.loss:>5.0%} {f.false_deaths:>10} {f.false_suspicions:>10} "
                f"{f.detect_first_s!s:>12} {f.detect_last_s!s:>11} {f.update_999_s!s:>9} "
                f"{f.update_100_s!s:>8} {f.bytes_per_member_s:>10} {f.sim_seconds_per_wall_second:>12}",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "bench_gossip_sim.json"
    out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
