"""Writing a small file so that a crash leaves the old content or the new, never a torn mix."""

from __future__ import annotations

import os
from pathlib import Path


def write_file_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write a temporary file (mode 0600) beside ``path``, fsync it, rename it over ``path`` and fsync
    the directory: after a crash the file is the old one or the new one, never a torn mix.
    ``durable=False`` skips both fsyncs, for files rewritten from memory at every start (a child's
    rendered config): readers still never see a torn file, and the event loop waits on no disk."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # O_CREAT's mode does not apply to a leftover temporary file
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


__all__ = ["write_file_atomically"]
