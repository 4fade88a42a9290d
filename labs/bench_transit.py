"""Transit benchmark on real agents, and the namespace lab it shares with ``tests/test_transit_netns.py``.

**Topology** (:class:`MeshLab`): a Linux bridge in a namespace of its own, and one namespace per machine
(A, B, C) joined to it by a veth. Underlay 198.18.0.0/24 (the benchmarking range), mesh addresses
100.64.0.0/16, no default route anywhere: nothing leaves the lab. Every machine runs a real agent
(``ip netns exec NS python -m agent agent --config ...``) with WireGuard on (wireguard-go). Names carry
the pid and a random suffix, so labs can run side by side; everything is removed on exit, processes by
pid, also when the run fails.

**Faults** are iptables rules in A's namespace on the UDP between A's and B's underlay addresses: a drop
of everything, or ``-m statistic --mode random --probability P`` (this kernel has no netem).

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
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from common.process import signal_pid
from gossip import generate_key
from labs.bgplab import in_netns, toml_value

T = TypeVar("T")

UNDERLAY = "198.18.0.{}"
MESH = "100.64.0.{}"
GOSSIP_PORT = 7946
API = "http://127.0.0.1:7947"
RULE_TAG = "wiremesh-lab"
RUN_DIR = Path("/var/run/wireguard")

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

TCP_ECHO = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
while True:
    data = conn.recv(4096)
    if not data:
        break
    conn.sendall(data)
"""

TCP_STREAM = r"""
import json, select, socket, sys, time
host, port, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=10)
s.setblocking(False)
print(json.dumps({"connected": time.time()}), flush=True)
seq, due, buf = 0, time.time(), b""
while True:
    if time.time() >= due:
        try:
            s.send(b"%d\n" % seq)
            seq += 1
        except BlockingIOError:
            pass
        due += interval
    if select.select([s], [], [], max(0.0, due - time.time()))[0]:
        data = s.recv(4096)
        if not data:
            break
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            print(json.dumps({"seq": int(line), "t": time.time()}), flush=True)
"""


def children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (an agent's wireguard-go), read from /proc."""
    out: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry.name))
    return out


@dataclass
class Machine:
    name: str
    index: int
    netns: str
    ifname: str
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    wg_pids: list[int] = field(default_factory=list)
    mesh_override: str | None = None

    @property
    def underlay(self) -> str:
        return UNDERLAY.format(self.index)

    @property
    def mesh(self) -> str:
        return self.mesh_override or MESH.format(self.index)

    @property
    def state_dir(self) -> Path:
        return self.workdir / f"{self.name}.state"

    @property
    def config(self) -> Path:
        return self.workdir / f"{self.name}.toml"

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class MeshLab:
    """The topology in the module docstring. Use as a context manager: cleanup runs whatever happens."""

    def __init__(
        self,
        workdir: Path,
        names: Sequence[str] = ("a", "b", "c"),
        *,
        path: Mapping[str, Any] | None = None,
        relay: Mapping[str, Any] | None = None,
        gossip: Mapping[str, Any] | None = None,
        mesh: Mapping[str, str] | None = None,
        python: str = sys.executable,
        keep: bool = False,
    ) -> None:
        """``mesh`` overrides machines' mesh addresses (to make two claim one); ``keep`` leaves the work
        directory (configs, logs, state with private keys) in place after cleanup."""
        self.workdir = workdir
        self.keep = keep
        self.python = python
        self.path_cfg = dict(path or {})
        self.relay_cfg = dict(relay or {})
        self.gossip = dict(gossip or {})
        self.tag = f"{os.getpid() % 100000:05d}{secrets.token_hex(2)}"
        self.bridge_ns = f"wmlab{self.tag}br"
        self.machines = {
            n: Machine(n, i + 1, f"wmlab{self.tag}{n}", f"wm{self.tag}{n}"[:15], workdir)
            for i, n in enumerate(names)
        }
        for n, addr in (mesh or {}).items():
            self.machines[n].mesh_override = addr
        self.helpers: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []
        self.keyring = workdir / "keyring"

    # --- topology -------------------------------------------------------------------------------

    def __enter__(self) -> MeshLab:
        try:
            self.setup()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
        return done.stdout

    def ns(self, name: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> str:
        return self.run(
            ["ip", "netns", "exec", self.machines[name].netns, *argv], check=check, timeout=timeout
        )

    def _add_netns(self, name: str) -> None:
        self.run(["ip", "netns", "add", name])
        self._namespaces.append(name)
        self.run(["ip", "-n", name, "link", "set", "lo", "up"])

    def setup(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.keyring.write_text(generate_key() + "\n")
        self.keyring.chmod(0o600)
        self._add_netns(self.bridge_ns)
        self.run(["ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge"])
        self.run(["ip", "-n", self.bridge_ns, "link", "set", "br0", "up"])
        for m in self.machines.values():
            self._add_netns(m.netns)
            veth = f"v{m.name}"
            link = ["ip", "-n", self.bridge_ns, "link", "add", veth, "type", "veth"]
            self.run([*link, "peer", "name", "eth0", "netns", m.netns])
            self.run(["ip", "-n", self.bridge_ns, "link", "set", veth, "master", "br0", "up"])
            self.run(["ip", "-n", m.netns, "addr", "add", f"{m.underlay}/24", "dev", "eth0"])
            self.run(["ip", "-n", m.netns, "link", "set", "eth0", "up"])

    def cleanup(self) -> None:
        """Every process by pid, then the namespaces, then wireguard-go's socket files. Never raises."""
        for proc in self.helpers:
            signal_pid(proc.pid, signal.SIGKILL)
        for m in self.machines.values():
            if m.process is not None:
                m.wg_pids += children(m.process.pid)
                if m.process.poll() is None:
                    signal_pid(m.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for m in self.machines.values():
            if m.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.process.wait(timeout=max(0.1, deadline - time.monotonic()))
                m.wg_pids += children(m.process.pid)
                signal_pid(m.process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    m.process.wait(timeout=5)
            for pid in m.wg_pids:
                signal_pid(pid, signal.SIGKILL)
        for proc in self.helpers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._namespaces.clear()
        for m in self.machines.values():
            with contextlib.suppress(OSError):
                (RUN_DIR / f"{m.ifname}.sock").unlink()
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # --- agents ---------------------------------------------------------------------------------

    def _write_config(self, m: Machine) -> None:
        m.state_dir.mkdir(parents=True, exist_ok=True)
        others = [f"{o.underlay}:{GOSSIP_PORT}" for o in self.machines.values() if o is not m]
        top = {
            "name": m.name,
            "bind": f"{m.underlay}:{GOSSIP_PORT}",
            "join": others,
            "join_attempts": 40,
            "join_retry_interval": 0.5,
            "keyring_file": str(self.keyring),
            "cluster": "transit-lab",
            "http_listen": API.removeprefix("http://"),
            "state_dir": str(m.state_dir),
            "log_format": "json",
        }
        wg = {"enabled": True, "interface": m.ifname, "mesh_address": m.mesh}
        lines = [f"{k} = {toml_value(v)}" for k, v in top.items()]
        lines += ["", "[wireguard]", *(f"{k} = {toml_value(v)}" for k, v in wg.items())]
        for table, values in (("wireguard.path", self.path_cfg), ("wireguard.relay", self.relay_cfg)):
            if values:
                lines += ["", f"[{table}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
        if self.gossip:
            lines += ["", "[gossip]", *(f"{k} = {toml_value(v)}" for k, v in self.gossip.items())]
        m.config.write_text("\n".join(lines) + "\n")

    def start(self, name: str) -> Machine:
        m = self.machines[name]
        self._write_config(m)
        with m.log.open("ab") as log:
            m.process = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    m.netns,
                    self.python,
                    "-m",
                    "agent",
                    "agent",
                    "--config",
                    str(m.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=m.state_dir,
                start_new_session=True,
            )
        return m

    def start_all(self) -> None:
        for name in self.machines:
            self.start(name)

    def stop(self, name: str, timeout: float = 15.0) -> int:
        """A graceful stop (SIGTERM): the agent leaves, cleans up and exits; returns its exit status."""
        m = self.machines[name]
        if m.process is None:
            raise RuntimeError(f"{name} was never started")
        m.wg_pids += children(m.process.pid)
        signal_pid(m.process.pid, signal.SIGTERM)
        return m.process.wait(timeout=timeout)

    def kill(self, name: str) -> float:
        """The machine dies: SIGKILL its agent and the agent's wireguard-go, by pid. Returns the time."""
        m = self.machines[name]
        if m.process is None:
            raise RuntimeError(f"{name} was never started")
        m.wg_pids += children(m.process.pid)
        at = time.time()
        signal_pid(m.process.pid, signal.SIGKILL)
        for pid in m.wg_pids:
            signal_pid(pid, signal.SIGKILL)
        m.process.wait(timeout=10)
        return at

    def spawn(self, name: str, code: str, *args: str, out: Path) -> subprocess.Popen[bytes]:
        """A helper Python process inside machine ``name``, stdout to ``out``; killed by pid at cleanup."""
        with out.open("wb") as f:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.machines[name].netns, self.python, "-c", code, *args],
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.helpers.append(proc)
        return proc

    # --- the API --------------------------------------------------------------------------------

    def api(self, name: str, path: str) -> Any:
        m = self.machines[name]
        token = (m.state_dir / "api-token").read_text().strip()

        def get() -> Any:
            with httpx.Client(timeout=5.0) as client:
                response = client.get(API + path, headers={"authorization": f"Bearer {token}"})
                response.raise_for_status()
                return response.json()

        return in_netns(m.netns, get)

    def peers(self, name: str) -> dict[str, dict[str, Any]]:
        """``/v1/peers`` of machine ``name``, by peer name; empty while the agent is not answering."""
        try:
            view = self.api(name, "/v1/peers")
        except (OSError, httpx.HTTPError, TimeoutError):
            return {}
        return {p["name"]: p for p in view["peers"]}

    def path(self, name: str, peer: str) -> str | None:
        return self.peers(name).get(peer, {}).get("path")

    def converged(self) -> bool:
        """Every running machine sees every other running one as a direct peer whose path is up."""
        running = [n for n, m in self.machines.items() if m.running]
        for n in running:
            peers = self.peers(n)
            for o in running:
                if o != n and (peers.get(o, {}).get("path"), peers.get(o, {}).get("direct")) != (
                    "direct",
                    "up",
                ):
                    return False
        return True

    # --- faults and traffic ---------------------------------------------------------------------

    def _udp_rules(self, a: str, b: str, probability: float | None) -> list[list[str]]:
        ua, ub = self.machines[a].underlay, self.machines[b].underlay
        match = (
            []
            if probability is None
            else ["-m", "statistic", "--mode", "random", "--probability", str(probability)]
        )
        tail = [*match, "-m", "comment", "--comment", RULE_TAG, "-j", "DROP"]
        return [
            ["OUTPUT", "-p", "udp", "-s", ua, "-d", ub, *tail],
            ["INPUT", "-p", "udp", "-s", ub, "-d", ua, *tail],
        ]

    def drop_udp(self, a: str, b: str, probability: float | None = None) -> float:
        """Drop (all, or each packet with ``probability``) UDP between a and b, in a's namespace."""
        for rule in self._udp_rules(a, b, probability):
            self.ns(a, ["iptables", "-w", "5", "-I", *rule])
        return time.time()

    def undrop_udp(self, a: str, b: str, probability: float | None = None) -> float:
        for rule in self._udp_rules(a, b, probability):
            self.ns(a, ["iptables", "-w", "5", "-D", *rule])
        return time.time()

    def ping(self, src: str, dst: str, count: int = 3) -> list[int]:
        """TTLs of the echo replies from ``dst``'s mesh address (64 direct, 63 through a relay)."""
        out = self.ns(
            src,
            ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", self.machines[dst].mesh],
            check=False,
            timeout=count * 3 + 5,
        )
        return [int(w.split("=")[1]) for w in out.split() if w.startswith("ttl=")]

    def wait_until(self, what: str, fn: Callable[[], T | None], timeout: float, interval: float = 0.25) -> T:
        """Poll ``fn`` until it returns something truthy; a bounded wait that names what it waited for."""
        deadline = time.monotonic() + timeout
        while True:
            value = fn()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"not within {timeout:g} s: {what}")
            time.sleep(interval)


def read_lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict):
                    out.append(item)
    return out


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
            lab.wait_until("the mesh converges, all direct", lab.converged, timeout=90, interval=0.5)
            result["converge_s"] = round(time.time() - t0, 2)
        a, b = lab.machines["a"], lab.machines["b"]
        lab.spawn("b", UDP_ECHO, b.mesh, "9000", out=workdir / "echo.out")
        stream = workdir / "prober.out"
        lab.spawn("a", UDP_PROBER, b.mesh, "9000", str(args.interval), out=stream)

        def replies(after: float) -> list[dict[str, Any]]:
            return [r for r in read_lines(stream) if "sent" in r and r["sent"] >= after]

        lab.wait_until("direct echoes", lambda: len(replies(0)) >= 20, timeout=20)

        switches: list[float] = []
        failbacks: list[float] = []
        for n in range(1, args.rounds + 1):
            time.sleep(random.uniform(1.0, 3.0))  # a different phase against the probes each round
            with _phase(f"round {n}/{args.rounds}: dropping all UDP between A and B underlay addresses"):
                t_drop = lab.drop_udp("a", "b")
                first = lab.wait_until(
                    "echoes through the relay",
                    partial(_first_relayed, replies, t_drop),
                    timeout=60,
                    interval=0.05,
                )
                switches.append(round(first["recv"] - t_drop, 3))
                result["switch_paths"] = {"a->b": lab.path("a", "b"), "b->a": lab.path("b", "a")}
                print(f"  traffic through the relay {switches[-1]:.2f} s after the drop", flush=True)
            time.sleep(5)
            with _phase(f"round {n}/{args.rounds}: removing the drop"):
                t_back = lab.undrop_udp("a", "b")
                first = lab.wait_until(
                    "echoes direct again", partial(_direct_again, replies, t_back), timeout=120, interval=0.2
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
