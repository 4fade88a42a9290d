"""Shared pieces of the web UI tests (no tests here): fakes for the sources :func:`agent.http.app.create_app`
reads (gossip node, live status, BGP speaker with a real RIB, transit report), an in-process app built
from them, and a real HTTP server for that app on loopback in a background thread, for the browser.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trio
from fastapi import FastAPI

from agent.announce.planner import Decision
from agent.cluster.objects import Kind
from agent.cluster.store import ObjectStore
from agent.health.verdict import Verdict
from agent.http.app import create_app, serve_api
from agent.kernel.fib import FibState
from agent.routing import AsPath, Attributes, Peer, PeerKind, Prefix, Rib
from gossip.events import MemberInfo, MemberState
from tests.fakes import FakeNode
from transit.report import PeerReport, TransitReport

TOKEN = "ui-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WALL = 1_700_000_000.0
LOCAL = "node-a"
RIB_PREFIX = "203.0.113.0/24"
ASN = 65000


def fake_node() -> FakeNode:
    members = [
        MemberInfo(LOCAL, ("127.0.0.1", 7000), 3, MemberState.ALIVE, 10.0, b""),
        MemberInfo("node-b", ("127.0.0.1", 7001), 1, MemberState.ALIVE, 10.0, b""),
        MemberInfo("node-c", ("127.0.0.1", 7002), 2, MemberState.SUSPECT, 10.0, b""),
    ]
    return FakeNode(LOCAL, members)


@dataclass
class FakeStatus:
    """Announcements and verdicts the test sets by hand."""

    announcing: dict[str, list[str]] = field(default_factory=dict)
    verdicts_by_machine: dict[str, dict[str, Verdict]] = field(default_factory=dict)

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        return self.announcing.get(name, [])

    def health(self, kind: Kind, name: str, machine: str) -> str:
        verdict = self.verdicts_by_machine.get(machine, {}).get(f"{kind.value}/{name}")
        return "unknown" if verdict is None else verdict.state

    def verdicts(self) -> dict[str, dict[str, Verdict]]:
        return self.verdicts_by_machine

    def all_decisions(self) -> tuple[float, dict[str, dict[str, Decision]]]:
        return 0.0, {}


def _peer(n: int, asn: int, kind: PeerKind = PeerKind.EXTERNAL) -> Peer:
    address = ipaddress.IPv4Address(f"198.18.0.{n}")
    return Peer(address, asn, address, kind)


def make_rib() -> Rib:
    """One destination learned three ways (two lose, for different reasons) and one local VIP."""
    rib = Rib(router_id=ipaddress.IPv4Address("198.18.255.1"), asn=ASN)
    short, long_, low = _peer(1, 65001), _peer(2, 65002), _peer(3, ASN, PeerKind.INTERNAL)
    for p in (short, long_, low):
        rib.peer_up(p)
    prefix = Prefix.parse(RIB_PREFIX)
    rib.announce(
        short,
        prefix,
        Attributes(
            next_hop=short.address, as_path=AsPath.of(65001), communities=frozenset({65001 << 16 | 100})
        ),
        now=1.0,
    )
    rib.announce(long_, prefix, Attributes(next_hop=long_.address, as_path=AsPath.of(65002, 65010)), now=2.0)
    rib.announce(
        low, prefix, Attributes(next_hop=low.address, as_path=AsPath.of(65020), local_pref=50), now=3.0
    )
    rib.originate(Prefix.parse("100.96.0.10/32"), Attributes(), now=4.0)
    rib.take_diff()
    return rib


@dataclass
class FakeSpeaker:
    """What ``/v1/rib`` and the Routing tab read of the BGP speaker (:class:`agent.http.bgp.SpeakerView`)."""

    machine: str = LOCAL
    router_id: str = "198.18.255.1"
    asn: int = ASN
    rib: Rib = field(default_factory=make_rib)
    fib_state: FibState = field(default_factory=FibState)

    def peer_name(self, address: str) -> str | None:
        return {"198.18.0.1": "node-b", "198.18.0.3": "node-c"}.get(address)

    def neighbor_views(self) -> list[Any]:
        return []


class FakePeers:
    """A transit report: node-b direct, node-c through node-b."""

    def report(self) -> TransitReport:
        def peer(name: str, path: str, relay: str | None, rtt: float | None) -> PeerReport:
            return PeerReport(
                name=name,
                public_key="k" * 43 + "=",
                mesh_address=f"100.64.0.{2 if name == 'node-b' else 3}",
                holds_address=True,
                member="alive",
                endpoint="127.0.0.1:51820",
                path=path,
                relay=relay,
                reason="direct path up" if relay is None else "no direct path; node-b reaches both",
                since=WALL - 60,
                direct="up" if relay is None else "down",
                direct_reason="handshake fresh",
                rtt_ms=rtt,
                direct_rtt_ms=rtt,
                loss=0.0,
                last_handshake=WALL - 12,
                rx_bytes=1,
                tx_bytes=2,
            )

        return TransitReport(
            name=LOCAL,
            interface="wm0",
            backend="userspace",
            public_key="p" * 43 + "=",
            mesh_address="100.64.0.1",
            holds_address=True,
            probe_address="100.64.0.1",
            listen_port=51820,
            endpoints=("127.0.0.1:51820",),
            errors=(),
            peers=(peer("node-b", "direct", None, 1.5), peer("node-c", "transit via node-b", "node-b", 4.2)),
        )


@dataclass
class Fakes:
    node: FakeNode = field(default_factory=fake_node)
    status: FakeStatus = field(default_factory=FakeStatus)
    speaker: FakeSpeaker = field(default_factory=FakeSpeaker)
    peers: FakePeers = field(default_factory=FakePeers)
    store: ObjectStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = ObjectStore(LOCAL, lambda: frozenset(m.name for m in self.node.members()))

    def app(self, *, clock: Any = time.monotonic, wall_clock: Any = time.time) -> FastAPI:
        return create_app(
            self.node,
            token=TOKEN,
            store=lambda: self.store,
            status=self.status,
            peers=self.peers,
            bgp=self.speaker,
            clock=clock,
            wall_clock=wall_clock,
        )


def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 (a free port) from a thread running its own Trio loop; yields the base
    URL, then stops the server (graceful shutdown) and joins the thread."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        with trio.CancelScope() as scope:
            box["scope"] = scope
            box["token"] = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                box["port"] = await nursery.start(serve_api, app, "127.0.0.1:0")
                started.set()

    def run() -> None:
        try:
            trio.run(main)
        except BaseException as exc:  # reported to the test below
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=run, name="ui-test-server", daemon=True)
    thread.start()
    started.wait(timeout=30)
    if "port" not in box:
        thread.join(timeout=5)
        raise RuntimeError(f"test server did not start: {box.get('error')!r}")
    try:
        yield f"http://127.0.0.1:{box['port']}"
    finally:
        trio.from_thread.run_sync(box["scope"].cancel, trio_token=box["token"])
        thread.join(timeout=10)
