"""Route reflection end to end: six real agents (``python -m agent agent``) with BGP on, one network
namespace each on a bridge (``labs.kit.netns``; 198.18.0.0/24, no route out), ``full_mesh_below = 4``
and ``reflectors = 2``, so the mesh places two reflectors from gossip and each runs BIRD 2 as its
reflector speaker (port 1790).

Shows, in order:

1. Every agent computes the same two reflectors; every machine's ExaBGP holds exactly two mesh
   sessions, one to each reflector's BIRD (a reflector's own among them), and each BIRD's sessions
   are up to every machine.
2. Every agent installs every other machine's VIP, via that machine; an anycast VIP on two clients
   has both announcers in every other RIB (ADD-PATH through the reflectors) and both as ECMP next hops.
3. A reflector's machine dies (its link down, every process in its namespace killed with SIGKILL):
   while the others poll their kernels every few milliseconds no agent loses a route to a live
   machine's VIP, a new reflector is chosen and every client peers with it.
4. The anycast VIP's check failing on one of its machines removes just that path everywhere.
5. The surviving reflector's agent stopped with SIGTERM leaves no BIRD (nor anything else) behind.

Needs root, ExaBGP and Debian's ``bird2``; every process is stopped by pid and every namespace deleted,
also on failure.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs.kit.netns import Agent, NetnsLab, kernel_routes
from labs.kit.proc import sh
from labs.kit.wait import eventually_blocking

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

MESH = {f"m{i}": f"198.18.0.{10 + i}" for i in range(1, 7)}
VIPS = {name: f"100.96.1.{i}" for i, name in enumerate(MESH, start=1)}
ANYCAST = "100.96.2.1"
WAIT = 30.0

CONF = """
[bgp]
enabled = true
asn = 64512
drain_time = 1.0
hold_time = 9
max_paths = 4
full_mesh_below = 4
reflectors = 2
reflector_hold = 3.0

[gossip]
probe_interval = 0.5
probe_timeout = 0.25
gossip_interval = 0.1
suspicion_mult = 3
"""

LISTENER = (
    "import socket\n"
    "s = socket.socket()\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', 8080))\n"
    "s.listen(64)\n"
    "while True:\n"
    "    s.accept()[0].close()\n"
)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    assert shutil.which("bird") and shutil.which("birdc"), "BIRD 2 is missing: apt-get install bird2"
    with NetnsLab(tmp_path / "lab") as lab:
        yield lab


def test_six_agents_reflect_through_two_reflectors_and_survive_a_reflector_death(lab: NetnsLab) -> None:
    nodes = {name: lab.add_node(name, [address]) for name, address in MESH.items()}
    agents: dict[str, Agent] = {}
    for name, address in MESH.items():
        join = "" if name == "m1" else f'join = ["{MESH["m1"]}:7946"]\n'
        agents[name] = lab.start_agent(lab.agent(name, name, address, join + CONF))

    def until(what: str, check: Any, timeout: float = WAIT, poll: float = 0.2) -> Any:
        try:
            return eventually_blocking(check, what=what, timeout=timeout, poll=poll)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{state()}") from None

    def state() -> str:
        """Each agent's reflection view, sessions and log tail, for a failure's message."""
        out = []
        for n, a in agents.items():
            out.append(f"--- {n} ---")
            try:
                out.append(json.dumps(reflection(a)))
                for nb in lab.call(a, "GET", "/v1/bgp/neighbors"):
                    rr = "reflector" if nb["reflector"] else "direct"
                    out.append(f"  {nb['address']} {nb['name']} {rr} {nb['state']} {nb['last_error']}")
            except (OSError, AssertionError) as exc:
                out.append(f"  API: {exc}")
            out.append(f"  kernel: {kernel_routes(nodes[n])}")
            status, data = lab.request(a, "GET", f"/v1/rib?prefix={ANYCAST}/32")
            for p in data["routes"][0]["paths"] if status == 200 else []:
                out.append(
                    f"  {ANYCAST} from {p['peer']} via {p['next_hop']} by {p['originator_id']} "
                    f"({p['origin_machine']}): {p['reason']}"
                )
            out.append(lab.tail(a, 8))
        return "\n".join(out)

    def reflection(agent: Agent) -> dict[str, Any]:
        data: dict[str, Any] = lab.call(agent, "GET", "/v1/bgp/reflectors")
        return data

    def placed(live: dict[str, Agent], without: frozenset[str] = frozenset()) -> tuple[str, ...] | None:
        """The reflector set, once every live agent computes the same one, settled, none of ``without``."""
        views = [reflection(a) for a in live.values()]
        sets = {tuple(v["reflectors"]) for v in views}
        if len(sets) != 1 or any(v["mode"] != "reflected" or v["switching"] for v in views):
            return None
        assert all(v["disagree"] == [] for v in views), "the same knobs everywhere: nothing to report"
        (reflectors,) = sets
        return reflectors if len(reflectors) == 2 and not set(reflectors) & without else None

    def peered(live: dict[str, Agent], reflectors: tuple[str, ...]) -> bool:
        """Every machine: exactly one session per reflector, up, to its BIRD, and no other mesh
        session. Reflectors: BIRD's sessions up to every live machine's ExaBGP."""
        for agent in live.values():
            mesh = [n for n in lab.call(agent, "GET", "/v1/bgp/neighbors") if n["name"] is not None]
            if not all(n["reflector"] and n["state"] == "up" for n in mesh):
                return False
            expected = set(reflectors)  # a reflector's ExaBGP is a client of its own BIRD and the others'
            if sorted(n["name"] for n in mesh) != sorted(expected):
                return False
            if agent.name in reflectors:
                sessions = reflection(agent)["bird_sessions"]
                up = {s["machine"] for s in sessions if s["info"].startswith("Established")}
                if up != set(live):
                    return False
        return True

    def learned(live: dict[str, Agent]) -> bool:
        for agent in live.values():
            routes = kernel_routes(nodes[agent.name])
            want = {f"{VIPS[n]}/32": [MESH[n]] for n in live if n != agent.name}
            if {p: h for p, h in routes.items() if p != f"{ANYCAST}/32"} != want:
                return False
        return True

    for name, address in VIPS.items():  # one VIP per machine, no check: announced at once
        lab.call(
            agents["m1"], "POST", "/v1/vips", {"name": f"vip-{name}", "address": address, "machines": [name]}
        )

    reflectors = until("every agent to place the same two reflectors", lambda: placed(agents), timeout=45)
    until("every client peered with both reflectors' BIRD only", lambda: peered(agents, reflectors))
    until("every agent to install every other machine's VIP", lambda: learned(agents))

    # An anycast VIP on two clients, with a TCP check that a listener in each namespace passes.
    pair = [n for n in MESH if n not in reflectors][:2]
    listeners = {n: lab.spawn(f"listener-{n}", nodes[n], [sys.executable, "-c", LISTENER]) for n in pair}
    check = {"type": "tcp", "target": "127.0.0.1:8080", "interval": 0.5, "timeout": 0.3,
             "healthy_threshold": 1, "unhealthy_threshold": 1}  # fmt: skip
    lab.call(agents["m1"], "POST", "/v1/vips",
             {"name": "anycast", "address": ANYCAST, "machines": pair, "health_check": check})  # fmt: skip

    def anycast_everywhere(live: dict[str, Agent], announcers: list[str]) -> bool:
        for agent in live.values():
            if agent.name in pair:
                continue  # the VIP's machines keep it on lo, out of their FIB
            hops = sorted(MESH[n] for n in announcers)
            if kernel_routes(nodes[agent.name]).get(f"{ANYCAST}/32", []) != hops:
                return False
            status, data = lab.request(agent, "GET", f"/v1/rib?prefix={ANYCAST}/32")
            if status != 200:
                return False
            origins = {p["originator_id"] or p["peer"] for p in data["routes"][0]["paths"]}
            if origins != {MESH[n] for n in announcers}:
                return False
            if {p["origin_machine"] for p in data["routes"][0]["paths"]} != set(announcers):
                return False  # each reflected path names its announcer, not the reflector
        return True

    until("the anycast VIP with both announcers everywhere", lambda: anycast_everywhere(agents, pair))

    # A reflector dies. The others poll their kernels throughout: no live machine's VIP may go missing.
    dead = reflectors[0]
    live = {n: a for n, a in agents.items() if n != dead}
    sh("ip", "-n", nodes[dead], "link", "set", "eth0", "down")
    for pid in sh("ip", "netns", "pids", nodes[dead], check=False).split():
        os.kill(int(pid), signal.SIGKILL)
    killed = time.monotonic()
    missing: list[str] = []
    replaced: tuple[str, ...] | None = None
    deadline = killed + WAIT
    while time.monotonic() < deadline:
        for agent in live.values():
            routes = kernel_routes(nodes[agent.name])
            for n in live:
                if n != agent.name and f"{VIPS[n]}/32" not in routes:
                    missing.append(
                        f"{agent.name} had no route to {n}'s VIP {time.monotonic() - killed:.2f} s in"
                    )
            hops = routes.get(f"{ANYCAST}/32", [])
            if agent.name not in pair and not hops:
                missing.append(f"{agent.name} had no anycast route {time.monotonic() - killed:.2f} s in")
        if replaced is None:
            replaced = placed(live, without=frozenset({dead}))
        elif peered(live, replaced):
            break
    else:
        raise AssertionError(f"no new reflector peered within {WAIT} s (placed: {replaced})")
    elapsed = time.monotonic() - killed
    assert not missing, missing[:10]
    assert replaced is not None and reflectors[1] in replaced  # the survivor keeps its role
    print(f"reflector {dead} killed: {set(replaced) - {reflectors[1]}} took over, peered in {elapsed:.1f} s")
    until("every live agent still installs every live machine's VIP", lambda: learned(live))

    # The check fails on one anycast machine: just its path goes, everywhere.
    failing, staying = pair
    lab.stop(listeners[failing])
    until("the failing machine's anycast path gone everywhere", lambda: anycast_everywhere(live, [staying]))

    # A reflector's agent stopped (SIGTERM): it stops its BIRD by pid, nothing of it is left running.
    survivor = agents[reflectors[1]]
    bird_pid = reflection(survivor)["bird_pid"]
    assert bird_pid is not None
    assert survivor.proc is not None and lab.stop(survivor.proc) == 0
    left = sh("ip", "netns", "pids", nodes[survivor.name], check=False).split()  # no listener there
    assert not Path(f"/proc/{bird_pid}").exists() and not left, left
