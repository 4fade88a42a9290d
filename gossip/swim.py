"""The SWIM + Lifeguard state machine, sans I/O.

It takes events (a datagram arrived, a stream request or reply arrived, time passed) and queues what
to do (datagrams to send, stream requests to make, membership events to publish). It reads no clock
and draws randomness only from the ``rng`` it was given, so a simulation of a thousand nodes, or an
exact timing test, drives it directly. The Trio driver lives in :mod:`gossip.node`.

Rules of precedence between messages about the same member follow SWIM: a higher incarnation wins;
at equal incarnation suspect beats alive and dead beats both; only the member itself raises its
incarnation, which is how it refutes a suspicion (or a stale death after a restart).
"""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from common.address import Address
from gossip.awareness import Awareness
from gossip.broadcast import BroadcastQueue
from gossip.config import GossipConfig
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from gossip.keyring import AuthError, Sealer
from gossip.shared import SharedState
from gossip.state import Member
from gossip.stats import TrafficStats
from gossip.suspicion import Suspicion
from gossip.timers import Timer, Timers
from gossip.wire import (
    CODE_OF,
    MAX_COUNTER,
    MAX_KEY_LEN,
    Ack,
    Alive,
    AppNotice,
    AppPull,
    AppUpdate,
    Dead,
    DecodeError,
    ErrorReply,
    IndirectPing,
    KvNotice,
    KvPull,
    KvUpdate,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    assemble_packet,
    decode_frame,
    decode_packet,
    encode_frame,
    encode_message,
)

# Room kept in every datagram for the version byte and the array header.
_PACKET_SLACK = 4
_MAX_QUEUED_BROADCASTS = 8192
_REAP_PERIOD = 15.0


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """Open a stream to ``addr``, write ``data`` as one frame, and report the reply frame back."""

    id: int
    addr: Address
    data: bytes
    timeout: float


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


@dataclass(slots=True)
class _StreamWait:
    kind: str  # "join", "push_pull", "tcp_ping", "kv_pull"
    detail: Any = None


@dataclass(slots=True)
class _Suspicion:
    suspicion: Suspicion
    timer: Timer


@dataclass(slots=True)
class _Outbox:
    datagrams: list[tuple[Address, bytes]] = field(default_factory=list)
    streams: list[StreamRequest] = field(default_factory=list)
    events: list[MemberEvent] = field(default_factory=list)


def _node_key(name: str) -> Hashable:
    return ("node", name)


def _kv_key(node: str, key: str) -> Hashable:
    return ("kv", node, key)


def _app_key(key: str) -> Hashable:
    return ("app", key)


def app_digest(payload: bytes) -> bytes:
    """What an AppNotice carries: enough to tell two payloads apart, small enough for any datagram."""
    return hashlib.blake2b(payload, digest_size=16).digest()


def _bump(n: int) -> int:
    """One more than ``n``, but never past what the wire carries: a number peers cannot decode would
    make every datagram that carries it (acks included) undecodable."""
    return min(n + 1, MAX_COUNTER)


class Swim:
    """One gossip member's protocol state. Every input takes ``now`` (seconds, monotonic)."""

    def __init__(
        self,
        config: GossipConfig,
        name: str,
        addr: Address,
        sealer: Sealer,
        rng: random.Random,
        now: float,
        meta: bytes = b"",
        incarnation: int = 0,
        shared: SharedState | None = None,
    ) -> None:
        if not name or len(name) > 128:
            raise ValueError("node name must be 1..128 characters")
        if len(meta) > config.meta_max_size:
            raise ValueError(f"metadata is {len(meta)} bytes; the limit is {config.meta_max_size}")
        self.config = config
        self.name = name
        self.addr = addr
        self._sealer = sealer
        self._rng = rng
        self._shared = shared
        self._me = Member(name, addr, incarnation, MemberState.ALIVE, now, meta)
        self._members: dict[str, Member] = {name: self._me}
        # Live (alive or suspect) members other than us, as a list for O(1) random sampling.
        self._live: list[str] = []
        self._live_index: dict[str, int] = {}
        self._recent_dead: dict[str, float] = {}
        self._timers = Timers()
        self._broadcasts = BroadcastQueue(lambda: config.retransmit_limit(self._estimate_n()))
        self._awareness = Awareness(config.awareness_max_multiplier)
        self._suspicions: dict[str, _Suspicion] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._streams: dict[int, _StreamWait] = {}
        self._pulls: set[tuple[str, str]] = set()
        self._app_pulls: set[str] = set()
        self._conflicts: dict[str, Address] = {}
        self._seq = 0
        self._stream_id = 0
        self._leaving = False
        self._out = _Outbox()
        self.stats = TrafficStats()

        self._timers.at(now + rng.uniform(0, config.probe_interval), self._probe_tick)
        self._timers.at(now + rng.uniform(0, config.gossip_interval), self._gossip_tick)
        self._timers.at(now + rng.uniform(0, config.push_pull_interval), self._push_pull_tick)
        self._timers.at(now + rng.uniform(0, config.reconnect_interval), self._reconnect_tick)
        self._timers.at(now + _REAP_PERIOD, self._reap_tick)
        self._queue_broadcast(_node_key(name), Alive(name, incarnation, addr, meta))

    # --- queries ---------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._me.incarnation

    @property
    def health_score(self) -> int:
        return self._awareness.score

    @property
    def leaving(self) -> bool:
        return self._leaving

    def members(self) -> list[MemberInfo]:
        return [m.info() for m in self._members.values()]

    def member(self, name: str) -> MemberInfo | None:
        m = self._members.get(name)
        return m.info() if m else None

    def alive_count(self) -> int:
        """Live members including ourselves."""
        return len(self._live) + 1

    def broadcast_depth(self) -> int:
        return len(self._broadcasts)

    def next_deadline(self) -> float:
        return self._timers.next_deadline()

    def leave_done(self) -> bool:
        return self._leaving and (_node_key(self.name) not in self._broadcasts or not self._live)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything an operator needs to see why this node believes what it believes."""
        members = []
        for m in sorted(self._members.values(), key=lambda m: m.name):
            members.append(
                {
                    "name": m.name,
                    "addr": f"{m.addr[0]}:{m.addr[1]}",
                    "state": m.state.value,
                    "incarnation": m.incarnation,
                    "since_seconds_ago": round(now - m.since, 3),
                    "meta": base64.b64encode(m.meta).decode(),
                    "kv": {k: v for k, (v, _) in sorted(m.kv.items())},
                }
            )
        suspicions = [
            {
                "member": name,
                "incarnation": s.suspicion.incarnation,
                "confirmations": list(s.suspicion.confirmations),
                "expected_confirmations": s.suspicion.k,
                "deadline_in": round(s.suspicion.deadline - now, 3),
                "min_timeout": s.suspicion.min_timeout,
                "max_timeout": s.suspicion.max_timeout,
            }
            for name, s in sorted(self._suspicions.items())
        ]
        return {
            "node": self.name,
            "addr": f"{self.addr[0]}:{self.addr[1]}",
            "incarnation": self._me.incarnation,
            "leaving": self._leaving,
            "health_score": self._awareness.score,
            "health_max": self._awareness.max_multiplier - 1,
            "probe_interval": self._awareness.scale(self.config.probe_interval),
            "members": members,
            "alive": self.alive_count(),
            "suspicions": suspicions,
            "broadcast_queue": len(self._broadcasts),
            "name_conflicts": {name: f"{a[0]}:{a[1]}" for name, a in sorted(self._conflicts.items())},
            "traffic": self.stats.as_dict(),
        }

    # --- outputs -------------------------------------------------------------------------------

    def take_datagrams(self) -> list[tuple[Address, bytes]]:
        out, self._out.datagrams = self._out.datagrams, []
        return out

    def take_stream_requests(self) -> list[StreamRequest]:
        out, self._out.streams = self._out.streams, []
        return out

    def take_events(self) -> list[MemberEvent]:
        out, self._out.events = self._out.events, []
        return out

    # --- inputs --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._timers.fire(now)

    def join(self, seeds: Sequence[Address], now: float) -> None:
        """Exchange full state with each seed; the driver retries until ``alive_count() > 1``."""
        for addr in seeds:
            if addr != self.addr:
                self._stream(addr, self._push_pull_msg(join=True), _StreamWait("join", addr))

    def leave(self, now: float) -> None:
        """Tell everyone we leave on purpose: they mark us left, not dead."""
        if self._leaving:
            return
        self._leaving = True
        self._probe = None
        self._me.state = MemberState.LEFT
        self._me.since = now
        self._queue_broadcast(_node_key(self.name), self._leave_notice())

    def _leave_notice(self) -> Dead:
        return Dead(self.name, self._me.incarnation, self.name)

    def set_meta(self, meta: bytes, now: float) -> None:
        if len(meta) > self.config.meta_max_size:
            raise ValueError(f"metadata is {len(meta)} bytes; the limit is {self.config.meta_max_size}")
        if meta == self._me.meta:
            return
        self._me.meta = meta
        self._me.incarnation = _bump(self._me.incarnation)
        self._broadcast_self_alive()
        self._event(EventKind.UPDATE, self._me, now)

    def set_kv(self, key: str, value: bytes | None, now: float) -> None:
        """Publish a node-local value (``None`` deletes it) that every member can read."""
        if not key or len(key) > MAX_KEY_LEN:
            raise ValueError(f"key must be 1..{MAX_KEY_LEN} characters")
        if value is not None and len(value) > self.config.kv_value_max:
            raise ValueError(f"value is {len(value)} bytes; the limit is {self.config.kv_value_max}")
        version, current = self._me.kv.get(key, (0, None))
        if version and current == value:
            return
        self._me.kv[key] = (_bump(version), value)
        self._announce_kv(self.name, key, _bump(version), value)
        self._event(EventKind.KV, self._me, now, key)

    def publish(self, key: str, payload: bytes, now: float) -> None:
        """Spread one item of the application's shared state (it has already stored it)."""
        if not key or len(key) > MAX_KEY_LEN:
            raise ValueError(f"key must be 1..{MAX_KEY_LEN} characters")
        self._announce_app(key, payload)

    def receive_datagram(self, src: Address, data: bytes, now: float) -> None:
        self.stats.datagrams_in += 1
        self.stats.bytes_in += len(data)
        try:
            messages = decode_packet(self._sealer.open(data))
        except AuthError:
            self.stats.auth_failures += 1
            return
        except DecodeError:
            self.stats.decode_failures += 1
            return
        for msg, size in messages:
            self.stats.count_in(CODE_OF[type(msg)], size)
            self._handle(src, msg, now)

    def handle_stream(self, src: Address, data: bytes, now: float) -> bytes | None:
        """Answer one inbound stream request; the reply is sealed, ``None`` closes without one."""
        self.stats.streams_in += 1
        msg = self._open_frame(data)
        if msg is None:
            return None
        match msg:
            case PushPull():
                self._merge(msg, now)
                return self._seal_frame(self._push_pull_msg(join=False))
            case Ping() if msg.target == self.name:
                return self._seal_frame(Ack(msg.seq))
            case AppPull():
                payload = self._shared.get(msg.key) if self._shared else None
                if payload is None:
                    return self._seal_frame(ErrorReply("no such item"))
                return self._seal_frame(AppUpdate(msg.key, payload))
            case KvPull():
                owner = self._members.get(msg.node)
                if owner and msg.key in owner.kv:
                    version, value = owner.kv[msg.key]
                    return self._seal_frame(KvUpdate(msg.node, msg.key, version, value))
                return self._seal_frame(ErrorReply("no such key"))
        self.stats.ignored += 1
        return self._seal_frame(ErrorReply("unexpected request"))

    def stream_result(self, request_id: int, reply: bytes | None, now: float) -> None:
        wait = self._streams.pop(request_id, None)
        if wait is None:
            return
        if wait.kind == "kv_pull":
            self._pulls.discard(wait.detail)
        elif wait.kind == "app_pull":
            self._app_pulls.discard(wait.detail)
        msg = self._open_frame(reply) if reply is not None else None
        if msg is None:
            self.stats.stream_failures += 1
            return
        match wait.kind, msg:
            case ("join" | "push_pull", PushPull()):
                self._merge(msg, now)
            case ("tcp_ping", Ack()):
                if self._probe and self._probe.seq == msg.seq == wait.detail:
                    self._probe.acked = True
            case ("kv_pull", KvUpdate()):
                self._on_kv(msg, now)
            case ("app_pull", AppUpdate()):
                self._on_app(msg, now)
            case _:
                self.stats.ignored += 1

    # --- datagram handling ---------------------------------------------------------------------

    def _handle(self, src: Address, msg: Message, now: float) -> None:
        match msg:
            case Ping():
                if msg.target == self.name:
                    # While leaving, every ack carries the goodbye: whoever probes us learns it at once.
                    bye: list[Message] = [self._leave_notice()] if self._leaving else []
                    self._send(src, [Ack(msg.seq), *bye])
                else:
                    self.stats.ignored += 1
            case IndirectPing():
                self._relay_probe(src, msg, now)
            case Ack():
                self._on_ack(msg.seq)
            case Nack():
                if self._probe and self._probe.seq == msg.seq:
                    self._probe.nacks += 1
            case Alive():
                self._on_alive(msg, now, rebroadcast=True)
            case Suspect():
                self._on_suspect(msg, now)
            case Dead():
                self._on_dead(msg, now)
            case KvUpdate():
                self._on_kv(msg, now)
            case KvNotice():
                self._on_kv_notice(src, msg, now)
            case AppUpdate():
                self._on_app(msg, now)
            case AppNotice():
                self._on_app_notice(src, msg)
            case _:
                self.stats.ignored += 1

    def _on_ack(self, seq: int) -> None:
        if self._probe and self._probe.seq == seq:
            self._probe.acked = True
            return
        relay = self._relays.pop(seq, None)
        if relay is not None:
            if relay.timer:
                relay.timer.cancel()
            self._send(relay.origin, [Ack(relay.origin_seq)])

    def _relay_probe(self, src: Address, msg: IndirectPing, now: float) -> None:
        seq = self._next_seq()
        relay = _Relay(src, msg.seq)
        self._relays[seq] = relay
        self._send(msg.target_addr, [Ping(seq, msg.target, self.name, self.addr)])
        timeout = self.config.probe_timeout * (self.config.nack_fraction if msg.nack else 1.0)
        relay.timer = self._timers.at(now + timeout, partial(self._relay_expired, seq, msg.nack))

    def _relay_expired(self, seq: int, nack: bool, now: float) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None and nack:
            self._send(relay.origin, [Nack(relay.origin_seq)])

    # --- probing -------------------------------------------------------------------------------

    def _probe_tick(self, now: float) -> None:
        self._finish_probe(now)
        interval = self._awareness.scale(self.config.probe_interval)
        self._timers.at(now + interval, self._probe_tick)
        if self._leaving:
            return
        target = self._next_probe_target()
        if target is None:
            return
        probe = _Probe(self._next_seq(), target.name)
        self._probe = probe
        msgs: list[Message] = []
        if target.state is MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the suspect directly so it can refute at once.
            msgs.append(Suspect(target.name, target.incarnation, self.name))
        msgs.append(Ping(probe.seq, target.name, self.name, self.addr))
        self._send(target.addr, msgs)
        self._timers.at(now + self.config.probe_timeout, partial(self._probe_indirect, probe, now + interval))

    def _probe_indirect(self, probe: _Probe, deadline: float, now: float) -> None:
        if self._probe is not probe or probe.acked:
            return
        target = self._members.get(probe.target)
        if target is None or not target.live:
            return
        helpers = [n for n in self._sample_live(self.config.indirect_checks + 1) if n != target.name]
        for name in helpers[: self.config.indirect_checks]:
            ping_req = IndirectPing(probe.seq, target.name, target.addr, True, self.name, self.addr)
            self._send(self._members[name].addr, [ping_req])
            probe.expected_nacks += 1
        if not self.config.disable_tcp_pings:
            ping = Ping(probe.seq, target.name, self.name, self.addr)
            self._stream(target.addr, ping, _StreamWait("tcp_ping", probe.seq), max(deadline - now, 0.01))

    def _finish_probe(self, now: float) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        if probe.acked:
            self._awareness.apply_delta(-1)
            return
        # Lifeguard: relays that did not even nack suggest the fault is ours, not the target's.
        if probe.expected_nacks:
            self._awareness.apply_delta(probe.expected_nacks - probe.nacks)
        else:
            self._awareness.apply_delta(1)
        target = self._members.get(probe.target)
        if target is not None and target.live:
            self._on_suspect(Suspect(target.name, target.incarnation, self.name), now)

    def _next_probe_target(self) -> Member | None:
        for _ in range(len(self._probe_order) + 2):
            if self._probe_index >= len(self._probe_order):
                self._probe_order = list(self._live)
                self._rng.shuffle(self._probe_order)
                self._probe_index = 0
                if not self._probe_order:
                    return None
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            m = self._members.get(name)
            if m is not None and m.live:
                return m
        return None

    # --- periodic work -------------------------------------------------------------------------

    def _gossip_tick(self, now: float) -> None:
        self._timers.at(now + self.config.gossip_interval, self._gossip_tick)
        if not self._broadcasts:
            return
        targets = self._sample_live(self.config.gossip_nodes)
        if self._recent_dead:
            horizon = now - self.config.gossip_to_the_dead_time
            for name, since in list(self._recent_dead.items()):
                if since < horizon:
                    del self._recent_dead[name]
            pool = targets + list(self._recent_dead)
            targets = self._rng.sample(pool, min(self.config.gossip_nodes, len(pool)))
        for name in targets:
            budget = self._datagram_budget()
            encoded = self._broadcasts.take(budget)
            if not encoded:
                return
            self._emit(self._members[name].addr, encoded)

    def _push_pull_tick(self, now: float) -> None:
        n = self._estimate_n()
        self._timers.at(now + self.config.push_pull_scaled_interval(n), self._push_pull_tick)
        if self._leaving or not self._live:
            return
        target = self._members[self._rng.choice(self._live)]
        self._stream(target.addr, self._push_pull_msg(join=False), _StreamWait("push_pull", target.name))

    def _reconnect_tick(self, now: float) -> None:
        """Retry one failed member by push-pull: without this, two healed halves would never meet."""
        self._timers.at(now + self.config.reconnect_interval, self._reconnect_tick)
        if self._leaving:
            return
        failed = [m for m in self._members.values() if m.state is MemberState.DEAD]
        if failed:
            target = self._rng.choice(failed)
            self._stream(target.addr, self._push_pull_msg(join=False), _StreamWait("push_pull", target.name))

    def _reap_tick(self, now: float) -> None:
        self._timers.at(now + _REAP_PERIOD, self._reap_tick)
        horizon = now - self.config.dead_member_reap_time
        for name in [n for n, m in self._members.items() if not m.live and n != self.name]:
            if self._members[name].since < horizon:
                del self._members[name]
                self._recent_dead.pop(name, None)

    # --- state merging -------------------------------------------------------------------------

    def _on_alive(self, msg: Alive, now: float, rebroadcast: bool) -> None:
        if msg.name == self.name:
            if self._leaving:
                return  # refuting would replace our queued leave notice (memberlist bails out too)
            me = self._me
            if msg.addr != me.addr:
                # Another machine uses our name. Refuting would start an endless incarnation race;
                # keep the name (peers refuse the newcomer too) and say so loudly instead.
                self._name_conflict(me, msg, now)
                return
            newer = msg.incarnation > me.incarnation
            if newer or (msg.incarnation == me.incarnation and (msg.addr, msg.meta) != (me.addr, me.meta)):
                self._refute(msg.incarnation)
            return
        m = self._members.get(msg.name)
        if m is None:
            m = Member(msg.name, msg.addr, msg.incarnation, MemberState.ALIVE, now, msg.meta)
            self._members[msg.name] = m
            self._add_live(m)
            self._event(EventKind.JOIN, m, now)
            if rebroadcast:
                self._queue_broadcast(_node_key(m.name), msg)
            return
        if msg.incarnation <= m.incarnation:
            return
        if m.live and msg.addr != m.addr:
            self._name_conflict(m, msg, now)  # a live member keeps its name (memberlist does the same)
            return
        changed = (m.addr, m.meta) != (msg.addr, msg.meta)
        m.incarnation, m.addr, m.meta = msg.incarnation, msg.addr, msg.meta
        previous = m.state
        if previous is not MemberState.ALIVE:
            m.state, m.since = MemberState.ALIVE, now
            self._cancel_suspicion(m.name)
        if previous in (MemberState.DEAD, MemberState.LEFT):
            self._recent_dead.pop(m.name, None)
            self._add_live(m)
            self._event(EventKind.JOIN, m, now)
        elif previous is MemberState.SUSPECT:
            self._event(EventKind.ALIVE, m, now)
        if changed:
            self._event(EventKind.UPDATE, m, now)
        self._queue_broadcast(_node_key(m.name), msg)

    def _name_conflict(self, holder: Member, claim: Alive, now: float) -> None:
        """Count every conflicting claim; report each claimant address once, not every gossip round."""
        self.stats.name_conflicts += 1
        if self._conflicts.get(holder.name) != claim.addr:
            self._conflicts[holder.name] = claim.addr
            self._out.events.append(
                MemberEvent(EventKind.CONFLICT, holder.name, claim.incarnation, claim.addr, now)
            )

    def _on_suspect(self, msg: Suspect, now: float) -> None:
        m = self._members.get(msg.name)
        if m is None:
            return
        if m is self._me:
            self._answer_accusation(msg.incarnation)
            return
        if msg.incarnation < m.incarnation:
            return
        if m.state is MemberState.SUSPECT:
            entry = self._suspicions.get(m.name)
            if entry and entry.suspicion.confirm(msg.sender, now):
                entry.timer.cancel()
                entry.timer = self._timers.at(
                    entry.suspicion.deadline, partial(self._suspicion_expired, m.name, entry.suspicion)
                )
                self._queue_broadcast(_node_key(m.name), msg)
            return
        if m.state is not MemberState.ALIVE:
            return
        m.incarnation, m.state, m.since = msg.incarnation, MemberState.SUSPECT, now
        n = self._estimate_n()
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        low = self.config.suspicion_min_timeout(n)
        high = self.config.suspicion_max_timeout_mult * low
        suspicion = Suspicion(msg.sender, k, low, high, msg.incarnation, now)
        timer = self._timers.at(suspicion.deadline, partial(self._suspicion_expired, m.name, suspicion))
        self._suspicions[m.name] = _Suspicion(suspicion, timer)
        self._queue_broadcast(_node_key(m.name), msg)
        self._event(EventKind.SUSPECT, m, now)

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        entry = self._suspicions.get(name)
        m = self._members.get(name)
        if entry is None or entry.suspicion is not suspicion or m is None:
            return
        if m.state is MemberState.SUSPECT and m.incarnation == suspicion.incarnation:
            self._on_dead(Dead(name, m.incarnation, self.name), now)

    def _on_dead(self, msg: Dead, now: float) -> None:
        m = self._members.get(msg.name)
        if m is None:
            return
        if m is self._me:
            self._answer_accusation(msg.incarnation)
            return
        if msg.incarnation < m.incarnation or not m.live:
            return
        left = msg.sender == msg.name
        m.incarnation, m.since = msg.incarnation, now
        m.state = MemberState.LEFT if left else MemberState.DEAD
        self._cancel_suspicion(m.name)
        self._remove_live(m.name)
        self._recent_dead[m.name] = now
        self._queue_broadcast(_node_key(m.name), msg)
        self._event(EventKind.LEFT if left else EventKind.DEAD, m, now)

    def _answer_accusation(self, incarnation: int) -> None:
        """Someone says we are suspect or dead. At or above our incarnation: refute. Below it, the
        accuser missed our earlier refutation; re-announce it (no bump) so it rides on the next
        datagram, the buddy-system ack included, instead of waiting for anti-entropy."""
        if self._leaving:
            return
        if incarnation >= self._me.incarnation:
            self._refute(incarnation)
        else:
            self._broadcast_self_alive()

    def _refute(self, incarnation: int) -> None:
        self._me.incarnation = _bump(max(self._me.incarnation, incarnation))
        self._awareness.apply_delta(1)
        self._broadcast_self_alive()

    def _merge(self, msg: PushPull, now: float) -> None:
        """Fold a peer's full state into ours; its claims of death only make us suspect (memberlist)."""
        for r in msg.members:
            match r.state:
                case "alive":
                    # A joiner learning the whole cluster need not re-announce every member.
                    self._on_alive(Alive(r.name, r.incarnation, r.addr, r.meta), now, r.name == msg.sender)
                case "suspect" | "dead":
                    self._on_suspect(Suspect(r.name, r.incarnation, msg.sender), now)
                case "left":
                    self._on_dead(Dead(r.name, r.incarnation, r.name), now)
            for kv in r.kv:
                self._on_kv(kv, now, rebroadcast=False)
        if msg.app and self._shared is not None:
            self._shared.merge_full_state(msg.app, now)

    # --- node-local key/values -----------------------------------------------------------------

    def _on_kv(self, msg: KvUpdate, now: float, rebroadcast: bool = True) -> None:
        if msg.node == self.name:
            self._refute_kv(msg.key, msg.version, msg.value)
            return
        m = self._members.get(msg.node)
        if m is None:
            return
        version, _ = m.kv.get(msg.key, (0, None))
        if msg.version <= version:
            return
        m.kv[msg.key] = (msg.version, msg.value)
        self._event(EventKind.KV, m, now, msg.key)
        if rebroadcast:
            self._announce_kv(msg.node, msg.key, msg.version, msg.value)

    def _refute_kv(self, key: str, version: int, value: bytes | None) -> None:
        """Someone holds a version of our own key we never wrote (we restarted): supersede it."""
        mine, current = self._me.kv.get(key, (0, None))
        if version < mine or (version == mine and value == current):
            return
        if mine == 0 and value is None:
            self._me.kv[key] = (version, None)
            return
        self._me.kv[key] = (_bump(version), current)
        self._announce_kv(self.name, key, _bump(version), current)

    def _on_kv_notice(self, src: Address, msg: KvNotice, now: float) -> None:
        if msg.node == self.name:
            mine, current = self._me.kv.get(msg.key, (0, None))
            if msg.version > mine:
                self._me.kv[msg.key] = (_bump(msg.version), current)
                self._announce_kv(self.name, msg.key, _bump(msg.version), current)
            return
        m = self._members.get(msg.node)
        pull = (msg.node, msg.key)
        if m is None or msg.version <= m.kv.get(msg.key, (0, None))[0] or pull in self._pulls:
            return
        self._pulls.add(pull)
        self._stream(src, KvPull(msg.node, msg.key), _StreamWait("kv_pull", pull))

    def _announce_kv(self, node: str, key: str, version: int, value: bytes | None) -> None:
        update = KvUpdate(node, key, version, value)
        encoded = encode_message(update)
        if len(encoded) <= self.config.kv_datagram_max:
            self._broadcasts.queue(_kv_key(node, key), encoded)
        else:
            self._broadcasts.queue(_kv_key(node, key), encode_message(KvNotice(node, key, version)))

    # --- the application's shared state --------------------------------------------------------

    def _on_app(self, msg: AppUpdate, now: float) -> None:
        if self._shared is not None and self._shared.receive(msg.key, msg.payload, now):
            self._announce_app(msg.key, msg.payload)

    def _on_app_notice(self, src: Address, msg: AppNotice) -> None:
        if self._shared is None or msg.key in self._app_pulls or not self._shared.wants(msg.key, msg.digest):
            return
        self._app_pulls.add(msg.key)
        self._stream(src, AppPull(msg.key), _StreamWait("app_pull", msg.key))

    def _announce_app(self, key: str, payload: bytes) -> None:
        update = encode_message(AppUpdate(key, payload))
        if len(update) <= self.config.kv_datagram_max:
            self._broadcasts.queue(_app_key(key), update)
        else:
            self._broadcasts.queue(_app_key(key), encode_message(AppNotice(key, app_digest(payload))))

    # --- helpers -------------------------------------------------------------------------------

    def _event(self, kind: EventKind, m: Member, now: float, key: str | None = None) -> None:
        self._out.events.append(MemberEvent(kind, m.name, m.incarnation, m.addr, now, key))

    def _broadcast_self_alive(self) -> None:
        me = self._me
        self._queue_broadcast(_node_key(me.name), Alive(me.name, me.incarnation, me.addr, me.meta))

    def _queue_broadcast(self, key: Hashable, msg: Message) -> None:
        self._broadcasts.queue(key, encode_message(msg))
        if len(self._broadcasts) > _MAX_QUEUED_BROADCASTS:
            self._broadcasts.prune(_MAX_QUEUED_BROADCASTS)

    def _cancel_suspicion(self, name: str) -> None:
        entry = self._suspicions.pop(name, None)
        if entry is not None:
            entry.timer.cancel()

    def _add_live(self, m: Member) -> None:
        if m.name in self._live_index or m is self._me:
            return
        self._live_index[m.name] = len(self._live)
        self._live.append(m.name)
        # A newcomer joins the probe order at a random place rather than waiting a whole pass.
        self._probe_order.insert(self._rng.randint(0, len(self._probe_order)), m.name)

    def _remove_live(self, name: str) -> None:
        i = self._live_index.pop(name, None)
        if i is None:
            return
        last = self._live.pop()
        if last != name:
            self._live[i] = last
            self._live_index[last] = i

    def _sample_live(self, k: int) -> list[str]:
        return self._rng.sample(self._live, min(k, len(self._live)))

    def _estimate_n(self) -> int:
        return len(self._live) + 1

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _datagram_budget(self) -> int:
        return self.config.udp_buffer_size - self._sealer.overhead - _PACKET_SLACK

    def _send(self, addr: Address, msgs: list[Message]) -> None:
        """A datagram carrying ``msgs``, topped up with queued broadcasts."""
        encoded = [encode_message(m) for m in msgs]
        budget = self._datagram_budget() - sum(len(e) for e in encoded)
        self._emit(addr, encoded + self._broadcasts.take(budget))

    def _emit(self, addr: Address, encoded: list[bytes]) -> None:
        for e in encoded:
            self.stats.count_out(e[1], len(e))  # byte 1 of a fixarray is the message type
        data = self._sealer.seal(assemble_packet(encoded))
        self.stats.datagrams_out += 1
        self.stats.bytes_out += len(data)
        self._out.datagrams.append((addr, data))

    def _stream(self, addr: Address, msg: Message, wait: _StreamWait, timeout: float | None = None) -> None:
        self._stream_id += 1
        self._streams[self._stream_id] = wait
        self.stats.streams_out += 1
        request = StreamRequest(
            self._stream_id, addr, self._seal_frame(msg), timeout or self.config.tcp_timeout
        )
        self._out.streams.append(request)

    def _push_pull_msg(self, join: bool) -> PushPull:
        app = self._shared.full_state() if self._shared is not None else b""
        return PushPull(self.name, join, tuple(m.record() for m in self._members.values()), app)

    def _seal_frame(self, msg: Message) -> bytes:
        return self._sealer.seal(encode_frame(msg))

    def _open_frame(self, data: bytes) -> Message | None:
        try:
            return decode_frame(self._sealer.open(data))
        except AuthError:
            self.stats.auth_failures += 1
        except DecodeError:
            self.stats.decode_failures += 1
        return None
