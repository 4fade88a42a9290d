"""Node-local key/values and the application's channel: two ways of spreading data that is not
membership.

Both ride the same broadcast queue as membership updates, and both fall back to the same trick when
an update is too large for a datagram: broadcast a small notice instead, and let whoever wants the
data pull it from the announcer over a stream. One pull per item at a time: the pull sets are what
a :class:`gossip.core.StreamWait` releases when its stream ends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

from common.address import Address
from gossip.core import Core, bump
from gossip.events import EventKind
from gossip.wire import (
    MAX_KEY_LEN,
    AppNotice,
    AppPull,
    AppUpdate,
    ErrorReply,
    KvNotice,
    KvPull,
    KvUpdate,
    Message,
    encode_message,
)


def app_digest(payload: bytes) -> bytes:
    """What an AppNotice carries: enough to tell two payloads apart, small enough for any datagram."""
    return hashlib.blake2b(payload, digest_size=16).digest()


def _kv_key(node: str, key: str) -> Hashable:
    return ("kv", node, key)


def _app_key(key: str) -> Hashable:
    return ("app", key)


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LEN:
        raise ValueError(f"key must be 1..{MAX_KEY_LEN} characters")


class NodeKv:
    """Values each node publishes about itself; every member keeps a copy of every node's."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._pulls: set[tuple[str, str]] = set()

    def set(self, key: str, value: bytes | None, now: float) -> None:
        core = self._core
        _check_key(key)
        if value is not None and len(value) > core.config.kv_value_max:
            raise ValueError(f"value is {len(value)} bytes; the limit is {core.config.kv_value_max}")
        version, current = core.me.kv.get(key, (0, None))
        if version and current == value:
            return
        core.me.kv[key] = (bump(version), value)
        self._announce(core.name, key, bump(version), value)
        core.event(EventKind.KV, core.me, now, key)

    def on_update(self, msg: KvUpdate, now: float, rebroadcast: bool = True) -> None:
        core = self._core
        if msg.node == core.name:
            self._refute(msg.key, msg.version, msg.value)
            return
        m = core.members.get(msg.node)
        if m is None:
            return
        version, _ = m.kv.get(msg.key, (0, None))
        if msg.version <= version:
            return
        m.kv[msg.key] = (msg.version, msg.value)
        core.event(EventKind.KV, m, now, msg.key)
        if rebroadcast:
            self._announce(msg.node, msg.key, msg.version, msg.value)

    def on_notice(self, src: Address, msg: KvNotice, now: float) -> None:
        core = self._core
        if msg.node == core.name:
            mine, current = core.me.kv.get(msg.key, (0, None))
            if msg.version > mine:
                core.me.kv[msg.key] = (bump(msg.version), current)
                self._announce(core.name, msg.key, bump(msg.version), current)
            return
        m = core.members.get(msg.node)
        pull = (msg.node, msg.key)
        if m is None or msg.version <= m.kv.get(msg.key, (0, None))[0] or pull in self._pulls:
            return
        self._pulls.add(pull)
        core.stream(src, KvPull(msg.node, msg.key), KvPullWait(self, pull))

    def answer_pull(self, msg: KvPull) -> Message:
        owner = self._core.members.get(msg.node)
        if owner and msg.key in owner.kv:
            version, value = owner.kv[msg.key]
            return KvUpdate(msg.node, msg.key, version, value)
        return ErrorReply("no such key")

    def pull_done(self, pull: tuple[str, str]) -> None:
        self._pulls.discard(pull)

    def _refute(self, key: str, version: int, value: bytes | None) -> None:
        """Someone holds a version of our own key we never wrote (we restarted): supersede it."""
        me = self._core.me
        mine, current = me.kv.get(key, (0, None))
        if version < mine or (version == mine and value == current):
            return
        if mine == 0 and value is None:
            me.kv[key] = (version, None)
            return
        me.kv[key] = (bump(version), current)
        self._announce(self._core.name, key, bump(version), current)

    def _announce(self, node: str, key: str, version: int, value: bytes | None) -> None:
        core = self._core
        encoded = encode_message(KvUpdate(node, key, version, value))
        if len(encoded) <= core.config.kv_datagram_max:
            core.broadcasts.queue(_kv_key(node, key), encoded)
        else:
            core.broadcasts.queue(_kv_key(node, key), encode_message(KvNotice(node, key, version)))


@dataclass(frozen=True, slots=True)
class KvPullWait:
    kv: NodeKv
    pull: tuple[str, str]

    def settled(self) -> None:
        self.kv.pull_done(self.pull)

    def answered(self, msg: Message, now: float) -> bool:
        if not isinstance(msg, KvUpdate):
            return False
        self.kv.on_update(msg, now)
        return True


class AppChannel:
    """The application's replicated items (:class:`gossip.shared.SharedState`); a no-op without one."""

    def __init__(self, core: Core) -> None:
        self._core = core
        self._pulls: set[str] = set()

    def publish(self, key: str, payload: bytes) -> None:
        _check_key(key)
        self._announce(key, payload)

    def on_update(self, msg: AppUpdate, now: float) -> None:
        shared = self._core.shared
        if shared is not None and shared.receive(msg.key, msg.payload, now):
            self._announce(msg.key, msg.payload)

    def on_notice(self, src: Address, msg: AppNotice) -> None:
        shared = self._core.shared
        if shared is None or msg.key in self._pulls or not shared.wants(msg.key, msg.digest):
            return
        self._pulls.add(msg.key)
        self._core.stream(src, AppPull(msg.key), AppPullWait(self, msg.key))

    def answer_pull(self, msg: AppPull) -> Message:
        shared = self._core.shared
        payload = shared.get(msg.key) if shared else None
        if payload is None:
            return ErrorReply("no such item")
        return AppUpdate(msg.key, payload)

    def pull_done(self, key: str) -> None:
        self._pulls.discard(key)

    def full_state(self) -> bytes:
        """What rides on our push-pull; empty without an application."""
        shared = self._core.shared
        return shared.full_state() if shared is not None else b""

    def merge_full_state(self, data: bytes, now: float) -> None:
        shared = self._core.shared
        if data and shared is not None:
            shared.merge_full_state(data, now)

    def _announce(self, key: str, payload: bytes) -> None:
        core = self._core
        update = encode_message(AppUpdate(key, payload))
        if len(update) <= core.config.kv_datagram_max:
            core.broadcasts.queue(_app_key(key), update)
        else:
            core.broadcasts.queue(_app_key(key), encode_message(AppNotice(key, app_digest(payload))))


@dataclass(frozen=True, slots=True)
class AppPullWait:
    app: AppChannel
    key: str

    def settled(self) -> None:
        self.app.pull_done(self.key)

    def answered(self, msg: Message, now: float) -> bool:
        if not isinstance(msg, AppUpdate):
            return False
        self.app.on_update(msg, now)
        return True
