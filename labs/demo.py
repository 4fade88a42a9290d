"""``make demo``: wiremesh at work on an emulated site, next to ExaBGP's healthcheck and keepalived.

Two lab scenarios with a narrative: what is about to happen, what happened, the figures.

1. **vip-failover** (:mod:`labs.vip_failover`): a VIP on three machines with an HTTP health check; the
   machine the router sends traffic to starts failing; how fast the client's requests move elsewhere.
2. **holdoff** (:mod:`labs.holdoff`): every machine's service restarts at once; with a holdoff the
   VIP stays announced (nothing better exists), without one the router blackholes it.

Each act builds its own site (mininet: a BIRD 2 router, a client, three machines running the real
agent) and removes it afterwards, also on Ctrl-C: running the demo twice is safe. Results are written
to ``labs/results/`` (JSON and PNG) as by the scenarios themselves.

    python -m labs.demo [--quick]
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import Any

from labs import holdoff, report, vip_failover
from labs.kit.netns import require_root_and_tools
from labs.site import EXA_VIP, VIP, VRRP_VIP, Check


def say(text: str) -> None:
    print("\n" + textwrap.fill(" ".join(text.split()), width=100) + "\n", flush=True)


def act_failover(rounds: int) -> dict[str, Any]:
    c = Check()
    say(f"""ACT 1 - failover. A site: one upstream router running BIRD 2, a client behind it, and three
        machines m1 m2 m3 on one LAN, each running the wiremesh agent and a small web service that answers
        with its machine's name. The agents find each other over gossip and each peers with the router
        over BGP. We create VIP {VIP} on all three, with an HTTP check every {c.interval:g} s (down after
        {c.fall} failures, up after {c.rise} passes): every healthy machine announces it, and the router
        sends the client to one of them. In the same site, for comparison, ExaBGP's own healthcheck
        announces {EXA_VIP} and keepalived (VRRP) holds {VRRP_VIP}, checking the same service the same
        way. Then the machine everybody serves from starts answering 503. Watch the client move.""")
    data = vip_failover.run(rounds=rounds, observe=6.0)
    ours, exa, ka = data["ours"], data["exabgp"], data["keepalived"]
    bound = c.interval * c.fall
    say(f"""What happened: the failing machine's agent saw {c.fall} failed checks, withdrew the VIP, and
        the router moved the client to {ours["rounds"][0]["moved_to"]}. The client was served again after
        {report.fmt(ours["client_moved_s_mean"])} on average (BIRD's table changed after
        {report.fmt(ours["bird_changed_s_mean"])}); the bound set by the check is about {bound:g} s.
        ExaBGP's healthcheck: {report.fmt(exa["client_moved_s_mean"])}; keepalived:
        {report.fmt(ka["client_moved_s_mean"])}. Time to move, ours/theirs:
        {data["ratios"]["client_moved_ours_over_exabgp"]} against ExaBGP,
        {data["ratios"]["client_moved_ours_over_keepalived"]} against keepalived (below 1: ours was faster;
        one round varies with where in the check interval the fault fell).""")
    return data


def act_holdoff(outage: float, hold: float) -> dict[str, Any]:
    say(f"""ACT 2 - holdoff. A deploy restarts the service on all three machines at the same moment; it
        is down for {outage:g} s everywhere. Withdrawing the VIP everywhere helps nobody: the router then
        has no route at all, and after the restart the VIP must be announced again before the first
        request gets through. With a holdoff of {hold:g} s a machine keeps announcing while no other
        machine is healthy. We run the restart twice: holdoff {hold:g} s, then holdoff 0, and count the
        seconds BIRD has no route. ExaBGP's healthcheck (no holdoff) runs alongside.""")
    data = holdoff.run(holdoff=hold, outage=outage)
    with_h, without = data["rounds"][0], data["rounds"][1]
    say(f"""What happened: with holdoff {hold:g} s BIRD had no route to the VIP for
        {with_h["ours"]["no_route_s"]:.1f} s, and the client was served
        {report.fmt(with_h["ours"]["served_again_after_restart_s"])} after the services came back. With
        holdoff 0: {without["ours"]["no_route_s"]:.1f} s without a route (the blackhole holdoff avoids),
        served {report.fmt(without["ours"]["served_again_after_restart_s"])} after the restart. ExaBGP's
        healthcheck had no route for {with_h["exabgp"]["no_route_s"]:.1f} s.""")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one failover round, a 6 s outage")
    args = parser.parse_args(argv)
    why = require_root_and_tools("keepalived")
    if why:
        print(f"cannot run the demo: {why}", file=sys.stderr)
        return 2
    act_failover(rounds=1 if args.quick else 2)
    act_holdoff(outage=6.0 if args.quick else 10.0, hold=30.0)
    say("""Done: every namespace, link and process the demo made is gone. The figures and plots are in
        labs/results/ (vip_failover.json/.png, holdoff.json/.png). Run one scenario alone with
        `wiremesh lab vip-failover` or `python -m labs.holdoff --help`.""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
