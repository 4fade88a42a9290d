"""scale: N agents with BGP on (default 20, up to 40): time to full membership and to the full BGP mesh,
CPU and memory per agent and per ExaBGP.

Every agent peers over iBGP with every other (the shared-ASN full mesh) and with BIRD on the router,
so each ExaBGP carries N sessions and the site N(N-1)/2 + N. All agents are started at once
(``t = 0``: the first spawn); measured, each wait bounded by ``--timeout``:

* **APIs up**: every agent answers ``/healthz`` (the interpreter start, on a shared CPU);
* **full membership**: every agent's ``/v1/members`` lists all N alive;
* **full BGP mesh**: every agent's ``/v1/bgp/neighbors`` has N sessions (N-1 mesh + the router; in a
  reflected mesh, from ``full_mesh_below`` machines up, one per reflector + the router), all
  ``up``, and BIRD has every session Established;
* **CPU and RSS**: per machine, read from ``/proc``: the agent process, its ExaBGP, and ExaBGP's API
  process (the bridge to the agent), separately. CPU seconds spent from start to the full mesh, then
  CPU % over a steady window (``--window``, default 20 s) after it; RSS at the end of the window. The
  machine's load (``/proc/loadavg``, whole-machine busy %) is recorded alongside: the labs share it.

If the site does not converge in time, the lab says how far it got (members seen, sessions up, which
agents or ExaBGPs died) instead of failing, and still measures what runs.

    python -m labs.scale [--agents 20] [--sizes 10,20,30] [--timeout 300] [--window 20]

Writes ``labs/results/scale.json`` and ``.png`` (per size: convergence times; CPU % and RSS per agent
and per ExaBGP). Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labs import report
from labs.kit.netns import Agent, require_root_and_tools
from labs.report import Timeline
from labs.site import Machine, Site

NAME = "scale"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
POLL = 0.5  # seconds between rounds of polling every agent


# --- /proc ------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (not its children), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_mib(pid: int) -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * PAGE / 2**20, 1)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's list, from /proc/PID/task/*/children)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


@dataclass
class Pids:
    """One machine's processes: the agent, its ExaBGP and ExaBGP's API process (the bridge)."""

    agent: int
    exabgp: int | None = None
    bridge: int | None = None

    def refresh(self) -> None:
        """ExaBGP is restarted on a crash: look its pid (and the bridge's) up again."""
        self.exabgp = next(
            (c for c in children(self.agent) if any(a.endswith("/exabgp") for a in cmdline(c))), None
        )
        self.bridge = None
        if self.exabgp is not None:
            self.bridge = next(
                (
                    c
                    for c in children(self.exabgp)
                    if any(a.endswith("agent/bgp/bridge.py") for a in cmdline(c))
                ),
                None,
            )

    def sample(self) -> dict[str, tuple[float | None, float | None]]:
        """(cpu seconds, RSS MiB) for agent, exabgp, bridge."""
        out = {}
        for role in ("agent", "exabgp", "bridge"):
            pid = getattr(self, role)
            out[role] = (None, None) if pid is None else (cpu_seconds(pid), rss_mib(pid))
        return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- the site ---------------------------------------------------------------------------------------


def start_all(site: Site, tl: Timeline, timeout: float) -> dict[str, float | None]:
    """Spawn every agent at once (``Site.start_agents`` starts them one after the other), then wait
    for each API with one shared deadline; seconds from the first spawn until each answered."""
    lab = site.lab
    t0 = time.time()
    for m in site.machines.values():
        agent = lab.agent(m.name, m.name, m.address, site.agent_config(m))
        agent.proc = lab.spawn(
            m.name, agent.ns, [sys.executable, "-m", "agent", "agent", "--config", str(agent.config)]
        )
        m.agent = agent
    tl.say(f"{len(site.machines)} agents spawned at once", t0)
    up: dict[str, float | None] = dict.fromkeys(site.machines)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(v is None for v in up.values()):
        for name, m in site.machines.items():
            if up[name] is None and api_up(site, m):
                up[name] = round(time.time() - t0, 3)
        time.sleep(POLL / 2)
    return up


def api_up(site: Site, m: Machine) -> bool:
    agent = m.agent
    assert agent is not None
    token = agent.state_dir / "api-token"
    if not token.exists():
        return False
    agent.token = token.read_text().strip()
    try:
        return site.lab.request(agent, "GET", "/healthz", timeout=5)[0] == 200
    except OSError:
        return False


def alive_seen(site: Site, agent: Agent) -> int:
    """How many members (itself included) ``agent`` sees alive; -1 if it does not answer."""
    try:
        status, members = site.lab.request(agent, "GET", "/v1/members", timeout=5)
    except OSError:
        return -1
    return sum(1 for x in members if x["state"] == "alive") if status == 200 else -1


def sessions_seen(site: Site, agent: Agent) -> tuple[int, int]:
    """(sessions up, sessions configured) in ``agent``'s ``/v1/bgp/neighbors``; (-1, -1) if no answer."""
    try:
        status, neighbors = site.lab.request(agent, "GET", "/v1/bgp/neighbors", timeout=5)
    except OSError:
        return -1, -1
    if status != 200:
        return -1, -1
    return sum(1 for n in neighbors if n["state"] == "up"), len(neighbors)


def sessions_wanted(site: Site, agent: Agent, n: int) -> int:
    """Sessions ``agent`` should hold once settled: N (N - 1 mesh + the router) in a full mesh; in a
    reflected mesh one per reflector's BIRD plus the router (``/v1/bgp/reflectors``)."""
    try:
        status, view = site.lab.request(agent, "GET", "/v1/bgp/reflectors", timeout=5)
    except OSError:
        return n
    if status != 200 or view["mode"] != "reflected" or view["switching"]:
        return n
    return len(view["reflectors"]) + 1


def dead(site: Site, pids: dict[str, Pids]) -> dict[str, str]:
    """Machines whose agent exited, or which have no ExaBGP right now."""
    out = {}
    for name, m in site.machines.items():
        if m.agent is None or m.agent.proc is None or not m.agent.proc.running:
            out[name] = "agent exited"
        elif name in pids and pids[name].exabgp is None:
            out[name] = "no exabgp"
    return out


def run_size(n: int, tl: Timeline, *, timeout: float, window: float, hold_time: int) -> dict[str, Any]:
    """One site of ``n`` agents, start to steady state; the figures of that size."""
    result: dict[str, Any] = {"agents": n, "loadavg_before": loadavg()}
    with Site(machines_count=n, hold_time=hold_time) as site:
        result["site"] = site.token
        tl.say(f"[{n}] site up: BIRD and {n} machines on one Linux bridge; load average {loadavg()}")
        t0 = time.time()
        busy0 = machine_busy()
        up = start_all(site, tl, timeout)
        api_times = [v for v in up.values() if v is not None]
        result["api_up_s"] = max(api_times) if len(api_times) == n else None
        result["api_up_count"] = len(api_times)
        tl.say(f"[{n}] {len(api_times)}/{n} APIs up, the last after {report.fmt(result['api_up_s'])}")
        pids = {name: Pids(m.agent.proc.pid) for name, m in site.machines.items() if m.agent and m.agent.proc}

        members_at: dict[str, float | None] = dict.fromkeys(site.machines)
        mesh_at: dict[str, float | None] = dict.fromkeys(site.machines)
        bird_at: float | None = None
        cpu_at_mesh: dict[str, dict[str, tuple[float | None, float | None]]] = {}
        last: dict[str, Any] = {}
        deadline = time.monotonic() + timeout
        progress_due = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            now = time.time()
            alive, sessions = {}, {}
            for name, m in site.machines.items():
                assert m.agent is not None
                if members_at[name] is None:
                    alive[name] = alive_seen(site, m.agent)
                    if alive[name] == n:
                        members_at[name] = round(now - t0, 3)
                if mesh_at[name] is None:
                    sessions[name] = sessions_seen(site, m.agent)
                    wanted = sessions_wanted(site, m.agent, n)
                    if sessions[name] == (wanted, wanted):
                        mesh_at[name] = round(now - t0, 3)
            if bird_at is None and site.sessions_up():
                bird_at = round(now - t0, 3)
                tl.say(f"[{n}] BIRD has every session Established")
            last = {"alive": alive, "sessions": sessions}
            member_times = [v for v in members_at.values() if v is not None]
            if len(member_times) == n and "members" not in result:
                result["members"] = True
                tl.say(f"[{n}] full membership: every agent sees all {n} alive", t0 + max(member_times))
            if all(v is not None for v in [*mesh_at.values(), bird_at]):
                tl.say(
                    f"[{n}] full BGP mesh: every agent has all its sessions (mesh or reflectors) + BIRD up"
                )
                for name, p in pids.items():
                    p.refresh()
                    cpu_at_mesh[name] = p.sample()
                break
            if time.monotonic() >= progress_due:
                progress_due += 10.0
                got_members = sum(v is not None for v in members_at.values())
                got_mesh = sum(v is not None for v in mesh_at.values())
                tl.say(
                    f"[{n}] t+{time.time() - t0:.0f}s: {got_members}/{n} agents see everyone alive, "
                    f"{got_mesh}/{n} have every session up; BIRD {'all' if bird_at else 'not all'} "
                    f"Established; load {loadavg()}"
                )
            time.sleep(max(0.0, POLL - (time.time() - now)))
        for p in pids.values():
            p.refresh()
        busy1 = machine_busy()

        def full(times: dict[str, float | None]) -> float | None:
            """The last of ``times``, or None while any is missing."""
            values = [v for v in times.values() if v is not None]
            return max(values) if values and len(values) == len(times) else None

        result["full_membership_s"] = full(members_at)
        result["full_bgp_mesh_s"] = full({**mesh_at, "bird": bird_at})
        result["agents_full_bgp_s"] = full(mesh_at)
        result["bird_all_established_s"] = bird_at
        result["members_per_agent_s"] = members_at
        result["mesh_per_agent_s"] = mesh_at
        result["machine_busy_pct_until_mesh"] = round(
            100 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]), 1
        )
        if result["full_bgp_mesh_s"] is None:
            why = dead(site, pids)
            result["stalled"] = {
                "members_seen_alive": last.get("alive"),
                "sessions_up_of_configured": last.get("sessions"),
                "bird_protocols": site.protocol_states(),
                "dead": why,
            }
            alive_counts = sorted(v for v in (last.get("alive") or {}).values())
            up_counts = sorted(u for u, _ in (last.get("sessions") or {}).values())
            tl.say(
                f"[{n}] NOT CONVERGED within {timeout:g} s: {sum(v is not None for v in members_at.values())}"
                f"/{n} agents saw everyone alive (the others: {spread(alive_counts)}), "
                f"{sum(v is not None for v in mesh_at.values())}/{n} had every session up (the others: "
                f"{spread(up_counts)} of {n}); dead: {why or 'none'}"
            )

        # Steady state: CPU % over the window, RSS at its end.
        for p in pids.values():
            p.refresh()
        start = {name: p.sample() for name, p in pids.items()}
        b0 = machine_busy()
        tl.say(f"[{n}] measuring CPU and RSS over {window:g} s of steady state")
        time.sleep(window)
        b1 = machine_busy()
        end = {name: p.sample() for name, p in pids.items()}
        per_machine: dict[str, Any] = {}
        for name in pids:
            row: dict[str, Any] = {}
            for role in ("agent", "exabgp", "bridge"):
                c0, _ = start[name][role]
                c1, rss = end[name][role]
                row[f"{role}_cpu_pct"] = (
                    None if c0 is None or c1 is None else round(100 * (c1 - c0) / window, 2)
                )
                row[f"{role}_rss_mib"] = rss
                at_mesh = cpu_at_mesh.get(name, {}).get(role, (None, None))[0]
                row[f"{role}_cpu_s_until_mesh"] = None if at_mesh is None else round(at_mesh, 2)
            per_machine[name] = row
        result["per_machine"] = per_machine
        result["machine_busy_pct_window"] = round(100 * (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]), 1)
        result["loadavg_after"] = loadavg()
        result["summary"] = summarize(per_machine)
        result["exabgp_restarts"] = restarts(site)
        result["churn"] = churn(site)
        tl.say(f"[{n}] churn in the agents' logs: {result['churn']}")
        s = result["summary"]
        tl.say(
            f"[{n}] steady: agent CPU {pct(s, 'agent_cpu_pct')}, RSS {mib(s, 'agent_rss_mib')}; "
            f"ExaBGP CPU {pct(s, 'exabgp_cpu_pct')}, RSS {mib(s, 'exabgp_rss_mib')}; bridge RSS "
            f"{mib(s, 'bridge_rss_mib')}; whole machine {result['machine_busy_pct_window']}% busy "
            f"(of 2 cores, other work included)"
        )
    return result


def restarts(site: Site) -> dict[str, int]:
    """ExaBGP starts per agent beyond the first, from the agents' logs."""
    out = {}
    for name, m in site.machines.items():
        if m.agent is not None and m.agent.proc is not None and m.agent.proc.log.exists():
            starts = m.agent.proc.log.read_text(errors="replace").count('"exabgp started"')
            if starts > 1:
                out[name] = starts - 1
    return out


def churn(site: Site) -> dict[str, Any]:
    """From the agents' logs: gossip suspicions and BGP sessions lost, by reason (hold timer expired
    is ``notification sent (4,0)``): what a starved CPU does to the mesh. A session that goes down
    before it was ever up is not a loss but a refused attempt, counted apart: ExaBGP answers a
    connection from a peer it has not configured yet with Cease 6/3 ("no session configured for the
    peer"), which is what a start-up looks like while the members learn of each other."""
    suspects, downs, refused = 0, 0, 0
    reasons: dict[str, int] = {}
    for m in site.machines.values():
        if m.agent is None or m.agent.proc is None or not m.agent.proc.log.exists():
            continue
        established: set[str] = set()
        for line in m.agent.proc.log.read_text(errors="replace").splitlines():
            if '"event": "suspect"' in line:
                suspects += 1
            if up := re.search(r"BGP session with (\S+) up", line):
                established.add(up.group(1))
            found = re.search(r"BGP session with (\S+) down \(([^)]*\)?)\)", line)
            if found and found.group(1) not in established:
                refused += 1
            elif found:
                established.discard(found.group(1))
                downs += 1
                reasons[found.group(2)] = reasons.get(found.group(2), 0) + 1
    return {
        "gossip_suspect_events": suspects,
        "bgp_sessions_lost": downs,
        "bgp_lost_by_reason": reasons,
        "bgp_attempts_refused_before_up": refused,
    }


def spread(values: list[int]) -> str:
    if not values:
        return "none"
    return f"min {values[0]}, median {statistics.median(values):g}, max {values[-1]}"


def summarize(per_machine: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and max of every per-machine figure."""
    out: dict[str, dict[str, float]] = {}
    keys = {k for row in per_machine.values() for k in row}
    for key in sorted(keys):
        values = [row[key] for row in per_machine.values() if row.get(key) is not None]
        if values:
            out[key] = {"median": round(statistics.median(values), 2), "max": round(max(values), 2)}
    return out


def pct(s: dict[str, dict[str, float]], key: str) -> str:
    return f"{s[key]['median']:.1f}% (max {s[key]['max']:.1f}%)" if key in s else "n/a"


def mib(s: dict[str, dict[str, float]], key: str) -> str:
    return f"{s[key]['median']:.0f} MiB (max {s[key]['max']:.0f})" if key in s else "n/a"


def plot(results_by_size: list[dict[str, Any]], results: Path) -> Path | None:
    """Per size: convergence times; median CPU % and RSS of agent and ExaBGP."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sizes = [r["agents"] for r in results_by_size]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    x = range(len(sizes))
    width = 0.35

    def values(key: str) -> list[float]:
        return [r.get(key) or 0.0 for r in results_by_size]

    def med(role: str, what: str) -> list[float]:
        return [r.get("summary", {}).get(f"{role}_{what}", {}).get("median", 0.0) for r in results_by_size]

    for ax, title, left, right, labels, unit in (
        (
            axes[0],
            "time from start",
            values("full_membership_s"),
            values("full_bgp_mesh_s"),
            ("full membership", "full BGP mesh"),
            "s",
        ),
        (
            axes[1],
            "CPU, steady (median per machine)",
            med("agent", "cpu_pct"),
            med("exabgp", "cpu_pct"),
            ("agent", "ExaBGP"),
            "%",
        ),
        (
            axes[2],
            "RSS (median per machine)",
            med("agent", "rss_mib"),
            med("exabgp", "rss_mib"),
            ("agent", "ExaBGP"),
            "MiB",
        ),
    ):
        ax.bar([i - width / 2 for i in x], left, width, label=labels[0])
        ax.bar([i + width / 2 for i in x], right, width, label=labels[1])
        ax.set_xticks(list(x), [f"{s} agents" for s in sizes])
        ax.set_ylabel(unit)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    for i, r in enumerate(results_by_size):
        for key, dx in (("full_membership_s", -width / 2), ("full_bgp_mesh_s", width / 2)):
            if r.get(key) is None:  # a bar of 0 would read as "instant"
                axes[0].text(i + dx, 1, "not reached", rotation=90, ha="center", va="bottom", fontsize=8)
    fig.suptitle("scale: N agents, full iBGP mesh + BIRD (2 shared cores)")
    fig.tight_layout()
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{NAME}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def run(
    *,
    sizes: list[int] | None = None,
    timeout: float = 300.0,
    window: float = 20.0,
    hold_time: int = 30,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    sizes = sizes or [20]
    data: dict[str, Any] = {
        "scenario": NAME,
        "params": {"sizes": sizes, "timeout_s": timeout, "window_s": window, "hold_time": hold_time},
        "cores": os.cpu_count(),
        "sizes": [],
        "timeline": tl.events,  # the same list: it grows as the lab speaks
    }
    for n in sizes:
        data["sizes"].append(run_size(n, tl, timeout=timeout, window=window, hold_time=hold_time))
        if write:  # after each size: a long sweep that is interrupted keeps what it measured
            report.write(NAME, data, results)
    for r in data["sizes"]:
        s = r.get("summary", {})
        tl.say(
            f"{r['agents']} agents: APIs {report.fmt(r['api_up_s'])}, full membership "
            f"{report.fmt(r['full_membership_s'])}, full BGP mesh {report.fmt(r['full_bgp_mesh_s'])}; "
            f"agent {pct(s, 'agent_cpu_pct')} {mib(s, 'agent_rss_mib')}, ExaBGP {pct(s, 'exabgp_cpu_pct')} "
            f"{mib(s, 'exabgp_rss_mib')}"
        )
    if write:
        path = report.write(NAME, data, results)
        png = plot(data["sizes"], results)
        print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="agents in the site (default 20)")
    parser.add_argument(
        "--sizes", help="several sites one after the other, e.g. 10,20,30 (overrides --agents)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on each wait, seconds")
    parser.add_argument("--window", type=float, default=20.0, help="steady-state CPU window, seconds")
    parser.add_argument("--hold-time", type=int, default=30, help="BGP hold time between BIRD and agents")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.agents]
    if any(not 2 <= s <= 60 for s in sizes):
        parser.error("sizes must be between 2 and 60")
    why = require_root_and_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(sizes=sizes, timeout=args.timeout, window=args.window, hold_time=args.hold_time)
    return 0


if __name__ == "__main__":
    sys.exit(main())
