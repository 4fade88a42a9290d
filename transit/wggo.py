"""wireguard-go as a supervised child process: the userspace backend when the kernel has no module.

``wireguard-go -f IFNAME`` (foreground, so it stays our child) creates the TUN device and serves the
UAPI socket ``/var/run/wireguard/IFNAME.sock``; on Linux it refuses to run unless
``WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1`` is set. It runs in its own session (process group),
so stopping it kills the group, by pid, and nothing else (:mod:`common.process`).
:func:`run_wireguard_go` restarts it with exponential backoff (:class:`common.backoff.RestartBackoff`)
if it dies; the TUN device and the peers go with the process, so after a restart
the transit driver re-runs its reconcile (the device state is desired-state driven; nothing is lost).

An agent killed with SIGKILL cannot stop its child, so a wireguard-go can outlive it, still serving the
interface. :func:`stop_leftover` finds such a process by the pid on the other end of its UAPI socket
(``SO_PEERCRED``) and stops it before a new one is started; otherwise the new one would fail ("socket in
use") while the old socket answered the readiness check.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

import trio

from common import process
from common.backoff import RestartBackoff
from transit.config import check_ifname
from transit.uapi import RUN_DIR, socket_path

log = logging.getLogger("wiremesh.transit.wggo")


@dataclass(frozen=True)
class WireguardGoConfig:
    ifname: str
    binary: str = "wireguard-go"
    # Run inside a namespace, e.g. ("ip", "netns", "exec", "ns1"): ``ip netns exec`` execs in place,
    # so the pid we hold is wireguard-go's own.
    prefix: tuple[str, ...] = ()
    run_dir: Path = RUN_DIR
    start_timeout: float = 10.0
    stop_timeout: float = 3.0
    backoff_min: float = 1.0
    backoff_max: float = 30.0
    # A run that lasted this long resets the backoff: it was a crash, not a crash loop.
    stable_after: float = 60.0
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ifname(self.ifname)

    @property
    def socket(self) -> Path:
        return socket_path(self.ifname, self.run_dir)


class WireguardGoError(Exception):
    """wireguard-go did not come up."""


def _socket_answers(path: Path) -> bool:
    """A stale socket file from a dead instance exists but refuses connections."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        return False
    finally:
        s.close()
    return True


async def _wait_ready(proc: trio.Process, cfg: WireguardGoConfig) -> None:
    with trio.move_on_after(cfg.start_timeout):
        while proc.poll() is None:
            if _socket_answers(cfg.socket):
                return
            await trio.sleep(0.05)
        raise WireguardGoError(f"wireguard-go for {cfg.ifname} exited with status {proc.returncode} at start")
    raise WireguardGoError(f"wireguard-go for {cfg.ifname}: no UAPI socket after {cfg.start_timeout} s")


def _socket_owner(path: Path) -> int | None:
    """Blocking. The pid serving a Unix socket, or None if nothing answers there."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
        creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    finally:
        s.close()
    pid: int = struct.unpack("3i", creds)[0]
    return pid if pid > 0 else None


def _parent_runs_an_agent(pid: int) -> int | None:
    """The parent's pid if ``pid``'s parent is a running agent (``... agent ...`` on its command line),
    else None: an orphan's parent is init or a subreaper."""
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        argv = Path(f"/proc/{ppid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return ppid if b"agent" in argv[1:] and ppid != os.getpid() else None


def _who(pid: int) -> tuple[str, int | None]:
    """``pid``'s process name ("?" if unreadable) and its parent agent's pid, read from /proc."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        comm = "?"
    return comm, _parent_runs_an_agent(pid)


async def stop_leftover(cfg: WireguardGoConfig) -> int | None:
    """Stop a wireguard-go left serving this interface by an earlier run (see the module docstring);
    returns its pid, or None if there was none. A socket served by anything else, or by the wireguard-go
    of another running agent (interface names are global: sockets share one directory), is refused."""
    pid = await trio.to_thread.run_sync(_socket_owner, cfg.socket)
    if pid is None:
        return None
    comm, owner = await trio.to_thread.run_sync(_who, pid)
    if comm not in ("wireguard-go", Path(cfg.binary).name[:15]):
        raise WireguardGoError(
            f"{cfg.socket} is served by pid {pid} ({comm}), not by a wireguard-go: is another program "
            f"using interface {cfg.ifname}?"
        )
    if owner is not None:
        raise WireguardGoError(
            f"interface {cfg.ifname} is in use by wireguard-go pid {pid} of another running agent (pid "
            f"{owner}); every machine (and namespace) on one host needs its own interface name"
        )
    log.warning(
        "stopping a wireguard-go left over from an earlier run", extra={"ifname": cfg.ifname, "pid": pid}
    )
    # Not our child (no trio.Process to reap), so by the pid its socket names, checked just above.
    process.signal_pid(pid, signal.SIGTERM)
    # Wait for the process itself, not only its socket: wireguard-go removes the socket before it exits
    # and lets go of its UDP port, so a new one started in between fails with EADDRINUSE.
    with trio.move_on_after(cfg.stop_timeout):
        while await trio.to_thread.run_sync(_running, pid, comm):
            await trio.sleep(0.05)
        return pid
    if await trio.to_thread.run_sync(_running, pid, comm):  # still that wireguard-go, not a reused pid
        process.signal_pid(pid, signal.SIGKILL)
    with trio.move_on_after(cfg.stop_timeout):
        while await trio.to_thread.run_sync(_running, pid, comm):
            await trio.sleep(0.05)
    return pid


def _running(pid: int, comm: str) -> bool:
    """Whether ``pid`` is still the ``comm`` process we signalled: it exists under that name and is not
    a zombie (an exited orphan waiting to be reaped holds no sockets)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != comm:
            return False
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def _run_once(
    cfg: WireguardGoConfig,
    on_started: trio.TaskStatus[int] | None,
) -> float:
    """One life of the process: start, wait until the socket answers, wait for exit. Returns how long
    it ran. Cancellation (shutdown) stops it."""
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1", **cfg.extra_env}
    cmd = [*cfg.prefix, cfg.binary, "-f", cfg.ifname]
    proc = await process.start(cmd, env=env)
    started = trio.current_time()
    try:
        await _wait_ready(proc, cfg)
        log.info("wireguard-go up", extra={"ifname": cfg.ifname, "pid": proc.pid})
        if on_started is not None:
            on_started.started(proc.pid)
        await proc.wait()
        log.warning(
            "wireguard-go exited", extra={"ifname": cfg.ifname, "pid": proc.pid, "status": proc.returncode}
        )
    finally:
        await process.stop(proc, cfg.stop_timeout)  # and whatever it left in its group
    return trio.current_time() - started


async def run_wireguard_go(
    cfg: WireguardGoConfig,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep wireguard-go running until cancelled. ``task_status.started`` gets the first pid once the
    UAPI socket answers; a first start that fails raises (a broken install should stop the agent's
    startup with a clear error), later failures are retried with backoff."""
    first: trio.TaskStatus[int] | None = task_status
    backoff = RestartBackoff(cfg.backoff_min, cfg.backoff_max, stable_after=cfg.stable_after)
    while True:
        try:
            ran = await _run_once(cfg, first)
        except WireguardGoError:
            if first is not None:
                raise
            log.exception("wireguard-go restart failed", extra={"ifname": cfg.ifname})
            ran = 0.0
        first = None
        await trio.sleep(backoff.delay_after(ran))


__all__ = [
    "WireguardGoConfig",
    "WireguardGoError",
    "check_ifname",
    "run_wireguard_go",
    "stop_leftover",
]
