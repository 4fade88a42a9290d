"""The SWIM + Lifeguard state machine, sans I/O.

It takes events (a datagram arrived, a stream request or reply arrived, time passed) and queues what
to do (datagrams to send, stream requests to make, membership events to publish). It reads no clock
and draws randomness only from the ``rng`` it was given, so a simulation of a thousand nodes, or an
exact timing test, drives it directly. The Trio driver lives in :mod:`gossip.node`.

:class:`Swim` is the face: it validates inputs, routes each message to the part that owns it and
answers queries. The protocol itself lives in collaborators it builds and owns, all sharing one
:class:`gossip.core.Core`: :mod:`gossip.probe` (failure detection), :mod:`gossip.merge` (membership
and its precedence rules) and :mod:`gossip.kv` (node key/values and the application's channel).
"""

from __future__ import annotations

import base64
import random
from collections.abc import KeysView, Sequence
from typing import Any

from common.address import Address
from gossip.config import GossipConfig
from gossip.core import Core, StreamRequest, bump, node_key
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from gossip.keyquery import KeyAnswer, KeyRound, reply_for
from gossip.keyring import AuthError, Sealer
from gossip.kv import AppChannel, NodeKv, app_digest
from gossip.merge import REAP_PERIOD, Membership
from gossip.names import check_member_name
from gossip.probe import Prober
from gossip.shared import SharedState
from gossip.wire import (
    CODE_OF,
    Ack,
    Alive,
    AppNotice,
    AppPull,
    AppUpdate,
    Dead,
    DecodeError,
    ErrorReply,
    IndirectPing,
    InvalidName,
    KeyQuery,
    KvNotice,
    KvPull,
    KvUpdate,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    decode_packet,
    key_query,
)

__all__ = ["StreamRequest", "Swim", "app_digest"]


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
        # Every other member would refuse our messages whole, so refuse to start instead.
        check_member_name(name)
        if len(meta) > config.meta_max_size:
            raise ValueError(f"metadata is {len(meta)} bytes; the limit is {config.meta_max_size}")
        self.config = config
        self.name = name
        self.addr = addr
        core = Core(config, name, addr, sealer, rng, now, meta, incarnation, shared)
        self._core = core
        self.stats = core.stats
        self._kv = NodeKv(core)
        self._app = AppChannel(core)
        self._membership = Membership(core, self._kv, self._app)
        self._prober = Prober(core, self._membership)

        timers = core.timers
        timers.at(now + rng.uniform(0, config.probe_interval), self._prober.tick)
        timers.at(now + rng.uniform(0, config.gossip_interval), self._membership.gossip_tick)
        timers.at(now + rng.uniform(0, config.push_pull_interval), self._membership.push_pull_tick)
        timers.at(now + rng.uniform(0, config.reconnect_interval), self._membership.reconnect_tick)
        timers.at(now + REAP_PERIOD, self._membership.reap_tick)
        core.queue_broadcast(node_key(name), Alive(name, incarnation, addr, meta))

    # --- queries ---------------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._core.me.incarnation

    @property
    def health_score(self) -> int:
        return self._core.awareness.score

    @property
    def leaving(self) -> bool:
        return self._core.leaving

    def members(self) -> list[MemberInfo]:
        return [m.info() for m in self._core.members.values()]

    def names(self) -> KeysView[str]:
        """Every member's name, past ones included: a live view, no copy of any member (the object
        store asks on every read whether a machine is known)."""
        return self._core.members.keys()

    def member(self, name: str) -> MemberInfo | None:
        m = self._core.members.get(name)
        return m.info() if m else None

    def alive_count(self) -> int:
        """Live members including ourselves."""
        return len(self._core.live) + 1

    def broadcast_depth(self) -> int:
        return len(self._core.broadcasts)

    def next_deadline(self) -> float:
        return self._core.timers.next_deadline()

    def leave_done(self) -> bool:
        core = self._core
        return core.leaving and (node_key(self.name) not in core.broadcasts or not core.live)

    def snapshot(self, now: float) -> dict[str, Any]:
        """Everything an operator needs to see why this node believes what it believes."""
        core = self._core
        members = []
        for m in sorted(core.members.values(), key=lambda m: m.name):
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
        return {
            "node": self.name,
            "addr": f"{self.addr[0]}:{self.addr[1]}",
            "incarnation": core.me.incarnation,
            "leaving": core.leaving,
            "health_score": core.awareness.score,
            "health_max": core.awareness.max_multiplier - 1,
            "probe_interval": core.awareness.scale(self.config.probe_interval),
            "members": members,
            "alive": self.alive_count(),
            "suspicions": self._membership.suspicions_report(now),
            "broadcast_queue": len(core.broadcasts),
            "name_conflicts": self._membership.conflicts_report(),
            "traffic": self.stats.as_dict(),
        }

    # --- outputs -------------------------------------------------------------------------------

    def take_datagrams(self) -> list[tuple[Address, bytes]]:
        out = self._core.out
        taken, out.datagrams = out.datagrams, []
        return taken

    def take_stream_requests(self) -> list[StreamRequest]:
        out = self._core.out
        taken, out.streams = out.streams, []
        return taken

    def take_events(self) -> list[MemberEvent]:
        out = self._core.out
        taken, out.events = out.events, []
        return taken

    # --- inputs --------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._core.timers.fire(now)

    def join(self, seeds: Sequence[Address], now: float) -> None:
        """Exchange full state with each seed; the driver retries until ``alive_count() > 1``."""
        self._membership.join(seeds)

    def leave(self, now: float) -> None:
        """Tell everyone we leave on purpose: they mark us left, not dead."""
        core = self._core
        if core.leaving:
            return
        core.leaving = True
        self._prober.abandon()
        core.me.state = MemberState.LEFT
        core.me.since = now
        core.queue_broadcast(node_key(self.name), core.leave_notice())

    def set_meta(self, meta: bytes, now: float) -> None:
        core = self._core
        if len(meta) > self.config.meta_max_size:
            raise ValueError(f"metadata is {len(meta)} bytes; the limit is {self.config.meta_max_size}")
        if meta == core.me.meta:
            return
        core.me.meta = meta
        core.me.incarnation = bump(core.me.incarnation)
        core.broadcast_self_alive()
        core.event(EventKind.UPDATE, core.me, now)

    def set_kv(self, key: str, value: bytes | None, now: float) -> None:
        """Publish a node-local value (``None`` deletes it) that every member can read."""
        self._kv.set(key, value, now)

    def publish(self, key: str, payload: bytes, now: float) -> None:
        """Spread one item of the application's shared state (it has already stored it)."""
        self._app.publish(key, payload)

    def receive_datagram(self, src: Address, data: bytes, now: float) -> None:
        stats = self.stats
        stats.datagrams_in += 1
        stats.bytes_in += len(data)
        try:
            messages = decode_packet(self._core.sealer.open(data))
        except AuthError:
            stats.auth_failures += 1
            return
        except InvalidName:
            stats.invalid_names += 1
            return
        except DecodeError:
            stats.decode_failures += 1
            return
        for msg, size in messages:
            stats.count_in(CODE_OF[type(msg)], size)
            self._handle(src, msg, now)

    def handle_stream(self, src: Address, data: bytes, now: float) -> bytes | KeyQuery | None:
        """Answer one inbound stream request; the reply is sealed, ``None`` closes without one.

        A :class:`KeyQuery` is returned as it is: the application answers it (the driver awaits its
        key store), and :meth:`answer_key_query` seals that answer."""
        core = self._core
        self.stats.streams_in += 1
        msg = core.open_frame(data)
        if msg is None:
            return None
        match msg:
            case PushPull():
                self._membership.merge(msg, now)
                return core.seal_frame(self._membership.push_pull_msg(join=False))
            case Ping() if msg.target == self.name:
                return core.seal_frame(Ack(msg.seq))
            case AppPull():
                return core.seal_frame(self._app.answer_pull(msg))
            case KvPull():
                return core.seal_frame(self._kv.answer_pull(msg))
            case KeyQuery():
                return msg
        self.stats.ignored += 1
        return core.seal_frame(ErrorReply("unexpected request"))

    def answer_key_query(self, answer: KeyAnswer) -> bytes:
        """The sealed reply to a :class:`KeyQuery` that :meth:`handle_stream` handed out."""
        return self._core.seal_frame(reply_for(answer))

    def query_keys(self, op: str, key: bytes, timeout: float, now: float) -> KeyRound:
        """Send a key query to every live member; the round fills in as their streams end.

        Sealed with the current primary, so change this member's own ring only after the round."""
        core = self._core
        msg = key_query(op, key)  # checked first: a malformed op or key raises before anything is queued
        names = sorted(core.live)
        round_ = KeyRound(op, tuple(names))
        for name in names:
            core.stream(core.members[name].addr, msg, round_.wait_for(name), timeout)
        return round_

    def stream_result(self, request_id: int, reply: bytes | None, now: float) -> None:
        core = self._core
        wait = core.streams.pop(request_id, None)
        if wait is None:
            return
        wait.settled()
        msg = core.open_frame(reply) if reply is not None else None
        if msg is None:
            self.stats.stream_failures += 1
            return
        if not wait.answered(msg, now):
            self.stats.ignored += 1

    def _handle(self, src: Address, msg: Message, now: float) -> None:
        match msg:
            case Ping():
                self._prober.on_ping(src, msg)
            case IndirectPing():
                self._prober.relay(src, msg, now)
            case Ack():
                self._prober.on_ack(msg.seq)
            case Nack():
                self._prober.on_nack(msg.seq)
            case Alive():
                self._membership.on_alive(msg, now, rebroadcast=True)
            case Suspect():
                self._membership.on_suspect(msg, now)
            case Dead():
                self._membership.on_dead(msg, now)
            case KvUpdate():
                self._kv.on_update(msg, now)
            case KvNotice():
                self._kv.on_notice(src, msg, now)
            case AppUpdate():
                self._app.on_update(msg, now)
            case AppNotice():
                self._app.on_notice(src, msg)
            case _:
                self.stats.ignored += 1
