"""A heap of deadlines for a sans-I/O state machine: the driver only ever asks "when next?"."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True, slots=True)
class Timer:
    when: float
    seq: int
    action: Callable[[float], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class Timers:
    def __init__(self) -> None:
        self._heap: list[Timer] = []
        self._seq = itertools.count()

    def at(self, when: float, action: Callable[[float], None]) -> Timer:
        t = Timer(when, next(self._seq), action)
        heapq.heappush(self._heap, t)
        return t

    def next_deadline(self) -> float:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else float("inf")

    def fire(self, now: float) -> None:
        """Run every timer due at ``now``, including ones that due timers set for ``now`` or earlier."""
        while self._heap and self._heap[0].when <= now:
            t = heapq.heappop(self._heap)
            if not t.cancelled:
                t.action(now)

    def __len__(self) -> int:
        return sum(1 for t in self._heap if not t.cancelled)
