"""The reflector's BIRD config at work: our rendered config in a real BIRD 2, three BIRD clients in
namespaces of their own on one LAN (198.18.0.0/24, nothing routed elsewhere).

Shows that every client gets every other client's path to a VIP announced by two of them (ADD-PATH),
with ORIGINATOR_ID and CLUSTER_LIST set; that a client added or removed by ``birdc configure`` resets
no other session; and that the removed client's path is gone everywhere.

Needs root and Debian's ``bird2``; everything is stopped by pid and the namespaces deleted, also when
the test fails (``labs.kit.netns.NetnsLab``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.bgp.birdconf import ReflectorSpec, clients_of, render
from labs.kit.bird import Bird
from labs.kit.netns import NetnsLab
from labs.kit.wait import eventually_blocking

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

ASN = 64512
RR = "198.18.0.1"
CLIENTS = {"a1": "198.18.0.10", "a2": "198.18.0.11", "a3": "198.18.0.12"}
ANNOUNCERS = ("a1", "a2")
VIP = "100.96.0.10/32"
WAIT = 30.0


def client_conf(address: str, announce: bool) -> str:
    vip = f"protocol static vip {{ ipv4; route {VIP} blackhole; }}\n" if announce else ""
    return f"""
router id {address};
log stderr {{ warning, error, fatal }};
protocol device {{}}
{vip}
protocol bgp up {{
  local {address} as {ASN};
  neighbor {RR} port 1790 as {ASN};
  direct;
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 2;
  ipv4 {{ import all; export where source = RTS_STATIC; add paths rx; next hop self; }};
}}
"""


def reflector_spec(names: list[str]) -> ReflectorSpec:
    machines = [(n, CLIENTS[n], ASN) for n in names]
    return ReflectorSpec(RR, RR, ASN, RR, clients_of(machines), log="stderr")


def originators(bird: Bird) -> set[str]:
    """The ORIGINATOR_IDs of the VIP's paths this client holds."""
    text = bird.birdc("show", "route", "all", VIP)
    return {line.split(":", 1)[1].strip() for line in text.splitlines() if "BGP.originator_id:" in line}


def since(rr: Bird) -> dict[str, str]:
    """Protocol -> its state and the time it entered it, for the reflector's BGP sessions."""
    out = {}
    for line in rr.birdc("show", "protocols").splitlines():
        fields = line.split()
        if fields and fields[0].startswith("m198_"):
            out[fields[0]] = " ".join(fields[3:6])
    return out


def reconfigured(answer: str) -> bool:
    """BIRD accepted the new config: done at once, or still shutting removed sessions down."""
    return "Reconfigured" in answer or "Reconfiguration in progress" in answer


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    assert shutil.which("bird") and shutil.which("birdc"), "BIRD 2 is missing: make deps"
    with NetnsLab(tmp_path / "lab") as net:
        yield net


def test_reflector_reflects_every_path_and_reconfigures_without_resets(lab: NetnsLab) -> None:
    lab.add_node("rr", [RR])
    for name, address in CLIENTS.items():
        lab.add_node(name, [address])
    conf = lab.workdir / "rr.conf"
    conf.write_text(render(reflector_spec(["a1", "a2"])))
    rr_proc = lab.spawn(
        "rr", lab.nodes["rr"], ["bird", "-f", "-c", str(conf), "-s", str(lab.workdir / "rr.ctl")]
    )
    rr = Bird(rr_proc, lab.workdir / "rr.ctl").wait_ready()
    clients = {n: lab.start_bird(n, client_conf(CLIENTS[n], n in ANNOUNCERS)) for n in ("a1", "a2")}

    def until(what: str, check: object) -> None:
        eventually_blocking(
            check,  # type: ignore[arg-type]
            what=what,
            timeout=WAIT,
            poll=0.2,
            failing=lambda: None if rr_proc.running else rr_proc.log.read_text(),
        )

    until(
        "a1 and a2 to hold each other's path",
        lambda: (
            originators(clients["a1"]) == {CLIENTS["a2"]} and originators(clients["a2"]) == {CLIENTS["a1"]}
        ),
    )
    block = clients["a1"].birdc("show", "route", "all", VIP)
    assert f"BGP.cluster_list: {RR}" in block
    before = since(rr)
    assert len(before) == 2 and all(v.startswith("up") for v in before.values()), before

    # A client added: configure keeps the other two sessions; the new one gets both paths (ADD-PATH).
    conf.write_text(render(reflector_spec(["a1", "a2", "a3"])))
    assert reconfigured(rr.birdc("configure"))
    clients["a3"] = lab.start_bird("a3", client_conf(CLIENTS["a3"], announce=False))
    until(
        "a3 to hold both announcers' paths",
        lambda: originators(clients["a3"]) == {CLIENTS["a1"], CLIENTS["a2"]},
    )
    after = since(rr)
    assert {k: after[k] for k in before} == before, after

    # A client removed: its session goes, its path with it, and nobody else's session resets.
    conf.write_text(render(reflector_spec(["a1", "a3"])))
    assert reconfigured(rr.birdc("configure"))
    until("a2's path gone at a3", lambda: originators(clients["a3"]) == {CLIENTS["a1"]})
    until("a1 to have no path left", lambda: originators(clients["a1"]) == set())
    final = since(rr)
    assert "m198_18_0_11" not in final
    assert final["m198_18_0_10"] == before["m198_18_0_10"]
    assert final["m198_18_0_12"] == after["m198_18_0_12"]
