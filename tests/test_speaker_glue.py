"""The speaker's composition against a stand-in ExaBGP (``fixtures/exabgp/fake_exabgp.py``, which
reports every configured neighbor up and logs every command), a fake gossip node, the real object
store, and fake kernel backends: decisions become commands after the export policy as soon as the
announcer publishes, routes received become FIB operations (never for our own VIP), a dead member's
paths leave the FIB at once, and a shutdown drain tags then withdraws."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from agent.announce.planner import Decision, Reason
from agent.bgp.api import ApiPeer, ApiRoute, PeerState, RouteAttributes, SessionState, Update
from agent.bgp.speaker import BgpSpeaker, RoutedPrefixes, WireStatus
from agent.bgp.supervisor import SupervisorOptions
from agent.cluster.objects import Kind
from agent.cluster.store import ObjectStore
from agent.config.bgp import BgpSettings, ExternalPeer
from agent.health.verdict import Verdict
from agent.kernel.fib import FibOp, NextHops, OpKind
from agent.published import ANNOUNCE_KEY, BGP, BGP_KEY, SpeakerInfo
from agent.routing import Prefix
from common.address import IPAddress
from gossip.codec import Refusals
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from labs.kit.wait import eventually

FAKE = Path(__file__).parent / "fixtures" / "exabgp" / "fake_exabgp.py"
ME, PEER, ROUTER = "198.18.0.10", "198.18.0.11", "198.18.0.1"
ME_MESH, PEER_MESH = "100.64.0.10", "100.64.0.11"
WAIT = 20.0


def decode_info(data: bytes | None) -> SpeakerInfo | None:
    return BGP.decode(data, "me", Refusals())


class FakeGossip:
    def __init__(self) -> None:
        self.others: dict[str, MemberInfo] = {}
        self.kv: dict[str, bytes | None] = {}
        self._subscribers: list[trio.MemorySendChannel[MemberEvent]] = []

    def members(self) -> list[MemberInfo]:
        me = MemberInfo(
            "m1", (ME, 7946), 1, MemberState.ALIVE, 0.0, b"", {k: (1, v) for k, v in self.kv.items()}
        )
        return [me, *self.others.values()]

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        send, receive = trio.open_memory_channel[MemberEvent](max_buffer)
        self._subscribers.append(send)
        return receive

    async def set_kv(self, key: str, value: bytes | None) -> None:
        self.kv[key] = value

    def emit(self, kind: EventKind, name: str, key: str | None = None) -> None:
        addr = (ME, 7946) if name == "m1" else self.others[name].addr
        for send in self._subscribers:
            send.send_nowait(MemberEvent(kind, name, 1, addr, trio.current_time(), key))

    def set_member(self, name: str, address: str, state: MemberState, mesh: str | None = None) -> None:
        info = BGP.encode(SpeakerInfo(64512, address, address, (), mesh))
        self.others[name] = MemberInfo(name, (address, 7946), 1, state, 0.0, b"", {BGP_KEY: (1, info)})


@dataclass
class FakeFib:
    routes: dict[Prefix, NextHops] = field(default_factory=dict)
    ops: list[FibOp] = field(default_factory=list)
    closed: bool = False

    def apply(self, ops: list[FibOp]) -> list[str | None]:
        for op in ops:
            self.ops.append(op)
            if op.kind is OpKind.DELETE:
                self.routes.pop(op.prefix, None)
            else:
                self.routes[op.prefix] = op.next_hops
        return [None] * len(ops)

    def dump(self) -> dict[Prefix, NextHops]:
        return dict(self.routes)

    def flush(self) -> int:
        count = len(self.routes)
        self.routes.clear()
        return count

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeAddresses:
    present: set[IPAddress] = field(default_factory=set)

    def reconcile(self, desired: Iterable[IPAddress]) -> list[str]:
        self.present = set(desired)
        return []

    def flush(self) -> list[str]:
        self.present.clear()
        return []


@dataclass
class Harness:
    speaker: BgpSpeaker
    node: FakeGossip
    store: ObjectStore
    decisions: dict[str, Decision]
    fib: FakeFib
    addresses: FakeAddresses
    log: Path

    def commands(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def diagnostics(self) -> str:
        """What a failed wait shows: the commands sent to the speaker, and the FIB."""
        return f"commands: {self.commands()}; fib: {self.fib.routes}"

    def decide(self, key: str, announce: bool) -> None:
        self.decisions[key] = Decision(announce, Reason.NO_CHECK if announce else Reason.WITHDRAWN_DISABLED)
        self.node.emit(EventKind.KV, "m1", ANNOUNCE_KEY)  # what the announcer's publication looks like


TAG = {
    "name": "tag",
    "rules": [
        {
            "match": {"prefix_list": [{"prefix": "100.96.0.0/16", "le": 32}]},
            "actions": {"set_med": 50, "communities": {"add": ["64512:100"]}, "as_prepend": {"asn": 64512}},
        }
    ],
    "default": "reject",
}


@asynccontextmanager
async def running(
    tmp_path: Path, drain_time: float = 0.5, routed: list[RoutedPrefixes] | None = None
) -> AsyncIterator[Harness]:
    """``routed`` given: the mesh runs (m2 has mesh address PEER_MESH), and it collects what the
    speaker hands to transit."""
    node = FakeGossip()
    node.set_member("m2", PEER, MemberState.ALIVE, PEER_MESH if routed is not None else None)
    store = ObjectStore("m1", lambda: {"m1", "m2"})
    store.create(Kind.POLICY_SET, TAG, 1)
    store.patch(Kind.MACHINE, "m1", {"export_policies": ["tag"]}, 2)
    store.create(Kind.VIP, {"name": "web", "address": "100.96.0.10", "machines": ["m1"]}, 3)
    decisions: dict[str, Decision] = {}
    log = tmp_path / "commands.log"
    fib, addresses = FakeFib(), FakeAddresses()
    fib.routes[Prefix.parse("192.0.2.0/24")] = (ipaddress.ip_address(ROUTER),)  # left by a previous run
    settings = BgpSettings(enabled=True, drain_time=drain_time, peers=(ExternalPeer(ROUTER, 65000),))
    speaker = BgpSpeaker(
        settings,
        machine="m1",
        address=ME,
        store=store,
        node=node,
        decisions=lambda: decisions,
        supervisor=SupervisorOptions(
            state_dir=tmp_path / "state",
            exabgp_argv=(sys.executable, str(FAKE)),
            env={"FAKE_EXABGP_LOG": str(log)},
            reload_window=0.1,
            stop_timeout=3.0,
        ),
        fib=fib,
        addresses=addresses,
        mesh=routed is not None,
        routed=routed.append if routed is not None else None,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(speaker.run)
        try:
            yield Harness(speaker, node, store, decisions, fib, addresses, log)
        finally:
            nursery.cancel_scope.cancel()


def update(peer_address: str, asn: int, *prefixes: str) -> Update:
    peer = ApiPeer(peer_address, ME, asn, 64512)
    attrs = RouteAttributes(as_path=(asn,) if asn != 64512 else ())
    return Update(peer, tuple(ApiRoute(p, peer_address, attrs) for p in prefixes))


async def test_decisions_go_out_through_the_export_policy(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        await eventually(
            lambda: len(h.speaker.neighbor_views()) == 2,
            what="both sessions configured",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        assert h.addresses.present == {ipaddress.ip_address("100.96.0.10")}  # assigned: on lo at once
        h.decide("vip/web", True)
        ebgp = (
            f"neighbor {ROUTER} announce route 100.96.0.10/32 next-hop self origin igp "
            "as-path [ 64512 64512 ] med 50 community [ 64512:100 ]"
        )
        ibgp = (
            f"neighbor {PEER} announce route 100.96.0.10/32 next-hop self origin igp "
            "as-path [ 64512 ] med 50 community [ 64512:100 ]"
        )
        await eventually(
            lambda: {ebgp, ibgp} <= set(h.commands()),
            what="the VIP to both neighbors",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )

        def published() -> bool:
            info = decode_info(h.node.kv.get(BGP_KEY))
            return info is not None and info.sent == ("vip/web",)

        await eventually(
            published, what="the sent keys published", timeout=WAIT, poll=0.02, detail=h.diagnostics
        )
        status = WireStatus(_Decided(), h.speaker)
        assert status.announced_by(Kind.VIP, "web") == ["m1"]

        h.decide("vip/web", False)
        await eventually(
            lambda: (
                {
                    f"neighbor {ROUTER} withdraw route 100.96.0.10/32",
                    f"neighbor {PEER} withdraw route 100.96.0.10/32",
                }
                <= set(h.commands())
            ),
            what="the withdrawals",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        # A policy change alone re-exports: the VIP no longer matches, the default rejects.
        h.decide("vip/web", True)
        await eventually(
            lambda: h.commands().count(ebgp) == 2,
            what="announced again",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        h.store.patch(Kind.MACHINE, "m1", {"export_policies": []}, 10)
        plain = f"neighbor {ROUTER} announce route 100.96.0.10/32 next-hop self origin igp"
        await eventually(
            lambda: plain in h.commands(),
            what="re-announced without the policy's attributes",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )


class _Decided:
    """A status provider with no decisions: announced_by must come from the wire."""

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        return []

    def health(self, kind: Kind, name: str, machine: str) -> str:
        return "unknown"

    def verdicts(self) -> dict[str, dict[str, Verdict]]:
        return {}

    def all_decisions(self) -> tuple[float, dict[str, dict[str, Decision]]]:
        return 0.0, {}


async def test_received_routes_reach_the_fib_and_a_dead_member_leaves_it_at_once(tmp_path: Path) -> None:
    async with running(tmp_path) as h:
        sp = h.speaker
        await eventually(
            lambda: Prefix.parse("192.0.2.0/24") not in h.fib.routes,
            what="the leftover route removed",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        await eventually(
            lambda: [v.status.state for v in sp.neighbor_views()] == ["up", "up"],
            what="both sessions up",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )  # so that the stand-in's own "up" events cannot arrive after ours and reset the sessions
        now = trio.current_time()
        for event in (
            PeerState(ApiPeer(PEER, ME, 64512, 64512), SessionState.UP),
            PeerState(ApiPeer(ROUTER, ME, 65000, 64512), SessionState.UP),
            update(PEER, 64512, "100.96.1.2/32", "100.96.0.10/32"),
            update(ROUTER, 65000, "203.0.113.0/24", "100.96.1.2/32"),
        ):
            sp._apply_event(event, now)
        sp._rib_changed()
        peer, router = ipaddress.ip_address(PEER), ipaddress.ip_address(ROUTER)
        want = {Prefix.parse("203.0.113.0/24"): (router,), Prefix.parse("100.96.1.2/32"): (peer,)}
        # 100.96.1.2/32: the mesh path wins at AS Path (0 vs 1); 100.96.0.10/32, our own VIP, never goes in.
        await eventually(
            lambda: h.fib.routes == want, what="the FIB", timeout=WAIT, poll=0.02, detail=h.diagnostics
        )
        assert Prefix.parse("100.96.0.10/32") not in h.fib.routes

        sp._apply_event(
            PeerState(ApiPeer(ROUTER, ME, 65000, 64512), SessionState.DOWN, "hold timer expired"), now
        )
        sp._rib_changed()
        await eventually(
            lambda: h.fib.routes == {Prefix.parse("100.96.1.2/32"): (peer,)},
            what="the router's route gone",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )

        killed = trio.current_time()
        h.node.set_member("m2", PEER, MemberState.DEAD)
        h.node.emit(EventKind.DEAD, "m2")
        await eventually(
            lambda: h.fib.routes == {}, what="m2's path gone", timeout=WAIT, poll=0.02, detail=h.diagnostics
        )
        assert trio.current_time() - killed < 1.0
        views = {v.address: v for v in sp.neighbor_views()}
        assert views[ROUTER].status.last_error == "hold timer expired"

        h.node.set_member("m2", PEER, MemberState.ALIVE)
        h.node.emit(EventKind.ALIVE, "m2")
        await eventually(
            lambda: h.fib.routes == {Prefix.parse("100.96.1.2/32"): (peer,)},
            what="m2's path back",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
    assert h.fib.routes == {} and h.fib.closed  # removed on exit
    assert h.addresses.present == set()


async def test_shutdown_drain_tags_then_withdraws(tmp_path: Path) -> None:
    async with running(tmp_path, drain_time=0.5) as h:
        await eventually(
            lambda: len(h.speaker.neighbor_views()) == 2,
            what="sessions configured",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        h.decide("vip/web", True)
        await eventually(
            lambda: any("announce route 100.96.0.10/32" in c for c in h.commands()),
            what="announced",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        start = trio.current_time()
        await h.speaker.drain_for_shutdown()
        took = trio.current_time() - start
        commands = [c for c in h.commands() if c.startswith(f"neighbor {ROUTER}")]
        tagged = next(i for i, c in enumerate(commands) if "65535:0" in c)
        withdrawn = commands.index(f"neighbor {ROUTER} withdraw route 100.96.0.10/32")
        assert tagged < withdrawn
        assert 0.5 <= took < 3.0


async def test_over_the_mesh_nothing_is_published_until_the_mesh_address_is_up(tmp_path: Path) -> None:
    routed: list[RoutedPrefixes] = []
    async with running(tmp_path, routed=routed) as h:
        sp = h.speaker
        await eventually(
            lambda: len(sp.neighbor_views()) == 1,
            what="the external session configured",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        await trio.sleep(0.3)
        assert BGP_KEY not in h.node.kv  # no mesh session may start on the underlay
        assert [v.address for v in sp.neighbor_views()] == [ROUTER]

        sp.set_mesh_address(ME_MESH)  # what the transit driver says once the address is up
        await eventually(
            lambda: {v.address for v in sp.neighbor_views()} == {ROUTER, PEER_MESH},
            what="the mesh session configured",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        await eventually(
            lambda: decode_info(h.node.kv.get(BGP_KEY)) is not None,
            what="published",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        info = decode_info(h.node.kv.get(BGP_KEY))
        assert info is not None and info.mesh == ME_MESH and info.address == ME
        (mesh_neighbor,) = [n for n in sp.supervisor.neighbors if n.address == PEER_MESH]
        assert mesh_neighbor.local_address == ME_MESH and mesh_neighbor.passive  # the lower address waits

        # A route from the peer over the mesh: in the FIB via its mesh address, and handed to transit
        # for that peer's AllowedIPs; the external router's route is not.
        now = trio.current_time()
        for event in (
            PeerState(ApiPeer(PEER_MESH, ME_MESH, 64512, 64512), SessionState.UP),
            PeerState(ApiPeer(ROUTER, ME, 65000, 64512), SessionState.UP),
            update(PEER_MESH, 64512, "100.96.1.2/32"),
            update(ROUTER, 65000, "203.0.113.0/24"),
        ):
            sp._apply_event(event, now)
        sp._rib_changed()
        peer_mesh = ipaddress.ip_address(PEER_MESH)
        await eventually(
            lambda: h.fib.routes.get(Prefix.parse("100.96.1.2/32")) == (peer_mesh,),
            what="the FIB",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        assert routed[-1] == {peer_mesh: frozenset({ipaddress.ip_network("100.96.1.2/32")})}

        sp.set_mesh_address(None)  # refused: another machine holds the address; back to the underlay
        await eventually(
            lambda: {n.address for n in sp.supervisor.neighbors} == {ROUTER, PEER},
            what="the underlay session",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        await eventually(
            lambda: routed[-1] == {},
            what="nothing routed over the mesh",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )


async def test_behind_a_reflector_a_dead_members_paths_leave_by_originator_id(tmp_path: Path) -> None:
    """m2 (PEER) reflects with ADD-PATH: m3's and m4's paths to one prefix arrive over m2's session,
    ORIGINATOR_ID their router ids. m3 dead in gossip: its path leaves the FIB at once, m4's and the
    session stay; alive again: back. Its router id is remembered, so this works even when the dead
    member's ``bgp`` value is gone with it."""
    m3, m4 = "198.18.0.12", "198.18.0.13"
    async with running(tmp_path) as h:
        sp = h.speaker
        await eventually(
            lambda: [v.status.state for v in sp.neighbor_views()] == ["up", "up"],
            what="both sessions up",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        h.node.set_member("m3", m3, MemberState.ALIVE)  # publishes router id 198.18.0.12
        h.node.emit(EventKind.JOIN, "m3")
        await eventually(lambda: len(sp.neighbor_views()) == 3, what="m3 a neighbor", timeout=WAIT, poll=0.02)
        reflector = ApiPeer(PEER, ME, 64512, 64512)
        routes = tuple(
            ApiRoute("100.96.1.3/32", origin, RouteAttributes(originator_id=origin, cluster_list=(PEER,)), n)
            for n, origin in ((2, m3), (3, m4))
        )
        now = trio.current_time()
        sp._apply_event(PeerState(reflector, SessionState.UP), now)
        sp._apply_event(Update(reflector, routes), now)
        sp._rib_changed()
        vip = Prefix.parse("100.96.1.3/32")
        both = (ipaddress.ip_address(m3), ipaddress.ip_address(m4))
        await eventually(
            lambda: h.fib.routes.get(vip) == both, what="ECMP via the reflector", timeout=WAIT, poll=0.02
        )

        h.node.others["m3"] = MemberInfo("m3", (m3, 7946), 1, MemberState.DEAD, 0.0, b"", {})  # no bgp value
        h.node.emit(EventKind.DEAD, "m3")
        await eventually(
            lambda: h.fib.routes.get(vip) == (ipaddress.ip_address(m4),),
            what="m3's path gone, m4's kept",
            timeout=WAIT,
            poll=0.02,
            detail=h.diagnostics,
        )
        assert sp.rib.is_valid(ipaddress.ip_address(PEER))  # the reflector's session is untouched

        h.node.set_member("m3", m3, MemberState.ALIVE)
        h.node.emit(EventKind.ALIVE, "m3")
        await eventually(
            lambda: h.fib.routes.get(vip) == both, what="m3's path back", timeout=WAIT, poll=0.02
        )


async def test_a_renumbered_member_frees_its_old_router_id(tmp_path: Path) -> None:
    """m3 dead, then back with another router id: its old id must not keep paths out for ever."""
    m3 = "198.18.0.12"
    old, new = ipaddress.IPv4Address(m3), ipaddress.IPv4Address("198.18.0.14")
    async with running(tmp_path) as h:
        await eventually(
            lambda: len(h.speaker.neighbor_views()) == 2, what="subscribed", timeout=WAIT, poll=0.02
        )
        h.node.set_member("m3", m3, MemberState.ALIVE)  # router id 198.18.0.12
        h.node.emit(EventKind.JOIN, "m3")
        await eventually(
            lambda: len(h.speaker.neighbor_views()) == 3, what="m3 a neighbor", timeout=WAIT, poll=0.02
        )
        h.node.others["m3"] = MemberInfo("m3", (m3, 7946), 1, MemberState.DEAD, 0.0, b"", {})
        h.node.emit(EventKind.DEAD, "m3")
        await eventually(
            lambda: not h.speaker.rib.is_valid_originator(old),
            what="m3's id dropped",
            timeout=WAIT,
            poll=0.02,
        )
        info = BGP.encode(SpeakerInfo(64512, str(new), m3, (), None))
        h.node.others["m3"] = MemberInfo(
            "m3", (m3, 7946), 2, MemberState.ALIVE, 0.0, b"", {BGP_KEY: (2, info)}
        )
        h.node.emit(EventKind.ALIVE, "m3")
        await eventually(
            lambda: h.speaker.rib.is_valid_originator(old), what="the old id freed", timeout=WAIT, poll=0.02
        )
        assert h.speaker.rib.is_valid_originator(new)


async def test_queued_member_events_cost_one_replan_and_each_drops_its_paths(tmp_path: Path) -> None:
    """Events queued together are one batch: one replan for all of them, and every dead member's
    paths invalidated (the per-event work is not batched away)."""
    m3, m4 = "198.18.0.12", "198.18.0.13"
    async with running(tmp_path) as h:
        sp = h.speaker
        await eventually(lambda: len(sp.neighbor_views()) == 2, what="subscribed", timeout=WAIT, poll=0.02)
        replans: list[int] = []
        real = sp._reconfigure

        def counted() -> None:
            replans.append(1)
            real()

        sp._reconfigure = counted  # type: ignore[method-assign]
        for name, address in (("m3", m3), ("m4", m4)):
            h.node.set_member(name, address, MemberState.ALIVE)
            h.node.emit(EventKind.JOIN, name)
        await eventually(
            lambda: len(sp.neighbor_views()) == 4, what="m3, m4 neighbors", timeout=WAIT, poll=0.02
        )
        assert replans == [1]
        assert sp.rib.is_valid(ipaddress.ip_address(m3)) and sp.rib.is_valid(ipaddress.ip_address(m4))
        replans.clear()
        for name, address in (("m3", m3), ("m4", m4)):
            h.node.set_member(name, address, MemberState.DEAD)
            h.node.emit(EventKind.DEAD, name)
        await eventually(lambda: len(sp.neighbor_views()) == 2, what="m3, m4 gone", timeout=WAIT, poll=0.02)
        assert replans == [1]
        assert not sp.rib.is_valid(ipaddress.ip_address(m3))
        assert not sp.rib.is_valid(ipaddress.ip_address(m4))
