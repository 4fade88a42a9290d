"""The machine's WireGuard identity: an X25519 key pair, kept in the state directory.

The private key is generated on first start and written as one base64 line (the format of
``wg genkey``) to ``<state_dir>/wireguard.key`` with mode 0600. A key file readable by group or others,
or with anything but a 32-byte base64 key in it, is refused with an error that names the file and the
fix but never quotes its content. :class:`PrivateKey` has no repr or str that shows the key; the only
way to the bytes is :meth:`PrivateKey.reveal`, so every use can be found with grep.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

KEY_FILE = "wireguard.key"
KEY_LEN = 32


class KeyFileError(Exception):
    """The key file exists but cannot be used as it is (wrong mode, type or content)."""


def clamp(raw: bytes) -> bytes:
    """Curve25519 clamping, as ``wg genkey`` and wireguard-go apply it.

    X25519 clamps internally, so a clamped and an unclamped key are the same key; storing the clamped
    form makes our copy byte-equal to what wireguard-go reports back, which the reconcile compares."""
    if len(raw) != KEY_LEN:
        raise ValueError(f"a WireGuard key is {KEY_LEN} bytes (got {len(raw)})")
    b = bytearray(raw)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


@dataclass(frozen=True, slots=True, order=True)
class PublicKey:
    """A peer's public key; printed as base64 (as ``wg`` shows it), sent to wireguard-go as hex."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != KEY_LEN:
            raise ValueError(f"a WireGuard public key is {KEY_LEN} bytes (got {len(self.raw)})")

    @classmethod
    def from_b64(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.strip(), validate=True)
        except binascii.Error as exc:
            raise ValueError("not a base64 WireGuard public key") from exc
        return cls(raw)

    @classmethod
    def from_hex(cls, text: str) -> PublicKey:
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            raise ValueError("not a hex WireGuard public key") from exc

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode()

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.b64

    def __repr__(self) -> str:
        return f"PublicKey({self.b64})"


class PrivateKey:
    """An X25519 private key whose bytes never reach a log line, a repr or an exception message."""

    __slots__ = ("_public", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._raw = clamp(raw)
        pub = X25519PrivateKey.from_private_bytes(self._raw).public_key().public_bytes_raw()
        self._public = PublicKey(pub)

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(X25519PrivateKey.generate().private_bytes_raw())

    @property
    def public_key(self) -> PublicKey:
        return self._public

    def reveal(self) -> bytes:
        """The raw (clamped) key: for the key file and the device configuration only."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PrivateKey):
            return NotImplemented
        return hmac.compare_digest(self._raw, other._raw)

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"PrivateKey(<redacted>, public={self._public.b64})"

    __str__ = __repr__


def _check_mode(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"{path}: not a regular file; remove it and a new key is generated")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"{path}: mode {mode:04o} lets others read the private key; it must be 0600 "
            f"(chmod 600 {path}, and replace the key if others may have read it)"
        )


def load_key(path: Path) -> PrivateKey:
    """Read a key file written by :func:`load_or_create_key` or ``wg genkey``, checking mode first."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyFileError(f"{path}: is a symbolic link; the key must be a regular file") from None
        raise
    try:
        _check_mode(path, os.fstat(fd))
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(4 * KEY_LEN + 8)  # a well-formed file is 45 bytes: never read an unbounded one
    finally:
        os.close(fd)
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_LEN:
        raise KeyFileError(
            f"{path}: not a WireGuard private key (expected one line of base64 encoding {KEY_LEN} bytes, "
            "as `wg genkey` writes); fix or remove the file"
        )
    return PrivateKey(raw)


def _write_new(path: Path, key: PrivateKey) -> None:
    """Write to a private temporary file, then link it into place: a concurrent first start by another
    process cannot leave a half-written file, and the first writer's key wins (``link`` never replaces)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the umask may have removed bits, never added: make the mode exact
        os.write(fd, base64.b64encode(key.reveal()) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    finally:
        tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_or_create_key(state_dir: Path) -> PrivateKey:
    """The machine's key: loaded from ``state_dir/wireguard.key``, or generated there on first start."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state_dir / KEY_FILE
    try:
        return load_key(path)
    except FileNotFoundError:
        pass
    with contextlib.suppress(FileExistsError):  # another process created it meanwhile: use theirs
        _write_new(path, PrivateKey.generate())
    return load_key(path)


__all__ = [
    "KEY_FILE",
    "KEY_LEN",
    "KeyFileError",
    "PrivateKey",
    "PublicKey",
    "clamp",
    "load_key",
    "load_or_create_key",
]
