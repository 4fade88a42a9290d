"""The agent's BGP speaker end to end: a real agent process (``python -m agent agent``) with BGP on in
one network namespace, BIRD 2 in another as two external routers (two BGP protocols on two addresses,
ASes 65000 and 65010), all on a bridge in a third (``labs.kit.netns``; 198.18.0.0/24, no route out).

Shows, in order:

1. A VIP with a TCP health check on the agent's machine reaches BIRD only while the check passes (a
   TCP listener started and stopped in the agent's namespace), carrying the communities, MED and AS
   prepend of the machine's export policy set; its address is on the agent's ``lo`` meanwhile.
2. Prefixes BIRD announces from both routers: the agent's ``/v1/rib`` picks the right best path with
   the right reason (AS path length; LOCAL_PREF set by the import policy; an ECMP pair), an import
   rule that rejects is obeyed, and ``ip route show proto 200`` holds exactly the best routes and
   the ECMP set (never the VIP).
3. ExaBGP killed by pid: the agent restarts it and BIRD learns the VIP again.
4. SIGTERM: BIRD sees the VIP with GRACEFUL_SHUTDOWN (65535:0) before the withdrawal; the agent exits
   0 and leaves no kernel route and no lo address of its own behind.

Needs root and Debian's ``bird2``; every process is stopped by pid and every namespace deleted, also
on failure.
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

from labs.kit.bird import Bird, bird_edge_conf
from labs.kit.netns import Agent, NetnsLab, exabgp_pid, kernel_routes
from labs.kit.proc import Proc, sh
from labs.kit.wait import eventually_blocking

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

R1, R2, EDGE = "198.18.0.1", "198.18.0.3", "198.18.0.10"
MESH_AS, R1_AS, R2_AS = 64512, 65000, 65010
VIP = "100.96.0.10"
WAIT = 40.0


def router_id(address: str) -> str:
    """Not the session address, so that the agent must take it from the OPEN."""
    return "10.0.0." + address.rsplit(".", 1)[1]


STATICS = ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24", "198.18.200.0/24")


def bird_conf(address: str, asn: int, extra: str = "") -> str:
    """One external router: its static prefixes to the agent, everything from the agent accepted."""
    return bird_edge_conf(
        router_id=router_id(address),
        local=address,
        local_as=asn,
        neighbor=EDGE,
        neighbor_as=MESH_AS,
        statics=STATICS,
        hold_time=9,
        export=f"filter {{ if source != RTS_STATIC then reject; {extra} accept; }}",
        log="log stderr all;\ndebug protocols { states, events };",
    )


# r2 prepends its AS once more on 203.0.113.0/24: the agent must prefer r1 there on AS-path length.
R2_EXTRA = f"if net = 203.0.113.0/24 then bgp_path.prepend({R2_AS});"

AGENT_CONF = f"""
[bgp]
enabled = true
asn = {MESH_AS}
drain_time = 3.0
hold_time = 9
max_paths = 4

[[bgp.peers]]
address = "{R1}"
peer_asn = {R1_AS}
local_address = "{EDGE}"
hold_time = 9

[[bgp.peers]]
address = "{R2}"
peer_asn = {R2_AS}
local_address = "{EDGE}"
hold_time = 9
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

EXPORT_POLICY = {
    "name": "tag",
    "rules": [
        {
            "name": "vips",
            "match": {"prefix_list": [{"prefix": "100.96.0.0/16", "le": 32}]},
            "actions": {
                "set_med": 50,
                "communities": {"add": ["64512:100"]},
                "as_prepend": {"asn": MESH_AS, "count": 2},
            },
            "result": "accept",
        }
    ],
    "default": "reject",
}
IMPORT_POLICY = {
    "name": "in",
    "rules": [
        {"name": "bogon", "match": {"prefix_list": [{"prefix": "198.18.200.0/24"}]}, "result": "reject"},
        {
            "name": "prefer-r2",
            "match": {"prefix_list": [{"prefix": "192.0.2.0/24"}], "as_path": f"^{R2_AS}_"},
            "actions": {"set_local_pref": 200},
            "result": "accept",
        },
    ],
    "default": "accept",
}
VIP_OBJECT = {
    "name": "web",
    "address": VIP,
    "machines": ["edge1"],
    "health_check": {
        "type": "tcp",
        "target": "127.0.0.1:8080",
        "interval": 0.5,
        "timeout": 0.3,
        "healthy_threshold": 1,
        "unhealthy_threshold": 1,
    },
}


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    assert shutil.which("bird") and shutil.which("birdc"), "BIRD 2 is missing: apt-get install bird2"
    with NetnsLab(tmp_path / "lab") as lab:
        yield lab


def lo_addresses(ns: str) -> set[str]:
    data = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "dev", "lo"))
    return {a["local"] for link in data for a in link.get("addr_info", [])}


def vip_route(bird: Bird) -> str:
    return bird.route(f"{VIP}/32")


def rib(lab: NetnsLab, agent: Agent, prefix: str) -> dict[str, Any] | None:
    status, data = lab.request(agent, "GET", f"/v1/rib?prefix={prefix}")
    if status == 404:
        return None
    assert status == 200, data
    route: dict[str, Any] = data["routes"][0]
    return route


def test_agent_speaks_bgp_with_bird(lab: NetnsLab) -> None:
    started = time.monotonic()
    lab.add_node("r1", [R1])
    lab.add_node("r2", [R2])
    ns = lab.add_node("edge", [EDGE])
    bird = lab.start_bird("r1", bird_conf(R1, R1_AS))
    lab.start_bird("r2", bird_conf(R2, R2_AS, R2_EXTRA))
    agent = lab.start_agent(lab.agent("edge", "edge1", EDGE, AGENT_CONF))
    assert agent.proc is not None

    def failing() -> str | None:
        return None if agent.proc is not None and agent.proc.running else lab.tail(agent)

    def until(what: str, check: Any, timeout: float = WAIT) -> Any:
        try:
            return eventually_blocking(check, what=what, timeout=timeout, poll=0.2, failing=failing)
        except AssertionError as exc:
            protocols = bird.birdc("show", "protocols", "all")
            raise AssertionError(f"{exc}\n{protocols}\n--- agent log ---\n{lab.tail(agent)}") from None

    lab.call(agent, "POST", "/v1/policy-sets", EXPORT_POLICY)
    lab.call(agent, "POST", "/v1/policy-sets", IMPORT_POLICY)
    lab.call(agent, "PATCH", "/v1/machines/edge1", {"import_policies": ["in"], "export_policies": ["tag"]})
    lab.call(agent, "POST", "/v1/vips", VIP_OBJECT)

    # Both sessions come up.
    def sessions_up() -> bool:
        neighbors = lab.call(agent, "GET", "/v1/bgp/neighbors")
        return {n["address"]: n["state"] for n in neighbors} == {R1: "up", R2: "up"}

    until("both BGP sessions up", sessions_up)

    # 1. The VIP: on lo at once (assigned), in BIRD only while its check passes.
    until("the VIP address on lo", lambda: VIP in lo_addresses(ns))
    time.sleep(2.0)  # several check intervals with nothing listening
    assert not vip_route(bird), "announced although the check fails"

    listener: Proc = lab.spawn("listener", ns, [sys.executable, "-c", LISTENER])

    def vip_with_attributes() -> bool:
        block = vip_route(bird)
        return all(
            s in block
            for s in (
                f"BGP.as_path: {MESH_AS} {MESH_AS} {MESH_AS}",
                "BGP.med: 50",
                f"BGP.community: ({MESH_AS},100)",
                f"BGP.next_hop: {EDGE}",
            )
        )

    until("BIRD to learn the VIP with the export policy's attributes", vip_with_attributes)
    vip_status = lab.call(agent, "GET", "/v1/vips/web")
    assert vip_status["status"]["announced_by"] == ["edge1"]  # from what is on the wire

    lab.stop(listener)
    until("the VIP to be withdrawn when the check fails", lambda: not vip_route(bird))
    assert VIP in lo_addresses(ns)  # still assigned: the address stays

    # 2. Routes from BIRD: best paths and reasons, the import policy, the kernel.
    def learned() -> bool:
        return all(
            rib(lab, agent, p) is not None for p in ("203.0.113.0/24", "198.51.100.0/24", "192.0.2.0/24")
        )

    until("the agent to learn BIRD's prefixes", learned)

    shorter = rib(lab, agent, "203.0.113.0/24")
    assert shorter is not None
    assert shorter["best"]["peer"] == R1 and shorter["best"]["as_path"] == str(R1_AS)
    loser = next(p for p in shorter["paths"] if not p["best"])
    assert loser["peer"] == R2 and loser["as_path"] == f"{R2_AS} {R2_AS}"
    assert loser["reason"] == f"lost at AS Path: 2 vs 1 (via {R1})"
    assert shorter["ecmp"] == [R1]

    preferred = rib(lab, agent, "192.0.2.0/24")
    assert preferred is not None
    assert preferred["best"]["peer"] == R2 and preferred["best"]["local_pref"] == 200
    other = next(p for p in preferred["paths"] if not p["best"])
    assert other["reason"] == f"lost at Local Pref: 100 vs 200 (via {R2})"

    ecmp = rib(lab, agent, "198.51.100.0/24")
    assert ecmp is not None
    assert sorted(ecmp["ecmp"]) == [R1, R2]
    assert all(p["multipath"] for p in ecmp["paths"])
    assert {p["peer"]: p["peer_router_id"] for p in ecmp["paths"]} == {R1: router_id(R1), R2: router_id(R2)}
    assert rib(lab, agent, "198.18.200.0/24") is None  # rejected by the import policy

    wanted = {
        "203.0.113.0/24": [R1],
        "192.0.2.0/24": [R2],
        "198.51.100.0/24": [R1, R2],
    }
    until("the kernel to hold exactly the best routes", lambda: kernel_routes(ns) == wanted)
    address_lookup = rib(lab, agent, "203.0.113.77")  # an address: longest match
    assert address_lookup is not None and address_lookup["prefix"] == "203.0.113.0/24"

    # 3. ExaBGP killed: restarted, and the VIP (healthy again) is back in BIRD.
    listener = lab.spawn("listener", ns, [sys.executable, "-c", LISTENER])
    until("BIRD to learn the VIP again", vip_with_attributes)
    first = exabgp_pid(ns)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    until("exabgp restarted", lambda: (pid := exabgp_pid(ns)) is not None and pid != first)
    until("both sessions up again", sessions_up)
    until("BIRD to learn the VIP after the restart", vip_with_attributes)
    until("the kernel routes after the restart", lambda: kernel_routes(ns) == wanted)

    # 4. SIGTERM: graceful shutdown community first, then the withdrawal, then a clean exit.
    lab.signal(agent.proc, signal.SIGTERM)
    until("GRACEFUL_SHUTDOWN on the VIP", lambda: "(65535,0)" in vip_route(bird), timeout=10)
    gshut_seen = time.monotonic()
    until("the withdrawal after the drain", lambda: not vip_route(bird), timeout=20)
    assert time.monotonic() - gshut_seen > 1.5  # the drain time (3 s) passed in between
    assert agent.proc.process.wait(timeout=30) == 0
    assert kernel_routes(ns) == {}
    assert VIP not in lo_addresses(ns)
    assert time.monotonic() - started < 240


MESH = {"a1": "198.18.0.10", "a2": "198.18.0.11", "a3": "198.18.0.12"}
MESH_VIPS = {"a1": "100.96.1.1", "a2": "100.96.1.2", "a3": "100.96.1.3"}
FAST_GOSSIP = """
[gossip]
probe_interval = 0.5
probe_timeout = 0.25
gossip_interval = 0.1
suspicion_mult = 3
"""
MESH_CONF = f"""
[bgp]
enabled = true
asn = {MESH_AS}
drain_time = 2.0
"""  # the default hold time (90 s): what gossip-accelerated withdrawal beats


def test_three_agents_peer_automatically_and_drop_a_dead_member_fast(lab: NetnsLab) -> None:
    nodes = {name: lab.add_node(name, [address]) for name, address in MESH.items()}
    agents: dict[str, Agent] = {}
    for name, address in MESH.items():
        join = "" if name == "a1" else f'join = ["{MESH["a1"]}:7946"]\n'
        agents[name] = lab.start_agent(lab.agent(name, name, address, join + MESH_CONF + FAST_GOSSIP))

    def until(what: str, check: Any, timeout: float = WAIT, poll: float = 0.2) -> Any:
        try:
            return eventually_blocking(check, what=what, timeout=timeout, poll=poll)
        except AssertionError as exc:
            logs = "\n".join(f"--- {n} ---\n{lab.tail(a, 25)}" for n, a in agents.items())
            raise AssertionError(f"{exc}\n{logs}") from None

    a1, a2, a3 = agents["a1"], agents["a2"], agents["a3"]
    for name, address in MESH_VIPS.items():  # one VIP per machine, no check: announced at once
        lab.call(a1, "POST", "/v1/vips", {"name": f"vip-{name}", "address": address, "machines": [name]})

    def mesh_up(agent: Agent) -> bool:
        neighbors = lab.call(agent, "GET", "/v1/bgp/neighbors")
        others = {a for n, a in MESH.items() if n != agent.name}
        return {n["address"] for n in neighbors if n["state"] == "up"} == others

    for agent in agents.values():
        until(f"{agent.name}'s sessions to both other machines", lambda agent=agent: mesh_up(agent))
    neighbors = lab.call(a2, "GET", "/v1/bgp/neighbors")
    assert {n["name"] for n in neighbors} == {"a1", "a3"}
    assert all(n["type"] == "internal" for n in neighbors)

    def learned(agent: Agent) -> bool:
        routes = kernel_routes(nodes[agent.name])
        return routes == {
            f"{MESH_VIPS[n]}/32": [MESH[n]] for n in MESH if n != agent.name
        }  # every other machine's VIP, via that machine; never its own

    for agent in agents.values():
        until(f"{agent.name} to install the other machines' VIPs", lambda agent=agent: learned(agent))
    a1_vip = rib(lab, a2, f"{MESH_VIPS['a1']}/32")
    assert a1_vip is not None and a1_vip["best"]["peer_name"] == "a1"

    # Machine disable drains: GRACEFUL_SHUTDOWN (LOCAL_PREF 0 on receipt), then the withdrawal.
    lab.call(a1, "PATCH", "/v1/machines/a3", {"enabled": False})

    def gshut_at_a2() -> bool:
        entry = rib(lab, a2, f"{MESH_VIPS['a3']}/32")
        best = entry["best"] if entry is not None else {}
        return "graceful-shutdown" in best.get("communities", []) and best.get("local_pref") == 0

    until("a3's VIP with graceful-shutdown at a2", gshut_at_a2, poll=0.05)
    until("a3's VIP withdrawn after the drain", lambda: rib(lab, a2, f"{MESH_VIPS['a3']}/32") is None)
    lab.call(a1, "PATCH", "/v1/machines/a3", {"enabled": True})
    until("a3's VIP back", lambda: rib(lab, a2, f"{MESH_VIPS['a3']}/32") is not None)

    # a1 killed: the others drop its path once gossip says it is dead, long before the 90 s hold time.
    assert a1.proc is not None
    killed = time.monotonic()
    lab.signal(a1.proc, signal.SIGKILL)
    gone = f"{MESH_VIPS['a1']}/32"
    for agent in (a2, a3):
        until(
            f"{agent.name} to drop a1's VIP",
            lambda agent=agent: (
                gone not in kernel_routes(nodes[agent.name]) and rib(lab, agent, gone) is None
            ),
            timeout=30,
            poll=0.05,
        )
    elapsed = time.monotonic() - killed
    assert elapsed < 15, f"took {elapsed:.1f} s"  # gossip detection (a few seconds here), not 90 s
    assert f"{MESH_VIPS['a3']}/32" in kernel_routes(nodes["a2"])  # the others' routes stay
    assert a1.proc.process.wait(timeout=10) == -signal.SIGKILL
    print(f"a1's VIP dropped by a2 and a3 {elapsed:.2f} s after the kill")
