"""The health-check runner: runs every check that lists this machine, on its schedule, and publishes
the verdicts over gossip.

One Trio task per check (so hundreds of checks never delay each other): the first run is jittered
(:func:`agent.health.verdict.first_delay`), later runs follow
:func:`agent.health.verdict.next_run`. Each result
feeds the object's :class:`CheckState`. The store is re-read on every change (and every second, as a
backstop); a check whose object is deleted, loses its check or stops listing this machine is stopped
and its verdict dropped, and an edited check restarts (its thresholds apply to the state so far, so an
edit does not reset a healthy verdict to unknown).

Clocks: the check states run on the Trio clock (what the planner compares holds against); what is
published is converted to wall-clock seconds, since a monotonic time means nothing on another machine.
All local verdicts go out as ONE node-local gossip value, ``health`` (:data:`agent.published.HEALTH`:
``{key: Verdict.to_wire()}``), at most every ``publish_interval`` seconds and only when something changed.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import trio

from agent.cluster.objects import HealthCheck, Kind, Route, Vip
from agent.cluster.store import ObjectStore
from agent.health.execpolicy import ExecPolicy
from agent.health.probes import CheckResult, TlsContexts, run_check
from agent.health.verdict import CheckState, Health, LocalVerdict, Verdict, first_delay, next_run
from agent.published import HEALTH, HEALTH_KEY

log = logging.getLogger("wiremesh.health")

PUBLISH_INTERVAL = 0.2
RESCAN_INTERVAL = 1.0
LATENESS_KEEP = 1024  # start-lateness samples kept per runner (the most recent ones)

PublishKv = Callable[[str, bytes | None], Awaitable[None]]
Probe = Callable[[HealthCheck], Awaitable[CheckResult]]
# Called as each run starts: (object key, scheduled slot, actual start), both on the Trio clock.
RunStarted = Callable[[str, float, float], None]


def object_key(obj: Vip | Route) -> str:
    """The key the planner uses (``planner.ObjectSpec.key``)."""
    return f"{'vip' if isinstance(obj, Vip) else 'route'}/{obj.name}"


def local_checks(store: ObjectStore, machine: str) -> dict[str, HealthCheck]:
    """Every VIP and route check that lists ``machine``, by object key."""
    out: dict[str, HealthCheck] = {}
    for kind in (Kind.VIP, Kind.ROUTE):
        for obj in store.list(kind):
            if isinstance(obj, Vip | Route) and obj.health_check is not None and machine in obj.machines:
                out[object_key(obj)] = obj.health_check
    return out


@dataclass
class _Running:
    check: HealthCheck
    scope: trio.CancelScope


class HealthRunner:
    def __init__(
        self,
        store: ObjectStore,
        exec_policy: ExecPolicy,
        node_name: str,
        publish_kv: PublishKv,
        *,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        probe: Probe | None = None,
        publish_interval: float = PUBLISH_INTERVAL,
        on_run_start: RunStarted | None = None,
    ) -> None:
        self.store = store
        self.exec_policy = exec_policy
        self.node_name = node_name
        self.publish_kv = publish_kv
        self.rng = rng if rng is not None else random.Random()
        self.wall_clock = wall_clock
        self.publish_interval = publish_interval
        self._probe = probe
        self._tls: TlsContexts | None = None
        self._tls_lock = trio.Lock()  # one build: checks starting during it wait for it
        self.states: dict[str, CheckState] = {}
        self.runs: dict[str, int] = {}  # completed runs per key (for tests and metrics)
        self.failures: dict[str, int] = {}  # failed runs per key, counted as they complete (metrics)
        # How late runs start (actual start - scheduled slot, seconds): the latest LATENESS_KEEP
        # samples, and the worst one seen. A loaded event loop shows up here before it delays verdicts.
        self.lateness: deque[float] = deque(maxlen=LATENESS_KEEP)
        self.max_lateness = 0.0
        self._on_run_start = on_run_start
        self._running: dict[str, _Running] = {}
        self._dirty = True
        self._publish_wake = trio.Event()
        self._rescan_wake = trio.Event()
        self._listeners: list[Callable[[], None]] = []

    # --- what others read ----------------------------------------------------------------------

    def local(self) -> dict[str, LocalVerdict]:
        """This machine's verdicts for the planner, on the Trio clock."""
        return {
            key: LocalVerdict(Health(s.state), s.since, s.failing_since) for key, s in self.states.items()
        }

    def verdicts(self) -> dict[str, Verdict]:
        """This machine's verdicts as published (wall-clock times)."""
        offset = self.wall_clock() - trio.current_time()
        out = {}
        for key, state in self.states.items():
            v = state.verdict()
            out[key] = replace(
                v,
                since=v.since + offset,
                checked_at=None if v.checked_at is None else v.checked_at + offset,
            )
        return out

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` (synchronously) whenever what :meth:`local` returns changes: a verdict's
        state changes, or a check comes or goes. Not on every result (``consecutive``, ``checked_at``):
        with hundreds of checks that would be hundreds of re-plans a second for nothing."""
        self._listeners.append(listener)

    # --- the tasks -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        unsubscribe = self.store.on_change(lambda _record: self._rescan_wake.set())
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publisher)
                self._sync(nursery)
                task_status.started()
                while True:
                    with trio.move_on_after(RESCAN_INTERVAL):
                        await self._rescan_wake.wait()
                    self._rescan_wake = trio.Event()
                    self._sync(nursery)
        finally:
            unsubscribe()

    def _sync(self, nursery: trio.Nursery) -> None:
        wanted = local_checks(self.store, self.node_name)
        changed = False
        for key in list(self._running):
            if wanted.get(key) != self._running[key].check:
                self._running.pop(key).scope.cancel()
                if key not in wanted:
                    self.states.pop(key, None)
                    self.runs.pop(key, None)
                    self.failures.pop(key, None)
                    changed = True
        for key, check in wanted.items():
            if key in self._running:
                continue
            state = self.states.get(key)
            if state is None:
                self.states[key] = CheckState(
                    check.healthy_threshold, check.unhealthy_threshold, trio.current_time()
                )
                changed = True
            else:  # an edited check keeps its state; the new thresholds apply from the next result
                state.healthy_threshold = check.healthy_threshold
                state.unhealthy_threshold = check.unhealthy_threshold
            scope = trio.CancelScope()
            self._running[key] = _Running(check, scope)
            nursery.start_soon(self._run_check, key, check, scope)
        if changed:
            self._changed()

    async def _run_check(self, key: str, check: HealthCheck, scope: trio.CancelScope) -> None:
        with scope:
            slot = trio.current_time() + first_delay(check.interval, self.rng)
            while True:
                await trio.sleep_until(slot)
                self._started(key, slot, trio.current_time())
                result = await self._run_probe(check)
                now = trio.current_time()
                state = self.states.get(key)
                if state is None:  # removed while running
                    return
                before = state.state
                state.record(result.ok, result.latency, result.error, now)
                self.runs[key] = self.runs.get(key, 0) + 1
                if not result.ok:
                    self.failures[key] = self.failures.get(key, 0) + 1
                if state.state != before:
                    log.info(
                        "health check %s is now %s",
                        key,
                        state.state,
                        extra={"check": key, "state": state.state, "error": result.error or ""},
                    )
                self._changed(notify=state.state != before)
                slot = next_run(slot, check.interval, now)

    def _started(self, key: str, slot: float, started: float) -> None:
        late = started - slot
        self.lateness.append(late)
        if late > self.max_lateness:
            self.max_lateness = late
        if self._on_run_start is not None:
            self._on_run_start(key, slot, started)

    async def _run_probe(self, check: HealthCheck) -> CheckResult:
        if self._probe is not None:
            return await self._probe(check)
        # Built once, in a thread (loading the CA bundle costs ~20 ms of CPU), and shared by every
        # https:// check; a plain http:// one needs none (agent.health.httpprobe never touches TLS for it).
        if self._tls is None and check.type == "http" and check.target.startswith("https:"):
            async with self._tls_lock:
                if self._tls is None:
                    self._tls = await trio.to_thread.run_sync(TlsContexts.create)
        return await run_check(check, exec_policy=self.exec_policy, tls=self._tls)

    def _changed(self, *, notify: bool = True) -> None:
        """Something to publish; ``notify``: also something the planner reads (see :meth:`on_change`)."""
        self._dirty = True
        self._publish_wake.set()
        if notify:
            for listener in self._listeners:
                listener()

    def encode(self) -> bytes:
        """The ``health`` gossip value (:data:`agent.published.HEALTH`)."""
        return HEALTH.encode(self.verdicts())

    async def _publisher(self) -> None:
        """Publish at most every ``publish_interval`` seconds, only when something changed."""
        while True:
            await self._publish_wake.wait()
            self._publish_wake = trio.Event()
            if self._dirty:
                self._dirty = False
                try:
                    await self.publish_kv(HEALTH_KEY, self.encode())
                except ValueError as exc:  # too big for one gossip value: say so, keep checking
                    log.error("cannot publish health verdicts: %s", exc)
            await trio.sleep(self.publish_interval)


__all__ = ["HealthRunner", "local_checks", "object_key"]
