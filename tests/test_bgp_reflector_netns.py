"""Behind a real route reflector: BIRD 2 with the reflector role's config (:mod:`agent.bgp.birdconf`:
``rr client; add paths tx;``, listening on the reflector port) reflects between three
clients, each a real ExaBGP 5 under our supervisor with ``add-path receive``, its events fed through
our codec and ingest into a RIB with ECMP, each client in its own network namespace on one LAN.

Clients 1 and 2 announce the same VIP. Client 3 (announcing nothing) must hold both paths over its
one session, told apart by path id and ORIGINATOR_ID, as an ECMP pair; client 1 holds client 2's path
via the reflector. When client 2 withdraws, exactly that path leaves client 3's and client 1's RIB.
Without ADD-PATH the reflector would pass on its best path only and client 3 would see one announcer.

Needs root and Debian's ``bird2``. Everything started here is stopped by pid, and the namespaces are
deleted, also when the test fails (``labs.kit.netns.NetnsLab``).
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from agent.bgp.adjout import AdjRibOut
from agent.bgp.api import RouteAttributes
from agent.bgp.birdconf import REFLECTOR_PORT, ReflectorSpec, clients_of, render
from agent.bgp.config import AddPath, Neighbor
from agent.bgp.ingest import Ingest
from agent.bgp.lifecycle import Resync
from agent.bgp.status import SessionTable
from agent.bgp.supervisor import (
    ExaBGPSupervisor,
    SpeakerDown,
    SpeakerUp,
    SupervisorOptions,
    default_exabgp_argv,
)
from agent.routing import DecisionOptions, Prefix, Rib
from labs.kit.netns import NetnsLab
from labs.kit.proc import terminate
from labs.kit.wait import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

ASN = 65000
RR = "198.18.0.1"
CLIENTS = ("198.18.0.11", "198.18.0.12", "198.18.0.13")
VIP = "100.96.0.10/32"
WAIT = 30.0


@dataclass
class Client:
    """One machine's speaker side: the supervisor, what it wants announced, and its RIB."""

    address: str
    sup: ExaBGPSupervisor | None = None
    out: AdjRibOut = field(default_factory=AdjRibOut)
    rib: Rib = field(init=False)
    ingest: Ingest = field(init=False)
    pids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rib = Rib(
            router_id=ipaddress.IPv4Address(self.address), asn=ASN, options=DecisionOptions(max_paths=4)
        )
        self.ingest = Ingest(self.rib, SessionTable([RR]))

    async def on_resync(self, resync: Resync) -> None:
        assert self.sup is not None
        for command in self.out.resync(resync.neighbors):
            await self.sup.send(command)

    async def consume(self) -> None:
        assert self.sup is not None
        async for event in self.sup.events:
            if isinstance(event, SpeakerUp):
                self.pids.append(event.pid)
            elif isinstance(event, SpeakerDown):
                self.ingest.speaker_down(event.reason, trio.current_time())
            else:
                self.ingest.apply(event, trio.current_time())

    def vip(self) -> list[tuple[str, str | None, int]]:
        """The VIP's candidates in this RIB: (next hop, ORIGINATOR_ID, path id), sorted."""
        destination = self.rib.destination(Prefix.parse(VIP))
        if destination is None:
            return []
        return sorted(
            (
                str(p.attrs.next_hop),
                str(p.attrs.originator_id) if p.attrs.originator_id else None,
                p.path_id,
            )
            for p in destination.candidates
        )

    def next_hops(self) -> list[str]:
        selection = self.rib.selection(Prefix.parse(VIP))
        return [str(h) for h in selection.next_hops] if selection is not None else []


@dataclass
class Lab:
    net: NetnsLab
    namespaces: dict[str, str]

    def diagnostics(self) -> str:
        bird = self.net.procs[0]
        return bird.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    assert shutil.which("bird") and shutil.which("birdc"), "BIRD 2 is missing: apt-get install bird2"
    with NetnsLab(tmp_path / "lab") as net:
        net.add_node("rr", [RR])
        namespaces = {a: net.add_node(f"c{i}", [a]) for i, a in enumerate(CLIENTS)}
        machines = [(f"c{i}", a, ASN) for i, a in enumerate(CLIENTS)]  # the agent's own reflector config
        net.start_bird("rr", render(ReflectorSpec(RR, RR, ASN, RR, clients_of(machines), log="stderr")))
        yield Lab(net, namespaces)


async def test_clients_behind_bird_see_every_announcer_through_add_path(lab: Lab, tmp_path: Path) -> None:
    clients = [Client(a) for a in CLIENTS]
    one, two, three = clients
    for c in (one, two):
        c.out.announce(RR, VIP, RouteAttributes())  # sent by the START resync
    try:
        async with trio.open_nursery() as nursery:
            for c in clients:
                options = SupervisorOptions(
                    state_dir=tmp_path / f"exabgp-{c.address}",
                    exabgp_argv=("ip", "netns", "exec", lab.namespaces[c.address], *default_exabgp_argv()),
                    backoff_initial=0.5,
                )
                neighbor = Neighbor(
                    RR,
                    ASN,
                    ASN,
                    c.address,
                    local_address=c.address,
                    hold_time=9,
                    port=REFLECTOR_PORT,
                    listen=False,  # the reflector is passive: our ExaBGP connects out to its port
                    add_path=AddPath.RECEIVE,
                )
                c.sup = ExaBGPSupervisor(options, [neighbor], on_resync=c.on_resync)
                await nursery.start(c.sup.run)
                nursery.start_soon(c.consume)

            both = [(CLIENTS[0], CLIENTS[0], 0), (CLIENTS[1], CLIENTS[1], 0)]

            def three_has_both() -> bool:
                return [(h, o) for h, o, _ in three.vip()] == [(h, o) for h, o, _ in both]

            await eventually(
                three_has_both,
                what="client 3 to hold both announcers' paths over its one session",
                timeout=WAIT,
                poll=0.1,
                detail=lambda: f"{three.vip()}\n{lab.diagnostics()}",
            )
            ids = {path_id for _, _, path_id in three.vip()}
            assert len(ids) == 2, three.vip()  # told apart by path id, not replacing each other
            assert three.next_hops() == [CLIENTS[0], CLIENTS[1]]  # ECMP; client 1 first (lower originator)
            assert [p.peer.address for p in three.rib.destination(Prefix.parse(VIP)).candidates] == [  # type: ignore[union-attr]
                ipaddress.ip_address(RR)
            ] * 2
            best, other = three.rib.explain(Prefix.parse(VIP))
            assert str(best.path.attrs.originator_id) == CLIENTS[0]
            assert other.multipath and "Router ID" in other.reason() and "(originator)" in other.reason()

            await eventually(
                lambda: [(h, o) for h, o, _ in one.vip()] == [(CLIENTS[1], CLIENTS[1])],
                what="client 1 to hold client 2's path via the reflector",
                timeout=WAIT,
                poll=0.1,
                detail=lambda: f"{one.vip()}\n{lab.diagnostics()}",
            )

            assert two.sup is not None
            for command in two.out.withdraw_all():
                await two.sup.send(command)
            await eventually(
                lambda: [(h, o) for h, o, _ in three.vip()] == [(CLIENTS[0], CLIENTS[0])],
                what="only client 2's path to leave client 3's RIB",
                timeout=WAIT,
                poll=0.1,
                detail=lambda: f"{three.vip()}\n{lab.diagnostics()}",
            )
            assert three.next_hops() == [CLIENTS[0]]
            await eventually(
                lambda: one.vip() == [],
                what="client 2's path to leave client 1's RIB",
                timeout=WAIT,
                poll=0.1,
                detail=lambda: f"{one.vip()}\n{lab.diagnostics()}",
            )
            assert two.vip() == [(CLIENTS[0], CLIENTS[0], two.vip()[0][2])]  # client 2 still sees client 1
            nursery.cancel_scope.cancel()
    finally:
        for c in clients:
            for pid in c.pids:  # the supervisor stops ExaBGP itself; this only covers a bug in that
                terminate(pid)
