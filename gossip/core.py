"""The state the parts of one SWIM core share, and the only ways out of it.

:class:`gossip.swim.Swim` is cut by concern into collaborators it owns: a prober
(:mod:`gossip.probe`), a membership merger (:mod:`gossip.merge`) and the key/value and application
channels (:mod:`gossip.kv`). Each keeps its own bookkeeping private; what more than one of them reads
or writes lives here, in one :class:`Core` they are all handed. Every cross-concern access is then a
visible ``core.x`` rather than an attribute some mixin happens to define, and the collaborators stay
sans I/O because the only outputs they have are the queues in :class:`Outbox`.

The collaborators depend on each other in one direction only (probe -> merge -> kv -> core), so
Swim can build them in that order and no object needs a back-reference filled in later.
"""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

from common.address import Address
from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.config import GossipConfig
from gossip.events import EventKind, MemberEvent, MemberState
from gossip.keyring import AuthError, Sealer
from gossip.shared import SharedState
from gossip.state import Member
from gossip.stats import TrafficStats
from gossip.timers import Timers
from gossip.wire import (
    MAX_COUNTER,
    Alive,
    Dead,
    DecodeError,
    InvalidName,
    Message,
    assemble_packet,
    decode_frame,
    encode_frame,
    encode_message,
)

# Room kept in every datagram for the version byte and the array header.
_PACKET_SLACK = 4
_MAX_QUEUED_BROADCASTS = 8192


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open a stream to ``addr``, write ``data`` as one frame, and report the reply frame back."""

    id: int
    addr: Address
    data: bytes
    timeout: float


class StreamWait(Protocol):
    """An outbound stream we await. The part that opened it defines one small class per kind, so
    what a reply means sits next to the code that asked, and an unknown kind cannot be spelled."""

    def settled(self) -> None:
        """The stream ended, answered or not: release what kept a duplicate request from starting."""
        ...

    def answered(self, msg: Message, now: float) -> bool:
        """Fold in a decoded reply; ``False`` when it is not the kind of reply this wait expects."""
        ...


@dataclass(slots=True)
class Outbox:
    datagrams: list[tuple[Address, bytes]] = field(default_factory=list)
    streams: list[StreamRequest] = field(default_factory=list)
    events: list[MemberEvent] = field(default_factory=list)


def node_key(name: str) -> Hashable:
    """The broadcast-queue subject for a member's own state: a newer fact replaces the older one."""
    return ("node", name)


def bump(n: int) -> int:
    """One more than ``n``, but never past what the wire carries: a number peers cannot decode would
    make every datagram that carries it (acks included) undecodable."""
    return min(n + 1, MAX_COUNTER)


class Core:
    """The member table, timers, broadcast queue, sealer and outbox one node's collaborators share.

    The live set and the probe order are kept together here because a member that becomes live is
    put into the probe order at once (at a random place), whichever part of the core revived it.
    """

    def __init__(
        self,
        config: GossipConfig,
        name: str,
        addr: Address,
        sealer: Sealer,
        rng: random.Random,
        now: float,
        meta: bytes,
        incarnation: int,
        shared: SharedState | None,
    ) -> None:
        self.config = config
        self.name = name
        self.addr = addr
        self.sealer = sealer
        self.rng = rng
        self.shared = shared
        self.me = Member(name, addr, incarnation, MemberState.ALIVE, now, meta)
        self.members: dict[str, Member] = {name: self.me}
        # Live (alive or suspect) members other than us, as a list for O(1) random sampling.
        self.live: list[str] = []
        self._live_index: dict[str, int] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self.timers = Timers()
        self.broadcasts = BroadcastQueue(lambda: config.retransmit_limit(self.estimate_n()))
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.streams: dict[int, StreamWait] = {}
        self.leaving = False
        self.out = Outbox()
        self.stats = TrafficStats()
        self._seq = 0
        self._stream_id = 0

    # --- the live set ----------------------------------------------------------------------------

    def add_live(self, m: Member) -> None:
        if m.name in self._live_index or m is self.me:
            return
        self._live_index[m.name] = len(self.live)
        self.live.append(m.name)
        # A newcomer joins the probe order at a random place rather than waiting a whole pass.
        self._probe_order.insert(self.rng.randint(0, len(self._probe_order)), m.name)

    def remove_live(self, name: str) -> None:
        i = self._live_index.pop(name, None)
        if i is None:
            return
        last = self.live.pop()
        if last != name:
            self.live[i] = last
            self._live_index[last] = i

    def sample_live(self, k: int) -> list[str]:
        return self.rng.sample(self.live, min(k, len(self.live)))

    def estimate_n(self) -> int:
        return len(self.live) + 1

    def next_probe_target(self) -> Member | None:
        """SWIM's randomized round robin: every live member once per pass, reshuffled each pass."""
        for _ in range(len(self._probe_order) + 2):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = list(self.live)
                self.rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            m = self.members.get(name)
            if m is not None and m.live:
                return m
        return None

    # --- what we say about ourselves ---------------------------------------------------------------

    def leave_notice(self) -> Dead:
        return Dead(self.name, self.me.incarnation, self.name)

    def broadcast_self_alive(self) -> None:
        me = self.me
        self.queue_broadcast(node_key(me.name), Alive(me.name, me.incarnation, me.addr, me.meta))

    # --- outputs ---------------------------------------------------------------------------------

    def event(self, kind: EventKind, m: Member, now: float, key: str | None = None) -> None:
        self.out.events.append(MemberEvent(kind, m.name, m.incarnation, m.addr, now, key))

    def queue_broadcast(self, key: Hashable, msg: Message) -> None:
        self.broadcasts.queue(key, encode_message(msg))
        if len(self.broadcasts) > _MAX_QUEUED_BROADCASTS:
            self.broadcasts.prune(_MAX_QUEUED_BROADCASTS)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def datagram_budget(self) -> int:
        return self.config.udp_buffer_size - self.sealer.overhead - _PACKET_SLACK

    def send(self, addr: Address, msgs: list[Message]) -> None:
        """A datagram carrying ``msgs``, topped up with queued broadcasts."""
        encoded = [encode_message(m) for m in msgs]
        budget = self.datagram_budget() - sum(len(e) for e in encoded)
        self.emit(addr, encoded + self.broadcasts.take(budget))

    def emit(self, addr: Address, encoded: list[bytes]) -> None:
        for e in encoded:
            self.stats.count_out(e[1], len(e))  # byte 1 of a fixarray is the message type
        data = self.sealer.seal(assemble_packet(encoded))
        self.stats.datagrams_out += 1
        self.stats.bytes_out += len(data)
        self.out.datagrams.append((addr, data))

    def stream(self, addr: Address, msg: Message, wait: StreamWait, timeout: float | None = None) -> None:
        self._stream_id += 1
        self.streams[self._stream_id] = wait
        self.stats.streams_out += 1
        request = StreamRequest(
            self._stream_id, addr, self.seal_frame(msg), timeout or self.config.tcp_timeout
        )
        self.out.streams.append(request)

    def seal_frame(self, msg: Message) -> bytes:
        return self.sealer.seal(encode_frame(msg))

    def open_frame(self, data: bytes) -> Message | None:
        try:
            return decode_frame(self.sealer.open(data))
        except AuthError:
            self.stats.auth_failures += 1
        except InvalidName:
            self.stats.invalid_names += 1
        except DecodeError:
            self.stats.decode_failures += 1
        return None
