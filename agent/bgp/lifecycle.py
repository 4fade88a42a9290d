"""The supervisor's decisions, without I/O: when to reload ExaBGP's neighbors (when to restart it is
:class:`common.backoff.RestartBackoff`).

Time is passed in (``now``, seconds on any monotonic clock), so tests drive these with plain numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from agent.bgp.config import Neighbor


class ReloadReason(StrEnum):
    START = "start"  # first start: everything desired goes out
    RESTART = "restart"  # ExaBGP died and was started again: everything desired goes out again
    RELOAD = "reload"  # the neighbor set changed: routes go out to the new or changed neighbors


@dataclass(frozen=True, slots=True)
class Resync:
    """Tells the owner which neighbors have none of our routes and need all of them announced.

    After a reload ExaBGP does not give a new neighbor the routes announced before it existed, and a
    neighbor whose settings changed gets a new session, so both are listed; after a (re)start every
    neighbor is."""

    reason: ReloadReason
    neighbors: frozenset[str]  # peer addresses
    removed: frozenset[str] = frozenset()  # peer addresses no longer configured: their paths are gone


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    neighbors: tuple[Neighbor, ...]  # the set to write
    resync: Resync


class NeighborBatcher:
    """Coalesces neighbor-set changes into few reloads. The first change after a reload opens a window
    of ``window`` seconds; everything that arrives in it goes out in one reload when it closes. The
    window is fixed, not sliding, so a steady trickle of joins still reloads once per window instead of
    never. A change that ends where it started (a member left and came back) reloads nothing."""

    def __init__(self, neighbors: Iterable[Neighbor] = (), *, window: float = 1.0) -> None:
        if window < 0:
            raise ValueError("window must be >= 0")
        self.window = window
        self._desired = _by_address(neighbors)
        self._applied = dict(self._desired)
        self._deadline: float | None = None

    @property
    def desired(self) -> tuple[Neighbor, ...]:
        return tuple(self._desired.values())

    @property
    def deadline(self) -> float | None:
        """When :meth:`poll` will have a plan; ``None`` while nothing is pending."""
        return self._deadline

    def set_neighbors(self, neighbors: Iterable[Neighbor], now: float) -> None:
        self._desired = _by_address(neighbors)
        if self._desired == self._applied:
            self._deadline = None
        elif self._deadline is None:
            self._deadline = now + self.window

    def poll(self, now: float) -> ReloadPlan | None:
        """A reload to do now, or ``None``; once returned, the plan counts as applied."""
        if self._deadline is None or now < self._deadline:
            return None
        self._deadline = None
        old, new = self._applied, self._desired
        self._applied = dict(new)
        fresh = frozenset(a for a, n in new.items() if old.get(a) != n)
        removed = frozenset(old) - frozenset(new)
        return ReloadPlan(tuple(new.values()), Resync(ReloadReason.RELOAD, fresh, removed))

    def start(self, restart: bool) -> ReloadPlan:
        """ExaBGP is being (re)started: it reads the desired set from scratch, so nothing is pending."""
        self._deadline = None
        self._applied = dict(self._desired)
        reason = ReloadReason.RESTART if restart else ReloadReason.START
        return ReloadPlan(self.desired, Resync(reason, frozenset(self._desired)))


def _by_address(neighbors: Iterable[Neighbor]) -> dict[str, Neighbor]:
    out: dict[str, Neighbor] = {}
    for n in neighbors:
        if n.address in out and out[n.address] != n:
            raise ValueError(f"two different neighbors with address {n.address}")
        out[n.address] = n
    return out
