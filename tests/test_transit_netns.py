"""Transit end to end: real agents with wireguard-go in network namespaces (the lab in
:mod:`labs.kit.meshlab`), faults made with iptables.

Three machines A, B, C on one bridge: the mesh comes up direct; with the UDP between A's and B's
underlay addresses dropped, A and B reach each other through C (ping and a TCP stream that outlives the
switch) and both say ``transit via c``; without the drop they fail back to direct; with the drop again
and C killed, A-B is reported unreachable. A second lab has a machine claim a mesh address another one
holds, restarts an agent killed with SIGKILL (its wireguard-go left behind), and has a machine take an
interface name another agent uses. The agents run with the cores' default thresholds (nothing is tuned
for the test).

Needs root and wireguard-go, wireguard-tools, iptables, iputils-ping (``make deps``): skipped without
root, failed when a tool is missing, so CI (root, ``make deps``) always runs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs.kit.meshlab import API, TCP_ECHO, TCP_STREAM, MeshLab, read_lines
from labs.kit.proc import children
from labs.kit.wait import eventually_blocking

pytestmark = pytest.mark.integration

TOOLS = ("wireguard-go", "wg", "ip", "iptables", "ping")
VIA_C = "transit via c"


def _require_root_and_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, TUN devices, iptables")
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run `make deps` (DEB_PACKAGES in the Makefile)")


def _dump_logs(lab: MeshLab) -> None:
    """On failure, the agents' last words (pytest shows captured stdout of failed tests)."""
    for m in lab.machines.values():
        if m.log.exists():
            print(f"--- {m.name} ({m.log}) ---")
            print("\n".join(m.log.read_text().splitlines()[-40:]))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[MeshLab]:
    _require_root_and_tools()
    with MeshLab(tmp_path / "lab") as lab:
        try:
            yield lab
        except BaseException:
            _dump_logs(lab)
            raise


def both(lab: MeshLab, path_ab: str, path_ba: str) -> bool:
    return lab.path("a", "b") == path_ab and lab.path("b", "a") == path_ba


def test_relay_through_c_fail_back_and_unreachable(lab: MeshLab, tmp_path: Path) -> None:
    for name in lab.machines:  # a locked-down FORWARD chain: the relay must open it for wg-to-wg traffic
        lab.ns(name, ["iptables", "-w", "5", "-P", "FORWARD", "DROP"])
    lab.start_all()
    eventually_blocking(
        lab.converged, what="the mesh converges with every path direct", timeout=60, poll=0.25
    )
    for src, dst in (("a", "b"), ("a", "c"), ("b", "c")):
        assert lab.ping(src, dst) == [64, 64, 64], f"{src} -> {dst} direct"

    # A TCP stream from A to B, opened while the path is direct.
    b_mesh = lab.machines["b"].mesh
    echo_out, stream_out = tmp_path / "tcp-echo.out", tmp_path / "tcp-stream.out"
    lab.spawn("b", TCP_ECHO, b_mesh, "9100", out=echo_out)
    eventually_blocking(
        lambda: "ready" in echo_out.read_text(), what="the TCP echo server listens", timeout=20, poll=0.25
    )
    stream = lab.spawn("a", TCP_STREAM, b_mesh, "9100", "0.1", out=stream_out)
    eventually_blocking(
        lambda: any("seq" in e for e in read_lines(stream_out)),
        what="the TCP stream flows",
        timeout=20,
        poll=0.25,
    )

    # Drop A-B: both ends move to C, and traffic goes through it (TTL one lower).
    lab.drop_udp("a", "b")
    eventually_blocking(
        lambda: both(lab, VIA_C, VIA_C), what="A and B route to each other through C", timeout=30, poll=0.25
    )
    eventually_blocking(
        lambda: lab.ping("a", "b") == [63, 63, 63] or None, what="relayed pings", timeout=15, poll=0.25
    )
    assert lab.ping("b", "a") == [63, 63, 63]
    assert lab.ping("a", "c") == [64, 64, 64]  # A-C is untouched
    after = time.time()
    eventually_blocking(
        lambda: any(e.get("t", 0) > after for e in read_lines(stream_out)),
        what="the TCP stream opened before the switch flows through C",
        timeout=30,
        poll=0.25,
    )
    assert stream.poll() is None, "the TCP connection survived the switch"

    a_view = lab.peers("a")
    assert a_view["b"]["direct"] == "down" and a_view["b"]["relay"] == "c"
    assert a_view["b"]["mesh_address"] == b_mesh and a_view["c"]["path"] == "direct"
    assert a_view["c"]["rx_bytes"] > 0 and a_view["c"]["last_handshake"] is not None

    # The CLI, run inside A, says the same.
    a = lab.machines["a"]
    token = str(a.state_dir / "api-token")
    cli = [sys.executable, "-m", "agent", "peers", "--api", API, "--token-file", token]
    table = lab.ns("a", cli)
    row_b = next(line for line in table.splitlines() if line.startswith("b "))
    assert "transit via c" in row_b and b_mesh in row_b
    assert json.loads(lab.ns("a", [*cli, "--json"]))["peers"][0]["path"] == "transit via c"

    # The gossip debug endpoint shows every member's reachability vector (B's reaches A by gossip, so
    # A may show it a moment after A itself switched).
    def vectors() -> dict[str, Any] | None:
        debug = {m["name"]: m for m in lab.api("a", "/debug/gossip")["members"]}
        return debug if debug["b"]["reachability"]["a"]["direct"] == "down" else None

    debug = eventually_blocking(
        vectors, what="A's debug view shows B's vector with A down", timeout=10, poll=0.25
    )
    assert debug["b"]["reachability"]["a"]["route"] == "via c"
    assert debug["c"]["reachability"]["a"]["direct"] == "up"

    # The path returns: both fail back to direct after the hold.
    lab.undrop_udp("a", "b")
    eventually_blocking(
        lambda: both(lab, "direct", "direct"), what="A and B fail back to direct", timeout=60, poll=0.25
    )
    eventually_blocking(
        lambda: lab.ping("a", "b") == [64, 64, 64] or None, what="direct pings", timeout=15, poll=0.25
    )

    # Drop again, then C dies: nothing can carry A-B.
    lab.drop_udp("a", "b")
    eventually_blocking(lambda: both(lab, VIA_C, VIA_C), what="through C again", timeout=30, poll=0.25)
    lab.kill("c")
    eventually_blocking(
        lambda: both(lab, "unreachable", "unreachable"),
        what="A-B unreachable at both ends",
        timeout=30,
        poll=0.25,
    )
    assert lab.ping("a", "b", count=2) == []
    view = lab.peers("a")
    assert view["b"]["reason"].startswith("relay c lost a leg") and view["b"]["rtt_ms"] is None

    # A graceful stop removes what the agent added outside its interface: the FORWARD rule.
    assert "wiremesh relay" in lab.ns("a", ["iptables", "-w", "5", "-S", "FORWARD"])
    assert lab.stop("a") == 0
    assert "wiremesh relay" not in lab.ns("a", ["iptables", "-w", "5", "-S", "FORWARD"])
    assert lab.ns("a", ["ip", "route", "show", "proto", "87"]).strip() == ""


def test_claims_and_interface_ownership(tmp_path: Path) -> None:
    """A later claim on a mesh address is refused; a wireguard-go left by a killed agent is stopped at
    the next start; an interface name another running agent uses is refused."""
    _require_root_and_tools()
    with MeshLab(tmp_path / "lab", names=("a", "b", "x", "y"), mesh={"x": "100.64.0.2"}) as lab:
        try:
            lab.start("a")
            lab.start("b")
            eventually_blocking(
                lambda: both(lab, "direct", "direct"),
                what="A and B see each other direct",
                timeout=60,
                poll=0.25,
            )
            lab.start("x")  # a copied config: B's address
            x = lab.machines["x"]

            def refused() -> list[str]:
                try:
                    view = lab.api("x", "/v1/peers")
                except Exception:
                    return []
                return (
                    [e for e in view["errors"] if "already held by b" in e]
                    if not view["holds_address"]
                    else []
                )

            (error,) = eventually_blocking(
                refused, what="X is told that B holds the address", timeout=60, poll=0.25
            )
            assert "give x a different mesh_address" in error
            addrs = lab.ns("x", ["ip", "-4", "addr", "show", "dev", x.ifname])
            assert "100.64.0.2" not in addrs, "the later claimant does not configure the address"
            # A keeps routing the address to B, and knows X claims it in vain.
            a_view = eventually_blocking(
                lambda: lab.peers("a").get("x"), what="A sees X", timeout=30, poll=0.25
            )
            assert a_view["holds_address"] is False
            assert lab.ping("a", "b") == [64, 64, 64]
            b_errors = lab.api("b", "/v1/peers")["errors"]
            assert any("also claimed by x; b keeps it" in e for e in b_errors)
            assert "already held by b" in x.log.read_text()

            # A dies with SIGKILL: its wireguard-go lives on. The next start stops it and takes over.
            a = lab.machines["a"]
            assert a.process is not None
            (orphan,) = children(a.process.pid)
            a.wg_pids.append(orphan)
            os.kill(a.process.pid, signal.SIGKILL)
            a.process.wait(timeout=10)
            lab.start("a")
            eventually_blocking(
                lambda: both(lab, "direct", "direct"), what="A is back, direct to B", timeout=60, poll=0.25
            )
            assert lab.ping("a", "b") == [64, 64, 64]
            log = a.log.read_text()
            assert f'"pid": {orphan}' in log and "left over from an earlier run" in log
            eventually_blocking(
                lambda: not Path(f"/proc/{orphan}").exists(), what="the orphan is gone", timeout=10, poll=0.25
            )

            # Y is configured with B's interface name: refused, B's device untouched.
            y = lab.machines["y"]
            y.ifname = lab.machines["b"].ifname
            lab.start("y")
            assert y.process is not None and y.process.wait(timeout=60) == 1
            assert "in use by wireguard-go pid" in y.log.read_text()
            assert lab.ping("a", "b") == [64, 64, 64]
        except BaseException:
            _dump_logs(lab)
            raise
