"""The BGP speaker of one machine: the composition of the ExaBGP supervisor, the routing core, the
export side, the kernel FIB and the VIP addresses, driven by gossip, the object store and the
announcement planner.

Every decision lives in a sans-I/O module; this one only routes events to them and carries out what
they return:

* **Neighbors** (:mod:`agent.bgp.mesh`): every live member that publishes the ``bgp`` gossip value,
  plus the config's external peers, handed to the supervisor, which batches changes into one reload.
* **Route reflection** (:mod:`agent.bgp.reflection`, the rule in :mod:`agent.bgp.reflectors`): on
  every membership, ``bgp`` value and session change the speaker places the reflectors, publishes its
  eligibility and claim (``rr`` in its ``bgp`` value) and the plan it has settled, and holds the
  previous plan's sessions with the new one's until the new one is established. Reflected,
  ExaBGP's mesh sessions are one per reflector, to its BIRD (port 1790, ADD-PATH receive), plus legacy
  members; a reflector runs :class:`BirdReflector` with every live machine's ExaBGP as a client
  (shared ASN only: per-machine ASNs refuse the role).
* **Announcements** (:mod:`agent.bgp.export`): on every change of this machine's ``announce`` gossip
  value (the announcer publishes its decisions there; its KV event is our wake-up, so no polling), on
  every store change and at a drain's deadline: decisions -> prefixes -> export chain -> drain ->
  per-session wire form -> :class:`AdjRibOut` commands. ExaBGP restarts and reloads call
  :meth:`BgpSpeaker._on_resync`, which re-sends everything desired to the listed neighbors.
* **Received routes** (:mod:`agent.bgp.ingest`): supervisor events into the :class:`Rib` through the
  import chain. A member that gossip declares dead or left has its paths invalidated at once
  (gossip-accelerated withdrawal: milliseconds after the gossip verdict rather than a hold time
  later), and revalidated when it is alive again. Two keys, as a machine's paths come two ways: by
  the session address (a direct session, the full mesh) and by ORIGINATOR_ID (behind a route
  reflector its paths arrive over the reflector's session, carrying its router id as published in
  its ``bgp`` gossip value; the last one seen is remembered, so a member whose value went with it
  still has its paths dropped).
* **FIB** (:mod:`agent.kernel.fib`): :meth:`Rib.take_diff` after every batch of events into
  :class:`FibState`, applied by a worker thread, with a full reconcile against a kernel dump every
  ``full_reconcile`` seconds (and at start, which removes what a previous run left behind).
* **VIP addresses** (:mod:`agent.kernel.loopback`): on ``lo`` for every VIP assigned to this machine; never
  installed as kernel routes.
* **Over the WireGuard mesh** (``mesh=True``): the speaker waits for :meth:`BgpSpeaker.set_mesh_address`
  (the transit driver calls it once this machine's mesh address is up, or refused) before it publishes
  its ``bgp`` value, so mesh sessions start on the mesh addresses (:mod:`agent.bgp.mesh`). A route
  learned over such a session has a peer's mesh address as next hop; WireGuard forwards by
  destination, not by next hop, so the prefix must also be in that peer's AllowedIPs: ``routed``
  receives, after every RIB change, each installed prefix by the mesh next hop that carries it (the
  first of an ECMP set: WireGuard gives an address to one peer only).

Shutdown: :meth:`BgpSpeaker.drain_for_shutdown` (SIGTERM, before the gossip leave) announces every
route with GRACEFUL_SHUTDOWN, waits ``drain_time`` and withdraws them; cancelling :meth:`run` then
stops ExaBGP and removes our kernel routes and lo addresses (shielded, bounded).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

from agent.announce.planner import Decision
from agent.announce.status import Decisions, StatusProvider
from agent.bgp.adjout import AdjRibOut
from agent.bgp.api import Command, PeerState, SessionState
from agent.bgp.bird import BirdOptions, BirdReflector
from agent.bgp.config import Neighbor
from agent.bgp.export import (
    Drain,
    Session,
    apply_export_policy,
    for_session,
    originated,
    vip_prefix,
)
from agent.bgp.ingest import Ingest
from agent.bgp.lifecycle import ReloadReason, Resync
from agent.bgp.mesh import PEERING_STATES, MeshPeer, mesh_peers, neighbors
from agent.bgp.reflection import Reflection, ReflectionView
from agent.bgp.status import NeighborStatus, SessionTable
from agent.bgp.supervisor import (
    CommandFailed,
    CommandTimeout,
    ExaBGPSupervisor,
    NotConnected,
    SpeakerDown,
    SpeakerUp,
    SupervisorEvent,
    SupervisorOptions,
)
from agent.cluster.objects import Kind, MachineSettings, PolicySet, Route, Vip
from agent.cluster.store import NotFound, ObjectStore
from agent.config.bgp import BgpSettings
from agent.health.verdict import Verdict
from agent.kernel.fib import FibOp, FibState, NextHops
from agent.kernel.loopback import desired_addresses
from agent.published import ANNOUNCE_KEY, BGP, BGP_KEY, SpeakerInfo
from agent.routing import Attributes, DecisionOptions, PolicyChain, Prefix, Rib
from common.address import IPAddress
from gossip import DecodeCache, EventKind, MemberEvent, MemberInfo, Refusals

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RoutedPrefixes = Mapping[IPAddress, frozenset[IPNetwork]]

log = logging.getLogger("wiremesh.bgp.speaker")

FULL_RECONCILE = 60.0  # seconds between full FIB reconciles against a kernel dump
ADDRESS_RECHECK = 60.0  # seconds between lo address checks with nothing changed
FIB_CHUNK = 5000  # kernel operations per worker-thread call: bounds the latency of the next change
EVENT_BATCH = 500  # supervisor events applied before the RIB diff goes to the FIB
CLEANUP_TIMEOUT = 30.0
DRAIN_SLACK = 10.0  # beyond drain_time, how long a shutdown drain may take to send its withdrawals
BIRD_POLL = 1.0  # seconds between reads of the reflector BIRD's sessions while this machine is one


def hlc_now() -> int:
    """A claim time as :class:`agent.wirevalues.ReflectorInfo` packs it (``wall_ms << 16 | counter``)."""
    return (time.time_ns() // 1_000_000) << 16


class GossipView(Protocol):
    def members(self) -> list[MemberInfo]: ...

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]: ...

    async def set_kv(self, key: str, value: bytes | None) -> None: ...


class FibBackend(Protocol):
    """:class:`agent.kernel.fib.KernelFib`, or a fake in tests. Blocking; called from a worker thread."""

    def apply(self, ops: list[FibOp]) -> list[str | None]: ...

    def dump(self) -> dict[Prefix, NextHops]: ...

    def flush(self) -> int: ...

    def close(self) -> None: ...


class AddressBackend(Protocol):
    """:class:`agent.kernel.loopback.LoopbackAddresses`, or a fake. Blocking; called from a worker thread."""

    def reconcile(self, desired: Iterable[IPAddress]) -> list[str]: ...

    def flush(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class NeighborView:
    """One neighbor as ``/v1/bgp/neighbors`` shows it."""

    address: str
    name: str | None  # the mesh member, or None for an external peer
    description: str
    peer_as: int
    local_as: int
    passive: bool
    status: NeighborStatus
    reflector: bool = False  # the session is to a route reflector's BIRD (port 1790)


def _missing_set(name: str) -> PolicySet:
    """Stands in for an attached policy set this machine does not have (yet): rejects everything, so a
    chain never leaks what a set it cannot see might have filtered."""
    return PolicySet(name=name, rules=[], default="reject")


class BgpSpeaker:
    """One machine's speaker; see the module docstring. :meth:`run` is the task, the other public
    methods are for the API and the runner (same Trio run). ``fib`` / ``addresses`` ``None``: leave the
    kernel alone (tests, or a machine that only announces)."""

    def __init__(
        self,
        settings: BgpSettings,
        *,
        machine: str,
        address: str,
        store: ObjectStore,
        node: GossipView,
        decisions: Callable[[], Mapping[str, Decision]],
        supervisor: SupervisorOptions,
        fib: FibBackend | None = None,
        addresses: AddressBackend | None = None,
        full_reconcile: float = FULL_RECONCILE,
        mesh: bool = False,
        routed: Callable[[RoutedPrefixes], None] | None = None,
        bird: BirdOptions | None = None,
    ) -> None:
        self.settings = settings
        self.machine = machine
        self.address = str(ipaddress.ip_address(address))
        self.router_id = settings.resolved_router_id(self.address)
        self.asn = settings.machine_asn(machine)
        self.store = store
        self.node = node
        self._decisions = decisions
        self.fib = fib
        self.addresses = addresses
        self.full_reconcile = full_reconcile
        self.rib = Rib(
            router_id=ipaddress.IPv4Address(self.router_id),
            asn=self.asn,
            options=DecisionOptions(max_paths=settings.max_paths),
        )
        self.sessions = SessionTable()
        self._mesh: dict[str, MeshPeer] = {}  # by peering address
        self._member_router_ids: dict[str, str] = {}  # by member name: the last one it published
        self._router_names: dict[str, str] = {}  # the reverse: member name by router id
        self.refusals = Refusals(log)  # members' ``bgp`` values refused, each logged once
        self.bgp_values = DecodeCache(BGP, self.refusals)  # decoded once per change, read per event
        # WireGuard on: the mesh address once it is up (None: refused, or off); nothing is published and
        # no mesh session configured until then (``_settled``), so no session starts on the underlay.
        self.mesh_address: str | None = None
        self._settled = not mesh
        self._routed_sink = routed
        self._routed: dict[IPAddress, frozenset[IPNetwork]] = {}
        self._mesh_routes = MeshRoutes()
        self._excluded: set[Prefix] = set()
        self.ingest = Ingest(self.rib, self.sessions, self._router_id_of)
        self.adjout = AdjRibOut()
        self.drain = Drain(settings.drain_time)
        self.fib_state = FibState()
        # Route reflection (agent.bgp.reflection): who reflects, the plans, BIRD's spec; and, while this
        # machine reflects, its BIRD.
        self.reflection = Reflection(
            settings, machine=machine, router_id=self.router_id, asn=self.asn, has_bird=bird is not None
        )
        self.bird = BirdReflector(bird) if bird is not None else None
        self._reflector_peers: dict[str, MeshPeer] = {}  # ExaBGP's sessions to BIRDs, by address
        self.supervisor = ExaBGPSupervisor(supervisor, self._neighbors(), on_resync=self._on_resync)
        self._configured: dict[str, Session] = {}  # neighbors ExaBGP has been given, after their resync
        self._import_models: tuple[PolicySet, ...] | None = None
        self._wire: dict[Prefix, Attributes] = {}  # what is on the wire (after policy and drain)
        self._keys: dict[str, str] = {}  # the object key of each wire prefix, by its text (as AdjRibOut)
        self._published: bytes | None = None
        self.sent_keys: frozenset[str] = frozenset()
        self.fib_errors = 0
        self.address_errors: list[str] = []
        self._export_lock = trio.Lock()
        self._export_wake = trio.Event()
        self._fib_wake = trio.Event()
        self._address_wake = trio.Event()
        self._drained = trio.Event()

    # -- inputs from other tasks ---------------------------------------------------------------------

    def poke(self) -> None:
        """Something the export side depends on changed (decisions, objects, settings)."""
        self._export_wake.set()
        self._address_wake.set()

    def _router_id_of(self, address: str) -> str | None:
        peer = self._mesh.get(address) or self._reflector_peers.get(address)
        return peer.router_id if peer is not None else None

    def peer_name(self, address: str) -> str | None:
        peer = self._mesh.get(address) or self._reflector_peers.get(address)
        return peer.name if peer is not None else None

    def originator_name(self, router_id: str) -> str | None:
        """The machine whose router id is ``router_id`` (a reflected path's ORIGINATOR_ID), as its
        ``bgp`` gossip value says (or last said); ``None`` for a router id no member published."""
        if router_id == self.router_id:
            return self.machine
        return self._router_names.get(router_id)

    # -- settings from the store ---------------------------------------------------------------------

    def _machine_settings(self) -> MachineSettings:
        try:
            obj = self.store.get(Kind.MACHINE, self.machine)
        except NotFound:
            return MachineSettings(name=self.machine)
        return obj if isinstance(obj, MachineSettings) else MachineSettings(name=self.machine)

    def _policy_sets(self, names: Iterable[str]) -> tuple[PolicySet, ...]:
        out: list[PolicySet] = []
        for name in names:
            try:
                obj = self.store.get(Kind.POLICY_SET, name)
            except NotFound:
                obj = None
            if not isinstance(obj, PolicySet):
                log.warning(
                    "policy set %s is attached to %s but not known here: rejecting", name, self.machine
                )
                obj = _missing_set(name)
            out.append(obj)
        return tuple(out)

    def _refresh_import_policy(self, settings: MachineSettings) -> None:
        models = self._policy_sets(settings.import_policies)
        if models != self._import_models:
            self._import_models = models
            self.rib.set_import_policy(PolicyChain.of(models))
            self._rib_changed()

    # -- neighbors -----------------------------------------------------------------------------------

    def _members(self) -> list[MemberInfo]:
        return self.node.members()

    def _own_info(self) -> SpeakerInfo:
        return SpeakerInfo(
            self.asn, self.router_id, self.address, tuple(self.sent_keys), self.mesh_address,
            self.reflection.info(),
        )  # fmt: skip

    def _refresh_mesh(self) -> None:
        if not self._settled:
            self._mesh = {}
            return
        own = self._own_info()
        self._mesh = mesh_peers(
            self._members(), self.machine, self.settings.plan, self.asn, own, values=self.bgp_values
        )
        for peer in self._mesh.values():
            self._remember_router_id(peer.name, peer.router_id)

    def set_mesh_address(self, address: str | None) -> None:
        """The transit driver's word on this machine's mesh address: up (sessions to members that have
        one move to the mesh) or ``None`` (WireGuard off, or the address is held by another machine:
        underlay sessions). Publishes at once."""
        address = str(ipaddress.ip_address(address)) if address is not None else None
        if self._settled and address == self.mesh_address:
            return
        log.info(
            "BGP peering over %s",
            f"the mesh address {address}" if address else f"the underlay address {self.address}",
        )
        self.mesh_address = address
        self._settled = True
        self._refresh_mesh()
        self._reconfigure()
        self._rib_changed()
        self._export_wake.set()

    def _neighbors(self) -> list[Neighbor]:
        """ExaBGP's neighbors for the plan held (:meth:`Reflection.split`): direct sessions and, in a
        reflected mesh, sessions to reflectors' BIRDs."""
        direct: Mapping[str, MeshPeer] = self._mesh
        self._reflector_peers = {}
        if self._settled and self.reflection.held.sessions:
            direct, self._reflector_peers = self.reflection.split(self._mesh, self._own_info())
        return neighbors(
            self.settings,
            own_name=self.machine,
            own_address=self.address,
            router_id=self.router_id,
            peers=direct,
            reflectors=self._reflector_peers,
        )

    # -- route reflection ---------------------------------------------------------------------------

    def _replan(self) -> bool:
        """Placement, claim and session plan from the current membership (:meth:`Reflection.replan`);
        reconfigures BIRD. Returns whether ExaBGP's neighbors may have changed."""
        if not self._settled:
            return False
        up = {self.peer_name(s.address) for s in self.sessions.snapshot(0.0) if s.state == "up"}
        out = self.reflection.replan(
            self._members(),
            self._own_info(),
            now=trio.current_time(),
            hlc=hlc_now(),
            up={n for n in up if n is not None},
            values=self.bgp_values,
        )
        if out.publish:
            self._export_wake.set()  # publish the claim or the settled plan
        if self.bird is not None:
            self.bird.set_spec(out.spec)
            if out.spec is None:
                self.reflection.bird_sessions = ()
        return out.neighbors

    def _reconfigure(self) -> None:
        """Replan and hand ExaBGP its neighbors."""
        self._replan()
        neighbors = self._neighbors()
        self.sessions.expect(n.address for n in neighbors)
        self.supervisor.set_neighbors(neighbors)

    async def _bird_task(self) -> None:
        """While this machine reflects: BIRD's sessions every ``BIRD_POLL`` s (the settled check and
        the API read them); a change replans."""
        bird = self.bird
        if bird is None:
            return
        while True:
            await trio.sleep(BIRD_POLL)
            sessions = tuple(await bird.sessions()) if bird.spec is not None else ()
            if sessions != self.reflection.bird_sessions:
                self.reflection.bird_sessions = sessions
                self._reconfigure()

    def reflection_view(self) -> ReflectionView:
        return self.reflection.view(self.bird.pid if self.bird is not None else None)

    def _session(self, neighbor: Neighbor) -> Session:
        return Session(neighbor.address, neighbor.local_as, neighbor.peer_as)

    async def _on_resync(self, resync: Resync) -> None:
        """ExaBGP (re)started or reloaded: the listed neighbors have none of our routes."""
        desired = {n.address: n for n in self.supervisor.neighbors}
        if resync.reason in (ReloadReason.START, ReloadReason.RESTART):
            self._configured = {}
        for address in resync.removed:
            self._configured.pop(address, None)
            self.adjout.forget(address)
        self.ingest.removed(resync.removed)
        for address in resync.neighbors:
            self.adjout.forget(address)
            neighbor = desired.get(address)
            if neighbor is not None:
                self._configured[address] = self._session(neighbor)
        self.sessions.configure(self._configured)
        self._rib_changed()
        log.info(
            "resync (%s): %d neighbors to send to, %d removed",
            resync.reason.value,
            len(resync.neighbors),
            len(resync.removed),
        )
        await self._export()

    # -- the export side ------------------------------------------------------------------------------

    def _objects(self) -> tuple[dict[str, Vip], dict[str, Route]]:
        vips = {o.name: o for o in self.store.list(Kind.VIP) if isinstance(o, Vip)}
        routes = {o.name: o for o in self.store.list(Kind.ROUTE) if isinstance(o, Route)}
        return vips, routes

    async def _export(self) -> None:
        """One pass: work out what should be on the wire and send the difference."""
        async with self._export_lock:
            now = trio.current_time()
            settings = self._machine_settings()
            self._refresh_import_policy(settings)
            vips, routes = self._objects()
            local = originated(self._decisions(), vips, routes)
            chain = PolicyChain.of(self._policy_sets(settings.export_policies))
            live = apply_export_policy(local, chain) if settings.enabled else {}
            wire = self.drain.routes(live, enabled=settings.enabled, now=now)
            draining = self.drain.draining and not self.drain.done(now)
            keys: dict[str, str] = {}
            for prefix in wire:
                text = str(prefix)
                keys[text] = local.get(prefix) or self._keys.get(text, "")
            self._keys = keys
            self._originate(wire, now)
            commands: list[Command] = []
            for address, session in sorted(self._configured.items()):
                commands += self.adjout.set_routes(address, for_session(wire, session, draining=draining))
            await self._send(commands)
            self._wire = wire
            if self.drain.done(now):
                self._drained.set()
        await self._publish()

    def _originate(self, wire: Mapping[Prefix, Attributes], now: float) -> None:
        """Keep the RIB's local routes equal to what we have on the wire (they show in ``/v1/rib`` and
        win over a peer's path for the same prefix)."""
        for prefix in self._wire.keys() - wire.keys():
            self.rib.withdraw_origin(prefix)
        for prefix, attrs in wire.items():
            if self._wire.get(prefix) != attrs:
                self.rib.originate(prefix, attrs, now)
        self._rib_changed()

    async def _send(self, commands: list[Command]) -> None:
        for command in commands:
            try:
                await self.supervisor.send(command)
            except NotConnected:
                return  # ExaBGP is (re)starting: its resync sends everything desired
            except (CommandFailed, CommandTimeout) as exc:
                log.warning("%s", exc)

    def _sent(self) -> frozenset[str]:
        up = {s.address for s in self.sessions.snapshot(0.0) if s.state == "up"}
        sent: set[str] = set()
        for address in up & self._configured.keys():
            for prefix_text in self.adjout.routes(address):
                key = self._keys.get(prefix_text)
                if key:
                    sent.add(key)
        return frozenset(sent)

    async def _publish(self) -> None:
        """Our ``bgp`` gossip value: who we are, and what we have on the wire (not before the peering
        address is settled)."""
        self.sent_keys = self._sent()
        if not self._settled:
            return
        packed = BGP.encode(self._own_info())
        if packed != self._published:
            self._published = packed
            await self.node.set_kv(BGP_KEY, packed)

    async def _export_task(self) -> None:
        while True:
            self._export_wake = trio.Event()
            await self._export()
            deadline = self.drain.deadline
            if deadline is None or deadline <= trio.current_time():
                deadline = math.inf
            with trio.move_on_at(deadline):
                await self._export_wake.wait()

    async def drain_for_shutdown(self) -> None:
        """SIGTERM: every route with GRACEFUL_SHUTDOWN now, withdrawn after ``drain_time``. Returns
        once the withdrawals went out (or could not: ExaBGP down), bounded by ``drain_time`` plus
        slack."""
        status = self.drain.shutdown(trio.current_time())
        log.info("draining for shutdown: withdrawing in %.1f s", max(0.0, status.until - trio.current_time()))
        self._export_wake.set()
        with trio.move_on_at(status.until + DRAIN_SLACK):
            await self._drained.wait()

    # -- received routes -----------------------------------------------------------------------------

    def _rib_changed(self) -> None:
        diff = self.rib.take_diff()
        if diff:
            self.fib_state.apply_diff(diff)
            self._fib_wake.set()
        if self._routed_sink is not None:
            self._mesh_routes.set_hops(self._mesh.values(), self.fib_state)
            self._mesh_routes.update((c.prefix for c in diff), self.fib_state)
            if self._mesh_routes.dirty:  # not per update: a full table from a router changes nothing here
                self._mesh_routes.dirty = False
                routed = self._mesh_routes.view()
                if routed != self._routed:
                    self._routed = routed
                    self._routed_sink(routed)

    def _apply_event(self, event: SupervisorEvent, now: float) -> None:
        if isinstance(event, SpeakerDown):
            self.ingest.speaker_down(event.reason, now)
        elif isinstance(event, SpeakerUp):
            log.info("exabgp up (pid %d%s)", event.pid, ", restarted" if event.restart else "")
        else:
            if isinstance(event, PeerState):
                level = logging.INFO if event.state is not SessionState.CONNECTED else logging.DEBUG
                log.log(level, "BGP session with %s %s%s", event.peer.address, event.state.value,
                        f" ({event.reason})" if event.reason else "")  # fmt: skip
            self.ingest.apply(event, now)

    async def _event_task(self) -> None:
        events = self.supervisor.events
        while True:
            try:
                event = await events.receive()
            except trio.EndOfChannel:
                return
            now = trio.current_time()
            self._apply_event(event, now)
            for _ in range(EVENT_BATCH):
                try:
                    event = events.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
                self._apply_event(event, now)
            self._rib_changed()
            if self._replan():
                self.supervisor.set_neighbors(self._neighbors())
            await self._publish()
            await trio.sleep(0)

    # -- gossip --------------------------------------------------------------------------------------

    async def _gossip_task(self, events: trio.MemoryReceiveChannel[MemberEvent]) -> None:
        """Membership and ``bgp`` changes, in batches: whatever is queued when one arrives is taken
        with it, and the batch costs one mesh refresh and one replan. One each per event made a
        start-up of N machines cost every agent O(N^2) work on its event loop, late enough to be
        suspected by its peers, whose suspicions were more events."""
        async with events:
            async for event in events:
                batch = [event]
                while True:
                    try:
                        batch.append(events.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                relevant = []
                for e in batch:
                    if e.kind is EventKind.KV:
                        if e.name == self.machine:
                            if e.key == ANNOUNCE_KEY:
                                self._export_wake.set()  # the planner decided something
                            continue
                        if e.key != BGP_KEY:
                            continue
                    relevant.append(e)
                if relevant:
                    self._membership(relevant)

    def _member_router_id(self, name: str, member: MemberInfo | None) -> ipaddress.IPv4Address | None:
        """The router id ``name`` publishes (or last published) in its ``bgp`` value (``member``: its
        gossip entry, if it has one): what its paths carry as ORIGINATOR_ID behind a reflector.
        ``None`` if never seen, or ours."""
        if member is not None:
            info = self.bgp_values.decode(member.kv.get(BGP_KEY, (0, None))[1], name)
            if info is not None:
                self._remember_router_id(name, info.router_id)
        known = self._member_router_ids.get(name)
        if known is None or known == self.router_id:
            return None
        try:
            return ipaddress.IPv4Address(known)
        except ValueError:
            return None

    def _remember_router_id(self, name: str, router_id: str) -> None:
        previous = self._member_router_ids.get(name)
        if previous is not None and previous != router_id:  # renumbered: the old id is no one's now
            with contextlib.suppress(ValueError):
                self.rib.revalidate_originator(ipaddress.IPv4Address(previous))
            if self._router_names.get(previous) == name:
                del self._router_names[previous]
        self._member_router_ids[name] = router_id
        self._router_names[router_id] = name

    def _membership(self, events: Sequence[MemberEvent]) -> None:
        """A batch of member events, in order: each one's paths dropped or restored in the RIB (at
        once, not batched away: a dead machine's routes go now), then one replan for them all."""
        before = {p.name: a for a, p in self._mesh.items()}
        self._refresh_mesh()
        members = {m.name: m for m in self._members()}
        for event in events:
            self._member_event(event, before, members)
        self._reconfigure()

    def _member_event(
        self, event: MemberEvent, before: Mapping[str, str], members: Mapping[str, MemberInfo]
    ) -> None:
        if event.name == self.machine:
            return
        if event.kind in (EventKind.DEAD, EventKind.LEFT):
            self.bgp_values.forget(event.name)
        address = before.get(event.name) or event.addr[0]
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            ip = None
        originator = self._member_router_id(event.name, members.get(event.name))
        if ip is None and originator is None:
            return
        if event.kind in (EventKind.DEAD, EventKind.LEFT):
            if (ip is not None and self.rib.is_valid(ip)) or (
                originator is not None and self.rib.is_valid_originator(originator)
            ):
                log.info("%s is %s: dropping its paths now", event.name, event.kind.value)
            if ip is not None:
                self.rib.invalidate(ip)
            if originator is not None:
                self.rib.invalidate_originator(originator)
            self._rib_changed()
        elif event.kind in (EventKind.JOIN, EventKind.ALIVE, EventKind.UPDATE):
            if (ip is not None and not self.rib.is_valid(ip)) or (
                originator is not None and not self.rib.is_valid_originator(originator)
            ):
                log.info("%s is alive again: its paths are back", event.name)
            if ip is not None:
                self.rib.revalidate(ip)
            if originator is not None:
                self.rib.revalidate_originator(originator)
            self._rib_changed()

    # -- FIB and addresses ---------------------------------------------------------------------------

    async def _fib_task(self) -> None:
        """Apply FIB changes as they come, and a full reconcile against a kernel dump at start and every
        ``full_reconcile`` seconds. A netlink failure (socket error, timeout) is logged and answered
        with a full reconcile a second later: the dump says what really happened."""
        fib = self.fib
        if fib is None:
            return
        next_full = trio.current_time()
        while True:
            self._fib_wake = trio.Event()
            try:
                if trio.current_time() >= next_full:
                    self.fib_state.kernel(await trio.to_thread.run_sync(fib.dump))
                    self.fib_state.retry_failed()
                    next_full = trio.current_time() + self.full_reconcile
                await self._apply_fib(fib)
            except OSError as exc:
                log.warning("kernel routes: %s; full reconcile in 1 s", exc)
                next_full = trio.current_time() + 1.0
            with trio.move_on_at(next_full):
                await self._fib_wake.wait()

    async def _apply_fib(self, fib: FibBackend) -> None:
        while self.fib_state.pending:
            ops = self.fib_state.take(FIB_CHUNK)
            if not ops:
                break
            results = await trio.to_thread.run_sync(fib.apply, ops)
            failures = 0
            for op, error in zip(ops, results, strict=True):
                if error is not None and self.fib_state.failed.get(op.prefix) != error:
                    failures += 1
                    if failures <= 5:
                        log.warning("kernel route %s: %s", op.prefix, error)
                self.fib_state.done(op, error)
            self.fib_errors += failures

    def own_vips(self) -> frozenset[IPAddress]:
        vips, _routes = self._objects()
        return desired_addresses(vips.values(), self.machine)

    async def _address_task(self) -> None:
        while True:
            self._address_wake = trio.Event()
            wanted = self.own_vips()
            excluded = {vip_prefix(str(a)) for a in wanted}
            self.fib_state.exclude(excluded)
            if excluded != self._excluded:  # a VIP assigned here or no longer: its mesh route too
                self._mesh_routes.update(excluded ^ self._excluded, self.fib_state)
                self._excluded = excluded
                self._rib_changed()
            self._fib_wake.set()
            if self.addresses is not None:
                try:
                    errors = await trio.to_thread.run_sync(self.addresses.reconcile, wanted)
                except OSError as exc:
                    errors = [str(exc)]
                for error in errors:
                    if error not in self.address_errors:
                        log.warning("VIP address: %s", error)
                self.address_errors = errors
            with trio.move_on_after(ADDRESS_RECHECK):
                await self._address_wake.wait()

    # -- the task ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; then stop ExaBGP and remove our kernel routes and lo addresses."""
        unsubscribe = self.store.on_change(lambda _record: self.poke())
        events = self.node.subscribe()
        try:
            self._refresh_mesh()
            self._reconfigure()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._gossip_task, events)
                nursery.start_soon(self._address_task)
                nursery.start_soon(self._fib_task)
                await nursery.start(self.supervisor.run)
                nursery.start_soon(self._event_task)
                nursery.start_soon(self._export_task)
                if self.bird is not None:
                    await nursery.start(self.bird.run)  # cancelled: it stops BIRD by pid
                    nursery.start_soon(self._bird_task)
                log.info(
                    "BGP speaker started: AS%d, router id %s, %d external peers",
                    self.asn,
                    self.router_id,
                    len(self.settings.peers),
                )
                task_status.started()
        finally:
            unsubscribe()
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as scope:
                await self._cleanup()
            if scope.cancelled_caught:
                log.warning(
                    "cleanup took longer than %.0f s; some routes or addresses may remain", CLEANUP_TIMEOUT
                )

    async def _cleanup(self) -> None:
        if self.fib is not None:
            try:
                removed = await trio.to_thread.run_sync(self.fib.flush)
                log.info("removed %d kernel routes", removed)
            except OSError as exc:
                log.warning("removing our kernel routes: %s", exc)
            finally:
                self.fib.close()
        if self.addresses is not None:
            try:
                for error in await trio.to_thread.run_sync(self.addresses.flush):
                    log.warning("VIP address: %s", error)
            except OSError as exc:
                log.warning("removing our lo addresses: %s", exc)

    # -- views ---------------------------------------------------------------------------------------

    def neighbor_views(self) -> list[NeighborView]:
        now = trio.current_time()
        configured = {n.address: n for n in self.supervisor.neighbors}
        out: list[NeighborView] = []
        counts = {a: self.adjout.count(a) for a in self._configured}
        statuses = {s.address: s for s in self.sessions.snapshot(now, counts)}
        # The plan only: a session ExaBGP has not (yet) let go of is not a neighbor of ours.
        for address in sorted(configured, key=lambda a: ipaddress.ip_address(a)):
            neighbor = configured[address]
            status = statuses.get(address) or NeighborStatus(address, "idle", None, None, 0, 0, None, False)
            out.append(
                NeighborView(
                    address=address,
                    name=self.peer_name(address),
                    description=neighbor.description,
                    peer_as=neighbor.peer_as,
                    local_as=neighbor.local_as,
                    passive=neighbor.passive,
                    status=status,
                    reflector=address in self._reflector_peers,
                )
            )
        return out


class MeshRoutes:
    """The FIB's prefixes whose next hop is a peer reached over the mesh, by that next hop (the first
    such hop of an ECMP set). Kept incrementally from RIB diffs, so a full table from an external
    router costs nothing per update; recomputed whole only when the set of mesh next hops changes.
    This machine's own VIPs are excluded from the FIB, so they are never here. ``dirty``: changed since
    the owner last cleared it (so :meth:`view` is built only then)."""

    def __init__(self) -> None:
        self.hops: frozenset[IPAddress] = frozenset()
        self.by_prefix: dict[Prefix, IPAddress] = {}
        self.dirty = False

    def set_hops(self, peers: Iterable[MeshPeer], fib: FibState) -> None:
        hops = frozenset(ipaddress.ip_address(p.address) for p in peers if p.over_mesh)
        if hops != self.hops:
            self.hops = hops
            self.by_prefix = {}
            self.dirty = True
            self.update(fib.desired, fib)

    def update(self, prefixes: Iterable[Prefix], fib: FibState) -> None:
        if not self.hops:
            return
        for prefix in prefixes:
            hop = next((h for h in fib.wanted(prefix) if h in self.hops), None)
            if hop is None:
                if self.by_prefix.pop(prefix, None) is not None:
                    self.dirty = True
            elif self.by_prefix.get(prefix) != hop:
                self.by_prefix[prefix] = hop
                self.dirty = True

    def view(self) -> dict[IPAddress, frozenset[IPNetwork]]:
        out: dict[IPAddress, set[IPNetwork]] = {}
        for prefix, hop in self.by_prefix.items():
            out.setdefault(hop, set()).add(prefix.to_network())
        return {h: frozenset(n) for h, n in out.items()}


class WireStatus:
    """The API's status provider with ``announced_by`` from what speakers report on the wire (their
    ``bgp`` gossip value's ``sent``) rather than from planner decisions; a machine that runs no
    speaker falls back to its decisions. Everything else comes from ``inner`` (the announcer)."""

    def __init__(self, inner: StatusProvider, speaker: BgpSpeaker) -> None:
        self.inner = inner
        self.speaker = speaker

    def announced_by(self, kind: Kind, name: str) -> list[str]:
        key = f"{kind.value}/{name}"
        decided = set(self.inner.announced_by(kind, name))
        out: set[str] = set()
        if key in self.speaker.sent_keys:
            out.add(self.speaker.machine)
        for member in self.speaker.node.members():
            if member.name == self.speaker.machine:
                continue
            raw = member.kv.get(BGP_KEY, (0, None))[1]
            info = self.speaker.bgp_values.decode(raw, member.name)
            if info is None:
                if member.name in decided:
                    out.add(member.name)
            elif key in info.sent and member.state in PEERING_STATES:
                out.add(member.name)
        return sorted(out)

    def health(self, kind: Kind, name: str, machine: str) -> str:
        return self.inner.health(kind, name, machine)

    def verdicts(self) -> Mapping[str, Mapping[str, Verdict]]:
        return self.inner.verdicts()

    def all_decisions(self) -> tuple[float, Decisions]:
        return self.inner.all_decisions()


def build_speaker(
    settings: BgpSettings,
    *,
    machine: str,
    address: str,
    state_dir: Path,
    store: ObjectStore,
    node: GossipView,
    decisions: Callable[[], Mapping[str, Decision]],
    mesh: bool = False,
    routed: Callable[[RoutedPrefixes], None] | None = None,
) -> BgpSpeaker:
    """The speaker as the agent runs it: ExaBGP's files under ``state_dir/bgp``, routes and lo
    addresses in the kernel under the configured protocol number and table; ``mesh``/``routed`` when
    the WireGuard mesh runs (see the module docstring)."""
    import shutil

    from agent.kernel.fib import KernelFib
    from agent.kernel.loopback import LoopbackAddresses

    installed = shutil.which("bird") and shutil.which("birdc")
    bird = BirdOptions(state_dir=state_dir / "bird") if installed else None  # None: never a reflector

    return BgpSpeaker(
        settings,
        machine=machine,
        address=address,
        store=store,
        node=node,
        decisions=decisions,
        supervisor=SupervisorOptions(state_dir=state_dir / "bgp"),
        fib=KernelFib(protocol=settings.route_protocol, table=settings.route_table),
        addresses=LoopbackAddresses(settings.route_protocol),
        mesh=mesh,
        routed=routed,
        bird=bird,
    )
