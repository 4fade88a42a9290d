"""Processes the labs start: a shell-out helper, a started process with its log, and killing by pid.

Everything a lab starts is tracked by the pid it got, so cleanup ends exactly that and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


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
    """Pids whose parent is ``pid`` (an agent's ExaBGP, BIRD or wireguard-go): every thread's list in
    /proc/PID/task/*/children, which is one read each instead of a scan of every process."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    return out


def cmdline(pid: int) -> list[str]:
    """``pid``'s argv; empty if it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` (not its children), or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def rss_mib(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, or None if it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * PAGE / 2**20, 1)


def smaps_mib(pid: int) -> dict[str, float]:
    """``smaps_rollup``'s sizes in MiB (``Rss``, ``Pss``, ...) plus ``Uss``, the pages only ``pid``
    holds (Private_Clean + Private_Dirty): what two processes running one interpreter do not share."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "kB":
            fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    fields["Uss"] = fields.get("Private_Clean", 0.0) + fields.get("Private_Dirty", 0.0)
    return fields


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
