"""Cluster objects on disk: one SQLite database in WAL mode, one row per record.

Why SQLite in WAL mode: each write is a transaction that is either wholly in the database or not at all,
whatever moment the process dies (kill -9, OOM) — SQLite's journal makes that so; we never write a file
ourselves. ``synchronous=FULL`` additionally fsyncs the WAL at every commit, so a write the API has
acknowledged also survives a power cut or kernel crash, not only a process kill (``NORMAL`` keeps the
database uncorrupted too, but may lose the last commits on power loss). The price, one fsync per write,
does not matter here: writes are operator edits and gossip merges, and a burst of merges is saved with
:meth:`SqliteObjectStorage.save_many` in one transaction.

The file is identified by SQLite's ``application_id`` and carries a ``schema`` table with its version, so
opening a foreign or newer file fails with a clear message naming the path instead of misreading it.
Records are stored in the replication wire format (:func:`agent.cluster.store.encode_record`), so there is one
encoder and one strict decoder for both.

The file and its ``-wal`` and ``-shm`` companions hold every object (and their history until a
checkpoint), so they are made mode 0600: the database file is created empty with that mode before SQLite
opens it (SQLite gives the companions the database file's mode), and a file left more open by an older
agent is tightened before anything is written.

The connection is blocking; the agent calls it from a worker thread or accepts the (small) stall.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from agent.cluster.objects import Kind
from agent.cluster.store import Record, RecordDecodeError, decode_record, encode_record

APPLICATION_ID = 0x574D4F42  # "WMOB": wiremesh objects
SCHEMA_VERSION = 1

_SCHEMA = (
    "CREATE TABLE schema (version INTEGER NOT NULL)",
    "CREATE TABLE records (kind TEXT NOT NULL, name TEXT NOT NULL, record BLOB NOT NULL,"
    " PRIMARY KEY (kind, name)) WITHOUT ROWID",
)


class StorageError(Exception):
    """The object store on disk cannot be opened or read; the message names the file."""


FILE_MODE = 0o600
COMPANIONS = ("-wal", "-shm")


def _private_files(path: Path) -> None:
    """Create the database file 0600 if missing (SQLite accepts an empty file as a new database); tighten
    it and its companions if they exist with a looser mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    for each in (path, *(path.with_name(path.name + suffix) for suffix in COMPANIONS)):
        try:
            if each.stat().st_mode & 0o077:
                each.chmod(FILE_MODE)
        except FileNotFoundError:
            pass


class SqliteObjectStorage:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            _private_files(self.path)
        except OSError as err:
            raise StorageError(f"{self.path}: cannot open the object store: {err.strerror or err}") from None
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a transaction is exactly one call.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: cannot open the object store: {err}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as err:
            self._db.close()
            raise StorageError(f"{self.path}: not a usable wiremesh object store: {err}") from None
        except StorageError:
            self._db.close()
            raise

    def _open(self) -> None:
        db = self._db
        app_id = db.execute("PRAGMA application_id").fetchone()[0]
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if app_id == 0 and not tables:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")  # the schema and the id appear together or not at all
            for statement in _SCHEMA:
                db.execute(statement)
            db.execute("INSERT INTO schema (version) VALUES (?)", (SCHEMA_VERSION,))
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("COMMIT")
        elif app_id != APPLICATION_ID:
            raise StorageError(
                f"{self.path}: a SQLite database of another application (application_id {app_id:#x}), "
                "not a wiremesh object store"
            )
        version = db.execute("SELECT version FROM schema").fetchone()
        if version is None or version[0] != SCHEMA_VERSION:
            found = "none" if version is None else version[0]
            raise StorageError(
                f"{self.path}: object store schema version {found}; this wiremesh reads {SCHEMA_VERSION}"
            )
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StorageError(f"{self.path}: cannot use WAL mode (journal_mode is {mode})")
        db.execute("PRAGMA synchronous=FULL")
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StorageError(f"{self.path}: the object store is damaged: {check}")

    def load(self) -> list[Record]:
        """Every stored record; a row that does not decode is an error naming the file and the row."""
        out = []
        try:
            rows = self._db.execute("SELECT kind, name, record FROM records ORDER BY kind, name").fetchall()
        except sqlite3.DatabaseError as err:
            raise StorageError(f"{self.path}: cannot read the object store: {err}") from None
        for kind, name, blob in rows:
            try:
                record = decode_record(blob)
            except RecordDecodeError as err:
                raise StorageError(f"{self.path}: record {kind}/{name} is unreadable: {err}") from None
            if record.kind.value != kind or record.name != name:
                raise StorageError(f"{self.path}: record {kind}/{name} holds {record.kind}/{record.name}")
            out.append(record)
        return out

    def save(self, record: Record) -> None:
        """Insert or replace one record, durably, in one transaction."""
        self.save_many([record])

    def save_many(self, records: Iterable[Record]) -> None:
        """Insert or replace several records in one transaction: all of them or none."""
        rows = [(r.kind.value, r.name, encode_record(r)) for r in records]
        self._transaction("INSERT OR REPLACE INTO records (kind, name, record) VALUES (?, ?, ?)", rows)

    def delete_many(self, keys: Iterable[tuple[Kind, str]]) -> None:
        """Remove records, e.g. tombstones the store expired."""
        rows = [(kind.value, name) for kind, name in keys]
        self._transaction("DELETE FROM records WHERE kind = ? AND name = ?", rows)

    def _transaction(self, sql: str, rows: Sequence[tuple[str | bytes, ...]]) -> None:
        if not rows:
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(sql, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            raise StorageError(f"{self.path}: write failed: {err}") from None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteObjectStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
