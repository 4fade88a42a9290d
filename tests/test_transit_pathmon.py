"""Direct-path monitor: probes, RTT/loss estimates and the up/down thresholds against the targets."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from transit.pathmon import (
    KIND_PROBE,
    KIND_REPLY,
    PathConfig,
    PathMonitor,
    PathState,
    ProbePacket,
    answer,
    decode_packet,
    encode_packet,
)

# Is a packet that leaves at this time lost? (Asked once per direction: probe out, reply back.)
LossModel = Callable[[float, random.Random], bool]


def no_loss(t: float, rng: random.Random) -> bool:
    return False


def random_loss(p: float) -> LossModel:
    def model(t: float, rng: random.Random) -> bool:
        return rng.random() < p

    return model


def cut(start: float, end: float = math.inf, base: LossModel = no_loss) -> LossModel:
    """Everything dropped in [start, end), ``base`` otherwise."""

    def model(t: float, rng: random.Random) -> bool:
        return start <= t < end or base(t, rng)

    return model


@dataclass
class Sim:
    """Drives one monitor against a simulated peer that answers with :func:`answer`."""

    mon: PathMonitor
    loss: LossModel = no_loss
    rtt: float = 0.002
    seed: int = 1
    now: float = 0.0
    transitions: list[tuple[float, PathState]] = field(default_factory=list)
    sends: list[float] = field(default_factory=list)
    _flight: list[tuple[float, int, bytes]] = field(default_factory=list)
    _n: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._state = self.mon.state

    def _note(self) -> None:
        if self.mon.state is not self._state:
            self._state = self.mon.state
            self.transitions.append((self.now, self._state))

    def run_until(self, until: float) -> None:
        for _ in range(1_000_000):  # bounded
            deadline = self.mon.next_deadline()
            nxt = min(deadline, self._flight[0][0] if self._flight else math.inf, until)
            assert nxt >= self.now
            self.now = nxt
            while self._flight and self._flight[0][0] <= self.now:
                _, _, data = heapq.heappop(self._flight)
                assert self.mon.receive(data, self.now)
                self._note()
            if self.now >= until:
                return
            for pkt in self.mon.tick(self.now):
                self.sends.append(self.now)
                reply = answer(pkt)
                assert reply is not None
                lost_out = self.loss(self.now, self.rng)
                lost_back = self.loss(self.now + self.rtt / 2, self.rng)
                if not (lost_out or lost_back):
                    self._n += 1
                    heapq.heappush(self._flight, (self.now + self.rtt, self._n, reply))
            self._note()
            # Ticking at the deadline always makes progress: no busy loop for the shell.
            assert self.mon.next_deadline() > self.now or (self._flight and self._flight[0][0] <= self.now)
        raise AssertionError("simulation did not finish")


def monitor(now: float = 0.0, **kw: float) -> PathMonitor:
    return PathMonitor(PathConfig(**kw), now, first_seq=12345)  # type: ignore[arg-type]


def test_packet_codec_and_stateless_answer() -> None:
    probe = encode_packet(ProbePacket(KIND_PROBE, 7, 1.5))
    assert len(probe) == 17
    reply = answer(probe)
    assert reply is not None and decode_packet(reply) == ProbePacket(KIND_REPLY, 7, 1.5)
    assert answer(reply) is None  # replies are not answered (no ping-pong)
    for junk in [b"", b"x" * 17, probe[:-1], b"WMp\x02" + probe[4:], encode_packet(ProbePacket(9, 1, 0.0))]:
        assert answer(junk) is None
    with pytest.raises(ValueError):
        decode_packet(encode_packet(ProbePacket(KIND_PROBE, 1, math.nan)))


def test_healthy_path_is_up_at_the_first_reply_with_one_probe_a_second() -> None:
    sim = Sim(monitor(), rtt=0.004)
    sim.run_until(60.0)
    assert sim.transitions == [(0.004, PathState.UP)]
    assert 59 <= len(sim.sends) <= 61
    st = sim.mon.status()
    assert st.rtt is not None and st.rtt == pytest.approx(0.004)
    assert st.loss == 0.0 and st.sent == len(sim.sends) and st.received >= st.sent - 1
    assert sim.mon.probe_timeout() == 0.25  # floor: LAN RTT


def test_rtt_estimate_follows_the_tcp_ewma() -> None:
    mon = monitor()
    # Drive replies by hand: samples of 10 ms then 30 ms.
    for t, rtt in [(0.0, 0.010), (1.0, 0.030)]:
        (pkt,) = mon.tick(t)
        reply = answer(pkt)
        assert reply is not None
        assert mon.receive(reply, t + rtt)
    st = mon.status()
    # First sample: srtt = 10, rttvar = 5; second: rttvar = 3/4*5 + 1/4*20 = 8.75, srtt = 10 + 20/8 = 12.5
    assert st.rtt == pytest.approx(0.0125) and st.rttvar == pytest.approx(0.00875)


@pytest.mark.parametrize("phase", [0.0, 0.001, 0.3, 0.5, 0.77, 0.999])
def test_total_drop_is_detected_within_3_5_s(phase: float) -> None:
    drop = 20.0 + phase
    sim = Sim(monitor(), loss=cut(drop))
    sim.run_until(40.0)
    assert [s for _, s in sim.transitions] == [PathState.UP, PathState.DOWN]
    down_at = sim.transitions[1][0]
    assert drop < down_at <= drop + 3.5 + 1e-9
    assert "no reply" in sim.mon.status().reason
    # probing sped up while suspect: at least 10 probes went out between the drop and the verdict
    assert sum(1 for t in sim.sends if drop <= t <= down_at) >= 10


def test_while_down_probes_go_once_a_second_and_three_replies_bring_it_back() -> None:
    sim = Sim(monitor(), loss=cut(10.0, 60.0))
    sim.run_until(59.0)
    assert sim.mon.state is PathState.DOWN
    in_down = [t for t in sim.sends if 20 <= t < 59]
    assert all(b - a == pytest.approx(1.0) for a, b in itertools.pairwise(in_down))
    sim.run_until(80.0)
    up_at = sim.transitions[-1]
    assert up_at[1] is PathState.UP and 60.0 < up_at[0] <= 63.0 + 0.01
    assert "3 replies in a row" in sim.mon.status().reason


def test_twenty_percent_loss_each_way_does_not_bring_the_path_down() -> None:
    """200 runs of 5 minutes at 20 % loss each way (36 % per round trip). The module's arithmetic
    predicts ~5e-4 false downs per 5 minutes (2,000 runs measured 1), so ~0.1 expected here."""
    downs = 0
    for seed in range(200):
        sim = Sim(monitor(), loss=random_loss(0.2), seed=seed)
        sim.run_until(300.0)
        assert sim.transitions[0][1] is PathState.UP
        downs += sum(1 for _, s in sim.transitions if s is PathState.DOWN)
    assert downs <= 1


def test_loss_estimate_over_the_window() -> None:
    sim = Sim(monitor(), loss=random_loss(0.2), seed=3)
    sim.run_until(600.0)
    st = sim.mon.status()
    total_lost = 1 - st.received / st.sent
    assert 0.25 < total_lost < 0.47  # 1 - 0.8^2 = 0.36 expected
    assert 0.0 <= st.loss <= 1.0


def test_a_stalled_shell_does_not_declare_a_path_down() -> None:
    mon = monitor()
    (pkt,) = mon.tick(0.0)
    reply = answer(pkt)
    assert reply is not None and mon.receive(reply, 0.001)
    # The shell was blocked for 10 s: a single tick sees one old unanswered probe at most.
    mon.tick(1.0)
    mon.tick(10.0)
    assert mon.state is PathState.UP


def test_new_peer_that_never_answers_goes_from_pending_to_down() -> None:
    sim = Sim(monitor(now=5.0), loss=cut(0.0), now=5.0)
    sim.run_until(20.0)
    ((at, state),) = sim.transitions
    assert state is PathState.DOWN and at == pytest.approx(8.5)


def test_stale_handshake_vetoes_up_and_fresh_one_releases_it() -> None:
    sim = Sim(monitor(), rtt=0.002)
    sim.run_until(5.0)
    states = []
    for age, until in [(120.0, 10.0), (200.0, 15.0), (3.0, 20.0)]:
        sim.mon.observe_handshake(age, sim.now)
        states.append(sim.mon.state)
        sim.run_until(until)  # replies keep coming meanwhile
        states.append(sim.mon.state)
    up, down = PathState.UP, PathState.DOWN
    # replies kept coming under the veto, so a fresh handshake makes the path up at once
    assert states == [up, up, down, down, up, up]
    assert "replies in a row" in sim.mon.status().reason
    assert sim.mon.status().handshake_age == 3.0


def test_a_handshake_alone_never_makes_a_new_path_up() -> None:
    mon = monitor()
    for age in (None, 1.0):
        mon.observe_handshake(age, 0.5)
        assert mon.state is PathState.PENDING
    (probe,) = mon.tick(1.0)
    reply = answer(probe)
    assert reply is not None and mon.receive(reply, 1.01)
    assert mon.state is PathState.UP and mon.status().reason == "first reply"


def test_replies_for_another_monitor_or_forged_are_ignored() -> None:
    old = PathMonitor(PathConfig(), 0.0, first_seq=100)
    new = PathMonitor(PathConfig(), 0.0, first_seq=9_000_000)
    (old_probe,) = old.tick(0.0)
    (new_probe,) = new.tick(0.0)
    old_reply = answer(old_probe)
    assert old_reply is not None and not new.receive(old_reply, 0.01)
    same_seq_other_time = encode_packet(ProbePacket(KIND_REPLY, decode_packet(new_probe).seq, 0.5))
    assert not new.receive(same_seq_other_time, 0.01)
    assert not new.receive(new_probe, 0.01)  # a probe is not a reply
    reply = answer(new_probe)
    assert reply is not None and new.receive(reply, 0.01)
    assert not new.receive(reply, 0.02)  # duplicate
    assert new.state is PathState.UP


def test_sequence_numbers_wrap() -> None:
    mon = PathMonitor(PathConfig(), 0.0, first_seq=(1 << 32) - 1)
    seqs = [decode_packet(p).seq for t in range(3) for p in mon.tick(float(t))]
    assert seqs == [(1 << 32) - 1, 0, 1]


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        PathConfig(probe_interval=0)
    with pytest.raises(ValueError):
        PathConfig(fast_probe_interval=2.0)
    with pytest.raises(ValueError):
        PathConfig(down_after=0.5)
