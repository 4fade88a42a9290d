"""Which speaker should hold a route reflector's sessions: BIRD 2 or ExaBGP with the reflection done in
Python. Decided by measurement (issue: route reflectors), with real sessions in network namespaces.

One reflector and ``--clients`` iBGP clients (default 100), each a BIRD 2 in a namespace of its own on
one LAN (its own router id, so RFC 4456's ORIGINATOR_ID check works as between real machines, and no
client's next hop is another's local address). Two speakers play the reflector:

* ``bird``: BIRD 2 with every client as ``rr client`` and ``add paths tx`` (RFC 7911);
* ``exabgp``: ExaBGP with ``add-path send`` and an API process that reflects every update to every
  other client (ORIGINATOR_ID, CLUSTER_LIST, a path id per originator): the cheapest form the agent's
  routing core over ExaBGP could take, so its figures are a floor for that option.

Per speaker it prints: seconds until every client session is Established; the reflector's CPU % over an
idle window and its RSS and PSS (all its processes); and the fan-out of one VIP announcement, from
``birdc enable`` on the announcing client to the route in each other client's table (BIRD stamps the
import, ``timeformat route iso long ms``), p50 / p99 / max over clients and toggles; then with a second
announcer of the same VIP, how many clients hold both paths (ADD-PATH).

    python -m labs.bench_reflector                          # both speakers, 100 clients
    python -m labs.bench_reflector --speaker bird --clients 50 --toggles 3

Needs root, iproute2, Debian's bird2 and the venv's exabgp. Run it alone: the CPU figures are the
machine's; the load average is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from labs.kit.bird import Bird
from labs.kit.netns import NetnsLab
from labs.kit.proc import Proc, children, cpu_seconds, smaps_mib
from labs.kit.wait import eventually_blocking

ASN = 64512
REFLECTOR = "198.18.0.1"
FIRST_CLIENT = 10
VIP = "100.96.0.10/32"
MAX_CLIENTS = 240  # addresses .10 to .249 of the lab's /24


def client_address(i: int) -> str:
    return f"198.18.0.{FIRST_CLIENT + i}"


def client_conf(address: str, announcer: bool) -> str:
    """One client: a session to the reflector; an announcer also has the VIP (disabled at start)."""
    vip = f"protocol static vip {{ disabled; ipv4; route {VIP} blackhole; }}\n" if announcer else ""
    return f"""
router id {address};
log stderr {{ warning, error, fatal }};
timeformat route iso long ms;
protocol device {{}}
{vip}
protocol bgp up {{
  local {address} as {ASN};
  neighbor {REFLECTOR} as {ASN};
  direct;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 2;
  ipv4 {{ import all; export where source = RTS_STATIC; add paths rx; next hop self; }};
}}
"""


def bird_reflector_conf(clients: Sequence[str]) -> str:
    sessions = "".join(
        f"protocol bgp c{i} from rrc {{ neighbor {a} as {ASN}; }}\n" for i, a in enumerate(clients)
    )
    return f"""
router id {REFLECTOR};
log stderr {{ warning, error, fatal }};
protocol device {{}}
template bgp rrc {{
  local {REFLECTOR} as {ASN};
  rr client;
  direct;
  rr cluster id {REFLECTOR};
  passive;
  ipv4 {{ import all; export all; add paths tx; }};
}}
{sessions}"""


def exabgp_reflector_conf(clients: Sequence[str], api: Sequence[str]) -> str:
    lines = ["process reflect {", f"    run {' '.join(api)};", "    encoder json;", "}"]
    for a in clients:
        lines += [
            f"neighbor {a} {{",
            f"    router-id {REFLECTOR};",
            f"    local-address {REFLECTOR};",
            f"    local-as {ASN};",
            f"    peer-as {ASN};",
            "    passive true;",
            "    listen 179;",
            "    capability { add-path send; }",
            "    family { ipv4 unicast; }",
            "    api { processes [ reflect ]; receive { parsed; update; } }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def reflect(stdin: Any = sys.stdin, stdout: Any = sys.stdout) -> int:
    """ExaBGP's API process for the ``exabgp`` speaker: every route a client sends goes to every other
    client, with ORIGINATOR_ID (the client's router id, its address here), our CLUSTER_LIST and a path
    id per originator (RFC 4456 section 8, RFC 7911). Withdrawals likewise."""
    from agent.bgp.api import ApiCodecError, Update, parse_line

    clients: list[str] = json.loads(os.environ["WM_BENCH_CLIENTS"])
    for line in stdin:
        try:
            msg = parse_line(line)
        except ApiCodecError:
            continue
        if not isinstance(msg, Update):
            continue
        origin = msg.peer.address
        out: list[str] = []
        for route in msg.announced:
            a = route.attributes
            attrs = (
                f"next-hop {route.next_hop} origin {a.origin.value} local-preference {a.local_pref or 100}"
            )
            attrs += f" originator-id {origin} cluster-list [ {REFLECTOR} ] path-information {origin}"
            out += [f"neighbor {c} announce route {route.prefix} {attrs}\n" for c in clients if c != origin]
        for prefix in msg.withdrawn:
            out += [
                f"neighbor {c} withdraw route {prefix} path-information {origin}\n"
                for c in clients
                if c != origin
            ]
        if out:
            stdout.write("".join(out))
            stdout.flush()
    return 0


def parse_stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def vip_routes(bird: Bird) -> dict[str, float]:
    """This client's routes for the VIP: originator (``BGP.originator_id``) -> import time."""
    out: dict[str, float] = {}
    stamp: float | None = None
    for line in bird.birdc("show", "route", "all", VIP).splitlines():
        if "[up " in line:
            stamp = parse_stamp(line.split("[up ", 1)[1].split("]", 1)[0].split(" from")[0].strip())
        elif "BGP.originator_id:" in line and stamp is not None:
            out[line.split(":", 1)[1].strip()] = stamp
    return out


def established(bird: Bird) -> bool:
    return "Established" in bird.birdc("show", "protocols", "up")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (ExaBGP's API process; ``ip netns exec`` has exec'd by now)."""
    out = [pid]
    for child in children(pid):
        out += tree(child)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_reflector(lab: NetnsLab, speaker: str, clients: list[str]) -> Proc:
    ns = lab.nodes["rr"]
    if speaker == "bird":
        return lab.start_bird("rr", bird_reflector_conf(clients)).proc
    conf = lab.workdir / "exabgp.conf"
    api = (sys.executable, "-m", "labs.bench_reflector", "--api-process")
    conf.write_text(exabgp_reflector_conf(clients, api))
    env = {
        "WM_BENCH_CLIENTS": json.dumps(clients),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "exabgp_api_ack": "false",
        "exabgp_api_cli": "false",
        "exabgp_tcp_bind": "",
        "exabgp_daemon_daemonize": "false",
        "exabgp_daemon_user": "root",
        "exabgp_log_destination": "stdout",
        "exabgp_log_level": "WARNING",
    }
    exabgp = str(Path(sys.executable).parent / "exabgp")
    return lab.spawn("rr-exabgp", ns, [exabgp, str(conf)], env=env)


def start_client(lab: NetnsLab, i: int, address: str) -> Bird:
    conf = lab.workdir / f"c{i}-bird.conf"
    conf.write_text(client_conf(address, announcer=i < 2))
    sock = lab.workdir / f"c{i}-bird.ctl"
    proc = lab.spawn(f"c{i}-bird", lab.nodes[f"c{i}"], ["bird", "-f", "-c", str(conf), "-s", str(sock)])
    return Bird(proc, sock).wait_ready()


def run(speaker: str, n: int, toggles: int, window: float, workdir: Path) -> dict[str, Any]:
    clients = [client_address(i) for i in range(n)]
    result: dict[str, Any] = {"speaker": speaker, "clients": n}
    with NetnsLab(workdir / speaker) as lab:
        lab.add_node("rr", [REFLECTOR])
        for i, a in enumerate(clients):
            lab.add_node(f"c{i}", [a])
        started = time.monotonic()
        reflector = start_reflector(lab, speaker, clients)
        birds = [start_client(lab, i, a) for i, a in enumerate(clients)]
        pending = list(birds)

        def all_up() -> bool:
            pending[:] = [b for b in pending if not established(b)]
            return not pending

        eventually_blocking(all_up, what=f"{n} sessions Established", timeout=60 + n, poll=0.2)
        result["all_established_s"] = round(time.monotonic() - started, 1)

        time.sleep(2)
        pids = tree(reflector.pid)
        cpu0, t0 = sum(cpu_seconds(p) or 0.0 for p in pids), time.monotonic()
        time.sleep(window)
        cpu1, t1 = sum(cpu_seconds(p) or 0.0 for p in pids), time.monotonic()
        mem = [smaps_mib(p) for p in pids]
        result["idle_cpu_pct"] = round(100 * (cpu1 - cpu0) / (t1 - t0), 2)
        result["rss_mib"] = round(sum(m["Rss"] for m in mem), 1)
        result["pss_mib"] = round(sum(m["Pss"] for m in mem), 1)
        result["processes"] = len(pids)

        announcer, others = birds[0], birds[2:]
        origin = clients[0]
        delays: list[float] = []
        busy: list[float] = []
        for _ in range(toggles):
            cpu_before = sum(cpu_seconds(p) or 0.0 for p in pids)
            sent = time.time()
            announcer.birdc("enable", "vip")
            seen: dict[int, float] = {}

            def everyone(seen: dict[int, float] = seen) -> bool:
                for i, b in enumerate(others):
                    if i not in seen:
                        stamp = vip_routes(b).get(origin)
                        if stamp is not None:
                            seen[i] = stamp
                return len(seen) == len(others)

            eventually_blocking(everyone, what="the VIP at every client", timeout=30, poll=0.05)
            delays += [s - sent for s in seen.values()]
            busy.append(sum(cpu_seconds(p) or 0.0 for p in pids) - cpu_before)
            announcer.birdc("disable", "vip")
            eventually_blocking(
                lambda: all(origin not in vip_routes(b) for b in others),
                what="the VIP withdrawn at every client",
                timeout=30,
                poll=0.05,
            )
        result["fanout_ms"] = {
            "p50": round(statistics.median(delays) * 1000, 1),
            "p99": round(pct(delays, 0.99) * 1000, 1),
            "max": round(max(delays) * 1000, 1),
            "samples": len(delays),
        }
        result["reflector_cpu_ms_per_fanout"] = round(1000 * sum(busy) / len(busy), 1)  # /proc ticks: 10 ms

        announcer.birdc("enable", "vip")
        birds[1].birdc("enable", "vip")
        both = {clients[0], clients[1]}
        eventually_blocking(
            lambda: all(both <= set(vip_routes(b)) for b in others),
            what="both announcers' paths at every client (ADD-PATH)",
            timeout=30,
            poll=0.1,
        )
        result["clients_with_both_paths"] = sum(both <= set(vip_routes(b)) for b in others)
        result["load_average"] = os.getloadavg()[0]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speaker", choices=("bird", "exabgp", "both"), default="both")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--toggles", type=int, default=5)
    parser.add_argument("--window", type=float, default=10.0, help="idle seconds over which CPU is read")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--api-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.api_process:
        return reflect()
    if not 3 <= args.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be 3..{MAX_CLIENTS}")
    speakers = ("bird", "exabgp") if args.speaker == "both" else (args.speaker,)
    results = []
    with tempfile.TemporaryDirectory(prefix="wiremesh-rr-") as tmp:
        for speaker in speakers:
            r = run(speaker, args.clients, args.toggles, args.window, Path(tmp))
            results.append(r)
            f = r["fanout_ms"]
            print(
                f"{speaker:7} {r['clients']} clients: all Established {r['all_established_s']} s; idle CPU "
                f"{r['idle_cpu_pct']}% ; RSS {r['rss_mib']} MiB, PSS {r['pss_mib']} MiB ({r['processes']} "
                f"processes); fan-out p50 {f['p50']} ms, p99 {f['p99']} ms, max {f['max']} ms "
                f"({f['samples']} samples), reflector CPU {r['reflector_cpu_ms_per_fanout']} ms per fan-out; "
                f"ADD-PATH: {r['clients_with_both_paths']}/{r['clients'] - 2} clients hold both paths; "
                f"load average {r['load_average']:.2f}",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
