"""Network-namespace labs: real agents and BIRD 2 on one emulated LAN, and entering a namespace.

Every node is a network namespace with a veth into a Linux bridge that lives in a namespace of its
own, so nothing touches the machine's real network: addresses come from 198.18.0.0/24 (the
benchmarking range) and no namespace has a default route. Names carry the creator's pid and a random
token, so two labs never collide. Everything started here is tracked by pid and stopped (SIGTERM,
then SIGKILL) on exit, together with anything else found in our namespaces, also when the caller
fails: use :class:`NetnsLab` as a context manager.

The agent's HTTP API listens on 127.0.0.1 inside its namespace; :meth:`NetnsLab.request` reaches it
with a socket created in that namespace (``setns`` in a short-lived thread), so the caller needs no
route into the lab.

Needs root, ``iproute2`` and (for BIRD) Debian's ``bird2``.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import tomli_w

from labs.kit.bird import Bird
from labs.kit.proc import Proc, sh, terminate
from labs.kit.wait import eventually_blocking

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
LAN_PREFIX = 24


def exabgp_pid(ns: str) -> int | None:
    """The pid of the ExaBGP server running in namespace ``ns``, if one is."""
    for pid in sh("ip", "netns", "pids", ns, check=False).split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"/exabgp") for part in cmdline) and b"server" in cmdline:
            return int(pid)
    return None


def kernel_routes(ns: str, proto: int = 200) -> dict[str, list[str]]:
    """The routes of kernel protocol ``proto`` (the agent's, 200 by default) in namespace ``ns``:
    prefix -> sorted gateways."""
    out: dict[str, list[str]] = {}
    for route in json.loads(sh("ip", "-n", ns, "-j", "route", "show", "proto", str(proto)) or "[]"):
        hops = [route["gateway"]] if "gateway" in route else [h["gateway"] for h in route.get("nexthops", [])]
        dst = route["dst"]
        if "/" not in dst:  # iproute2 prints a host route without its length
            dst += "/128" if ":" in dst else "/32"
        out[dst] = sorted(hops)
    return out


def in_netns(netns: str, fn: Callable[[], T], timeout: float = 30.0) -> T:
    """Run ``fn`` in a thread that has entered ``netns`` (setns is per thread): sockets it opens live
    there, while the rest of this process stays where it is. The thread ends with ``fn``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer from inside {netns} after {timeout} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def socket_in_netns(ns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
    """A socket that lives in network namespace ``ns`` (made by a thread that entered it)."""
    return in_netns(ns, lambda: socket.socket(family, kind))


class _NetnsConnection(http.client.HTTPConnection):
    def __init__(self, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.ns = ns

    def connect(self) -> None:
        sock = socket_in_netns(self.ns)
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock


@dataclass
class Agent:
    name: str
    ns: str
    address: str
    http_port: int
    state_dir: Path
    config: Path
    proc: Proc | None = None
    token: str | None = None


@dataclass
class NetnsLab:
    workdir: Path
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    procs: list[Proc] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    nodes: dict[str, str] = field(default_factory=dict)  # node name -> namespace
    bridge: bool = True  # False: no LAN of our own; the caller brings namespaces (``adopt``), e.g. mininet's
    _links: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.bridge:
            return
        self.switch = self._netns("sw")
        sh("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.switch, "link", "set", "br0", "up")

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _netns(self, role: str) -> str:
        name = f"wmb-{os.getpid()}-{self.token}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def namespace(self, name: str) -> str:
        """A bare namespace (loopback up, no LAN) known as node ``name``; connect it with :meth:`veth`."""
        ns = self._netns(name)
        self.nodes[name] = ns
        return ns

    def veth(self, a: str, dev_a: str, b: str, dev_b: str) -> None:
        """A veth pair from node ``a`` (interface ``dev_a``) to node ``b`` (``dev_b``), both down."""
        peer = ["peer", "name", dev_b, "netns", self.nodes[b]]
        sh("ip", "link", "add", dev_a, "netns", self.nodes[a], "type", "veth", *peer)

    def adopt(self, name: str, pid: int) -> str:
        """Give the network namespace of process ``pid`` (a mininet host's shell) a name, so that every
        helper here (``ip netns exec``, :meth:`request`) works in it; :meth:`close` removes the name,
        and kills whatever still runs in the namespace."""
        ns = f"wmb-{os.getpid()}-{self.token}-{name}"
        sh("ip", "netns", "attach", ns, str(pid))
        self.namespaces.append(ns)
        self.nodes[name] = ns
        return ns

    def add_node(self, name: str, addresses: Sequence[str]) -> str:
        """A namespace on the LAN with ``addresses`` (IPv4, /24) on its interface ``eth0``."""
        ns = self._netns(name)
        self._links += 1
        outside = f"v{self.token}{self._links}"
        sh(
            "ip",
            "link",
            "add",
            "eth0",
            "netns",
            ns,
            "type",
            "veth",
            "peer",
            "name",
            outside,
            "netns",
            self.switch,
        )
        sh("ip", "-n", self.switch, "link", "set", outside, "master", "br0", "up")
        for address in addresses:
            sh("ip", "-n", ns, "addr", "add", f"{address}/{LAN_PREFIX}", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        self.nodes[name] = ns
        return ns

    def spawn(self, name: str, ns: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        proc = Proc(name, ns, process, log)
        self.procs.append(proc)
        return proc

    def start_bird(self, node: str, config: str) -> Bird:
        conf = self.workdir / f"{node}-bird.conf"
        conf.write_text(config)
        sock = self.workdir / f"{node}-bird.ctl"
        proc = self.spawn(f"{node}-bird", self.nodes[node], ["bird", "-f", "-c", str(conf), "-s", str(sock)])
        return Bird(proc, sock).wait_ready()

    def agent(self, node: str, name: str, address: str, config: str, http_port: int = 7947) -> Agent:
        """Write an agent's config (``config`` is appended after the basics) without starting it."""
        state = self.workdir / f"{name}.state"
        path = self.workdir / f"{name}.toml"
        basics = {
            "name": name,
            "bind": f"{address}:7946",
            "insecure": True,
            "http_listen": f"127.0.0.1:{http_port}",
            "state_dir": str(state),
            "log_format": "json",
            "log_level": "info",
        }
        path.write_text(tomli_w.dumps(basics) + config)
        return Agent(name, self.nodes[node], address, http_port, state, path)

    def start_agent(self, agent: Agent, timeout: float = 30.0) -> Agent:
        agent.proc = self.spawn(
            agent.name,
            agent.ns,
            [sys.executable, "-m", "agent", "agent", "--config", str(agent.config)],
        )
        token_file = agent.state_dir / "api-token"

        def up() -> bool:
            if not token_file.exists():
                return False
            agent.token = token_file.read_text().strip()
            try:
                return self.request(agent, "GET", "/healthz")[0] == 200
            except OSError:
                return False

        eventually_blocking(
            up,
            what=f"agent {agent.name} to serve its API",
            timeout=timeout,
            failing=lambda: None if agent.proc is not None and agent.proc.running else self.tail(agent),
        )
        return agent

    def tail(self, agent: Agent, lines: int = 60) -> str:
        if agent.proc is None or not agent.proc.log.exists():
            return ""
        return "\n".join(agent.proc.log.read_text(errors="replace").splitlines()[-lines:])

    def request(
        self, agent: Agent, method: str, path: str, body: Any = None, timeout: float = 10.0
    ) -> tuple[int, Any]:
        conn = _NetnsConnection(agent.ns, "127.0.0.1", agent.http_port, timeout)
        headers = {"accept": "application/json"}
        if agent.token:
            headers["authorization"] = f"Bearer {agent.token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["content-type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        try:
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            data = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(data) if data else None
        except ValueError:
            return response.status, data.decode(errors="replace")

    def call(self, agent: Agent, method: str, path: str, body: Any = None) -> Any:
        """:meth:`request` that must succeed."""
        status, data = self.request(agent, method, path, body)
        if not 200 <= status < 300:
            raise AssertionError(f"{method} {path}: HTTP {status}: {data}")
        return data

    def signal(self, proc: Proc, sig: signal.Signals) -> None:
        if proc.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, sig)

    def stop(self, proc: Proc, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit status."""
        self.signal(proc, signal.SIGTERM)
        try:
            return proc.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(proc, signal.SIGKILL)
            return proc.process.wait(timeout=10)

    def close(self) -> None:
        for proc in reversed(self.procs):
            if proc.running:
                self.stop(proc, timeout=10)
        for ns in self.namespaces:  # anything still in a namespace we made is ours
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                terminate(int(pid))
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.namespaces.clear()


def require_root_and_tools(*tools: str) -> str | None:
    """Why the mininet labs cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root: network namespaces, mininet"
    for tool in ("mnexec", "bird", "birdc", "brctl", "iptables", "curl", *tools):
        if shutil.which(tool) is None:
            return f"{tool} is not installed: run `make deps`"
    try:
        import mininet.net  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return "the mininet Python package is missing: pip install -e '.[test]'"
    return None
