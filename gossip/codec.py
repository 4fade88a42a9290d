"""One versioned msgpack codec for what a machine publishes over gossip (its key/values and metadata).

Why one: every published value needs the same three things, a version so formats can evolve in a
mixed-version cluster, a decoder that never trusts a peer, and a refusal that is logged without
flooding the log when the peer keeps republishing it. Each value's own part is a pair of body
functions; the framing, the version check and the error path live here.

A value is msgpack of a version number plus a body, in one of two framings (both exactly what the
agents publish today, so old and new agents read each other):

* :attr:`Framing.MAP`: ``{"v": version, **body}`` with ``body`` a map. With ``implicit=True`` the
  version is left out when writing, and a map without ``"v"`` reads as the codec's version (the
  ``health`` value predates versioning).
* :attr:`Framing.ARRAY`: ``[version, *body]`` with ``body`` a list of fields.

A value of a newer version than the codec's is refused with :class:`NewerVersion` (an older agent
cannot know what it means); anything else that does not parse, including an older version the codec no
longer reads, with :class:`WireError`. :meth:`Codec.decode` turns both into ``None`` and reports them
to a :class:`Refusals`, which logs each once per (key, sender, version).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

import msgpack

T = TypeVar("T")

VERSION_FIELD = "v"
# What msgpack raises for bad input: its own errors, ValueError (truncated data, bad map keys) and
# TypeError (an unhashable map key).
_UNPACK_ERRORS = (msgpack.UnpackException, ValueError, TypeError)


class WireError(ValueError):
    """A published value that does not follow its format (peers are not trusted)."""


class NewerVersion(WireError):
    """A published value in a format version newer than this agent reads."""

    def __init__(self, key: str, version: int, known: int) -> None:
        super().__init__(f"{key}: format version {version} is newer than this agent reads ({known})")
        self.version = version


class Framing(Enum):
    MAP = "map"
    ARRAY = "array"


@dataclass(frozen=True, slots=True)
class Codec(Generic[T]):
    """How one published value travels. ``encode_body`` returns the body (a map for :attr:`Framing.MAP`,
    a list for :attr:`Framing.ARRAY`); ``decode_body`` gets it back and raises :class:`WireError`
    (only) on anything it does not accept. ``strict_map_key``: refuse maps with non-string keys while
    unpacking (as msgpack does by default)."""

    key: str
    version: int
    framing: Framing
    encode_body: Callable[[T], Any]
    decode_body: Callable[[Any], T]
    implicit: bool = False
    strict_map_key: bool = True

    def encode(self, value: T) -> bytes:
        return bytes(msgpack.packb(self.to_object(value), use_bin_type=True))

    def parse(self, data: bytes) -> T:
        """The value in ``data``; raises :class:`WireError` (:class:`NewerVersion` for a newer format)."""
        try:
            raw = msgpack.unpackb(data, raw=False, strict_map_key=self.strict_map_key)
        except _UNPACK_ERRORS as exc:
            raise WireError(f"{self.key}: not msgpack: {exc}") from None
        return self.from_object(raw)

    def to_object(self, value: T) -> Any:
        """The framed value before packing (what :meth:`encode` packs)."""
        body = self.encode_body(value)
        if self.framing is Framing.ARRAY:
            return [self.version, *body]
        return body if self.implicit else {VERSION_FIELD: self.version, **body}

    def from_object(self, raw: Any) -> T:
        """:meth:`parse` for an already unpacked value."""
        version, body = self._unframe(raw)
        if version > self.version:
            raise NewerVersion(self.key, version, self.version)
        if version != self.version:
            raise WireError(f"{self.key}: format version {version} is not one this agent reads")
        return self.decode_body(body)

    def decode(self, data: bytes | None, sender: str, refusals: Refusals) -> T | None:
        """The value, or ``None`` if absent or refused (reported to ``refusals``)."""
        if data is None:
            return None
        try:
            value = self.parse(data)
        except WireError as exc:
            refusals.refused(self.key, sender, exc)
            return None
        refusals.accepted(self.key, sender)
        return value

    def _unframe(self, raw: Any) -> tuple[int, Any]:
        version: Any
        body: Any
        if self.framing is Framing.ARRAY:
            if not isinstance(raw, list) or not raw:
                raise WireError(f"{self.key}: expected [version, ...]")
            version, body = raw[0], raw[1:]
        else:
            if not isinstance(raw, dict):
                raise WireError(f"{self.key}: expected a map")
            body = dict(raw)
            version = body.pop(VERSION_FIELD, self.version if self.implicit else None)
        if not isinstance(version, int) or isinstance(version, bool):
            raise WireError(f"{self.key}: format version {version!r} is not a number")
        return version, body


class Refusals:
    """Logs refused published values, each once per (key, sender, version): a peer republishes its
    value every few seconds, and the log should say so once, not every time. Held by whoever decodes
    (a driver, a router), so its memory lives and dies with it. A sender's malformed mark is dropped
    when it next publishes something readable, so a new breakage is logged again."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger if logger is not None else logging.getLogger("wiremesh.gossip.codec")
        self._logged: set[tuple[str, str, int | None]] = set()

    def refused(self, key: str, sender: str, error: WireError) -> None:
        version = error.version if isinstance(error, NewerVersion) else None
        mark = (key, sender, version)
        if mark in self._logged:
            return
        self._logged.add(mark)
        if version is not None:
            self.log.warning("%s publishes %s; ignored until this agent is upgraded", sender, error)
        else:
            self.log.warning("%s publishes a malformed value: %s; ignored", sender, error)

    def accepted(self, key: str, sender: str) -> None:
        """``sender``'s ``key`` decoded again: a later malformed value is news."""
        self._logged.discard((key, sender, None))

    def logged(self) -> frozenset[tuple[str, str, int | None]]:
        """What has been logged (key, sender, newer version or ``None`` for malformed)."""
        return frozenset(self._logged)


class DecodeCache(Generic[T]):
    """Each sender's value of one codec, decoded once per change. Members republish the same bytes for
    minutes while a reader (the speaker planning its sessions) reads every member's value on every
    membership event: at 25 machines starting at once that was a quarter of an agent's CPU, decoding
    the same bytes again. Keyed by sender with the bytes it was decoded from, so a new value is decoded
    (and a refusal reported) the first time it is read, and memory is one entry per sender: :meth:`forget`
    a sender that is gone. Held by the reader, like its :class:`Refusals`."""

    def __init__(self, codec: Codec[T], refusals: Refusals) -> None:
        self.codec = codec
        self.refusals = refusals
        self._last: dict[str, tuple[bytes, T | None]] = {}

    def decode(self, data: bytes | None, sender: str) -> T | None:
        """:meth:`Codec.decode`, from the cache when ``data`` is what ``sender`` published last time."""
        if data is None:
            self._last.pop(sender, None)
            return None
        hit = self._last.get(sender)
        if hit is not None and hit[0] == data:
            return hit[1]
        value = self.codec.decode(data, sender, self.refusals)
        self._last[sender] = (data, value)
        return value

    def forget(self, sender: str) -> None:
        self._last.pop(sender, None)

    def __len__(self) -> int:
        return len(self._last)


__all__ = ["VERSION_FIELD", "Codec", "DecodeCache", "Framing", "NewerVersion", "Refusals", "WireError"]
