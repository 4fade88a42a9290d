"""Runs ExaBGP as a supervised child and speaks its API over a Unix socket.

One life of ExaBGP: write the config into the state directory, start ``exabgp server`` in its own
process group, accept the bridge's connection (checked to come from a child of that ExaBGP), then read
events into :attr:`ExaBGPSupervisor.events` and send commands (:meth:`ExaBGPSupervisor.send`) until
ExaBGP exits or the bridge's connection drops. Either ends the life: the API stream is the only record
of what happened to the sessions, so after a gap in it the only safe view is a fresh start. ExaBGP is
then stopped (SIGTERM to its process group, SIGKILL after ``stop_timeout``: :mod:`common.process`), a
:class:`SpeakerDown` event says every session is gone, and a new life starts after an exponential
backoff (:class:`common.backoff.RestartBackoff`).

Every time the API comes up the owner's ``on_resync`` callback is run with a :class:`Resync` naming
the neighbors that have none of our routes (all of them after a start or restart); it re-announces
what it wants them to have (see :class:`agent.bgp.adjout.AdjRibOut`). It runs inside the life, so it
is cancelled if ExaBGP dies meanwhile, and it runs again for the next life.

Neighbor changes (:meth:`ExaBGPSupervisor.set_neighbors`) are batched: the first change opens a
``reload_window`` (1 s by default) and everything that arrives in it is written in one config and
applied with one ``reload``, so a join storm costs one reload, not one per member. Unchanged neighbors
keep their sessions through a reload; new or changed ones get a ``Resync``. ExaBGP 5.0.15 acks a
``reload`` before applying it and silently drops it while any peer has routes queued (one still
connecting, say), which left removed neighbors configured and retried forever; so each reload is
confirmed by reading back the configuration ExaBGP applied (each neighbor's description carries a
stamp of its settings, :class:`~agent.bgp.config.Stamps`) and the peers it holds, and sent again until
both match the plan; a life whose ExaBGP never applies it is ended (a fresh start reads the plan).

Commands go one at a time, each waiting for its ``done``/``error`` ack (``ack_timeout``): ExaBGP
answers route commands after queueing them but other commands at once, so acks only match commands
when a single one is in flight. The event channel is bounded: a consumer that stops reading stalls
ExaBGP (and, eventually, its keepalives) rather than growing memory without limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from agent.bgp.api import (
    Ack,
    ApiDecoder,
    Command,
    Event,
    Reload,
    ShowConfiguration,
    ShowNeighbors,
    Text,
    configured_descriptions,
    encode_command,
    summary_addresses,
)
from agent.bgp.config import ApiProcess, Neighbor, Stamps, render_config, stamps_shown
from agent.bgp.lifecycle import NeighborBatcher, Resync
from common import process
from common.backoff import RestartBackoff
from common.files import write_file_atomically

log = logging.getLogger("wiremesh.bgp")
exabgp_log = logging.getLogger("wiremesh.bgp.exabgp")

CONFIG_NAME = "exabgp.conf"
SOCKET_NAME = "api.sock"
MAX_UNIX_PATH = 107  # sun_path is 108 bytes with its NUL
OUTPUT_TAIL = 40  # ExaBGP log lines kept to explain an exit
EXIT_GRACE = 0.5  # seconds to wait for ExaBGP's exit status once its API connection dropped
ANCESTRY_DEPTH = 4  # how far up from the bridge to look for our ExaBGP (a wrapper may sit between)
# ExaBGP's reactor polls with a timeout of speed/100 s: at its default 1.0 that is 100 wakeups a second
# and ~3 % of a core with one idle peer. Sockets and the API pipe wake it at once whatever the speed, so
# only timers (keepalives, connect retries) get the coarser 100 ms; measured 2.8 % -> 0.25 %.
REACTOR_SPEED = "10.0"


def default_exabgp_argv() -> tuple[str, ...]:
    """The ``exabgp`` installed next to this Python (the venv's)."""
    return (str(Path(sys.executable).parent / "exabgp"),)


def default_bridge_argv() -> tuple[str, ...]:
    """The bridge run as a script in isolated mode without ``site``: it needs only the standard library,
    and skipping the package and site-packages saves ~2 MiB of RSS per machine (measured: 12.1 -> 10.3)."""
    return (sys.executable, "-I", "-S", str(Path(__file__).with_name("bridge.py")))


class SpeakerError(Exception):
    """A command could not be carried out."""


class NotConnected(SpeakerError):
    """ExaBGP is not running, or its API connection was lost before the command's ack."""


class CommandFailed(SpeakerError):
    """ExaBGP answered ``error`` (unknown neighbor, bad route, ...); its log says why."""


class CommandTimeout(SpeakerError):
    """No ack within ``ack_timeout``."""


@dataclass(frozen=True, slots=True)
class SpeakerUp:
    """ExaBGP is running and its API is connected."""

    pid: int
    restart: bool


@dataclass(frozen=True, slots=True)
class SpeakerDown:
    """ExaBGP is gone (exited, killed, or stopped by us): every session went with it, so every path
    learned from any peer is invalid."""

    reason: str


SupervisorEvent = Event | SpeakerUp | SpeakerDown
ResyncCallback = Callable[[Resync], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SupervisorOptions:
    state_dir: Path
    exabgp_argv: tuple[str, ...] = field(default_factory=default_exabgp_argv)  # a prefix may wrap it
    bridge_argv: tuple[str, ...] = field(default_factory=default_bridge_argv)  # the socket path is appended
    env: Mapping[str, str] = field(default_factory=dict)  # extra environment for ExaBGP
    ack_timeout: float = 10.0
    connect_timeout: float = 30.0  # from start to the bridge's connection
    reload_window: float = 1.0
    # A reload ExaBGP dropped is sent again after these waits (doubling); the total (~2.5 min) outlasts
    # a connect attempt and ExaBGP's 60 s wait for an OPEN, which is what keeps routes queued.
    reload_retry_initial: float = 0.5
    reload_retry_max: float = 10.0
    reload_attempts: int = 20
    stop_timeout: float = 5.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 60.0
    event_buffer: int = 10_000


@dataclass(slots=True)
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    ok: bool | None = None  # None: the connection went away first
    lines: list[str] = field(default_factory=list)  # text ExaBGP wrote before the ack


@dataclass(slots=True)
class _Connection:
    stream: trio.SocketStream
    inflight: _Waiter | None = None
    stale_acks: int = 0  # acks still due for commands whose caller was cancelled
    failed: str | None = None  # why we gave up on this connection

    def resolve(self, ok: bool | None) -> None:
        if self.inflight is not None and not self.inflight.done.is_set():
            self.inflight.ok = ok
            self.inflight.done.set()

    async def fail(self, reason: str) -> None:
        """Give up on the connection; the reader sees it closed and the life ends."""
        self.failed = reason
        await self.stream.aclose()


def _ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ..."; comm may contain spaces and parentheses, so split after the last ')'
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[1]) if len(fields) > 1 else None


def _descends_from(pid: int, ancestor: int) -> bool:
    current: int | None = pid
    for _ in range(ANCESTRY_DEPTH):
        current = _ppid(current) if current is not None else None
        if current is None or current <= 1:
            return False
        if current == ancestor:
            return True
    return False


def _peer_pid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", creds)
    return int(pid)


class ExaBGPSupervisor:
    """Keeps one ExaBGP running for the agent; see the module docstring. ``run`` is the task; the rest
    is called from other tasks of the same Trio run."""

    def __init__(
        self,
        options: SupervisorOptions,
        neighbors: Iterable[Neighbor] = (),
        *,
        on_resync: ResyncCallback | None = None,
    ) -> None:
        self.options = options
        self._on_resync = on_resync
        self._batcher = NeighborBatcher(neighbors, window=options.reload_window)
        self._stamps = Stamps()
        self._backoff = RestartBackoff(
            options.backoff_initial, options.backoff_max, stable_after=options.stable_after
        )
        self._event_tx, self.events = trio.open_memory_channel[SupervisorEvent](options.event_buffer)
        self._wake = trio.Event()
        self._send_lock = trio.Lock()
        self._conn: _Connection | None = None
        self._given_up: str | None = None  # why the last connection was given up on (see _life)
        self._tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
        self.pid: int | None = None
        self.starts = 0

    @property
    def config_path(self) -> Path:
        return self.options.state_dir / CONFIG_NAME

    @property
    def socket_path(self) -> Path:
        return self.options.state_dir / SOCKET_NAME

    @property
    def connected(self) -> bool:
        return self._conn is not None

    @property
    def neighbors(self) -> tuple[Neighbor, ...]:
        return self._batcher.desired

    def set_neighbors(self, neighbors: Iterable[Neighbor]) -> None:
        """The neighbor set to have; applied within ``reload_window`` (or at the next start)."""
        self._batcher.set_neighbors(neighbors, trio.current_time())
        self._wake.set()

    async def send(self, command: Command) -> tuple[str, ...]:
        """Send one command and wait for its ack; returns the text lines ExaBGP answered before it
        (``show`` output, "reload in progress"). Raises :class:`NotConnected`, :class:`CommandFailed`
        or :class:`CommandTimeout`. A timeout ends this life of ExaBGP: an ack that never came would
        otherwise be taken for the next command's, and an ExaBGP that cannot answer in
        ``ack_timeout`` is not keeping its sessions alive either."""
        line = encode_command(command)
        timeout = self.options.ack_timeout
        async with self._send_lock:
            conn = self._conn
            if conn is None:
                raise NotConnected("exabgp is not running")
            waiter = _Waiter()
            conn.inflight = waiter
            try:
                # A write cut short by cancellation would leave half a command in the stream.
                with trio.CancelScope(shield=True), trio.move_on_after(timeout) as write:
                    await conn.stream.send_all(line)
                if write.cancelled_caught:
                    await conn.fail(f"exabgp took no command for {timeout} s")
                    raise CommandTimeout(f"exabgp took no command for {timeout} s")
                with trio.move_on_after(timeout) as wait:
                    await waiter.done.wait()
                if wait.cancelled_caught:
                    await conn.fail(f"no ack from exabgp within {timeout} s")
                    raise CommandTimeout(f"no ack from exabgp within {timeout} s: {line!r}")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise NotConnected("the exabgp API connection was lost") from None
            finally:
                conn.inflight = None
                if not waiter.done.is_set() and conn.failed is None:
                    # The caller was cancelled after the command went out: its ack is still due and
                    # must not be taken for the next command's.
                    conn.stale_acks += 1
        if waiter.ok is None:
            raise NotConnected("the exabgp API connection was lost before the ack")
        if not waiter.ok:
            raise CommandFailed(f"exabgp refused: {line.decode().strip()}")
        return tuple(waiter.lines)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ExaBGP running until cancelled, then stop it. Started once the API socket listens.
        An ExaBGP that cannot be started at all (no such program) raises: a broken install should
        stop the agent with a clear error, not retry forever."""
        self.options.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        listener = await self._listen()
        try:
            task_status.started()
            restart = False
            while True:
                began = trio.current_time()
                reason = await self._life(listener, restart)
                delay = self._backoff.delay_after(trio.current_time() - began)
                log.warning("exabgp stopped (%s); starting it again in %.1f s", reason, delay)
                restart = True
                await trio.sleep(delay)
        finally:
            listener.close()
            self._event_tx.close()
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    async def _listen(self) -> trio.socket.SocketType:
        path = str(self.socket_path)
        if len(os.fsencode(path)) > MAX_UNIX_PATH:
            raise ValueError(f"state dir too long for a Unix socket path: {path}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket from an earlier run
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(path)
            os.chmod(path, 0o600)  # the state dir is 0700 too; this is for a dir that existed before
            sock.listen(4)
        except BaseException:
            sock.close()
            raise
        return sock

    def _write_config(self, neighbors: Iterable[Neighbor]) -> dict[str, int]:
        """Write the config; the stamp each neighbor's address must show once ExaBGP applied it."""
        process = ApiProcess((*self.options.bridge_argv, str(self.socket_path)))
        written, stamps = self._stamps.apply(neighbors)
        text = render_config(written, process)  # 0600: it may hold MD5 passwords
        write_file_atomically(self.config_path, text.encode(), durable=False)
        return stamps

    def _env(self) -> dict[str, str]:
        env = {
            "exabgp_reactor_speed": REACTOR_SPEED,  # a default: the agent's environment may set another
            **os.environ,
            "exabgp_api_ack": "true",
            "exabgp_api_encoder": "json",
            "exabgp_api_cli": "false",  # no named pipes under /run: the agent is the only controller
            "exabgp_tcp_bind": "",  # listen per neighbor (``listen`` in the config), not on a global list
            "exabgp_daemon_daemonize": "false",
            "exabgp_daemon_pid": "",
            "exabgp_log_destination": "stdout",
            "exabgp_log_statistics": "false",
        }
        if os.geteuid() == 0:
            env["exabgp_daemon_user"] = "root"  # otherwise it drops to "nobody" and cannot reload
        env.update(self.options.env)
        return env

    async def _life(self, listener: trio.socket.SocketType, restart: bool) -> str:
        """Start ExaBGP, serve it until it exits or its API drops, stop it. Returns why it ended."""
        plan = self._batcher.start(restart)
        self._write_config(plan.neighbors)
        argv = [*self.options.exabgp_argv, "server", str(self.config_path)]
        # Its own process group: we stop exactly what we started.
        proc = await process.start(
            argv,
            env=self._env(),
            cwd=str(self.options.state_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.pid = proc.pid
        self._tail.clear()
        log.info("exabgp started", extra={"pid": proc.pid, "neighbors": len(plan.neighbors)})
        reason = "stopped"
        try:
            async with trio.open_nursery() as nursery:
                assert proc.stdout is not None
                nursery.start_soon(self._pump_output, proc.stdout)
                exited = trio.Event()

                async def watch() -> None:
                    await proc.wait()
                    exited.set()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                reason = "no API connection"
                given_up: str | None = None
                self._given_up = None
                conn = await self._accept(listener, proc.pid)
                if conn is not None:
                    given_up = await self._serve(conn, proc.pid, restart, plan.resync, nursery)
                    reason = given_up or "API connection closed"
                    if given_up is None:
                        # The bridge usually notices a dead ExaBGP first; wait a moment for the
                        # exit status, which says more than "connection closed".
                        with trio.move_on_after(EXIT_GRACE):
                            await exited.wait()
                nursery.cancel_scope.cancel()
            # Giving up closes the API connection, so the bridge stops ExaBGP, whose exit may cancel
            # _serve before it returns: the reason it recorded still wins over "exited".
            given_up = given_up or self._given_up
            if given_up is not None:
                reason = given_up
            if exited.is_set() and given_up is None:
                reason = f"exabgp exited with status {proc.returncode}"
                for line in self._tail:
                    log.warning("exabgp: %s", line)
            return reason
        finally:
            if self._conn is not None:
                self._conn.resolve(None)
                self._conn = None
            with trio.CancelScope(shield=True):
                await self._stop(proc)
                self.pid = None
                # Bounded: on shutdown nobody may be reading any more.
                with (
                    trio.move_on_after(1),
                    contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
                ):
                    await self._event_tx.send(SpeakerDown(reason))

    async def _accept(self, listener: trio.socket.SocketType, pid: int) -> trio.SocketStream | None:
        with trio.move_on_after(self.options.connect_timeout):
            while True:
                sock, _ = await listener.accept()
                try:
                    peer = _peer_pid(sock)
                except OSError:
                    peer = -1
                if peer > 0 and _descends_from(peer, pid):
                    return trio.SocketStream(sock)
                log.warning("refusing an API connection from pid %d: not a child of exabgp %d", peer, pid)
                sock.close()
        log.warning(
            "exabgp %d did not start its API process within %.0f s", pid, self.options.connect_timeout
        )
        return None

    async def _serve(
        self, stream: trio.SocketStream, pid: int, restart: bool, resync: Resync, nursery: trio.Nursery
    ) -> str | None:
        """Serve one API connection until it closes; returns why we gave up on it, or ``None`` if
        the other side closed it."""
        conn = _Connection(stream)
        self._conn = conn
        self.starts += 1
        await self._event_tx.send(SpeakerUp(pid, restart))
        log.info("exabgp API connected", extra={"pid": pid})
        nursery.start_soon(self._reloader)
        if self._on_resync is not None:
            nursery.start_soon(self._resync, resync)
        try:
            await self._read(conn)
        finally:
            conn.resolve(None)
            self._conn = None
            self._given_up = conn.failed
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.aclose()
        return conn.failed

    async def _read(self, conn: _Connection) -> None:
        decoder = ApiDecoder()
        while True:
            try:
                data = await conn.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            for message in decoder.feed(data):
                if isinstance(message, Ack):
                    if conn.stale_acks:
                        conn.stale_acks -= 1
                    elif conn.inflight is not None:
                        conn.resolve(message.ok)
                    else:
                        log.warning("an ack from exabgp with no command waiting for it")
                elif isinstance(message, Text):
                    log.debug("exabgp says: %s", message.text)
                    if conn.inflight is not None and not conn.stale_acks:
                        conn.inflight.lines.append(message.text)
                else:
                    await self._event_tx.send(message)

    async def _resync(self, resync: Resync) -> None:
        assert self._on_resync is not None
        try:
            await self._on_resync(resync)
        except SpeakerError as exc:
            log.warning("re-announcing after %s stopped: %s", resync.reason.value, exc)
        except Exception:
            log.exception("the resync callback failed (%s)", resync.reason.value)

    async def _reloader(self) -> None:
        """Apply batched neighbor changes while this life lasts."""
        while True:
            deadline = self._batcher.deadline
            if deadline is None:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            await trio.sleep_until(deadline)
            plan = self._batcher.poll(trio.current_time())
            if plan is None:
                continue
            stamps = self._write_config(plan.neighbors)
            log.info(
                "reloading exabgp: %d neighbors, %d new or changed, %d removed",
                len(plan.neighbors),
                len(plan.resync.neighbors),
                len(plan.resync.removed),
            )
            try:
                applied = await self._reload(stamps)
            except CommandFailed as exc:
                log.error("exabgp refused to reload: %s", exc)
                continue
            except SpeakerError as exc:
                log.warning("reload not confirmed: %s", exc)
                return
            if not applied:
                conn = self._conn
                if conn is not None:
                    await conn.fail(f"exabgp did not apply a reload in {self.options.reload_attempts} tries")
                return
            # ExaBGP applies a reload before it reads another command (the signal is handled at the
            # top of its reactor's next pass) and the peers listed match the plan, so announcements to
            # new neighbors sent from here on find them configured.
            if self._on_resync is not None and (plan.resync.neighbors or plan.resync.removed):
                await self._resync(plan.resync)

    async def _reload(self, stamps: Mapping[str, int]) -> bool:
        """Send ``reload`` until ExaBGP shows the config written (each neighbor's address with its stamp,
        :class:`~agent.bgp.config.Stamps`) and holds exactly those peers; ``False`` if it never did.

        ExaBGP 5.0.15 acks ``reload`` at once and applies it at the top of its reactor's next pass,
        except that it first re-arms the signal and then skips the pass while any peer's adj-rib-out
        is pending (``Reactor.run``, ``_pending_adjribout``): the reload is lost, and a neighbor it
        removed stays a peer, reconnecting with backoff for good, or one it changed (a mesh session
        turned into one to a reflector's BIRD) keeps its old settings and never comes up. Routes stay
        queued for a peer until its session is up or its connection attempt fails, so a later try gets
        through."""
        wanted = dict(stamps)  # addresses as Neighbor normalized them, as ExaBGP's answers are read
        backoff = RestartBackoff(self.options.reload_retry_initial, self.options.reload_retry_max)
        for attempt in range(self.options.reload_attempts):
            if attempt:
                await trio.sleep(backoff.delay_after(0.0))
            await self.send(Reload())
            shown = stamps_shown(configured_descriptions(await self.send(ShowConfiguration())))
            held = summary_addresses(await self.send(ShowNeighbors()))
            if shown == wanted and held == wanted.keys():
                return True
            log.warning(
                "exabgp did not apply the reload (try %d): %d neighbors not as written, %d peers it "
                "should not have, %d missing",
                attempt + 1,
                sum(shown.get(a) != stamp for a, stamp in wanted.items()) + len(shown.keys() - wanted.keys()),
                len(held - wanted.keys()),
                len(wanted.keys() - held),
            )
        return False

    async def _pump_output(self, stream: trio.abc.ReceiveStream) -> None:
        """ExaBGP's log lines into ours (debug), keeping a tail to explain an exit. Always drained:
        ExaBGP writes its log with blocking writes."""
        pending = b""
        async for chunk in stream:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", errors="replace").rstrip()
                if line:
                    self._tail.append(line)
                    exabgp_log.debug("%s", line)
            if len(pending) > 65536:
                pending = b""

    async def _stop(self, proc: trio.Process) -> None:
        """SIGTERM the process group (ExaBGP then sends a Cease to each peer), SIGKILL it after
        ``stop_timeout`` (see :mod:`common.process`). Its output is drained meanwhile: ExaBGP could
        block on a full pipe while logging its exit."""
        async with trio.open_nursery() as nursery:
            if proc.stdout is not None:
                nursery.start_soon(self._pump_output, proc.stdout)
            if not await process.terminate(proc, self.options.stop_timeout):
                log.warning(
                    "exabgp %d ignored SIGTERM for %.0f s; killing it", proc.pid, self.options.stop_timeout
                )
            await process.kill(proc)
            nursery.cancel_scope.cancel()
        if proc.stdout is not None:
            await proc.stdout.aclose()
