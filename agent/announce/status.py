"""The read model of live announcement state: what the API, the UI and the BGP speaker ask of the
announcer, without depending on it (or on each other)."""

from collections.abc import Mapping
from typing import Protocol

from agent.announce.planner import Decision
from agent.cluster.objects import Kind
from agent.health.verdict import Verdict

UNKNOWN_HEALTH = "unknown"

Decisions = Mapping[str, Mapping[str, Decision]]  # by machine, then object key (vip/NAME)


class StatusProvider(Protocol):
    """Live state of health checks and announcements; the real one is
    :class:`agent.announce.driver.Announcer`."""

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        """Machines announcing the object now."""
        ...

    def health(self, kind: Kind, name: str, machine: str) -> str:
        """The object's health check verdict on ``machine``: healthy, unhealthy, or unknown."""
        ...

    def verdicts(self) -> Mapping[str, Mapping[str, Verdict]]:
        """Every machine's published check verdicts, by machine then object key; wall-clock times."""
        ...

    def all_decisions(self) -> tuple[float, Decisions]:
        """Every live machine's announcement decisions, after the provider's clock reading that each
        ``held_until`` is measured against: that clock (Trio's) means nothing to a client, so the API
        only ever uses ``held_until - now``."""
        ...


class NoStatus:
    """Before announcements exist: nothing is announced, every health state is unknown."""

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        return []

    def health(self, kind: Kind, name: str, machine: str) -> str:
        return UNKNOWN_HEALTH

    def verdicts(self) -> Mapping[str, Mapping[str, Verdict]]:
        return {}

    def all_decisions(self) -> tuple[float, Decisions]:
        return 0.0, {}


__all__ = ["UNKNOWN_HEALTH", "Decisions", "NoStatus", "StatusProvider"]
