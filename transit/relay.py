"""Relay selection: which member carries traffic between this machine and a peer whose direct path is
down, decided identically at both ends.

**Why both ends must agree.** WireGuard routes by AllowedIPs in both directions: B accepts a packet
with source A only from the peer entry whose AllowedIPs hold A's address. If A sends to B through R1
while B sends to A through R2, B drops A's packets (they arrive from R1, but A's address sits in R2's
entry). So A and B must pick the same relay, and they must pick it without a round of messages, which
is what a rule computed only from *shared* data gives.

**Shared data: the published vectors only.** A measures A-R itself, but B sees A-R only through A's
published vector; if A scored with its fresher local numbers, A and B would score different inputs.
So every input comes from the vectors as published, A's own included (A feeds in the vector it just
published, the one everybody else will see). Each leg is symmetric by construction:

* ``leg(X, Y)`` is DOWN if X reports Y down or Y reports X down; UP if both report up; UNKNOWN if a
  report is missing (a new member, a vector not yet arrived). Its RTT is the larger of the two reports.
* A relay candidate for {A, B} is any other member R with ``leg(A, R)`` and ``leg(R, B)`` UP (so a
  relay is never one that either leg's end sees down, and never a chain of relays). Its score is
  ``rtt(A, R) + rtt(R, B)``; candidates are ordered by (score, name), so ties are broken by name.

Since ``leg`` is symmetric, candidates(A, B) == candidates(B, A) exactly: same data, same answer.

**Opt-out.** A machine configured with ``[wireguard.relay] enabled = false`` says so in its gossip
metadata (:class:`transit.meta.TransitMeta` ``relay``) and is never a candidate (``no_relay``). That
too is shared data, so both ends of a pair skip it alike.

**Hysteresis** (:class:`RelaySelector`, one per peer). The first move off a down direct path is
immediate, to the best candidate (or "unreachable" if there is none). A relay that loses a leg is left
at once (direct if up, else the best candidate). Otherwise the current relay is kept until another
candidate has been better by a margin (``max(10 ms, 20 %)``) continuously for ``switch_hold`` (10 s).
Fail-back: the route returns to direct only once the direct leg has been UP continuously for
``failback_hold`` (15 s; the arithmetic against the 30 s target is in :mod:`transit.pathmon`). From
"unreachable", the first usable path (direct, else the best relay) is taken at once. An UNKNOWN direct
leg changes nothing: a new peer starts direct and stays so until its path is known down.

**Convergence.** Holds run on each end's clock and vectors arrive at slightly different times, so the
two ends could, rarely, settle on different relays that hysteresis would then keep apart (the rule
only says when to *leave* the incumbent, and the incumbents would differ). To rule that out the pair
has a leader, the end with the smaller name. The follower uses the leader's published route for the
pair whenever it is valid in the current data: a relay that is a candidate, direct while the direct
leg is not down, unreachable while there is no candidate and the direct leg is not up. Every route the
leader's rule produces is valid in the data it was produced from, so once the follower has the
leader's vector, both ends agree. When the published route is not valid (stale: the direct path just
went down and the leader's vector still says direct) the follower applies the rule itself, which is
why the first switch happens at both ends as soon as each sees the direct leg down. Any disagreement
lasts at most one gossip delay of the leader's vector. The leader never looks at the follower's choice.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from transit.reachability import DIRECT, UNREACHABLE, ReachRoute, ReachVector, RouteKind

Vectors = Mapping[str, ReachVector]


class LegState(StrEnum):
    UP = "up"
    DOWN = "down"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Leg:
    state: LegState
    rtt_ms: int = 0


def leg(vectors: Vectors, x: str, y: str) -> Leg:
    """The direct path between x and y as both their published vectors describe it (symmetric)."""
    vx, vy = vectors.get(x), vectors.get(y)
    ex = vx.get(y) if vx is not None else None
    ey = vy.get(x) if vy is not None else None
    if (ex is not None and not ex.up) or (ey is not None and not ey.up):
        return Leg(LegState.DOWN)
    if ex is None or ey is None:
        return Leg(LegState.UNKNOWN)
    return Leg(LegState.UP, max(ex.rtt_ms, ey.rtt_ms))


@dataclass(frozen=True, slots=True, order=True)
class Candidate:
    score_ms: int
    relay: str


def relay_candidates(
    vectors: Vectors, a: str, b: str, no_relay: Collection[str] = frozenset()
) -> list[Candidate]:
    """Every usable relay for the pair {a, b}, best first; the same list for (a, b) and (b, a).
    ``no_relay``: members that opted out of relaying."""
    out: list[Candidate] = []
    for r in vectors:
        if r in (a, b) or r in no_relay:
            continue
        ar, rb = leg(vectors, a, r), leg(vectors, r, b)
        if ar.state is LegState.UP and rb.state is LegState.UP:
            out.append(Candidate(ar.rtt_ms + rb.rtt_ms, r))
    out.sort()
    return out


def best_relay(vectors: Vectors, a: str, b: str, no_relay: Collection[str] = frozenset()) -> Candidate | None:
    """The pure selection rule, without hysteresis."""
    candidates = relay_candidates(vectors, a, b, no_relay)
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class SelectorConfig:
    switch_margin_ms: int = 10
    switch_margin_ratio: float = 0.2
    switch_hold: float = 10.0
    failback_hold: float = 15.0

    def __post_init__(self) -> None:
        if self.switch_margin_ms < 0 or not 0 <= self.switch_margin_ratio < 1:
            raise ValueError("margins must be non-negative (ratio below 1)")
        if self.switch_hold < 0 or self.failback_hold < 0:
            raise ValueError("holds must not be negative")

    def better(self, challenger_ms: int, incumbent_ms: int) -> bool:
        margin = max(self.switch_margin_ms, self.switch_margin_ratio * incumbent_ms)
        return challenger_ms + margin < incumbent_ms


class RelaySelector:
    """The route from ``me`` to ``peer`` with hysteresis; see the module docstring for every rule."""

    def __init__(self, me: str, peer: str, config: SelectorConfig | None = None) -> None:
        if me == peer:
            raise ValueError("a machine does not route to itself")
        self.me, self.peer = me, peer
        self.config = config or SelectorConfig()
        self.leader = me < peer
        self._route = DIRECT
        self._direct_up_since: float | None = None
        self._better_since: float | None = None
        self.reason = "initial: direct"

    @property
    def route(self) -> ReachRoute:
        return self._route

    def next_deadline(self) -> float:
        """When a hold may expire, so the shell re-runs :meth:`update` without new data."""
        c = self.config
        out = math.inf
        if self._route.kind is not RouteKind.DIRECT and self._direct_up_since is not None:
            out = min(out, self._direct_up_since + c.failback_hold)
        if self._better_since is not None:
            out = min(out, self._better_since + c.switch_hold)
        return out

    def _set(self, route: ReachRoute, reason: str) -> None:
        if route != self._route:
            self._route = route
            self._better_since = None
        self.reason = reason

    def _leaders_route(self, vectors: Vectors, direct: Leg, candidates: list[Candidate]) -> ReachRoute | None:
        """The leader's published route for this pair if it is valid in this data (see the module
        docstring), else None. Always None at the leader."""
        if self.leader:
            return None
        lv = vectors.get(self.peer)
        entry = lv.get(self.me) if lv is not None else None
        if entry is None:
            return None
        r = entry.route
        if r.kind is RouteKind.RELAY:
            ok = any(c.relay == r.relay for c in candidates)
        elif r.kind is RouteKind.DIRECT:
            ok = direct.state is not LegState.DOWN
        else:
            ok = not candidates and direct.state is not LegState.UP
        return r if ok else None

    def update(self, vectors: Vectors, now: float, no_relay: Collection[str] = frozenset()) -> ReachRoute:
        """Re-decide from the current vectors (members that are alive or suspect, and our own);
        ``no_relay``: members that opted out of relaying."""
        c = self.config
        direct = leg(vectors, self.me, self.peer)
        if direct.state is LegState.UP:
            if self._direct_up_since is None:
                self._direct_up_since = now
        else:
            self._direct_up_since = None
        candidates = relay_candidates(vectors, self.me, self.peer, no_relay)
        best = candidates[0] if candidates else None

        published = self._leaders_route(vectors, direct, candidates)
        if published is not None:
            if published != self._route:
                self._set(published, f"{published}, as the pair's leader {self.peer} has it")
            return self._route

        cur = self._route
        if cur.kind is RouteKind.DIRECT:
            if direct.state is LegState.DOWN:
                if best is None:
                    self._set(UNREACHABLE, "direct path down, no relay has both legs up")
                else:
                    self._set(ReachRoute.via(best.relay), f"direct path down; best relay, {best.score_ms} ms")
            return self._route

        up_for = now - self._direct_up_since if self._direct_up_since is not None else -math.inf
        if cur.kind is RouteKind.UNREACHABLE:
            if direct.state is LegState.UP:
                self._set(DIRECT, "direct path up")
            elif best is not None:
                self._set(ReachRoute.via(best.relay), f"relay available, {best.score_ms} ms")
            return self._route

        # On a relay.
        if up_for >= c.failback_hold:
            self._set(DIRECT, f"direct path up for {up_for:.0f} s: fail back")
            return self._route
        current = next((x for x in candidates if x.relay == cur.relay), None)
        if current is None:
            if direct.state is LegState.UP:
                self._set(DIRECT, f"relay {cur.relay} lost a leg; direct path is up")
            elif best is None:
                self._set(UNREACHABLE, f"relay {cur.relay} lost a leg, no other relay")
            else:
                self._set(ReachRoute.via(best.relay), f"relay {cur.relay} lost a leg")
            return self._route
        assert best is not None  # current is a candidate
        if best.relay != current.relay and c.better(best.score_ms, current.score_ms):
            if self._better_since is None:
                self._better_since = now
            if now - self._better_since >= c.switch_hold:
                self._set(
                    ReachRoute.via(best.relay),
                    f"{best.score_ms} ms beat {current.score_ms} ms via {cur.relay} for {c.switch_hold:g} s",
                )
        else:
            self._better_since = None
        return self._route


class RoutePlanner:
    """One :class:`RelaySelector` per peer, created and dropped with membership."""

    def __init__(self, me: str, config: SelectorConfig | None = None) -> None:
        self.me = me
        self.config = config or SelectorConfig()
        self._selectors: dict[str, RelaySelector] = {}

    def update(
        self, vectors: Vectors, peers: Iterable[str], now: float, no_relay: Collection[str] = frozenset()
    ) -> dict[str, ReachRoute]:
        """Routes to every peer in ``peers`` (this machine's live transit peers); ``no_relay``: members
        that opted out of relaying."""
        wanted = {p for p in peers if p != self.me}
        for gone in set(self._selectors) - wanted:
            del self._selectors[gone]
        out: dict[str, ReachRoute] = {}
        for p in sorted(wanted):
            sel = self._selectors.get(p)
            if sel is None:
                sel = self._selectors[p] = RelaySelector(self.me, p, self.config)
            out[p] = sel.update(vectors, now, no_relay)
        return out

    def selector(self, peer: str) -> RelaySelector | None:
        return self._selectors.get(peer)

    def next_deadline(self) -> float:
        return min((s.next_deadline() for s in self._selectors.values()), default=math.inf)


__all__ = [
    "Candidate",
    "Leg",
    "LegState",
    "RelaySelector",
    "RoutePlanner",
    "SelectorConfig",
    "Vectors",
    "best_relay",
    "leg",
    "relay_candidates",
]
