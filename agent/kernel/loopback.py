"""VIP addresses on ``lo``: a machine assigned a VIP accepts traffic for it, whichever machine BGP
currently sends it to.

Desired state: the address of every enabled VIP that lists this machine (healthy or not: a VIP held
or withdrawn here is still this machine's to answer for, and a flapping check must not flap the
address). :func:`plan` compares it with what ``lo`` holds; :class:`LoopbackAddresses` (pyroute2,
blocking, run in a worker thread) applies it. pyroute2 is imported on first use: an agent without BGP
never loads it.

Marking ("own only what you create", docs/architecture.md): every address we add carries the agent's
protocol number as its
``IFA_PROTO`` (Linux 5.18+; the same number as our routes, 200 by default), and IPv4 ones also the
label ``lo:wm`` so ``ip addr show dev lo`` shows them. Only addresses with that mark are ever removed;
an address an operator put on ``lo`` by hand is left alone and not added twice. On exit every
address with our mark goes.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from agent.cluster.objects import Vip
from common import netlink
from common.address import IPAddress

log = logging.getLogger("wiremesh.vipaddr")

LOOPBACK = "lo"
LABEL = "lo:wm"

T = TypeVar("T")


def desired_addresses(vips: Iterable[Vip], machine: str) -> frozenset[IPAddress]:
    return frozenset(ipaddress.ip_address(v.address) for v in vips if v.enabled and machine in v.machines)


@dataclass(frozen=True, slots=True)
class AddressPlan:
    add: tuple[IPAddress, ...]
    remove: tuple[IPAddress, ...]

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def plan(desired: Iterable[IPAddress], present: Mapping[IPAddress, bool]) -> AddressPlan:
    """``present``: every address on ``lo``, ``True`` for ours. Add what is wanted and absent; remove
    what is ours and unwanted; never touch the others."""
    wanted = set(desired)
    add = sorted((a for a in wanted if a not in present), key=_key)
    remove = sorted((a for a, ours in present.items() if ours and a not in wanted), key=_key)
    return AddressPlan(tuple(add), tuple(remove))


def _key(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


class LoopbackAddresses:
    """pyroute2 I/O on ``lo`` (a fresh socket per call, :func:`common.netlink.call`); blocking, so the
    speaker runs it in a worker thread. A netlink failure is an OSError."""

    def __init__(self, protocol: int, ifname: str = LOOPBACK) -> None:
        self.protocol = protocol
        self.ifname = ifname

    def _call(self, doing: str, fn: Callable[[Any], T]) -> T:
        def error(exc: Exception) -> OSError:
            return OSError(netlink.error_code(exc), f"{doing} {self.ifname}: {exc}")

        return netlink.call(
            netlink.pyroute2().IPRoute, fn, errors=error, translate=(netlink.netlink_error(),)
        )

    def present(self) -> dict[IPAddress, bool]:
        """Every address on the interface, ``True`` for ours."""
        return self._call("listing the addresses of", self._present)

    def _present(self, ipr: Any) -> dict[IPAddress, bool]:
        index = self._index(ipr)
        out: dict[IPAddress, bool] = {}
        for msg in ipr.get_addr(index=index):
            raw = msg.get("IFA_ADDRESS")
            if raw is None:
                continue
            ours = msg.get("IFA_PROTO") == self.protocol or msg.get("IFA_LABEL") == LABEL
            out[ipaddress.ip_address(raw)] = ours
        return out

    def _index(self, ipr: Any) -> int:
        found = ipr.link_lookup(ifname=self.ifname)
        if not found:
            raise OSError(f"no interface {self.ifname}")
        return int(found[0])

    def apply(self, change: AddressPlan) -> list[str]:
        """Carry out ``change``; returns one line per failure."""
        return self._call("changing the addresses of", lambda ipr: self._apply(change, ipr))

    def _apply(self, change: AddressPlan, ipr: Any) -> list[str]:
        netlink_error = netlink.netlink_error()
        errors: list[str] = []
        index = self._index(ipr)
        for address in change.add:
            extra = {"label": LABEL} if address.version == 4 else {}
            try:
                ipr.addr(
                    "add",
                    index=index,
                    address=str(address),
                    prefixlen=address.max_prefixlen,
                    proto=self.protocol,
                    **extra,
                )
                log.info("added VIP address %s to %s", address, self.ifname)
            except netlink_error as exc:
                errors.append(f"adding {address} to {self.ifname}: {exc}")
        for address in change.remove:
            try:
                ipr.addr("del", index=index, address=str(address), prefixlen=address.max_prefixlen)
                log.info("removed VIP address %s from %s", address, self.ifname)
            except netlink_error as exc:
                errors.append(f"removing {address} from {self.ifname}: {exc}")
        return errors

    def reconcile(self, desired: Iterable[IPAddress]) -> list[str]:
        return self.apply(plan(desired, self.present()))

    def flush(self) -> list[str]:
        """Remove every address of ours (on exit)."""
        return self.reconcile(())
