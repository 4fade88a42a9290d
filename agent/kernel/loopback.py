"""VIP addresses on ``lo``: a machine assigned a VIP accepts traffic for it, whichever machine BGP
currently sends it to.

Desired state: the address of every enabled VIP that lists this machine (healthy or not: a VIP held
or withdrawn here is still this machine's to answer for, and a flapping check must not flap the
address). :func:`plan` compares it with what ``lo`` holds; :class:`LoopbackAddresses` (rtnetlink
over the standard library's socket, the codec beside :mod:`agent.kernel.fib`'s; blocking, run in a
worker thread) applies it.

Marking ("own only what you create", docs/architecture.md): every address we add carries the agent's
protocol number as its
``IFA_PROTO`` (Linux 5.18+; the same number as our routes, 200 by default), and IPv4 ones also the
label ``lo:wm`` so ``ip addr show dev lo`` shows them. Only addresses with that mark are ever removed;
an address an operator put on ``lo`` by hand is left alone and not added twice. On exit every
address with our mark goes.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from agent.cluster.objects import Vip
from agent.kernel.fib import (
    _NLMSGHDR,
    AF_INET,
    AF_INET6,
    NETLINK_ROUTE,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    _address,
    _attr,
    _attrs,
    ack_error,
    dump_replies,
    parse_messages,
)
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


# rtnetlink address messages (linux/if_addr.h); the framing and attributes are agent.kernel.fib's.
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_PROTO = 1, 2, 3, 11
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, interface index
TIMEOUT = 10.0  # seconds without an answer from the kernel before giving up


def encode_address(
    kind: int, address: IPAddress, index: int, *, protocol: int, sequence: int, label: str | None = None
) -> bytes:
    """One RTM_NEWADDR (``protocol`` as IFA_PROTO, ``label`` for IPv4) or RTM_DELADDR request for a host
    address (/32, /128) on interface ``index``, asking for an ack: what ``ip addr add|del`` sends."""
    family = AF_INET if address.version == 4 else AF_INET6
    attrs = _attr(IFA_LOCAL, address.packed) + _attr(IFA_ADDRESS, address.packed)
    flags = NLM_F_REQUEST | NLM_F_ACK
    if kind == RTM_NEWADDR:
        flags |= NLM_F_CREATE | NLM_F_EXCL
        attrs += _attr(IFA_PROTO, bytes([protocol]))
        if label is not None and family == AF_INET:
            attrs += _attr(IFA_LABEL, label.encode() + b"\0")
    body = _IFADDRMSG.pack(family, address.max_prefixlen, 0, 0, index) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, sequence, 0) + body


def encode_address_dump(sequence: int) -> bytes:
    body = _IFADDRMSG.pack(0, 0, 0, 0, 0)  # AF_UNSPEC: both families, every interface
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0)
    return header + body


def parse_address(
    data: bytes, offset: int, length: int
) -> tuple[int, IPAddress, int | None, str | None] | None:
    """(interface index, address, IFA_PROTO, label) of one RTM_NEWADDR message of a dump."""
    body = offset + _NLMSGHDR.size
    family, _plen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, body)
    if family not in (AF_INET, AF_INET6):
        return None
    address: IPAddress | None = None
    proto: int | None = None
    label: str | None = None
    for kind, start, end in _attrs(data, body + _IFADDRMSG.size, offset + length):
        if kind == IFA_ADDRESS:
            address = _address(family, data[start:end])
        elif kind == IFA_PROTO and end > start:
            proto = data[start]
        elif kind == IFA_LABEL:
            label = data[start:end].split(b"\0", 1)[0].decode(errors="replace")
    return None if address is None else (index, address, proto, label)


class LoopbackAddresses:
    """rtnetlink I/O on ``lo`` with a socket of its own per call (the standard library's netlink
    socket; no pyroute2, whose package import alone is ~6 MiB of RSS); blocking, so the speaker runs it
    in a worker thread. A netlink failure is an OSError."""

    def __init__(self, protocol: int, ifname: str = LOOPBACK) -> None:
        self.protocol = protocol
        self.ifname = ifname

    def _call(self, doing: str, fn: Callable[[socket.socket, int], T]) -> T:
        try:
            index = socket.if_nametoindex(self.ifname)
        except OSError:
            raise OSError(errno.ENODEV, f"{doing} {self.ifname}: no interface {self.ifname}") from None
        try:
            with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
                sock.settimeout(TIMEOUT)
                sock.bind((0, 0))
                return fn(sock, index)
        except OSError as exc:
            raise OSError(exc.errno, f"{doing} {self.ifname}: {exc.strerror or exc}") from None

    def present(self) -> dict[IPAddress, bool]:
        """Every address on the interface, ``True`` for ours."""
        return self._call("listing the addresses of", self._present)

    def _present(self, sock: socket.socket, index: int) -> dict[IPAddress, bool]:
        out: dict[IPAddress, bool] = {}
        for kind, data, offset, length in dump_replies(sock, encode_address_dump(1), 1, "address"):
            if kind == RTM_NEWADDR:
                found = parse_address(data, offset, length)
                if found is not None and found[0] == index:
                    _, address, proto, label = found
                    out[address] = proto == self.protocol or label == LABEL
        return out

    def apply(self, change: AddressPlan) -> list[str]:
        """Carry out ``change``; returns one line per failure."""
        return self._call("changing the addresses of", lambda sock, index: self._apply(change, sock, index))

    def _apply(self, change: AddressPlan, sock: socket.socket, index: int) -> list[str]:
        errors: list[str] = []
        steps = [(RTM_NEWADDR, a, "adding", "to", "added") for a in change.add]
        steps += [(RTM_DELADDR, a, "removing", "from", "removed") for a in change.remove]
        for sequence, (kind, address, doing, prep, done) in enumerate(steps, start=1):
            label = LABEL if kind == RTM_NEWADDR else None
            sock.send(
                encode_address(kind, address, index, protocol=self.protocol, sequence=sequence, label=label)
            )
            code = self._ack(sock, sequence)
            if code:
                errors.append(f"{doing} {address} {prep} {self.ifname}: {os.strerror(code)}")
            else:
                log.info("%s VIP address %s %s %s", done, address, prep, self.ifname)
        return errors

    @staticmethod
    def _ack(sock: socket.socket, sequence: int) -> int:
        """The errno the kernel answered request ``sequence`` with (0: done)."""
        while True:
            data = sock.recv(1 << 16)
            for kind, seq, offset, _length in parse_messages(data):
                if kind == NLMSG_ERROR and seq == sequence:
                    return -ack_error(data, offset)

    def reconcile(self, desired: Iterable[IPAddress]) -> list[str]:
        return self.apply(plan(desired, self.present()))

    def flush(self) -> list[str]:
        """Remove every address of ours (on exit)."""
        return self.reconcile(())
