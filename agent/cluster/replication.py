"""Cluster objects over gossip and on disk: the object store as the gossip layer's shared state.

The store decides what is newer (hybrid logical clock, origin as tie-break); gossip only carries
records. Every change, local or replicated, is queued for one Trio task that writes it to SQLite off
the Trio thread and, for local edits, hands it to gossip to spread. Replicated changes are not
re-published here: the gossip core already passes on what :meth:`receive` reports as new.
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
from agent.cluster.store import ObjectStore, Record, RecordDecodeError, decode_record, encode_record
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


@dataclass
class _Pending:
    records: list[tuple[Record, bool]] = field(default_factory=list)  # (record, written here)
    wake: trio.Event = field(default_factory=trio.Event)


class ObjectReplicator:
    """Implements :class:`gossip.shared.SharedState` for the object store."""

    def __init__(self, store: ObjectStore, clock_ms: Callable[[], int] = wall_ms) -> None:
        self.store = store
        self._clock_ms = clock_ms
        self._merging = False
        self._pending = _Pending()
        self._writing = False
        self.decode_failures = 0
        store.on_change(self._changed)

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
        self._merging = True
        try:
            return self.store.merge(record, self._clock_ms())
        finally:
            self._merging = False

    def get(self, key: str) -> bytes | None:
        parsed = parse_item_key(key)
        record = self.store.get_record(*parsed) if parsed else None
        return encode_record(record) if record else None

    def wants(self, key: str, digest: bytes) -> bool:
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
            batch, self._pending = self._pending.records, _Pending()
            if not batch:
                continue
            self._writing = True
            try:
                await trio.to_thread.run_sync(storage.save_many, [record for record, _ in batch])
                for record, local in batch:
                    if local:
                        await gossip.publish(item_key(record.kind, record.name), encode_record(record))
            finally:
                self._writing = False

    async def flushed(self) -> None:
        """Wait until every change so far is on disk (for tests and orderly shutdown)."""
        while self._pending.records or self._writing:
            await trio.sleep(0.01)
