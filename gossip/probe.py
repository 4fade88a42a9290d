"""Failure detection: the probe cycle, indirect probes, the relays we run for others, and Lifeguard's
local health awareness.

One probe is in flight at a time. Each probe period we ping the next member in the round robin; if
no ack comes within the probe timeout we ask a few others to ping it for us (and, unless disabled,
try a TCP ping ourselves); a probe still unacked when the next period starts makes the target
suspect. How the relays answered (acked, nacked or stayed silent) feeds the awareness score, which
stretches our own probe period when the fault looks like ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from common.address import Address
from gossip.core import Core
from gossip.events import MemberState
from gossip.merge import Membership
from gossip.timers import Timer
from gossip.wire import Ack, IndirectPing, Message, Nack, Ping, Suspect


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    acked: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    """An indirect probe we run on somebody else's behalf."""

    origin: Address
    origin_seq: int
    timer: Timer | None = None


class Prober:
    """One node's failure detector; it accuses through the membership merger, like any suspicion."""

    def __init__(self, core: Core, membership: Membership) -> None:
        self._core = core
        self._membership = membership
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}

    def abandon(self) -> None:
        """Forget the probe in flight (we are leaving): it must not end in an accusation."""
        self._probe = None

    # --- the probe cycle -----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        core = self._core
        self._finish_probe(now)
        interval = core.awareness.scale(core.config.probe_interval)
        core.timers.at(now + interval, self.tick)
        if core.leaving:
            return
        target = core.next_probe_target()
        if target is None:
            return
        probe = _Probe(core.next_seq(), target.name)
        self._probe = probe
        msgs: list[Message] = []
        if target.state is MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the suspect directly so it can refute at once.
            msgs.append(Suspect(target.name, target.incarnation, core.name))
        msgs.append(Ping(probe.seq, target.name, core.name, core.addr))
        core.send(target.addr, msgs)
        core.timers.at(now + core.config.probe_timeout, partial(self._probe_indirect, probe, now + interval))

    def _probe_indirect(self, probe: _Probe, deadline: float, now: float) -> None:
        core = self._core
        if self._probe is not probe or probe.acked:
            return
        target = core.members.get(probe.target)
        if target is None or not target.live:
            return
        helpers = [n for n in core.sample_live(core.config.indirect_checks + 1) if n != target.name]
        for name in helpers[: core.config.indirect_checks]:
            ping_req = IndirectPing(probe.seq, target.name, target.addr, True, core.name, core.addr)
            core.send(core.members[name].addr, [ping_req])
            probe.expected_nacks += 1
        if not core.config.disable_tcp_pings:
            ping = Ping(probe.seq, target.name, core.name, core.addr)
            core.stream(target.addr, ping, TcpPingWait(self, probe.seq), max(deadline - now, 0.01))

    def _finish_probe(self, now: float) -> None:
        core = self._core
        probe, self._probe = self._probe, None
        if probe is None:
            return
        if probe.acked:
            core.awareness.apply_delta(-1)
            return
        # Lifeguard: relays that did not even nack suggest the fault is ours, not the target's.
        if probe.expected_nacks:
            core.awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            core.awareness.apply_delta(1)
        target = core.members.get(probe.target)
        if target is not None and target.live:
            self._membership.on_suspect(Suspect(target.name, target.incarnation, core.name), now)

    # --- probe traffic -------------------------------------------------------------------------

    def on_ping(self, src: Address, msg: Ping) -> None:
        core = self._core
        if msg.target == core.name:
            # While leaving, every ack carries the goodbye: whoever probes us learns it at once.
            bye: list[Message] = [core.leave_notice()] if core.leaving else []
            core.send(src, [Ack(msg.seq), *bye])
        else:
            core.stats.ignored += 1

    def on_ack(self, seq: int) -> None:
        if self._probe and self._probe.seq == seq:
            self._probe.acked = True
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            if relay.timer:
                relay.timer.cancel()
            self._core.send(relay.origin, [Ack(relay.origin_seq)])

    def on_nack(self, seq: int) -> None:
        if self._probe and self._probe.seq == seq:
            self._probe.nacks += 1

    def on_tcp_ack(self, asked: int, seq: int) -> None:
        """A TCP ping answered: it only counts for the probe it was sent for, if still in flight."""
        if self._probe and self._probe.seq == seq == asked:
            self._probe.acked = True

    # --- relaying for others -------------------------------------------------------------------

    def relay(self, src: Address, msg: IndirectPing, now: float) -> None:
        core = self._core
        seq = core.next_seq()
        relay = _Relay(src, msg.seq)
        self._relays[seq] = relay
        core.send(msg.target_addr, [Ping(seq, msg.target, core.name, core.addr)])
        timeout = core.config.probe_timeout * (core.config.nack_fraction if msg.nack else 1.0)
        relay.timer = core.timers.at(now + timeout, partial(self._relay_expired, seq, msg.nack))

    def _relay_expired(self, seq: int, nack: bool, now: float) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and nack:
            self._core.send(relay.origin, [Nack(relay.origin_seq)])


@dataclass(frozen=True, slots=True)
class TcpPingWait:
    prober: Prober
    seq: int

    def settled(self) -> None:
        pass

    def answered(self, msg: Message, now: float) -> bool:
        if not isinstance(msg, Ack):
            return False
        self.prober.on_tcp_ack(self.seq, msg.seq)
        return True
