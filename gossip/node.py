"""The Trio driver that connects one sans-I/O SWIM core to one transport.

The core decides everything and reads no clock; this driver only feeds it inputs stamped with
``trio.current_time()`` and carries out what it queued (datagrams, stream requests, events). After
every input the driver *flushes*: sends the queued datagrams, starts one owned task per queued stream
request, fans events out to subscribers, and moves the timer to the core's new deadline. All tasks live
in the nursery of :meth:`GossipNode.run`, so cancelling ``run`` is a complete shutdown.

A :class:`gossip.wire.KeyQuery` that arrives is answered by the application's key store, awaited here
(it may write a file first); :meth:`GossipNode.rotate_keys` runs one round of them across the cluster
(:mod:`gossip.keyquery`).

The driver also owns the file of remembered members (:mod:`gossip.snapshot` says what is in it):
:func:`read_snapshot` before joining, :meth:`GossipNode.keep_snapshot` while running.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from common.address import Address, format_address
from common.files import write_file_atomically
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from gossip.keyquery import KEY_QUERY_TIMEOUT, KeyAnswer, KeyRound, KeyStore, RefuseKeys
from gossip.keyring import KeyringError, fingerprint
from gossip.snapshot import DEFAULT_LIMIT as SNAPSHOT_LIMIT
from gossip.snapshot import MAX_FILE_SIZE as SNAPSHOT_MAX_SIZE
from gossip.snapshot import Remembered, SnapshotError, remember
from gossip.snapshot import decode as decode_snapshot
from gossip.snapshot import encode as encode_snapshot
from gossip.transport import Standing, Transport, TransportStats, host_key
from gossip.wire import KeyQuery

# How often leave() re-checks the core besides being woken by every flush.
LEAVE_POLL_INTERVAL = 0.05
# The snapshot of remembered members is rewritten at most this often (seconds).
SNAPSHOT_MIN_INTERVAL = 2.0
PENDING_BEFORE_TICK = 256  # datagrams read ahead of a tick at most: a flood must not postpone timers for long


class StreamRequestLike(Protocol):
    """What the driver reads from ``gossip.swim.StreamRequest`` (structural, to keep the driver testable)."""

    @property
    def id(self) -> int: ...
    @property
    def addr(self) -> Address: ...
    @property
    def data(self) -> bytes: ...
    @property
    def timeout(self) -> float: ...


class SwimCore(Protocol):
    """The API of ``gossip.swim.Swim`` that the driver uses."""

    @property
    def name(self) -> str: ...
    @property
    def addr(self) -> Address: ...

    def receive_datagram(self, src: Address, data: bytes, now: float) -> None: ...
    def handle_stream(self, src: Address, data: bytes, now: float) -> bytes | KeyQuery | None: ...
    def answer_key_query(self, answer: KeyAnswer) -> bytes: ...
    def query_keys(self, op: str, key: bytes, timeout: float, now: float) -> KeyRound: ...
    def stream_result(self, request_id: int, reply: bytes | None, now: float) -> None: ...
    def tick(self, now: float) -> None: ...
    def join(self, seeds: Sequence[Address], now: float) -> None: ...
    def alive_count(self) -> int: ...
    def leave(self, now: float) -> None: ...
    def leave_done(self) -> bool: ...
    def set_meta(self, meta: bytes, now: float) -> None: ...
    def set_kv(self, key: str, value: bytes | None, now: float) -> None: ...
    def publish(self, key: str, payload: bytes, now: float) -> None: ...
    def next_deadline(self) -> float: ...
    def take_datagrams(self) -> Sequence[tuple[Address, bytes]]: ...
    def take_stream_requests(self) -> Sequence[StreamRequestLike]: ...
    def take_events(self) -> Sequence[MemberEvent]: ...
    def members(self) -> Sequence[MemberInfo]: ...
    def snapshot(self, now: float) -> dict[str, Any]: ...


@dataclass(slots=True)
class DriverStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    stream_requests: int = 0
    stream_requests_failed: int = 0
    streams_handled: int = 0
    ticks: int = 0
    events: int = 0
    subscriber_drops: int = 0


@dataclass(slots=True)
class _Subscriber:
    channel: trio.MemorySendChannel[MemberEvent]
    dropped: int = 0


_EVENT_LOG_LEVEL = {
    EventKind.SUSPECT: logging.WARNING,
    EventKind.DEAD: logging.WARNING,
    EventKind.CONFLICT: logging.ERROR,
    EventKind.KV: logging.DEBUG,
}


class GossipNode:
    """Runs a SWIM core on a transport; see the module docstring for the flush cycle."""

    def __init__(
        self,
        core: SwimCore,
        transport: Transport,
        *,
        logger: logging.Logger | None = None,
        min_tick_interval: float = 0.001,
        keys: KeyStore | None = None,
    ) -> None:
        """``min_tick_interval`` spaces ticks so a core whose deadline fails to advance cannot spin.
        ``keys`` answers key queries (without one, every query is refused)."""
        self.core = core
        self.keys: KeyStore = keys if keys is not None else RefuseKeys()
        self.transport = transport
        self.stats = DriverStats()
        self._log = logger or logging.getLogger("wiremesh.gossip")
        self._min_tick_interval = min_tick_interval
        self._subscribers: list[_Subscriber] = []
        self._nursery: trio.Nursery | None = None
        self._timer: trio.CancelScope | None = None
        self._last_tick = -math.inf
        # Replaced after every flush: waiting on it means "wake me when the core may have changed".
        self._progress = trio.Event()
        # Source host -> standing, for the transport's connection guards. Rebuilt only when the
        # transport asks after a membership event: a join storm of N members is N^2 events, and a
        # rebuild per event made that cubic (minutes of CPU in a 200-member simulation).
        self._standing: dict[str, Standing] = {}
        self._standing_stale = True

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._nursery is not None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the core until cancelled; subscribers' channels are closed when this returns."""
        if self._nursery is not None:
            raise RuntimeError("this node is already running")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(
                    partial(self.transport.serve_streams, self._handle_stream, standing=self.standing)
                )
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._timer_loop)
                await self._flush()  # anything queued before we started (set_meta, set_kv)
                task_status.started()
        finally:
            self._nursery = None
            self._timer = None
            for sub in self._subscribers:
                sub.channel.close()
            self._subscribers.clear()

    def _require_running(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("the node is not running; start GossipNode.run() first")
        return self._nursery

    # --- loops ----------------------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        while True:
            src, data = await self.transport.receive_datagram()
            self.stats.datagrams_received += 1
            self.core.receive_datagram(src, data, trio.current_time())
            await self._flush()

    async def _timer_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._next_wakeup()) as scope:
                self._timer = scope
                try:
                    await trio.sleep_forever()
                finally:
                    self._timer = None
            now = trio.current_time()
            # Woken either by the deadline or by an input that moved it; tick only when it is due.
            if now >= self._next_wakeup():
                # Input first: woken late (a starved CPU), the ack for a probe may be waiting in the
                # socket while its deadline has passed, and the tick would suspect a live member for
                # our own slowness (Lifeguard's point). Whatever has arrived is read before timers fire.
                for src, data in self.transport.pending_datagrams(PENDING_BEFORE_TICK):
                    self.stats.datagrams_received += 1
                    self.core.receive_datagram(src, data, now)
                self._last_tick = now
                self.stats.ticks += 1
                self.core.tick(now)
                await self._flush()

    def _next_wakeup(self) -> float:
        return max(self.core.next_deadline(), self._last_tick + self._min_tick_interval)

    async def _handle_stream(self, src: Address, data: bytes) -> bytes | None:
        self.stats.streams_handled += 1
        reply = self.core.handle_stream(src, data, trio.current_time())
        await self._flush()
        if isinstance(reply, KeyQuery):
            answer = await self.keys.apply(reply.op, reply.key)
            self._log_key_change(reply.op, reply.key, answer, f"asked by {format_address(src)}")
            return self.core.answer_key_query(answer)
        return reply

    async def _run_stream_request(self, request: StreamRequestLike) -> None:
        reply = await self.transport.request(request.addr, request.data, request.timeout)
        if reply is None:
            self.stats.stream_requests_failed += 1
        self.core.stream_result(request.id, reply, trio.current_time())
        await self._flush()

    # --- flush ----------------------------------------------------------------------------------

    async def _flush(self) -> None:
        """Carry out everything the core queued. The synchronous part runs first, so a cancellation
        during the sends below can only lose datagrams, which UDP may lose anyway."""
        core = self.core
        if self._nursery is not None:
            for request in core.take_stream_requests():
                self.stats.stream_requests += 1
                self._nursery.start_soon(self._run_stream_request, request)
        self._dispatch(core.take_events())
        if self._timer is not None:
            self._timer.deadline = self._next_wakeup()
        self._progress.set()
        self._progress = trio.Event()
        datagrams = core.take_datagrams() if self._nursery is not None else ()
        for addr, data in datagrams:
            self.stats.datagrams_sent += 1
            await self.transport.send_datagram(addr, data)

    # --- events ---------------------------------------------------------------------------------

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        """A channel of every membership event from now on. A subscriber that falls more than
        ``max_buffer`` behind loses events (counted) rather than stalling the gossip layer."""
        send, recv = trio.open_memory_channel[MemberEvent](max_buffer)
        self._subscribers.append(_Subscriber(send))
        return recv

    def standing(self, host: str) -> Standing:
        """What the transport may assume of a connection from ``host`` before it authenticates."""
        if self._standing_stale:
            self._refresh_standing()
        return self._standing.get(host, Standing.STRANGER)

    def _refresh_standing(self) -> None:
        standing: dict[str, Standing] = {}
        for m in self.core.members():
            if m.name == self.core.name:
                continue  # our own address would lend the reserve to any local process
            live = m.state in (MemberState.ALIVE, MemberState.SUSPECT)
            host = host_key(m.addr[0])
            best = Standing.LIVE if live else Standing.KNOWN
            standing[host] = max(standing.get(host, Standing.STRANGER), best)
        self._standing = standing
        self._standing_stale = False

    def _dispatch(self, events: Sequence[MemberEvent]) -> None:
        if any(event.kind is not EventKind.KV for event in events):
            self._standing_stale = True
        for event in events:
            self.stats.events += 1
            self._log_event(event)
            for sub in list(self._subscribers):
                try:
                    sub.channel.send_nowait(event)
                except trio.WouldBlock:
                    sub.dropped += 1
                    self.stats.subscriber_drops += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._subscribers.remove(sub)  # the subscriber closed its end

    def _log_event(self, event: MemberEvent) -> None:
        extra = {
            "node": self.core.name,  # which node saw it: simulations run many in one process
            "event": event.kind.value,
            "member": event.name,
            "incarnation": event.incarnation,
            "addr": format_address(event.addr),
            "key": event.key,
        }
        level = _EVENT_LOG_LEVEL.get(event.kind, logging.INFO)
        if event.kind is EventKind.KV:
            self._log.log(
                level,
                "member %s kv %s changed (incarnation %d)",
                event.name,
                event.key,
                event.incarnation,
                extra=extra,
            )
        else:
            self._log.log(
                level,
                "member %s %s (incarnation %d, %s)",
                event.name,
                event.kind.value,
                event.incarnation,
                extra["addr"],
                extra=extra,
            )

    # --- commands -------------------------------------------------------------------------------

    async def _wait_for_progress(self, max_wait: float) -> None:
        """Return after the next flush, or after ``max_wait`` at the latest."""
        progress = self._progress
        with trio.move_on_after(max_wait):
            await progress.wait()

    async def join(self, seeds: Sequence[Address], *, attempts: int = 5, retry_interval: float = 2.0) -> bool:
        """Contact ``seeds`` until one of them answers; True once we know another member.

        Our own address is dropped from ``seeds`` so every node can be given the same seed list.
        """
        own = {self.core.addr, self.transport.local_addr}
        targets = [s for s in seeds if s not in own]
        if not targets:
            return True
        self._require_running()
        for attempt in range(1, max(1, attempts) + 1):
            self.core.join(targets, trio.current_time())
            await self._flush()
            with trio.move_on_after(retry_interval):
                while self.core.alive_count() <= 1:
                    await self._wait_for_progress(retry_interval)
                return True
            self._log.info("join attempt %d/%d via %d seed(s) got no answer", attempt, attempts, len(targets))
        return self.core.alive_count() > 1

    async def leave(self, timeout: float = 5.0, linger: float = 0.0) -> None:
        """Announce that we leave and wait (bounded) until the core says the notice went out, then keep
        running ``linger`` seconds more: members that probe us meanwhile get the notice with the ack
        instead of suspecting a node that simply stopped answering."""
        self._require_running()
        self.core.leave(trio.current_time())
        await self._flush()
        with trio.move_on_after(timeout):
            while not self.core.leave_done():
                await self._wait_for_progress(LEAVE_POLL_INTERVAL)
            await trio.sleep(linger)
            return
        self._log.warning("leave notice not fully disseminated after %.1fs", timeout)

    async def set_meta(self, meta: bytes) -> None:
        self.core.set_meta(meta, trio.current_time())
        await self._flush()

    async def set_kv(self, key: str, value: bytes | None) -> None:
        """Publish (or with None, delete) one node-local key/value."""
        self.core.set_kv(key, value, trio.current_time())
        await self._flush()

    async def publish(self, key: str, payload: bytes) -> None:
        """Spread one item of the application's shared state to every member."""
        self.core.publish(key, payload, trio.current_time())
        await self._flush()

    async def rotate_keys(
        self, op: str, key: bytes, *, timeout: float = KEY_QUERY_TIMEOUT
    ) -> dict[str, KeyAnswer | None]:
        """Apply a keyring operation on every live member and on this one; each member's answer by
        name, None for a member that did not answer within ``timeout``.

        Refused here first (:class:`KeyringError` saying why, nothing sent) when this member's own
        ring would refuse it; this member applies it last (see :mod:`gossip.keyquery`)."""
        why = self.keys.check(op, key)
        if why is not None:
            raise KeyringError(why)
        self._require_running()
        round_ = self.core.query_keys(op, key, timeout, trio.current_time())
        await self._flush()
        # Every stream ends within its own timeout; the margin only covers the last flushes.
        with trio.move_on_after(timeout + 1.0):
            while not round_.done:
                await self._wait_for_progress(timeout)
        answers: dict[str, KeyAnswer | None] = {name: round_.answers.get(name) for name in round_.asked}
        mine = await self.keys.apply(op, key)
        self._log_key_change(op, key, mine, "asked here")
        answers[self.core.name] = mine
        return answers

    def _log_key_change(self, op: str, key: bytes, answer: KeyAnswer, why: str) -> None:
        """One line per change, naming the key by fingerprint only; a list is not worth a line."""
        if op == "list":
            return
        extra = {"node": self.core.name}
        if answer.error is None:
            self._log.info("keyring: %s key %s (%s)", op, fingerprint(key), why, extra=extra)
        else:
            self._log.warning(
                "keyring: %s key %s refused: %s (%s)", op, fingerprint(key), answer.error, why, extra=extra
            )

    async def keep_snapshot(
        self,
        path: Path,
        *,
        min_interval: float = SNAPSHOT_MIN_INTERVAL,
        limit: int = SNAPSHOT_LIMIT,
        write: Callable[[Path, bytes], Awaitable[None]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Rewrite ``path`` with the members worth remembering whenever membership changes: at once
        after a quiet spell, then at most once per ``min_interval``. Nothing is written until
        something changes, so a restart that finds nobody does not erase what it remembered. A
        failed write is logged and retried on the next change. Returns when :meth:`run` ends.
        ``write``: how the file is written (default: atomically, in a worker thread; a test under
        ``MockClock`` passes one that stays on the Trio thread, since virtual time runs on while a
        worker thread works)."""
        write = write or _write_in_thread
        events = self.subscribe()
        written: list[Remembered] | None = None
        dirty, allowed_at = False, -math.inf
        task_status.started()
        async with events:
            while True:
                # Keep draining events (a subscriber that falls behind loses them, counted as drops);
                # once something changed, write when the rate limit allows.
                with trio.move_on_at(max(allowed_at, trio.current_time()) if dirty else math.inf):
                    try:
                        event = await events.receive()
                    except trio.EndOfChannel:
                        return
                    dirty = dirty or event.kind is not EventKind.KV
                    continue
                dirty, allowed_at = False, trio.current_time() + min_interval
                remembered = remember(self.core.members(), self.core.name, limit)
                if remembered == written:
                    continue
                try:
                    await write(path, encode_snapshot(remembered, time.time()))
                    written = remembered
                except OSError as exc:
                    self._log.warning("cannot write the member snapshot %s: %s", path, exc)

    # --- queries --------------------------------------------------------------------------------

    def members(self) -> list[MemberInfo]:
        return list(self.core.members())

    def snapshot(self) -> dict[str, Any]:
        """The core's debug snapshot, the driver's counters under ``"driver"`` and, on real sockets,
        the transport's under ``"transport"``."""
        snap = dict(self.core.snapshot(trio.current_time()))
        snap["driver"] = {
            **asdict(self.stats),
            "running": self.running,
            "subscribers": len(self._subscribers),
            "local_addr": format_address(self.transport.local_addr),
        }
        # The real transport's counters and gauges (connections, guards, buffered bytes).
        transport_stats = getattr(self.transport, "stats", None)
        if isinstance(transport_stats, TransportStats):
            snap["transport"] = transport_stats.as_dict()
        return snap


async def read_snapshot(
    path: Path, *, limit: int = SNAPSHOT_LIMIT, logger: logging.Logger | None = None
) -> list[Remembered]:
    """The members remembered in ``path``; none if it is missing. A file we cannot read or parse is
    logged and ignored: it only speeds up finding the cluster, and must never stop the agent."""
    log = logger or logging.getLogger("wiremesh.gossip")

    def read() -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read(SNAPSHOT_MAX_SIZE + 1)
        except FileNotFoundError:
            return None

    try:
        data = await trio.to_thread.run_sync(read)
        return [] if data is None else decode_snapshot(data, limit)
    except (OSError, SnapshotError) as exc:
        log.warning("ignoring the member snapshot %s: %s", path, exc)
        return []


async def _write_in_thread(path: Path, data: bytes) -> None:
    await trio.to_thread.run_sync(write_file_atomically, path, data)
