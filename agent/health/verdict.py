"""The health-check verdict, sans-I/O: results in, a thresholded state out.

A check's raw results flap; what the planner acts on is the verdict, which moves only after
``healthy_threshold`` consecutive passes or ``unhealthy_threshold`` consecutive failures, so an
announcement can never change faster than the thresholds allow. A new check is ``unknown``: it has
not earned ``healthy`` yet, and the planner must not announce on it.

Nothing here reads a clock or sleeps. ``now`` is whatever clock the caller runs on: the Trio shell
passes ``trio.current_time()`` for scheduling, and wall-clock seconds for anything it publishes,
because monotonic times mean nothing on another machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum

from agent.wirevalues import STATES, State, Verdict


class CheckState:
    """One check's thresholds, fed one result at a time."""

    def __init__(self, healthy_threshold: int, unhealthy_threshold: int, now: float) -> None:
        if healthy_threshold < 1 or unhealthy_threshold < 1:
            raise ValueError("thresholds must be >= 1")
        self.healthy_threshold = healthy_threshold
        self.unhealthy_threshold = unhealthy_threshold
        self.state: State = "unknown"
        self.since = now
        self.consecutive = 0
        self.last_ok: bool | None = None
        self.last_latency: float | None = None
        self.last_error: str | None = None
        self.checked_at: float | None = None
        self.streak_since: float | None = None  # when the latest run of agreeing results began
        self.failing_since: float | None = None  # while unhealthy: when the failures that made it so began

    def record(self, ok: bool, latency: float, error: str | None, now: float) -> Verdict:
        """Take one result and return the verdict after it (``since`` moves only when the state does)."""
        if ok == self.last_ok:
            self.consecutive += 1
        else:
            self.consecutive = 1
            self.streak_since = now
        self.last_ok = ok
        self.last_latency = latency
        self.last_error = None if ok else error
        self.checked_at = now
        if ok and self.state != "healthy" and self.consecutive >= self.healthy_threshold:
            self.state, self.since = "healthy", now
            self.failing_since = None
        elif not ok and self.state != "unhealthy" and self.consecutive >= self.unhealthy_threshold:
            self.state, self.since = "unhealthy", now
            self.failing_since = self.streak_since
        return self.verdict()

    def verdict(self) -> Verdict:
        return Verdict(
            state=self.state,
            since=self.since,
            consecutive=self.consecutive,
            last_ok=self.last_ok,
            latency=self.last_latency,
            error=self.last_error,
            checked_at=self.checked_at,
        )


def first_delay(interval: float, rng: random.Random) -> float:
    """Uniform in [0, interval): machines that start together must not check in lockstep."""
    if interval <= 0:
        raise ValueError("interval must be > 0")
    delay = rng.random() * interval
    # random() < 1, but the product can round up to interval itself.
    return min(delay, math.nextafter(interval, 0.0))


def next_run(prev_start: float, interval: float, now: float) -> float:
    """The first slot ``prev_start + k * interval`` (k >= 1) that is not before ``now``.

    ``prev_start`` is the previous *scheduled* start, not when the run actually began or ended, so
    lateness and run time never accumulate into drift. Slots already in the past (a run that took longer
    than an interval, a stalled event loop) are skipped rather than run back to back to catch up."""
    if interval <= 0:
        raise ValueError("interval must be > 0")
    k = max(1, math.ceil((now - prev_start) / interval))
    slot = prev_start + k * interval
    while slot < now:  # float rounding in the division
        k += 1
        slot = prev_start + k * interval
    return slot


# --- what the announcement planner is told of this machine's own checks ---------------------------


class Health(StrEnum):
    """A check's state as the planner weighs it."""

    UNKNOWN = "unknown"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class LocalVerdict:
    """This machine's check verdict for one object; ``since`` is when it entered ``state``;
    ``failing_since`` (while unhealthy) when the failures that made it unhealthy began, ``since`` if
    not given."""

    state: Health
    since: float
    failing_since: float | None = None


# Verdict (what is published) lives in agent.wirevalues, below agent.published; it is re-exported here.
__all__ = ["STATES", "CheckState", "Health", "LocalVerdict", "State", "Verdict", "first_delay", "next_run"]
