"""Many namespaces' kernel routes, watched through netlink events rather than polled.

A poll of a hundred namespaces takes longer than the gaps it is looking for: a route deleted and put
back between two rounds is never seen. Here each namespace gets a netlink socket subscribed to IPv4
route changes (made by a thread inside the namespace, so it stays there), one reader thread applies
every ``RTM_NEWROUTE`` / ``RTM_DELROUTE`` as it arrives, and a prefix that disappears and later comes
back is recorded as a :class:`Gap` with the wall times of both. The agents' own codec
(:mod:`agent.kernel.fib`) parses the messages.

If a socket's buffer overflows (``ENOBUFS``: the kernel dropped events) that namespace is dumped again
and the overflow counted: gaps are then only as good as the dump, and the caller should say so.
"""

from __future__ import annotations

import errno
import selectors
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from agent.kernel.fib import NETLINK_ROUTE, RTM_DELROUTE, RTM_NEWROUTE, KernelFib, parse_messages, parse_route
from labs.kit.netns import in_netns

RTMGRP_IPV4_ROUTE = 0x40
SO_RCVBUFFORCE = 33  # root may raise the buffer past rmem_max
BUFFER = 8 << 20
MAIN_TABLE = 254


@dataclass
class Gap:
    """``prefix`` was missing from ``node``'s kernel from ``gone`` until ``back`` (None: still)."""

    node: str
    prefix: str
    gone: float
    back: float | None = None

    def seconds(self, until: float) -> float:
        return (self.back if self.back is not None else until) - self.gone


class RouteWatch:
    """The routes of kernel protocol ``protocol`` in each of ``namespaces`` (node name -> namespace),
    current to the last event, and every gap since :meth:`start`. A context manager."""

    def __init__(
        self, namespaces: Mapping[str, str], *, protocol: int = 200, table: int = MAIN_TABLE
    ) -> None:
        self.namespaces = dict(namespaces)
        self.protocol = protocol
        self.table = table
        self.overflows = 0
        self._lock = threading.Lock()
        self._routes: dict[str, dict[str, list[str]]] = {}
        self._gaps: list[Gap] = []
        self._open: dict[tuple[str, str], Gap] = {}
        self._events: dict[str, socket.socket] = {}
        self._dumpers: dict[str, KernelFib] = {}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RouteWatch:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Subscribe in every namespace first, then dump each: an event between the two is applied
        on top of the dump, never lost."""
        for node, ns in self.namespaces.items():
            sock = in_netns(ns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
            self._events[node] = sock
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, BUFFER)
            sock.bind((0, RTMGRP_IPV4_ROUTE))
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, node)
            self._dumpers[node] = in_netns(ns, lambda: KernelFib(protocol=self.protocol, table=self.table))
        for node in self.namespaces:
            self._load(node)
        self._thread = threading.Thread(target=self._read, name="routewatch", daemon=True)
        self._thread.start()

    def _load(self, node: str) -> None:
        routes = {str(p): sorted(map(str, hops)) for p, hops in self._dumpers[node].dump().items()}
        with self._lock:
            self._routes[node] = routes

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.2):
                node: str = key.data
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                while True:
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno != errno.ENOBUFS:
                            raise
                        self.overflows += 1
                        self._load(node)
                        continue
                    self._apply(node, data, time.time())

    def _apply(self, node: str, data: bytes, at: float) -> None:
        for kind, _seq, offset, length in parse_messages(data):
            if kind not in (RTM_NEWROUTE, RTM_DELROUTE):
                continue
            found = parse_route(data, offset, length, protocol=self.protocol, table=self.table)
            if found is None:
                continue
            prefix = str(found[0])
            with self._lock:
                routes = self._routes.setdefault(node, {})
                if kind == RTM_NEWROUTE:
                    routes[prefix] = sorted(map(str, found[1]))
                    gap = self._open.pop((node, prefix), None)
                    if gap is not None:
                        gap.back = at
                elif routes.pop(prefix, None) is not None:
                    gap = Gap(node, prefix, at)
                    self._open[(node, prefix)] = gap
                    self._gaps.append(gap)

    def routes(self, node: str) -> dict[str, list[str]]:
        """``node``'s routes now: prefix -> sorted gateways."""
        with self._lock:
            return dict(self._routes.get(node, {}))

    def gaps(self, since: float = 0.0) -> list[Gap]:
        """Every gap that began at or after ``since`` (wall time), the open ones included."""
        with self._lock:
            return [Gap(g.node, g.prefix, g.gone, g.back) for g in self._gaps if g.gone >= since]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._selector.close()
        for sock in self._events.values():
            sock.close()
        for fib in self._dumpers.values():
            fib.close()
