"""The kernel side (pyroute2) against a real interface in a namespace of the test's own: a plan applied
reads back as planned, and only the agent's routes and addresses are removed. It runs in a child
process inside the namespace (``ip netns exec``), since it acts on the namespace of the process it
runs in.

Needs root.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

SCRIPT = r"""
import ipaddress, json, sys
import trio
from transit.desired import KernelRoute, KernelState, plan_kernel
from transit.endpoint import parse_network
from transit.kernel import open_kernel

kind, ifname = sys.argv[1], sys.argv[2]

async def main():
    net = open_kernel(ifname, 87)
    assert net.kind == kind, net.kind
    await net.set_up()
    mesh = ipaddress.ip_interface("100.64.0.1/32")
    probe = ipaddress.ip_interface("fd77:6d65:7368::1/128")
    want = KernelState(
        frozenset({mesh, probe}),
        frozenset({
            KernelRoute(parse_network("100.64.0.2/32"), mesh.ip),
            KernelRoute(parse_network("fd77:6d65:7368::/48"), probe.ip),
        }),
    )
    first = plan_kernel(want, await net.state(), set())
    await net.apply(first)
    got = await net.state()
    again = plan_kernel(want, got, set(first.add_addresses))
    # move a route and drop it all again; the stranger's address stays
    await net.apply(plan_kernel(KernelState(), got, set(first.add_addresses)))
    empty = await net.state()
    print(json.dumps({
        "routes": sorted(map(str, got.routes)),
        "ours": sorted(str(a) for a in got.addresses if a in want.addresses),
        "again_empty": again.empty,
        "after": sorted(map(str, empty.addresses)),
        "after_routes": sorted(map(str, empty.routes)),
        "local": sorted(map(str, await net.local_addresses())),
    }))

trio.run(main)
"""


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates a network namespace")
    if shutil.which("ip") is None:
        pytest.fail("ip is not installed: run `make deps`")
    tag = f"{os.getpid() % 100000:05d}{secrets.token_hex(2)}"
    name, ifname = f"wmk{tag}", f"wmk{tag}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ns = ["ip", "-n", name]
        subprocess.run([*ns, "link", "add", ifname, "type", "veth", "peer", "name", "peer0"], check=True)
        subprocess.run([*ns, "link", "set", "peer0", "up"], check=True)
        subprocess.run([*ns, "addr", "add", "198.18.5.1/24", "dev", "peer0"], check=True)
        subprocess.run([*ns, "addr", "add", "10.9.9.9/32", "dev", ifname], check=True)  # not ours
        yield name, ifname
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_kernel_plan_applied_and_read_back(netns: tuple[str, str]) -> None:
    name, ifname = netns
    done = subprocess.run(
        ["ip", "netns", "exec", name, sys.executable, "-c", SCRIPT, "pyroute2", ifname],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["routes"] == ["100.64.0.2/32 src 100.64.0.1", "fd77:6d65:7368::/48 src fd77:6d65:7368::1"]
    assert out["ours"] == ["100.64.0.1/32", "fd77:6d65:7368::1/128"]
    assert out["again_empty"], "a second plan over what was applied changes nothing"
    assert "10.9.9.9/32" in out["after"] and "100.64.0.1/32" not in out["after"]
    assert not any(a.startswith("fd77:") for a in out["after"]) and out["after_routes"] == []
    assert out["local"] == ["198.18.5.1"]  # the other interface's address, not ours
