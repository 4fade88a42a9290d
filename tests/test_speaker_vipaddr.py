"""VIP addresses on lo: which ones, and only ours touched (a namespace made here for the real thing)."""

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

from agent.cluster.objects import Vip
from agent.kernel.loopback import (
    LABEL,
    RTM_NEWADDR,
    AddressPlan,
    desired_addresses,
    encode_address,
    parse_address,
    plan,
)

V1, V2, V3 = (ipaddress.ip_address(a) for a in ("100.96.0.1", "100.96.0.2", "100.96.0.3"))


def test_desired_is_every_enabled_vip_assigned_here() -> None:
    vips = [
        Vip(name="a", address="100.96.0.1", machines=["m1", "m2"]),
        Vip(name="b", address="100.96.0.2", machines=["m2"]),
        Vip(name="c", address="100.96.0.3", machines=["m1"], enabled=False),
        Vip(name="d", address="fd00::4", machines=["m1"]),
    ]
    assert desired_addresses(vips, "m1") == {V1, ipaddress.ip_address("fd00::4")}


def test_plan_touches_only_ours() -> None:
    present = {V1: True, V2: False, V3: True}  # V2 was put there by someone else
    assert plan([V1, V2], present) == AddressPlan(add=(), remove=(V3,))
    assert plan([], present) == AddressPlan(add=(), remove=(V1, V3))
    assert not plan([V2], {V2: False})  # already there, not ours: neither added twice nor removed


SCRIPT = r"""
import ipaddress, json, sys
from agent.kernel.loopback import LoopbackAddresses
lo = LoopbackAddresses(200)
want = [ipaddress.ip_address(a) for a in ("100.96.0.1", "100.96.0.2", "fd00::10")]
out = {"errors": lo.reconcile(want)}
out["present"] = {str(a): ours for a, ours in lo.present().items()}
out["again"] = lo.reconcile(want[:1])
out["after"] = {str(a): ours for a, ours in lo.present().items()}
out["flush"] = lo.flush()
out["end"] = {str(a): ours for a, ours in lo.present().items()}
json.dump(out, sys.stdout)
"""


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    name = f"wmv-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        subprocess.run(
            ["ip", "-n", name, "addr", "add", "100.96.0.2/32", "dev", "lo"], check=True
        )  # not ours
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_loopback_addresses_in_a_namespace(netns: str) -> None:
    result = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["errors"] == []
    mine = {a for a, ours in out["present"].items() if ours}
    assert mine == {"100.96.0.1", "fd00::10"}
    assert out["present"]["100.96.0.2"] is False  # the operator's: left as it was, not added twice
    assert out["again"] == [] and {a for a, o in out["after"].items() if o} == {"100.96.0.1"}
    assert out["flush"] == []
    assert {a for a, o in out["end"].items() if o} == set()
    assert "100.96.0.2" in out["end"] and "127.0.0.1" in out["end"]
    labels = subprocess.run(
        ["ip", "-n", netns, "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
    )
    assert "lo:wm" not in labels.stdout  # nothing of ours left


def test_address_codec_round_trip() -> None:
    """What we send to add an address reads back as ours: index, address, IFA_PROTO and (IPv4) label."""
    for text, label in (("100.96.0.1", LABEL), ("fd00::10", None)):
        address = ipaddress.ip_address(text)
        data = encode_address(RTM_NEWADDR, address, 7, protocol=200, sequence=1, label=LABEL)
        assert parse_address(data, 0, len(data)) == (7, address, 200, label)
