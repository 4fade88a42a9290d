"""The transit namespace lab: three machines on one bridge, each a real agent with WireGuard on.

**Topology** (:class:`MeshLab`): a Linux bridge in a namespace of its own, and one namespace per machine
(A, B, C) joined to it by a veth. Underlay 198.18.0.0/24 (the benchmarking range), mesh addresses
100.64.0.0/16, no default route anywhere: nothing leaves the lab. Every machine runs a real agent
(``ip netns exec NS python -m agent agent --config ...``) with WireGuard on (wireguard-go). Names carry
the pid and a random suffix, so labs can run side by side; everything is removed on exit, processes by
pid, also when the run fails.

**Faults** are iptables rules in A's namespace on the UDP between A's and B's underlay addresses: a drop
of everything, or ``-m statistic --mode random --probability P`` (this kernel has no netem).

Used by ``labs.bench_transit`` and the transit namespace tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import tomli_w

from common.process import signal_pid
from gossip import generate_key
from labs.kit.netns import in_netns
from labs.kit.proc import children

UNDERLAY = "198.18.0.{}"
MESH = "100.64.0.{}"
GOSSIP_PORT = 7946
API = "http://127.0.0.1:7947"
RULE_TAG = "wiremesh-lab"
RUN_DIR = Path("/var/run/wireguard")

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
        wg: dict[str, Any] = {"enabled": True, "interface": m.ifname, "mesh_address": m.mesh}
        for table, values in (("path", self.path_cfg), ("relay", self.relay_cfg)):
            if values:
                wg[table] = values
        config: dict[str, Any] = {**top, "wireguard": wg}
        if self.gossip:
            config["gossip"] = self.gossip
        m.config.write_text(tomli_w.dumps(config))

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


def read_lines(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with contextlib.suppress(FileNotFoundError):
        for line in path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if isinstance(item, dict):
                    out.append(item)
    return out
