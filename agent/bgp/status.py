"""Per-neighbor session status from ExaBGP's events: state, since when, prefixes received, last error.

This is what ``/v1/bgp/neighbors`` and ``wiremesh bgp neighbors`` show (prefixes out come from
:class:`agent.bgp.adjout.AdjRibOut`). It also says when a peer's paths stop being valid: every
prefix a peer sent is dropped when its session leaves ``up`` or ExaBGP goes away, and
:meth:`SessionTable.apply` returns those prefixes so the caller can withdraw them from the RIB.
No I/O; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from agent.bgp.api import EndOfRib, Event, Notification, PeerState, SessionState, Shutdown, Update

IDLE = "idle"  # configured, nothing heard yet


@dataclass(frozen=True, slots=True)
class NeighborStatus:
    address: str
    state: str  # idle, connected, up, down
    since: float | None  # when the state was entered (the caller's clock)
    uptime: float | None  # seconds up, None unless up
    prefixes_in: int
    prefixes_out: int
    last_error: str | None
    end_of_rib: bool  # the peer finished its initial table since the session came up


@dataclass(slots=True)
class _Session:
    state: str = IDLE
    since: float | None = None
    prefixes: set[str] = field(default_factory=set)
    last_error: str | None = None
    end_of_rib: bool = False
    paths: dict[str, set[int]] = field(default_factory=dict)  # ADD-PATH: per prefix, its path ids

    def all_prefixes(self) -> set[str]:
        return self.prefixes | self.paths.keys()


class SessionTable:
    def __init__(self, neighbors: Iterable[str] = ()) -> None:
        self._sessions: dict[str, _Session] = {a: _Session() for a in neighbors}
        # Taken out by configure(): their events still queued (or a peer ExaBGP failed to drop) must
        # not bring them back as a "down" neighbor nobody planned. Until ExaBGP's next life.
        self._removed: set[str] = set()
        # The neighbors last handed to ExaBGP (:meth:`expect`). A resync configures the table for the
        # reload it confirmed, which may be older than the plan handed over since: what that plan has
        # is neither dropped nor silenced, or an "up" it already brought would be lost.
        self._expected: frozenset[str] = frozenset()

    def configure(self, neighbors: Iterable[str]) -> frozenset[str]:
        """The configured set changed; returns the addresses no longer configured."""
        wanted = set(neighbors)
        dropped = frozenset(a for a in self._sessions if a not in wanted and a not in self._expected)
        for a in dropped:
            del self._sessions[a]
        for a in wanted:
            self._sessions.setdefault(a, _Session())
        self._removed = (self._removed | dropped) - wanted
        return dropped

    def expect(self, neighbors: Iterable[str]) -> None:
        """These are about to be handed to ExaBGP (the reload not yet confirmed, so not configured yet):
        their events count from now, since a session may come up before the reload's confirmation, and
        a resync of an older reload does not take them out."""
        self._expected = frozenset(neighbors)
        self._removed -= self._expected

    def prefixes(self, neighbor: str) -> frozenset[str]:
        session = self._sessions.get(neighbor)
        return frozenset(session.all_prefixes()) if session else frozenset()

    def apply(self, event: Event, now: float) -> dict[str, frozenset[str]]:
        """Record ``event``; returns, per neighbor, the prefixes it invalidated (a session that went
        down loses everything it sent). Empty for most events."""
        if isinstance(event, Shutdown):
            return self.speaker_down("exabgp shut down", now)
        if event.peer.address in self._removed:
            return {}
        if (
            isinstance(event, PeerState)
            and event.state is SessionState.DOWN
            and event.peer.address not in self._sessions
        ):
            return {}  # the last word of a neighbor a reload just removed: nothing to keep or drop
        session = self._sessions.setdefault(event.peer.address, _Session())
        if isinstance(event, PeerState):
            return self._state(event.peer.address, session, event, now)
        if isinstance(event, Update):
            session.prefixes.difference_update(event.withdrawn)
            for prefix, path_id in event.withdrawn_paths:
                ids = session.paths.get(prefix)
                if ids is not None:
                    ids.discard(path_id)
                    if not ids:
                        del session.paths[prefix]
            for route in event.announced:
                if route.path_id is None:
                    session.prefixes.add(route.prefix)
                else:
                    session.paths.setdefault(route.prefix, set()).add(route.path_id)
        elif isinstance(event, EndOfRib):
            session.end_of_rib = True
        elif isinstance(event, Notification):
            session.last_error = f"notification {event.direction} {event.code}/{event.subcode}" + (
                f": {event.message}" if event.message else ""
            )
        return {}

    def _state(
        self, address: str, session: _Session, event: PeerState, now: float
    ) -> dict[str, frozenset[str]]:
        if event.state.value != session.state:
            session.state = event.state.value
            session.since = now
        if event.state is SessionState.UP:
            session.end_of_rib = False
        if event.state is not SessionState.DOWN:
            return {}  # "connected" only says a TCP connection opened; the paths stay until "down"
        if event.reason:
            session.last_error = event.reason
        return self._drop(address, session)

    def speaker_down(self, reason: str, now: float) -> dict[str, frozenset[str]]:
        """ExaBGP exited or was killed: every session is gone with it."""
        self._removed.clear()  # the next ExaBGP reads the plan afresh: no removed peer survives
        out: dict[str, frozenset[str]] = {}
        for address, session in self._sessions.items():
            if session.state != SessionState.DOWN.value:
                session.state = SessionState.DOWN.value
                session.since = now
            session.last_error = reason
            out.update(self._drop(address, session))
        return out

    @staticmethod
    def _drop(address: str, session: _Session) -> dict[str, frozenset[str]]:
        session.end_of_rib = False
        gone = frozenset(session.all_prefixes())
        session.prefixes.clear()
        session.paths.clear()
        return {address: gone} if gone else {}

    def snapshot(self, now: float, prefixes_out: Mapping[str, int] | None = None) -> list[NeighborStatus]:
        out = prefixes_out or {}
        return [
            NeighborStatus(
                address=a,
                state=s.state,
                since=s.since,
                uptime=(now - s.since) if s.state == SessionState.UP.value and s.since is not None else None,
                prefixes_in=len(s.all_prefixes()) if s.paths else len(s.prefixes),
                prefixes_out=out.get(a, 0),
                last_error=s.last_error,
                end_of_rib=s.end_of_rib,
            )
            for a, s in sorted(self._sessions.items())
        ]
