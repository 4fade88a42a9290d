"""The FIB: desired versus installed without I/O, the rtnetlink codec, and the real kernel in a
network namespace made here (root only; the namespace and its processes are removed also on failure).
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.kernel.fib import (
    NLM_F_EXCL,
    NLM_F_REPLACE,
    FibOp,
    FibState,
    OpKind,
    encode_route,
    normalize,
    parse_messages,
    parse_route,
)
from agent.routing import Attributes, Peer, PeerKind, Prefix, Selection
from agent.routing import Path as RoutePath
from common.address import IPAddress

PROTO, TABLE = 200, 254
A, B = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.3")


def p(text: str) -> Prefix:
    return Prefix.parse(text)


def selection(prefix: str, *hops: IPAddress) -> Selection:
    paths = tuple(
        RoutePath(
            p(prefix),
            Attributes(next_hop=hop),
            Peer(hop, 65000, ipaddress.IPv4Address(int(hop) if hop.version == 4 else 1), PeerKind.EXTERNAL),
            0.0,
        )
        for hop in hops
    )
    return Selection(paths[0], paths)


def test_ops_close_the_gap_and_results_update_the_view() -> None:
    fib = FibState()
    fib.set_desired(p("203.0.113.0/24"), selection("203.0.113.0/24", A))
    fib.set_desired(p("198.51.100.0/24"), selection("198.51.100.0/24", B, A))
    ops = sorted(fib.take(), key=lambda op: op.prefix)
    assert ops == [
        FibOp(OpKind.ADD, p("198.51.100.0/24"), (A, B)),  # sorted: the kernel keeps no order
        FibOp(OpKind.ADD, p("203.0.113.0/24"), (A,)),
    ]
    for op in ops:
        fib.done(op, None)
    assert fib.take() == []
    fib.set_desired(p("203.0.113.0/24"), selection("203.0.113.0/24", B))
    fib.set_desired(p("198.51.100.0/24"), None)
    ops = sorted(fib.take(), key=lambda op: op.prefix)
    assert ops == [
        FibOp(OpKind.DELETE, p("198.51.100.0/24")),
        FibOp(OpKind.REPLACE, p("203.0.113.0/24"), (B,)),
    ]
    fib.done(ops[0], None)
    fib.done(ops[1], "next hop 198.18.0.3 is not directly reachable")
    assert fib.failed == {p("203.0.113.0/24"): "next hop 198.18.0.3 is not directly reachable"}
    fib.retry_failed()
    assert fib.take() == [FibOp(OpKind.REPLACE, p("203.0.113.0/24"), (B,))]


def test_a_flap_within_one_batch_does_nothing() -> None:
    fib = FibState()
    fib.set_desired(p("203.0.113.0/24"), selection("203.0.113.0/24", A))
    fib.set_desired(p("203.0.113.0/24"), None)
    assert fib.take() == []


def test_excluded_prefixes_are_never_installed() -> None:
    fib = FibState()
    fib.kernel({p("100.96.0.10/32"): (A,)})  # e.g. left by a run before the VIP was assigned here
    fib.set_desired(p("100.96.0.10/32"), selection("100.96.0.10/32", A))
    fib.exclude([p("100.96.0.10/32")])
    [delete] = fib.take()
    assert delete == FibOp(OpKind.DELETE, p("100.96.0.10/32"))
    fib.done(delete, None)
    fib.exclude([])
    assert fib.take() == [FibOp(OpKind.ADD, p("100.96.0.10/32"), (A,))]


def test_a_dump_is_the_truth_leftovers_go_and_drift_is_repaired() -> None:
    fib = FibState()
    fib.load([(p("203.0.113.0/24"), selection("203.0.113.0/24", A))])
    fib.kernel({p("203.0.113.0/24"): (B,), p("192.0.2.0/24"): (A,)})  # a previous run's, and drift
    assert sorted(fib.take(), key=lambda op: op.prefix) == [
        FibOp(OpKind.DELETE, p("192.0.2.0/24")),
        FibOp(OpKind.REPLACE, p("203.0.113.0/24"), (A,)),
    ]


def test_codec_round_trip() -> None:
    v6a, v6b = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::3")
    for op in (
        FibOp(OpKind.ADD, p("203.0.113.0/24"), (A,)),
        FibOp(OpKind.REPLACE, p("198.51.100.0/24"), (A, B)),
        FibOp(OpKind.ADD, p("2001:db8:100::/48"), normalize([v6b, v6a])),
        FibOp(OpKind.ADD, p("0.0.0.0/0"), (A,)),
        FibOp(OpKind.ADD, p("100.64.0.0/10"), (A,)),
    ):
        data = encode_route(op, protocol=PROTO, table=TABLE, sequence=7)
        [(kind, sequence, offset, length)] = list(parse_messages(data))
        assert (kind, sequence, length) == (24, 7, len(data))
        assert parse_route(data, offset, length, protocol=PROTO, table=TABLE) == (op.prefix, op.next_hops)
        assert parse_route(data, offset, length, protocol=PROTO + 1, table=TABLE) is None  # not ours
        assert parse_route(data, offset, length, protocol=PROTO, table=100) is None
        flags = int.from_bytes(data[6:8], "little")
        assert bool(flags & NLM_F_EXCL) == (op.kind is OpKind.ADD)
        assert bool(flags & NLM_F_REPLACE) == (op.kind is OpKind.REPLACE)
    big = encode_route(FibOp(OpKind.ADD, p("203.0.113.0/24"), (A,)), protocol=PROTO, table=1000, sequence=1)
    [(_, _, offset, length)] = list(parse_messages(big))
    assert parse_route(big, offset, length, protocol=PROTO, table=1000) is not None  # RTA_TABLE for > 255


# --- the real kernel ---------------------------------------------------------------------------------

KERNEL_SCRIPT = r"""
import ipaddress, json, sys
from agent.kernel.fib import FibOp, KernelFib, OpKind
from agent.routing import Prefix
A, B = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.3")
C, D = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::3")
P = Prefix.parse
out = {}
with KernelFib(protocol=200, table=254) as fib:
    out["add"] = fib.apply([
        FibOp(OpKind.ADD, P("203.0.113.0/24"), (A,)),
        FibOp(OpKind.ADD, P("198.51.100.0/24"), (A, B)),
        FibOp(OpKind.ADD, P("2001:db8:100::/48"), (C, D)),
        FibOp(OpKind.ADD, P("192.0.2.0/24"), (A,)),        # an operator's static route is there
        FibOp(OpKind.ADD, P("198.18.0.0/24"), (A,)),       # the connected subnet
        FibOp(OpKind.ADD, P("100.64.0.0/24"), (ipaddress.ip_address("10.9.9.9"),)),  # unreachable
    ])
    out["replace"] = fib.apply([
        FibOp(OpKind.REPLACE, P("203.0.113.0/24"), (A, B)),
        FibOp(OpKind.REPLACE, P("2001:db8:100::/48"), (D,)),
    ])
    out["dump"] = {str(k): [str(h) for h in v] for k, v in fib.dump().items()}
    out["delete_gone"] = fib.apply([FibOp(OpKind.DELETE, P("100.100.0.0/24"))])
    out["flushed"] = fib.flush()
    out["after"] = {str(k): [str(h) for h in v] for k, v in fib.dump().items()}
json.dump(out, sys.stdout)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    name = f"wmf-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            "link set lo up",
            "link add eth0 type veth peer name eth1",
            "addr add 198.18.0.2/24 dev eth0",
            "addr add 2001:db8::2/64 dev eth0 nodad",
            "link set eth0 up",
            "link set eth1 up",
            "route add 192.0.2.0/24 via 198.18.0.1 proto static",
        ):
            subprocess.run(["ip", "-n", name, *cmd.split()], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_kernel_fib_in_a_namespace(netns: str) -> None:
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", KERNEL_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    added = out["add"]
    assert added[:3] == [None, None, None]
    assert "not ours" in added[3] and "not ours" in added[4]  # NLM_F_EXCL: nothing of others replaced
    assert "not directly reachable" in added[5] or "unreachable" in added[5].lower()
    assert out["replace"] == [None, None]
    assert out["dump"] == {
        "203.0.113.0/24": ["198.18.0.1", "198.18.0.3"],
        "198.51.100.0/24": ["198.18.0.1", "198.18.0.3"],
        "2001:db8:100::/48": ["2001:db8::3"],
    }
    assert out["delete_gone"] == [None]
    assert out["flushed"] == 3 and out["after"] == {}
    static = subprocess.run(
        ["ip", "-n", netns, "route", "show", "192.0.2.0/24"], capture_output=True, text=True
    )
    assert "proto static" in static.stdout  # the operator's route survived the flush
    connected = subprocess.run(
        ["ip", "-n", netns, "route", "show", "198.18.0.0/24"], capture_output=True, text=True
    )
    assert "proto kernel" in connected.stdout
