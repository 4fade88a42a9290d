"""The SWIM + Lifeguard state machine, driven in-process by the deterministic harness in swimkit."""

from __future__ import annotations

import itertools
import math
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.config import GossipConfig
from gossip.events import EventKind, MemberState
from gossip.keyring import Keyring
from gossip.suspicion import remaining_timeout
from gossip.swim import Swim
from gossip.wire import (
    MAX_COUNTER,
    Ack,
    Alive,
    Dead,
    IndirectPing,
    KeyQuery,
    KvNotice,
    KvPull,
    KvUpdate,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    decode_frame,
    encode_frame,
    encode_message,
)
from tests.swimkit import (
    QUIET,
    Harness,
    info,
    lone,
    make_sealer,
    node_addr,
    opened,
    seal,
    wire_messages,
)

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
K1 = bytes(range(32))
K2 = bytes(range(1, 33))


# --- config -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"probe_interval": -1.0},
        {"probe_timeout": 1.0},  # not shorter than the interval
        {"probe_timeout": 2.0},
        {"probe_interval": 0.0, "probe_timeout": 0.0},
        {"gossip_interval": 0.0},
        {"suspicion_mult": 0},
        {"suspicion_max_timeout_mult": 0},
        {"udp_buffer_size": 100},
        {"retransmit_mult": -1},
        {"indirect_checks": -1},
        {"tcp_timeout": -0.5},
    ],
    ids=repr,
)
def test_config_refuses_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GossipConfig(**bad)


@pytest.mark.parametrize(("n", "mult"), [(1, 1), (32, 1), (33, 2), (64, 2), (65, 3), (1000, 6)])
def test_push_pull_interval_scales_past_32_members(n: int, mult: int) -> None:
    assert GossipConfig().push_pull_scaled_interval(n) == 30.0 * mult


def test_swim_refuses_bad_name_and_oversized_meta() -> None:
    sealer = make_sealer(None, "x")
    with pytest.raises(ValueError):
        Swim(QUIET, "", node_addr(1), sealer, random.Random(0), 0.0)
    for bad in ("n" * 129, "a b", "a/b", "..", "tab\there"):
        with pytest.raises(ValueError, match="machine name"):
            Swim(QUIET, bad, node_addr(1), sealer, random.Random(0), 0.0)
    with pytest.raises(ValueError):
        Swim(QUIET, "a", node_addr(1), sealer, random.Random(0), 0.0, meta=b"m" * 513)
    node = Swim(QUIET, "a", node_addr(1), sealer, random.Random(0), 0.0)
    with pytest.raises(ValueError):
        node.set_meta(b"m" * 513, 1.0)


# --- joining ----------------------------------------------------------------------------------------


def test_join_via_push_pull_makes_both_sides_alive() -> None:
    h = Harness()
    a, b = h.add("a"), h.add("b")
    assert a.alive_count() == b.alive_count() == 1
    h.join("b", "a")
    assert h.state("a", "b") is ALIVE and h.state("b", "a") is ALIVE
    assert a.alive_count() == b.alive_count() == 2
    assert [(e.name, e.incarnation) for e in h.events("a", EventKind.JOIN)] == [("b", 0)]
    assert [(e.name, e.incarnation) for e in h.events("b", EventKind.JOIN)] == [("a", 0)]
    [request] = h.stream_requests(PushPull, src="b")
    assert isinstance(request.message, PushPull) and request.message.join and request.dst_name == "a"
    assert a.stats.streams_in == 1


def test_join_to_a_dead_seed_times_out_alone() -> None:
    h = Harness()
    h.add("a")
    b = h.add("b")
    h.crash("a")
    h.join("b", "a")
    h.run_for(QUIET.tcp_timeout + 1)
    assert b.alive_count() == 1
    assert b.stats.stream_failures == 1
    assert h.events("b") == []


def test_third_member_learns_all_from_seed_and_spreads_by_gossip() -> None:
    h = Harness()
    h.add("a")
    h.add("b")
    h.join("b", "a")
    h.add("c")
    h.join("c", "a")
    assert h.state("c", "b") is ALIVE  # from a's push-pull reply
    assert h.state("b", "c") is None  # b has not heard yet
    assert h.run_until(lambda: h.state("b", "c") is ALIVE, 1.0)
    assert any(m.name == "c" for _, m in h.messages(Alive, dst="b"))


# --- probing ----------------------------------------------------------------------------------------


def test_acked_probes_change_nothing() -> None:
    h = Harness()
    nodes = h.cluster("a", "b", "c")
    t0 = h.now
    h.run_for(30.0)
    assert [s for s in h.seen if s.event.at > t0] == []
    assert h.messages((IndirectPing, Nack, Suspect, Dead)) == []
    assert h.stream_requests(Ping) == []  # no TCP fallback probes either
    assert all(n.health_score == 0 and n.incarnation == 0 for n in nodes)
    pings = [m for _, m in h.messages(Ping, src="a", since=t0)]
    assert 29 <= len(pings) <= 31  # one per probe interval
    # round robin: both peers get probed the same number of times, give or take one
    assert abs(sum(p.target == "b" for p in pings) - sum(p.target == "c" for p in pings)) <= 1
    acked = {m.seq for _, m in h.messages(Ack, dst="a")}
    assert {p.seq for p in pings[:-1]} <= acked


def test_silent_target_goes_to_indirect_probes_then_suspect() -> None:
    h = Harness()
    h.cluster("a", "b", "c", "d")
    crashed_at = h.now
    h.crash("d")
    assert h.run_until(lambda: bool(h.messages(Ping, dst="d", since=crashed_at)), 2.0)
    first, ping = h.messages(Ping, dst="d", since=crashed_at)[0]
    prober, tp = first.src, first.at
    assert ping.source == prober
    helpers = sorted({"a", "b", "c"} - {prober})
    h.run_until_time(tp + QUIET.probe_interval)

    # After probe_timeout with no ack: a ping-req to each other member, asking for nacks.
    reqs = h.messages(IndirectPing, src=prober)
    assert sorted(s.dst_name or "" for s, _ in reqs) == helpers
    for s, req in reqs:
        assert s.at == pytest.approx(tp + QUIET.probe_timeout)
        assert (req.seq, req.target, req.target_addr, req.nack) == (ping.seq, "d", h.addr("d"), True)
        assert (req.source, req.source_addr) == (prober, h.addr(prober))
    # ... and a TCP ping straight to the target.
    assert [s.dst_name for s in h.stream_requests(Ping, src=prober)] == ["d"]

    # Each helper probes d itself, then nacks when it hears nothing.
    for helper in helpers:
        relay_at = tp + QUIET.probe_timeout
        relay_pings = [m for s, m in h.messages(Ping, src=helper, dst="d") if math.isclose(s.at, relay_at)]
        assert len(relay_pings) == 1 and relay_pings[0].source == helper
        nacks = h.messages(Nack, src=helper, dst=prober)
        assert [m for _, m in nacks] == [Nack(ping.seq)]
        assert nacks[0][0].at == pytest.approx(tp + QUIET.probe_timeout * (1 + QUIET.nack_fraction))

    [suspect] = h.events(prober, EventKind.SUSPECT, "d")
    assert suspect.at == pytest.approx(tp + QUIET.probe_interval)
    # The relays answered with nacks, so the failure was not ours: health stays perfect.
    assert h.nodes[prober].health_score == 0
    assert h.run_until(lambda: all(h.state(o, "d") is DEAD for o in ("a", "b", "c")), 30.0)


def test_relay_nacks_on_timeout_only_when_asked() -> None:
    origin = node_addr(9)
    for want_nack in (True, False):
        b = lone(["x"], name="b")
        b.receive_datagram(origin, seal([IndirectPing(7, "x", node_addr(2), want_nack, "o", origin)]), 100.0)
        [(dst, data)] = b.take_datagrams()
        assert dst == node_addr(2)
        relay_ping = opened(data)[0]
        assert isinstance(relay_ping, Ping) and (relay_ping.target, relay_ping.source) == ("x", "b")
        b.tick(100.0 + QUIET.probe_timeout * QUIET.nack_fraction - 1e-6)
        assert [d for d in b.take_datagrams() if d[0] == origin] == []
        b.tick(100.0 + QUIET.probe_timeout * QUIET.nack_fraction)
        to_origin = [opened(d)[0] for a, d in b.take_datagrams() if a == origin]
        assert to_origin == ([Nack(7)] if want_nack else [])
        b.tick(103.0)
        assert [d for d in b.take_datagrams() if d[0] == origin] == []


def test_relay_forwards_the_ack_under_the_origin_sequence() -> None:
    origin = node_addr(9)
    b = lone(["x"], name="b")
    b.receive_datagram(origin, seal([IndirectPing(7, "x", node_addr(2), True, "o", origin)]), 100.0)
    [(_, data)] = b.take_datagrams()
    relay_ping = opened(data)[0]
    assert isinstance(relay_ping, Ping)
    b.receive_datagram(node_addr(2), seal([Ack(relay_ping.seq)]), 100.1)
    [(dst, data)] = b.take_datagrams()
    assert dst == origin and opened(data)[0] == Ack(7)
    b.tick(101.0)
    assert [d for d in b.take_datagrams() if d[0] == origin] == []  # no late nack


def test_partial_partition_is_bridged_by_ping_req() -> None:
    h = Harness()
    a, _, _ = h.cluster("a", "b", "c")
    t0 = h.now
    h.drop(lambda t: {t.src, t.dst} == {"a", "c"})
    h.run_for(20.0)
    assert h.events(kind=EventKind.SUSPECT) == []
    assert a.health_score == 0
    # b answered a's probes of c with acks under a's own sequence numbers
    a_probes_c = {m.seq for _, m in h.messages(Ping, src="a", dst="c", since=t0)}
    relayed = {m.seq for _, m in h.messages(Ack, src="b", dst="a", since=t0)}
    assert a_probes_c & relayed


def test_tcp_ping_fallback_saves_a_udp_blocked_peer() -> None:
    for disable, suspected in ((False, False), (True, True)):
        cfg = GossipConfig(push_pull_interval=1000.0, reconnect_interval=1000.0, disable_tcp_pings=disable)
        h = Harness(cfg)
        h.cluster("a", "b")
        h.drop(lambda t: not t.stream)
        h.run_for(5.0)
        assert bool(h.events("a", EventKind.SUSPECT, "b")) is suspected
        assert bool(h.stream_requests(Ping, src="a")) is not disable


def test_awareness_rises_without_nacks_and_stretches_the_probe_interval() -> None:
    cfg = GossipConfig(push_pull_interval=1000.0, reconnect_interval=1000.0, suspicion_mult=10)
    h = Harness(cfg)
    a, _, _ = h.cluster("a", "b", "c")
    h.run_for(3.0)
    deaf_at = h.now
    h.deafen("a")  # a's probes, and the relays' nacks, never come back
    h.run_for(12.0)
    probe_times = [s.at for s, m in h.messages(Ping, src="a", since=deaf_at) if m.source == "a"]
    gaps = [b - a for a, b in itertools.pairwise(probe_times)]
    assert gaps[:4] == pytest.approx([1.0, 2.0, 3.0, 4.0])
    assert a.health_score >= 4
    assert a.snapshot(h.now)["probe_interval"] == pytest.approx(cfg.probe_interval * (a.health_score + 1))


def test_probe_deadlines_stretch_by_the_missing_nacks() -> None:
    """Driven by next_deadline alone: each failed probe whose two relays stay silent costs 2 points."""
    cfg = GossipConfig(push_pull_interval=1000.0, reconnect_interval=1000.0, suspicion_mult=50)
    a = lone(["b", "c", "d"], config=cfg)  # nobody ever answers
    probes: list[float] = []
    while len(probes) < 7:
        t = a.next_deadline()
        a.tick(t)
        if any(isinstance(m, Ping) for _, data in a.take_datagrams() for m in opened(data)):
            probes.append(t)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps == pytest.approx([1.0, 3.0, 5.0, 7.0, 8.0, 8.0])  # score 0, 2, 4, 6, then capped at 7
    assert a.health_score == cfg.awareness_max_multiplier - 1


def test_awareness_capped_and_recovers_when_probes_succeed() -> None:
    # Suspicions last a minute here, so the deaf node keeps probing (and failing) all along. After
    # healing, its peers' re-announced refutations (and push-pull) tell it they are alive.
    cfg = GossipConfig(push_pull_interval=10.0, reconnect_interval=1000.0, suspicion_mult=60)
    h = Harness(cfg)
    a, _, _ = h.cluster("a", "b", "c")
    rule = h.deafen("a")
    h.run_for(40.0)
    assert a.health_score == cfg.awareness_max_multiplier - 1
    assert all(h.state("a", n) is SUSPECT and h.state(n, "a") is SUSPECT for n in "bc")
    h.heal(rule)
    assert h.run_until(lambda: h.converged(["a", "b", "c"]), 15.0)
    assert h.run_until(lambda: a.health_score == 0, 60.0)
    assert h.events(kind=EventKind.DEAD) == []


# --- suspicion, refutation, death ---------------------------------------------------------------------


def test_suspect_message_delivered_to_the_accused_is_refuted() -> None:
    h = Harness()
    a, _, c = h.cluster("a", "b", "c")
    h.inject_messages("b", h.addr("a"), [Suspect("c", 0, "a")])
    assert h.state("b", "c") is SUSPECT
    assert [e.incarnation for e in h.events("b", EventKind.SUSPECT, "c")] == [0]
    assert h.run_until(lambda: h.state("b", "c") is ALIVE, 5.0)
    assert c.incarnation == 1
    assert c.health_score == 1  # having to refute is a sign of trouble at home
    assert any(m == Alive("c", 1, h.addr("c"), b"") for _, m in h.messages(Alive, src="c"))
    assert [e.incarnation for e in h.events("b", EventKind.ALIVE, "c")] == [1]
    assert h.run_until(lambda: info(a, "c").incarnation == 1, 5.0)
    assert h.events(kind=EventKind.DEAD) == []


def test_accusations_about_self_bump_the_incarnation_past_them() -> None:
    a = lone(["b"])
    src = node_addr(2)
    a.receive_datagram(src, seal([Suspect("a", 0, "b")]), 100.0)
    assert a.incarnation == 1
    a.receive_datagram(src, seal([Suspect("a", 0, "b")]), 100.1)  # stale: already refuted
    assert a.incarnation == 1
    a.receive_datagram(src, seal([Dead("a", 5, "b")]), 100.2)
    assert a.incarnation == 6
    a.receive_datagram(src, seal([Alive("a", 9, a.addr, b"stale meta")]), 100.3)
    assert a.incarnation == 10
    a.receive_datagram(src, seal([Alive("a", 10, a.addr, b"")]), 100.4)  # our own news echoed back
    assert a.incarnation == 10
    assert info(a, "a").state is ALIVE
    # the refutation rides on the next datagram out
    a.receive_datagram(src, seal([Ping(1, "a", "b", src)]), 100.5)
    [(_, data)] = a.take_datagrams()[-1:]
    assert opened(data)[0] == Ack(1)
    assert Alive("a", 10, a.addr, b"") in opened(data)


def test_stale_buddy_suspicion_is_answered_by_the_ack() -> None:
    """A target that already refuted re-announces itself when told of an older suspicion, so the
    accuser learns the refutation from the very ack of its buddy-system ping."""
    a = lone(["b"])
    src = node_addr(2)
    a.receive_datagram(src, seal([Suspect("a", 3, "b")]), 100.0)
    assert a.incarnation == 4
    a.take_datagrams()
    a.tick(a.next_deadline())  # let the refutation's retransmits run out
    for _ in range(50):
        a.tick(a.next_deadline())
    a.take_datagrams()
    a.receive_datagram(src, seal([Suspect("a", 3, "b"), Ping(9, "a", "b", src)]), 200.0)
    assert a.incarnation == 4  # no bump for old news
    [(_, data)] = a.take_datagrams()[-1:]
    assert opened(data)[0] == Ack(9)
    assert Alive("a", 4, a.addr, b"") in opened(data)


def test_suspicion_timeout_declares_dead() -> None:
    h = Harness()
    h.cluster("a", "b", "c")
    h.crash("c")
    assert h.run_until(lambda: bool(h.events(kind=EventKind.SUSPECT, name="c")), 5.0)
    first = h.events(kind=EventKind.SUSPECT, name="c")[0]
    observer = next(s.observer for s in h.seen if s.event is first)
    low = QUIET.suspicion_min_timeout(3)
    # three members: nobody else can confirm (k = 0), so the timeout is the minimum from the start
    [snap] = h.nodes[observer].snapshot(h.now)["suspicions"]
    assert snap["member"] == "c" and snap["expected_confirmations"] == 0
    assert snap["min_timeout"] == snap["max_timeout"] == low
    assert snap["deadline_in"] == pytest.approx(low)
    assert h.run_until(lambda: h.converged(["a", "b", "c"], DEAD) or False, 10.0) is False
    assert h.run_until(lambda: all(h.state(o, "c") is DEAD for o in ("a", "b")), 10.0)
    [dead] = h.events(observer, EventKind.DEAD, "c")
    assert dead.at == pytest.approx(first.at + low)
    assert h.nodes[observer].snapshot(h.now)["suspicions"] == []


def test_independent_confirmations_shorten_the_deadline() -> None:
    a = lone(["b", "c", "d", "e", "f"])  # six members: k = suspicion_mult - 2 = 2
    low, high = (
        QUIET.suspicion_min_timeout(6),
        QUIET.suspicion_min_timeout(6) * QUIET.suspicion_max_timeout_mult,
    )

    def suspicion(now: float) -> dict[str, Any]:
        [s] = a.snapshot(now)["suspicions"]
        assert isinstance(s, dict)
        return s

    def accuse(sender: str, now: float) -> None:
        a.receive_datagram(node_addr(3), seal([Suspect("f", 0, sender)]), now)

    accuse("b", 100.0)
    assert suspicion(100.0) == {
        "member": "f",
        "incarnation": 0,
        "confirmations": ["b"],
        "expected_confirmations": 2,
        "deadline_in": high,
        "min_timeout": low,
        "max_timeout": high,
    }
    accuse("b", 101.0)  # the same accuser again counts for nothing
    assert suspicion(101.0)["deadline_in"] == pytest.approx(high - 1.0)
    accuse("c", 101.0)
    s = suspicion(101.0)
    assert s["confirmations"] == ["b", "c"]
    assert s["deadline_in"] == pytest.approx(remaining_timeout(1, 2, 1.0, low, high), abs=1e-3)
    assert s["deadline_in"] < high - 1.0
    accuse("d", 102.0)
    assert suspicion(102.0)["deadline_in"] == pytest.approx(low - 2.0)
    accuse("e", 102.5)  # k reached: no more shortening
    assert suspicion(102.5)["confirmations"] == ["b", "c", "d"]
    a.take_events()
    a.tick(100.0 + low - 1e-6)
    assert info(a, "f").state is SUSPECT
    a.tick(100.0 + low)
    assert info(a, "f").state is DEAD
    assert [(e.kind, e.at) for e in a.take_events() if e.name == "f"] == [(EventKind.DEAD, 100.0 + low)]


def test_confirmations_from_the_cluster_kill_a_crashed_member_fast() -> None:
    h = Harness()
    names = ["a", "b", "c", "d", "e", "f"]
    h.cluster(*names)
    h.crash("f")
    high = QUIET.suspicion_min_timeout(6) * QUIET.suspicion_max_timeout_mult

    def confirmed() -> bool:
        return any(
            len(s["confirmations"]) > 1 for n in h.nodes.values() for s in n.snapshot(h.now)["suspicions"]
        )

    assert h.run_until(confirmed, 10.0)
    assert h.run_until(lambda: all(h.state(o, "f") is DEAD for o in names[:-1]), high)
    first_suspect = min(e.at for e in h.events(kind=EventKind.SUSPECT, name="f"))
    assert max(e.at for e in h.events(kind=EventKind.DEAD, name="f")) < first_suspect + high / 2


def test_rejoin_after_death_with_a_higher_incarnation() -> None:
    h = Harness()
    h.cluster("a", "b", "c")
    h.crash("c")
    assert h.run_until(lambda: h.state("a", "c") is DEAD and h.state("b", "c") is DEAD, 30.0)
    old = h.view("a", "c").incarnation
    restarted_at = h.now
    c = h.add("c")  # a fresh process: incarnation 0 again
    assert c.incarnation == 0
    h.join("c", "a")
    assert h.run_until(lambda: h.converged(["a", "b", "c"]), 10.0)
    assert c.incarnation > old
    for observer in ("a", "b"):
        assert h.view(observer, "c").incarnation == c.incarnation
        joins = [e for e in h.events(observer, EventKind.JOIN, "c") if e.at >= restarted_at]
        assert [e.incarnation for e in joins] == [c.incarnation]


def test_graceful_leave_marks_left_not_dead() -> None:
    h = Harness()
    _, _, c = h.cluster("a", "b", "c")
    h.run_for(2.0)
    assert not c.leave_done()
    h.call("c", lambda n: n.leave(h.now))
    left_at = h.now
    assert c.leaving and not c.leave_done()
    assert h.run_until(c.leave_done, 10.0)
    assert h.run_until(lambda: h.state("a", "c") is LEFT and h.state("b", "c") is LEFT, 5.0)
    for observer in ("a", "b"):
        assert [e.kind for e in h.events(observer, name="c") if e.at >= left_at] == [EventKind.LEFT]
    assert any(m == Dead("c", 0, "c") for _, m in h.messages(Dead, src="c"))
    assert h.messages(Ping, src="c", since=left_at + QUIET.probe_interval) == []  # stops probing
    h.crash("c")
    h.run_for(60.0)
    assert h.state("a", "c") is LEFT and h.state("b", "c") is LEFT
    assert [e.kind for e in h.events(name="c") if e.at >= left_at] == [EventKind.LEFT, EventKind.LEFT]


def test_leaving_node_ignores_news_of_itself_and_keeps_leaving() -> None:
    """An Alive about us during leave (say, a record from a previous life) must not undo the leave:
    refuting it would replace the queued leave notice with an Alive (memberlist's aliveNode bails out
    here for the same reason)."""
    c = lone(["a", "b"], name="c")
    c.leave(101.0)
    for msg in (Alive("c", 5, node_addr(8), b"old"), Suspect("c", 5, "a"), Dead("c", 5, "a")):
        c.receive_datagram(node_addr(2), seal([msg]), 101.5)
    assert c.incarnation == 0
    c.receive_datagram(node_addr(2), seal([Ping(9, "c", "a", node_addr(2))]), 102.0)
    [(_, data)] = c.take_datagrams()[-1:]
    assert opened(data)[0] == Ack(9)
    assert Dead("c", 0, "c") in opened(data)
    assert not any(isinstance(m, Alive) and m.name == "c" for m in opened(data))


def test_leave_done_at_once_when_alone() -> None:
    a = lone()
    a.leave(101.0)
    assert a.leave_done()


def test_buddy_system_tells_the_suspect_directly() -> None:
    h = Harness()
    _, _, c = h.cluster("a", "b", "c")
    # From now on c hears nothing but a's probes (Ping datagrams), so gossip cannot tell it anything.
    h.drop(lambda t: t.dst == "c" and (t.src != "a" or not any(isinstance(m, Ping) for m in t.messages)))
    injected_at = h.now
    h.inject_messages("a", h.addr("b"), [Suspect("c", 0, "b")])
    assert h.state("a", "c") is SUSPECT
    assert h.run_until(lambda: c.incarnation > 0, 3 * QUIET.probe_interval)
    [probe, *_] = [s for s in h.datagrams(src="a", dst="c", of=Ping, since=injected_at)]
    assert isinstance(probe.messages[1], Ping)
    assert probe.messages[0] == Suspect("c", 0, "a")  # the buddy message, ahead of the ping
    h.heal()
    assert h.run_until(lambda: h.state("a", "c") is ALIVE, 5.0)
    assert [e.incarnation for e in h.events("a", EventKind.ALIVE, "c")] == [1]


def test_precedence_of_alive_suspect_dead() -> None:
    """Higher incarnation wins; at equal incarnation suspect beats alive and dead beats both."""
    a = lone(["b"])
    addr_b = node_addr(2)
    steps: list[tuple[Message, MemberState, list[EventKind]]] = [
        (Suspect("b", 0, "c"), SUSPECT, [EventKind.SUSPECT]),
        (Alive("b", 0, addr_b, b""), SUSPECT, []),
        (Alive("b", 1, addr_b, b""), ALIVE, [EventKind.ALIVE]),
        (Suspect("b", 0, "c"), ALIVE, []),  # older than what we know
        (Dead("b", 0, "c"), ALIVE, []),
        (Suspect("b", 1, "c"), SUSPECT, [EventKind.SUSPECT]),
        (Dead("b", 1, "c"), DEAD, [EventKind.DEAD]),
        (Suspect("b", 1, "c"), DEAD, []),
        (Alive("b", 1, addr_b, b""), DEAD, []),  # a dead member needs a new incarnation to return
        (Alive("b", 2, addr_b, b"m"), ALIVE, [EventKind.JOIN, EventKind.UPDATE]),
        (Dead("b", 2, "b"), LEFT, [EventKind.LEFT]),  # sent by itself: it left
        (Dead("b", 3, "c"), LEFT, []),
        (Alive("b", 3, addr_b, b"m"), ALIVE, [EventKind.JOIN]),
    ]
    a.take_events()
    for i, (msg, state, kinds) in enumerate(steps):
        a.receive_datagram(node_addr(3), seal([msg]), 100.0 + i)
        assert info(a, "b").state is state, msg
        assert [e.kind for e in a.take_events()] == kinds, msg
    assert a.alive_count() == 2


def test_push_pull_claims_of_death_only_make_us_suspect() -> None:
    a = lone(["b", "c", "d"])
    records = (
        MemberRecord("b", node_addr(2), 0, "dead", b"", ()),
        MemberRecord("c", node_addr(3), 0, "left", b"", ()),
        MemberRecord("d", node_addr(4), 0, "suspect", b"", ()),
        MemberRecord("e", node_addr(5), 0, "alive", b"", ()),
    )
    frame = make_sealer(None, "z").seal(encode_frame(PushPull("z", False, records)))
    assert a.handle_stream(node_addr(9), frame, 100.0) is not None
    states = {m.name: m.state for m in a.members()}
    assert states == {"a": ALIVE, "b": SUSPECT, "c": LEFT, "d": SUSPECT, "e": ALIVE}


# Names a holder of the real key once planted on every agent; those breaking the rule are refused.
INVALID_NAMES = ["😀/..", "..", ".", "a b", "a\x00b", "new\nline", "rtl\u202eexe", "n" * 129]


@pytest.mark.parametrize("bad", INVALID_NAMES)
def test_a_datagram_naming_an_invalid_member_is_refused_whole(bad: str) -> None:
    a = lone(["b"])
    before = sorted((m.name, m.state, m.incarnation) for m in a.members())
    a.take_events()
    a.take_datagrams()
    datagrams: list[list[Message]] = [
        [Alive("c", 0, node_addr(3), b""), Alive(bad, 0, node_addr(4), b"")],
        [Alive("c", 0, node_addr(3), b""), Suspect("b", 0, bad)],
        [Dead("b", 1, bad)],
        [Ping(1, "a", bad, node_addr(4))],
        [KvUpdate(bad, "k", 1, b"v")],
    ]
    for messages in datagrams:
        a.receive_datagram(node_addr(4), seal(messages), 100.0)
    frame = make_sealer(None, "z").seal(
        encode_frame(PushPull("z", False, (MemberRecord(bad, node_addr(4), 0, "alive", b"", ()),)))
    )
    assert a.handle_stream(node_addr(4), frame, 100.0) is None
    assert a.stats.invalid_names == len(datagrams) + 1
    assert a.stats.decode_failures == 0
    assert sorted((m.name, m.state, m.incarnation) for m in a.members()) == before  # "c" not added either
    assert a.take_events() == []
    assert a.take_datagrams() == []  # not even the ping answered


def test_each_node_piggybacks_an_update_exactly_retransmit_limit_times() -> None:
    h = Harness()
    h.cluster("a", "b", "c")
    h.run_for(5.0)  # let the join news die down
    h.call("a", lambda n: n.set_kv("health", b"ok", h.now))
    h.run_for(10.0)
    limit = QUIET.retransmit_limit(3)
    update = KvUpdate("a", "health", 1, b"ok")
    sends = {n: sum(m == update for _, m in h.messages(KvUpdate, src=n)) for n in "abc"}
    assert sends["a"] == limit
    assert 0 < sends["b"] <= limit and 0 < sends["c"] <= limit


@pytest.mark.parametrize("keyring", [None, Keyring([K1])], ids=["plain", "sealed"])
def test_datagrams_stay_within_the_buffer_with_big_metadata(keyring: Keyring | None) -> None:
    # Default timers: with only two 540-byte Alives per datagram, gossip alone may miss a member
    # during the join burst, and the periodic push-pull is what completes the picture.
    h = Harness(GossipConfig(), keyring=keyring)
    names = [f"node-{i}" for i in range(8)]
    for n in names:
        h.add(n, meta=n.encode() * (QUIET.meta_max_size // len(n)))
    for n in names[1:]:
        h.join(n, names[0])
    assert h.run_until(lambda: h.converged(names), 40.0)
    assert h.sent and max(len(s.data) for s in h.sent) <= QUIET.udp_buffer_size
    assert all(s.messages for s in h.sent)  # and every one of them opens and decodes
    meta = h.view(names[3], names[5]).meta
    assert meta == names[5].encode() * (QUIET.meta_max_size // len(names[5]))


def test_partition_heals_by_reconnect_and_gossip_to_the_dead() -> None:
    h = Harness(GossipConfig())  # default timers: push-pull and reconnect every 30 s
    h.cluster("a", "b", "c")
    rule = h.isolate("c")
    assert h.run_until(lambda: h.state("a", "c") is DEAD and h.state("c", "a") is DEAD, 30.0)
    healed_at = h.now
    h.heal(rule)
    assert h.run_until(lambda: h.converged(["a", "b", "c"]), 65.0)
    # the failed side was tried again over streams (not left for dead)
    assert any(s.at >= healed_at and s.dst_name == "c" for s in h.stream_requests(PushPull))
    assert all(h.view(o, "c").incarnation > 0 for o in "ab")


def test_left_members_are_not_reconnected_and_all_are_reaped() -> None:
    cfg = GossipConfig(push_pull_interval=1000.0, reconnect_interval=5.0, dead_member_reap_time=60.0)
    h = Harness(cfg)
    h.cluster("a", "b", "c", "d")
    h.call("d", lambda n: n.leave(h.now))
    assert h.run_until(lambda: h.state("a", "d") is LEFT, 5.0)
    h.crash("d")
    h.crash("c")
    assert h.run_until(lambda: h.state("a", "c") is DEAD, 30.0)
    gone_at = h.now
    h.run_for(30.0)
    retried = {s.dst_name for s in h.stream_requests(PushPull) if s.at >= gone_at}
    assert retried == {"c"}
    assert h.state("a", "c") is DEAD and h.state("a", "d") is LEFT  # still visible for a while
    h.run_for(cfg.dead_member_reap_time + 20.0)
    assert h.state("a", "c") is None and h.state("a", "d") is None
    assert sorted(m.name for m in h.nodes["a"].members()) == ["a", "b"]


def test_a_left_member_that_restarts_and_joins_a_survivor_is_readmitted_everywhere() -> None:
    """The rolling restart of a seedless agent: the others marked it left and never dial it, so it
    joins a member it remembered; the "left" record it gets back makes it refute, and its new
    incarnation re-admits it on both sides."""
    h = Harness(GossipConfig(reconnect_interval=1000.0, push_pull_interval=1000.0))
    h.cluster("a", "b", "c")
    h.call("a", lambda n: n.leave(h.now))
    assert h.run_until(lambda: h.state("b", "a") is LEFT and h.state("c", "a") is LEFT, 5.0)
    h.crash("a")
    old = h.view("b", "a").incarnation
    h.run_for(30.0)
    assert h.state("b", "a") is LEFT  # nobody brings it back on their own
    restarted_at = h.now
    a = h.add("a")  # incarnation 0 again, at or below what the others hold for it
    h.join("a", "b")
    assert h.run_until(lambda: h.converged(["a", "b", "c"]), 10.0)
    assert a.incarnation > old
    for observer in ("b", "c"):
        assert h.view(observer, "a").incarnation == a.incarnation
        assert [e.incarnation for e in h.events(observer, EventKind.JOIN, "a") if e.at >= restarted_at] == [
            a.incarnation
        ]


@pytest.mark.parametrize("gone", [LEFT, DEAD])
def test_alive_with_a_higher_incarnation_readmits_a_gone_member_at_its_new_address(gone: MemberState) -> None:
    a = lone(["b", "c"])
    sender = "b" if gone is LEFT else "c"  # a member's own death notice means it left
    a.receive_datagram(node_addr(2), seal([Dead("b", 0, sender)]), 101.0)
    assert info(a, "b").state is gone
    a.take_events()
    a.receive_datagram(node_addr(2), seal([Alive("b", 0, node_addr(9), b"")]), 102.0)
    assert info(a, "b").state is gone  # not newer: a stale alive does not undo the departure
    a.receive_datagram(node_addr(9), seal([Alive("b", 1, node_addr(9), b"")]), 103.0)
    b = info(a, "b")
    assert (b.state, b.incarnation, b.addr) == (ALIVE, 1, node_addr(9))
    assert [e.kind for e in a.take_events() if e.name == "b"][:1] == [EventKind.JOIN]
    assert a.alive_count() == 3


# --- metadata and node-local values --------------------------------------------------------------------


def test_metadata_update_spreads_with_a_higher_incarnation() -> None:
    h = Harness()
    a, _, _ = h.cluster("a", "b", "c")
    h.call("a", lambda n: n.set_meta(b"role=edge", h.now))
    assert a.incarnation == 1
    assert [(e.kind, e.name) for e in h.events("a") if e.name == "a"] == [(EventKind.UPDATE, "a")]
    assert h.run_until(lambda: all(h.view(o, "a").meta == b"role=edge" for o in "bc"), 2.0)
    for observer in "bc":
        [update] = h.events(observer, EventKind.UPDATE, "a")
        assert update.incarnation == 1
        assert h.view(observer, "a").incarnation == 1
    h.call("a", lambda n: n.set_meta(b"role=edge", h.now))  # no change, no news
    assert a.incarnation == 1


def test_kv_spreads_and_tombstones() -> None:
    h = Harness()
    h.cluster("a", "b", "c")
    h.call("a", lambda n: n.set_kv("health", b"ok", h.now))
    assert [(e.kind, e.key) for e in h.events("a", name="a")] == [(EventKind.KV, "health")]

    def seen(value: bytes | None, version: int) -> bool:
        return all(h.view(o, "a").kv.get("health") == (version, value) for o in "bc")

    assert h.run_until(lambda: seen(b"ok", 1), 2.0)
    for observer in "bc":
        assert [e.key for e in h.events(observer, EventKind.KV, "a")] == ["health"]
    assert any(m == KvUpdate("a", "health", 1, b"ok") for _, m in h.messages(KvUpdate, src="a"))
    h.call("a", lambda n: n.set_kv("health", b"ok", h.now))  # unchanged: no new version
    assert h.view("a", "a").kv["health"] == (1, b"ok")
    h.call("a", lambda n: n.set_kv("health", None, h.now))
    assert h.run_until(lambda: seen(None, 2), 2.0)
    assert all(len(h.events(o, EventKind.KV, "a")) == 2 for o in "bc")


def test_kv_refuses_bad_keys_and_values() -> None:
    a = lone()
    with pytest.raises(ValueError):
        a.set_kv("", b"x", 100.0)
    with pytest.raises(ValueError):
        a.set_kv("k" * 129, b"x", 100.0)
    with pytest.raises(ValueError):
        a.set_kv("k", b"x" * (QUIET.kv_value_max + 1), 100.0)


def test_large_value_travels_as_notice_and_is_pulled_over_a_stream() -> None:
    h = Harness()
    h.cluster("a", "b", "c")
    blob = bytes(range(256)) * 8  # 2 KiB: more than kv_datagram_max and than a datagram
    h.call("a", lambda n: n.set_kv("blob", blob, h.now))
    assert h.run_until(
        lambda: all(h.view(o, "a").kv.get("blob") == (1, blob) for o in "bc"),
        3.0,
    )
    assert h.messages(KvUpdate) == []  # the value itself never rode a datagram
    assert any(m == KvNotice("a", "blob", 1) for _, m in h.messages(KvNotice, src="a"))
    pulls = h.stream_requests(KvPull)
    assert {p.src for p in pulls} == {"b", "c"}
    assert all(p.message == KvPull("a", "blob") for p in pulls)
    assert all(len(s.data) <= QUIET.udp_buffer_size for s in h.sent)
    assert all([e.key for e in h.events(o, EventKind.KV, "a")] == ["blob"] for o in "bc")


def test_a_failed_kv_pull_frees_the_key_for_the_next_notice() -> None:
    a = lone(["b"])
    notice = seal([KvNotice("b", "blob", 1)])
    a.receive_datagram(node_addr(2), notice, 100.0)
    a.receive_datagram(node_addr(2), notice, 100.0)
    [pull] = a.take_stream_requests()  # one pull per key at a time
    a.stream_result(pull.id, None, 101.0)
    assert a.stats.stream_failures == 1
    a.receive_datagram(node_addr(2), notice, 102.0)
    [again] = a.take_stream_requests()
    assert decode_frame(make_sealer(None, "b").open(again.data)) == KvPull("b", "blob")


def test_a_stream_reply_of_the_wrong_kind_is_ignored() -> None:
    a = lone(["b"])
    a.receive_datagram(node_addr(2), seal([KvNotice("b", "blob", 1)]), 100.0)
    [pull] = a.take_stream_requests()
    wrong = make_sealer(None, "b").seal(encode_frame(Ack(7)))
    a.stream_result(pull.id, wrong, 101.0)
    assert a.stats.ignored == 1 and a.stats.stream_failures == 0
    assert "blob" not in info(a, "b").kv
    a.stream_result(pull.id, wrong, 101.0)  # an answered request is forgotten
    assert a.stats.ignored == 1


def test_restarted_node_supersedes_its_old_kv_versions() -> None:
    h = Harness()
    h.cluster("a", "b", "c")
    for value in (b"v1", b"v2", b"v3"):
        h.call("a", lambda n, v=value: n.set_kv("k", v, h.now))  # type: ignore[misc]
    assert h.run_until(lambda: h.view("b", "a").kv.get("k") == (3, b"v3"), 3.0)
    h.crash("a")
    a = h.add("a")
    h.call("a", lambda n: n.set_kv("k", b"fresh", h.now))
    assert info(a, "a").kv["k"] == (1, b"fresh")
    h.join("a", "b")
    # a learns that the cluster holds version 3 of its key and outbids it with its current value
    assert info(a, "a").kv["k"] == (4, b"fresh")
    assert h.run_until(
        lambda: all(h.view(o, "a").kv.get("k") == (4, b"fresh") for o in "bc"),
        3.0,
    )


def test_restarted_node_tombstones_keys_it_no_longer_has() -> None:
    h = Harness()
    h.cluster("a", "b")
    h.call("a", lambda n: n.set_kv("old", b"x", h.now))
    assert h.run_until(lambda: "old" in h.view("b", "a").kv, 2.0)
    h.crash("a")
    a = h.add("a")
    h.join("a", "b")
    assert info(a, "a").kv["old"] == (2, None)
    assert h.run_until(lambda: h.view("b", "a").kv["old"] == (2, None), 2.0)


# --- refusing traffic --------------------------------------------------------------------------------


def test_other_keys_and_clusters_are_auth_failures_that_change_nothing() -> None:
    h = Harness(keyring=Keyring([K1]))
    a, _ = h.cluster("a", "b")
    before = sorted((m.name, m.state, m.incarnation) for m in a.members())
    intruder = h.add("x", keyring=Keyring([K2]))
    h.join("x", "a")
    assert a.stats.auth_failures == 1
    assert intruder.alive_count() == 1 and intruder.stats.stream_failures == 1
    for data in (
        seal([Alive("x", 0, node_addr(9), b"")], Keyring([K2])),
        seal([Suspect("b", 0, "x"), Dead("b", 0, "x")], Keyring([K1]), cluster="other-cluster"),
        seal([Dead("b", 5, "x")], None),  # plaintext into an encrypted cluster
    ):
        h.inject("a", node_addr(9), data)
    assert a.stats.auth_failures == 4
    assert a.stats.decode_failures == 0
    assert sorted((m.name, m.state, m.incarnation) for m in a.members()) == before
    assert h.events("a", name="x") == [] and h.events("a", EventKind.SUSPECT) == []


def test_garbage_datagrams_are_decode_failures() -> None:
    h = Harness()
    a, _ = h.cluster("a", "b")
    before = sorted((m.name, m.state, m.incarnation) for m in a.members())
    rng = random.Random(5)
    for _ in range(50):
        h.inject("a", node_addr(9), b"\x00" + rng.randbytes(rng.randrange(0, 60)))
    h.inject("a", node_addr(9), b"\x00\x02" + encode_frame(Ack(1))[1:])  # right seal, wrong wire version
    assert a.stats.decode_failures == 51
    assert a.stats.auth_failures == 0
    assert a.handle_stream(node_addr(9), b"\x00garbage", h.now) is None
    assert a.stats.decode_failures == 52
    assert sorted((m.name, m.state, m.incarnation) for m in a.members()) == before


def test_accusation_at_the_largest_incarnation_does_not_make_us_mute() -> None:
    """Outbidding the wire's largest number would put a message nobody can decode on every datagram
    we send (one bad message rejects a whole packet), acks included."""
    a = lone(["b"])
    src = node_addr(2)
    a.receive_datagram(
        src, seal([Suspect("a", MAX_COUNTER, "b"), KvUpdate("a", "k", MAX_COUNTER, b"x")]), 100.0
    )
    a.set_kv("k", b"mine", 100.0)
    a.set_meta(b"new", 100.0)
    assert a.incarnation <= MAX_COUNTER
    a.receive_datagram(src, seal([Ping(3, "a", "b", src)]), 100.1)
    [(_, data)] = a.take_datagrams()[-1:]
    assert opened(data)[0] == Ack(3)
    a.tick(130.0)
    for _, data in a.take_datagrams():
        opened(data)


def test_ping_for_someone_else_is_ignored() -> None:
    a = lone(["b"])
    a.receive_datagram(node_addr(2), seal([Ping(4, "zed", "b", node_addr(2))]), 100.0)
    assert a.take_datagrams() == []
    assert a.stats.ignored == 1


def test_stream_requests_answered() -> None:
    a = lone(["b"])
    a.set_kv("k", b"v", 100.0)

    def ask(msg: Message) -> Message:
        reply = a.handle_stream(node_addr(2), make_sealer(None, "b").seal(encode_frame(msg)), 100.0)
        assert isinstance(reply, bytes)
        return decode_frame(make_sealer(None, "b").open(reply))

    assert ask(Ping(3, "a", "b", node_addr(2))) == Ack(3)
    assert ask(KvPull("a", "k")) == KvUpdate("a", "k", 1, b"v")
    assert ask(KvPull("a", "nope")).__class__.__name__ == "ErrorReply"
    assert ask(Ack(1)).__class__.__name__ == "ErrorReply"
    reply = ask(PushPull("b", False, ()))
    assert isinstance(reply, PushPull) and reply.sender == "a" and not reply.join
    assert sorted(r.name for r in reply.members) == ["a", "b"]


# --- the debug snapshot ------------------------------------------------------------------------------


def test_snapshot_explains_what_the_node_believes() -> None:
    h = Harness()
    a, _, _ = h.cluster("a", "b", "c")
    h.call("a", lambda n: n.set_kv("health", b"ok", h.now))
    h.crash("c")
    assert h.run_until(lambda: h.state("a", "c") is SUSPECT, 5.0)
    snap = a.snapshot(h.now)
    assert snap["node"] == "a" and snap["incarnation"] == 0 and snap["leaving"] is False
    assert [(m["name"], m["state"]) for m in snap["members"]] == [
        ("a", "alive"),
        ("b", "alive"),
        ("c", "suspect"),
    ]
    assert snap["members"][0]["kv"] == {"health": 1}
    assert snap["members"][0]["addr"] == "198.18.0.1:7946"
    assert [s["member"] for s in snap["suspicions"]] == ["c"]
    assert snap["alive"] == 3  # a suspect still counts as live
    assert snap["health_score"] == a.health_score and snap["health_max"] == QUIET.awareness_max_multiplier - 1
    assert snap["broadcast_queue"] == a.broadcast_depth()
    traffic = snap["traffic"]
    mine = h.datagrams(src="a")
    assert traffic["datagrams_out"] == len(mine)
    assert traffic["bytes_out"] == sum(len(s.data) for s in mine)
    out = traffic["per_type"]["out"]
    assert out["ping"]["messages"] == len(h.messages(Ping, src="a"))
    assert out["alive"]["messages"] == len(h.messages(Alive, src="a"))
    delivered = [s for s in h.datagrams(dst="a") if not s.dropped]
    assert traffic["datagrams_in"] == len(delivered)
    acks_in = [m for s in delivered for m in s.messages if isinstance(m, Ack)]
    assert acks_in
    assert traffic["per_type"]["in"]["ack"] == {
        "messages": len(acks_in),
        "bytes": sum(len(encode_message(m)) for m in acks_in),
    }


# --- robustness: arbitrary well-formed traffic --------------------------------------------------------

NAMES = st.sampled_from(["a", "b", "c", "d", "e"])
# Mostly small numbers, so incarnations and versions collide; sometimes the largest the wire carries.
SMALL = st.integers(0, 4) | st.integers(0, 4) | st.just(MAX_COUNTER)
STEP = st.tuples(
    st.floats(0.0, 3.0),
    st.booleans(),  # over a stream instead of a datagram
    st.lists(wire_messages(names=NAMES, numbers=SMALL), min_size=1, max_size=4),
)


def _check_invariants(a: Swim, now: float, last_incarnation: int) -> None:
    me = a.member("a")
    assert me is not None and me.state is ALIVE
    assert a.incarnation >= last_incarnation
    others = [m for m in a.members() if m.name != "a"]
    assert a.alive_count() == 1 + sum(m.state in (ALIVE, SUSPECT) for m in others)
    snap = a.snapshot(now)
    assert {s["member"] for s in snap["suspicions"]} == {m.name for m in others if m.state is SUSPECT}
    for _, data in a.take_datagrams():
        assert len(data) <= a.config.udp_buffer_size
        opened(data)  # everything we send decodes
    a.take_stream_requests()


@given(st.lists(STEP, max_size=12))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_traffic_keeps_the_core_consistent(steps: list[tuple[float, bool, list[Message]]]) -> None:
    a = lone(["b", "c", "d"])
    now = 100.0
    sealer = make_sealer(None, "peer")
    for dt, stream, messages in steps:
        now += dt
        last = a.incarnation
        a.tick(now)
        if stream:
            reply = a.handle_stream(node_addr(2), sealer.seal(encode_frame(messages[0])), now)
            if isinstance(reply, bytes):
                assert decode_frame(sealer.open(reply)) is not None
            else:
                assert reply is None or isinstance(reply, KeyQuery)
        else:
            a.receive_datagram(node_addr(2), seal(messages), now)
        _check_invariants(a, now, last)
    a.tick(now + 120.0)
    _check_invariants(a, now + 120.0, 0)
    assert math.isfinite(a.next_deadline())


# --- name conflicts ----------------------------------------------------------------------------------


def test_another_machine_claiming_our_name_is_reported_not_refuted() -> None:
    a = lone(["b"])
    a.take_events()
    impostor = node_addr(9)
    for t in (100.0, 100.5):
        a.receive_datagram(impostor, seal([Alive("a", 5, impostor, b"")]), t)
    assert a.incarnation == 0  # no incarnation race with the impostor
    conflicts = [e for e in a.take_events() if e.kind is EventKind.CONFLICT]
    assert [(e.name, e.addr) for e in conflicts] == [("a", impostor)]  # reported once per claimant
    snapshot = a.snapshot(101.0)
    assert snapshot["name_conflicts"] == {"a": f"{impostor[0]}:{impostor[1]}"}
    assert snapshot["traffic"]["name_conflicts"] == 2


def test_a_live_member_keeps_its_name_against_a_claim_from_elsewhere() -> None:
    a = lone(["b"])
    a.take_events()
    a.receive_datagram(node_addr(9), seal([Alive("b", 7, node_addr(9), b"x")]), 100.0)
    b = info(a, "b")
    assert (b.addr, b.incarnation, b.meta) == (node_addr(2), 0, b"")
    assert [e.kind for e in a.take_events()] == [EventKind.CONFLICT]


def test_a_dead_member_may_come_back_from_a_new_address() -> None:
    a = lone(["b"])
    a.receive_datagram(node_addr(3), seal([Dead("b", 0, "c")]), 100.0)
    assert info(a, "b").state is MemberState.DEAD
    a.take_events()
    a.receive_datagram(node_addr(9), seal([Alive("b", 1, node_addr(9), b"")]), 101.0)
    b = info(a, "b")
    assert (b.state, b.addr, b.incarnation) == (MemberState.ALIVE, node_addr(9), 1)
    assert [e.kind for e in a.take_events()] == [EventKind.JOIN, EventKind.UPDATE]


def test_a_leaving_node_tells_whoever_probes_it() -> None:
    a = lone(["b"])
    a.leave(100.0)
    a.take_datagrams()
    src = node_addr(2)
    a.receive_datagram(src, seal([Ping(4, "a", "b", src)]), 100.1)
    [(dst, data)] = a.take_datagrams()
    assert dst == src
    assert opened(data)[:2] == [Ack(4), Dead("a", 0, "a")]
