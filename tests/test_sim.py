"""The discrete-event simulator: the same core at scale, with faults."""

from __future__ import annotations

from gossip.events import EventKind, MemberState
from gossip.sim import Simulation


def test_small_cluster_converges_and_detects_a_kill() -> None:
    sim = Simulation(8, seed=3)
    sim.join_all(stagger=0.05)
    sim.run_until(sim.now + 10.0)
    assert all(sim.node(n).alive_count() == 8 for n in sim.names)

    sim.kill("n4")
    killed_at = sim.now
    sim.run_until(sim.now + 60.0)
    deaths = [o for o in sim.events if o.event.kind is EventKind.DEAD and o.event.name == "n4"]
    assert {o.observer for o in deaths} == set(sim.names) - {"n4"}
    cfg = sim.config
    # Bound implied by the config: one full probe pass, the longest suspicion, a little dissemination.
    bound = 7 * cfg.probe_interval + cfg.suspicion_max_timeout_mult * cfg.suspicion_min_timeout(8) + 2.0
    assert max(o.at for o in deaths) - killed_at <= bound
    assert not [o for o in sim.events if o.event.kind is EventKind.DEAD and o.event.name != "n4"]


def test_restarted_member_rejoins_with_higher_incarnation() -> None:
    sim = Simulation(5, seed=4)
    sim.join_all(stagger=0.05)
    sim.run_until(sim.now + 5.0)
    sim.kill("n2")
    sim.run_until(sim.now + 40.0)
    old = sim.node("n0").member("n2")
    assert old is not None and old.state is MemberState.DEAD

    sim.restart("n2", ["n0"])
    sim.run_until(sim.now + 10.0)
    for name in sim.names:
        view = sim.node(name).member("n2")
        assert view is not None and view.state is MemberState.ALIVE
        assert view.incarnation > old.incarnation


def test_partition_heals_into_one_membership() -> None:
    sim = Simulation(10, seed=5)
    sim.join_all(stagger=0.05)
    sim.run_until(sim.now + 10.0)
    left, right = set(sim.names[:5]), set(sim.names[5:])
    sim.partition([left, right])
    sim.run_until(sim.now + 90.0)
    assert sim.node("n0").alive_count() == 5  # each side declared the other dead
    sim.heal()
    sim.run_until(sim.now + 180.0)
    assert all(sim.node(n).alive_count() == 10 for n in sim.names)
