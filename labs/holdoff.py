"""holdoff: the service restarts on every machine at once; holdoff keeps the VIP announced meanwhile.

The VIP's service is stopped on all machines at the same moment (a deploy that restarts everything)
and started again ``--outage`` seconds later (default 10). Two rounds: the VIP with a holdoff of
``--holdoff`` seconds (default 30), then with holdoff 0. Measured in each round, from BIRD's table
(sampled every 100 ms): the seconds during which BIRD had **no route** to the VIP (target with holdoff:
0), and how long after the services came back the client was served again (a blackhole outlives the
outage: the route must come back, ``rise x interval`` plus BGP, before the first request gets through).

ExaBGP's own healthcheck, in the same run on the same service with the same interval, rise and fall,
has no holdoff: its blackhole is measured in both rounds next to ours. So is keepalived's (VRRP on the
LAN, same check): every instance goes to FAULT when the check fails everywhere, and the VRRP VIP is on
no machine until one rises and wins an election; its "no route" is the time no machine holds the VIP
(``ip addr`` sampled), its client lane the requests to the VRRP VIP.

    python -m labs.holdoff [--holdoff 30] [--outage 10] [--no-baselines] [--no-keepalived]

Writes ``labs/results/holdoff.json`` and ``.png``. Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labs import report
from labs.kit.netns import require_root_and_tools
from labs.report import NONE_LABEL, Timeline
from labs.site import EXA_VIP, VIP, VRRP_VIP, Check, Site, sampler
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


VRRP_LANE = "VRRP master (keepalived)"


def sample_lanes(site: Site, baselines: bool, keepalived: bool) -> Callable[[], dict[str, str]]:
    """BIRD's best path for our VIP and ExaBGP's, and which machine holds the VRRP VIP."""
    bird = bird_lanes(site, baselines)

    def sample() -> dict[str, str]:
        out = bird()
        if keepalived:
            out["keepalived"] = site.vrrp_master() or NONE_LABEL
        return out

    return sample


def figures(
    lanes: dict[str, list[tuple[float, str]]], key: str, t_stop: float, t_back: float, end: float
) -> dict[str, Any]:
    """``no_route_s``: BIRD has no path (ours, ExaBGP's) or no machine holds the VRRP VIP (keepalived)."""
    bird = lanes.get(VRRP_LANE if key == "keepalived" else f"BIRD best ({key})", [])
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
    keepalived: bool | None = None,
    settle: float = 8.0,
    check: Check | None = None,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    check = check or Check()
    keepalived = baselines if keepalived is None else keepalived
    rounds: list[tuple[str, float, float, float, float]] = []  # (label, holdoff, stop, back, end)
    with Site(check=check, exabgp_baseline=baselines) as site:
        tl.say("site up: router with BIRD 2, a client behind it, 3 machines on a Linux bridge (mininet)")
        setup(site, tl, holdoff, baselines, keepalived=keepalived)
        urls = [url(VIP)] + ([url(EXA_VIP)] if baselines else []) + ([url(VRRP_VIP)] if keepalived else [])
        client = site.start_client(urls, duration=2 * (outage + settle + 40) + 5)
        with sampler(sample_lanes(site, baselines, keepalived)) as samples:
            for value in (holdoff, 0.0):
                if value != holdoff:
                    site.call("PATCH", "/v1/vips/web", {"holdoff": value})
                    tl.say(f"holdoff set to {value:g} s; waiting for every path")
                    wait_all_paths(site, baselines, keepalived=keepalived)
                    time.sleep(2.0)
                else:
                    time.sleep(2.0)
                tl.say(f"round: holdoff {value:g} s, outage {outage:g} s on every machine")
                stop, back, end = outage_round(site, tl, outage, settle)
                rounds.append((f"holdoff {value:g}", value, stop, back, end))
                wait_all_paths(site, baselines, keepalived=keepalived)
        site.lab.stop(client, timeout=5)
        lanes = lanes_from(site, site.client_answers(client), samples)
        if "BIRD best (keepalived)" in lanes:
            lanes[VRRP_LANE] = lanes.pop("BIRD best (keepalived)")
    data: dict[str, Any] = {
        "scenario": "holdoff",
        "params": {
            "holdoff": holdoff,
            "outage_s": outage,
            "interval": check.interval,
            "rise": check.rise,
            "fall": check.fall,
            "keepalived": keepalived,
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
        if keepalived:
            vrrp = entry["keepalived"] = figures(lanes, "keepalived", stop, back, end)
            tl.say(
                f"{label}: keepalived: no machine held the VRRP VIP for {vrrp['no_route_s']:.1f} s, served "
                f"{report.fmt(vrrp['served_again_after_restart_s'])} after the services came back"
            )
            entry["ratio_no_route_ours_over_keepalived"] = report.ratio(
                ours["no_route_s"], vrrp["no_route_s"]
            )
            entry["ratio_served_again_ours_over_keepalived"] = report.ratio(
                ours["served_again_after_restart_s"], vrrp["served_again_after_restart_s"]
            )
        data["rounds"].append(entry)
    marks = [(stop, f"all stop ({label})") for label, _, stop, _, _ in rounds]
    marks += [(back, "back") for _, _, _, back, _ in rounds]
    title = "holdoff: every service restarts at once"
    report.save(NAME, title, data, tl, lanes, marks, results, write_files=write)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.holdoff", description=__doc__.split("\n")[0])
    parser.add_argument("--holdoff", type=float, default=30.0)
    parser.add_argument("--outage", type=float, default=10.0)
    parser.add_argument(
        "--no-baselines", action="store_true", help="without ExaBGP's healthcheck, keepalived"
    )
    parser.add_argument("--no-keepalived", action="store_true", help="without keepalived")
    args = parser.parse_args(argv)
    keepalived = not args.no_baselines and not args.no_keepalived
    why = require_root_and_tools(*(["keepalived"] if keepalived else []))
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(holdoff=args.holdoff, outage=args.outage, baselines=not args.no_baselines, keepalived=keepalived)
    return 0


if __name__ == "__main__":
    sys.exit(main())
