"""transit: two machines behind NAT that cannot reach each other directly relay through a third.

The site's three machines run the agent with WireGuard (wireguard-go) on; the mesh comes up direct.
Then m1 and m2 are put behind NAT (:meth:`labs.site.Site.nat`: UDP between them dropped both ways,
MASQUERADE on what leaves each). Measured, with a ping from m1 to m2's mesh address every 200 ms
(bounded count; TTL 64 = direct, 63 = through a relay):

* **time to transit**: from the NAT to both agents reporting ``transit via m3`` and to the first reply
  that went through the relay;
* **traffic keeps flowing**: replies received while transit carries it (``--hold`` seconds);
* **fail-back**: from lifting the NAT to both agents reporting ``direct`` and the first direct reply.

    python -m labs.transit [--hold 10]

Writes ``labs/results/transit.json`` and ``.png``. Needs root, wireguard-go and ``make deps``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from labs import report
from labs.kit.netns import require_root_and_tools
from labs.kit.proc import Proc
from labs.kit.wait import eventually_blocking
from labs.report import NONE_LABEL, Timeline
from labs.site import Site, sampler

NAME = "transit"
PING = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+) ttl=(\d+)")


def paths(site: Site, name: str) -> dict[str, str]:
    """Peer name -> path (``direct``, ``transit via X``, ``unreachable``) as machine ``name`` reports."""
    agent = site.machines[name].agent
    assert agent is not None
    try:
        status, view = site.lab.request(agent, "GET", "/v1/peers", timeout=3)
    except OSError:
        return {}
    if status != 200:
        return {}
    return {str(p["name"]): str(p["path"]) for p in view["peers"]}


def pair(site: Site, a: str, b: str) -> tuple[str | None, str | None]:
    return paths(site, a).get(b), paths(site, b).get(a)


def replies(proc: Proc) -> list[tuple[float, int]]:
    """(time, TTL) of every echo reply in ``ping -D``'s output."""
    out = []
    for line in proc.log.read_text(errors="replace").splitlines():
        found = PING.match(line)
        if found:
            out.append((float(found.group(1)), int(found.group(3))))
    return out


def all_direct(site: Site) -> bool:
    names = list(site.machines)
    for n in names:
        view = paths(site, n)
        if any(view.get(o) != "direct" for o in names if o != n):
            return False
    return True


def run(
    *, hold: float = 10.0, write: bool = True, quiet: bool = False, results: Path = report.RESULTS
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    with Site(wireguard=True) as site:
        tl.say("site up: 3 machines on a Linux bridge (mininet), agents with WireGuard (wireguard-go)")
        site.start_agents()
        site.wait_mesh()
        eventually_blocking(
            lambda: all_direct(site), what="every WireGuard path direct", timeout=60, poll=0.5
        )
        tl.say("the mesh is up: every pair of machines direct")
        m2 = site.machines["m2"]
        count = int((hold + 120) / 0.2)  # bounded: more than the scenario can last
        ping = site.lab.spawn(
            "ping",
            site.machines["m1"].ns,
            ["ping", "-n", "-D", "-i", "0.2", "-W", "1", "-c", str(count), m2.mesh],
        )
        with sampler(lambda: pair(site, "m1", "m2"), every=0.25) as samples:
            time.sleep(2.0)
            t_nat = time.time()
            site.nat("m1", "m2")
            tl.say("m1 and m2 are now behind NAT: no UDP between them, MASQUERADE on the way out", t_nat)
            eventually_blocking(
                lambda: pair(site, "m1", "m2") == ("transit via m3", "transit via m3"),
                what="m1 and m2 to route through m3",
                timeout=60,
                poll=0.2,
            )
            t_transit = time.time()
            tl.say("both agents report: transit via m3", t_transit)
            time.sleep(hold)
            t_lift = site.lift_nat()
            tl.say("NAT lifted", t_lift)
            eventually_blocking(
                lambda: pair(site, "m1", "m2") == ("direct", "direct"),
                what="m1 and m2 to fail back to direct",
                timeout=90,
                poll=0.2,
            )
            t_back = time.time()
            tl.say("both agents report: direct", t_back)
            time.sleep(3.0)
        site.lab.stop(ping, timeout=5)
        got = replies(ping)
    relayed = report.first_after(
        got_lane := [(t, str(ttl)) for t, ttl in got], t_nat, lambda ttl: ttl == "63"
    )
    direct_again = report.first_after(got_lane, t_lift, lambda ttl: ttl == "64")
    during = [ttl for t, ttl in got if t_transit <= t <= t_lift]
    data: dict[str, Any] = {
        "scenario": "transit",
        "site": site.token,  # names its links and namespaces: what a cleanup check looks for
        "time_to_transit_s": round(t_transit - t_nat, 3),
        "first_relayed_reply_s": None if relayed is None else round(relayed - t_nat, 3),
        "replies_while_in_transit": len(during),
        "expected_while_in_transit": int((t_lift - t_transit) / 0.2),
        "relayed_share_while_in_transit": round(sum(1 for x in during if x == 63) / len(during), 3)
        if during
        else 0.0,
        "fail_back_s": round(t_back - t_lift, 3),
        "first_direct_reply_after_lift_s": None if direct_again is None else round(direct_again - t_lift, 3),
    }
    tl.say(
        f"time to transit {data['time_to_transit_s']:.2f} s (first relayed reply after "
        f"{report.fmt(data['first_relayed_reply_s'])}); "
        f"{len(during)} of ~{data['expected_while_in_transit']} "
        f"pings answered in transit; fail-back {data['fail_back_s']:.2f} s"
    )
    lanes = {
        "ping m1 → m2 (TTL)": [(t, {"64": "direct", "63": "relayed"}.get(ttl, ttl)) for t, ttl in got_lane],
        "m1's path to m2": [(t, v[0] or NONE_LABEL) for t, v in samples if isinstance(v, tuple)],
    }
    marks = [(t_nat, "NAT"), (t_lift, "NAT lifted")]
    report.save(NAME, "transit: m1-m2 behind NAT", data, tl, lanes, marks, results, write_files=write)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.transit", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--hold", type=float, default=10.0, help="seconds in transit before the NAT is lifted"
    )
    args = parser.parse_args(argv)
    why = require_root_and_tools("wireguard-go", "ping")
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(hold=args.hold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
