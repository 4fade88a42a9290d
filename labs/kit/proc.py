"""Processes the labs start: a shell-out helper, a started process with its log, and killing by pid.

Everything a lab starts is tracked by the pid it got, so cleanup ends exactly that and nothing else.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def sh(*args: str, check: bool = True, timeout: float = 60) -> str:
    """Run ``args``; its stdout. ``check``: a non-zero exit raises ``CalledProcessError``."""
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout).stdout


def terminate(pid: int, grace: float = 0.2) -> None:
    """SIGTERM, ``grace`` seconds, then SIGKILL: for what we did not start ourselves but own (anything
    left in a namespace we made)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(grace)


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
class Proc:
    """A process started in namespace ``ns``, its stdout and stderr in ``log``."""

    name: str
    ns: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None
