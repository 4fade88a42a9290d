"""Direct-path monitor for one peer: probes through the tunnel, RTT and loss estimates, up/down.

Sans-I/O: the shell calls :meth:`PathMonitor.tick` at :meth:`PathMonitor.next_deadline` and sends the
datagrams it returns to the peer agent's probe port at its probe address
(:func:`transit.meta.probe_address`), which stays on the *direct* peer entry even while the peer's mesh
address is relayed; it feeds replies to
:meth:`PathMonitor.receive` and the WireGuard handshake age (from a UAPI ``get``) to
:meth:`PathMonitor.observe_handshake`. The peer answers with :func:`answer`, which is stateless.

**Probe packet** (17 bytes): ``b"WMp"``, version 1, kind (1 probe, 2 reply), seq (u32), sender's
timestamp (float64, echoed in the reply). Sequence numbers start at a value the caller draws at
random, so a reply meant for an earlier monitor (agent restart) is ignored; the echoed timestamp must
also match the recorded send time.

**Estimates.** RTT is TCP's (RFC 6298): ``srtt += (r - srtt)/8``, ``rttvar += (|srtt - r| - rttvar)/4``,
and the probe timeout is ``srtt + 4 rttvar`` clamped to [0.25 s, 1 s]. Loss is the share of the last 20
probes with no reply within 2 s.

**Decisions.** The state is PENDING until the first reply (up at once: a new peer starts on the direct
route, so nothing flaps) or the first down verdict. Down: no reply for ``down_after`` = 3.5 s and at
least 6 probes sent since the last reply have timed out (so a stalled shell that sent nothing does not
declare a path down). Up again: ``rise`` = 3 replies in a row. A probe that times out makes the path
*suspect*: probes then go every 0.2 s instead of every 1 s, until a reply comes, so a dead path gets
many probes in its silence window while a healthy one costs one small packet a second. The handshake
age is a veto: a peer whose last handshake is older than 185 s (WireGuard rejects a session after
180 s) is down whatever probes say; that also catches probes that somehow went over a relay.

**Arithmetic against the targets** (LAN RTTs, so the probe timeout sits at its 0.25 s floor):

* *Switch within 5 s of the direct path dropping everything.* The last reply came at t0 <= the drop;
  the next probe is due by t0 + 1 s and times out by t0 + 1.25 s; from then a probe every 0.2 s, so by
  t0 + 3.5 s about 12 probes have gone unanswered (>= 6). Down at t0 + 3.5 s <= drop + 3.5 s, at both
  ends independently (each loses everything). The relay selector switches on a down direct leg at once
  (no hold) using reachability vectors published before the drop; one UAPI ``set`` follows. That
  leaves ~1.5 s for scheduling and the reconcile.
* *No flap at 20 % random loss.* 20 % each way fails a round trip with p = 1 - 0.8^2 = 0.36. A false
  down needs all ~12 probes of one silence window lost: 0.36^12 = 4.7e-6. Windows open at each lost
  probe in normal mode, about 300 x 0.36 = 108 per 5 minutes, so ~5e-4 false downs (and so flaps) per
  5 minutes. On a high-RTT link the timeout nears 1 s and fewer fast probes fit (about 8: ~3e-2 per 5
  minutes); raise ``down_after`` there.
* *Fail-back within 30 s.* While down, probes go every 1 s; 3 replies in a row make the path up
  <= 3 s after it returns. The selector's fail-back hold (15 s, see :mod:`transit.relay`) starts when
  both ends' vectors say up (gossip: ~1 s), so direct traffic resumes at about restore + 20 s.
"""

from __future__ import annotations

import math
import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, fields
from enum import StrEnum

PROBE_MAGIC = b"WMp"
PROBE_VERSION = 1
KIND_PROBE = 1
KIND_REPLY = 2
_PACKET = struct.Struct("!3sBBId")
PROBE_SIZE = _PACKET.size
SEQ_MOD = 1 << 32


@dataclass(frozen=True, slots=True)
class ProbePacket:
    kind: int
    seq: int
    timestamp: float


def encode_packet(packet: ProbePacket) -> bytes:
    return _PACKET.pack(PROBE_MAGIC, PROBE_VERSION, packet.kind, packet.seq, packet.timestamp)


def decode_packet(data: bytes) -> ProbePacket:
    """Parse a probe or reply; raises ValueError on anything else (the port is reachable by anyone
    inside the mesh)."""
    if len(data) != PROBE_SIZE:
        raise ValueError(f"probe packets are {PROBE_SIZE} bytes (got {len(data)})")
    magic, version, kind, seq, ts = _PACKET.unpack(data)
    if magic != PROBE_MAGIC or version != PROBE_VERSION or kind not in (KIND_PROBE, KIND_REPLY):
        raise ValueError("not a wiremesh probe packet")
    if not math.isfinite(ts):
        raise ValueError("probe timestamp is not finite")
    return ProbePacket(kind, seq, ts)


def answer(data: bytes) -> bytes | None:
    """The reply to a probe, or None if ``data`` is not a probe: the responder keeps no state."""
    try:
        packet = decode_packet(data)
    except ValueError:
        return None
    if packet.kind != KIND_PROBE:
        return None
    return encode_packet(ProbePacket(KIND_REPLY, packet.seq, packet.timestamp))


@dataclass(frozen=True)
class PathConfig:
    """Thresholds; the module docstring shows how the defaults meet the switch and no-flap targets."""

    probe_interval: float = 1.0
    fast_probe_interval: float = 0.2
    min_probe_timeout: float = 0.25
    max_probe_timeout: float = 1.0
    down_after: float = 3.5
    down_min_lost: int = 6
    rise: int = 3
    loss_window: int = 20
    loss_timeout: float = 2.0
    handshake_stale: float = 185.0
    max_outstanding: int = 64

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not value > 0:
                raise ValueError(f"{f.name} must be positive (got {value})")
        if self.fast_probe_interval > self.probe_interval:
            raise ValueError("fast_probe_interval must not exceed probe_interval")
        if self.min_probe_timeout > self.max_probe_timeout:
            raise ValueError("min_probe_timeout must not exceed max_probe_timeout")
        if self.loss_timeout < self.max_probe_timeout:
            raise ValueError("loss_timeout must be at least max_probe_timeout")
        if self.down_after <= self.max_probe_timeout:
            raise ValueError("down_after must exceed max_probe_timeout")
        if self.max_outstanding < self.down_min_lost:
            raise ValueError("max_outstanding must be at least down_min_lost")


class PathState(StrEnum):
    PENDING = "pending"  # no verdict yet (new peer)
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class PathStatus:
    """A snapshot for the reachability vector, the API and logs."""

    state: PathState
    since: float
    reason: str
    rtt: float | None  # smoothed RTT in seconds; None before the first sample
    rttvar: float | None
    loss: float  # share of the last ``loss_window`` decided probes that got no reply
    sent: int
    received: int
    handshake_age: float | None

    @property
    def up(self) -> bool:
        return self.state is PathState.UP

    @property
    def rtt_ms(self) -> float | None:
        return None if self.rtt is None else self.rtt * 1000.0


class PathMonitor:
    """The per-peer state machine described in the module docstring."""

    def __init__(self, config: PathConfig, now: float, first_seq: int) -> None:
        self.config = config
        self._state = PathState.PENDING
        self._since = now
        self._reason = "no reply yet"
        self._created = now
        self._next_seq = first_seq % SEQ_MOD
        self._last_sent = now - config.probe_interval  # the first probe is due at once
        # seq -> send time of probes whose fate is open (bounded: oldest evicted as lost).
        self._outstanding: OrderedDict[int, float] = OrderedDict()
        # send times of probes sent since the last reply arrived (all unanswered by definition).
        self._since_reply: deque[float] = deque(maxlen=config.max_outstanding)
        self._last_reply: float | None = None
        self._streak = 0  # replies in a row, reset by a timed-out probe
        self._fates: deque[bool] = deque(maxlen=config.loss_window)
        self._srtt: float | None = None
        self._rttvar: float | None = None
        self._handshake_age: float | None = None
        self._sent = 0
        self._received = 0

    # --- queries --------------------------------------------------------------------------------

    @property
    def state(self) -> PathState:
        return self._state

    def probe_timeout(self) -> float:
        c = self.config
        if self._srtt is None or self._rttvar is None:
            return c.max_probe_timeout
        return min(c.max_probe_timeout, max(c.min_probe_timeout, self._srtt + 4 * self._rttvar))

    def loss(self) -> float:
        return self._fates.count(False) / len(self._fates) if self._fates else 0.0

    def status(self) -> PathStatus:
        return PathStatus(
            state=self._state,
            since=self._since,
            reason=self._reason,
            rtt=self._srtt,
            rttvar=self._rttvar,
            loss=self.loss(),
            sent=self._sent,
            received=self._received,
            handshake_age=self._handshake_age,
        )

    def _suspect(self, now: float) -> bool:
        return bool(self._since_reply) and self._since_reply[0] + self.probe_timeout() <= now

    def _interval(self, now: float) -> float:
        if self._state is not PathState.DOWN and self._suspect(now):
            return self.config.fast_probe_interval
        return self.config.probe_interval

    def _timed_out(self, now: float) -> int:
        timeout = self.probe_timeout()
        return sum(1 for t in self._since_reply if t + timeout <= now)

    def _silence_start(self) -> float:
        return self._created if self._last_reply is None else self._last_reply

    def _handshake_stale(self) -> bool:
        age = self._handshake_age
        return age is not None and age > self.config.handshake_stale

    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do if nothing arrives meanwhile. Each candidate uses the
        same expression as the test in :meth:`tick`, so ticking at the deadline always makes progress."""
        c = self.config
        timeout = self.probe_timeout()
        send = self._last_sent + c.probe_interval
        if self._state is not PathState.DOWN and self._since_reply:
            # The fast interval applies once the oldest unanswered probe times out.
            send = min(send, max(self._since_reply[0] + timeout, self._last_sent + c.fast_probe_interval))
        candidates = [send]
        if self._outstanding:
            candidates.append(next(iter(self._outstanding.values())) + c.loss_timeout)
        if self._state is not PathState.DOWN and len(self._since_reply) >= c.down_min_lost:
            nth_timeout = self._since_reply[c.down_min_lost - 1] + timeout
            candidates.append(max(self._silence_start() + c.down_after, nth_timeout))
        return min(candidates)

    # --- inputs ---------------------------------------------------------------------------------

    def _set_state(self, state: PathState, now: float, reason: str) -> None:
        if state is not self._state:
            self._state = state
            self._since = now
        self._reason = reason

    def tick(self, now: float) -> list[bytes]:
        """Advance to ``now``: settle timeouts, decide, and return the probe to send if one is due."""
        c = self.config
        while self._outstanding:
            seq, sent = next(iter(self._outstanding.items()))
            if sent + c.loss_timeout > now:
                break
            del self._outstanding[seq]
            self._fates.append(False)
        if self._timed_out(now):
            self._streak = 0
        if self._state is not PathState.DOWN:
            silence = now - self._silence_start()
            lost = self._timed_out(now)
            if silence >= c.down_after and lost >= c.down_min_lost:
                self._set_state(PathState.DOWN, now, f"no reply for {silence:.1f} s ({lost} probes lost)")
        out: list[bytes] = []
        if now >= self._last_sent + self._interval(now):
            out.append(self._send(now))
        return out

    def _send(self, now: float) -> bytes:
        seq = self._next_seq
        self._next_seq = (seq + 1) % SEQ_MOD
        self._last_sent = now
        self._sent += 1
        self._outstanding[seq] = now
        while len(self._outstanding) > self.config.max_outstanding:
            self._outstanding.popitem(last=False)
            self._fates.append(False)
        self._since_reply.append(now)
        return encode_packet(ProbePacket(KIND_PROBE, seq, now))

    def receive(self, data: bytes, now: float) -> bool:
        """Take a datagram from the peer's probe port; False if it is not a reply to a live probe."""
        try:
            packet = decode_packet(data)
        except ValueError:
            return False
        if packet.kind != KIND_REPLY:
            return False
        sent = self._outstanding.get(packet.seq)
        if sent is None or sent != packet.timestamp or now < sent:
            return False
        if self._timed_out(now):
            self._streak = 0  # a probe before this one went unanswered: the run of replies is broken
        del self._outstanding[packet.seq]
        self._received += 1
        self._fates.append(True)
        self._sample_rtt(now - sent)
        self._last_reply = now
        self._since_reply.clear()
        self._streak += 1
        self._decide_up(now)
        return True

    def _sample_rtt(self, r: float) -> None:
        if self._srtt is None or self._rttvar is None:
            self._srtt, self._rttvar = r, r / 2
            return
        self._rttvar += (abs(self._srtt - r) - self._rttvar) / 4
        self._srtt += (r - self._srtt) / 8

    def _decide_up(self, now: float) -> None:
        if self._state is PathState.UP or self._handshake_stale():
            return
        if self._state is PathState.PENDING:
            if self._received:  # a handshake alone says nothing about the probes' path
                self._set_state(PathState.UP, now, "first reply")
        elif self._streak >= self.config.rise:
            self._set_state(PathState.UP, now, f"{self._streak} replies in a row")

    def observe_handshake(self, age: float | None, now: float) -> None:
        """The peer entry's handshake age in seconds as of now (None: never, or not known yet)."""
        self._handshake_age = age
        if age is not None and self._handshake_stale():
            if self._state is not PathState.DOWN:
                self._set_state(PathState.DOWN, now, f"WireGuard handshake is {age:.0f} s old")
            self._streak = 0
        else:
            self._decide_up(now)


__all__ = [
    "KIND_PROBE",
    "KIND_REPLY",
    "PROBE_SIZE",
    "PathConfig",
    "PathMonitor",
    "PathState",
    "PathStatus",
    "ProbePacket",
    "answer",
    "decode_packet",
    "encode_packet",
]
