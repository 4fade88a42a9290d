"""Transit benchmark on real agents, and the namespace lab it shares with ``tests/test_transit_netns.py``.

The lab is :class:`labs.kit.meshlab.MeshLab` (three machines, real agents, WireGuard on); faults are
its iptables drops on the UDP between A's and B's underlay addresses.

**Measurements** (``python -m labs.bench_transit``):

1. *Switch* (``--rounds`` times, at random phases against the probes): a UDP echo stream from A to
   B's mesh address every 50 ms; the time from the drop to the first reply that went through the
   relay. Relayed packets are told apart by their TTL (the relay decrements it once), read on both
   ends with ``IP_RECVTTL``.
2. *Fail-back*: from removing the drop to the first reply that went direct both ways, with every later
   reply direct too.
3. *Stability under loss*: 20 % random loss each way on the direct path for ``--loss-duration`` seconds
   (default 300); how many times A's and B's route to each other changed (from their logs), and the
   share of echoes that went through a relay.

The agents run with the cores' default thresholds (``transit.pathmon``, ``transit.relay``): the figures
are what a deployment gets. Results are printed and written as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from labs.kit.meshlab import MeshLab, read_lines
from labs.kit.wait import eventually_blocking

# A UDP echo that reports the TTL each datagram arrived with, so a relayed packet (TTL 63) is told apart
# from a direct one (TTL 64) on both legs of the round trip.
UDP_ECHO = r"""
import socket, struct, sys
IP_TTL, IP_RECVTTL = 2, 12  # Linux; Python 3.11's socket module lacks IP_RECVTTL
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, anc, _, addr = s.recvmsg(64, 64)
    ttl = next((struct.unpack("i", d[:4])[0] for lvl, t, d in anc if t == IP_TTL), 0)
    s.sendto(data[:12] + bytes([ttl]), addr)
"""

UDP_PROBER = r"""
import json, select, socket, struct, sys, time
IP_TTL, IP_RECVTTL = 2, 12  # Linux; Python 3.11's socket module lacks IP_RECVTTL
host, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
s.setblocking(False)
seq, due = 0, time.time()
while True:
    now = time.time()
    if now >= due:
        try:
            s.sendto(struct.pack("!Id", seq, now), (host, port))
        except OSError:
            pass
        seq, due = seq + 1, due + interval
    if select.select([s], [], [], max(0.0, due - time.time()))[0]:
        data, anc, _, _ = s.recvmsg(64, 64)
        if len(data) != 13:
            continue
        n, sent = struct.unpack("!Id", data[:12])
        back = next((struct.unpack("i", d[:4])[0] for lvl, t, d in anc if t == IP_TTL), 0)
        print(json.dumps({"seq": n, "sent": sent, "recv": time.time(), "there": data[12], "back": back}),
              flush=True)
"""


def route_changes(log: Path, peer: str, start: float, end: float) -> list[dict[str, Any]]:
    """The agent's "peer X: path" log records for ``peer`` between two wall times."""
    out = []
    for e in read_lines(log):
        if e.get("transit") != "route" or e.get("peer") != peer:
            continue
        at = datetime.fromisoformat(str(e["time"]).replace("Z", "+00:00")).timestamp()
        if start <= at <= end:
            out.append({"at": at, "path": e.get("path"), "reason": e.get("reason")})
    return out


# --- the benchmark ----------------------------------------------------------------------------------


Replies = Callable[[float], list[dict[str, Any]]]


def _first_relayed(replies: Replies, after: float) -> dict[str, Any] | None:
    return next((r for r in replies(after) if 63 in (r["there"], r["back"])), None)


def _direct_again(replies: Replies, after: float) -> dict[str, Any] | None:
    """The first echo that went direct both ways and was followed only by direct ones, at least ten
    of them (half a second at 50 ms): the relay is no longer in use."""
    rs = replies(after)
    for i, r in enumerate(rs):
        direct = [(x["there"], x["back"]) == (64, 64) for x in rs[i:]]
        if all(direct):
            return r if len(direct) >= 10 else None
    return None


@contextlib.contextmanager
def _phase(name: str) -> Iterator[None]:
    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
    yield


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir) if args.workdir else Path(f"/tmp/wiremesh-bench-transit-{os.getpid()}")
    result: dict[str, Any] = {"loadavg_start": os.getloadavg(), "interval_s": args.interval}
    with MeshLab(workdir, keep=args.keep) as lab:
        with _phase("starting A, B, C"):
            t0 = time.time()
            lab.start_all()
            eventually_blocking(lab.converged, what="the mesh converges, all direct", timeout=90, poll=0.5)
            result["converge_s"] = round(time.time() - t0, 2)
        a, b = lab.machines["a"], lab.machines["b"]
        lab.spawn("b", UDP_ECHO, b.mesh, "9000", out=workdir / "echo.out")
        stream = workdir / "prober.out"
        lab.spawn("a", UDP_PROBER, b.mesh, "9000", str(args.interval), out=stream)

        def replies(after: float) -> list[dict[str, Any]]:
            return [r for r in read_lines(stream) if "sent" in r and r["sent"] >= after]

        eventually_blocking(lambda: len(replies(0)) >= 20, what="direct echoes", timeout=20, poll=0.25)

        switches: list[float] = []
        failbacks: list[float] = []
        for n in range(1, args.rounds + 1):
            time.sleep(random.uniform(1.0, 3.0))  # a different phase against the probes each round
            with _phase(f"round {n}/{args.rounds}: dropping all UDP between A and B underlay addresses"):
                t_drop = lab.drop_udp("a", "b")
                first = eventually_blocking(
                    partial(_first_relayed, replies, t_drop),
                    what="echoes through the relay",
                    timeout=60,
                    poll=0.05,
                )
                switches.append(round(first["recv"] - t_drop, 3))
                result["switch_paths"] = {"a->b": lab.path("a", "b"), "b->a": lab.path("b", "a")}
                print(f"  traffic through the relay {switches[-1]:.2f} s after the drop", flush=True)
            time.sleep(5)
            with _phase(f"round {n}/{args.rounds}: removing the drop"):
                t_back = lab.undrop_udp("a", "b")
                first = eventually_blocking(
                    partial(_direct_again, replies, t_back), what="echoes direct again", timeout=120, poll=0.2
                )
                failbacks.append(round(first["recv"] - t_back, 3))
                print(f"  direct again {failbacks[-1]:.2f} s after the path returned", flush=True)
        result["switch_s"] = switches
        result["failback_s"] = failbacks
        result["switch_s_max"], result["failback_s_max"] = max(switches), max(failbacks)
        result["switch_s_median"] = statistics.median(switches)
        result["failback_s_median"] = statistics.median(failbacks)
        if args.loss_duration > 0:
            with _phase(f"{args.loss:.0%} random loss each way on A-B for {args.loss_duration:g} s"):
                t_loss = lab.drop_udp("a", "b", probability=args.loss)
                time.sleep(args.loss_duration)
                t_end = lab.undrop_udp("a", "b", probability=args.loss)
                during = [r for r in replies(t_loss) if r["sent"] <= t_end]
                sent = max(1, int((t_end - t_loss) / args.interval))
                changes_a = route_changes(a.log, "b", t_loss, t_end)
                changes_b = route_changes(b.log, "a", t_loss, t_end)
                result["loss"] = {
                    "probability_each_way": args.loss,
                    "duration_s": round(t_end - t_loss, 1),
                    "switches_a_to_b": len(changes_a),
                    "switches_b_to_a": len(changes_b),
                    "changes": {"a": changes_a, "b": changes_b},
                    "echoes_sent": sent,
                    "echoes_answered": len(during),
                    "echoes_relayed": sum(1 for r in during if 63 in (r["there"], r["back"])),
                    "a_sees_b": lab.peers("a").get("b", {}),
                }
                print(
                    f"  route changes: A->B {len(changes_a)}, B->A {len(changes_b)}; "
                    f"{len(during)}/{sent} echoes answered",
                    flush=True,
                )
    result["loadavg_end"] = os.getloadavg()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--interval", type=float, default=0.05, help="echo interval, seconds (default 0.05)")
    parser.add_argument("--rounds", type=int, default=3, help="drop/restore cycles (default 3)")
    parser.add_argument("--loss", type=float, default=0.2, help="random loss each way (default 0.2)")
    parser.add_argument(
        "--loss-duration",
        type=float,
        default=300.0,
        help="seconds under random loss; 0 skips it (default 300)",
    )
    parser.add_argument(
        "--json", default="labs/results/bench_transit.json", help="where to write the results"
    )
    parser.add_argument("--workdir", help="agent configs, logs and state (default: a new /tmp directory)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (agent logs) afterwards")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_transit needs root (network namespaces, wireguard-go)", file=sys.stderr)
        return 2
    result = run_benchmark(args)
    print(json.dumps({k: v for k, v in result.items() if k != "loss"}, indent=2))
    if "loss" in result:
        print(
            json.dumps(
                {k: v for k, v in result["loss"].items() if k not in ("changes", "a_sees_b")}, indent=2
            )
        )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
