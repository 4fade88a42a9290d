"""The value types of what a machine publishes over gossip, below every room that produces or reads them.

They live here, not with their producers, so that :mod:`agent.published` can declare every published
value with its type without importing agent/health, agent/announce or agent/bgp (which import it).
Each room re-exports or converts to these; nothing here does I/O or knows about msgpack framing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, cast

# --- health: one verdict per check ------------------------------------------------------------------

State = Literal["unknown", "healthy", "unhealthy"]
STATES: tuple[State, ...] = ("unknown", "healthy", "unhealthy")


def _number(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"bad {what} {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a machine publishes about one check: small, so hundreds fit in a gossip message.

    ``consecutive`` counts the latest results that agree with ``last_ok`` (passes if it passed, failures
    if not), so a peer can tell "healthy, but failing 2 of 3" from "healthy and steady". ``checked_at``
    is when the latest result came in (``None`` before the first), for staleness."""

    state: State
    since: float
    consecutive: int = 0
    last_ok: bool | None = None
    latency: float | None = None
    error: str | None = None
    checked_at: float | None = None

    def to_wire(self) -> dict[str, Any]:
        """A msgpack-able dict with one-letter keys (the keys repeat once per check per gossip message)."""
        return {
            "s": self.state,
            "t": self.since,
            "n": self.consecutive,
            "o": self.last_ok,
            "l": self.latency,
            "e": self.error,
            "c": self.checked_at,
        }

    @classmethod
    def from_wire(cls, data: object) -> Verdict:
        """Parse what a peer sent; anything malformed raises ``ValueError`` (a peer is not trusted to be
        the same version, or correct)."""
        if not isinstance(data, dict):
            raise ValueError(f"verdict must be a map, got {type(data).__name__}")
        state = data.get("s")
        if state not in STATES:
            raise ValueError(f"bad verdict state {state!r}")
        since = _number(data.get("t"), "since")
        if since is None:
            raise ValueError("verdict has no since")
        consecutive = data.get("n", 0)
        if not isinstance(consecutive, int) or isinstance(consecutive, bool) or consecutive < 0:
            raise ValueError(f"bad consecutive count {consecutive!r}")
        last_ok = data.get("o")
        if last_ok is not None and not isinstance(last_ok, bool):
            raise ValueError(f"bad last_ok {last_ok!r}")
        error = data.get("e")
        if error is not None and not isinstance(error, str):
            raise ValueError(f"bad error {error!r}")
        return cls(
            state=cast(State, state),
            since=since,
            consecutive=consecutive,
            last_ok=last_ok,
            latency=_number(data.get("l"), "latency"),
            error=error,
            checked_at=_number(data.get("c"), "checked_at"),
        )


# --- announce: what the planner decided, per object -------------------------------------------------


class Reason(StrEnum):
    HEALTHY = "healthy"
    NO_CHECK = "no_check"
    HELD = "held"
    WITHDRAWN_UNHEALTHY = "withdrawn_unhealthy"
    WITHDRAWN_UNKNOWN = "withdrawn_unknown"
    WITHDRAWN_DISABLED = "withdrawn_disabled"
    WITHDRAWN_MACHINE_DISABLED = "withdrawn_machine_disabled"
    WITHDRAWN_NOT_ASSIGNED = "withdrawn_not_assigned"
    WITHDRAWN_HOLDOFF_EXPIRED = "withdrawn_holdoff_expired"
    WITHDRAWN_PEER_HEALTHY = "withdrawn_peer_healthy"


ANNOUNCING = frozenset({Reason.HEALTHY, Reason.NO_CHECK, Reason.HELD})


@dataclass(frozen=True, slots=True)
class Announced:
    """One object's decision as published: a hold travels as the seconds it has left, since the clocks
    of two machines are not comparable (``agent.announce.planner`` converts to and from its clock)."""

    announce: bool
    reason: Reason
    seconds_left: float | None = None
    peers: tuple[str, ...] = ()


# --- bgp: the speaker's identity --------------------------------------------------------------------


class Eligibility(StrEnum):
    """Whether a machine may be a route reflector (its config's ``[bgp] reflector``)."""

    AUTO = "auto"  # if the placement rule picks it
    ALWAYS = "always"  # whenever the mesh is reflected
    NEVER = "never"  # a client only


@dataclass(frozen=True, slots=True)
class ReflectorKnobs:
    """The placement rule's knobs a machine computes with (``[bgp] reflectors``, ``full_mesh_below``,
    ``reflector_hold`` and the fixed hysteresis margin). Published because the rule gives the same set
    everywhere only if every machine uses the same values: a machine that sees other values says so."""

    reflectors: int
    full_mesh_below: int
    margin: int
    reflector_hold: float


@dataclass(frozen=True, slots=True)
class ReflectorInfo:
    """What a machine publishes for reflector placement (:mod:`agent.bgp.reflectors`): whether it may
    reflect; ``claim``, while it is a reflector, the HLC time it took the role (packed
    ``wall_ms << 16 | counter``, comparable across machines); ``settled``, the digest of the placement
    whose sessions it has all established (how others know a switch is done on its side);
    ``knobs``, the rule's knobs it uses (absent from an agent from before they were published)."""

    eligibility: Eligibility = Eligibility.AUTO
    claim: int | None = None
    settled: int | None = None
    knobs: ReflectorKnobs | None = None


@dataclass(frozen=True, slots=True)
class SpeakerInfo:
    """What a machine's speaker publishes about itself. ``sent``: the ``vip/NAME`` / ``route/NAME``
    keys whose routes it has on the wire to at least one established session (``announced_by`` in
    VIP status). ``mesh``: this machine's mesh address while it is up (absent without WireGuard); an
    optional key, so agents that do not know it still read the rest. ``reflector``: its reflector
    eligibility and claim, optional the same way (absent: an agent from before reflectors, which
    peers with everyone)."""

    asn: int
    router_id: str
    address: str
    sent: tuple[str, ...] = ()
    mesh: str | None = None
    reflector: ReflectorInfo | None = None


__all__ = [
    "ANNOUNCING",
    "STATES",
    "Announced",
    "Eligibility",
    "Reason",
    "ReflectorInfo",
    "ReflectorKnobs",
    "SpeakerInfo",
    "State",
    "Verdict",
]
