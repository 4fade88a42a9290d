"""Lifeguard's dynamic suspicion timeout.

A suspicion starts at the maximum timeout and shrinks, logarithmically, with every independent
confirmation (another member that also suspects the same incarnation), down to the minimum once
``k`` confirmations have arrived. A member that only one node suspects thus gets a long time to
refute; one that many nodes saw fail is declared dead quickly.
"""

from __future__ import annotations

import math


def remaining_timeout(n: int, k: int, elapsed: float, min_timeout: float, max_timeout: float) -> float:
    """Time left after ``n`` of the ``k`` expected confirmations, ``elapsed`` seconds in."""
    if k < 1:
        return min_timeout - elapsed
    frac = math.log(n + 1) / math.log(k + 1)
    raw = max_timeout - frac * (max_timeout - min_timeout)
    return max(raw, min_timeout) - elapsed


class Suspicion:
    """One member's suspicion: who confirmed it and when it expires. Time is passed in."""

    def __init__(
        self, accuser: str, k: int, min_timeout: float, max_timeout: float, incarnation: int, now: float
    ) -> None:
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout if k >= 1 else min_timeout
        self.incarnation = incarnation
        self.start = now
        self.confirmations: list[str] = [accuser]
        self.deadline = now + self.max_timeout

    @property
    def n(self) -> int:
        """Independent confirmations beyond the first accuser."""
        return len(self.confirmations) - 1

    def confirm(self, accuser: str, now: float) -> bool:
        """Count a new accuser; True when it was new (and so worth re-gossiping)."""
        if self.n >= self.k or accuser in self.confirmations:
            return False
        self.confirmations.append(accuser)
        elapsed = now - self.start
        self.deadline = now + remaining_timeout(self.n, self.k, elapsed, self.min_timeout, self.max_timeout)
        return True
