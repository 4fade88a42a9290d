"""Keyring changes across the cluster: one key query per live member, each member's answer collected.

Like ``serf keys``: an operator asks one member to ``install``, ``use`` or ``remove`` a key (or to
``list`` them); that member sends a sealed :class:`gossip.wire.KeyQuery` over a stream to every live
member, each applies it to its own ring and answers with a :class:`gossip.wire.KeyReply` (its error, if
any, and the fingerprints it holds afterwards), and the initiator applies it to itself last. A member
that does not answer within the timeout is reported as such, never retried: every operation is
idempotent, so the operator retries the whole step.

The initiator first checks the operation against its own ring, so a key it does not hold, or its own
primary, is refused before anything is sent anywhere. It applies the change to itself only after the
others answered, so every query is sealed with a key all members still hold at each step of a rotation
(install: the old primary; use: the old primary, the members answer with the new one, which the
initiator holds; remove: the new primary).

What a member does with a query is the application's business (:class:`KeyStore`): the gossip layer
knows nothing of files. :class:`MemoryKeys` changes the ring in memory only (simulations and tests);
the agent's store makes the change durable first (``agent/keyfile.py``). The round itself is sans I/O:
:class:`KeyRound` is filled in by the core's stream results, the driver only waits for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gossip.keyring import Keyring, KeyringError
from gossip.wire import KeyReply, Message

# How long the initiator waits for each member's answer (a member may fsync a file before it answers).
KEY_QUERY_TIMEOUT = 5.0
INSECURE = "gossip encryption is off on this member (insecure = true): it has no keyring"


@dataclass(frozen=True, slots=True)
class KeyAnswer:
    """One member's result: ``error`` is None when the operation was applied (or changed nothing),
    ``keys`` the fingerprints it holds afterwards, primary first."""

    error: str | None
    keys: tuple[str, ...]

    @property
    def primary(self) -> str | None:
        return self.keys[0] if self.keys else None


class KeyStore(Protocol):
    """Where a member's keyring lives, as the gossip layer sees it."""

    def check(self, op: str, key: bytes) -> str | None:
        """Why ``op`` would be refused on this member, or None; changes nothing."""
        ...

    async def apply(self, op: str, key: bytes) -> KeyAnswer:
        """Apply ``op`` (never raises for a refused or failed change: the answer carries it)."""
        ...


class RefuseKeys:
    """The store of a node given none: every query is answered with an error, nothing changes."""

    def check(self, op: str, key: bytes) -> str | None:
        return "this member does not take keyring changes"

    async def apply(self, op: str, key: bytes) -> KeyAnswer:
        return KeyAnswer("this member does not take keyring changes", ())


class MemoryKeys:
    """Changes the ring in memory only: what simulations and gossip-level tests use."""

    def __init__(self, keyring: Keyring | None) -> None:
        self.keyring = keyring

    def check(self, op: str, key: bytes) -> str | None:
        if self.keyring is None:
            return INSECURE
        return self.keyring.refusal(op, key)

    def apply_now(self, op: str, key: bytes) -> KeyAnswer:
        ring = self.keyring
        if ring is None:
            return KeyAnswer(INSECURE, ())
        try:
            ring.replace(ring.planned(op, key))
        except KeyringError as exc:
            return KeyAnswer(str(exc), ring.fingerprints())
        return KeyAnswer(None, ring.fingerprints())

    async def apply(self, op: str, key: bytes) -> KeyAnswer:
        return self.apply_now(op, key)


@dataclass(slots=True)
class KeyRound:
    """The answers to one query, by member name; a member still missing when the round is done did not
    answer (its stream failed or timed out, or its reply was not a key reply)."""

    op: str
    asked: tuple[str, ...]
    answers: dict[str, KeyAnswer] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)

    @property
    def done(self) -> bool:
        return not self.pending

    def wait_for(self, name: str) -> _KeyWait:
        self.pending.add(name)
        return _KeyWait(self, name)


@dataclass(slots=True)
class _KeyWait:
    """The stream to one member (see :class:`gossip.core.StreamWait`)."""

    round: KeyRound
    name: str

    def settled(self) -> None:
        self.round.pending.discard(self.name)

    def answered(self, msg: Message, now: float) -> bool:
        if not isinstance(msg, KeyReply):
            return False
        self.round.answers[self.name] = KeyAnswer(msg.error or None, msg.keys)
        return True


def reply_for(answer: KeyAnswer) -> KeyReply:
    return KeyReply(answer.error or "", answer.keys)


__all__ = [
    "INSECURE",
    "KEY_QUERY_TIMEOUT",
    "KeyAnswer",
    "KeyRound",
    "KeyStore",
    "MemoryKeys",
    "RefuseKeys",
    "reply_for",
]
