"""A model of the mesh at sizes this machine cannot hold: full mesh against route reflectors.

The reflectors at each size come from the real rule (:func:`agent.bgp.reflectors.place`, claims
settled as gossip would settle them); the session counts from its plan. Costs are today's measured
figures, scaled by simple documented rules, so every number below is an estimate to check against
``labs.scale`` where it reaches:

* **ExaBGP RSS**: 30 MiB with 9, 19 and 29 mesh sessions alike (``labs.scale`` at 10, 20 and 30
  agents; issue 19: "ExaBGP 4.2% / 30 MiB" at 30 agents), so a session costs less than the 1 MiB
  resolution over 20 sessions: taken as **0.05 MiB per session** (an upper bound). Routes: 100,000
  prefixes took ExaBGP from 30 to 87 MiB (``make bench-bgp``), **0.58 KiB per route**. A reflector's
  Adj-RIB-Out (a copy of every path per client, which ExaBGP keeps unless ``adj-rib-out false``) is
  shown separately, at the same cost per route.
* **ExaBGP idle CPU**: 2.3% of a core with 9 sessions, 4.3% with 29 (README, scale lab): **1.4% +
  0.1% per session**, extrapolated linearly (keepalives and the reactor's per-peer polling).
* **Per-update CPU**: 100,000 prefixes from BIRD reached the RIB in 5.2 s (``make bench-bgp``):
  **52 µs per path** through ExaBGP, the API bridge and the agent, taken for a send as for a receive.
* **The reflector's speaker is BIRD 2** (chosen by ``python -m labs.bench_reflector``; README, "Route
  reflectors"): 4.8 MiB with 10 client sessions, 6.4 MiB with 100, 8.1 MiB with 200, so **4.6 MiB +
  0.017 MiB per session**; no idle CPU measurable at 200 sessions (below 0.1% of a core); one VIP
  fanned out to 199 clients cost it 10 ms of CPU, **0.05 ms per UPDATE sent**. Its routes: BIRD keeps
  one copy of each path (no Adj-RIB-Out per client: it exports from its table), taken at **0.2 KiB
  per path** (an estimate: BIRD's route entry plus its share of the attributes; not measured).
  ExaBGP in that role measured ten times the memory and a sixth of a core idle at 100 clients, so the
  ExaBGP figures above apply to client machines only.
* **Agent**: 87 MiB, 0.7% of a core (issue 19, 30 agents); a machine with BGP on costs 129 MiB
  (agent 87, ExaBGP 30, bridge 12). Unchanged by the mesh's shape at these route counts.
* **Fan-out of one VIP change** (one announcer's path added or withdrawn): full mesh, the announcer
  sends N - 1 UPDATEs, one hop. Reflected, the announcer sends one per reflector, and each reflector
  sends it on to every peer but the originator (N - 2), so r(N - 1) messages in all, two hops, and
  each machine receives it r times (ADD-PATH keeps the copies apart; reflectors sharing a cluster id
  drop each other's reflections on receipt).
* **Gossip**: the time a published value (a reflector's claim) takes to reach every member, run in
  the sans-I/O gossip simulator (:class:`gossip.Simulation`, LAN defaults) up to ``--sim-max``
  members, and estimated above it as ``gossip_interval x ceil(log_(gossip_nodes+1) N)`` (the
  estimate is printed beside the simulated figure where both exist). A dead reflector is replaced
  after gossip declares it dead (estimated: the minimum suspicion timeout 4 x log10 N x 1 s, plus
  2 s for the failed probes, which matches the simulator's 14.0-14.6 s at 1,000 in the README), plus
  the claim's spread, plus the speaker's 1 s reload batching; meanwhile its clients keep every route
  through the other reflector(s).

    python -m labs.model_reflectors --sizes 10,25,50,100,1000,10000
    python -m labs.model_reflectors --sizes 100,1000 --vips 500 --announcers 2 --sim-max 0
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from agent.bgp.reflectors import Mode, Params, Placement, Speaker, census, own_claim, place
from gossip import EventKind, GossipConfig, MemberState, Simulation

RESULTS = Path(__file__).parent / "results"

EXABGP_BASE_MIB = 30.0
MIB_PER_SESSION = 0.05
KIB_PER_ROUTE = 0.58
EXABGP_IDLE_CPU_PCT = 1.4
CPU_PCT_PER_SESSION = 0.1
SECONDS_PER_UPDATE = 52e-6
AGENT_MIB = 87.0
BRIDGE_MIB = 12.0
BIRD_BASE_MIB = 4.6
BIRD_MIB_PER_SESSION = 0.017
BIRD_KIB_PER_PATH = 0.2
BIRD_SECONDS_PER_SEND = 0.05e-3
RELOAD_BATCH_S = 1.0
PROBE_DETECT_S = 2.0


@dataclass
class Row:
    n: int
    mode: str
    reflectors: int
    sessions_total: int
    sessions_full_mesh: int
    sessions_per_reflector: int
    sessions_per_client: int
    fanout_messages: int
    fanout_full_mesh: int
    reflector_sends_per_change: int
    reflector_bird_mib: float
    client_idle_cpu_pct: float
    full_mesh_idle_cpu_pct: float
    reflector_cpu_s_per_change: float
    gossip_spread_s: float | None
    gossip_spread_est_s: float
    replacement_s: float
    sim_wall_s: float | None


def settled_placement(n: int, params: Params) -> Placement:
    """N alive machines, all ``auto``, after the chosen ones have published their claims."""
    view = [Speaker(f"m{i:05d}", MemberState.ALIVE) for i in range(n)]
    for now in range(1, 4):
        placement = place(view, params)
        view = [replace(s, claim=own_claim(placement, s.name, s.claim, now)) for s in view]
    return place(view, params)


def spread_estimate(n: int, config: GossipConfig) -> float:
    return config.gossip_interval * math.ceil(math.log(max(n, 2)) / math.log(config.gossip_nodes + 1))


def simulate_spread(n: int, seed: int) -> tuple[float | None, float]:
    """Seconds until every member saw one member's new value (a claim), and the wall time it took."""
    wall = time.perf_counter()
    sim = Simulation(n, seed=seed)
    sim.join_all(stagger=0.02)
    sim.run_until(sim.now + 10.0)
    publisher, mark, at = sim.names[1], len(sim.events), sim.now
    sim.node(publisher).set_kv("bgp", b"\x00" * 80, sim.now)
    sim.run_until(sim.now + 5.0)
    seen = {
        o.observer: o.at - at
        for o in sim.events[mark:]
        if o.event.kind is EventKind.KV and o.event.name == publisher and o.observer != publisher
    }
    spread = round(max(seen.values()), 2) if len(seen) == n - 1 else None
    return spread, round(time.perf_counter() - wall, 1)


def model(n: int, params: Params, paths: int, sim_max: int, seed: int) -> Row:
    config = GossipConfig()
    placement = settled_placement(n, params)
    counts = census(placement)
    r = len(placement.reflectors)
    reflected = placement.mode is Mode.REFLECTED
    per_reflector = counts["per_reflector"]
    fanout = r * (n - 1) if reflected else n - 1
    sends = n - 2 if reflected else 0
    spread, wall = simulate_spread(n, seed) if n <= sim_max else (None, None)
    estimate = spread_estimate(n, config)
    detect = config.suspicion_min_timeout(n) + PROBE_DETECT_S
    return Row(
        n=n,
        mode=placement.mode.value,
        reflectors=r,
        sessions_total=counts["total"],
        sessions_full_mesh=n * (n - 1) // 2,
        sessions_per_reflector=per_reflector,
        sessions_per_client=counts["per_client"],
        fanout_messages=fanout,
        fanout_full_mesh=n - 1,
        reflector_sends_per_change=sends,
        reflector_bird_mib=round(
            BIRD_BASE_MIB + per_reflector * BIRD_MIB_PER_SESSION + paths * BIRD_KIB_PER_PATH / 1024, 1
        )
        if reflected
        else 0.0,
        client_idle_cpu_pct=round(EXABGP_IDLE_CPU_PCT + CPU_PCT_PER_SESSION * counts["per_client"], 1),
        full_mesh_idle_cpu_pct=round(EXABGP_IDLE_CPU_PCT + CPU_PCT_PER_SESSION * (n - 1), 1),
        reflector_cpu_s_per_change=round(sends * BIRD_SECONDS_PER_SEND, 4) if reflected else 0.0,
        gossip_spread_s=spread,
        gossip_spread_est_s=round(estimate, 2),
        replacement_s=round(detect + (spread if spread is not None else estimate) + RELOAD_BATCH_S, 1),
        sim_wall_s=wall,
    )


HEADER = (
    "| N | mode | reflectors | sessions: total / full mesh | per reflector / per client | "
    "messages per VIP change (full mesh) | reflector (BIRD) MiB | "
    "idle ExaBGP CPU: client / full-mesh machine | reflector CPU s per VIP change | "
    "claim reaches all: sim / est. | reflector replaced after |"
)


def markdown(row: Row) -> str:
    reflected = row.mode == Mode.REFLECTED.value
    spread = f"{row.gossip_spread_s:.2f}" if row.gossip_spread_s is not None else "—"
    return (
        f"| {row.n:,} | {row.mode} | {row.reflectors} | "
        f"{row.sessions_total:,} / {row.sessions_full_mesh:,} | "
        + (
            f"{row.sessions_per_reflector:,} / {row.sessions_per_client} | "
            if reflected
            else f"— / {row.n - 1:,} | "
        )
        + f"{row.fanout_messages:,} ({row.fanout_full_mesh:,}) | "
        + (f"{row.reflector_bird_mib:,.1f} | " if reflected else "— | ")
        + (
            f"{row.client_idle_cpu_pct:.1f}% / {row.full_mesh_idle_cpu_pct:,.1f}% | "
            if reflected
            else f"— / {row.full_mesh_idle_cpu_pct:,.1f}% | "
        )
        + (f"{row.reflector_cpu_s_per_change:.3f} | " if reflected else "— | ")
        + f"{spread} / {row.gossip_spread_est_s:.2f} s | "
        + (f"{row.replacement_s:.1f} s |" if reflected else "— |")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10,25,50,100,1000,10000", help="comma-separated mesh sizes")
    parser.add_argument("--k", type=int, default=Params().k, help="reflectors (bgp.reflectors)")
    parser.add_argument("--full-mesh-below", type=int, default=Params().full_mesh_below)
    parser.add_argument("--vips", type=int, default=100, help="VIPs in the mesh")
    parser.add_argument("--announcers", type=int, default=3, help="machines announcing each VIP")
    parser.add_argument(
        "--sim-max", type=int, default=200, help="simulate gossip up to this size (1,000 takes minutes)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=RESULTS / "model_reflectors.json")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        params = Params(k=args.k, full_mesh_below=args.full_mesh_below, margin=min(2, args.full_mesh_below))
    except ValueError as e:
        parser.error(str(e))
    if any(n < 2 for n in sizes):
        parser.error("--sizes: every size must be at least 2")
    paths = args.vips * args.announcers
    print(
        f"k={params.k}, full mesh below {params.full_mesh_below}, {args.vips} VIPs x {args.announcers} "
        f"announcers = {paths} paths (ADD-PATH: every machine holds all of them)\n"
    )
    print(HEADER)
    print("|" + "---|" * HEADER.count(" | ") + "---|")
    rows = []
    for n in sizes:
        row = model(n, params, paths, args.sim_max, args.seed)
        rows.append(row)
        print(markdown(row), flush=True)
    walls = [f"{r.n:,}: {r.sim_wall_s} s" for r in rows if r.sim_wall_s is not None]
    if walls:
        print(f"\ngossip simulation wall time: {', '.join(walls)}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
