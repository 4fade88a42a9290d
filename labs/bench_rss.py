"""Where an idle agent's memory goes: RSS after importing each layer in a fresh interpreter, and the RSS
of one idle agent (alone, insecure gossip on loopback) after it has settled.

    python -m labs.bench_rss [--settle 8]

Run it with the interpreter of the install you want to measure: the development venv carries the test
extras (which make httpx import rich and click); a venv made with ``pip install .`` has only what the
agent needs. For the whole machine (agent, ExaBGP and its API bridge, with start-up time and idle
CPU) see :mod:`labs.bench_startup`.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time

MODULES = (
    "trio",
    "pydantic",
    "cryptography.hazmat.primitives.ciphers.aead",
    "fastapi",
    "hypercorn.trio",
    "jinja2",
    "prometheus_client",
    "httpx",
    "pyroute2",  # only with WireGuard on (transit): the agent's own netlink codecs cover the FIB and lo
    "agent.cluster.objects",
    "agent.http.app",
    "agent.runner",
)
PROBE = "import importlib, sys; importlib.import_module(sys.argv[1]); print(open('/proc/self/status').read())"


def rss_kib(status: str) -> int:
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def idle_agent_rss(settle: float) -> int:
    """Start one agent, wait ``settle`` seconds, read its RSS, stop it (by its pid)."""
    with tempfile.TemporaryDirectory(prefix="wiremesh-rss-") as state:
        gossip, api = free_port(), free_port()
        argv = [sys.executable, "-m", "agent", "agent", "--name", "rss", "--insecure", "--state-dir", state]
        argv += ["--bind", f"127.0.0.1:{gossip}", "--http", f"127.0.0.1:{api}"]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(settle)
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited with status {proc.returncode}")
            with open(f"/proc/{proc.pid}/status") as f:
                return rss_kib(f.read())
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--settle", type=float, default=8.0, help="seconds before the idle agent is read")
    args = parser.parse_args(argv)
    bare = rss_kib(
        subprocess.run([sys.executable, "-c", PROBE, "sys"], capture_output=True, text=True).stdout
    )
    print(f"{'python alone':28} {bare / 1024:6.1f} MB")
    for module in MODULES:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, module], capture_output=True, text=True, check=True
        )
        print(f"{'import ' + module:28} {rss_kib(out.stdout) / 1024:6.1f} MB")
    print(f"{'idle agent, alone':28} {idle_agent_rss(args.settle) / 1024:6.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
