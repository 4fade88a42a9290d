"""holdoff: the service restarts on every machine at once; holdoff keeps the VIP announced meanwhile.

The VIP's service is stopped on all machines at the same moment (a deploy that restarts everything)
and started again ``--outage`` seconds later (default 10). Two rounds: the VIP with a holdoff of
``--holdoff`` seconds (default 30), then with holdoff 0. Measured in each round, from BIRD's table
(sampled every 100 ms): the seconds during which BIRD had **no route** to the VIP (target with holdoff:
0), and how long after the services came back the client was served again (a blackhole outlives the
outage: the route must come back, ``rise x interval`` plus BGP, before the first request gets through).

ExaBGP's own healthcheck, in the same run on the same service with the same interval, rise and fall,
has no holdoff: its blackhole is measured in both rounds next to ours.

    python -m labs.holdoff [--holdoff 30] [--outage 10] [--no-baselines]

Writes ``labs/results/holdoff.json`` and ``.png``. Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from labs import report
from labs.report import NONE_LABEL, Timeline
from labs.site import EXA_VIP, VIP, Check, Site, require_root_and_tools, sampler
from labs.vip_failover import bird_lanes, lanes_from, setup, url, wait_all_paths

NAME = "holdoff"


def outage_round(site: Site, tl: Timeline, outage: float, settle: float) -> tuple[float, float, float]:
    """Stop every service, start them ``outage`` s later, wait ``settle`` s; (stopped, back, end)."""
    t_stop = time.time()
    for name in site.machines:
        site.stop_service(name)
    tl.say(f"every machine's service stopped at once (connections refused for {outage:g} s)", t_stop)
    time.sleep(max(0.0, t_stop + outage - time.time()))
    for name in site.machines:
        site.start_service(name)
    t_back = time.time()
    tl.say("every service is listening again", t_back)
    time.sleep(settle)
    return t_stop, t_back, time.time()


def figures(
    lanes: dict[str, list[tuple[float, str]]], key: str, t_stop: float, t_back: float, end: float
) -> dict[str, Any]:
    bird = lanes.get(f"BIRD best ({key})", [])
    client = lanes.get(f"client → {key}", [])
    served = report.first_after(client, t_back, lambda who: who != NONE_LABEL)
    return {
        "no_route_s": report.seconds_where(bird, t_stop, end, lambda best: best == NONE_LABEL),
        "served_again_after_restart_s": None if served is None else round(served - t_back, 3),
        "client_unserved_s": report.seconds_where(client, t_stop, end, lambda who: who == NONE_LABEL),
    }


def run(
    *,
    holdoff: float = 30.0,
    outage: float = 10.0,
    baselines: bool = True,
    settle: float = 8.0,
    check: Check | None = None,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    check = check or Check()
    rounds: list[tuple[str, float, float, float, float]] = []  # (label, holdoff, stop, back, end)
    with Site(check=check, exabgp_baseline=baselines) as site:
        tl.say("site up: router with BIRD 2, a client behind it, 3 machines on a Linux bridge (mininet)")
        setup(site, tl, holdoff, baselines, keepalived=False)
        urls = [url(VIP)] + ([url(EXA_VIP)] if baselines else [])
        client = site.start_client(urls, duration=2 * (outage + settle + 40) + 5)
        with sampler(bird_lanes(site, baselines)) as samples:
            for value in (holdoff, 0.0):
                if value != holdoff:
                    site.call("PATCH", "/v1/vips/web", {"holdoff": value})
                    tl.say(f"holdoff set to {value:g} s; waiting for every path")
                    wait_all_paths(site, baselines, keepalived=False)
                    time.sleep(2.0)
                else:
                    time.sleep(2.0)
                tl.say(f"round: holdoff {value:g} s, outage {outage:g} s on every machine")
                stop, back, end = outage_round(site, tl, outage, settle)
                rounds.append((f"holdoff {value:g}", value, stop, back, end))
                wait_all_paths(site, baselines, keepalived=False)
        site.lab.stop(client, timeout=5)
        lanes = lanes_from(site, site.client_answers(client), samples)
    data: dict[str, Any] = {
        "scenario": "holdoff",
        "params": {
            "holdoff": holdoff,
            "outage_s": outage,
            "interval": check.interval,
            "rise": check.rise,
            "fall": check.fall,
        },
        "rounds": [],
    }
    for label, value, stop, back, end in rounds:
        entry: dict[str, Any] = {"holdoff": value, "ours": figures(lanes, "ours", stop, back, end)}
        ours = entry["ours"]
        tl.say(
            f"{label}: BIRD had no route to our VIP for {ours['no_route_s']:.1f} s; the client was served "
            f"{report.fmt(ours['served_again_after_restart_s'])} after the services came back"
        )
        if baselines:
            exa = entry["exabgp"] = figures(lanes, "exabgp", stop, back, end)
            tl.say(
                f"{label}: ExaBGP healthcheck: no route for {exa['no_route_s']:.1f} s, served "
                f"{report.fmt(exa['served_again_after_restart_s'])} after the services came back"
            )
            entry["ratio_no_route_ours_over_exabgp"] = report.ratio(ours["no_route_s"], exa["no_route_s"])
            entry["ratio_served_again_ours_over_exabgp"] = report.ratio(
                ours["served_again_after_restart_s"], exa["served_again_after_restart_s"]
            )
        data["rounds"].append(entry)
    data["timeline"] = tl.events
    data["lanes"] = {k: [(tl.rel(t), v) for t, v in lane] for k, lane in lanes.items()}
    if write:
        path = report.write(NAME, data, results)
        marks = [(stop, f"all stop ({label})") for label, _, stop, _, _ in rounds]
        marks += [(back, "back") for _, _, _, back, _ in rounds]
        png = report.plot(NAME, "holdoff: every service restarts at once", lanes, tl.t0, marks, results)
        print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.holdoff", description=__doc__.split("\n")[0])
    parser.add_argument("--holdoff", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument("--no-baselines", action="store_true", help="without ExaBGP's healthcheck")
    args = parser.parse_args(argv)
    why = require_root_and_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(holdoff=args.holdoff, outage=args.outage, baselines=not args.no_baselines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
