"""The transit driver: runs the WireGuard mesh of one machine with the sans-I/O cores and real I/O.

It owns, in one nursery: the WireGuard device, the probe socket, and a control loop. The decisions are
the cores'; this module feeds them and applies their answers:

* **Backend** (``[wireguard] backend``, :func:`select_backend`): the kernel module through netlink
  (:mod:`transit.wgkernel`, which creates and deletes the link) or wireguard-go through its UAPI socket
  (:mod:`transit.wggo`, a supervised child). Both are a :class:`transit.wgdevice.WireGuardBackend` to
  the control round. ``auto`` takes the module when this kernel has it, ``kernel`` insists on it,
  ``userspace`` never uses it.

* **Identity.** The key (:mod:`transit.keys`) and the claim time of the mesh address
  (:mod:`transit.claimfile`) come from the state directory. The machine's :class:`TransitMeta` is its
  whole gossip metadata blob: nothing else in the agent uses metadata (components publish node-local
  values instead, each under its own key, as this driver does with ``transit.reach``), so the blob is
  transit's and is set, never merged into.
* **Peers** (:mod:`transit.peers`): every live member with transit metadata, dead and left ones for a
  grace period; address claims resolved by the shared rule, so a later claimant does not configure the
  address and says so (log, ``/v1/peers`` errors).
* **Probes.** One UDP socket on this machine's probe address, port :data:`PROBE_PORT`: it answers
  probes (:func:`transit.pathmon.answer`) and feeds replies to the :class:`PathMonitor` of the peer
  whose probe address sent them. The prober task ticks the monitors at their own deadlines.
* **Control round**, on any change (a monitor's verdict, a member's metadata or vector, a hold expiring)
  and at least every second: publish the reachability vector, run the :class:`RoutePlanner`, then
  reconcile the device (:mod:`transit.desired`, :func:`transit.wgdevice.plan`) and the kernel
  (addresses, routes with the agent's protocol number). The round reads the device first: handshake
  ages go to the monitors, and a device without its private key is a restarted wireguard-go (or a
  re-created kernel link), whose interface is brought up and configured again.
* **For the BGP speaker**: :meth:`TransitDriver.watch_mesh_address` says when this machine's mesh
  address is up on the interface (or refused: another machine holds it), so the speaker peers over the
  mesh from the start; :meth:`TransitDriver.set_routed` takes the prefixes the speaker installed via
  each peer's mesh address, which go into that peer's (or its relay's) AllowedIPs.
* **Relaying** is enabled at start (:func:`transit.kernel.enable_relaying`, and the FORWARD rule where
  the policy drops): any machine may be picked as a relay by others, and turning it on only once they
  route through it would add a round of gossip to every switch. With ``[wireguard.relay] enabled =
  false`` the machine publishes that it does not relay (others never pick it) and turns on neither.

On exit it deletes its routes and the FORWARD rule it added; wireguard-go is stopped by its supervisor
(the kernel link is deleted by its own), and the interface (with its addresses and sysctls) goes with it.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import trio

from common.address import IPAddress, IPNetwork
from common.netlink import pyroute2
from gossip import EventKind, MemberEvent, MemberInfo, Refusals
from transit.claimfile import load_or_record_claim
from transit.config import PROBE_PORT, Backend, TransitConfig
from transit.desired import (
    IPInterface,
    KernelState,
    desired_device,
    desired_kernel,
    plan_kernel,
)
from transit.endpoint import Endpoint
from transit.kernel import (
    KernelError,
    KernelNet,
    add_forward_rule,
    delete_forward_rule,
    enable_relaying,
    open_kernel,
)
from transit.keys import KeyFileError, PrivateKey, load_or_create_key
from transit.meta import LIVE_STATES, MAX_ENDPOINTS, META, TransitMeta, probe_address
from transit.pathmon import PathMonitor, PathState, answer
from transit.peers import EndpointChooser, PeerBook, PeerSet
from transit.reachability import (
    DIRECT,
    REACH,
    REACH_KEY,
    ReachRoute,
    ReachVector,
    RouteKind,
    VectorPublisher,
    vector_from_paths,
)
from transit.relay import RoutePlanner, leg
from transit.report import PeerReport, TransitReport, path_text
from transit.uapi import RUN_DIR, DeviceState, SetRequest, UapiClient, UapiError, UapiProtocolError
from transit.wgdevice import WireGuardBackend, plan
from transit.wggo import WireguardGoConfig, WireguardGoError, run_wireguard_go, stop_leftover
from transit.wgkernel import KernelWireGuard, Netlink, probe_module, run_kernel_link

log = logging.getLogger("wiremesh.transit")

DEVICE_POLL = 1.0  # a round at least this often: handshake ages, counters, a restarted device
MIN_ROUND_GAP = 0.02  # a burst of gossip events makes one round, not fifty
RETRY_AFTER_ERROR = 0.5
KERNEL_RESYNC = 10.0  # re-read the kernel this often even when nothing changed (someone may have meddled)
META_REFRESH = 30.0  # re-read the local addresses this often
CLEANUP_TIMEOUT = 5.0
# Our own mesh address goes on the interface once we know the other members (a join's push-pull
# brings all their claims at once) or after this long alone: a machine that starts with a copied
# config never holds the address, not even until its first gossip exchange.
CLAIM_SETTLE = 5.0
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
SYS_MODULE_WIREGUARD = Path("/sys/module/wireguard")
NO_MODULE = "no wireguard kernel module is loaded"
BACKEND_NAMES = {"kernel": "kernel (netlink)", "userspace": "userspace (wireguard-go)"}

DeviceKind = Literal["kernel", "userspace"]


class TransitError(OSError):
    """Transit cannot start; one line for the operator (the CLI prints ``strerror``)."""

    def __init__(self, message: str, code: int = errno.EIO) -> None:
        super().__init__(code, message)


class GossipView(Protocol):
    """What transit uses of :class:`gossip.node.GossipNode`."""

    def members(self) -> list[MemberInfo]: ...

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]: ...

    async def set_meta(self, meta: bytes) -> None: ...

    async def set_kv(self, key: str, value: bytes | None) -> None: ...


def kernel_backend_problem(reason: str = NO_MODULE) -> str:
    """Why ``backend = "kernel"`` cannot run here, in words for the operator."""
    return (
        f'wireguard backend = "kernel" is not available on this machine ({reason}); '
        'use backend = "userspace" (wireguard-go) or "auto"'
    )


def kernel_unavailable(netlink: Netlink, sys_module: Path = SYS_MODULE_WIREGUARD) -> str | None:
    """Blocking. None when the kernel backend can run here, else why not. The module is there when
    ``/sys/module/wireguard`` exists (loaded or built in), or when a probe link of kind wireguard can be
    added (which loads an installed module); the probe link is deleted at once."""
    if sys_module.exists() or probe_module(netlink):
        return None
    return NO_MODULE


def select_backend(setting: Backend, netlink: Netlink, sys_module: Path = SYS_MODULE_WIREGUARD) -> DeviceKind:
    """Blocking (it may probe, see :func:`kernel_unavailable`). ``kernel`` without the module raises
    :class:`TransitError` with the operator's fix; ``auto`` then falls back to wireguard-go."""
    if setting == "userspace":
        return "userspace"
    problem = kernel_unavailable(netlink, sys_module)
    if problem is None:
        return "kernel"
    if setting == "kernel":
        raise TransitError(kernel_backend_problem(problem), errno.ENODEV)
    return "userspace"


@dataclass(slots=True)
class _Route:
    route: ReachRoute
    since: float
    reason: str


class TransitDriver:
    """See the module docstring. ``run`` until cancelled; ``report`` any time after it started."""

    def __init__(
        self,
        node: GossipView,
        name: str,
        state_dir: Path,
        config: TransitConfig,
        *,
        advertise_host: str | None = None,
        run_dir: Path = RUN_DIR,
        iptables: str = "iptables",
        kernel: KernelNet | None = None,
        netlink: Netlink | None = None,
    ) -> None:
        """``netlink``: pyroute2's surface for the kernel backend (tests pass a fake); None imports
        pyroute2."""
        if config.mesh_address is None:
            raise ValueError("transit needs a mesh_address")
        self.node = node
        self.name = name
        self.state_dir = state_dir
        self.config = config
        self.mesh_address: IPAddress = config.mesh_address
        self._advertise = advertise_host
        self._iptables = iptables
        self._wg = WireguardGoConfig(config.interface, binary=config.wireguard_go, run_dir=run_dir)
        self._netlink: Netlink = netlink if netlink is not None else pyroute2()
        self._device_kind: DeviceKind = "userspace"
        self._wgdev: WireGuardBackend = UapiClient(self._wg.socket)
        self._kernel = kernel or open_kernel(config.interface, config.route_protocol)
        self._rng = random.Random()
        # Set in run():
        self._key: PrivateKey | None = None
        self._probe: ipaddress.IPv6Address | None = None
        self._claimed_at = 0
        self._book: PeerBook | None = None
        self._planner = RoutePlanner(name, config.relay)
        self._publisher = VectorPublisher()
        self._chooser = EndpointChooser(stale=config.path.handshake_stale)
        self._monitors: dict[str, PathMonitor] = {}
        self._probe_dst: dict[str, ipaddress.IPv6Address] = {}
        self._by_probe: dict[ipaddress.IPv6Address, str] = {}
        self._routes: dict[str, _Route] = {}
        self._published: ReachVector | None = None
        self._vectors: dict[str, tuple[int, ReachVector | None]] = {}
        self._refusals = Refusals(log)  # peers' vectors refused, each logged once
        self._peerset: PeerSet | None = None
        self._device = DeviceState()
        self._endpoints: tuple[Endpoint, ...] = ()
        self._meta_due = -math.inf
        self._kernel_desired: KernelState | None = None
        self._kernel_due = -math.inf
        self._added: set[IPInterface] = set()
        self._rule_added = False
        self._last_error: str | None = None
        self._conflict_note: str | None = None
        self._wake = trio.Event()
        self._probe_wake = trio.Event()
        self.started = False
        self._started_at = 0.0
        self._claim_ok = False
        self._routed: dict[IPAddress, frozenset[IPNetwork]] = {}
        self._own_state: tuple[bool, IPAddress | None] = (False, None)  # (settled, address up)
        self._own_watchers: list[Callable[[IPAddress | None], None]] = []
        self._route_changes: dict[str, int] = {}

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.config
        kind = await trio.to_thread.run_sync(select_backend, cfg.backend, self._netlink)
        try:
            key = await trio.to_thread.run_sync(load_or_create_key, self.state_dir)
        except (KeyFileError, OSError) as exc:
            raise TransitError(f"wireguard key: {exc}") from None
        self._key = key
        self._probe = probe_address(key.public_key)
        self._book = PeerBook(self.name, key.public_key, cfg.remove_grace)
        now_ms = int(time.time() * 1000)
        self._claimed_at = await trio.to_thread.run_sync(
            load_or_record_claim, self.state_dir, self.mesh_address, now_ms
        )
        try:
            # Also before the kernel backend: a wireguard-go orphan would hold the interface name.
            await stop_leftover(self._wg)
        except WireguardGoError as exc:
            raise TransitError(str(exc), errno.EBUSY) from None
        async with trio.open_nursery() as nursery:
            await self._start_device(nursery, kind)
            try:
                await self._setup()
                sock = await self._probe_socket()
                nursery.start_soon(self._receive_loop, sock)
                nursery.start_soon(self._probe_loop, sock)
                nursery.start_soon(self._events_loop)
                nursery.start_soon(self._control_loop)
                self.started = True
                self._started_at = trio.current_time()
                log.info(
                    "transit up on %s (%s): mesh address %s, public key %s, probe address %s, kernel via %s",
                    cfg.interface,
                    BACKEND_NAMES[kind],
                    self.mesh_address,
                    key.public_key,
                    self._probe,
                    self._kernel.kind,
                )
                task_status.started()
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT):
                    await self._cleanup()

    async def _start_device(self, nursery: trio.Nursery, kind: DeviceKind) -> None:
        """Start the device's owner task in ``nursery``: the kernel link's or wireguard-go's."""
        cfg = self.config
        if kind == "kernel":
            device = KernelWireGuard(cfg.interface, self._netlink)
            try:
                await nursery.start(run_kernel_link, device)
            except (UapiError, OSError) as exc:
                raise TransitError(f"cannot create WireGuard interface {cfg.interface}: {exc}") from None
            self._wgdev = device
        else:
            try:
                await nursery.start(run_wireguard_go, self._wg)
            except (WireguardGoError, OSError) as exc:
                raise TransitError(f"cannot start wireguard-go for {cfg.interface}: {exc}") from None
            self._wgdev = UapiClient(self._wg.socket)
        self._device_kind = kind

    async def _setup(self) -> None:
        cfg = self.config
        key = self._require_key()
        try:
            await self._wgdev.set(SetRequest(private_key=key, listen_port=cfg.listen_port))
        except (UapiError, UapiProtocolError, OSError) as exc:
            raise TransitError(
                f"cannot configure {cfg.interface} (listen port {cfg.listen_port}): {exc}"
            ) from None
        try:
            await self._bring_up()
            if cfg.relay_enabled:
                self._rule_added = await add_forward_rule(cfg.interface, self._iptables)
        except KernelError as exc:
            raise TransitError(f"{cfg.interface}: {exc}") from None
        await self._refresh_meta(trio.current_time())

    async def _bring_up(self) -> None:
        """The interface's own settings: gone with it when wireguard-go restarts, so re-done then."""
        await enable_relaying(self.config.interface, forward=self.config.relay_enabled)
        await self._kernel.set_up()
        self._kernel_due = -math.inf

    async def _cleanup(self) -> None:
        try:
            if await self._kernel.link_exists():
                actual = await self._kernel.state()
                await self._kernel.apply(plan_kernel(KernelState(), actual, self._added))
        except KernelError as exc:
            log.warning("could not remove transit routes: %s", exc)
        if self._rule_added:
            try:
                await delete_forward_rule(self.config.interface, self._iptables)
                self._rule_added = False
            except KernelError as exc:
                log.warning("could not remove the FORWARD rule: %s", exc)

    def _require_key(self) -> PrivateKey:
        if self._key is None:
            raise RuntimeError("transit is not running")
        return self._key

    def _require_probe(self) -> ipaddress.IPv6Address:
        if self._probe is None:
            raise RuntimeError("transit is not running")
        return self._probe

    # --- for the BGP speaker ----------------------------------------------------------------------

    def watch_mesh_address(self, callback: Callable[[IPAddress | None], None]) -> None:
        """``callback(address)`` once this machine's mesh address is on the interface, ``callback(None)``
        when another machine holds it; at once if that is known already, and on every change."""
        self._own_watchers.append(callback)
        settled, address = self._own_state
        if settled:
            callback(address)

    def set_routed(self, routed: Mapping[IPAddress, frozenset[IPNetwork]]) -> None:
        """Prefixes to reach through the peer whose mesh address is the key (the next hop of the BGP
        routes the speaker installed); applied at the next round."""
        self._routed = dict(routed)
        self._wake.set()

    def _note_own(self, settled: bool, address: IPAddress | None) -> None:
        if not settled or (settled, address) == self._own_state:
            return
        self._own_state = (settled, address)
        for callback in self._own_watchers:
            callback(address)

    # --- metadata -------------------------------------------------------------------------------

    async def _local_endpoints(self) -> tuple[Endpoint, ...]:
        """Configured public endpoint first, then the gossip advertise address, then local addresses."""
        port = self.config.listen_port
        out: list[Endpoint] = []
        if self.config.endpoint is not None:
            out.append(self.config.endpoint)
        candidates: list[IPAddress] = []
        if self._advertise is not None:
            with contextlib.suppress(ValueError):
                candidates.append(ipaddress.ip_address(self._advertise))
        try:
            candidates += await self._kernel.local_addresses()
        except KernelError as exc:
            log.warning("cannot list local addresses: %s", exc)
        own = {self.mesh_address, self._require_probe()}
        for addr in candidates:
            ep = Endpoint(addr, port)
            if addr in own or ep in out or addr.is_unspecified or addr.is_loopback:
                continue
            out.append(ep)
        return tuple(out[:MAX_ENDPOINTS])

    async def _refresh_meta(self, now: float) -> None:
        self._meta_due = now + META_REFRESH
        endpoints = await self._local_endpoints()
        if endpoints == self._endpoints and self._endpoints:
            return
        self._endpoints = endpoints
        meta = TransitMeta(
            self._require_key().public_key,
            self.mesh_address,
            self._claimed_at,
            endpoints,
            relay=self.config.relay_enabled,
        )
        await self.node.set_meta(META.encode(meta))
        log.info("transit metadata published", extra={"endpoints": ", ".join(map(str, endpoints))})

    # --- probes ---------------------------------------------------------------------------------

    async def _probe_socket(self) -> trio.socket.SocketType:
        sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        # Bindable before the address is on the interface, and after a restarted device lost it.
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        try:
            await sock.bind((str(self._require_probe()), PROBE_PORT))
        except OSError as exc:
            sock.close()
            raise TransitError(
                f"cannot bind the probe socket [{self._probe}]:{PROBE_PORT}: {exc.strerror}"
            ) from None
        return sock

    async def _receive_loop(self, sock: trio.socket.SocketType) -> None:
        with sock:
            while True:
                data, addr = await sock.recvfrom(256)
                reply = answer(data)
                if reply is not None:
                    with contextlib.suppress(OSError):  # no route back now: the prober sees a loss
                        await sock.sendto(reply, addr)
                    continue
                try:
                    src = ipaddress.IPv6Address(addr[0].split("%")[0])
                except ValueError:
                    continue
                name = self._by_probe.get(src)
                mon = self._monitors.get(name) if name is not None else None
                if mon is None:
                    continue
                before = mon.state
                if mon.receive(data, trio.current_time()):
                    self._probe_wake.set()
                    if mon.state is not before:
                        self._wake.set()

    async def _probe_loop(self, sock: trio.socket.SocketType) -> None:
        while True:
            now = trio.current_time()
            changed = False
            for name, mon in list(self._monitors.items()):
                before = mon.state
                for packet in mon.tick(now):
                    dst = self._probe_dst.get(name)
                    if dst is None:
                        continue
                    with contextlib.suppress(OSError):  # counted as lost by the monitor
                        await sock.sendto(packet, (str(dst), PROBE_PORT))
                changed |= mon.state is not before
            if changed:
                self._wake.set()
            deadline = min((m.next_deadline() for m in self._monitors.values()), default=now + DEVICE_POLL)
            with trio.move_on_at(max(deadline, trio.current_time() + 0.005)):
                await self._probe_wake.wait()
            self._probe_wake = trio.Event()

    def _sync_monitors(self, peers: PeerSet, now: float) -> None:
        for name in [n for n in self._monitors if n not in peers.peers]:
            del self._monitors[name]
            self._routes.pop(name, None)
        self._probe_dst = {n: probe_address(p.meta.public_key) for n, p in peers.peers.items()}
        self._by_probe = {addr: n for n, addr in self._probe_dst.items()}
        added = False
        for name in peers.peers:
            if name not in self._monitors:
                self._monitors[name] = PathMonitor(self.config.path, now, self._rng.getrandbits(32))
                self._routes[name] = _Route(DIRECT, now, "new peer: direct")
                added = True
        if added:
            self._probe_wake.set()
        self._chooser.forget(peers.peers)

    # --- gossip ---------------------------------------------------------------------------------

    async def _events_loop(self) -> None:
        events = self.node.subscribe()
        async with events:
            async for event in events:
                if event.kind is EventKind.KV and event.key != REACH_KEY:
                    continue  # health verdicts and the like
                self._wake.set()

    def _peer_vectors(self, members: list[MemberInfo], peers: PeerSet) -> dict[str, ReachVector]:
        """Published vectors of live peers, decoded once per version."""
        out: dict[str, ReachVector] = {}
        seen: set[str] = set()
        for m in members:
            if m.name == self.name or m.state not in LIVE_STATES or m.name not in peers.peers:
                continue
            version, data = m.kv.get(REACH_KEY, (0, None))
            if data is None:
                continue
            seen.add(m.name)
            cached = self._vectors.get(m.name)
            if cached is None or cached[0] != version:
                cached = self._vectors[m.name] = (version, REACH.decode(data, m.name, self._refusals))
            if cached[1] is not None:
                out[m.name] = cached[1]
        for name in [n for n in self._vectors if n not in seen]:
            del self._vectors[name]
        return out

    async def _offer(self, routes: Mapping[str, ReachRoute], now: float) -> None:
        statuses = {n: m.status() for n, m in self._monitors.items()}
        vector = vector_from_paths(statuses, routes)
        data = self._publisher.offer(vector, now)
        if data is not None:
            await self.node.set_kv(REACH_KEY, data)
            self._published = vector

    # --- the control round ----------------------------------------------------------------------

    async def _control_loop(self) -> None:
        while True:
            try:
                await self._round()
                self._last_error = None
                retry = math.inf
            except (KernelError, UapiError, UapiProtocolError, OSError, ValueError, trio.TooSlowError) as exc:
                message = f"{type(exc).__name__}: {exc}"
                if message != self._last_error:
                    log.warning("transit round failed (retrying): %s", message)
                self._last_error = message
                retry = trio.current_time() + RETRY_AFTER_ERROR
            now = trio.current_time()
            book = self._book
            deadline = min(
                retry,
                now + DEVICE_POLL,
                self._planner.next_deadline(),
                book.next_deadline() if book is not None else math.inf,
                self._meta_due,
            )
            with trio.move_on_at(max(deadline, now + MIN_ROUND_GAP)):
                await self._wake.wait()
            self._wake = trio.Event()
            await trio.sleep(MIN_ROUND_GAP)

    async def _round(self) -> None:
        now, wall = trio.current_time(), time.time()
        book = self._book
        if book is None:
            return
        if now >= self._meta_due:
            await self._refresh_meta(now)
        members = self.node.members()
        peers = book.update(members, now)
        self._peerset = peers
        self._note_conflict(peers)
        self._sync_monitors(peers, now)

        device = await self._wgdev.get()
        self._device = device
        if device.private_key is None:  # wireguard-go restarted / link re-created: a blank device
            log.warning(
                "WireGuard device %s is blank (%s): configuring it",
                self.config.interface,
                "link re-created?" if self._device_kind == "kernel" else "wireguard-go restarted?",
            )
            await self._bring_up()
        endpoints: dict[str, Endpoint | None] = {}
        for name, peer in peers.peers.items():
            state = device.peers.get(peer.meta.public_key)
            age = state.handshake_age(wall) if state is not None else None
            self._monitors[name].observe_handshake(age, now)
            endpoints[name] = self._chooser.choose(
                name,
                peer.meta.endpoints,
                on_device=state is not None,
                handshake=None if age is None else now - age,
                now=now,
            )

        routes = await self._decide(members, peers, now)

        routed = {
            name: nets
            for name, p in peers.peers.items()
            if p.holds_address and (nets := self._routed.get(p.meta.mesh_address))
        }
        desired = desired_device(
            self._require_key(),
            self.config.listen_port,
            self.config.persistent_keepalive,
            peers.peers,
            routes,
            endpoints,
            routed,
        )
        request = plan(desired, device)
        if request is not None:
            await self._wgdev.set(request)

        may_claim = self._may_claim(members, now)
        own = self.mesh_address if peers.holds_own_address and may_claim else None
        kernel = desired_kernel(own, self._require_probe(), peers.peers)
        if kernel != self._kernel_desired or now >= self._kernel_due:
            actual = await self._kernel.state()
            kplan = plan_kernel(kernel, actual, self._added)
            if not kplan.empty:
                await self._kernel.apply(kplan)
                self._added |= set(kplan.add_addresses)
                self._added -= set(kplan.del_addresses)
            self._kernel_desired = kernel
            self._kernel_due = now + KERNEL_RESYNC
        self._note_own(may_claim or not peers.holds_own_address, own)

    async def _decide(self, members: list[MemberInfo], peers: PeerSet, now: float) -> dict[str, ReachRoute]:
        current = {n: r.route for n, r in self._routes.items()}
        await self._offer(current, now)
        vectors = self._peer_vectors(members, peers)
        if self._published is not None:
            vectors[self.name] = self._published
        no_relay = {name for name, p in peers.peers.items() if not p.meta.relay}
        routes = self._planner.update(vectors, peers.peers, now, no_relay)
        changed = False
        for name, route in routes.items():
            entry = self._routes.get(name)
            selector = self._planner.selector(name)
            reason = selector.reason if selector is not None else ""
            if entry is None or entry.route != route:
                self._routes[name] = _Route(route, now, reason)
                changed = True
                if entry is not None:
                    self._route_changes[route.kind.value] = self._route_changes.get(route.kind.value, 0) + 1
                level = logging.WARNING if route.kind is RouteKind.UNREACHABLE else logging.INFO
                log.log(
                    level,
                    "peer %s: %s (%s)",
                    name,
                    path_text(route),
                    reason,
                    extra={"transit": "route", "peer": name, "path": path_text(route), "reason": reason},
                )
            else:
                entry.reason = reason
        if changed:
            await self._offer(routes, now)
        return routes

    def _may_claim(self, members: list[MemberInfo], now: float) -> bool:
        if self._claim_ok:
            return True
        others = any(m.name != self.name and m.state in LIVE_STATES for m in members)
        self._claim_ok = others or now - self._started_at >= CLAIM_SETTLE
        return self._claim_ok

    def _note_conflict(self, peers: PeerSet) -> None:
        conflict = peers.conflict
        note = conflict.message_for(self.name) if conflict is not None else None
        if note != self._conflict_note:
            if note is not None:
                level = logging.WARNING if peers.holds_own_address else logging.ERROR
                log.log(level, "%s", note, extra={"transit": "address_conflict"})
            elif self._conflict_note is not None:
                log.info("mesh address %s: conflict over", self.mesh_address)
            self._conflict_note = note

    # --- the peers view -------------------------------------------------------------------------

    def report(self) -> TransitReport:
        now, wall = trio.current_time(), time.time()
        key = self._require_key()
        peers = self._peerset
        errors: list[str] = []
        if self._conflict_note is not None:
            errors.append(self._conflict_note)
        if peers is not None:
            errors += [f"{name}: {why}" for name, why in sorted(peers.errors.items())]
        if self._last_error is not None:
            errors.append(self._last_error)
        states = {m.name: str(m.state) for m in self.node.members()}
        vectors: dict[str, ReachVector] = {n: v for n, (_, v) in self._vectors.items() if v is not None}
        if self._published is not None:
            vectors[self.name] = self._published
        rows: list[PeerReport] = []
        for name, peer in sorted((peers.peers if peers is not None else {}).items()):
            mon = self._monitors.get(name)
            entry = self._routes.get(name)
            if mon is None or entry is None:
                continue
            status = mon.status()
            dev = self._device.peers.get(peer.meta.public_key)
            route = entry.route
            rtt: float | None = status.rtt_ms if route.kind is RouteKind.DIRECT else None
            if route.relay is not None:
                a, b = leg(vectors, self.name, route.relay), leg(vectors, route.relay, name)
                rtt = float(a.rtt_ms + b.rtt_ms)
            rows.append(
                PeerReport(
                    name=name,
                    public_key=peer.meta.public_key.b64,
                    mesh_address=str(peer.meta.mesh_address),
                    holds_address=peer.holds_address,
                    member=states.get(name, "gone"),
                    endpoint=str(dev.endpoint) if dev is not None and dev.endpoint is not None else None,
                    path=path_text(route),
                    relay=route.relay,
                    reason=entry.reason,
                    since=wall - (now - entry.since),
                    direct=status.state.value,
                    direct_reason=status.reason,
                    rtt_ms=None if rtt is None else round(rtt, 3),
                    direct_rtt_ms=None
                    if status.rtt_ms is None or status.state is not PathState.UP
                    else round(status.rtt_ms, 3),
                    loss=round(status.loss, 3),
                    last_handshake=dev.last_handshake if dev is not None else None,
                    rx_bytes=dev.rx_bytes if dev is not None else 0,
                    tx_bytes=dev.tx_bytes if dev is not None else 0,
                )
            )
        return TransitReport(
            name=self.name,
            interface=self.config.interface,
            backend=BACKEND_NAMES[self._device_kind],
            public_key=key.public_key.b64,
            mesh_address=str(self.mesh_address),
            holds_address=peers.holds_own_address if peers is not None else True,
            probe_address=str(self._require_probe()),
            listen_port=self.config.listen_port,
            endpoints=tuple(str(e) for e in self._endpoints),
            errors=tuple(errors),
            peers=tuple(rows),
            route_changes=dict(self._route_changes),
        )


__all__ = [
    "GossipView",
    "TransitDriver",
    "TransitError",
    "kernel_backend_problem",
    "kernel_unavailable",
    "select_backend",
]
