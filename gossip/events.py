"""What the gossip layer tells the rest of the agent: membership changes and node-local value changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from common.address import Address


class MemberState(StrEnum):
    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


class EventKind(StrEnum):
    JOIN = "join"  # a member seen for the first time (or again after being dead/left)
    ALIVE = "alive"  # a suspect member proved alive
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"
    UPDATE = "update"  # metadata or address changed
    KV = "kv"  # a node-local key/value changed; ``key`` says which
    CONFLICT = "conflict"  # another address claims a live member's name; ``addr`` is the claimant


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: EventKind
    name: str
    incarnation: int
    addr: Address
    at: float
    key: str | None = None


@dataclass(frozen=True, slots=True)
class MemberInfo:
    """A read-only view of one member, as queries return it."""

    name: str
    addr: Address
    incarnation: int
    state: MemberState
    since: float
    meta: bytes
    kv: dict[str, tuple[int, bytes | None]] = field(default_factory=dict)
