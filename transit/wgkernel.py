"""The WireGuard kernel module as a :class:`transit.wgdevice.WireGuardBackend`, through pyroute2 netlink.

The same two operations as :class:`transit.uapi.UapiClient` (``get`` a :class:`DeviceState`, ``set`` a
:class:`SetRequest`), so the driver's reconcile does not know which backend it runs; plus the link's
life (:func:`run_kernel_link`), which for wireguard-go is its process's.

* pyroute2 is blocking: every operation runs in a Trio worker thread with its own short-lived sockets
  (:func:`common.netlink.run`, as for :class:`transit.kernel.Pyroute2Net`), so no netlink socket is
  shared between threads.
* pyroute2's ``WireGuard.set`` carries one peer per message, so a :class:`SetRequest` becomes several
  messages (:func:`set_calls`), ordered so that no prefix is ever without a peer in between: first
  every peer gets the prefixes it should hold (adding a prefix to one peer takes it from any other,
  as in the UAPI), then the peers losing prefixes get their lists replaced, then removed peers go.
  Like a UAPI ``set``, a failure part-way leaves part applied; the next round re-reads and converges.
* A ``get`` is a netlink dump: a device with many peers arrives in several messages, and a peer with
  many allowed IPs may continue in the next one under the same public key (:func:`parse_info` merges).
* Failures become :class:`WgNetlinkError`, a :class:`transit.uapi.UapiError` (the driver already
  handles those for wireguard-go) whose message names the interface and what failed.

Keys are base64 in pyroute2's API. The private key is handed to pyroute2 and never logged:
:class:`SetCall` hides it from its repr.
"""

from __future__ import annotations

import base64
import errno as errno_mod
import functools
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import trio

from common import netlink
from common.address import IPNetwork
from transit.endpoint import Endpoint, parse_network
from transit.keys import PrivateKey, PublicKey
from transit.uapi import DeviceState, PeerState, PeerUpdate, SetRequest, UapiError, UapiProtocolError

log = logging.getLogger("wiremesh.transit.wgkernel")

LINK_KIND = "wireguard"
LINK_POLL = 2.0  # how often run_kernel_link checks that the interface is still there
DELETE_TIMEOUT = 5.0

T = TypeVar("T")
S = TypeVar("S", "WgSocket", "LinkSocket")


# --- the pyroute2 surface used (injectable: tests pass a fake) --------------------------------------


class WgSocket(Protocol):
    """``pyroute2.WireGuard``: generic netlink to the wireguard family."""

    def info(self, interface: str) -> Sequence[Any]: ...

    def set(
        self,
        interface: str,
        listen_port: int | None = None,
        fwmark: int | None = None,
        private_key: str | None = None,
        peer: dict[str, Any] | None = None,
    ) -> object: ...

    def close(self) -> None: ...


class LinkSocket(Protocol):
    """``pyroute2.IPRoute``, for the link only."""

    def link(self, command: str, **kwarg: Any) -> Any: ...

    def link_lookup(self, **kwarg: Any) -> list[int]: ...

    def close(self) -> None: ...


class Netlink(Protocol):
    """The pyroute2 module, or a fake of these two constructors."""

    def IPRoute(self) -> LinkSocket: ...

    def WireGuard(self) -> WgSocket: ...


# --- errors ------------------------------------------------------------------------------------------


class WgNetlinkError(UapiError):
    """A netlink request about the interface failed. ``errno`` is negative, as for the UAPI."""

    def __init__(self, ifname: str, what: str, code: int, detail: str) -> None:
        self.errno = -abs(code)
        self.ifname = ifname
        name = errno_mod.errorcode.get(abs(code), "?")
        Exception.__init__(self, f"WireGuard interface {ifname}: {what} failed: {detail} ({name})")


def _error(ifname: str, what: str, exc: BaseException) -> WgNetlinkError:
    code = netlink.error_code(exc)
    if code == errno_mod.ENODEV:
        detail = "no such interface"
    elif code == errno_mod.ENOENT and what.startswith("open"):
        detail = "the wireguard generic netlink family is missing (is the wireguard kernel module loaded?)"
    elif code == errno_mod.EOPNOTSUPP:
        detail = "operation not supported (no wireguard kernel module?)"
    elif code == errno_mod.EPERM:
        detail = "operation not permitted (needs CAP_NET_ADMIN)"
    else:
        detail = os.strerror(code) if code != errno_mod.EIO or not str(exc) else str(exc)
    return WgNetlinkError(ifname, what, code, detail)


# --- SetRequest -> pyroute2 calls (pure) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetCall:
    """One ``WireGuard.set`` call. ``private_key`` is base64 and kept out of the repr."""

    private_key: str | None = field(default=None, repr=False)
    listen_port: int | None = None
    peer: dict[str, Any] | None = None


def _nets(nets: Iterable[IPNetwork]) -> list[str]:
    return [str(n) for n in nets]


def _give(u: PeerUpdate) -> dict[str, Any] | None:
    """A peer's first message: create or update it, and add (never replace) its allowed IPs."""
    peer: dict[str, Any] = {"public_key": u.public_key.b64}
    if u.update_only:
        peer["update_only"] = True
    if u.endpoint is not None:
        peer["endpoint_addr"] = str(u.endpoint.host)
        peer["endpoint_port"] = u.endpoint.port
    if u.persistent_keepalive is not None:
        peer["persistent_keepalive"] = u.persistent_keepalive
    if u.allowed_ips:
        peer["allowed_ips"] = _nets(u.allowed_ips)
    if u.update_only and len(peer) == 2:
        return None  # nothing but a replacement, sent in the second phase
    return peer


def _take(u: PeerUpdate) -> dict[str, Any]:
    """A peer's second message: its allowed IPs replaced by exactly the wanted list."""
    peer: dict[str, Any] = {"public_key": u.public_key.b64, "update_only": True, "replace_allowed_ips": True}
    if u.allowed_ips:
        peer["allowed_ips"] = _nets(u.allowed_ips)
    return peer


def set_calls(request: SetRequest, present: Iterable[PublicKey] = ()) -> list[SetCall]:
    """The ``WireGuard.set`` calls for ``request``, in an order without a moment where a prefix that
    moves between peers has no peer (module docstring). ``present`` is the device's peers, needed only
    for ``replace_peers`` (which pyroute2 cannot send: the others are removed one by one)."""
    calls: list[SetCall] = []
    if request.private_key is not None or request.listen_port is not None:
        key = request.private_key
        calls.append(
            SetCall(
                private_key=None if key is None else base64.b64encode(key.reveal()).decode(),
                listen_port=request.listen_port,
            )
        )
    updates = [u for u in request.peers if not u.remove]
    for u in updates:
        peer = _give(u)
        if peer is not None:
            calls.append(SetCall(peer=peer))
    calls.extend(SetCall(peer=_take(u)) for u in updates if u.replace_allowed_ips)
    removed = [u.public_key for u in request.peers if u.remove]
    if request.replace_peers:
        keep = {u.public_key for u in updates} | set(removed)
        removed += sorted(k for k in present if k not in keep)
    calls.extend(SetCall(peer={"public_key": k.b64, "remove": True}) for k in removed)
    return calls


# --- info -> DeviceState (pure) ----------------------------------------------------------------------


def _key_bytes(value: object) -> bytes:
    """pyroute2 decodes keys to base64 (bytes); accept str too."""
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, bytes):
        raise ValueError(f"expected a base64 key, got {type(value).__name__}")
    raw = base64.b64decode(value, validate=True)
    if len(raw) != 32:
        raise ValueError(f"a WireGuard key is 32 bytes (got {len(raw)})")
    return raw


@dataclass(slots=True)
class _Peer:
    public_key: PublicKey
    endpoint: Endpoint | None = None
    allowed_ips: set[IPNetwork] = field(default_factory=set)
    persistent_keepalive: int = 0
    handshake: float | None = None
    rx_bytes: int = 0
    tx_bytes: int = 0
    has_preshared_key: bool = False

    def read(self, nla: Any) -> None:
        """One peer nest of a dump message; a continuation carries only more allowed IPs."""
        endpoint = nla.get_attr("WGPEER_A_ENDPOINT")
        if endpoint is not None:
            self.endpoint = Endpoint(ipaddress.ip_address(endpoint["addr"]), int(endpoint["port"]))
        keepalive = nla.get_attr("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL")
        if keepalive is not None:
            self.persistent_keepalive = int(keepalive)
        shake = nla.get_attr("WGPEER_A_LAST_HANDSHAKE_TIME")
        if shake is not None:
            sec, nsec = int(shake["tv_sec"]), int(shake["tv_nsec"])
            self.handshake = sec + nsec / 1e9 if sec or nsec else None  # 0: never, as in the UAPI
        rx, tx = nla.get_attr("WGPEER_A_RX_BYTES"), nla.get_attr("WGPEER_A_TX_BYTES")
        if rx is not None:
            self.rx_bytes = int(rx)
        if tx is not None:
            self.tx_bytes = int(tx)
        psk = nla.get_attr("WGPEER_A_PRESHARED_KEY")
        if psk is not None:
            self.has_preshared_key = any(_key_bytes(psk))
        for ip in nla.get_attr("WGPEER_A_ALLOWEDIPS") or ():
            self.allowed_ips.add(parse_network(ip["addr"]))

    def build(self) -> PeerState:
        return PeerState(
            self.public_key,
            self.endpoint,
            frozenset(self.allowed_ips),
            self.persistent_keepalive,
            self.handshake,
            self.rx_bytes,
            self.tx_bytes,
            self.has_preshared_key,
        )


def parse_info(ifname: str, messages: Iterable[Any]) -> DeviceState:
    """The device state from ``WireGuard.info`` (the messages of one dump), as the UAPI path builds it:
    no private key when the device has none, handshake None when there was none."""
    private: PrivateKey | None = None
    listen_port = fwmark = 0
    peers: dict[PublicKey, _Peer] = {}
    try:
        for msg in messages:
            key = msg.get_attr("WGDEVICE_A_PRIVATE_KEY")
            if key is not None:
                raw = _key_bytes(key)
                private = PrivateKey(raw) if any(raw) else None
            port = msg.get_attr("WGDEVICE_A_LISTEN_PORT")
            if port is not None:
                listen_port = int(port)
            mark = msg.get_attr("WGDEVICE_A_FWMARK")
            if mark is not None:
                fwmark = int(mark)
            for nla in msg.get_attr("WGDEVICE_A_PEERS") or ():
                pub = PublicKey(_key_bytes(nla.get_attr("WGPEER_A_PUBLIC_KEY")))
                peers.setdefault(pub, _Peer(pub)).read(nla)
    except (ValueError, KeyError, TypeError) as exc:
        raise UapiProtocolError(f"WireGuard interface {ifname}: unexpected netlink reply: {exc}") from None
    return DeviceState(private, listen_port, fwmark, {k: p.build() for k, p in peers.items()})


# --- the backend -------------------------------------------------------------------------------------


def _link_kind(ipr: LinkSocket, ifname: str) -> str | None:
    """The rtnetlink kind of an existing link (``wireguard``, ``tun`` ...), None if it has none."""
    for msg in ipr.link("get", ifname=ifname):
        info = msg.get_attr("IFLA_LINKINFO")
        if info is not None:
            kind = info.get_attr("IFLA_INFO_KIND")
            return None if kind is None else str(kind)
    return None


class KernelWireGuard:
    """One interface of the kernel module: ``get``/``set`` for the reconcile, and the link itself."""

    kind = "kernel"

    def __init__(self, ifname: str, netlink: Netlink) -> None:
        self.ifname = ifname
        self._netlink = netlink

    async def _in_thread(self, open_: Callable[[], S], opening: str, what: str, fn: Callable[[S], T]) -> T:
        """``fn`` on a fresh socket from ``open_``, in a worker thread; failures become
        :class:`WgNetlinkError` naming the step (``opening`` or ``what``)."""
        return await netlink.run(
            open_,
            fn,
            errors=functools.partial(_error, self.ifname, what),
            open_errors=functools.partial(_error, self.ifname, opening),
            passthrough=(WgNetlinkError, UapiProtocolError),
        )

    async def _wg(self, what: str, fn: Callable[[WgSocket], T]) -> T:
        return await self._in_thread(self._netlink.WireGuard, "open (generic netlink)", what, fn)

    async def _link(self, what: str, fn: Callable[[LinkSocket], T]) -> T:
        return await self._in_thread(self._netlink.IPRoute, "open (rtnetlink)", what, fn)

    async def get(self) -> DeviceState:
        return await self._wg("read", lambda wg: parse_info(self.ifname, wg.info(self.ifname)))

    async def set(self, request: SetRequest) -> None:
        if request.empty:
            return

        def write(wg: WgSocket) -> None:
            present: Iterable[PublicKey] = ()
            if request.replace_peers:
                present = parse_info(self.ifname, wg.info(self.ifname)).peers
            for call in set_calls(request, present):
                try:
                    wg.set(
                        self.ifname,
                        listen_port=call.listen_port,
                        private_key=call.private_key,
                        peer=call.peer,
                    )
                except Exception as exc:
                    raise _error(self.ifname, _describe(call), exc) from None

        await self._wg("configure", write)

    async def exists(self) -> bool:
        return await self._link("look up", lambda ipr: bool(ipr.link_lookup(ifname=self.ifname)))

    async def create(self) -> bool:
        """Add the link; True if created, False if a WireGuard link of that name was there already (left
        by an agent killed before it could delete it: adopted, the reconcile makes it ours). A link of
        another kind with the name is refused."""

        def add(ipr: LinkSocket) -> bool:
            try:
                ipr.link("add", ifname=self.ifname, kind=LINK_KIND)
                return True
            except Exception as exc:
                if netlink.error_code(exc) != errno_mod.EEXIST:
                    raise _error(self.ifname, "create (ip link add type wireguard)", exc) from None
            kind = _link_kind(ipr, self.ifname)
            if kind != LINK_KIND:
                raise WgNetlinkError(
                    self.ifname,
                    "create",
                    errno_mod.EEXIST,
                    f"an interface of kind {kind or 'unknown'} has that name (a wireguard-go left over, "
                    "or another program's interface?)",
                )
            return False

        created = await self._link("create", add)
        if not created:
            log.warning("adopting the existing WireGuard interface %s", self.ifname)
        return created

    async def delete(self) -> None:
        """Remove the link (its addresses and routes go with it); gone already is fine."""

        def delete(ipr: LinkSocket) -> None:
            for index in ipr.link_lookup(ifname=self.ifname):
                try:
                    ipr.link("del", index=index)
                except Exception as exc:
                    if netlink.error_code(exc) != errno_mod.ENODEV:
                        raise

        await self._link("delete", delete)


def _describe(call: SetCall) -> str:
    """What a failed call was doing, for the error message (never the private key)."""
    if call.peer is None:
        parts = ["private key"] if call.private_key is not None else []
        if call.listen_port is not None:
            parts.append(f"listen port {call.listen_port}")
        return "set " + " and ".join(parts)
    verb = "remove" if call.peer.get("remove") else "update" if call.peer.get("update_only") else "add"
    return f"{verb} peer {call.peer['public_key']}"


def probe_module(netlink: Netlink, name: str | None = None) -> bool:
    """Blocking: can this kernel make a WireGuard link? Adds one (which loads the module if it is
    installed but not loaded) and deletes it. Any failure (no module, no permission) is a no."""
    ifname = name or f"wmprobe{os.getpid() % 10_000_000}"
    try:
        ipr = netlink.IPRoute()
    except Exception:
        return False
    try:
        try:
            ipr.link("add", ifname=ifname, kind=LINK_KIND)
        except Exception:
            return False
        try:
            for index in ipr.link_lookup(ifname=ifname):
                ipr.link("del", index=index)
        except Exception as exc:
            log.warning("could not delete the probe interface %s: %s", ifname, exc)
        return True
    finally:
        ipr.close()


async def run_kernel_link(
    device: KernelWireGuard,
    *,
    poll: float = LINK_POLL,
    task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Own the interface until cancelled, as :func:`transit.wggo.run_wireguard_go` owns wireguard-go:
    create it (``started(created)``; a failure here raises), re-create it if it disappears (the driver
    then sees a device without a private key and configures it again, as after a wireguard-go restart),
    and delete it on exit."""
    created = await device.create()
    try:
        task_status.started(created)
        while True:
            await trio.sleep(poll)
            try:
                if not await device.exists():
                    log.warning("WireGuard interface %s disappeared: creating it again", device.ifname)
                    await device.create()
            except (UapiError, OSError) as exc:
                log.warning("WireGuard interface %s: %s", device.ifname, exc)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(DELETE_TIMEOUT):
            try:
                await device.delete()
            except (UapiError, OSError) as exc:
                log.warning("could not delete WireGuard interface %s: %s", device.ifname, exc)


__all__ = [
    "KernelWireGuard",
    "LinkSocket",
    "Netlink",
    "SetCall",
    "WgNetlinkError",
    "WgSocket",
    "parse_info",
    "probe_module",
    "run_kernel_link",
    "set_calls",
]
