"""AES-256-GCM keyring and the seal/open step every datagram and stream frame goes through.

One primary key encrypts; every key in the ring is tried to decrypt, so keys rotate with no downtime:
add the new key everywhere, make it primary everywhere, then remove the old one. The cluster name is
the associated data, so two clusters sharing a key still cannot talk to each other.

A running ring changes by :meth:`Keyring.planned` (the keys an operation would leave, or why it is
refused) followed by :meth:`Keyring.replace`, which swaps keys and ciphers as one tuple: a datagram
sealed or opened meanwhile sees the old ring or the new one, never a mix. Splitting the two lets the
application make the new list durable before the ring changes (:mod:`gossip.keyquery`). Keys are
named outside the process only by :func:`fingerprint`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gossip.wire import KEY_OPS, KEY_SIZE, DecodeError

NONCE_SIZE = 12
TAG_SIZE = 16
ENCRYPTED_MARK = 0x80
PLAIN_MARK = 0x00
SEAL_OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE
# Every inbound datagram may be tried against every key, so the ring an operator can grow is bounded.
MAX_KEYS = 16
FINGERPRINT_LEN = 12

__all__ = [
    "KEY_OPS",
    "KEY_SIZE",
    "MAX_KEYS",
    "AuthError",
    "Keyring",
    "KeyringError",
    "Sealer",
    "fingerprint",
    "generate_key",
    "parse_key",
]


class KeyringError(ValueError):
    """A key or key file that cannot be used."""


class AuthError(DecodeError):
    """A sealed blob that no key in the ring opens (or plaintext where encryption is required)."""


def generate_key() -> str:
    """A fresh key, base64, as ``wiremesh keygen`` prints it."""
    return base64.b64encode(os.urandom(KEY_SIZE)).decode()


def fingerprint(key: bytes) -> str:
    """How a key is named in answers, logs and the CLI: the first hex digits of its SHA-256, so an
    operator can check one with ``base64 -d | sha256sum`` and nothing reveals the key itself."""
    return hashlib.sha256(key).hexdigest()[:FINGERPRINT_LEN]


def parse_key(text: str, where: str = "key") -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where}: not valid base64") from None
    if len(raw) != KEY_SIZE:
        raise KeyringError(f"{where}: expected {KEY_SIZE} bytes (AES-256), got {len(raw)}")
    return raw


class Keyring:
    """Keys in order; the first is the primary used for sending."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._ring = self._build(keys)

    @staticmethod
    def _build(keys: Sequence[bytes]) -> tuple[tuple[bytes, ...], tuple[AESGCM, ...]]:
        if not keys:
            raise KeyringError("a keyring needs at least one key")
        for k in keys:
            if len(k) != KEY_SIZE:
                raise KeyringError(f"every key must be {KEY_SIZE} bytes")
        unique = tuple(dict.fromkeys(keys))
        return unique, tuple(AESGCM(k) for k in unique)

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """One base64 key per line; blank lines and ``#`` comments ignored; the first key is primary."""
        try:
            text = path.read_text()
        except OSError as exc:
            raise KeyringError(f"{path}: cannot read keyring ({exc.strerror})") from None
        keys = []
        for lineno, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(parse_key(line, f"{path}:{lineno}"))
        if not keys:
            raise KeyringError(f"{path}: no keys in keyring file")
        return cls(keys)

    @property
    def primary(self) -> bytes:
        return self._ring[0][0]

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every key, the primary first."""
        return self._ring[0]

    def fingerprints(self) -> tuple[str, ...]:
        return tuple(fingerprint(k) for k in self._ring[0])

    def __len__(self) -> int:
        return len(self._ring[0])

    def refusal(self, op: str, key: bytes) -> str | None:
        """Why this ring would refuse ``op`` with ``key`` (:meth:`planned`'s error), or None: the check a
        key step passes on every member before any member changes its ring."""
        try:
            self.planned(op, key)
        except KeyringError as exc:
            return str(exc)
        return None

    def planned(self, op: str, key: bytes) -> tuple[bytes, ...]:
        """The keys ``op`` would leave (primary first), or :class:`KeyringError` saying why not.

        ``install`` adds a key at the end (already there: unchanged); ``use`` makes an installed key
        the primary; ``remove`` drops a key, but never the primary, and a key that is not there is
        already removed (unchanged), so every step of a rotation can simply be retried."""
        keys = self._ring[0]
        if op == "list":
            return keys
        if op not in KEY_OPS:
            raise KeyringError(f"unknown key operation {op!r}; expected one of {', '.join(KEY_OPS)}")
        if len(key) != KEY_SIZE:
            raise KeyringError(f"expected a {KEY_SIZE}-byte key, got {len(key)} bytes")
        name = fingerprint(key)
        if op == "install":
            if key in keys:
                return keys
            if len(keys) >= MAX_KEYS:
                raise KeyringError(f"the keyring already holds {MAX_KEYS} keys; remove one first")
            return (*keys, key)
        if op == "use":
            if key not in keys:
                raise KeyringError(f"key {name} is not installed; install it first")
            return (key, *(k for k in keys if k != key))
        if key == keys[0]:
            raise KeyringError(f"key {name} is the primary key; use another key first")
        return tuple(k for k in keys if k != key)

    def replace(self, keys: Sequence[bytes]) -> None:
        """Swap in ``keys`` (primary first) at once: encrypt and decrypt see the old ring or the new."""
        self._ring = self._build(keys)

    def encrypt(self, plaintext: bytes, aad: bytes, nonce: bytes) -> bytes:
        return nonce + self._ring[1][0].encrypt(nonce, plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        if len(blob) < NONCE_SIZE + TAG_SIZE:
            raise AuthError("sealed blob too short")
        nonce, body = blob[:NONCE_SIZE], blob[NONCE_SIZE:]
        for cipher in self._ring[1]:
            try:
                return cipher.decrypt(nonce, body, aad)
            except InvalidTag:
                continue
        raise AuthError("no key in the keyring authenticates this message")


class Sealer:
    """Wraps wire bytes for the network: AES-GCM with the keyring, or a plaintext mark when insecure."""

    def __init__(
        self,
        keyring: Keyring | None,
        cluster: str,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.keyring = keyring
        self._aad = cluster.encode()
        self._nonce = nonce_source

    @property
    def overhead(self) -> int:
        return SEAL_OVERHEAD if self.keyring else 1

    def seal(self, data: bytes) -> bytes:
        if self.keyring is None:
            return bytes([PLAIN_MARK]) + data
        return bytes([ENCRYPTED_MARK]) + self.keyring.encrypt(data, self._aad, self._nonce(NONCE_SIZE))

    def open(self, blob: bytes) -> bytes:
        """The wire bytes inside ``blob``; :class:`AuthError` when it is not ours."""
        if not blob:
            raise AuthError("empty")
        mark = blob[0]
        if self.keyring is None:
            if mark != PLAIN_MARK:
                raise AuthError("encrypted message but this node has no keyring")
            return blob[1:]
        if mark != ENCRYPTED_MARK:
            raise AuthError("plaintext message refused: this cluster requires encryption")
        return self.keyring.decrypt(blob[1:], self._aad)
