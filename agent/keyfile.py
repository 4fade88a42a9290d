"""The keyring file as a key store: a keyring change is made durable before the running ring changes.

``wiremesh keys install|use|remove`` reaches every member as a key query (:mod:`gossip.keyquery`);
on each, :class:`KeyFileStore` computes the keys the operation leaves, rewrites ``keyring_file`` with
them (primary first, atomically: a temporary file in the same directory, mode 0600, fsync, rename,
fsync of the directory) and only then swaps them into the ring. A write that fails therefore leaves
both the file and the ring as they were, and the member answers with the error; a crash between the
two leaves the file ahead, which is what the next start reads. A symlinked keyring file is followed,
so the file it points at is the one rewritten. The file is rewritten whole: comments are not kept.

Keys appear only in the file; answers and log lines name them by fingerprint.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from common.files import write_file_atomically
from gossip import INSECURE, KeyAnswer, Keyring, KeyringError

log = logging.getLogger("wiremesh.agent")

HEADER = "# wiremesh keyring: one base64 key per line, the first is primary; `wiremesh keys` rewrites it\n"


def render_keyring(keys: Sequence[bytes]) -> bytes:
    """The file's bytes for ``keys``, primary first (what :meth:`gossip.Keyring.from_file` reads)."""
    return (HEADER + "".join(base64.b64encode(k).decode() + "\n" for k in keys)).encode()


def write_keyring(path: Path, keys: Sequence[bytes]) -> None:
    write_file_atomically(path.resolve(), render_keyring(keys))


class KeyFileStore:
    """This member's ring and the file it was read from (see the module docstring)."""

    def __init__(
        self,
        keyring: Keyring | None,
        path: Path | None,
        *,
        write: Callable[[Path, Sequence[bytes]], None] = write_keyring,
    ) -> None:
        """``write`` is how the file is written (tests pass one that fails); it runs in a worker thread."""
        self.keyring = keyring
        self.path = path
        self._write = write
        self._lock = trio.Lock()  # one change at a time: each is planned from the ring the last one left

    def check(self, op: str, key: bytes) -> str | None:
        if self.keyring is None or self.path is None:
            return INSECURE
        return self.keyring.refusal(op, key)

    async def apply(self, op: str, key: bytes) -> KeyAnswer:
        ring, path = self.keyring, self.path
        if ring is None or path is None:
            return KeyAnswer(INSECURE, ())
        async with self._lock:
            try:
                keys = ring.planned(op, key)
            except KeyringError as exc:
                return KeyAnswer(str(exc), ring.fingerprints())
            if keys != ring.keys:
                try:
                    await trio.to_thread.run_sync(self._write, path, keys)
                except OSError as exc:
                    log.error("cannot rewrite the keyring file %s: %s; the keyring is unchanged", path, exc)
                    why = f"cannot write the keyring file {path}: {exc.strerror or exc}; nothing changed"
                    return KeyAnswer(why, ring.fingerprints())
                ring.replace(keys)
            return KeyAnswer(None, ring.fingerprints())


__all__ = ["HEADER", "KeyFileStore", "render_keyring", "write_keyring"]
