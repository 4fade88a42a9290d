"""The replicated cluster object store: versioned records, last-writer-wins, tombstones.

Sans-I/O: no disk, no network, no clock reads. Every operation takes ``wall_ms``; the agent persists each
change (:meth:`ObjectStore.on_change` listeners, :mod:`agent.cluster.storage`) and gossips it.

* **Local writes** (:meth:`~ObjectStore.create`, ``replace``, ``patch``, ``delete``) are validated — the
  object's shape, then its context (:func:`agent.cluster.objects.validate`) — and refused with a typed error
  before anything changes. A write that passes is stamped with a fresh HLC
:class:`~agent.cluster.hlc.Version`.
* **Replication** (:meth:`~ObjectStore.merge`, ``merge_all``) is a pure last-writer-wins register per
  ``(kind, name)``: the higher ``(timestamp, origin)`` wins and a delete is a tombstone record that wins
  the same way. Merging is commutative, associative and idempotent, so replicas that saw the same
  records hold the same state whatever the order. A replicated record is stored even when it does not
  validate here (an unknown machine, a field from a newer agent): refusing it would make replicas
  diverge. :meth:`~ObjectStore.problems` reports such records for the API.
* **Conflicts**: last-writer-wins stays the rule, but the loser of two writes to the same key from
  different machines whose HLC wall times are less than ``conflict_window_ms`` apart (the convergence
  window: closer than that, neither writer had likely seen the other's write) is recorded as a
  :class:`Conflict` — an edit lost to another, an object brought back over a delete, or an edit lost
  to a delete. Every replica that sees both versions records it, whichever arrived first, once per
  losing version (one that never receives the loser, because it was overwritten everywhere first, does
  not: conflicts are not themselves replicated); the last :data:`CONFLICTS_PER_OBJECT` per object and
  :data:`MAX_CONFLICT_OBJECTS` objects are kept. The HLC carries no causal history, so writes further
  apart than the window are not flagged even if a partition kept them apart.
* **Tombstones** are kept ``keep_ms`` after the delete (:meth:`~ObjectStore.expire_tombstones`). A node
  partitioned for longer than that can bring a deleted object back when it rejoins; choose ``keep_ms``
  longer than any partition you expect to heal from (as with Cassandra's gc_grace).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack
from pydantic import BaseModel, ValidationError

from agent.cluster.hlc import (
    MAX_AHEAD_MS,
    MAX_COUNTER,
    MAX_WALL_MS,
    HybridClock,
    Timestamp,
    Version,
    too_far_ahead,
)
from agent.cluster.objects import (
    MESH_KEY,
    MODELS,
    ClusterObject,
    Kind,
    MachineSettings,
    MeshSettings,
    Problem,
    View,
    key_of,
    parse,
    problems_from_error,
    validate,
    validate_delete,
)

FORMAT_VERSION = 1
MAX_NAME = 253
MAX_BODY_DEPTH = 16
DEFAULT_CONFLICT_WINDOW_MS = 10_000
CONFLICTS_PER_OBJECT = 4
MAX_CONFLICT_OBJECTS = 1000

# Origins whose too-far-ahead records have been logged; past this many (they are the sender's to invent)
# refusals are still counted but no longer logged one by one.
MAX_LOGGED_ORIGINS = 256

# Refused far-future records are remembered this long and this many at most (RecentSet): a sender
# repeats them on every notice, update and push-pull, and each would be pulled and counted again.
REFUSAL_MEMORY = 1024
REFUSAL_MEMORY_MS = 10 * 60_000

log = logging.getLogger("wiremesh.objects")

T = TypeVar("T")

Key = tuple[Kind, str]


class StoreError(Exception):
    """A local write that was refused; nothing changed."""


class NotFound(StoreError):
    def __init__(self, kind: Kind, name: str) -> None:
        super().__init__(f"no {kind.value} named {name!r}")
        self.kind, self.name = kind, name


class AlreadyExists(StoreError):
    def __init__(self, kind: Kind, name: str) -> None:
        super().__init__(f"a {kind.value} named {name!r} already exists")
        self.kind, self.name = kind, name


class Invalid(StoreError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class InUse(StoreError):
    def __init__(self, kind: Kind, name: str, where: list[str]) -> None:
        super().__init__(f"{kind.value} {name!r} is still used by: {', '.join(where)}")
        self.kind, self.name, self.where = kind, name, where


class RecordDecodeError(ValueError):
    """Bytes that are not a well-formed record (or record set) of this format; decoding changed nothing."""


@dataclass(frozen=True, slots=True)
class Record:
    """One object's replicated state. ``body`` is the object as JSON-like data (treat it as read-only);
    ``None`` with ``deleted_at_ms`` set is a tombstone."""

    kind: Kind
    name: str
    version: Version
    body: dict[str, Any] | None
    deleted_at_ms: int | None = None

    @property
    def key(self) -> Key:
        return (self.kind, self.name)

    @property
    def tombstone(self) -> bool:
        return self.body is None


Listener = Callable[[Record], None]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A version that lost to a concurrent one (see the module docstring): what lost, who wrote it,
    what won, and when this node saw both. ``type`` is ``concurrent_write`` (an edit lost to an edit),
    ``resurrected`` (an edit or create won over a delete), ``deleted_edit`` (a delete won over an edit)
    or ``restamped`` (a stored version far in the future, re-stamped at start: see
    ``ObjectStore._repair_ahead``)."""

    kind: Kind
    name: str
    type: str
    lost: Version
    lost_deleted: bool
    won: Version
    detected_ms: int

    def problem(self) -> Problem:
        lost = "delete" if self.lost_deleted else "version"
        if self.type == "restamped":
            return Problem(
                (),
                f"re-stamped on start: the {lost} written by {self.lost.origin} was stored at HLC "
                f"{self.lost.ts.wall_ms}.{self.lost.ts.counter}, far ahead of the clock; its content is "
                f"kept at {self.won.ts.wall_ms}.{self.won.ts.counter} (detected at {self.detected_ms} ms)",
            )
        return Problem(
            (),
            f"conflict ({self.type}): the {lost} written by {self.lost.origin} at HLC "
            f"{self.lost.ts.wall_ms}.{self.lost.ts.counter} lost to {self.won.origin}'s at "
            f"{self.won.ts.wall_ms}.{self.won.ts.counter} "
            f"(last writer wins; detected at {self.detected_ms} ms)",
        )


def conflict_between(
    kind: Kind, name: str, winner: Record, loser: Record, window_ms: int, wall_ms: int
) -> Conflict | None:
    """The conflict the rule in the module docstring finds between two versions of one key, if any."""
    if winner.version.origin == loser.version.origin or (winner.tombstone and loser.tombstone):
        return None
    if abs(winner.version.ts.wall_ms - loser.version.ts.wall_ms) >= window_ms:
        return None
    if loser.tombstone:
        kind_of = "resurrected"
    elif winner.tombstone:
        kind_of = "deleted_edit"
    else:
        kind_of = "concurrent_write"
    return Conflict(kind, name, kind_of, loser.version, loser.tombstone, winner.version, wall_ms)


class RecentSet(Generic[T]):
    """Things seen lately, bounded in number and in time (wall ms passed in): the oldest is forgotten
    when full, and each is forgotten ``ttl_ms`` after it was added, so a memory of refusals can
    neither grow without bound nor refuse forever what might be accepted later."""

    def __init__(self, size: int = REFUSAL_MEMORY, ttl_ms: int = REFUSAL_MEMORY_MS) -> None:
        self.size, self.ttl_ms = size, ttl_ms
        self._until: dict[T, int] = {}  # insertion order: oldest first

    def __len__(self) -> int:
        return len(self._until)

    def add(self, item: T, wall_ms: int) -> None:
        self._until.pop(item, None)
        self._until[item] = wall_ms + self.ttl_ms
        while self._until:
            oldest, until = next(iter(self._until.items()))
            if len(self._until) <= self.size and until > wall_ms:
                break
            del self._until[oldest]

    def seen(self, item: T, wall_ms: int) -> bool:
        until = self._until.get(item)
        if until is None:
            return False
        if until <= wall_ms:
            del self._until[item]
            return False
        return True


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch: objects merge recursively, ``null`` removes (back to the default),
    anything else replaces."""
    if not isinstance(patch, Mapping):
        return patch
    out = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class ObjectStore:
    """All cluster objects as this node knows them. ``known_machines`` returns the current and past
    gossip members; it is called on each validation, so it always reflects gossip now."""

    def __init__(
        self,
        node: str,
        known_machines: Callable[[], AbstractSet[str]],
        records: Iterable[Record] = (),
        *,
        conflict_window_ms: int = DEFAULT_CONFLICT_WINDOW_MS,
        max_ahead_ms: int = MAX_AHEAD_MS,
        wall_ms: int | None = None,
    ) -> None:
        """``records`` are those kept on disk; with ``wall_ms`` (now), those of them stamped more than
        ``max_ahead_ms`` ahead of it are repaired on the way in (:meth:`_repair_ahead`)."""
        self.node = node
        self.max_ahead_ms = max_ahead_ms
        self.refused_ahead = 0  # replicated records refused for a timestamp too far in the future
        self._refused: RecentSet[tuple[Key, Version]] = RecentSet()  # each counted once while remembered
        self._ahead_logged: set[str] = set()
        self._known = known_machines
        self._conflict_window_ms = conflict_window_ms
        self._conflicts: dict[Key, builtins.list[Conflict]] = {}
        self._conflict_listeners: list[Callable[[Conflict], None]] = []
        self.conflict_counts: dict[tuple[str, str], int] = {}  # (object kind, conflict type) -> total
        self._records: dict[Key, Record] = {}
        self._live: dict[Key, ClusterObject] = {}
        self._unparsable: dict[Key, list[Problem]] = {}
        self._listeners: list[Listener] = []
        # Records loaded stamped too far ahead of ``wall_ms``, re-stamped here (see _repair_ahead); the
        # replicator saves and spreads them like local writes.
        self.repaired: builtins.list[Record] = []
        newest: dict[Key, Record] = {}
        for record in records:
            current = newest.get(record.key)
            if current is None or record.version > current.version:
                newest[record.key] = record
        now = wall_ms
        ahead = [
            r for r in newest.values() if now is not None and too_far_ahead(r.version.ts, now, max_ahead_ms)
        ]
        ahead_keys = {r.key for r in ahead}
        latest = Timestamp(0, 0)
        for record in newest.values():
            if record.key not in ahead_keys:
                self._install(record)
                latest = max(latest, record.version.ts)
        # After a restart with the wall clock set back, new writes must still supersede the stored ones.
        self.clock = HybridClock(node, latest)
        if now is not None:
            for record in sorted(ahead, key=lambda r: r.key):
                self._repair_ahead(record, now)

    # ---- reads -------------------------------------------------------------------------------------

    def get(self, kind: Kind, name: str) -> ClusterObject:
        """The live object; the mesh settings and a known machine's settings exist implicitly (defaults)."""
        obj = self._current(kind, name)
        if obj is None:
            raise NotFound(kind, name)
        return obj

    def get_record(self, kind: Kind, name: str) -> Record | None:
        """The stored record (a tombstone too), e.g. for its version; ``None`` if there is none."""
        return self._records.get((kind, name))

    def list(self, kind: Kind) -> builtins.list[ClusterObject]:
        """Live objects of ``kind`` by name, with the implicit defaults :meth:`get` would return."""
        found = {name: obj for (k, name), obj in self._live.items() if k is kind}
        if kind is Kind.MESH:
            found.setdefault(MESH_KEY, MeshSettings())
        elif kind is Kind.MACHINE:
            for machine in self._known():
                default = self._default_machine(machine)
                if default is not None:
                    found.setdefault(machine, default)
        return [found[name] for name in sorted(found)]

    def records(self) -> builtins.list[Record]:
        """Every record, tombstones included, in ``(kind, name)`` order."""
        return [self._records[key] for key in sorted(self._records)]

    def view(self) -> View:
        """What :func:`agent.cluster.objects.validate` checks against: the stored live objects and gossip's
        machines (implicit defaults are not in it: they reference nothing)."""
        objects: dict[Kind, dict[str, ClusterObject]] = {}
        for (kind, name), obj in self._live.items():
            objects.setdefault(kind, {})[name] = obj
        return View(objects, frozenset(self._known()))

    def problems(self) -> dict[Key, builtins.list[Problem]]:
        """Stored objects that would not be accepted as local writes now, and why: replicated records that
        reference what this node does not know, or whose body this agent cannot read."""
        out: dict[Key, list[Problem]] = {key: list(p) for key, p in self._unparsable.items()}
        view = self.view()
        for (kind, name), obj in self._live.items():
            found = validate(kind, obj, view)
            if found:
                out[(kind, name)] = found
        for key, conflicts in self._conflicts.items():
            if key in self._records and not self._records[key].tombstone:
                out.setdefault(key, []).extend(c.problem() for c in conflicts)
        return dict(sorted(out.items()))

    def conflicts(self, kind: Kind, name: str) -> builtins.list[Conflict]:
        """The conflicts recorded for one object, oldest first."""
        return builtins.list(self._conflicts.get((kind, name), ()))

    def problems_of(self, kind: Kind, name: str) -> builtins.list[Problem]:
        """:meth:`problems` for one object: what a single-object read shows, without validating every
        object in the store (which would make each write cost as much as the whole store)."""
        key = (kind, name)
        conflicts = [c.problem() for c in self._conflicts.get(key, ())]
        if key in self._unparsable:
            return [*self._unparsable[key], *conflicts]
        obj = self._live.get(key)
        return [] if obj is None else [*validate(kind, obj, self.view()), *conflicts]

    # ---- local writes ------------------------------------------------------------------------------

    def create(self, kind: Kind, obj: ClusterObject | Mapping[str, Any], wall_ms: int) -> Record:
        new = self._coerce(kind, obj)
        name = key_of(new)
        if (kind, name) in self._live:
            raise AlreadyExists(kind, name)
        self._check(validate(kind, new, self.view(), creating=True))
        return self._write(kind, name, new, wall_ms)

    def replace(self, kind: Kind, name: str, obj: ClusterObject | Mapping[str, Any], wall_ms: int) -> Record:
        if self._current(kind, name) is None:
            raise NotFound(kind, name)
        new = self._coerce(kind, obj)
        if key_of(new) != name:
            raise Invalid([Problem(("name",), f"cannot rename {name!r} to {key_of(new)!r}")])
        self._check(validate(kind, new, self.view(), previous=self._live.get((kind, name))))
        return self._write(kind, name, new, wall_ms)

    def patch(self, kind: Kind, name: str, changes: Mapping[str, Any], wall_ms: int) -> Record:
        """Merge ``changes`` into the current object (RFC 7396), then validate the result in full."""
        current = self._current(kind, name)
        if current is None:
            raise NotFound(kind, name)
        if not isinstance(changes, Mapping):
            raise Invalid([Problem((), "a patch is an object of fields to change")])
        merged = merge_patch(current.model_dump(mode="json"), changes)
        if kind is not Kind.MESH:
            merged.setdefault("name", name)
        return self.replace(kind, name, merged, wall_ms)

    def delete(self, kind: Kind, name: str, wall_ms: int) -> Record:
        """Store a tombstone. Deleting the mesh or a machine's settings resets them to the defaults."""
        if (kind, name) not in self._live:
            raise NotFound(kind, name)
        view = self.view()
        where = validate_delete(kind, name, view)
        if where:
            raise InUse(kind, name, where)
        if kind is Kind.MESH:
            self._check(validate(kind, MeshSettings(), view))
        record = Record(kind, name, self.clock.version(wall_ms), None, wall_ms)
        self._apply(record)
        return record

    # ---- replication -------------------------------------------------------------------------------

    def merge(self, record: Record, wall_ms: int) -> bool:
        """Take in a replicated record; True if it was newer than ours and is now stored.

        A record stamped more than ``max_ahead_ms`` past ``wall_ms`` is refused (False: not stored, so
        not passed on) and the clock does not move: it would otherwise win over every honest edit until
        the wall clock caught up with it. It is counted in ``refused_ahead`` once while remembered
        (:class:`RecentSet`: peers repeat it on every push-pull), and logged once per origin.
        """
        if too_far_ahead(record.version.ts, wall_ms, self.max_ahead_ms):
            if not self.refused(record, wall_ms):
                self._refused.add((record.key, record.version), wall_ms)
                self._refuse_ahead(record, wall_ms)
            return False
        self.clock.observe(record.version.ts, wall_ms)
        current = self._records.get(record.key)
        if current is not None and record.version == current.version:
            return False
        if current is not None:
            winner, loser = (current, record) if record.version < current.version else (record, current)
            found = conflict_between(
                record.kind, record.name, winner, loser, self._conflict_window_ms, wall_ms
            )
            if found is not None:
                self._record_conflict(found)
        if current is not None and record.version < current.version:
            return False
        self._apply(record)
        return True

    def refused(self, record: Record, wall_ms: int) -> bool:
        """Whether this version of the record was refused lately as too far ahead."""
        return self._refused.seen((record.key, record.version), wall_ms)

    def on_conflict(self, listener: Callable[[Conflict], None]) -> None:
        """Call ``listener`` once for every newly recorded conflict (to log and count it)."""
        self._conflict_listeners.append(listener)

    def _record_conflict(self, conflict: Conflict) -> None:
        key = (conflict.kind, conflict.name)
        kept = self._conflicts.get(key, [])
        if any(c.lost == conflict.lost for c in kept):
            return  # the same losing version again (gossip and push-pull repeat themselves)
        self._conflicts.pop(
            key, None
        )  # re-inserted last: the dict's order is least recently conflicted first
        self._conflicts[key] = [*kept, conflict][-CONFLICTS_PER_OBJECT:]
        while len(self._conflicts) > MAX_CONFLICT_OBJECTS:
            del self._conflicts[next(iter(self._conflicts))]
        counted = (conflict.kind.value, conflict.type)
        self.conflict_counts[counted] = self.conflict_counts.get(counted, 0) + 1
        for listener in builtins.list(self._conflict_listeners):
            listener(conflict)

    def merge_all(self, data: bytes, wall_ms: int) -> builtins.list[Record]:
        """Merge a push-pull payload from :meth:`encode_all`; returns the records that were newer. A bad
        payload raises :class:`RecordDecodeError` before anything is merged."""
        return [record for record in decode_all(data) if self.merge(record, wall_ms)]

    def encode_all(self) -> bytes:
        return encode_all(self.records())

    def digest(self) -> bytes:
        """A 32-byte hash of every record's version: equal digests mean equal stores, so a push-pull can
        skip the full exchange."""
        versions = [
            [r.kind.value, r.name, r.version.ts.wall_ms, r.version.ts.counter, r.version.origin]
            for r in self.records()
        ]
        return hashlib.sha256(msgpack.packb(versions, use_bin_type=True)).digest()

    def expire_tombstones(self, wall_ms: int, keep_ms: int) -> builtins.list[Record]:
        """Forget tombstones deleted at least ``keep_ms`` ago; returns them (to remove from disk)."""
        gone = [
            r
            for r in self._records.values()
            if r.deleted_at_ms is not None and r.deleted_at_ms + keep_ms <= wall_ms
        ]
        for record in gone:
            del self._records[record.key]
        return gone

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every record that changes the store (local writes and merges that won),
        after the change; returns a function that unsubscribes."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    # ---- internals ---------------------------------------------------------------------------------

    def _repair_ahead(self, record: Record, wall_ms: int) -> None:
        """Re-stamp a stored record from before far-future timestamps were refused, at ``wall_ms``.

        Such a record (a forged or broken clock's, taken in by an older agent) would drag this node's
        clock along on every start and make every later edit of any object carry a timestamp the other
        nodes now refuse: edits made here would stop replicating. Why re-stamp rather than quarantine:
        the record's content is what the cluster has been running with (a VIP announced, a route in
        the RIB); taking it out of the store would silently withdraw it, and nothing stored may be
        lost. Re-stamped at now with its content and its origin kept, it stays what every replica
        shows, and any later honest edit beats it. Every node that kept it repairs it the same way, so
        the replicas agree again by last-writer-wins (their re-stamps differ only in time, from the one
        origin, so they are no conflict among themselves). The old version is recorded as a
        ``restamped`` conflict (the object's problems, the log, ``wiremesh_object_conflicts_total``),
        so an operator can see that the object's time, not its content, was changed.
        """
        deleted_at = None if record.deleted_at_ms is None else min(record.deleted_at_ms, wall_ms)
        version = Version(self.clock.now(wall_ms), record.version.origin)
        fixed = Record(record.kind, record.name, version, record.body, deleted_at)
        self._install(fixed)
        self.repaired.append(fixed)
        log.warning(
            "%s %r was stored stamped %.0f s ahead of this clock (more than %.0f s); re-stamped at now",
            record.kind.value,
            record.name,
            (record.version.ts.wall_ms - wall_ms) / 1000,
            self.max_ahead_ms / 1000,
        )
        old = record.version
        self._record_conflict(
            Conflict(record.kind, record.name, "restamped", old, record.tombstone, version, wall_ms)
        )

    def _refuse_ahead(self, record: Record, wall_ms: int) -> None:
        self.refused_ahead += 1
        origin = record.version.origin
        if origin in self._ahead_logged or len(self._ahead_logged) >= MAX_LOGGED_ORIGINS:
            return
        self._ahead_logged.add(origin)
        log.warning(
            "refused %s %r from %r: its timestamp is %.0f s ahead of this clock (at most %.0f s); "
            "further such records from %r are refused without a log line",
            record.kind.value,
            record.name,
            origin,
            (record.version.ts.wall_ms - wall_ms) / 1000,
            self.max_ahead_ms / 1000,
            origin,
        )

    def _current(self, kind: Kind, name: str) -> ClusterObject | None:
        obj = self._live.get((kind, name))
        if obj is not None:
            return obj
        if kind is Kind.MESH and name == MESH_KEY:
            return MeshSettings()
        if kind is Kind.MACHINE and name in self._known():
            return self._default_machine(name)
        return None

    def _default_machine(self, name: str) -> MachineSettings | None:
        """A known machine's implicit settings, unless it has a stored record this agent cannot read (or a
        name the settings cannot hold)."""
        if (Kind.MACHINE, name) in self._unparsable:
            return None
        try:
            return MachineSettings(name=name)
        except ValidationError:
            return None

    @staticmethod
    def _coerce(kind: Kind, obj: ClusterObject | Mapping[str, Any]) -> ClusterObject:
        model = MODELS[kind]
        if isinstance(obj, BaseModel):
            if type(obj) is not model:
                raise Invalid([Problem((), f"expected a {kind.value}, got {type(obj).__name__}")])
            return obj
        if not isinstance(obj, Mapping):
            raise Invalid([Problem((), f"a {kind.value} is an object")])
        try:
            return parse(kind, obj)
        except ValidationError as err:
            raise Invalid(problems_from_error(err)) from None

    @staticmethod
    def _check(problems: builtins.list[Problem]) -> None:
        if problems:
            raise Invalid(problems)

    def _write(self, kind: Kind, name: str, obj: ClusterObject, wall_ms: int) -> Record:
        record = Record(kind, name, self.clock.version(wall_ms), obj.model_dump(mode="json"))
        self._apply(record, obj)
        return record

    def _install(self, record: Record, parsed: ClusterObject | None = None) -> None:
        key = record.key
        self._records[key] = record
        self._live.pop(key, None)
        self._unparsable.pop(key, None)
        if record.body is None:
            return
        if parsed is None:
            try:
                parsed = parse(record.kind, record.body)
            except ValidationError as err:
                self._unparsable[key] = problems_from_error(err)
                return
        self._live[key] = parsed

    def _apply(self, record: Record, parsed: ClusterObject | None = None) -> None:
        self._install(record, parsed)
        for listener in builtins.list(self._listeners):
            listener(record)


# ---- wire format -------------------------------------------------------------------------------------
# A record is a msgpack array [format, kind, name, wall_ms, counter, origin, body, deleted_at_ms]; a record
# set is [format, [record, ...]]. Decoding is strict: anything else raises RecordDecodeError and only that.


def _to_wire(record: Record) -> list[Any]:
    ts = record.version.ts
    return [
        FORMAT_VERSION,
        record.kind.value,
        record.name,
        ts.wall_ms,
        ts.counter,
        record.version.origin,
        record.body,
        record.deleted_at_ms,
    ]


def encode_record(record: Record) -> bytes:
    return bytes(msgpack.packb(_to_wire(record), use_bin_type=True))


def encode_all(records: Iterable[Record]) -> bytes:
    return bytes(msgpack.packb([FORMAT_VERSION, [_to_wire(r) for r in records]], use_bin_type=True))


def _unpack(data: bytes) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RecordDecodeError(f"expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(bytes(data), raw=False, strict_map_key=True, use_list=True)
    except Exception as err:  # msgpack raises several unrelated types for malformed input
        raise RecordDecodeError(f"not msgpack: {type(err).__name__}: {err}") from None


def _is_int(value: Any, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _check_json(value: Any, depth: int = 0) -> None:
    if depth > MAX_BODY_DEPTH:
        raise RecordDecodeError("body nested too deeply")
    if value is None or type(value) in (bool, int, str):
        return
    if type(value) is float:
        if not math.isfinite(value):  # not JSON, and NaN != NaN would make equal replicas compare unequal
            raise RecordDecodeError("body holds a non-finite number")
        return
    if type(value) is list:
        for item in value:
            _check_json(item, depth + 1)
        return
    if type(value) is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise RecordDecodeError("body keys must be strings")
            _check_json(item, depth + 1)
        return
    raise RecordDecodeError(f"body holds a {type(value).__name__}")


def _from_wire(item: Any) -> Record:
    if type(item) is not list or len(item) != 8:
        raise RecordDecodeError("a record is an array of 8 fields")
    fmt, kind, name, wall_ms, counter, origin, body, deleted_at_ms = item
    if fmt != FORMAT_VERSION or type(fmt) is not int:
        raise RecordDecodeError(f"unknown record format {fmt!r}")
    if type(kind) is not str or kind not in Kind._value2member_map_:
        raise RecordDecodeError(f"unknown kind {kind!r}")
    if type(name) is not str or not 1 <= len(name) <= MAX_NAME:
        raise RecordDecodeError("bad name")
    if Kind(kind) is Kind.MESH and name != MESH_KEY:
        raise RecordDecodeError(f"the mesh settings are keyed {MESH_KEY!r}")
    if not _is_int(wall_ms, 0, MAX_WALL_MS) or not _is_int(counter, 0, MAX_COUNTER):
        raise RecordDecodeError("bad timestamp")
    if type(origin) is not str or not 1 <= len(origin) <= MAX_NAME:
        raise RecordDecodeError("bad origin")
    if body is None:
        if not _is_int(deleted_at_ms, 0, MAX_WALL_MS):
            raise RecordDecodeError("a tombstone needs deleted_at_ms")
    else:
        if type(body) is not dict:
            raise RecordDecodeError("body must be a map or nil")
        if deleted_at_ms is not None:
            raise RecordDecodeError("a live record has no deleted_at_ms")
        _check_json(body)
    return Record(Kind(kind), name, Version(Timestamp(wall_ms, counter), origin), body, deleted_at_ms)


def decode_record(data: bytes) -> Record:
    return _from_wire(_unpack(data))


def decode_all(data: bytes) -> list[Record]:
    obj = _unpack(data)
    if type(obj) is not list or len(obj) != 2 or obj[0] != FORMAT_VERSION or type(obj[1]) is not list:
        raise RecordDecodeError("a record set is [format, [records]]")
    return [_from_wire(item) for item in obj[1]]
