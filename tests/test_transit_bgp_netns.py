"""BGP over the WireGuard mesh, end to end: real agents with wireguard-go and ExaBGP in network
namespaces (the lab of :mod:`labs.kit.meshlab`, with ``[bgp]`` on), faults made with iptables.

Four machines A, B, C, D on one bridge, each announcing a VIP of its own. Shows, in order:

1. The mesh sessions run between mesh addresses (``/v1/bgp/neighbors`` lists B at 100.64.0.2), the
   VIPs are installed via mesh addresses, and a VIP answers through the tunnel (TTL 64).
2. With the UDP between A's and B's underlay addresses dropped, A-B moves to a relay R (C or D) and
   the A-B session stays established: the same session (its ``since`` unchanged, no reset), carrying
   an update made after the switch (a new VIP on B reaches A), while B's VIP answers through R (TTL
   63). It stays up rather than coming back because the TCP connection runs between the mesh
   addresses, and moving B's address (and B's VIP) into R's AllowedIPs changes the path under it
   without touching it; the seconds of the switch are far below the hold time (30 s here).
3. R is killed: A-B moves to the other relay, the session still the same one.
4. ``/v1/machines/b/rib`` on A is B's RIB (as ``/v1/rib`` on B shows it), ``wiremesh rib --machine
   b`` prints it, a machine gossip never saw is a 404, and the killed relay is a 502 or 504 naming
   it and its API address.

One lab with four machines covers both the three-machine case (the switch to a relay) and the
fourth-machine case (the relay dies, the pair moves on), saving a lab start. Adds about 60-90 s to the
netns tests. The agents run with default transit thresholds; the one API token is shared, as the
README says operators do for ``/v1/machines/{name}/rib``.

Needs root, wireguard-go, wireguard-tools, iptables, iputils-ping; everything is cleaned up by pid and
namespace, also on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.process import signal_pid
from labs.kit.meshlab import API, Machine, MeshLab
from labs.kit.netns import in_netns
from labs.kit.proc import sh
from labs.kit.wait import eventually_blocking

pytestmark = pytest.mark.integration

TOOLS = ("wireguard-go", "wg", "ip", "iptables", "ping")
TOKEN = secrets.token_urlsafe(24)
HOLD = 30
BGP = f"""
[bgp]
enabled = true
asn = 64512
hold_time = {HOLD}
drain_time = 0.0
"""


def vip(name: str) -> str:
    return "100.96.0." + str("abcd".index(name) + 1)


class BgpMeshLab(MeshLab):
    """The transit lab with BGP on, the API on every address (so agents reach each other's) and one
    API token for all. Anything still running in a machine's namespace at cleanup (ExaBGP and its API
    process once their agent is gone) is killed by pid."""

    def _write_config(self, m: Machine) -> None:
        super()._write_config(m)
        text = m.config.read_text().replace(f'"{API.removeprefix("http://")}"', '"0.0.0.0:7947"')
        m.config.write_text(text + BGP)
        token = m.state_dir / "api-token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)

    def cleanup(self) -> None:
        pids: set[int] = set()
        for m in self.machines.values():
            pids.update(int(p) for p in sh("ip", "netns", "pids", m.netns, check=False).split())
        super().cleanup()
        for pid in pids:
            signal_pid(pid, signal.SIGKILL)

    def call(self, name: str, method: str, path: str, body: Any = None) -> httpx.Response:
        def go() -> httpx.Response:
            with httpx.Client(timeout=15.0) as client:
                return client.request(
                    method, API + path, json=body, headers={"authorization": f"Bearer {TOKEN}"}
                )

        return in_netns(self.machines[name].netns, go, timeout=30.0)

    def neighbors(self, name: str) -> dict[str, dict[str, Any]]:
        """``/v1/bgp/neighbors`` by peer name (mesh members only); empty while not answering."""
        try:
            response = self.call(name, "GET", "/v1/bgp/neighbors")
        except (OSError, httpx.HTTPError, TimeoutError):
            return {}
        if response.status_code != 200:
            return {}
        return {n["name"]: n for n in response.json() if n["name"]}

    def ping_ttls(self, src: str, address: str, count: int = 3) -> list[int]:
        out = self.ns(src, ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", address], check=False)
        return [int(w.split("=")[1]) for w in out.split() if w.startswith("ttl=")]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[BgpMeshLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, TUN devices, iptables")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make deps` (DEB_PACKAGES in the Makefile)")
    lab = BgpMeshLab(tmp_path / "lab", names=("a", "b", "c", "d"))
    with lab:
        try:
            yield lab
        except BaseException:
            for m in lab.machines.values():
                if m.log.exists():
                    print(f"--- {m.name} ---")
                    print("\n".join(m.log.read_text().splitlines()[-30:]))
            raise


def test_bgp_over_the_mesh_survives_relay_switches(lab: BgpMeshLab) -> None:
    started = time.monotonic()
    lab.start_all()
    eventually_blocking(
        lab.converged, what="the mesh converges with every path direct", timeout=90, poll=0.25
    )
    for name in lab.machines:  # one VIP per machine, no check: announced at once
        body = {"name": f"vip-{name}", "address": vip(name), "machines": [name]}
        assert lab.call("a", "POST", "/v1/vips", body).status_code == 201
    mesh = {n: m.mesh for n, m in lab.machines.items()}

    def sessions_up(name: str) -> dict[str, dict[str, Any]] | None:
        view = lab.neighbors(name)
        others = {o for o in lab.machines if o != name and lab.machines[o].running}
        up = {o: n for o, n in view.items() if n["state"] == "up"}
        return up if set(up) == others else None

    for name in lab.machines:
        up = eventually_blocking(
            partial(sessions_up, name), what=f"{name}'s mesh sessions up", timeout=60, poll=0.25
        )
        assert {o: n["address"] for o, n in up.items()} == {o: mesh[o] for o in up}  # mesh addresses

    # A session is up before the routes it carries are in the kernel: wait for them, then compare.
    def kernel_routes() -> dict[str, str | None]:
        kernel = json.loads(lab.ns("a", ["ip", "-j", "route", "show", "proto", "200"]))
        return {r["dst"]: r.get("gateway") for r in kernel}

    eventually_blocking(
        lambda: len(kernel_routes()) >= 3, what="A's kernel routes to every VIP", timeout=20, poll=0.25
    )
    assert kernel_routes() == {vip(o): mesh[o] for o in "bcd"}
    eventually_blocking(
        lambda: lab.ping_ttls("a", vip("b")) == [64] * 3,
        what="B's VIP answers through the tunnel",
        timeout=30,
        poll=0.25,
    )
    session = lab.neighbors("a")["b"]
    since = session["since"]

    # 2. A-B direct dropped: a relay carries the pair, and the session with it.
    t_drop = lab.drop_udp("a", "b")

    def relayed() -> str | None:
        ab, ba = lab.path("a", "b"), lab.path("b", "a")
        return ab.removeprefix("transit via ") if ab == ba and ab and ab.startswith("transit via ") else None

    relay = eventually_blocking(relayed, what="A and B route through one relay", timeout=30, poll=0.25)
    switched = time.time() - t_drop
    eventually_blocking(
        lambda: lab.ping_ttls("a", vip("b")) == [63] * 3,
        what=f"B's VIP answers through {relay}",
        timeout=30,
        poll=0.25,
    )
    body = {"name": "vip-b2", "address": "100.96.0.22", "machines": ["b"]}
    assert lab.call("b", "POST", "/v1/vips", body).status_code == 201

    def learned() -> bool:
        return lab.call("a", "GET", "/v1/rib?prefix=100.96.0.22/32").status_code == 200

    eventually_blocking(
        learned, what="an update after the switch reaches A over the relayed session", timeout=30, poll=0.25
    )
    assert lab.path("a", "b") == f"transit via {relay}"
    after = lab.neighbors("a")["b"]
    assert after["state"] == "up" and after["since"] == since, f"session reset: {session} -> {after}"
    print(f"A-B via {relay} {switched:.1f} s after the drop; BGP session up since {since}, unchanged")

    # 3. The relay dies: A-B moves to the other one, the session still the same.
    other = "d" if relay == "c" else "c"
    t_kill = lab.kill(relay)
    eventually_blocking(lambda: relayed() == other, what=f"A-B through {other}", timeout=60, poll=0.25)
    moved = time.time() - t_kill
    eventually_blocking(
        lambda: lab.ping_ttls("a", vip("b")) == [63] * 3,
        what=f"B's VIP answers through {other}",
        timeout=30,
        poll=0.25,
    )
    after = lab.neighbors("a")["b"]
    assert after["state"] == "up" and after["since"] == since, f"session reset: {session} -> {after}"
    print(f"{relay} killed: A-B via {other} {moved:.1f} s later; BGP session unchanged")

    # 4. Another machine's RIB through its agent.
    proxied = lab.call("a", "GET", "/v1/machines/b/rib").json()
    own = lab.call("b", "GET", "/v1/rib").json()
    assert proxied["machine"] == "b" and [r["prefix"] for r in proxied["routes"]] == [
        r["prefix"] for r in own["routes"]
    ]
    assert f"{vip('b')}/32" in {r["prefix"] for r in proxied["routes"] if r["best"]["peer"] == "local"}
    token_file = str(lab.machines["a"].state_dir / "api-token")
    cli = [sys.executable, "-m", "agent", "rib", "--machine", "b", "--api", API, "--token-file", token_file]
    table = lab.ns("a", cli)
    assert any(line.startswith(f"{vip('b')}/32") and "local" in line for line in table.splitlines())
    unknown = lab.call("a", "GET", "/v1/machines/nosuch/rib")
    assert unknown.status_code == 404 and "nosuch" in unknown.json()["error"]
    gone = lab.call("a", "GET", f"/v1/machines/{relay}/rib")
    assert gone.status_code in (502, 504) and relay in gone.json()["error"]
    assert f"{mesh[relay]}:7947" in gone.json()["error"]
    print(f"/v1/machines/{relay}/rib after the kill: {gone.status_code} {gone.json()['error']}")
    print(f"test took {time.monotonic() - started:.0f} s")
