"""One stand-in for the gossip node, for the tests of what reads from it (API, CLI, UI, metrics,
announcer): each test gives it the members and snapshot it needs instead of keeping its own copy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from gossip.events import MemberEvent, MemberInfo


@dataclass
class FakeNode:
    """The node as the API sees it (``name``, ``members``, ``snapshot``) and as the announcer does
    (``subscribe``, fed through ``send``; ``set_kv``, kept in ``values``).

    ``member_list`` and ``snap`` may be changed by the test while the app runs; ``members_at``, when
    given, computes the members at each call instead (ages relative to ``trio.current_time``).
    """

    name: str = "node-a"
    member_list: list[MemberInfo] = field(default_factory=list)
    snap: dict[str, Any] = field(default_factory=dict)
    members_at: Callable[[], list[MemberInfo]] | None = None
    values: dict[str, bytes | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[MemberEvent](100)

    def members(self) -> list[MemberInfo]:
        return self.members_at() if self.members_at is not None else list(self.member_list)

    def snapshot(self) -> dict[str, Any]:
        return self.snap

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        return self.recv

    async def set_kv(self, key: str, value: bytes | None) -> None:
        self.values[key] = value
