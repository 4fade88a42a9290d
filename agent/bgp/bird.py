"""The reflector role's speaker: BIRD 2, run and reconfigured by the agent.

The agent decides what BIRD should do (a :class:`~agent.bgp.birdconf.ReflectorSpec`, from the reflector
placement and the members); this driver makes it so. BIRD starts when the machine takes the role and
stops when it hands it over. A change of spec is written as a whole config and applied with ``birdc
configure``, which keeps every protocol whose definition did not change, so adding or removing a client
resets no other session. Changes arriving within ``apply_window`` go out in one ``configure``: a join
storm costs one reconfiguration, not one per member. A BIRD that exits is started again after
:class:`common.backoff.RestartBackoff`'s delay; a config BIRD refuses is logged with BIRD's reason and
the running config stays, as ``birdc configure`` leaves it.

BIRD logs to a file in the state dir that it rotates itself at ``LOG_LIMIT`` (one backup), so nothing
reads its output; its tail explains an exit.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio

from agent.bgp.birdconf import ReflectorSpec, render, sessions_by_protocol
from common import process
from common.backoff import RestartBackoff
from common.files import write_file_atomically

log = logging.getLogger("wiremesh.bgp.bird")

LOG_LIMIT = 1 << 20  # bytes of BIRD's log before it rotates it
CONFIGURED = ("Reconfigured", "Reconfiguration in progress", "Reconfiguration already in progress")
TAIL_LINES = 20


@dataclass(frozen=True, slots=True)
class BirdOptions:
    state_dir: Path
    bird_argv: tuple[str, ...] = ("bird",)
    birdc_argv: tuple[str, ...] = ("birdc",)
    apply_window: float = 1.0  # seconds of changes batched into one configure
    stop_grace: float = 5.0  # SIGTERM (BIRD closes its sessions with a Cease), then SIGKILL
    ready_timeout: float = 15.0  # from start to BIRD answering on its control socket
    backoff: RestartBackoff = field(default_factory=RestartBackoff)


@dataclass(frozen=True, slots=True)
class ReflectorSession:
    """One of BIRD's BGP sessions as ``birdc show protocols`` reports it."""

    protocol: str
    machine: str
    address: str
    kind: str  # "client" or "reflector"
    state: str  # BIRD's protocol state: up, start, down, ...
    since: str
    info: str  # Established, Active, Connect, Passive, or why it failed


def parse_protocols(text: str, spec: ReflectorSpec) -> list[ReflectorSession]:
    """The spec's sessions found in ``show protocols`` output; a session BIRD does not list yet is
    left out (BIRD has not read that config)."""
    known = sessions_by_protocol(spec)
    clients = {s.protocol for s in spec.clients}
    out = []
    for line in text.splitlines():
        fields = line.split(None, 6)
        if len(fields) < 6 or fields[0] not in known or fields[1] != "BGP":
            continue
        s = known[fields[0]]
        # name proto table state since(date time) info
        since = " ".join(fields[4:6])
        info = fields[6].strip() if len(fields) > 6 else ""
        kind = "client" if s.protocol in clients else "reflector"
        out.append(ReflectorSession(s.protocol, s.name, s.address, kind, fields[3], since, info))
    return out


class BirdError(Exception):
    """BIRD could not be started, or refused a config."""


class BirdReflector:
    """Owns one BIRD for the reflector role. ``set_spec(None)`` (the default) means no role: no BIRD."""

    def __init__(self, options: BirdOptions) -> None:
        self.options = options
        self._spec: ReflectorSpec | None = None
        self._applied: ReflectorSpec | None = None
        self._changed = trio.Event()
        self._proc: trio.Process | None = None
        self.last_error: str | None = None
        self.starts = 0

    @property
    def config_path(self) -> Path:
        return self.options.state_dir / "bird-reflector.conf"

    @property
    def socket_path(self) -> Path:
        return self.options.state_dir / "bird-reflector.ctl"

    @property
    def log_path(self) -> Path:
        return self.options.state_dir / "bird-reflector.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    @property
    def spec(self) -> ReflectorSpec | None:
        return self._spec

    def set_spec(self, spec: ReflectorSpec | None) -> None:
        if spec is not None:
            log_clause = f'"{self.log_path}" {LOG_LIMIT} "{self.log_path}.1"'
            spec = replace(spec, log=log_clause)
        if spec != self._spec:
            self._spec = spec
            self._changed.set()

    async def sessions(self) -> list[ReflectorSession]:
        """BIRD's view of the sessions; empty when BIRD is not running or does not answer."""
        spec = self._applied
        if spec is None or self.pid is None:
            return []
        try:
            text = await self._birdc("show", "protocols")
        except BirdError:
            return []
        return parse_protocols(text, spec)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep BIRD in line with the spec until cancelled, then stop it."""
        self.options.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        task_status.started()
        while True:
            while self._spec is None:
                await self._wait_change()
            began = trio.current_time()
            reason = await self._life()
            if self._spec is None:
                continue  # the role was handed over: BIRD stopped on purpose
            delay = self.options.backoff.delay_after(trio.current_time() - began)
            self.last_error = reason
            log.warning("bird (reflector) stopped (%s); starting it again in %.1f s", reason, delay)
            await trio.sleep(delay)

    async def _wait_change(self, timeout: float = math.inf) -> None:
        with trio.move_on_after(timeout):
            await self._changed.wait()
        self._changed = trio.Event()

    async def _life(self) -> str:
        """One run of BIRD: start it with the spec, apply changes, end when it exits or the role goes."""
        spec = self._spec
        assert spec is not None
        self._write(spec)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a stale socket from an earlier run
        argv = [*self.options.bird_argv, "-f", "-c", str(self.config_path), "-s", str(self.socket_path)]
        try:
            proc = await process.start(argv)
        except OSError as exc:
            raise BirdError(f"cannot start BIRD ({argv[0]}): {exc.strerror}") from None
        self._proc = proc
        self.starts += 1
        reason = ""
        try:
            async with trio.open_nursery() as nursery:

                async def watch() -> None:
                    nonlocal reason
                    await proc.wait()
                    reason = reason or f"exited with status {proc.returncode}: {self._tail()}"
                    nursery.cancel_scope.cancel()

                nursery.start_soon(watch)
                reason = await self._serve(spec)
                nursery.cancel_scope.cancel()
            return reason
        finally:
            self._applied = None
            await process.stop(proc, self.options.stop_grace)
            self._proc = None

    async def _serve(self, spec: ReflectorSpec) -> str:
        """Wait for BIRD to answer, then apply every change; returns why BIRD should stop. Cancelled
        when BIRD exits on its own."""
        if not await self._ready():
            return f"no answer on its control socket within {self.options.ready_timeout:g} s"
        self._applied = spec
        self.last_error = None
        assert self._proc is not None
        count = len(sessions_by_protocol(spec))
        log.info("bird (reflector) started: pid %d, %d sessions", self._proc.pid, count)
        while True:
            await self._wait_change()
            await trio.sleep(self.options.apply_window)  # let a burst of changes settle
            if self._spec is None:
                return "role handed over"
            await self._apply(self._spec)

    async def _apply(self, spec: ReflectorSpec) -> None:
        if spec == self._applied:
            return
        self._write(spec)
        try:
            answer = await self._birdc("configure")
        except BirdError as exc:
            self.last_error = str(exc)
            log.error("bird (reflector) did not take the new config: %s", exc)
            return
        if not any(word in answer for word in CONFIGURED):
            self.last_error = _reason(answer)
            log.error("bird (reflector) refused the new config: %s", self.last_error)
            return
        before = set(sessions_by_protocol(self._applied)) if self._applied else set()
        after = set(sessions_by_protocol(spec))
        self._applied = spec
        log.info(
            "bird (reflector) reconfigured: %d sessions, %d added, %d removed",
            len(after),
            len(after - before),
            len(before - after),
        )

    async def _ready(self) -> bool:
        with trio.move_on_after(self.options.ready_timeout):
            while True:
                with contextlib.suppress(BirdError):
                    await self._birdc("show", "status")
                    return True
                await trio.sleep(0.1)
        return False

    async def _birdc(self, *args: str) -> str:
        argv: Sequence[str] = [*self.options.birdc_argv, "-s", str(self.socket_path), *args]
        try:
            with trio.fail_after(10):
                done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        except (OSError, trio.TooSlowError) as exc:
            raise BirdError(f"birdc {' '.join(args)}: {exc}") from None
        if done.returncode != 0:
            raise BirdError(f"birdc {' '.join(args)}: {_reason(done.stdout.decode() + done.stderr.decode())}")
        return done.stdout.decode(errors="replace")

    def _write(self, spec: ReflectorSpec) -> None:
        write_file_atomically(self.config_path, render(spec).encode(), durable=False)

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-TAIL_LINES:]) or "no log"


def _reason(answer: str) -> str:
    """The lines of a birdc answer that say what went wrong (not its greeting)."""
    lines = [line.strip() for line in answer.splitlines() if line.strip() and "ready." not in line]
    return " | ".join(lines) or "no answer"


__all__ = ["BirdError", "BirdOptions", "BirdReflector", "ReflectorSession", "parse_protocols"]
