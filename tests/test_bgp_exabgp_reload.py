"""The real ExaBGP 5.0.15 on loopback (no root, no namespaces): a reload that removes a neighbor, or only
changes its settings, while ExaBGP is still opening a session to it, with a route queued for it.

The neighbor is a socket in this test that accepts the TCP connection and never answers the OPEN, so
ExaBGP sits in OPENSENT with our route in its adj-rib-out; ExaBGP drops a reload in that state
(``Reactor.run``: ``_pending_adjribout``). The supervisor must get the reload applied anyway (ExaBGP's
own peer list no longer has the neighbor, or its configuration shows the new settings) and the session
table fed from ExaBGP's events, configured from the resyncs as the speaker does, must not show a
removed one. ``bgp.openwait`` is cut to a few seconds so
that ExaBGP's wait for the OPEN, which keeps the route queued, ends within the test.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
import trio

from agent.bgp.api import Announce, ShowConfiguration, ShowNeighbors, summary_addresses
from agent.bgp.config import Neighbor
from agent.bgp.lifecycle import ReloadReason, Resync
from agent.bgp.status import SessionTable
from agent.bgp.supervisor import (
    ExaBGPSupervisor,
    SpeakerDown,
    SpeakerUp,
    SupervisorOptions,
    default_exabgp_argv,
)

pytestmark = pytest.mark.integration

LOCAL = "127.0.0.1"
STALLED = "127.0.0.2"  # accepts TCP, never sends an OPEN
KEPT = "127.0.0.3"  # nothing listens: connection refused, the neighbor stays configured
OPENWAIT = 5  # seconds; ExaBGP's default is 60
WAIT = 40.0
ROUTE = "100.96.0.10/32"


@contextmanager
def stalling_listener() -> Iterator[socket.socket]:
    sock = socket.socket()
    try:
        sock.bind((STALLED, 0))
        sock.listen(8)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


def neighbor(address: str, port: int) -> Neighbor:
    # listen=False: ExaBGP binds no socket, so nothing here can collide with another test's port
    return Neighbor(address, 65001, 65000, LOCAL, local_address=LOCAL, listen=False, port=port)


@pytest.mark.parametrize("change", ["removed", "changed"])
async def test_a_neighbor_removed_or_changed_while_connecting_is_applied_by_exabgp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, change: str
) -> None:
    caplog.set_level(logging.WARNING, logger="wiremesh.bgp")
    with stalling_listener() as listener:
        port = listener.getsockname()[1]
        held: list[socket.socket] = []
        table = SessionTable()
        resyncs: list[Resync] = []
        sup: ExaBGPSupervisor

        async def on_resync(resync: Resync) -> None:
            """What the speaker does: configure the table, then give the listed neighbors our route."""
            table.configure(n.address for n in sup.neighbors)
            for address in sorted(resync.neighbors):
                await sup.send(Announce(ROUTE, neighbor=address))
            resyncs.append(resync)

        options = SupervisorOptions(
            state_dir=tmp_path / "state",
            exabgp_argv=default_exabgp_argv(),
            env={"exabgp_bgp_openwait": str(OPENWAIT)},
            reload_window=0.1,
            reload_retry_initial=0.2,
            reload_retry_max=0.5,
            reload_attempts=int(WAIT / 0.5),
            stop_timeout=3.0,
        )
        sup = ExaBGPSupervisor(options, [neighbor(STALLED, port), neighbor(KEPT, port)], on_resync=on_resync)

        async def accept() -> None:
            while True:
                await trio.lowlevel.wait_readable(listener)
                conn, _ = listener.accept()
                held.append(conn)  # kept open, never read or written

        async def events() -> None:
            async for event in sup.events:
                if not isinstance(event, SpeakerUp | SpeakerDown):
                    table.apply(event, trio.current_time())

        async def held_by_exabgp() -> frozenset[str]:
            return summary_addresses(await sup.send(ShowNeighbors()))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept)
                await nursery.start(sup.run)
                nursery.start_soon(events)
                with trio.fail_after(WAIT):
                    while not (held and resyncs):  # OPENSENT, with the route queued for it
                        await trio.sleep(0.05)
                assert resyncs[0].reason is ReloadReason.START
                assert await held_by_exabgp() == {STALLED, KEPT}

                if change == "removed":
                    sup.set_neighbors([neighbor(KEPT, port)])
                else:  # a mesh session turned into one to a reflector's BIRD changes settings only
                    sup.set_neighbors([replace(neighbor(STALLED, port), hold_time=30), neighbor(KEPT, port)])
                with trio.fail_after(WAIT):
                    while len(resyncs) < 2:
                        await trio.sleep(0.05)
                # the case at hand: ExaBGP dropped the first reload, a later one got through
                assert any("did not apply the reload (try 1)" in r.getMessage() for r in caplog.records)
                if change == "removed":
                    assert resyncs[1] == Resync(ReloadReason.RELOAD, frozenset(), frozenset({STALLED}))
                    assert await held_by_exabgp() == {KEPT}
                    # ExaBGP's last words about it, and anything after, leave the table alone
                    await trio.sleep(1.0)
                    assert await held_by_exabgp() == {KEPT}
                    assert [s.address for s in table.snapshot(trio.current_time())] == [KEPT]
                else:
                    assert resyncs[1] == Resync(ReloadReason.RELOAD, frozenset({STALLED}), frozenset())
                    shown = "\n".join(await sup.send(ShowConfiguration()))
                    block = re.search(rf"neighbor {re.escape(STALLED)} {{(.*?)\n}}", shown, re.S)
                    assert block is not None and "hold-time 30;" in block.group(1)
                nursery.cancel_scope.cancel()
        finally:
            for conn in held:
                conn.close()
