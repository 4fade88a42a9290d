"""Real agent processes on loopback: start them, fault them, read what each one saw.

Every agent is its own process (``python -m agent agent --config FILE``) with JSON logs in a work
directory; membership events are read back from those logs, so a timeline says exactly which agent
saw what, when. Processes are ended by the pid we started, with their process group, also when the
caller fails: use :class:`LocalCluster` as a context manager.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import tomli_w

from common.process import signal_group
from gossip import generate_key
from labs.kit.wait import eventually_blocking

LOOPBACK = "127.0.0.1"
API_ERRORS = (httpx.HTTPError, OSError)  # an agent not answering yet: "not yet" to a wait, not a failure


def free_port() -> int:
    """A port free for both UDP and TCP right now (the kernel picks it; we release it at once)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((LOOPBACK, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((LOOPBACK, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP on loopback")


@dataclass(frozen=True, slots=True)
class Seen:
    """One membership event in one agent's log."""

    at: float  # wall clock, seconds
    observer: str
    event: str
    member: str
    incarnation: int


@dataclass
class Agent:
    name: str
    gossip_port: int
    http_port: int
    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    seen: list[Seen] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.http_port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class LocalCluster:
    """N agents on 127.0.0.1 starting with one shared key; the first is everyone's seed.

    Each agent has its own keyring file (as separate machines would), made on its first start and
    kept across restarts, since ``wiremesh keys`` rewrites it."""

    def __init__(
        self,
        n: int,
        workdir: Path,
        *,
        cluster: str = "lab",
        gossip: Mapping[str, Any] | None = None,
        python: str = sys.executable,
        prefix: str = "node",
        seed_port: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        """``seed_port``: join an agent outside this cluster instead of our own first agent; ``config``:
        extra top-level keys for every agent's config file."""
        self.workdir = workdir
        self.cluster = cluster
        self.python = python
        self.gossip = dict(gossip or {})
        self.config = dict(config or {})
        workdir.mkdir(parents=True, exist_ok=True)
        self.key = generate_key()
        self.agents: dict[str, Agent] = {}
        for i in range(n):
            name = f"{prefix}{i + 1}"
            self.agents[name] = Agent(
                name, free_port(), free_port(), workdir / f"{name}.toml", workdir / f"{name}.log"
            )
        self.seed = next(iter(self.agents.values()))
        self.seed_port = seed_port

    # --- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_all()

    def state_dir(self, name: str) -> Path:
        """The agent's state directory, which is also its working directory."""
        return self.workdir / f"{name}.state"

    def keyring_file(self, name: str) -> Path:
        return self.workdir / f"{name}.keyring"

    def _write_config(self, agent: Agent) -> None:
        state_dir = self.state_dir(agent.name)
        state_dir.mkdir(exist_ok=True)
        keyring = self.keyring_file(agent.name)
        if not keyring.exists():
            keyring.touch(mode=0o600)
            keyring.write_text(self.key + "\n")
        top: dict[str, Any] = {
            "name": agent.name,
            "bind": f"{LOOPBACK}:{agent.gossip_port}",
            "join": self._seeds_for(agent),
            "join_retry_interval": 0.5,
            "join_attempts": 20,
            "keyring_file": str(self.keyring_file(agent.name)),
            "cluster": self.cluster,
            "http_listen": f"{LOOPBACK}:{agent.http_port}",
            "state_dir": str(state_dir),
            "log_format": "json",
            **self.config,
        }
        if self.gossip:
            top["gossip"] = self.gossip
        agent.config.write_text(tomli_w.dumps(top))

    def _seeds_for(self, agent: Agent) -> list[str]:
        if self.seed_port is not None:
            return [f"{LOOPBACK}:{self.seed_port}"]
        return [] if agent is self.seed else [f"{LOOPBACK}:{self.seed.gossip_port}"]

    def start(self, name: str) -> Agent:
        agent = self.agents[name]
        if agent.running:
            raise RuntimeError(f"{name} is already running")
        self._write_config(agent)
        log = agent.log.open("ab")
        try:
            agent.process = subprocess.Popen(
                [self.python, "-m", "agent", "agent", "--config", str(agent.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.state_dir(name),
                start_new_session=True,  # its own process group, so we can end exactly what we started
            )
        finally:
            log.close()
        return agent

    def start_all(self) -> None:
        for name in self.agents:
            self.start(name)

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> float:
        """Send ``sig`` to the agent's process group; returns the wall time it was sent."""
        agent = self.agents[name]
        if agent.process is None:
            raise RuntimeError(f"{name} was never started")
        at = time.time()
        signal_group(agent.process.pid, sig)
        return at

    def wait_exit(self, name: str, timeout: float = 10.0) -> int | None:
        process = self.agents[name].process
        if process is None:
            return None
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        """SIGTERM every agent we started, then SIGKILL whatever is still there."""
        for agent in self.agents.values():
            if agent.running and agent.process is not None:
                signal_group(agent.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10.0
        for agent in self.agents.values():
            if agent.process is None:
                continue
            try:
                agent.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                signal_group(agent.process.pid, signal.SIGKILL)
                agent.process.wait(timeout=5)

    # --- observing -------------------------------------------------------------------------------

    def api_headers(self, name: str) -> dict[str, str]:
        """The bearer token the agent made in its state dir on its first start."""
        token = (self.state_dir(name) / "api-token").read_text().strip()
        return {"authorization": f"Bearer {token}"}

    def request(self, name: str, method: str, path: str, body: Any = None) -> Any:
        """One authenticated API call to agent ``name``; raises on a non-2xx answer."""
        response = httpx.request(
            method,
            self.agents[name].api + path,
            headers=self.api_headers(name),
            json=body,
            timeout=5.0,
        )
        response.raise_for_status()
        return response.json() if response.content else None

    def members(self, name: str) -> list[dict[str, Any]]:
        response = httpx.get(
            self.agents[name].api + "/v1/members", headers=self.api_headers(name), timeout=2.0
        )
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()
        return result

    def states(self, name: str) -> dict[str, str]:
        return {m["name"]: m["state"] for m in self.members(name)}

    def wait_converged(self, names: list[str] | None = None, timeout: float = 30.0) -> float:
        """Until every named running agent sees exactly the named agents alive."""
        names = names or [a.name for a in self.agents.values() if a.running]
        want = set(names)

        def converged() -> bool:
            for name in names:
                alive = {n for n, s in self.states(name).items() if s == "alive"}
                if alive != want:
                    return False
            return True

        eventually_blocking(
            converged, what=f"{len(names)} agents see each other alive", timeout=timeout, ignore=API_ERRORS
        )
        return time.time()

    def read_events(self) -> list[Seen]:
        """New membership events from every agent's log (incremental), all agents' together."""
        new: list[Seen] = []
        for agent in self.agents.values():
            if not agent.log.exists():
                continue
            with agent.log.open("rb") as f:
                f.seek(agent.log_offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]
            agent.log_offset += len(complete)
            for line in complete.splitlines():
                seen = _parse_event(agent.name, line)
                if seen is not None:
                    agent.seen.append(seen)
                    new.append(seen)
        return new

    def all_events(self) -> Iterator[Seen]:
        self.read_events()
        for agent in self.agents.values():
            yield from agent.seen

    def log_lines(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.agents[name].log.read_bytes().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"msg": line.decode(errors="replace")})
        return out


def _parse_event(observer: str, line: bytes) -> Seen | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or "event" not in entry or "member" not in entry:
        return None
    try:
        at = _parse_time(str(entry["time"]))
    except (KeyError, ValueError):
        return None
    return Seen(at, observer, str(entry["event"]), str(entry["member"]), int(entry.get("incarnation", 0)))


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used so far, resident set size in bytes) of one process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return cpu, rss
