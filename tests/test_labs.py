"""Short versions of three lab scenarios on mininet (``labs.site``), asserting behaviour, not timings:

* vip-failover: the active machine's service fails; BIRD moves its best path and the client's
  requests land on another machine;
* transit: two machines behind NAT reach each other through the third, then fail back to direct;
* policy: export policies reach BIRD and its best path follows them; an import policy shapes one
  machine's RIB only, and ``wiremesh rib`` explains the choice.

Needs root and ``make deps`` (mininet, BIRD 2, wireguard-go, iptables, curl): skipped without root,
failed when a tool is missing, so CI (root, ``make deps``) always runs them. Each site removes every
namespace, link and process it made; the tests check that nothing named after their site is left
(only their own names: another lab may be running on the host at the same time).
"""

from __future__ import annotations

import os

import pytest

from labs import policy, transit, vip_failover
from labs.kit.netns import require_root_and_tools
from labs.kit.proc import sh

pytestmark = pytest.mark.integration


@pytest.fixture
def clean_host() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, mininet")
    why = require_root_and_tools("wireguard-go", "ping")
    if why:
        pytest.fail(why)


def assert_site_gone(token: str) -> None:
    """Nothing named after this run's site is left. Only its own names are looked at: another lab may
    be running on the same host at the same time, with links of its own."""
    links = [word for word in sh("ip", "-o", "link").split() if token in word]
    assert not links, f"links of site {token} left behind: {links}"
    namespaces = [ns for ns in sh("ip", "netns", "list").split() if token in ns]
    assert not namespaces, f"namespaces of site {token} left behind: {namespaces}"


def test_vip_moves_when_the_active_machine_fails(clean_host: None) -> None:
    data = vip_failover.run(baselines=False, keepalived=False, rounds=1, observe=5.0, write=False, quiet=True)
    assert_site_gone(data["site"])
    (fault,) = data["ours"]["rounds"]
    assert fault["client_moved_s"] is not None, "the client was never served by another machine"
    assert fault["moved_to"] in {"m1", "m2", "m3"} - {fault["active"]}
    assert fault["bird_changed_s"] is not None
    assert fault["bird_best_after"] in {"m1", "m2", "m3"} - {fault["active"]}


def test_transit_carries_traffic_and_fails_back(clean_host: None) -> None:
    data = transit.run(hold=3.0, write=False, quiet=True)
    assert_site_gone(data["site"])
    assert data["first_relayed_reply_s"] is not None, "no reply went through the relay"
    assert data["replies_while_in_transit"] > 0
    assert data["relayed_share_while_in_transit"] == 1.0
    assert data["first_direct_reply_after_lift_s"] is not None, "no direct reply after the NAT was lifted"


def test_policies_reach_bird_and_shape_one_rib(clean_host: None) -> None:
    data = policy.run(missing_med=False, write=False, quiet=True)
    assert_site_gone(data["site"])
    exported = data["phases"]["1_export"]["bird"]
    assert exported["m1"]["as_path"] == "64512 64512 64512" and "(64512,1)" in exported["m1"]["communities"]
    assert exported["m2"]["med"] == 50 and exported["m3"]["med"] == 10
    assert [name for name, path in exported.items() if path["best"]] == ["m3"]
    assert data["phases"]["1_export"]["m4_choice"] == "m3"
    shaped = data["phases"]["2_import_m4"]
    assert shaped["m4_local_prefs"].get(policy.PREFERRED) == 200
    assert policy.TAGGED not in shaped["m4_local_prefs"], "the import policy did not reject the tagged prefix"
    assert policy.TAGGED in shaped["m3_local_prefs"]  # no import policy there
    assert shaped["m4_choice"] == "m2"
    assert shaped["unchanged_elsewhere"] == {"bird": "m3", "m3": "local"}
    assert "lost at Local Pref: 100 vs 150" in shaped["m4_rib_vip"]
