"""The kernel WireGuard backend (:mod:`transit.wgkernel`) and backend selection, against a fake of the
pyroute2 surface it uses: this machine has no WireGuard module, so nothing here touches a real device.

The fake kernel keeps a device per link and applies ``WireGuard.set`` as the module does (one peer per
message; adding a prefix to a peer takes it from any other); its ``info`` replies are real pyroute2
``wgmsg`` messages, encoded and decoded by pyroute2, split the way the kernel splits a dump.
"""

from __future__ import annotations

import base64
import errno
import functools
import importlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from transit.config import TransitConfig
from transit.driver import TransitDriver, TransitError, select_backend
from transit.endpoint import Endpoint, parse_network
from transit.keys import PrivateKey, PublicKey
from transit.uapi import DeviceState, PeerUpdate, SetRequest, UapiError, UapiProtocolError, parse_get
from transit.wgdevice import DesiredDevice, DesiredPeer, WireGuardBackend, plan, reconcile
from transit.wgkernel import (
    KernelWireGuard,
    SetCall,
    WgNetlinkError,
    parse_info,
    probe_module,
    run_kernel_link,
    set_calls,
)

wgmod: Any = pytest.importorskip("pyroute2.netlink.generic.wireguard")
NetlinkError: Any = importlib.import_module("pyroute2.netlink.exceptions").NetlinkError

KEY = PrivateKey(bytes(range(32)))
PK = [PublicKey(bytes([i + 1]) * 32) for i in range(5)]
N = [parse_network(f"100.64.0.{i}/32") for i in range(1, 9)]
EP = Endpoint.parse("198.18.0.2:51820")
EP6 = Endpoint.parse("[2001:db8::2]:51821")
IF = "wmk0"
NO_SUCH = Path("/nonexistent/sys/module/wireguard")


# --- the fake kernel -----------------------------------------------------------------------------------


@dataclass
class FakePeer:
    endpoint: Endpoint | None = None
    keepalive: int = 0
    ips: list[str] = field(default_factory=list)
    rx: int = 0
    tx: int = 0
    handshake: tuple[int, int] = (0, 0)
    psk: bytes = bytes(32)


@dataclass
class FakeDev:
    private: bytes | None = None
    port: int = 0
    peers: dict[str, FakePeer] = field(default_factory=dict)


class FakeKernel:
    """One network namespace's links and WireGuard devices, with pyroute2's ``IPRoute``/``WireGuard``."""

    def __init__(self, *, module: bool = True, peers_per_message: int = 2, ips_per_message: int = 3) -> None:
        self.module = module
        self.links: dict[str, tuple[int, str]] = {}
        self.devices: dict[str, FakeDev] = {}
        self.set_log: list[dict[str, Any]] = []
        self.owners_after_each_set: list[dict[str, str]] = []
        self.fail_set: int | None = None  # errno for the next WireGuard.set
        self.peers_per_message = peers_per_message
        self.ips_per_message = ips_per_message
        self._next_index = 10

    # pyroute2's constructors
    def IPRoute(self) -> FakeIPRoute:
        return FakeIPRoute(self)

    def WireGuard(self) -> FakeWireGuard:
        if not self.module:
            raise NetlinkError(errno.ENOENT, "No such file or directory")  # as measured here
        return FakeWireGuard(self)

    def add_link(self, name: str, kind: str) -> None:
        if kind == "wireguard" and not self.module:
            raise NetlinkError(errno.EOPNOTSUPP, "Operation not supported")  # as measured here
        if name in self.links:
            raise NetlinkError(errno.EEXIST, "File exists")
        self.links[name] = (self._next_index, kind)
        self._next_index += 1
        if kind == "wireguard":
            self.devices[name] = FakeDev()

    def del_link(self, name: str) -> None:
        del self.links[name]
        self.devices.pop(name, None)

    def device(self, name: str) -> FakeDev:
        if name not in self.devices:
            raise NetlinkError(errno.ENODEV, "No such device")
        return self.devices[name]


class Attrs:
    """Stands for an rtnetlink message (only ``get_attr`` is used)."""

    def __init__(self, attrs: dict[str, Any]) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeIPRoute:
    def __init__(self, kernel: FakeKernel) -> None:
        self.k = kernel
        self.closed = False

    def link(self, command: str, **kw: Any) -> Any:
        if command == "add":
            self.k.add_link(kw["ifname"], kw["kind"])
            return ()
        if command == "get":
            if kw["ifname"] not in self.k.links:
                raise NetlinkError(errno.ENODEV, "No such device")
            kind = self.k.links[kw["ifname"]][1]
            return (Attrs({"IFLA_LINKINFO": Attrs({"IFLA_INFO_KIND": kind})}),)
        if command == "del":
            name = next(n for n, (i, _) in self.k.links.items() if i == kw["index"])
            self.k.del_link(name)
            return ()
        raise AssertionError(command)

    def link_lookup(self, **kw: Any) -> list[int]:
        entry = self.k.links.get(kw["ifname"])
        return [] if entry is None else [entry[0]]

    def close(self) -> None:
        self.closed = True


class FakeWireGuard:
    def __init__(self, kernel: FakeKernel) -> None:
        self.k = kernel

    def close(self) -> None:
        pass

    def set(
        self,
        interface: str,
        listen_port: int | None = None,
        fwmark: int | None = None,
        private_key: str | None = None,
        peer: dict[str, Any] | None = None,
    ) -> object:
        self.k.set_log.append({"listen_port": listen_port, "private_key": private_key, "peer": peer})
        if self.k.fail_set is not None:
            code, self.k.fail_set = self.k.fail_set, None
            raise NetlinkError(code, "injected")
        dev = self.k.device(interface)
        if private_key is not None:
            dev.private = base64.b64decode(private_key)
        if listen_port is not None:
            dev.port = listen_port
        if peer is not None:
            self._peer(dev, peer)
        self.k.owners_after_each_set.append({ip: k for k, p in dev.peers.items() for ip in p.ips})
        return ()

    @staticmethod
    def _peer(dev: FakeDev, peer: dict[str, Any]) -> None:
        key = peer["public_key"]
        assert len(base64.b64decode(key)) == 32
        if peer.get("remove"):
            dev.peers.pop(key, None)
            return
        cur = dev.peers.get(key)
        if cur is None:
            if peer.get("update_only"):
                return
            cur = dev.peers[key] = FakePeer()
        if "endpoint_addr" in peer:
            cur.endpoint = Endpoint.parse(
                f"[{peer['endpoint_addr']}]:{peer['endpoint_port']}"
                if ":" in peer["endpoint_addr"]
                else f"{peer['endpoint_addr']}:{peer['endpoint_port']}"
            )
        if "persistent_keepalive" in peer:
            cur.keepalive = peer["persistent_keepalive"]
        if peer.get("replace_allowed_ips"):
            cur.ips = []
        for ip in peer.get("allowed_ips", ()):
            for other in dev.peers.values():  # a prefix belongs to one peer: the last one given it
                if ip in other.ips:
                    other.ips.remove(ip)
            cur.ips.append(ip)

    def info(self, interface: str) -> tuple[Any, ...]:
        return dump(self.k.device(interface), interface, self.k.peers_per_message, self.k.ips_per_message)


def _allowed(ip: str) -> dict[str, Any]:
    net = parse_network(ip)
    family = socket.AF_INET if net.version == 4 else socket.AF_INET6
    return {
        "attrs": [
            ["WGALLOWEDIP_A_FAMILY", family],
            ["WGALLOWEDIP_A_IPADDR", net.network_address.packed],
            ["WGALLOWEDIP_A_CIDR_MASK", net.prefixlen],
        ]
    }


def _peer_nests(dev: FakeDev, ips_per_message: int) -> Iterator[tuple[bool, dict[str, Any]]]:
    """Peer nests as the kernel emits them: a peer with many allowed IPs is continued in further nests
    that carry only its public key and the next IPs. Yields (first nest of its peer, nest)."""
    for key, p in dev.peers.items():
        attrs: list[list[Any]] = [
            ["WGPEER_A_PUBLIC_KEY", key],
            ["WGPEER_A_PRESHARED_KEY", base64.b64encode(p.psk).decode()],
            ["WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": p.handshake[0], "tv_nsec": p.handshake[1]}],
            ["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", p.keepalive],
            ["WGPEER_A_TX_BYTES", p.tx],
            ["WGPEER_A_RX_BYTES", p.rx],
            ["WGPEER_A_PROTOCOL_VERSION", 1],
        ]
        if p.endpoint is not None:
            attrs.append(["WGPEER_A_ENDPOINT", {"addr": str(p.endpoint.host), "port": p.endpoint.port}])
        chunks = [p.ips[i : i + ips_per_message] for i in range(0, len(p.ips), ips_per_message)] or [[]]
        for n, chunk in enumerate(chunks):
            nest = attrs if n == 0 else [["WGPEER_A_PUBLIC_KEY", key]]
            if chunk:
                nest = [*nest, ["WGPEER_A_ALLOWEDIPS", [_allowed(ip) for ip in chunk]]]
            yield n == 0, {"attrs": nest}


def dump(dev: FakeDev, ifname: str, peers_per_message: int, ips_per_message: int) -> tuple[Any, ...]:
    """``WireGuard.info``'s reply: the device attributes in the first message only, then the peer nests
    a few per message; each message encoded and decoded by pyroute2's own ``wgmsg``."""
    nests = [nest for _, nest in _peer_nests(dev, ips_per_message)]
    groups = [nests[i : i + peers_per_message] for i in range(0, len(nests), peers_per_message)] or [[]]
    out = []
    for n, group in enumerate(groups):
        msg = wgmod.wgmsg()
        msg["cmd"] = wgmod.WG_CMD_GET_DEVICE
        msg["version"] = wgmod.WG_GENL_VERSION
        msg["header"]["type"] = 0x1F
        attrs: list[list[Any]] = [["WGDEVICE_A_IFINDEX", 10], ["WGDEVICE_A_IFNAME", ifname]]
        if n == 0:
            attrs += [["WGDEVICE_A_LISTEN_PORT", dev.port], ["WGDEVICE_A_FWMARK", 0]]
            if dev.private is not None:  # the kernel omits both keys until it has an identity
                priv = PrivateKey(dev.private)
                attrs += [
                    ["WGDEVICE_A_PRIVATE_KEY", base64.b64encode(priv.reveal()).decode()],
                    ["WGDEVICE_A_PUBLIC_KEY", priv.public_key.b64],
                ]
        if group:
            attrs.append(["WGDEVICE_A_PEERS", group])
        msg["attrs"] = attrs
        msg.encode()
        decoded = wgmod.wgmsg(msg.data)
        decoded.decode()
        out.append(decoded)
    return tuple(out)


def backend(kernel: FakeKernel) -> KernelWireGuard:
    kernel.add_link(IF, "wireguard")
    return KernelWireGuard(IF, kernel)


# --- SetRequest -> calls ---------------------------------------------------------------------------------


def test_a_plan_becomes_the_right_pyroute2_calls() -> None:
    req = SetRequest(
        private_key=KEY,
        listen_port=51820,
        peers=(
            PeerUpdate(PK[0], remove=True),
            PeerUpdate(
                PK[1], endpoint=EP6, persistent_keepalive=25, replace_allowed_ips=True, allowed_ips=(N[0],)
            ),
            PeerUpdate(PK[2], update_only=True, endpoint=EP),
            PeerUpdate(PK[3], update_only=True, replace_allowed_ips=True, allowed_ips=(N[2], N[3])),
            PeerUpdate(PK[4], update_only=True, allowed_ips=(N[4],)),
        ),
    )
    calls = set_calls(req)
    assert calls == [
        SetCall(private_key=base64.b64encode(KEY.reveal()).decode(), listen_port=51820),
        # new peer: endpoint split in two, keepalive, its prefixes
        SetCall(
            peer={
                "public_key": PK[1].b64,
                "endpoint_addr": "2001:db8::2",
                "endpoint_port": 51821,
                "persistent_keepalive": 25,
                "allowed_ips": ["100.64.0.1/32"],
            }
        ),
        SetCall(
            peer={
                "public_key": PK[2].b64,
                "update_only": True,
                "endpoint_addr": "198.18.0.2",
                "endpoint_port": 51820,
            }
        ),
        # a replacement first adds what the peer should hold ...
        SetCall(
            peer={
                "public_key": PK[3].b64,
                "update_only": True,
                "allowed_ips": ["100.64.0.3/32", "100.64.0.4/32"],
            }
        ),
        SetCall(peer={"public_key": PK[4].b64, "update_only": True, "allowed_ips": ["100.64.0.5/32"]}),
        # ... and only then replaces the lists, once every prefix is with its new owner
        SetCall(
            peer={
                "public_key": PK[1].b64,
                "update_only": True,
                "replace_allowed_ips": True,
                "allowed_ips": ["100.64.0.1/32"],
            }
        ),
        SetCall(
            peer={
                "public_key": PK[3].b64,
                "update_only": True,
                "replace_allowed_ips": True,
                "allowed_ips": ["100.64.0.3/32", "100.64.0.4/32"],
            }
        ),
        # removals last
        SetCall(peer={"public_key": PK[0].b64, "remove": True}),
    ]
    assert "private_key" not in repr(calls[0]) and base64.b64encode(KEY.reveal()).decode() not in repr(calls)


def test_emptying_a_peer_replaces_with_no_list_and_replace_peers_removes_the_rest() -> None:
    req = SetRequest(peers=(PeerUpdate(PK[0], update_only=True, replace_allowed_ips=True),))
    assert set_calls(req) == [
        SetCall(peer={"public_key": PK[0].b64, "update_only": True, "replace_allowed_ips": True})
    ]
    req = SetRequest(replace_peers=True, peers=(PeerUpdate(PK[0], persistent_keepalive=0),))
    assert set_calls(req, present=[PK[0], PK[2], PK[1]]) == [
        SetCall(peer={"public_key": PK[0].b64, "persistent_keepalive": 0}),
        SetCall(peer={"public_key": PK[1].b64, "remove": True}),
        SetCall(peer={"public_key": PK[2].b64, "remove": True}),
    ]


# --- reconcile through the backend ---------------------------------------------------------------------


def desired(*peers: DesiredPeer) -> DesiredDevice:
    return DesiredDevice.build(KEY, 51820, peers)


async def test_reconcile_through_the_kernel_backend_converges() -> None:
    k = FakeKernel()
    dev: WireGuardBackend = backend(k)
    assert await dev.get() == DeviceState()  # a new link: no key, no port, no peers

    want = desired(
        DesiredPeer(PK[0], frozenset({N[0]}), EP, 25),
        DesiredPeer(PK[1], frozenset({N[1], N[2]}), EP6, 25),
        DesiredPeer(PK[2], frozenset({N[3]}), None, 0),
    )
    assert await reconcile(dev, want) is not None
    got = await dev.get()
    assert got.private_key == KEY and got.listen_port == 51820
    assert got.peers[PK[0]].endpoint == EP and got.peers[PK[1]].endpoint == EP6
    assert got.peers[PK[2]].endpoint is None
    assert {k: p.allowed_ips for k, p in got.peers.items()} == {p: want.peers[p].allowed_ips for p in PK[:3]}
    assert await reconcile(dev, want) is None  # nothing left to do

    # PK[0] goes transit via PK[1]; PK[2]'s endpoint changes; then PK[2] leaves
    moved = desired(
        DesiredPeer(PK[0], frozenset(), EP, 25),
        DesiredPeer(PK[1], frozenset({N[0], N[1], N[2]}), EP6, 25),
        DesiredPeer(PK[2], frozenset({N[3]}), Endpoint.parse("203.0.113.9:4000"), 0),
    )
    k.owners_after_each_set.clear()
    assert await reconcile(dev, moved) is not None
    assert plan(moved, await dev.get()) is None
    assert (await dev.get()).peers[PK[2]].endpoint == Endpoint.parse("203.0.113.9:4000")
    assert all("100.64.0.1/32" in owners for owners in k.owners_after_each_set)  # never without a peer

    back = desired(
        DesiredPeer(PK[0], frozenset({N[0]}), EP, 25), DesiredPeer(PK[1], frozenset({N[1], N[2]}), EP6, 25)
    )
    k.owners_after_each_set.clear()
    await reconcile(dev, back)
    assert plan(back, await dev.get()) is None
    assert set((await dev.get()).peers) == {PK[0], PK[1]}
    assert all(owners.get("100.64.0.1/32") for owners in k.owners_after_each_set)


async def test_key_and_port_are_set_and_an_extra_peer_removed() -> None:
    k = FakeKernel()
    dev = backend(k)
    k.devices[IF].private = bytes([9]) * 32
    k.devices[IF].peers[PK[4].b64] = FakePeer(ips=["10.9.0.0/16"])
    want = desired(DesiredPeer(PK[0], frozenset({N[0]})))
    await reconcile(dev, want)
    assert k.set_log[0]["private_key"] == base64.b64encode(KEY.reveal()).decode()
    assert k.set_log[0]["listen_port"] == 51820 and k.set_log[0]["peer"] is None
    assert k.set_log[-1]["peer"] == {"public_key": PK[4].b64, "remove": True}
    assert plan(want, await dev.get()) is None


# --- info -> DeviceState ---------------------------------------------------------------------------------


def test_info_reads_into_the_same_state_as_the_uapi() -> None:
    """A device with several peers, one of them with more allowed IPs than fit one nest (continued in
    the next message, as the kernel does), dumped in four messages, reads exactly as the same device
    read through wireguard-go's UAPI."""
    dev = FakeDev(
        private=KEY.reveal(),
        port=51820,
        peers={
            PK[0].b64: FakePeer(
                EP,
                keepalive=25,
                ips=["100.64.0.1/32", "10.1.0.0/16", "fd00::/64", "10.2.0.0/24"],
                rx=1234,
                tx=5678,
                handshake=(1700000000, 500000000),
            ),
            PK[1].b64: FakePeer(EP6),
            PK[2].b64: FakePeer(
                None, 10, ["100.64.0.3/32"], rx=7, tx=8, handshake=(1700000100, 0), psk=bytes([3]) * 32
            ),
        },
    )
    messages = dump(dev, IF, peers_per_message=1, ips_per_message=3)
    assert len(messages) == 4 and messages[0].get_attr("WGDEVICE_A_PRIVATE_KEY") is not None
    second = messages[1]
    assert (
        second.get_attr("WGDEVICE_A_PRIVATE_KEY") is None
        and second.get_attr("WGDEVICE_A_LISTEN_PORT") is None
    )
    (cont,) = second.get_attr("WGDEVICE_A_PEERS")
    assert cont.get_attr("WGPEER_A_PUBLIC_KEY") == PK[0].b64.encode()  # PK[0] continued
    state = parse_info(IF, messages)
    uapi = parse_get(
        [
            f"private_key={KEY.reveal().hex()}",
            "listen_port=51820",
            f"public_key={PK[0].hex}",
            "endpoint=198.18.0.2:51820",
            "persistent_keepalive_interval=25",
            "last_handshake_time_sec=1700000000",
            "last_handshake_time_nsec=500000000",
            "rx_bytes=1234",
            "tx_bytes=5678",
            "allowed_ip=100.64.0.1/32",
            "allowed_ip=10.1.0.0/16",
            "allowed_ip=fd00::/64",
            "allowed_ip=10.2.0.0/24",
            f"public_key={PK[1].hex}",
            "endpoint=[2001:db8::2]:51821",
            "last_handshake_time_sec=0",
            "last_handshake_time_nsec=0",
            f"public_key={PK[2].hex}",
            f"preshared_key={(bytes([3]) * 32).hex()}",
            "persistent_keepalive_interval=10",
            "last_handshake_time_sec=1700000100",
            "last_handshake_time_nsec=0",
            "rx_bytes=7",
            "tx_bytes=8",
            "allowed_ip=100.64.0.3/32",
            "errno=0",
        ]
    )
    assert state == uapi
    assert state.peers[PK[1]].last_handshake is None and not state.peers[PK[0]].has_preshared_key
    assert state.peers[PK[2]].has_preshared_key


def test_a_device_without_identity_reads_as_blank() -> None:
    state = parse_info(IF, dump(FakeDev(port=0), IF, 2, 2))
    assert state == DeviceState()


def test_a_malformed_reply_is_a_protocol_error_naming_the_interface() -> None:
    class Msg:
        def get_attr(self, name: str) -> Any:
            return b"not base64!" if name == "WGDEVICE_A_PRIVATE_KEY" else None

    with pytest.raises(UapiProtocolError, match=f"WireGuard interface {IF}: unexpected netlink reply"):
        parse_info(IF, [Msg()])


# --- errors ---------------------------------------------------------------------------------------------


async def test_errors_are_uapi_errors_that_name_the_interface_and_the_step() -> None:
    k = FakeKernel()
    dev = KernelWireGuard(IF, k)  # no link
    with pytest.raises(UapiError, match=f"WireGuard interface {IF}: read failed: no such interface") as info:
        await dev.get()
    assert isinstance(info.value, WgNetlinkError) and info.value.errno == -errno.ENODEV

    dev = backend(k)
    k.fail_set = errno.EINVAL
    with pytest.raises(
        WgNetlinkError, match=rf"{IF}: add peer {PK[0].b64} failed: Invalid argument \(EINVAL\)"
    ):
        await dev.set(SetRequest(peers=(PeerUpdate(PK[0], persistent_keepalive=0),)))
    k.fail_set = errno.EPERM
    with pytest.raises(
        WgNetlinkError, match=r"set private key and listen port 51820 failed: .*CAP_NET_ADMIN"
    ) as err:
        await dev.set(SetRequest(private_key=KEY, listen_port=51820))
    assert base64.b64encode(KEY.reveal()).decode() not in str(err.value)

    gone = KernelWireGuard(IF, FakeKernel(module=False))
    with pytest.raises(
        WgNetlinkError, match=r"generic netlink family is missing \(is the wireguard kernel module"
    ):
        await gone.get()


# --- the link --------------------------------------------------------------------------------------------


async def test_create_adopts_a_wireguard_link_and_refuses_another_kind() -> None:
    k = FakeKernel()
    dev = KernelWireGuard(IF, k)
    assert await dev.create() is True and k.links[IF][1] == "wireguard"
    assert await dev.create() is False  # left by a killed agent: adopted
    k.del_link(IF)
    k.add_link(IF, "tun")
    with pytest.raises(WgNetlinkError, match=f"{IF}: create failed: an interface of kind tun has that name"):
        await dev.create()
    await KernelWireGuard("other0", k).delete()  # absent: fine
    with pytest.raises(
        WgNetlinkError, match=r"create \(ip link add type wireguard\) failed: operation not supported"
    ):
        await KernelWireGuard(IF + "x", FakeKernel(module=False)).create()


async def test_run_kernel_link_owns_the_link() -> None:
    k = FakeKernel()
    dev = KernelWireGuard(IF, k)
    async with trio.open_nursery() as nursery:
        created = await nursery.start(functools.partial(run_kernel_link, dev, poll=0.01))
        assert created is True and IF in k.links
        k.devices[IF].private = KEY.reveal()
        k.del_link(IF)  # someone deleted it: re-created, blank (the driver then configures it again)
        with trio.fail_after(5):
            while IF not in k.links:
                await trio.sleep(0.01)
        assert k.devices[IF] == FakeDev()
        nursery.cancel_scope.cancel()
    assert IF not in k.links  # deleted on exit


# --- backend selection ------------------------------------------------------------------------------------


def test_selection_without_the_module(tmp_path: Path) -> None:
    k = FakeKernel(module=False)
    assert select_backend("auto", k, NO_SUCH) == "userspace"
    assert select_backend("userspace", k, NO_SUCH) == "userspace"
    with pytest.raises(TransitError) as info:
        select_backend("kernel", k, NO_SUCH)
    assert info.value.errno == errno.ENODEV
    assert info.value.strerror == (
        'wireguard backend = "kernel" is not available on this machine (no wireguard kernel module is '
        'loaded); use backend = "userspace" (wireguard-go) or "auto"'
    )
    assert not k.links  # the probe left nothing


def test_selection_with_the_module() -> None:
    k = FakeKernel(module=True)
    assert select_backend("auto", k, NO_SUCH) == "kernel"  # found by the probe ...
    assert not k.links and k._next_index == 11  # ... which added one link and deleted it
    assert select_backend("kernel", k, Path("/")) == "kernel"  # /sys/module/wireguard: no probe
    assert k._next_index == 11
    assert select_backend("userspace", k, Path("/")) == "userspace"


def test_probe_module_is_a_plain_yes_or_no() -> None:
    assert probe_module(FakeKernel(module=False), "wmprobe1") is False
    k = FakeKernel(module=True)
    k.add_link("wmprobe1", "dummy")
    assert probe_module(k, "wmprobe1") is False  # name taken: no, and the stranger's link stays
    assert "wmprobe1" in k.links


def test_auto_picks_wireguard_go_on_this_machine() -> None:
    """The real check (``/sys/module/wireguard``, then a probe link through real pyroute2)."""
    if Path("/sys/module/wireguard").exists():
        pytest.skip("this machine has the WireGuard module")
    pyroute2: Any = pytest.importorskip("pyroute2")
    assert select_backend("auto", pyroute2) == "userspace"
    with pytest.raises(TransitError, match="not available on this machine"):
        select_backend("kernel", pyroute2)


async def test_the_driver_refuses_kernel_without_the_module_before_touching_anything(tmp_path: Path) -> None:
    cfg = TransitConfig(enabled=True, mesh_address=parse_network("100.64.0.1/32")[0], backend="kernel")
    driver = TransitDriver(object(), "a", tmp_path / "state", cfg, netlink=FakeKernel(module=False))  # type: ignore[arg-type]
    with pytest.raises(TransitError, match="no wireguard kernel module is loaded"):
        await driver.run()
    assert not (tmp_path / "state").exists()  # no key was generated, nothing was started


def encode_like_pyroute2(call: SetCall) -> Any:
    """What ``WireGuard.set`` would send for ``call``, built by pyroute2's own code (``_wg_set_peer``
    and the ``wgmsg`` encoder, no socket) and decoded back, so the keys we pass are the ones it reads."""
    wg = wgmod.AsyncWireGuard.__new__(wgmod.AsyncWireGuard)  # the helpers use no socket state
    msg = wgmod.wgmsg()
    msg["cmd"] = wgmod.WG_CMD_SET_DEVICE
    msg["version"] = wgmod.WG_GENL_VERSION
    msg["attrs"].append(["WGDEVICE_A_IFNAME", IF])
    if call.private_key is not None:
        wg._wg_test_key(call.private_key)
        msg["attrs"].append(["WGDEVICE_A_PRIVATE_KEY", call.private_key])
    if call.listen_port is not None:
        msg["attrs"].append(["WGDEVICE_A_LISTEN_PORT", call.listen_port])
    if call.peer is not None:
        wg._wg_set_peer(msg, call.peer)
    msg.encode()
    out = wgmod.wgmsg(msg.data)
    out.decode()
    return out


def test_the_calls_encode_to_the_intended_netlink_attributes() -> None:
    req = SetRequest(
        private_key=KEY,
        listen_port=51820,
        peers=(
            PeerUpdate(PK[0], remove=True),
            PeerUpdate(PK[1], update_only=True, endpoint=EP6, replace_allowed_ips=True, allowed_ips=(N[0],)),
        ),
    )
    device, give, take, remove = (encode_like_pyroute2(c) for c in set_calls(req))
    assert device.get_attr("WGDEVICE_A_PRIVATE_KEY") == base64.b64encode(KEY.reveal())
    assert device.get_attr("WGDEVICE_A_LISTEN_PORT") == 51820

    def peer(msg: Any) -> Any:
        (p,) = msg.get_attr("WGDEVICE_A_PEERS")
        assert p.get_attr("WGPEER_A_PUBLIC_KEY") in (PK[0].b64.encode(), PK[1].b64.encode())
        return p

    g = peer(give)
    assert g.get_attr("WGPEER_A_FLAGS") == wgmod.WGPEER_F_UPDATE_ONLY
    ep = g.get_attr("WGPEER_A_ENDPOINT")
    assert (ep["addr"], ep["port"], ep["family"]) == ("2001:db8::2", 51821, socket.AF_INET6)
    assert [a["addr"] for a in g.get_attr("WGPEER_A_ALLOWEDIPS")] == ["100.64.0.1/32"]
    t = peer(take)
    assert t.get_attr("WGPEER_A_FLAGS") == wgmod.WGPEER_F_UPDATE_ONLY | wgmod.WGPEER_F_REPLACE_ALLOWEDIPS
    assert [a["addr"] for a in t.get_attr("WGPEER_A_ALLOWEDIPS")] == ["100.64.0.1/32"]
    r = peer(remove)
    assert r.get_attr("WGPEER_A_FLAGS") == wgmod.WGPEER_F_REMOVE_ME
    assert r.get_attr("WGPEER_A_PUBLIC_KEY") == PK[0].b64.encode()
