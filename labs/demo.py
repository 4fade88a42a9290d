"""The demo: five real agents on loopback find each other, one is killed, the rest see it die.

Prints a timeline of who saw the killed agent suspect and dead, and when; then one agent leaves
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

from agent.cli import members_table
from labs.localcluster import LocalCluster, Seen

RESULTS = Path(__file__).parent / "results"


def _say(t0: float, text: str) -> None:
    print(f"[{time.time() - t0:7.2f}s] {text}", flush=True)


def _timeline(events: list[Seen], member: str, since: float) -> list[Seen]:
    return sorted((e for e in events if e.member == member and e.at >= since), key=lambda e: e.at)


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
        with LocalCluster(n, workdir, cluster="demo") as cluster:
            t0 = time.time()
            names = list(cluster.agents)
            _say(t0, f"starting {n} agents on 127.0.0.1 with an encrypted keyring (work dir {workdir})")
            cluster.start_all()
            converged = cluster.wait_converged(timeout=60)
            result["converged_after_s"] = round(converged - t0, 2)
            _say(t0, f"membership converged: every agent sees all {n} alive")
            print(members_table(cluster.members(names[0])), flush=True)

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
            result["kill"] = {
                "victim": victim,
                "per_observer": rows,
                "first_dead_s": round(min(dead_times), 2) if dead_times else None,
                "last_dead_s": round(max(dead_times), 2) if dead_times else None,
            }
            print()
            if dead_times:
                _say(
                    t0,
                    f"all {len(survivors)} survivors marked {victim} dead "
                    f"{min(dead_times):.2f}s to {max(dead_times):.2f}s after the kill",
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
