"""Cluster objects over gossip and on disk: the object store as the gossip layer's shared state.

The store decides what is newer (hybrid logical clock, origin as tie-break); gossip only carries
records. Every change, local or replicated, is queued for one Trio task that writes it to SQLite off
the Trio thread and, for local edits, hands it to gossip to spread. Replicated changes are not
re-published here: the gossip core already passes on what :meth:`receive` reports as new.

Group commit: the queue is a batch that fills while the previous one is being committed, and is then
committed in one transaction (one fsync). A writer that must not answer before its change is on disk
(the HTTP API) awaits :meth:`ObjectReplicator.committed`, which waits on the batch holding its change,
so many concurrent writers share one fsync instead of queueing for one each. Local edits are spread
only once committed, so no peer learns of a change this machine could still lose.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from agent.cluster.objects import Kind
from agent.cluster.storage import SqliteObjectStorage
from agent.cluster.store import (
    Conflict,
    ObjectStore,
    RecentSet,
    Record,
    RecordDecodeError,
    decode_record,
    encode_record,
)
from gossip import app_digest

log = logging.getLogger("wiremesh.objects")

DEFAULT_TOMBSTONE_KEEP_S = 7 * 24 * 3600.0


def item_key(kind: Kind, name: str) -> str:
    return f"{kind.value}/{name}"


def parse_item_key(key: str) -> tuple[Kind, str] | None:
    kind, _, name = key.partition("/")
    try:
        return Kind(kind), name
    except ValueError:
        return None


def wall_ms() -> int:
    return int(time.time() * 1000)


class Publisher(Protocol):
    """What the replicator needs from the gossip node: spread one item."""

    async def publish(self, key: str, payload: bytes) -> None: ...


class CommitFailed(Exception):
    """The batch holding a change could not be written to disk; the change is not durable."""


@dataclass
class _Batch:
    """Changes waiting to be committed together, and an event for whoever waits for that commit."""

    records: list[tuple[Record, bool]] = field(default_factory=list)  # (record, written here)
    wake: trio.Event = field(default_factory=trio.Event)  # the first change arrived
    done: trio.Event = field(default_factory=trio.Event)  # committed, or failed (then ``error``)
    error: str | None = None


class ObjectReplicator:
    """Implements :class:`gossip.shared.SharedState` for the object store."""

    def __init__(self, store: ObjectStore, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.store = store
        self._clock_ms = clock_ms
        self._merging = False
        self._pending = _Batch()
        self._writing: _Batch | None = None
        self.decode_failures = 0
        # Digests of payloads the store refused as too far ahead: a notice of one is not pulled again.
        self._refused: RecentSet[bytes] = RecentSet()
        store.on_change(self._changed)
        store.on_conflict(self._conflicted)
        for record in store.repaired:  # re-stamped on load: saved, then spread, like a local edit
            self._changed(record)

    # --- SharedState ---------------------------------------------------------------------------

    def receive(self, key: str, payload: bytes, now: float) -> bool:
        try:
            record = decode_record(payload)
        except RecordDecodeError as exc:
            self.decode_failures += 1
            log.warning("dropped a replicated object %s that does not decode: %s", key, exc)
            return False
        if item_key(record.kind, record.name) != key:
            self.decode_failures += 1
            return False
        now_ms = self._clock_ms()
        self._merging = True
        try:
            changed = self.store.merge(record, now_ms)
        finally:
            self._merging = False
        if not changed and self.store.refused(record, now_ms):
            self._refused.add(app_digest(payload), now_ms)
        return changed

    def get(self, key: str) -> bytes | None:
        parsed = parse_item_key(key)
        record = self.store.get_record(*parsed) if parsed else None
        return encode_record(record) if record else None

    def wants(self, key: str, digest: bytes) -> bool:
        if self._refused.seen(digest, self._clock_ms()):
            return False  # refused as too far ahead lately: pulling it again would change nothing
        ours = self.get(key)
        return ours is None or app_digest(ours) != digest

    def full_state(self) -> bytes:
        return self.store.encode_all()

    def merge_full_state(self, data: bytes, now: float) -> None:
        self._merging = True
        try:
            self.store.merge_all(data, self._clock_ms())
        except RecordDecodeError as exc:
            self.decode_failures += 1
            log.warning("dropped a peer's object state that does not decode: %s", exc)
        finally:
            self._merging = False

    # --- persistence and publishing ------------------------------------------------------------

    @staticmethod
    def _conflicted(conflict: Conflict) -> None:
        log.warning(
            "conflict on %s %s: %s",
            conflict.kind.value,
            conflict.name,
            conflict.problem().msg,
        )

    def _changed(self, record: Record) -> None:
        self._pending.records.append((record, not self._merging))
        self._pending.wake.set()

    async def run(
        self,
        storage: SqliteObjectStorage,
        gossip: Publisher,
        *,
        tombstone_keep_s: float = DEFAULT_TOMBSTONE_KEEP_S,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write every change to disk (then spread local edits) until cancelled."""
        task_status.started()
        next_expiry = trio.current_time()
        while True:
            with trio.move_on_at(next_expiry):
                await self._pending.wake.wait()
            if trio.current_time() >= next_expiry:
                gone = self.store.expire_tombstones(self._clock_ms(), int(tombstone_keep_s * 1000))
                if gone:
                    await trio.to_thread.run_sync(storage.delete_many, [r.key for r in gone])
                next_expiry = trio.current_time() + min(3600.0, max(1.0, tombstone_keep_s / 10))
            batch, self._pending = self._pending, _Batch()
            if not batch.records:
                continue
            self._writing = batch
            try:
                await trio.to_thread.run_sync(storage.save_many, [record for record, _ in batch.records])
            except BaseException as exc:
                batch.error = str(exc) or type(exc).__name__
                raise  # a store that cannot write stops the agent, as before; its waiters hear why
            finally:
                self._writing = None
                batch.done.set()
            for record, local in batch.records:
                if local:
                    await gossip.publish(item_key(record.kind, record.name), encode_record(record))

    async def committed(self) -> None:
        """Return once every change made so far is committed to disk; raise :class:`CommitFailed` if
        the commit holding one failed. Concurrent callers share the commit (see the module docstring)."""
        batch = self._pending if self._pending.records else self._writing
        if batch is None:
            return
        await batch.done.wait()
        if batch.error is not None:
            raise CommitFailed(batch.error)

    async def flushed(self) -> None:
        """Wait until every change so far is on disk (for tests and orderly shutdown)."""
        while self._pending.records or self._writing is not None:
            await self.committed()
