"""vip-failover: a VIP on 3 machines with an HTTP check; the active machine's service starts failing.

Measured from the moment the service on the machine BIRD prefers starts answering 503:

* **client moved**: until the client behind the router gets its first answer from another machine;
* **BIRD changed**: until BIRD's best path for the VIP points elsewhere (``birdc`` sampled every
  100 ms), and how many requests failed meanwhile.

In the same run and topology, the baselines see the same fault (they check the same service with the
same interval, rise and fall): ExaBGP's own healthcheck announcing :data:`labs.site.EXA_VIP`
(``--withdraw-on-down``), and keepalived (VRRP) holding :data:`labs.site.VRRP_VIP` on the LAN. Ratios
ours / theirs are printed and written. The bound for every contender is about ``fall x interval``.

    python -m labs.vip_failover [--no-baselines] [--observe 12]

Writes ``labs/results/vip_failover.json`` and ``.png``. Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labs import report
from labs.kit.netns import require_root_and_tools
from labs.kit.wait import eventually_blocking
from labs.report import NONE_LABEL, Timeline
from labs.site import EXA_VIP, SERVICE_PORT, VIP, VRRP_VIP, Check, Site, sampler

NAME = "vip_failover"


def url(address: str) -> str:
    return f"http://{address}:{SERVICE_PORT}/"


def machine_of(protocol: str | None) -> str:
    """BIRD protocol ``m2`` (our agent) or ``x2`` (the ExaBGP baseline) -> machine ``m2``."""
    if protocol is None:
        return NONE_LABEL
    return "m" + protocol[1:] if protocol[0] in "mx" else protocol


def setup(site: Site, tl: Timeline, holdoff: float, baselines: bool, keepalived: bool) -> None:
    """Agents (and baselines) up, the VIP created, every contender announcing from every machine."""
    n = len(site.machines)
    tl.say(f"starting {n} agents (gossip + ExaBGP), each peering with BIRD on the router")
    site.start_agents()
    if baselines:
        tl.say("starting the ExaBGP healthcheck baseline on every machine (AS 64513, VIP " + EXA_VIP + ")")
        site.start_exabgp_baselines()
    if keepalived:
        tl.say(f"starting keepalived (VRRP) on every machine (VIP {VRRP_VIP} on the LAN)")
        site.start_keepalived()
    site.wait_mesh()
    tl.say("the agents see each other alive; BIRD has a session with every agent")
    vip = {
        "name": "web",
        "address": VIP,
        "machines": list(site.machines),
        "health_check": site.check.api(),
        "holdoff": holdoff,
    }
    site.call("POST", "/v1/vips", vip)
    c = site.check
    tl.say(
        f"VIP web {VIP} created on {', '.join(site.machines)}: HTTP check every {c.interval:g} s, "
        f"rise {c.rise}, fall {c.fall}, holdoff {holdoff:g} s"
    )
    wait_all_paths(site, baselines, keepalived)
    tl.say(f"BIRD has {n} paths to the VIP" + (" and to the ExaBGP baseline's VIP" if baselines else ""))


def wait_all_paths(site: Site, baselines: bool, keepalived: bool, timeout: float = 60) -> None:
    n = len(site.machines)
    eventually_blocking(
        lambda: len(site.bird_paths(f"{VIP}/32")[1]) == n,
        what="every machine's path to the VIP in BIRD",
        timeout=timeout,
    )
    if baselines:
        eventually_blocking(
            lambda: len(site.bird_paths(f"{EXA_VIP}/32")[1]) == n,
            what="every baseline path in BIRD",
            timeout=timeout,
        )
    if keepalived:
        eventually_blocking(site.vrrp_master, what="a VRRP master", timeout=timeout)


def same_active(site: Site, active: str, baselines: bool, keepalived: bool, timeout: float = 30) -> None:
    """Until every contender serves from ``active`` (VRRP preempts back a few seconds after recovery),
    so that one fault hits all of them."""
    if baselines:
        eventually_blocking(
            lambda: machine_of(site.bird_paths(f"{EXA_VIP}/32")[0]) == active,
            what=f"the ExaBGP baseline's best path via {active}",
            timeout=timeout,
        )
    if keepalived:
        eventually_blocking(
            lambda: site.vrrp_master() == active, what=f"{active} to be the VRRP master", timeout=timeout
        )


def bird_lanes(site: Site, baselines: bool) -> Callable[[], dict[str, str]]:
    def sample() -> dict[str, str]:
        out = {"ours": machine_of(site.bird_paths(f"{VIP}/32")[0])}
        if baselines:
            out["exabgp"] = machine_of(site.bird_paths(f"{EXA_VIP}/32")[0])
        return out

    return sample


def lanes_from(
    site: Site, client_answers: list[dict[str, Any]], samples: list[tuple[float, Any]]
) -> dict[str, list[tuple[float, str]]]:
    """Plot/metric lanes: the client's answers per VIP, BIRD's best per VIP."""
    lanes: dict[str, list[tuple[float, str]]] = {}
    names = {url(VIP): "client → ours", url(EXA_VIP): "client → exabgp", url(VRRP_VIP): "client → keepalived"}
    for a in client_answers:
        lane = names.get(a["url"], a["url"])
        lanes.setdefault(lane, []).append((a["t"], a["who"] if a["ok"] else NONE_LABEL))
    for key, lane in report.lanes_of(samples).items():
        lanes[f"BIRD best ({key})"] = lane
    return lanes


def contender(
    lanes: dict[str, list[tuple[float, str]]],
    client: str,
    bird: str | None,
    active: str,
    t_fail: float,
    until: float,
) -> dict[str, Any]:
    """Figures for one contender and one fault: client moved, BIRD changed, failed requests, where to."""
    answers = [(t, who) for t, who in lanes.get(client, []) if t <= until]
    moved = report.first_after(answers, t_fail, lambda who: who not in (active, NONE_LABEL))
    out: dict[str, Any] = {
        "active": active,
        "client_moved_s": None if moved is None else round(moved - t_fail, 3),
        "failed_requests": sum(1 for t, who in answers if t >= t_fail and who == NONE_LABEL),
        "moved_to": next(
            (who for t, who in answers if t >= t_fail and who not in (active, NONE_LABEL)), None
        ),
    }
    if bird is not None:
        samples = [(t, best) for t, best in lanes.get(bird, []) if t <= until]
        changed = report.first_after(samples, t_fail, lambda best: best != active)
        out["bird_changed_s"] = None if changed is None else round(changed - t_fail, 3)
        out["bird_best_after"] = samples[-1][1] if samples else NONE_LABEL
    return out


def run(
    *,
    machines: int = 3,
    baselines: bool = True,
    keepalived: bool = True,
    rounds: int = 3,
    observe: float = 6.0,
    check: Check | None = None,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    """``rounds`` faults, each at a random phase of the check interval, on whichever machine is active;
    the service is made healthy again and every path awaited between rounds."""
    tl = Timeline(NAME, quiet=quiet)
    check = check or Check()
    per_round: list[dict[str, Any]] = []
    marks: list[tuple[float, str]] = []
    with Site(machines_count=machines, check=check, exabgp_baseline=baselines) as site:
        tl.say(
            f"site up: router with BIRD 2, a client behind it, {machines} machines on a Linux bridge "
            "(mininet)"
        )
        setup(site, tl, 0.0, baselines, keepalived)
        urls = [url(VIP)] + ([url(EXA_VIP)] if baselines else []) + ([url(VRRP_VIP)] if keepalived else [])
        budget = 3.0 + rounds * (observe + 30.0)  # the client's loop is bounded; it is stopped at the end
        client = site.start_client(urls, duration=budget)
        with sampler(bird_lanes(site, baselines)) as samples:
            tl.say("the client sends 10 requests/s to each VIP")
            time.sleep(3.0)
            for r in range(rounds):
                active = machine_of(site.bird_paths(f"{VIP}/32")[0])
                same_active(site, active, baselines, keepalived)
                time.sleep(random.uniform(0, check.interval))  # a random phase against the checks
                t_fail = site.fail_service(active)
                marks.append((t_fail, f"{active} fails"))
                tl.say(
                    f"round {r + 1}: {active}'s service answers 503 (BIRD's best for every contender)", t_fail
                )
                time.sleep(observe)
                per_round.append({"active": active, "t_fail": t_fail})
                site.fail_service(active, failing=False)
                tl.say(f"round {r + 1}: {active}'s service healthy again; waiting for every path to return")
                wait_all_paths(site, baselines, keepalived)
                time.sleep(2.0)
        site.lab.stop(client, timeout=5)
        lanes = lanes_from(site, site.client_answers(client), samples)
    contenders = [("ours", "client → ours", "BIRD best (ours)")]
    if baselines:
        contenders.append(("exabgp", "client → exabgp", "BIRD best (exabgp)"))
    if keepalived:
        contenders.append(("keepalived", "client → keepalived", None))  # type: ignore[arg-type]
    figures: dict[str, Any] = {}
    for key, client_lane, bird_lane in contenders:
        got = [
            contender(lanes, client_lane, bird_lane, rd["active"], rd["t_fail"], rd["t_fail"] + observe)
            for rd in per_round
        ]
        figures[key] = {"rounds": got, **summarise(got)}
        s = figures[key]
        line = (
            f"{key}: client moved after {report.fmt(s['client_moved_s_mean'])} on average "
            f"(max {report.fmt(s['client_moved_s_max'])})"
        )
        if bird_lane is not None:
            line += (
                f", BIRD's best changed after {report.fmt(s['bird_changed_s_mean'])} "
                f"(max {report.fmt(s['bird_changed_s_max'])})"
            )
        tl.say(line + f"; {s['failed_requests']} requests failed in {len(got)} rounds")
    ratios: dict[str, Any] = {}
    ours = figures["ours"]
    for key in ("exabgp", "keepalived"):
        if key in figures:
            ratios[f"client_moved_ours_over_{key}"] = report.ratio(
                ours["client_moved_s_mean"], figures[key]["client_moved_s_mean"]
            )
    if "exabgp" in figures:
        ratios["bird_changed_ours_over_exabgp"] = report.ratio(
            ours["bird_changed_s_mean"], figures["exabgp"]["bird_changed_s_mean"]
        )
    for key, value in ratios.items():
        tl.say(f"ratio {key}: {value}")
    data = {
        "scenario": "vip-failover",
        "site": site.token,  # names its links and namespaces: what a cleanup check looks for
        "params": {
            "machines": machines,
            "rounds": rounds,
            "interval": check.interval,
            "timeout": check.timeout,
            "rise": check.rise,
            "fall": check.fall,
            "bound_s": check.interval * check.fall,
            "observe_s": observe,
        },
        **figures,
        "ratios": ratios,
    }
    title = "vip-failover: the active machine's service fails (dashed lines)"
    report.save(NAME, title, data, tl, lanes, marks, results, write_files=write)
    return data


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"failed_requests": sum(r["failed_requests"] for r in rounds)}
    for key in ("client_moved_s", "bird_changed_s"):
        values = [r[key] for r in rounds if r.get(key) is not None]
        out[f"{key}_mean"] = round(statistics.mean(values), 3) if values else None
        out[f"{key}_max"] = max(values) if values else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.vip_failover", description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument(
        "--no-baselines", action="store_true", help="without ExaBGP's healthcheck and keepalived"
    )
    parser.add_argument("--rounds", type=int, default=3, help="faults, each on the machine active then")
    parser.add_argument("--observe", type=float, default=6.0, help="seconds watched after each fault")
    args = parser.parse_args(argv)
    why = require_root_and_tools("keepalived") if not args.no_baselines else require_root_and_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(
        machines=args.machines,
        baselines=not args.no_baselines,
        keepalived=not args.no_baselines,
        rounds=args.rounds,
        observe=args.observe,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
