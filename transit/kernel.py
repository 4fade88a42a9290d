"""The kernel side of the WireGuard interface: link, addresses, routes, forwarding, the FORWARD rule.

:class:`KernelNet` is rtnetlink through pyroute2 (:mod:`common.netlink`: its blocking calls run in a
worker thread, each with its own short-lived socket, so no netlink socket is shared between threads),
acting on the network namespace of the agent process. What to change comes from
:func:`transit.desired.plan_kernel`; this module only reads state and applies a plan.

**Relaying** needs forwarding between peers on the WireGuard interface: ``net.ipv4.conf.<wg>.forwarding
= 1`` is enough for traffic that enters and leaves through it (checked: ``ip_forward`` stays 0, so the
machine routes nothing else). ``send_redirects`` and ``accept_redirects`` go to 0 on the interface: a
relay forwards out of the interface a packet came in on, which is exactly when the kernel sends ICMP
redirects, and a next hop means nothing to WireGuard (its AllowedIPs pick the peer). The kernel still
sends them while ``net.ipv4.conf.all.send_redirects`` is 1; they are harmless, and that global switch is
not this agent's to change. These settings live on the interface and go with it. If the iptables
FORWARD policy drops, a rule accepting wg-to-wg traffic is inserted (marked with a comment) and deleted
on exit; a FORWARD chain that already accepts is left alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import trio

from common import netlink
from common.address import IPAddress
from transit.desired import IPInterface, KernelPlan, KernelRoute, KernelState

log = logging.getLogger("wiremesh.transit.kernel")

RT_TABLE_MAIN = 254
RT_SCOPE_LINK = 253
IFA_F_NODAD = 0x02
RULE_COMMENT = "wiremesh relay"
PROC_SYS = Path("/proc/sys/net")

T = TypeVar("T")


class KernelError(OSError):
    """A kernel operation failed; the message says which and why."""


class KernelNet(Protocol):
    """What the driver needs from the kernel for its interface."""

    @property
    def kind(self) -> str: ...

    async def link_exists(self) -> bool: ...

    async def set_up(self) -> None: ...

    async def state(self) -> KernelState: ...

    async def apply(self, plan: KernelPlan) -> None: ...

    async def local_addresses(self) -> list[IPAddress]: ...


def _kernel_error(exc: Exception) -> KernelError:
    return KernelError(f"netlink: {exc}")  # pyroute2's NetlinkError and friends are not OSErrors


def _usable_local(addr: IPAddress) -> bool:
    """An address peers might reach us at: not loopback, link-local, multicast or unspecified."""
    return not (addr.is_loopback or addr.is_link_local or addr.is_multicast or addr.is_unspecified)


# --- pyroute2 ---------------------------------------------------------------------------------------


class Pyroute2Net:
    """rtnetlink through pyroute2's blocking ``IPRoute``, one socket per call, in a worker thread."""

    kind = "pyroute2"

    def __init__(self, ifname: str, protocol: int, module: Any) -> None:
        self.ifname = ifname
        self.protocol = protocol
        self._iproute: Callable[[], Any] = module.IPRoute

    async def _run(self, fn: Callable[[Any], T]) -> T:
        return await netlink.run(self._iproute, fn, errors=_kernel_error, passthrough=(KernelError,))

    def _index(self, ipr: Any) -> int:
        found = ipr.link_lookup(ifname=self.ifname)
        if not found:
            raise KernelError(f"interface {self.ifname} does not exist")
        return int(found[0])

    async def link_exists(self) -> bool:
        return bool(await self._run(lambda ipr: ipr.link_lookup(ifname=self.ifname)))

    async def set_up(self) -> None:
        await self._run(lambda ipr: ipr.link("set", index=self._index(ipr), state="up"))

    async def state(self) -> KernelState:
        def read(ipr: Any) -> KernelState:
            index = self._index(ipr)
            addresses: set[IPInterface] = set()
            for msg in ipr.get_addr(index=index):
                addresses.add(ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
            routes: set[KernelRoute] = set()
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in ipr.get_routes(family=family, proto=self.protocol):
                    table = msg.get_attr("RTA_TABLE") or msg["table"]
                    if table != RT_TABLE_MAIN or msg.get_attr("RTA_OIF") != index:
                        continue
                    dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
                    src = msg.get_attr("RTA_PREFSRC")
                    routes.add(
                        KernelRoute(
                            ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
                            ipaddress.ip_address(src) if src else None,
                        )
                    )
            return KernelState(frozenset(addresses), frozenset(routes))

        return await self._run(read)

    async def apply(self, plan: KernelPlan) -> None:
        def write(ipr: Any) -> None:
            index = self._index(ipr)
            for route in plan.del_routes:
                with contextlib.suppress(Exception):  # gone already: what we wanted
                    ipr.route("del", **self._route_args(route, index))
            for addr in plan.del_addresses:
                with contextlib.suppress(Exception):
                    ipr.addr("del", index=index, address=str(addr.ip), prefixlen=addr.network.prefixlen)
            for addr in plan.add_addresses:
                flags = IFA_F_NODAD if addr.version == 6 else 0
                try:
                    ipr.addr(
                        "add",
                        index=index,
                        address=str(addr.ip),
                        prefixlen=addr.network.prefixlen,
                        flags=flags,
                    )
                except Exception as exc:
                    if "exists" not in str(exc).lower():
                        raise KernelError(f"cannot add {addr} to {self.ifname}: {exc}") from None
            for route in plan.set_routes:
                try:
                    # Link scope, as ip(8) gives a route without a gateway: the BGP speaker installs
                    # routes via a peer's mesh address, which the kernel accepts only through one.
                    ipr.route("replace", **self._route_args(route, index), scope=RT_SCOPE_LINK)
                except Exception as exc:
                    raise KernelError(f"cannot add route {route} dev {self.ifname}: {exc}") from None

        await self._run(write)

    def _route_args(self, route: KernelRoute, index: int) -> dict[str, Any]:
        args: dict[str, Any] = {
            "dst": str(route.dst),
            "oif": index,
            "proto": self.protocol,
            "table": RT_TABLE_MAIN,
            "family": socket.AF_INET if route.dst.version == 4 else socket.AF_INET6,
        }
        if route.src is not None:
            args["prefsrc"] = str(route.src)
        return args

    async def local_addresses(self) -> list[IPAddress]:
        def read(ipr: Any) -> list[IPAddress]:
            ours = set(ipr.link_lookup(ifname=self.ifname))
            up = {link["index"] for link in ipr.get_links() if link["flags"] & 1}  # IFF_UP
            out: list[IPAddress] = []
            for msg in ipr.get_addr():
                if msg["index"] in ours or msg["index"] not in up:
                    continue
                addr = ipaddress.ip_address(msg.get_attr("IFA_ADDRESS"))
                if _usable_local(addr):
                    out.append(addr)
            return out

        return await self._run(read)


def open_kernel(ifname: str, protocol: int) -> KernelNet:
    """The agent's kernel side of ``ifname``."""
    return Pyroute2Net(ifname, protocol, netlink.pyroute2())


# --- commands ---------------------------------------------------------------------------------------


async def run_command(argv: Sequence[str], *, timeout: float = 10.0) -> str:
    """Run a command, return its stdout; a failure is a :class:`KernelError` quoting its stderr."""
    try:
        with trio.fail_after(timeout):
            done = await trio.run_process(list(argv), capture_stdout=True, capture_stderr=True, check=False)
    except trio.TooSlowError:
        raise KernelError(f"{' '.join(argv)}: no answer after {timeout} s") from None
    except FileNotFoundError:
        raise KernelError(f"{argv[0]}: command not found") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip()
        raise KernelError(f"{' '.join(argv)}: {err or f'exit status {done.returncode}'}")
    return done.stdout.decode(errors="replace")


# --- sysctl and the FORWARD chain ------------------------------------------------------------------


def _write_sysctl(path: Path, value: str) -> None:
    try:
        if path.read_text().strip() != value:
            path.write_text(value + "\n")
    except OSError as exc:
        raise KernelError(f"cannot set {path}: {exc.strerror or exc}") from None


async def enable_relaying(ifname: str, *, forward: bool = True) -> None:
    """Forward between peers on the interface (see the module docstring; not with ``forward=False``,
    a machine that opted out of relaying), and let IPv6 run on it (the probe address needs it,
    whatever ``net.ipv6.conf.default.disable_ipv6`` says)."""
    v4 = PROC_SYS / "ipv4" / "conf" / ifname
    v6 = PROC_SYS / "ipv6" / "conf" / ifname

    def write() -> None:
        if not (PROC_SYS / "ipv6").exists():
            raise KernelError(
                "IPv6 is disabled in this kernel: the direct-path probes need it (ipv6.disable=0)"
            )
        _write_sysctl(v6 / "disable_ipv6", "0")
        if forward:
            _write_sysctl(v4 / "forwarding", "1")
        _write_sysctl(v4 / "send_redirects", "0")
        _write_sysctl(v4 / "accept_redirects", "0")

    await trio.to_thread.run_sync(write)


def _rule(ifname: str) -> list[str]:
    return ["FORWARD", "-i", ifname, "-o", ifname, "-m", "comment", "--comment", RULE_COMMENT, "-j", "ACCEPT"]


async def forward_policy(iptables: str = "iptables") -> str | None:
    """The FORWARD chain's policy (``ACCEPT``, ``DROP``), or None when iptables cannot tell us."""
    try:
        out = await run_command([iptables, "-w", "5", "-S", "FORWARD"])
    except KernelError as exc:
        log.warning("cannot read the iptables FORWARD policy (%s); assuming it accepts", exc)
        return None
    for line in out.splitlines():
        parts = line.split()
        if parts[:2] == ["-P", "FORWARD"] and len(parts) >= 3:
            return parts[2]
    return None


async def add_forward_rule(ifname: str, iptables: str = "iptables") -> bool:
    """Insert the wg-to-wg ACCEPT rule if the FORWARD policy drops; True if this call added it."""
    policy = await forward_policy(iptables)
    if policy in (None, "ACCEPT"):
        return False
    try:
        await run_command([iptables, "-w", "5", "-C", *_rule(ifname)])
        return False  # there already (added by hand, or left by a crashed run): not ours to delete
    except KernelError:
        pass
    first, *rest = _rule(ifname)
    await run_command([iptables, "-w", "5", "-I", first, "1", *rest])
    log.info(
        "FORWARD policy is %s: accepting %s-to-%s traffic so this machine can relay", policy, ifname, ifname
    )
    return True


async def delete_forward_rule(ifname: str, iptables: str = "iptables") -> None:
    await run_command([iptables, "-w", "5", "-D", *_rule(ifname)])


__all__ = [
    "KernelError",
    "KernelNet",
    "Pyroute2Net",
    "add_forward_rule",
    "delete_forward_rule",
    "enable_relaying",
    "forward_policy",
    "open_kernel",
    "run_command",
]
