"""The wait between restarts of a child that keeps dying, for every supervisor (ExaBGP, wireguard-go).

No I/O and no clock: the caller says how long the run that just ended lasted.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class RestartBackoff:
    """Exponential delay between restarts; a run that lasted ``stable_after`` seconds counts as healthy
    and resets the delay, so a crash once a day restarts at once while a crash loop settles at
    ``maximum``."""

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    stable_after: float = 60.0
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self._next = self.initial

    def delay_after(self, ran_for: float) -> float:
        """The wait before the next start, given how long the run that just ended lasted."""
        if ran_for >= self.stable_after:
            self._next = self.initial
        delay = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return delay


__all__ = ["RestartBackoff"]
