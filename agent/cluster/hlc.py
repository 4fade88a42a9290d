"""A hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014).

Cluster objects are last-writer-wins, so every write needs a timestamp that is close to wall time (an
operator's later edit should win) yet never goes backwards and always exceeds every timestamp this node
has seen (an edit made after reading a replicated object must supersede it, even if this node's clock is
behind). An HLC gives both: ``wall_ms`` follows the largest physical time seen, ``counter`` orders events
within one millisecond. Ties between nodes are broken by the origin node's name (:class:`Version`), so
every replica picks the same winner.

Pure: wall time is passed in, nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# Timestamps travel in msgpack and SQLite: keep them inside a signed 64-bit integer.
MAX_WALL_MS = (1 << 63) - 1
# Bounded counter: when a millisecond runs out of counter values the clock borrows the next millisecond,
# so the logical part stays small and the timestamp stays within 1 ms per 65,536 events of physical time.
MAX_COUNTER = 0xFFFF
# How far ahead of this node's wall clock a remote timestamp may be and still be taken in. The HLC
# follows the largest timestamp it observes, so one record stamped in the far future (a broken clock, a
# forged record) would drag every later write there and make it unbeatable by honest edits. NTP keeps
# real clocks within milliseconds; a minute leaves room for a badly synced machine and no more.
MAX_AHEAD_MS = 60_000


@dataclass(frozen=True, order=True, slots=True)
class Timestamp:
    """A point in hybrid logical time; ordered by ``(wall_ms, counter)``."""

    wall_ms: int
    counter: int

    def __post_init__(self) -> None:
        if not 0 <= self.wall_ms <= MAX_WALL_MS:
            raise ValueError(f"wall_ms out of range: {self.wall_ms}")
        if not 0 <= self.counter <= MAX_COUNTER:
            raise ValueError(f"counter out of range: {self.counter}")


@dataclass(frozen=True, order=True, slots=True)
class Version:
    """The version of a replicated record: its HLC timestamp, then the origin node as a tie-break."""

    ts: Timestamp
    origin: str


def too_far_ahead(remote: Timestamp, wall_ms: int, max_ahead_ms: int = MAX_AHEAD_MS) -> bool:
    """Whether ``remote`` is more than ``max_ahead_ms`` past the local wall clock: not to be observed."""
    return remote.wall_ms > wall_ms + max_ahead_ms


def _bump(wall_ms: int, counter: int) -> Timestamp:
    """The timestamp after ``(wall_ms, counter)``, borrowing a millisecond when the counter is full."""
    if counter >= MAX_COUNTER:
        return Timestamp(wall_ms + 1, 0)
    return Timestamp(wall_ms, counter + 1)


class HybridClock:
    """One node's hybrid logical clock. Every returned timestamp is strictly greater than all earlier ones
    returned by this clock and than every timestamp passed to :meth:`observe`."""

    def __init__(self, node: str, last: Timestamp | None = None) -> None:
        self.node = node
        self.last = last if last is not None else Timestamp(0, 0)

    def now(self, wall_ms: int) -> Timestamp:
        """A timestamp for a local event (a write) at physical time ``wall_ms``."""
        if wall_ms > self.last.wall_ms:
            self.last = Timestamp(wall_ms, 0)
        else:
            self.last = _bump(self.last.wall_ms, self.last.counter)
        return self.last

    def observe(self, remote: Timestamp, wall_ms: int) -> Timestamp:
        """Take in a timestamp received from another node (the receive rule: the max of the three).
        Callers check :func:`too_far_ahead` first: this follows whatever it is given."""
        top = max(self.last, remote)
        if wall_ms > top.wall_ms:
            self.last = Timestamp(wall_ms, 0)
        else:
            self.last = _bump(top.wall_ms, top.counter)
        return self.last

    def version(self, wall_ms: int) -> Version:
        """A fresh version for a local write."""
        return Version(self.now(wall_ms), self.node)
