"""Child processes we start and end ourselves: ExaBGP, wireguard-go, exec health checks, lab agents.

A child starts in its own session, so its process group holds it and whatever it forks, and nothing
else. Stopping is by the pid we started: SIGTERM to the group, SIGKILL to the group after a grace
period, and the leader reaped with Trio. Signalling the group after the leader was reaped is still
safe: its pid stays reserved as the group's id while any member lives, and once none does the signal
finds nothing (ESRCH, which counts as done).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

import trio


def signal_pid(pid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to one process; gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the process group a child of ours leads; gone already is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def kill_group(pgid: int) -> None:
    """SIGKILL the process group a child of ours leads; gone already is fine."""
    signal_group(pgid, signal.SIGKILL)


async def start(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    stdout: int = subprocess.DEVNULL,
    stderr: int = subprocess.DEVNULL,
) -> trio.Process:
    """Start ``argv`` in a new session (its own process group) with no stdin."""
    return await trio.lowlevel.open_process(
        list(argv),
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
    )


async def terminate(proc: trio.Process, grace: float) -> bool:
    """SIGTERM the group and wait up to ``grace`` seconds for the leader; True once it has exited.
    Only while the leader is unreaped is a signal sent, so the pid cannot have been reused."""
    if proc.poll() is None and grace > 0:
        signal_group(proc.pid, signal.SIGTERM)
        with trio.move_on_after(grace):
            await proc.wait()
    return proc.poll() is not None


async def kill(proc: trio.Process) -> None:
    """SIGKILL the group (the leader if it is still there, and what it left behind) and reap the
    leader."""
    kill_group(proc.pid)
    await proc.wait()


async def stop(proc: trio.Process, grace: float) -> None:
    """End the child and its group: :func:`terminate`, then :func:`kill`; ``grace <= 0`` kills at once.
    Shielded, so it completes under cancellation (a shutdown must not leave the child behind)."""
    with trio.CancelScope(shield=True):
        await terminate(proc, grace)
        await kill(proc)


__all__ = ["kill", "kill_group", "signal_group", "signal_pid", "start", "stop", "terminate"]
