"""The demo: five real agents on loopback find each other, announce a health-checked VIP, one is
killed, the rest see it die.

The VIP act: a VIP on every machine with an exec check (``test -e service-up``, run in each agent's
own directory, so removing that file "stops the service" on one machine). One machine's service
stops: it withdraws once its check crosses the unhealthy threshold, since the others are healthy.
Then every service stops at once (a global restart): with a holdoff, all keep announcing rather than
blackhole the VIP; one recovers and the others withdraw at once.

Then a timeline of who saw the killed agent suspect and dead, and when; then one agent leaves
gracefully and the others mark it left (not dead). Results go to ``labs/results/demo.json``.

    python -m labs.demo [--agents 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.cli import members_table
from labs.localcluster import LocalCluster, Seen

RESULTS = Path(__file__).parent / "results"
VIP = "web"
VIP_ADDRESS = "100.96.0.10"
SERVICE_FILE = "service-up"
INTERVAL = 1.0
UNHEALTHY_THRESHOLD = 2
HOLDOFF = 15.0


def _say(t0: float, text: str) -> None:
    print(f"[{time.time() - t0:7.2f}s] {text}", flush=True)


def _timeline(events: list[Seen], member: str, since: float) -> list[Seen]:
    return sorted((e for e in events if e.member == member and e.at >= since), key=lambda e: e.at)


def _service(cluster: LocalCluster, name: str, up: bool) -> None:
    path = cluster.state_dir(name) / SERVICE_FILE
    if up:
        path.touch()
    else:
        path.unlink(missing_ok=True)


def _vip_status(cluster: LocalCluster, observer: str) -> dict[str, Any]:
    status: dict[str, Any] = cluster.request(observer, "GET", f"/v1/vips/{VIP}")["status"]
    return status


def _announcers(cluster: LocalCluster, observer: str) -> list[str]:
    return list(_vip_status(cluster, observer)["announced_by"])


def _print_vip(cluster: LocalCluster, observer: str) -> None:
    for m in _vip_status(cluster, observer)["machines"]:
        line = (
            f"    {m['name']:<8} health {m['health']:<10} {'announcing' if m['announcing'] else 'withdrawn'}"
        )
        decision = m.get("decision") or {}
        if decision:
            line += f"  {decision['reason']}"
            if decision.get("held_seconds_left") is not None:
                line += f" ({decision['held_seconds_left']:.1f}s left)"
            if decision.get("peers"):
                line += f" ({', '.join(decision['peers'])} healthy)"
        print(line, flush=True)


def vip_act(cluster: LocalCluster, names: list[str], t0: float) -> dict[str, Any]:
    """Health-gated announcement and the holdoff, as the first machine's API reports them."""
    observer = names[0]
    result: dict[str, Any] = {}
    for name in names:
        _service(cluster, name, up=True)
    check = {
        "type": "exec",
        "target": f"test -e {SERVICE_FILE}",
        "interval": INTERVAL,
        "timeout": 0.5,
        "healthy_threshold": 2,
        "unhealthy_threshold": UNHEALTHY_THRESHOLD,
    }
    vip = {"name": VIP, "address": VIP_ADDRESS, "machines": names, "health_check": check, "holdoff": HOLDOFF}
    cluster.request(names[-1], "POST", "/v1/vips", vip)
    _say(
        t0,
        f"created VIP {VIP} ({VIP_ADDRESS}) on {names[-1]}: all {len(names)} machines, exec check "
        f"every {INTERVAL:g}s, healthy/unhealthy after 2/{UNHEALTHY_THRESHOLD}, holdoff {HOLDOFF:g}s",
    )
    everyone = sorted(names)
    at = cluster.wait_until(
        "every machine announces the VIP", lambda: _announcers(cluster, observer) == everyone, 30
    )
    _say(t0, f"announced by all {len(names)} (as {observer} sees it)")

    one = names[1]
    stopped = time.time()
    _service(cluster, one, up=False)
    _say(t0, f"service stops on {one}; the others are healthy, so it must not hold")
    at = cluster.wait_until(
        f"{one} withdraws", lambda: one not in _announcers(cluster, observer), 30, poll=0.02
    )
    bound = INTERVAL * UNHEALTHY_THRESHOLD
    result["one_fails_withdrawn_after_s"] = round(at - stopped, 2)
    _say(
        t0,
        f"{one} withdrew {at - stopped:.2f}s after its service stopped "
        f"(the checks alone take {bound - INTERVAL:g} to {bound:g}s to see it)",
    )
    _print_vip(cluster, observer)
    _service(cluster, one, up=True)
    cluster.wait_until("all announce again", lambda: _announcers(cluster, observer) == everyone, 30)
    _say(t0, f"{one}'s service is back: announced by all {len(names)} again")

    _say(t0, f"global restart: the service stops on all {len(names)} machines at once")
    stopped = time.time()
    for name in names:
        _service(cluster, name, up=False)
    time.sleep(bound + INTERVAL + 4.0)
    held = _announcers(cluster, observer)
    result["global_restart_still_announced_by"] = held
    _say(
        t0,
        f"{time.time() - stopped:.1f}s later every check is failing, and the VIP is still announced "
        f"by {len(held)}: held, not blackholed",
    )
    _print_vip(cluster, observer)
    back = names[2]
    recovered = time.time()
    _service(cluster, back, up=True)
    _say(t0, f"{back}'s service comes back")
    at = cluster.wait_until(
        f"only {back} announces", lambda: _announcers(cluster, observer) == [back], 30, poll=0.02
    )
    result["one_recovers_others_withdraw_after_s"] = round(at - recovered, 2)
    _say(
        t0,
        f"{at - recovered:.2f}s later {back} announces alone: the others withdrew the moment it was healthy",
    )
    _print_vip(cluster, observer)
    for name in names:
        _service(cluster, name, up=True)
    cluster.wait_until("all announce again", lambda: _announcers(cluster, observer) == everyone, 30)
    _say(t0, f"all services are back: announced by all {len(names)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = parser.parse_args(argv)
    n = max(3, args.agents)

    workdir = Path(tempfile.mkdtemp(prefix="wiremesh-demo-"))
    result: dict[str, object] = {"agents": n}
    try:
        with LocalCluster(n, workdir, cluster="demo", config={"allow_exec_checks": True}) as cluster:
            t0 = time.time()
            names = list(cluster.agents)
            _say(t0, f"starting {n} agents on 127.0.0.1 with an encrypted keyring (work dir {workdir})")
            cluster.start_all()
            converged = cluster.wait_converged(timeout=60)
            result["converged_after_s"] = round(converged - t0, 2)
            _say(t0, f"membership converged: every agent sees all {n} alive")
            print(members_table(cluster.members(names[0])), flush=True)
            print()
            result["vip"] = vip_act(cluster, names, t0)
            print()

            victim = names[len(names) // 2]
            survivors = [x for x in names if x != victim]
            _say(t0, f"kill -9 {victim}")
            killed = cluster.kill(victim, signal.SIGKILL)

            def all_see_dead() -> bool:
                return all(cluster.states(s).get(victim) == "dead" for s in survivors)

            cluster.wait_until(f"every survivor marks {victim} dead", all_see_dead, timeout=90)
            time.sleep(0.3)  # let the last log lines land
            print(f"\n  who saw {victim} (killed at t+{killed - t0:.2f}s) suspect and dead, and when:")
            print(f"  {'observer':<10} {'suspect':>10} {'dead':>10}")
            events = list(cluster.all_events())
            rows: dict[str, dict[str, float]] = {}
            for e in _timeline(events, victim, killed):
                if e.event in ("suspect", "dead"):
                    rows.setdefault(e.observer, {}).setdefault(e.event, e.at - killed)
            for observer in survivors:
                r = rows.get(observer, {})
                sus = f"+{r['suspect']:.2f}s" if "suspect" in r else "-"
                dead = f"+{r['dead']:.2f}s" if "dead" in r else "-"
                print(f"  {observer:<10} {sus:>10} {dead:>10}")
            dead_times = [r["dead"] for r in rows.values() if "dead" in r]
            kill: dict[str, Any] = {
                "victim": victim,
                "per_observer": rows,
                "first_dead_s": round(min(dead_times), 2) if dead_times else None,
                "last_dead_s": round(max(dead_times), 2) if dead_times else None,
            }
            result["kill"] = kill
            print()
            if dead_times:
                _say(
                    t0,
                    f"all {len(survivors)} survivors marked {victim} dead "
                    f"{min(dead_times):.2f}s to {max(dead_times):.2f}s after the kill",
                )
            announcers = _announcers(cluster, names[0])
            kill["vip_announced_by"] = announcers
            _say(
                t0, f"VIP {VIP} is now announced by {', '.join(announcers)}: a dead machine announces nothing"
            )

            leaver = survivors[-1]
            _say(t0, f"{leaver} leaves gracefully (SIGTERM)")
            left_at = cluster.kill(leaver, signal.SIGTERM)
            rest = [x for x in survivors if x != leaver]

            def all_see_left() -> bool:
                return all(cluster.states(s).get(leaver) == "left" for s in rest)

            seen_left = cluster.wait_until(
                f"everyone marks {leaver} left", all_see_left, timeout=30, poll=0.02
            )
            code = cluster.wait_exit(leaver)
            _say(
                t0,
                f"{leaver} exited with code {code}; all others mark it left "
                f"{seen_left - left_at:.2f}s after SIGTERM",
            )
            result["leave"] = {
                "member": leaver,
                "exit_code": code,
                "seen_left_s": round(seen_left - left_at, 2),
            }
            print(members_table(cluster.members(names[0])), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "demo.json").write_text(json.dumps(result, indent=2))
    print(f"\nresults: {RESULTS / 'demo.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
