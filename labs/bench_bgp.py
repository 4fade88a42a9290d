"""BGP speaker figures with a real agent and BIRD 2 in network namespaces (``labs.kit.netns``).

1. **Decision to BIRD**: a VIP without a health check is disabled and enabled again ``--toggles``
   times through the API. Each enable makes the planner decide "announce" (the agent logs it, wall
   clock, ms); BIRD stamps the route when it imports it (``timeformat route iso long ms``). The
   difference is the time from the planner's decision to the route being in BIRD's table: announcer
   publication, the speaker's export pass, the ExaBGP API, ExaBGP's UPDATE, BIRD's import. Withdrawals
   are timed the same way from the decision to the route gone from ``birdc`` (polled every 5 ms).
2. **A full table in**: BIRD starts with ``--prefixes`` static /24s (default 100,000) exported to the
   agent; timed from BIRD's session reaching Established until the agent's RIB holds them all and
   until the kernel does (``ip route show proto 200``), with the agent's and ExaBGP's RSS then. Then
   BIRD is stopped: time until the RIB and the kernel are empty again.

    python -m labs.bench_bgp                       # 20 toggles, 100,000 prefixes
    python -m labs.bench_bgp --toggles 50 --prefixes 20000 --json labs/results/bench_bgp.json

Needs root and Debian's ``bird2``. Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from labs.kit.agentlog import decisions, parse_wall
from labs.kit.bird import Bird, bird_edge_conf
from labs.kit.netns import Agent, NetnsLab, exabgp_pid
from labs.kit.proc import sh
from labs.kit.wait import eventually_blocking

ROUTER, EDGE = "198.18.0.1", "198.18.0.10"
ROUTER_AS, MESH_AS = 65000, 64512
VIP = "100.96.0.10"

AGENT_CONF = f"""
[bgp]
enabled = true
asn = {MESH_AS}
drain_time = 0

[[bgp.peers]]
address = "{ROUTER}"
peer_asn = {ROUTER_AS}
local_address = "{EDGE}"
hold_time = 30
"""


def bird_conf(prefixes: int) -> str:
    """BIRD as the router, exporting ``prefixes`` static /24s (from 10.0.0.0) to the agent."""
    statics = (f"{10 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}.0/24" for i in range(prefixes))
    return bird_edge_conf(
        router_id=ROUTER,
        local=ROUTER,
        local_as=ROUTER_AS,
        neighbor=EDGE,
        neighbor_as=MESH_AS,
        statics=statics,
    )


def bird_learned_at(bird: Bird, prefix: str) -> float | None:
    text = bird.route(prefix)
    for line in text.splitlines():
        if line.startswith(prefix) and "[" in line:
            stamp = line.split("[", 1)[1].split("]", 1)[0].split(" ", 1)[1]
            return parse_wall(stamp)
    return None


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def kernel_count(ns: str) -> int:
    return sh("ip", "-n", ns, "route", "show", "proto", "200").count("\n")


def rib_count(lab: NetnsLab, agent: Agent) -> int:
    status, data = lab.request(agent, "GET", "/v1/rib?limit=1", timeout=30)
    return int(data["destinations"]) if status == 200 else -1


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
    }


def toggles(lab: NetnsLab, agent: Agent, bird: Bird, count: int) -> dict[str, Any]:
    prefix = f"{VIP}/32"
    assert agent.proc is not None
    log = agent.proc.log
    lab.call(agent, "POST", "/v1/vips", {"name": "web", "address": VIP, "machines": ["edge1"]})
    eventually_blocking(lambda: bird.route(prefix), what="the VIP in BIRD", timeout=30)
    announce: list[float] = []
    withdraw: list[float] = []
    for _ in range(count):
        lab.call(agent, "PATCH", "/v1/vips/web", {"enabled": False})
        gone = eventually_blocking(
            lambda: not bird.route(prefix) and time.time(),
            what="the withdrawal in BIRD",
            timeout=10,
            poll=0.005,
        )
        decided = decisions(log, "vip/web", "withdraw")[-1]
        withdraw.append(gone - decided)
        time.sleep(0.2)
        lab.call(agent, "PATCH", "/v1/vips/web", {"enabled": True})
        learned = eventually_blocking(
            lambda: bird_learned_at(bird, prefix), what="the route in BIRD", timeout=10, poll=0.01
        )
        decided = decisions(log, "vip/web", "announce")[-1]
        announce.append(learned - decided)
        time.sleep(0.2)
    lab.call(agent, "DELETE", "/v1/vips/web")  # the full-table part counts received routes only
    eventually_blocking(lambda: rib_count(lab, agent) == 0, what="the VIP gone from the RIB", timeout=10)
    return {"announce": summary(announce), "withdraw": summary(withdraw)}


def full_table(lab: NetnsLab, agent: Agent, ns: str, prefixes: int) -> dict[str, Any]:
    bird = lab.start_bird("router", bird_conf(prefixes))

    def established() -> float | None:
        for line in bird.birdc("show", "protocols").splitlines():
            if line.startswith("edge") and "Established" in line:
                parts = line.split()
                return parse_wall(f"{parts[4]} {parts[5]}")
        return None

    up = eventually_blocking(established, what="the session with BIRD", timeout=60, poll=0.05)
    rib_at = eventually_blocking(
        lambda: rib_count(lab, agent) >= prefixes and time.time(),
        what=f"{prefixes} prefixes in the RIB",
        timeout=600,
        poll=0.25,
    )
    kernel_at = eventually_blocking(
        lambda: kernel_count(ns) >= prefixes and time.time(),
        what=f"{prefixes} routes in the kernel",
        timeout=600,
        poll=0.25,
    )
    assert agent.proc is not None
    exa = exabgp_pid(ns)
    rss_agent = rss_kib(agent.proc.pid)
    rss_exabgp = rss_kib(exa) if exa is not None else 0
    stopped = time.time()
    lab.stop(bird.proc)
    rib_empty = eventually_blocking(
        lambda: rib_count(lab, agent) == 0 and time.time(), what="an empty RIB", timeout=600, poll=0.25
    )
    kernel_empty = eventually_blocking(
        lambda: kernel_count(ns) == 0 and time.time(), what="an empty kernel table", timeout=600, poll=0.25
    )
    return {
        "prefixes": prefixes,
        "rib_full_s": round(rib_at - up, 2),
        "kernel_full_s": round(kernel_at - up, 2),
        "rss_agent_mib": round(rss_agent / 1024, 1),
        "rss_exabgp_mib": round(rss_exabgp / 1024, 1),
        "rib_empty_s": round(rib_empty - stopped, 2),
        "kernel_empty_s": round(kernel_empty - stopped, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--toggles", type=int, default=20)
    parser.add_argument("--prefixes", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=Path("labs/results/bench_bgp.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wm-bench-bgp-") as tmp, NetnsLab(Path(tmp)) as lab:
        lab.add_node("router", [ROUTER])
        ns = lab.add_node("edge", [EDGE])
        agent = lab.start_agent(lab.agent("edge", "edge1", EDGE, AGENT_CONF))
        bird = lab.start_bird("router", bird_conf(0))
        latency = toggles(lab, agent, bird, args.toggles)
        lab.stop(bird.proc)
        table = full_table(lab, agent, ns, args.prefixes)
    results = {"decision_to_bird": latency, "full_table": table}
    a, w = latency["announce"], latency["withdraw"]
    print(f"decision -> route in BIRD ({a['n']} toggles): p50 {a['p50_ms']} ms, max {a['max_ms']} ms")
    print(f"decision -> route gone from BIRD:             p50 {w['p50_ms']} ms, max {w['max_ms']} ms")
    print(
        f"{table['prefixes']} prefixes from BIRD: RIB full {table['rib_full_s']} s and kernel full "
        f"{table['kernel_full_s']} s after the session came up; RSS agent {table['rss_agent_mib']} MiB, "
        f"exabgp {table['rss_exabgp_mib']} MiB"
    )
    print(f"BIRD stopped: RIB empty after {table['rib_empty_s']} s, kernel after {table['kernel_empty_s']} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
