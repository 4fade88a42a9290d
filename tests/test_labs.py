"""Short versions of two lab scenarios on mininet (``labs.site``), asserting behaviour, not timings:

* vip-failover: the active machine's service fails; BIRD moves its best path and the client's
  requests land on another machine;
* transit: two machines behind NAT reach each other through the third, then fail back to direct.

Needs root and ``make deps`` (mininet, BIRD 2, wireguard-go, iptables, curl): skipped without root,
failed when a tool is missing, so CI (root, ``make deps``) always runs them. Each site removes every
namespace, link and process it made; the test checks that ``ip netns list`` and ``ip link`` are as
before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from labs import transit, vip_failover
from labs.bgplab import sh
from labs.site import require_root_and_tools

pytestmark = pytest.mark.integration


@pytest.fixture
def clean_host() -> Iterator[None]:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, mininet")
    why = require_root_and_tools("wireguard-go", "ping")
    if why:
        pytest.fail(why)
    links = set(sh("ip", "-o", "link").split())
    yield
    leftovers = {word for word in set(sh("ip", "-o", "link").split()) - links if "-eth" in word}
    assert not leftovers, f"mininet links left behind: {leftovers}"
    ours = f"wmb-{os.getpid()}-"
    assert not [ns for ns in sh("ip", "netns", "list").split() if ns.startswith(ours)], "namespaces left"


def test_vip_moves_when_the_active_machine_fails(clean_host: None) -> None:
    data = vip_failover.run(baselines=False, keepalived=False, rounds=1, observe=5.0, write=False, quiet=True)
    (fault,) = data["ours"]["rounds"]
    assert fault["client_moved_s"] is not None, "the client was never served by another machine"
    assert fault["moved_to"] in {"m1", "m2", "m3"} - {fault["active"]}
    assert fault["bird_changed_s"] is not None
    assert fault["bird_best_after"] in {"m1", "m2", "m3"} - {fault["active"]}


def test_transit_carries_traffic_and_fails_back(clean_host: None) -> None:
    data = transit.run(hold=3.0, write=False, quiet=True)
    assert data["first_relayed_reply_s"] is not None, "no reply went through the relay"
    assert data["replies_while_in_transit"] > 0
    assert data["relayed_share_while_in_transit"] == 1.0
    assert data["first_direct_reply_after_lift_s"] is not None, "no direct reply after the NAT was lifted"
