"""scale: N agents with BGP on (default 20, up to 120), route reflectors placed by the agents from
``full_mesh_below`` (8) machines up: time to full membership, to every session, to every VIP route with
every announcer; how fast a VIP change reaches every RIB; what killing a reflector costs; CPU and
memory per agent, per ExaBGP, per bridge and per reflector's BIRD.

Every agent peers over iBGP with the mesh (below 8 machines every other machine; from 8 up, one
session to each of the reflectors' BIRD, which the agents place themselves) and with BIRD on the
router (the upstream). All agents are started at once (``t = 0``: the first spawn). The VIPs, posted
through the APIs once they answer: one per machine (``100.96.1.i``, no check, so announced at once) and
an anycast VIP (:data:`labs.site.VIP`) on ``--anycast`` machines with the site's HTTP check. Measured,
each wait bounded by ``--timeout``:

* **APIs up**: every agent answers ``/healthz`` (the interpreter start, on a shared CPU);
* **full membership**: every agent's ``/v1/members`` lists all N alive;
* **every session**: every agent's ``/v1/bgp/neighbors`` has all its sessions up (N-1 mesh + the
  router in a full mesh; one per reflector + the router when reflected) and BIRD has every session
  Established;
* **every VIP route**: every agent's kernel holds every other machine's VIP via that machine, and its
  RIB has the anycast VIP from every one of its announcers (ADD-PATH through the reflectors);
* **CPU and RSS** per machine, read from ``/proc``: the agent, its ExaBGP, ExaBGP's API process (the
  bridge), and on the reflectors their BIRD; CPU % over a steady window (``--window``) and RSS at its
  end. The machine's load (``/proc/loadavg``, whole-machine busy %) is recorded alongside;
* **a VIP change**: one anycast machine's check fails (then passes again), ``--changes`` times on
  machines that are not reflectors; per other agent, seconds from the failing machine's own decision
  (its log's ``withdraw`` / ``announce`` line) until that agent's RIB shows it, p50 / p99 / max; the
  polls' round time is the resolution;
* **a reflector killed**: its link down and every process in it SIGKILLed; every other namespace's
  kernel routes are watched through netlink events (:mod:`labs.kit.routewatch`) and any moment an
  agent has no route to a live machine's VIP (or, off the anycast machines, to the anycast VIP) is a
  gap, summed; and how long until a new reflector is placed and every client has peered with it.

With ``--unpolled SECONDS`` the lab only starts the agents (no VIPs), leaves them alone for SECONDS
once their APIs answer, then measures CPU per role over ``--window`` and asks each agent once how many
members it sees alive: whether the mesh settles by itself, without the lab's load or any objects.

If a wait runs out, the lab says how far it got (members seen, sessions up, which agents or ExaBGPs
died) and still measures what runs.

    python -m labs.scale [--agents 20] [--sizes 10,25,50,100] [--timeout 300] [--window 20]
    python -m labs.scale --sizes 25,50 --unpolled 120 --window 30

Writes ``labs/results/scale.json`` and ``.png``. Needs root and ``make deps``.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from labs import report
from labs.kit.agentlog import decisions
from labs.kit.netns import Agent, require_root_and_tools
from labs.kit.proc import children, cmdline, cpu_seconds, rss_mib
from labs.kit.routewatch import RouteWatch
from labs.report import Timeline
from labs.site import VIP, Machine, Site

NAME = "scale"
POLL = 0.5  # seconds between rounds of polling every agent, at least
POLL_PER_AGENT = 0.02  # and this per agent: every answer costs an agent CPU the site is short of
WORKERS = 16  # agents asked at once: a round must not take N times one answer
ANYCAST_KEY = "vip/anycast"
SETTLE_AFTER_KILL = 5.0  # seconds of watching after the last client peered with the new reflector
ROLES = ("agent", "exabgp", "bridge", "bird")

K = TypeVar("K")
T = TypeVar("T")


def own_vip(m: Machine) -> str:
    return f"100.96.1.{m.index}"


def fan_out(fn: Callable[[K], T], keys: Iterable[K], pool: ThreadPoolExecutor) -> dict[K, tuple[float, T]]:
    """``fn(key)`` for every key at once; per key the wall time its answer came and the answer."""

    def timed(key: K) -> tuple[float, T]:
        value = fn(key)
        return time.time(), value

    keys = list(keys)
    return dict(zip(keys, pool.map(timed, keys), strict=True))


# --- /proc ------------------------------------------------------------------------------------------


@dataclass
class Pids:
    """One machine's processes: the agent, its ExaBGP, ExaBGP's API process (the bridge) and, on a
    reflector, its BIRD."""

    agent: int
    exabgp: int | None = None
    bridge: int | None = None
    bird: int | None = None

    def refresh(self) -> None:
        """ExaBGP is restarted on a crash and BIRD comes and goes with the role: look them up again."""
        kids = {c: cmdline(c) for c in children(self.agent)}
        self.exabgp = next((c for c, argv in kids.items() if any(a.endswith("/exabgp") for a in argv)), None)
        self.bird = next((c for c, argv in kids.items() if argv[:1] and argv[0].endswith("bird")), None)
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
        """(cpu seconds, RSS MiB) per role."""
        out = {}
        for role in ROLES:
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


# --- asking the agents ------------------------------------------------------------------------------


def agent_of(site: Site, name: str) -> Agent:
    agent = site.machines[name].agent
    assert agent is not None, f"{name} has no agent"
    return agent


def get(site: Site, agent: Agent, path: str) -> Any:
    """The answer to ``GET path``, or None if the agent does not answer 200."""
    try:
        status, data = site.lab.request(agent, "GET", path, timeout=5)
    except OSError:
        return None
    return data if status == 200 else None


def start_all(site: Site, tl: Timeline, timeout: float, profile: int = 0) -> dict[str, float | None]:
    """Spawn every agent at once (``Site.start_agents`` starts them one after the other), then wait
    for each API with one shared deadline; seconds from the first spawn until each answered.

    The last ``profile`` machines run under cProfile; each writes ``scale-<n>-<name>.pstats`` into the
    results folder when it is stopped (SIGTERM: the agent leaves and returns)."""
    lab = site.lab
    t0 = time.time()
    profiled = set(list(site.machines)[len(site.machines) - profile :]) if profile else set()
    for m in site.machines.values():
        agent = lab.agent(m.name, m.name, m.address, site.agent_config(m))
        argv = [sys.executable, "-m", "agent", "agent", "--config", str(agent.config)]
        if m.name in profiled:
            out = report.RESULTS / f"{NAME}-{len(site.machines)}-{m.name}.pstats"
            argv[1:1] = ["-m", "cProfile", "-o", str(out)]
        agent.proc = lab.spawn(m.name, agent.ns, argv)
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


def post_vips(site: Site, group: list[str], pool: ThreadPoolExecutor) -> list[str]:
    """One VIP per machine and the anycast VIP on ``group``, each posted to its own machine's API (the
    writes spread over the agents); the errors, if any."""
    bodies: list[tuple[Machine, dict[str, Any]]] = [
        (m, {"name": f"own-{m.name}", "address": own_vip(m), "machines": [m.name]})
        for m in site.machines.values()
    ]
    first = site.machines[group[0]]
    bodies.append(
        (first, {"name": "anycast", "address": VIP, "machines": group, "health_check": site.check.api()})
    )

    def post(item: tuple[Machine, dict[str, Any]]) -> str | None:
        m, body = item
        assert m.agent is not None
        try:
            status, data = site.lab.request(m.agent, "POST", "/v1/vips", body, timeout=30)
        except OSError as exc:
            return f"{body['name']}: {exc}"
        return None if status in (200, 201) else f"{body['name']}: HTTP {status}: {data}"

    return [e for e in pool.map(post, bodies) if e is not None]


def anycast_hops(site: Site, agent: Agent) -> set[str] | None:
    """The next hops of the anycast VIP's paths in ``agent``'s RIB (its own local path left out): one
    per announcer; None if it does not answer."""
    data = get(site, agent, f"/v1/rib?prefix={VIP}/32")
    if data is None:
        return None
    return {p["next_hop"] for p in data["routes"][0]["paths"] if p["peer"] != "local"}


@dataclass
class Progress:
    """What one agent showed in one round (-1: no answer)."""

    alive: int = -1
    up: int = -1  # sessions of the plan that are up
    wanted: int = (
        -1
    )  # sessions of the plan: one per reflector (every other machine in a full mesh) + the router
    extra: int = -1  # neighbors listed beyond the plan (a switch's held sessions, or stale ones)
    switching: bool = True
    vips: bool = False


def probe(site: Site, m: Machine, watch: RouteWatch, group: list[str], need: frozenset[str]) -> Progress:
    """Ask agent ``m`` for what is still ``need``ed: ``members``, ``sessions``, ``vips``."""
    agent = m.agent
    assert agent is not None
    out = Progress()
    if "members" in need:
        members = get(site, agent, "/v1/members")
        out.alive = -1 if members is None else sum(1 for x in members if x["state"] == "alive")
    if "sessions" in need:
        neighbors = get(site, agent, "/v1/bgp/neighbors")
        view = get(site, agent, "/v1/bgp/reflectors")
        if neighbors is not None and view is not None:
            if view["mode"] == "reflected":
                planned = set(view["reflectors"]) | {None}  # None: the router, not a mesh machine
            else:
                planned = set(site.machines) - {m.name} | {None}
            out.wanted = len(planned)
            out.up = sum(1 for x in neighbors if x["name"] in planned and x["state"] == "up")
            out.extra = sum(1 for x in neighbors if x["name"] not in planned)
            out.switching = bool(view["switching"])
    if "vips" in need:
        routes = watch.routes(m.name)
        kernel_ok = all(
            routes.get(f"{own_vip(o)}/32") == [o.address] for o in site.machines.values() if o is not m
        )
        want = {site.machines[g].address for g in group if g != m.name}
        out.vips = kernel_ok and anycast_hops(site, agent) == want
    return out


def dead(site: Site, pids: dict[str, Pids]) -> dict[str, str]:
    """Machines whose agent exited, or which have no ExaBGP right now."""
    out = {}
    for name, m in site.machines.items():
        if m.agent is None or m.agent.proc is None or not m.agent.proc.running:
            out[name] = "agent exited"
        elif name in pids and pids[name].exabgp is None:
            out[name] = "no exabgp"
    return out


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def q(f: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(f * (len(ordered) - 1)))], 3)

    return {"count": len(ordered), "p50": q(0.5), "p99": q(0.99), "max": round(ordered[-1], 3)}


# --- the phases -------------------------------------------------------------------------------------


def converge(
    site: Site,
    tl: Timeline,
    watch: RouteWatch,
    group: list[str],
    pool: ThreadPoolExecutor,
    *,
    t0: float,
    timeout: float,
) -> dict[str, Any]:
    """Poll every agent until it sees everyone alive, has every session and every VIP route."""
    n = len(site.machines)
    at: dict[str, dict[str, float | None]] = {
        what: dict.fromkeys(site.machines) for what in ("members", "sessions", "vips")
    }
    bird_at: float | None = None
    last: dict[str, Progress] = {}
    held: dict[str, int] = {}  # sessions of the plan up, as last seen
    rounds: list[float] = []
    deadline = time.monotonic() + timeout
    progress_due = time.monotonic() + 10.0
    said_members = False
    while time.monotonic() < deadline:
        began = time.time()
        pending = {name: {w for w in at if at[w][name] is None} for name in site.machines}
        asked = [(name, frozenset(need)) for name, need in pending.items() if need]
        answers = fan_out(
            lambda item: probe(site, site.machines[item[0]], watch, group, item[1]), asked, pool
        )
        for (name, _), (when, seen) in answers.items():
            last[name] = seen
            if seen.up >= 0:
                held[name] = seen.up
            if seen.alive == n:
                at["members"][name] = round(when - t0, 3)
            if seen.up == seen.wanted and not seen.switching:
                at["sessions"][name] = round(when - t0, 3)
            if seen.vips:
                at["vips"][name] = round(when - t0, 3)
        rounds.append(time.time() - began)
        if bird_at is None and site.sessions_up():
            bird_at = round(time.time() - t0, 3)
            tl.say(f"[{n}] BIRD has every session Established")
        if not said_members and all(v is not None for v in at["members"].values()):
            said_members = True
            tl.say(f"[{n}] full membership: every agent sees all {n} alive")
        if bird_at is not None and all(v is not None for times in at.values() for v in times.values()):
            tl.say(f"[{n}] every agent has every session and every VIP route with all its announcers")
            break
        if time.monotonic() >= progress_due:
            progress_due += 10.0
            got = {w: sum(v is not None for v in times.values()) for w, times in at.items()}
            tl.say(
                f"[{n}] t+{time.time() - t0:.0f}s: {got['members']}/{n} see everyone alive, "
                f"{got['sessions']}/{n} have every session, {got['vips']}/{n} every VIP route; BIRD "
                f"{'all' if bird_at else 'not all'} Established; poll round {rounds[-1]:.2f} s; "
                f"load {loadavg()}"
            )
        time.sleep(max(0.0, max(POLL, POLL_PER_AGENT * n) - (time.time() - began)))

    def full(times: dict[str, float | None]) -> float | None:
        values = [v for v in times.values() if v is not None]
        return max(values) if values and len(values) == len(times) else None

    return {
        "full_membership_s": full(at["members"]),
        "agents_every_session_s": full(at["sessions"]),
        "bird_all_established_s": bird_at,
        "full_bgp_s": full({**at["sessions"], "bird": bird_at}),
        "every_vip_route_s": full(at["vips"]),
        "per_agent_s": at,
        "poll_round_s": percentiles(rounds),
        "sessions_per_agent": percentiles([float(v) for v in held.values()]),
        "last_seen": {name: vars(p) for name, p in last.items()},
    }


def beyond_plan(site: Site, pool: ThreadPoolExecutor) -> dict[str, list[str]]:
    """Per agent, the mesh neighbors it lists that its plan does not have (and their state): what
    ExaBGP still holds after a reload removed them shows up here."""

    def one(name: str) -> list[str]:
        agent = agent_of(site, name)
        view = get(site, agent, "/v1/bgp/reflectors")
        neighbors = get(site, agent, "/v1/bgp/neighbors")
        if view is None or neighbors is None or view["mode"] != "reflected":
            return []
        return [
            f"{x['name']} {x['state']}" for x in neighbors if x["name"] not in (*view["reflectors"], None)
        ]

    return {name: got for name, (_, got) in fan_out(one, site.machines, pool).items() if got}


def reflectors_now(site: Site, live: Iterable[str]) -> tuple[list[str], bool]:
    """(the reflector set if every live agent computes the same one and has settled, else [], and
    whether they all agree)."""
    views = []
    for name in live:
        agent = agent_of(site, name)
        views.append(get(site, agent, "/v1/bgp/reflectors"))
    if any(v is None for v in views):
        return [], False
    sets = {tuple(v["reflectors"]) for v in views}
    settled = len(sets) == 1 and all(v["mode"] == "reflected" and not v["switching"] for v in views)
    return (list(next(iter(sets))) if settled else []), len(sets) == 1


def vip_changes(
    site: Site,
    tl: Timeline,
    group: list[str],
    reflectors: list[str],
    pool: ThreadPoolExecutor,
    *,
    changes: int,
    timeout: float,
) -> dict[str, Any]:
    """``changes`` times: an anycast machine's check fails, then passes again; per other agent the
    seconds from that machine's decision until its RIB shows it."""
    n = len(site.machines)
    candidates = [g for g in group if g not in reflectors] or group
    out: dict[str, Any] = {"withdraw": [], "announce": [], "rounds_s": [], "missed": []}

    def hops(name: str) -> set[str] | None:
        return anycast_hops(site, agent_of(site, name))

    for i in range(changes):
        g = candidates[i % len(candidates)]
        gm = site.machines[g]
        assert gm.agent is not None and gm.agent.proc is not None
        for failing, action in ((True, "withdraw"), (False, "announce")):
            before = len(decisions(gm.agent.proc.log, ANYCAST_KEY, action))
            site.fail_service(g, failing)
            pending = {name for name in site.machines if name != g}
            seen: dict[str, float] = {}
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                began = time.time()
                for name, (when, got) in fan_out(hops, pending, pool).items():
                    if got is not None and (gm.address in got) != failing:
                        seen[name] = when
                        pending.discard(name)
                out["rounds_s"].append(time.time() - began)
            decided = decisions(gm.agent.proc.log, ANYCAST_KEY, action)[before:]
            if not decided:
                out["missed"].append(f"{g} logged no {action}")
                continue
            out[action] += [when - decided[0] for when in seen.values()]
            if pending:
                out["missed"].append(f"{g} {action}: {len(pending)} agents never showed it")
            lag = sorted(when - decided[0] for when in seen.values())
            tl.say(
                f"[{n}] {g}'s check {'fails' if failing else 'passes again'}: {len(seen)}/{n - 1} RIBs "
                f"show the {action} within {lag[-1] if lag else float('nan'):.2f} s of its decision"
            )
    rounds = out.pop("rounds_s")
    return {
        "changes": changes,
        "withdraw_s": percentiles(out["withdraw"]),
        "announce_s": percentiles(out["announce"]),
        "all_s": percentiles(out["withdraw"] + out["announce"]),
        "poll_round_s": percentiles(rounds),
        "missed": out["missed"],
    }


def kill_reflector(
    site: Site, tl: Timeline, watch: RouteWatch, group: list[str], reflectors: list[str], *, timeout: float
) -> dict[str, Any]:
    """SIGKILL everything on the first reflector's machine; the gaps in every other kernel until a new
    reflector is placed and every client has peered with it (and a few seconds more)."""
    n = len(site.machines)
    victim = reflectors[0]
    live = [name for name in site.machines if name != victim]
    killed = site.crash(victim)
    tl.say(f"[{n}] reflector {victim} killed (link down, every process SIGKILLed)")
    placed_at: float | None = None
    peered_at: float | None = None
    new: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if placed_at is None:
            new, _ = reflectors_now(site, live)
            if new and victim not in new:
                placed_at = time.time()
                tl.say(f"[{n}] every live agent places {', '.join(new)} ({placed_at - killed:.1f} s)")
            else:
                new = []
        if placed_at is not None:

            def settled(name: str, new: list[str] = new) -> bool:
                agent = agent_of(site, name)
                neighbors = get(site, agent, "/v1/bgp/neighbors") or []
                mesh = {x["name"] for x in neighbors if x["name"] is not None and x["state"] == "up"}
                return mesh == set(new)

            if all(settled(name) for name in live):
                peered_at = time.time()
                tl.say(f"[{n}] every client peered with the new reflectors ({peered_at - killed:.1f} s)")
                break
        time.sleep(POLL)
    time.sleep(SETTLE_AFTER_KILL)
    end = time.time()
    wanted = {f"{own_vip(site.machines[name])}/32" for name in live}
    gaps = []
    for gap in watch.gaps(since=killed):
        if gap.node == victim:
            continue
        if gap.prefix in wanted - {f"{own_vip(site.machines[gap.node])}/32"} or (
            gap.prefix == f"{VIP}/32" and gap.node not in group
        ):
            gaps.append(gap)
    per_agent: dict[str, float] = {}
    for gap in gaps:
        per_agent[gap.node] = per_agent.get(gap.node, 0.0) + gap.seconds(end)
    worst = max(gaps, key=lambda g: g.seconds(end), default=None)
    result: dict[str, Any] = {
        "reflector_killed": victim,
        "new_reflectors": new,
        "placed_s": None if placed_at is None else round(placed_at - killed, 3),
        "peered_s": None if peered_at is None else round(peered_at - killed, 3),
        "watched_s": round(end - killed, 3),
        "gaps": len(gaps),
        "agents_with_a_gap": len(per_agent),
        "max_gap_s": None if worst is None else round(worst.seconds(end), 3),
        "worst_gap": None if worst is None else {"agent": worst.node, "prefix": worst.prefix},
        "gap_seconds_sum": round(sum(per_agent.values()), 3),
        "netlink_overflows": watch.overflows,
    }
    tl.say(
        f"[{n}] reflector kill: {len(gaps)} route gaps on {len(per_agent)} agents (max "
        f"{report.fmt(result['max_gap_s'])}); new reflector placed {report.fmt(result['placed_s'])}, "
        f"peered by every client {report.fmt(result['peered_s'])}"
    )
    return result


def steady(
    pids: dict[str, Pids], tl: Timeline, n: int, window: float
) -> tuple[dict[str, dict[str, Any]], float]:
    """CPU % per role over ``window`` seconds of steady state, RSS at its end; and the machine's busy %."""
    for p in pids.values():
        p.refresh()
    start = {name: p.sample() for name, p in pids.items()}
    b0 = machine_busy()
    tl.say(f"[{n}] measuring CPU and RSS over {window:g} s of steady state")
    time.sleep(window)
    b1 = machine_busy()
    end = {name: p.sample() for name, p in pids.items()}
    per_machine: dict[str, dict[str, Any]] = {}
    for name in pids:
        row: dict[str, Any] = {}
        for role in ROLES:
            c0, _ = start[name][role]
            c1, rss = end[name][role]
            if c0 is None and c1 is None:
                continue
            row[f"{role}_cpu_pct"] = None if c0 is None or c1 is None else round(100 * (c1 - c0) / window, 2)
            row[f"{role}_rss_mib"] = rss
        known = [row.get(f"{r}_rss_mib") for r in ("agent", "exabgp", "bridge")]
        if all(v is not None for v in known):
            row["machine_rss_mib"] = round(sum(v for v in known if v is not None), 1)
        per_machine[name] = row
    return per_machine, round(100 * (b1[0] - b0[0]) / max(1.0, b1[1] - b0[1]), 1)


def run_size(
    n: int,
    tl: Timeline,
    *,
    timeout: float,
    window: float,
    hold_time: int,
    anycast: int,
    changes: int,
    profile: int = 0,
) -> dict[str, Any]:
    """One site of ``n`` agents, start to steady state, a VIP change and a reflector kill."""
    result: dict[str, Any] = {"agents": n, "loadavg_before": loadavg()}
    with Site(machines_count=n, hold_time=hold_time) as site, ThreadPoolExecutor(WORKERS) as pool:
        result["site"] = site.token
        tl.say(f"[{n}] site up: BIRD and {n} machines on one Linux bridge; load average {loadavg()}")
        group = list(site.machines)[: max(2, min(anycast, n))]
        with RouteWatch({name: m.ns for name, m in site.machines.items()}) as watch:
            t0 = time.time()
            busy0 = machine_busy()
            up = start_all(site, tl, timeout, profile)
            api_times = [v for v in up.values() if v is not None]
            result["api_up_s"] = max(api_times) if len(api_times) == n else None
            result["api_up_count"] = len(api_times)
            tl.say(f"[{n}] {len(api_times)}/{n} APIs up, the last after {report.fmt(result['api_up_s'])}")
            pids = {
                name: Pids(m.agent.proc.pid) for name, m in site.machines.items() if m.agent and m.agent.proc
            }
            errors = post_vips(site, group, pool)
            result["vips_posted_s"] = round(time.time() - t0, 3)
            result["vip_post_errors"] = errors
            tl.say(
                f"[{n}] {n} machine VIPs and the anycast VIP on {len(group)} machines posted "
                f"({len(errors)} errors)"
            )
            result.update(converge(site, tl, watch, group, pool, t0=t0, timeout=timeout))
            busy1 = machine_busy()
            result["machine_busy_pct_until_converged"] = round(
                100 * (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]), 1
            )
            for p in pids.values():
                p.refresh()
            spent = {name: p.sample() for name, p in pids.items()}
            result["cpu_s_until_converged"] = {
                role: percentiles([c for row in spent.values() if (c := row[role][0]) is not None])
                for role in ("agent", "exabgp", "bridge")
            }
            if result["every_vip_route_s"] is None or result["full_bgp_s"] is None:
                why = dead(site, pids)
                result["stalled"] = {"bird_protocols": site.protocol_states(), "dead": why}
                tl.say(f"[{n}] NOT CONVERGED within {timeout:g} s; dead: {why or 'none'}")
            per_machine, busy = steady(pids, tl, n, window)
            result["per_machine"] = per_machine
            result["machine_busy_pct_window"] = busy
            result["neighbors_beyond_plan"] = stale = beyond_plan(site, pool)
            if stale:
                tl.say(f"[{n}] {len(stale)} agents list mesh neighbors beyond their plan: {stale}")
            result["summary"] = summarize(per_machine)
            s = result["summary"]
            tl.say(
                f"[{n}] steady: agent {pct(s, 'agent_cpu_pct')} {mib(s, 'agent_rss_mib')}; ExaBGP "
                f"{pct(s, 'exabgp_cpu_pct')} {mib(s, 'exabgp_rss_mib')}; bridge {mib(s, 'bridge_rss_mib')}; "
                f"BIRD (reflectors) {pct(s, 'bird_cpu_pct')} {mib(s, 'bird_rss_mib')}; a machine "
                f"{mib(s, 'machine_rss_mib')}; whole machine {busy}% busy (2 cores)"
            )
            reflectors: list[str] = []
            deadline = time.monotonic() + 30.0
            while not reflectors and time.monotonic() < deadline:  # a poll can catch a switch mid-way
                reflectors, agreed = reflectors_now(site, site.machines)
                if not reflectors:
                    time.sleep(POLL)
            result["reflectors"] = reflectors
            if not reflectors:
                tl.say(f"[{n}] the agents do not agree on a settled reflector set (agree: {agreed})")
            if changes:
                result["vip_change"] = vip_changes(
                    site, tl, group, reflectors, pool, changes=changes, timeout=min(timeout, 60.0)
                )
                c = result["vip_change"]["all_s"]
                tl.say(
                    f"[{n}] VIP change until every RIB shows it: p50 {report.fmt(c['p50'])}, p99 "
                    f"{report.fmt(c['p99'])}, max {report.fmt(c['max'])} ({c['count']} samples)"
                )
            if reflectors:
                result["reflector_kill"] = kill_reflector(site, tl, watch, group, reflectors, timeout=timeout)
        result["loadavg_after"] = loadavg()
        result["exabgp_restarts"] = restarts(site)
        result["churn"] = churn(site)
        tl.say(f"[{n}] churn in the agents' logs: {result['churn']}")
    return result


def run_unpolled(
    n: int, tl: Timeline, *, settle: float, timeout: float, window: float, hold_time: int, profile: int = 0
) -> dict[str, Any]:
    """The site left alone: ``n`` agents started at once, no VIPs, nothing asked of them but
    ``/healthz`` until they answer; then ``settle`` seconds untouched, CPU per role over ``window``, and
    once at the end each agent's count of members alive. Whether the mesh settles by itself, with no
    lab load and no objects on the machine."""
    result: dict[str, Any] = {"agents": n, "unpolled": True, "loadavg_before": loadavg()}
    with Site(machines_count=n, hold_time=hold_time) as site, ThreadPoolExecutor(WORKERS) as pool:
        up = start_all(site, tl, timeout, profile)
        result["api_up_s"] = max((v for v in up.values() if v is not None), default=None)
        tl.say(f"[{n}] APIs up after {report.fmt(result['api_up_s'])}; leaving the site alone {settle:g} s")
        pids = {name: Pids(m.agent.proc.pid) for name, m in site.machines.items() if m.agent and m.agent.proc}
        time.sleep(settle)
        per_machine, busy = steady(pids, tl, n, window)
        result["summary"] = summarize(per_machine)
        result["machine_busy_pct_window"] = busy
        result["loadavg_after"] = loadavg()
        views = fan_out(lambda name: get(site, agent_of(site, name), "/v1/members"), site.machines, pool)
        alive = sorted(-1 if v is None else sum(x["state"] == "alive" for x in v) for _, v in views.values())
        result["alive_seen"] = {"min": alive[0], "median": statistics.median(alive), "max": alive[-1]}
        result["churn"] = churn(site)
        s = result["summary"]
        tl.say(
            f"[{n}] left alone: agent {pct(s, 'agent_cpu_pct')}, ExaBGP {pct(s, 'exabgp_cpu_pct')}; machine "
            f"{busy}% busy, load {result['loadavg_after']}; members alive as each agent sees them: "
            f"{spread(alive)} of {n}; {result['churn']['gossip_suspect_events']} suspect events logged"
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
            values("full_bgp_s"),
            ("full membership", "every session"),
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
        for key, dx in (("full_membership_s", -width / 2), ("full_bgp_s", width / 2)):
            if r.get(key) is None:  # a bar of 0 would read as "instant"
                axes[0].text(i + dx, 1, "not reached", rotation=90, ha="center", va="bottom", fontsize=8)
    fig.suptitle("scale: N agents, reflected iBGP (full mesh below 8) + BIRD (2 shared cores)")
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
    anycast: int = 8,
    changes: int = 3,
    unpolled: float | None = None,
    profile: int = 0,
    write: bool = True,
    quiet: bool = False,
    results: Path = report.RESULTS,
) -> dict[str, Any]:
    tl = Timeline(NAME, quiet=quiet)
    sizes = sizes or [20]
    params = {"sizes": sizes, "timeout_s": timeout, "window_s": window, "hold_time": hold_time,
              "anycast": anycast, "changes": changes, "unpolled_s": unpolled, "profile": profile}  # fmt: skip
    data: dict[str, Any] = {
        "scenario": NAME,
        "params": params,
        "cores": os.cpu_count(),
        "sizes": [],
        "timeline": tl.events,  # the same list: it grows as the lab speaks
    }
    for n in sizes:
        if unpolled is not None:
            data["sizes"].append(
                run_unpolled(
                    n,
                    tl,
                    settle=unpolled,
                    timeout=timeout,
                    window=window,
                    hold_time=hold_time,
                    profile=profile,
                )
            )
        else:
            data["sizes"].append(
                run_size(
                    n,
                    tl,
                    timeout=timeout,
                    window=window,
                    hold_time=hold_time,
                    anycast=anycast,
                    changes=changes,
                    profile=profile,
                )
            )
        if write:  # after each size: a long sweep that is interrupted keeps what it measured
            report.write(NAME, data, results)
    for r in data["sizes"]:
        if not r.get("unpolled"):
            tl.say(headline(r))
    if write:
        path = report.write(NAME, data, results)
        png = plot(data["sizes"], results)
        print(f"results: {path}" + (f", plot: {png}" if png else ""))
    return data


def headline(r: dict[str, Any]) -> str:
    """One size's figures in a line."""
    s = r.get("summary", {})
    change = r.get("vip_change", {}).get("all_s", {})
    kill = r.get("reflector_kill", {})
    return (
        f"{r['agents']} agents: APIs {report.fmt(r['api_up_s'])}, membership "
        f"{report.fmt(r['full_membership_s'])}, sessions {report.fmt(r['full_bgp_s'])}, every VIP route "
        f"{report.fmt(r['every_vip_route_s'])}; sessions/agent {r['sessions_per_agent'].get('p50')}; agent "
        f"{pct(s, 'agent_cpu_pct')} {mib(s, 'agent_rss_mib')}, ExaBGP {pct(s, 'exabgp_cpu_pct')} "
        f"{mib(s, 'exabgp_rss_mib')}, bridge {mib(s, 'bridge_rss_mib')}, BIRD {mib(s, 'bird_rss_mib')}; "
        f"VIP change p50/p99 {report.fmt(change.get('p50'))}/{report.fmt(change.get('p99'))}; reflector "
        f"kill: {kill.get('gaps', 'n/a')} gaps (max {report.fmt(kill.get('max_gap_s'))}), re-peered "
        f"{report.fmt(kill.get('peered_s'))}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labs.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=20, help="agents in the site (default 20)")
    parser.add_argument(
        "--sizes", help="several sites one after the other, e.g. 10,25,50,100 (overrides --agents)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on each wait, seconds")
    parser.add_argument("--window", type=float, default=20.0, help="steady-state CPU window, seconds")
    parser.add_argument("--hold-time", type=int, default=30, help="BGP hold time between BIRD and agents")
    parser.add_argument("--anycast", type=int, default=8, help="machines that carry the anycast VIP")
    parser.add_argument("--changes", type=int, default=3, help="VIP changes (a check failing, then passing)")
    parser.add_argument(
        "--unpolled",
        type=float,
        metavar="SECONDS",
        help="instead: start the agents with no VIPs, leave them alone SECONDS, then measure CPU over "
        "--window and each agent's count of members alive (does the mesh settle by itself?)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="K",
        help="run the last K agents under cProfile (labs/results/scale-<n>-<name>.pstats); they run slower",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [args.agents]
    if any(not 2 <= s <= 120 for s in sizes):
        parser.error("sizes must be between 2 and 120 (the site's addresses)")
    why = require_root_and_tools()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    run(
        sizes=sizes,
        timeout=args.timeout,
        window=args.window,
        hold_time=args.hold_time,
        anycast=args.anycast,
        changes=args.changes,
        unpolled=args.unpolled,
        profile=args.profile,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
