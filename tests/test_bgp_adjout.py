"""Desired routes per neighbor and the commands that get ExaBGP there."""

from __future__ import annotations

from agent.bgp.adjout import AdjRibOut
from agent.bgp.api import Announce, RouteAttributes, Withdraw, community_pair
from agent.routing import GRACEFUL_SHUTDOWN

A = RouteAttributes(med=10, communities=((65001, 1),))
B = RouteAttributes(med=20)
R1, R2 = "198.18.0.1", "198.18.0.5"


def test_announce_is_idempotent_and_withdraw_only_what_was_announced() -> None:
    rib = AdjRibOut()
    assert rib.announce(R1, "100.96.0.10/32", A) == [Announce("100.96.0.10/32", A, neighbor=R1)]
    assert rib.announce(R1, "100.96.0.10/32", A) == []
    assert rib.announce(R1, "100.96.0.10/32", B) == [Announce("100.96.0.10/32", B, neighbor=R1)]
    assert rib.count(R1) == 1
    assert rib.withdraw(R1, "100.96.0.10/32") == [Withdraw("100.96.0.10/32", neighbor=R1)]
    assert rib.withdraw(R1, "100.96.0.10/32") == []
    assert rib.count(R1) == 0


def test_set_routes_sends_the_difference_withdrawals_first() -> None:
    rib = AdjRibOut()
    rib.set_routes(R1, {"100.96.0.10/32": A, "100.96.0.11/32": A})
    commands = rib.set_routes(R1, {"100.96.0.11/32": B, "100.96.0.12/32": A})
    assert commands == [
        Withdraw("100.96.0.10/32", neighbor=R1),
        Announce("100.96.0.11/32", B, neighbor=R1),
        Announce("100.96.0.12/32", A, neighbor=R1),
    ]


def test_resync_drain_and_forget() -> None:
    rib = AdjRibOut()
    rib.announce(R1, "100.96.0.10/32", A)
    rib.announce(R2, "100.96.0.10/32", B)
    assert rib.resync([R2]) == [Announce("100.96.0.10/32", B, neighbor=R2)]
    assert len(rib.resync([R1, R2, "198.18.9.9"])) == 2
    drain = rib.graceful_shutdown()
    assert all(
        isinstance(c, Announce) and community_pair(GRACEFUL_SHUTDOWN) in c.attributes.communities
        for c in drain
    )
    assert rib.routes(R1)["100.96.0.10/32"] == A  # the desired state itself is unchanged
    rib.forget(R2)
    assert rib.withdraw_all() == [Withdraw("100.96.0.10/32", neighbor=R1)]
    assert rib.neighbors() == ()
