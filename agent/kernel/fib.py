"""The kernel FIB: the Loc-RIB's best paths (or ECMP sets) as kernel routes under the agent's own
route protocol number and table, kept equal to the desired state by reconcile.

Three parts:

* :class:`FibState`, pure: the desired next hops per prefix (fed from :meth:`Rib.take_diff` or a full
  :meth:`Rib.selections` load), what this agent believes the kernel holds, and the operations that
  close the gap. Prefixes the owner excludes (this machine's own VIPs) are never installed. A failed
  operation is remembered with its error and tried again at the next full reconcile.
* The rtnetlink codec (:func:`encode_route`, :func:`parse_routes`): RTM_NEWROUTE / RTM_DELROUTE /
  RTM_GETROUTE messages built and parsed with :mod:`struct`.
* :class:`KernelFib`, the I/O: a NETLINK_ROUTE socket, batches of requests each acked by the kernel,
  and a dump filtered to our protocol and table. Blocking; the speaker runs it in a worker thread.

Why not pyroute2's ``IPRoute`` for the routes: measured here, one ``IPRoute.route("replace", ...)``
costs ~260 us and encoding a message with its classes ~60 us, so 100,000 prefixes took 26 s. Written
with :mod:`struct` and sent 256 to a ``send()``, the same routes take a few seconds. pyroute2 stays
for the lo addresses (:mod:`agent.kernel.loopback`), where there are a handful.

Ownership ("own only what you create", docs/architecture.md): every route carries our protocol number;
deletes name it too, and the kernel only deletes a route whose protocol matches. A prefix we do not hold
yet is added with ``NLM_F_EXCL``, never ``NLM_F_REPLACE``, so a route someone else put there (a
connected subnet, an operator's static route) is left alone and reported instead of overwritten. At
start the dump's routes with our protocol become the "installed" view, so leftovers of a previous run
that are no longer desired are deleted by the first reconcile; on exit :meth:`KernelFib.flush` removes
ours.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agent.routing import Diff, Prefix, Selection
from common.address import IPAddress

log = logging.getLogger("wiremesh.fib")

NextHops = tuple[IPAddress, ...]  # sorted: the kernel does not keep our order, so compare as sets

# rtnetlink constants (linux/netlink.h, linux/rtnetlink.h)
NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 0x100, 0x200, 0x400, 0x300
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 9, 15
RTN_UNICAST = 1
RT_SCOPE_UNIVERSE = 0
RTM_F_CLONED = 0x200
AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6

_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTATTR = struct.Struct("=HH")
_RTNEXTHOP = struct.Struct("=HBBi")  # length, flags, hops, ifindex
_U32 = struct.Struct("=I")
_ERR = struct.Struct("=i")

BATCH = 256  # requests per send(); acks for them must fit the receive buffer
RCVBUF = 4 << 20
TIMEOUT = 30.0  # seconds without an answer from the kernel before giving up on a batch


class OpKind(StrEnum):
    ADD = "add"  # a prefix we do not hold: must not exist (NLM_F_EXCL)
    REPLACE = "replace"  # ours already: new next hops
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class FibOp:
    kind: OpKind
    prefix: Prefix
    next_hops: NextHops = ()


def normalize(next_hops: Iterable[IPAddress]) -> NextHops:
    return tuple(sorted(set(next_hops), key=lambda a: (a.version, int(a))))


class FibState:
    """Desired versus installed, and the operations between them; see the module docstring."""

    def __init__(self) -> None:
        self.desired: dict[Prefix, NextHops] = {}
        self.installed: dict[Prefix, NextHops] = {}
        self.failed: dict[Prefix, str] = {}
        self._excluded: frozenset[Prefix] = frozenset()
        self._dirty: set[Prefix] = set()

    # -- inputs ----------------------------------------------------------------------------------

    def set_desired(self, prefix: Prefix, selection: Selection | None) -> None:
        hops = normalize(selection.next_hops) if selection is not None else ()
        if hops:
            if self.desired.get(prefix) != hops:
                self.desired[prefix] = hops
                self._dirty.add(prefix)
        elif self.desired.pop(prefix, None) is not None:
            self._dirty.add(prefix)

    def apply_diff(self, diff: Diff) -> None:
        """A :meth:`Rib.take_diff`: only the destinations whose next hops changed."""
        for change in diff:
            if change.next_hops_changed:
                self.set_desired(change.prefix, change.after)

    def load(self, selections: Iterable[tuple[Prefix, Selection]]) -> None:
        """The whole Loc-RIB (at start, or to rebuild after doubt)."""
        new = {p: normalize(s.next_hops) for p, s in selections}
        new = {p: h for p, h in new.items() if h}
        self._dirty.update(p for p in self.desired.keys() | new.keys() if self.desired.get(p) != new.get(p))
        self.desired = new

    def exclude(self, prefixes: Iterable[Prefix]) -> None:
        """Prefixes never to install (this machine's own VIPs); a change re-examines the difference."""
        new = frozenset(prefixes)
        self._dirty.update(new ^ self._excluded)
        self._excluded = new

    def kernel(self, routes: Mapping[Prefix, NextHops]) -> None:
        """What a dump found under our protocol and table: the truth, whatever we believed."""
        self._dirty.update(
            p for p in self.installed.keys() | routes.keys() if self.installed.get(p) != routes.get(p)
        )
        self._dirty.update(self.failed)
        self.installed = {p: normalize(h) for p, h in routes.items()}
        self._dirty.update(p for p in self.desired if self.installed.get(p) != self.desired[p])

    # -- outputs ---------------------------------------------------------------------------------

    def wanted(self, prefix: Prefix) -> NextHops:
        return () if prefix in self._excluded else self.desired.get(prefix, ())

    @property
    def pending(self) -> int:
        return len(self._dirty)

    def take(self, limit: int | None = None) -> list[FibOp]:
        """Up to ``limit`` operations to carry out; report each with :meth:`done`."""
        ops: list[FibOp] = []
        while self._dirty and (limit is None or len(ops) < limit):
            prefix = self._dirty.pop()
            want, have = self.wanted(prefix), self.installed.get(prefix, ())
            if want == have:
                self.failed.pop(prefix, None)
                continue
            if not want:
                ops.append(FibOp(OpKind.DELETE, prefix))
            else:
                ops.append(FibOp(OpKind.REPLACE if have else OpKind.ADD, prefix, want))
        return ops

    def done(self, op: FibOp, error: str | None) -> None:
        if error is None:
            self.failed.pop(op.prefix, None)
            if op.kind is OpKind.DELETE:
                self.installed.pop(op.prefix, None)
            else:
                self.installed[op.prefix] = op.next_hops
        else:
            self.failed[op.prefix] = error

    def retry_failed(self) -> None:
        self._dirty.update(self.failed)


# -- rtnetlink codec ------------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    length = _RTATTR.size + len(payload)
    return _RTATTR.pack(length, kind) + payload + b"\0" * (-length % 4)


def encode_route(op: FibOp, *, protocol: int, table: int, sequence: int) -> bytes:
    """One RTM_NEWROUTE (add or replace) or RTM_DELROUTE request, asking for an ack."""
    prefix = op.prefix
    family = AF_INET if prefix.version == 4 else AF_INET6
    dst = prefix.network.to_bytes(4 if prefix.version == 4 else 16, "big")
    attrs = _attr(RTA_TABLE, _U32.pack(table))
    if prefix.length:
        attrs += _attr(RTA_DST, dst)
    flags = NLM_F_REQUEST | NLM_F_ACK
    if op.kind is OpKind.DELETE:
        kind = RTM_DELROUTE
    else:
        kind = RTM_NEWROUTE
        flags |= NLM_F_CREATE | (NLM_F_REPLACE if op.kind is OpKind.REPLACE else NLM_F_EXCL)
        if len(op.next_hops) == 1:
            attrs += _attr(RTA_GATEWAY, op.next_hops[0].packed)
        else:
            hops = b""
            for hop in op.next_hops:
                gateway = _attr(RTA_GATEWAY, hop.packed)
                hops += _RTNEXTHOP.pack(_RTNEXTHOP.size + len(gateway), 0, 0, 0) + gateway
            attrs += _attr(RTA_MULTIPATH, hops)
    header = _RTMSG.pack(
        family,
        prefix.length,
        0,
        0,
        table if table < 256 else 0,
        protocol,
        RT_SCOPE_UNIVERSE,
        RTN_UNICAST if op.kind is not OpKind.DELETE else 0,
        0,
    )
    body = header + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, sequence, 0) + body


def encode_dump(sequence: int) -> bytes:
    body = _RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0)  # AF_UNSPEC: both families
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0)
        + body
    )


def _attrs(data: bytes | memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(type, payload start, payload end) of each attribute in ``data[start:end]``."""
    offset = start
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind & 0x3FFF, offset + _RTATTR.size, offset + length
        offset += (length + 3) & ~3


def _address(family: int, raw: bytes) -> IPAddress:
    return ipaddress.IPv4Address(raw) if family == AF_INET else ipaddress.IPv6Address(raw)


def parse_route(
    data: bytes, offset: int, length: int, *, protocol: int, table: int
) -> tuple[Prefix, NextHops] | None:
    """One RTM_NEWROUTE message of a dump (at ``offset``, ``length`` bytes with its header), if it is
    one of ours: our protocol, our table, a unicast route."""
    body = offset + _NLMSGHDR.size
    family, dst_len, _src, _tos, rtm_table, proto, _scope, rtype, rflags = _RTMSG.unpack_from(data, body)
    if (
        proto != protocol
        or rtype != RTN_UNICAST
        or rflags & RTM_F_CLONED
        or family not in (AF_INET, AF_INET6)
    ):
        return None
    size = 4 if family == AF_INET else 16
    route_table = rtm_table
    dst = b"\0" * size
    hops: list[IPAddress] = []
    for kind, start, end in _attrs(data, body + _RTMSG.size, offset + length):
        if kind == RTA_TABLE:
            route_table = _U32.unpack_from(data, start)[0]
        elif kind == RTA_DST:
            dst = data[start:end]
        elif kind == RTA_GATEWAY:
            hops.append(_address(family, data[start:end]))
        elif kind == RTA_MULTIPATH:
            position = start
            while position + _RTNEXTHOP.size <= end:
                hop_length = _RTNEXTHOP.unpack_from(data, position)[0]
                if hop_length < _RTNEXTHOP.size:
                    break
                for sub, s_start, s_end in _attrs(data, position + _RTNEXTHOP.size, position + hop_length):
                    if sub == RTA_GATEWAY:
                        hops.append(_address(family, data[s_start:s_end]))
                position += (hop_length + 3) & ~3
    if route_table != table:
        return None
    prefix = Prefix(4 if family == AF_INET else 6, int.from_bytes(dst, "big"), dst_len)
    return prefix, normalize(hops)


def parse_messages(data: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(type, sequence, offset, length) of each netlink message in a datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, sequence, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, sequence, offset, length
        offset += (length + 3) & ~3


def dump_replies(
    sock: socket.socket, request: bytes, sequence: int, what: str
) -> Iterator[tuple[int, bytes, int, int]]:
    """Send the dump ``request`` (numbered ``sequence``) and yield (type, datagram, offset, length) of
    each message of its answer, up to the kernel's NLMSG_DONE; an error answer raises OSError naming
    ``what`` was dumped. One reader for the route and the address dumps."""
    sock.send(request)
    while True:
        data = sock.recv(1 << 20)
        for kind, seq, offset, length in parse_messages(data):
            if seq != sequence:
                continue
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                code = -ack_error(data, offset)
                if code:
                    raise OSError(code, f"{what} dump failed: {os.strerror(code)}")
                return
            yield kind, data, offset, length


def ack_error(data: bytes, offset: int) -> int:
    """The (negative) errno of an NLMSG_ERROR message; 0 is an ack."""
    return int(_ERR.unpack_from(data, offset + _NLMSGHDR.size)[0])


def describe_error(op: FibOp, code: int, table: int) -> str:
    if code == errno.EEXIST and op.kind is OpKind.ADD:
        return f"a route for {op.prefix} that is not ours is in table {table}: left alone"
    if code == errno.ENETUNREACH:
        return f"next hop {', '.join(map(str, op.next_hops))} is not directly reachable"
    if code == errno.ESRCH and op.kind is OpKind.DELETE:
        return "already gone"
    return f"{op.kind} {op.prefix}: {os.strerror(code)}"


class KernelFib:
    """Blocking rtnetlink I/O for one protocol number and table; one instance per thread at a time."""

    def __init__(self, *, protocol: int, table: int) -> None:
        self.protocol = protocol
        self.table = table
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self._sock.settimeout(TIMEOUT)  # a lost ack must not hang the thread (and shutdown) forever
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._sequence = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> KernelFib:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next(self) -> int:
        self._sequence = (self._sequence + 1) & 0xFFFFFFFF or 1
        return self._sequence

    def apply(self, ops: Sequence[FibOp]) -> list[str | None]:
        """Carry out ``ops``; per op ``None`` (done) or why not. A delete of a route already gone and
        an add of the exact route already there count as done."""
        results: list[str | None] = [None] * len(ops)
        for start in range(0, len(ops), BATCH):
            chunk = ops[start : start + BATCH]
            by_sequence: dict[int, int] = {}
            messages = []
            for i, op in enumerate(chunk):
                sequence = self._next()
                by_sequence[sequence] = start + i
                messages.append(encode_route(op, protocol=self.protocol, table=self.table, sequence=sequence))
            self._sock.send(b"".join(messages))
            waiting = len(chunk)
            while waiting:
                data = self._sock.recv(1 << 20)
                for kind, sequence, offset, _length in parse_messages(data):
                    if kind != NLMSG_ERROR or sequence not in by_sequence:
                        continue
                    index = by_sequence.pop(sequence)
                    waiting -= 1
                    code = -ack_error(data, offset)
                    if code and not (code == errno.ESRCH and ops[index].kind is OpKind.DELETE):
                        results[index] = describe_error(ops[index], code, self.table)
        return results

    def dump(self) -> dict[Prefix, NextHops]:
        """Our routes as the kernel holds them (both families)."""
        sequence = self._next()
        out: dict[Prefix, NextHops] = {}
        for kind, data, offset, length in dump_replies(self._sock, encode_dump(sequence), sequence, "route"):
            if kind == RTM_NEWROUTE:
                found = parse_route(data, offset, length, protocol=self.protocol, table=self.table)
                if found is not None:
                    out[found[0]] = found[1]
        return out

    def flush(self) -> int:
        """Delete every route of ours; returns how many were deleted."""
        ours = self.dump()
        ops = [FibOp(OpKind.DELETE, p) for p in ours]
        errors = [e for e in self.apply(ops) if e is not None]
        for error in errors[:5]:
            log.warning("removing our routes: %s", error)
        return len(ops) - len(errors)
