"""What each neighbor should have from us (Adj-RIB-Out as desired state) and the commands that get it
there.

The owner states the routes it wants per neighbor, after export policy; this object answers with the
API commands for the difference. It is also what answers "re-announce everything" after ExaBGP
restarts or a neighbor appears (:meth:`AdjRibOut.resync`), and the drain on shutdown: everything
again with GRACEFUL_SHUTDOWN (RFC 8326), then everything withdrawn. No I/O: the caller sends.

A command that fails leaves the desired state as it is; the next resync sends it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.bgp.api import Announce, Command, RouteAttributes, Withdraw, community_pair, normalize_prefix
from agent.routing import GRACEFUL_SHUTDOWN


class AdjRibOut:
    def __init__(self) -> None:
        self._routes: dict[str, dict[str, RouteAttributes]] = {}

    def neighbors(self) -> tuple[str, ...]:
        return tuple(self._routes)

    def routes(self, neighbor: str) -> Mapping[str, RouteAttributes]:
        return dict(self._routes.get(neighbor, {}))

    def count(self, neighbor: str) -> int:
        """Prefixes we send this neighbor (the "prefixes out" of ``wiremesh bgp neighbors``)."""
        return len(self._routes.get(neighbor, {}))

    def announce(self, neighbor: str, prefix: str, attributes: RouteAttributes) -> list[Command]:
        prefix = normalize_prefix(prefix)
        table = self._routes.setdefault(neighbor, {})
        if table.get(prefix) == attributes:
            return []
        table[prefix] = attributes
        return [Announce(prefix, attributes, neighbor=neighbor)]

    def withdraw(self, neighbor: str, prefix: str) -> list[Command]:
        prefix = normalize_prefix(prefix)
        table = self._routes.get(neighbor, {})
        if table.pop(prefix, None) is None:
            return []
        return [Withdraw(prefix, neighbor=neighbor)]

    def set_routes(self, neighbor: str, routes: Mapping[str, RouteAttributes]) -> list[Command]:
        """Make ``routes`` the whole set for ``neighbor``: withdrawals first, then announcements."""
        wanted = {normalize_prefix(p): a for p, a in routes.items()}
        current = self._routes.get(neighbor, {})
        commands: list[Command] = [Withdraw(p, neighbor=neighbor) for p in sorted(current) if p not in wanted]
        commands += [
            Announce(p, a, neighbor=neighbor) for p, a in sorted(wanted.items()) if current.get(p) != a
        ]
        self._routes[neighbor] = wanted
        return commands

    def forget(self, neighbor: str) -> None:
        """The neighbor is gone from the config: nothing to send it, nothing to withdraw."""
        self._routes.pop(neighbor, None)

    def resync(self, neighbors: Iterable[str]) -> list[Command]:
        """Everything desired for ``neighbors``, for a speaker that has none of it."""
        return [
            Announce(p, a, neighbor=n)
            for n in sorted(set(neighbors))
            for p, a in sorted(self._routes.get(n, {}).items())
        ]

    def graceful_shutdown(self) -> list[Command]:
        """Step one of a drain: every route again, tagged GRACEFUL_SHUTDOWN so that peers honouring
        RFC 8326 move traffic away before the withdrawal. The desired state is not changed."""
        return [
            Announce(p, a.with_communities(community_pair(GRACEFUL_SHUTDOWN)), neighbor=n)
            for n, table in sorted(self._routes.items())
            for p, a in sorted(table.items())
        ]

    def withdraw_all(self) -> list[Command]:
        """Step two of a drain, after the drain time: withdraw everything and forget it."""
        commands: list[Command] = [
            Withdraw(p, neighbor=n) for n, table in sorted(self._routes.items()) for p in sorted(table)
        ]
        self._routes.clear()
        return commands
