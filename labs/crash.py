"""crash: a machine dies; the mesh stops routing to it on gossip, BIRD on its hold timer.

m1 announces a VIP of its own (no check) to BIRD and, over the mesh's iBGP sessions, to m2 and m3,
which install it in their kernels. Then m1 dies (:meth:`labs.site.Site.crash`: its link goes down and
its agent, ExaBGP and everything else in it get SIGKILL, so no FIN or RST tells anyone). Measured from
the crash, side by side:

* **mesh**: until m2 and m3 have m1's route out of their kernels (gossip marks m1 dead, its paths
  are dropped at once; with the agents' default gossip timers unless ``--fast-gossip``);
* **BIRD**: until the router's table no longer has m1's route (the BGP hold timer, ``--hold-time``).

    python -m labs.crash [--hold-time 30] [--fast-gossip]

Writes ``labs/results/crash.json`` and ``.png``. Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from labs import report
from labs.kit.netns import require_root_and_tools
from labs.kit.proc import sh
from labs.kit.wait import eventually_blocking
from labs.report import NONE_LABEL, Timeline
from labs.site import FAST_GOSSIP, Site, sampler

NAME = "crash"
OWN_VIP = "100.96.1.1"


def kernel_has(site: Site, name: str) -> bool:
    return OWN_VIP in sh("ip", "-n", site.machines[name].ns, "route", "show", "proto", "200", check=False)


def run(
    *,
    hold_time: int = 30,
    fast_gossip: bool = False,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    gossip = dict(FAST_GOSSIP) if fast_gossip else {}
    with Site(hold_time=hold_time, gossip=gossip) as site:
        tl.say(
            f"site up; BGP hold time with BIRD {hold_time} s; gossip {'fast' if fast_gossip else 'default'}"
        )
        site.start_agents()
        site.wait_mesh()
        site.call("POST", "/v1/vips", {"name": "own-m1", "address": OWN_VIP, "machines": ["m1"]})
        eventually_blocking(
            lambda: site.bird_paths(f"{OWN_VIP}/32")[0] == "m1", what="BIRD to learn m1's VIP", timeout=60
        )
        eventually_blocking(
            lambda: kernel_has(site, "m2") and kernel_has(site, "m3"),
            what="m2 and m3 to install m1's VIP",
            timeout=60,
        )
        tl.say(f"m1 announces {OWN_VIP}: BIRD routes to it, m2 and m3 have it in their kernels")

        def sample() -> dict[str, str]:
            return {
                "BIRD": "m1" if site.bird_paths(f"{OWN_VIP}/32")[0] == "m1" else NONE_LABEL,
                "m2 kernel": "m1" if kernel_has(site, "m2") else NONE_LABEL,
                "m3 kernel": "m1" if kernel_has(site, "m3") else NONE_LABEL,
            }

        with sampler(sample) as samples:
            time.sleep(1.0)
            t_crash = site.crash("m1")
            tl.say("m1 crashed: link down, every process in it killed (no FIN, no RST)", t_crash)
            eventually_blocking(
                lambda: not kernel_has(site, "m2") and not kernel_has(site, "m3"),
                what="the mesh to drop m1's route",
                timeout=120,
                poll=0.05,
            )
            tl.say("m2 and m3 no longer route to m1")
            eventually_blocking(
                lambda: site.bird_paths(f"{OWN_VIP}/32")[0] is None,
                what="BIRD to drop m1's route",
                timeout=hold_time + 30,
                poll=0.05,
            )
            tl.say("BIRD no longer routes to m1 (hold timer expired)")
            time.sleep(0.5)
    lanes = report.lanes_of(samples)

    def gone(lane: str) -> float | None:
        at = report.first_after(lanes.get(lane, []), t_crash, lambda x: x == NONE_LABEL)
        return None if at is None else round(at - t_crash, 3)

    mesh = [gone("m2 kernel"), gone("m3 kernel")]
    data: dict[str, Any] = {
        "scenario": "crash",
        "params": {"hold_time": hold_time, "gossip": gossip or "defaults"},
        "mesh_dropped_s": {"m2": mesh[0], "m3": mesh[1]},
        "bird_dropped_s": gone("BIRD"),
    }
    slowest = max((m for m in mesh if m is not None), default=None)
    data["ratio_mesh_over_bird"] = report.ratio(slowest, data["bird_dropped_s"])
    tl.say(
        f"the mesh stopped routing to m1 after {report.fmt(slowest)} (gossip); BIRD after "
        f"{report.fmt(data['bird_dropped_s'])} (hold time {hold_time} s)"
    )
    report.save(
        NAME, "crash: m1 dies", data, tl, lanes, [(t_crash, "m1 crashes")], results, write_files=write
    )
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.crash", description=__doc__.split("\n")[0])
    parser.add_argument("--hold-time", type=int, default=30, help="BGP hold time between BIRD and agents")
    parser.add_argument("--fast-gossip", action="store_true", help="probe every 0.5 s, suspicion x3")
    args = parser.parse_args(argv)
    why = require_root_and_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(hold_time=args.hold_time, fast_gossip=args.fast_gossip)
    return 0


if __name__ == "__main__":
    sys.exit(main())
