"""The piggyback queue: updates waiting to ride on outgoing datagrams.

Each update is sent at most ``limit(N)`` times; the least-sent go first, newest first among equals;
a newer update about the same subject (a member, or one node-local key) replaces the older one, so
the queue never carries two versions of the same fact.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass(slots=True)
class _Item:
    key: Hashable
    data: bytes
    transmits: int
    order: int


class BroadcastQueue:
    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        self._items: dict[Hashable, _Item] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def queue(self, key: Hashable, data: bytes) -> None:
        """Add an encoded update, replacing any pending one about the same subject."""
        self._order += 1
        self._items[key] = _Item(key, data, 0, self._order)

    def drop(self, key: Hashable) -> None:
        self._items.pop(key, None)

    def take(self, budget: int, per_message_overhead: int = 0) -> list[bytes]:
        """Encoded updates whose sizes fit in ``budget`` bytes; each counts as one more transmit."""
        if not self._items or budget <= 0:
            return []
        limit = self._limit()
        chosen: list[bytes] = []
        used = 0
        for item in sorted(self._items.values(), key=lambda i: (i.transmits, -i.order)):
            cost = len(item.data) + per_message_overhead
            if used + cost > budget:
                continue
            used += cost
            chosen.append(item.data)
            item.transmits += 1
            if item.transmits >= limit:
                del self._items[item.key]
        return chosen

    def prune(self, max_items: int) -> None:
        """Keep only the ``max_items`` least-sent (then newest) updates."""
        if len(self._items) <= max_items:
            return
        keep = sorted(self._items.values(), key=lambda i: (i.transmits, -i.order))[:max_items]
        self._items = {i.key: i for i in keep}
