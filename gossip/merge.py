"""Membership merging: what we believe about each member, and how gossip changes that belief.

Rules of precedence between messages about the same member follow SWIM: a higher incarnation wins;
at equal incarnation suspect beats alive and dead beats both; only the member itself raises its
incarnation, which is how it refutes a suspicion (or a stale death after a restart).

Besides the single-message rules this holds the periodic work that spreads and repairs membership:
piggyback gossip (including to the recently dead, so a wrongly declared member hears it and
refutes), push-pull anti-entropy, reconnecting to failed members, and reaping long-gone ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from common.address import Address
from gossip.core import Core, bump, node_key
from gossip.events import EventKind, MemberEvent, MemberState
from gossip.kv import AppChannel, NodeKv
from gossip.state import Member
from gossip.suspicion import Suspicion
from gossip.timers import Timer
from gossip.wire import Alive, Dead, Message, PushPull, Suspect

REAP_PERIOD = 15.0


@dataclass(slots=True)
class _Suspicion:
    suspicion: Suspicion
    timer: Timer


class Membership:
    """Alive/suspect/dead handling, refutation, push-pull merging and reaping for one node."""

    def __init__(self, core: Core, kv: NodeKv, app: AppChannel) -> None:
        self._core = core
        self._kv = kv
        self._app = app
        self._suspicions: dict[str, _Suspicion] = {}
        self._conflicts: dict[str, Address] = {}
        # Members recently declared dead or left, still gossiped to for a while.
        self._recent_dead: dict[str, float] = {}

    # --- single messages -----------------------------------------------------------------------

    def on_alive(self, msg: Alive, now: float, rebroadcast: bool) -> None:
        core = self._core
        if msg.name == core.name:
            if core.leaving:
                return  # refuting would replace our queued leave notice (memberlist bails out too)
            me = core.me
            if msg.addr != me.addr:
                # Another machine uses our name. Refuting would start an endless incarnation race;
                # keep the name (peers refuse the newcomer too) and say so loudly instead.
                self._name_conflict(me, msg, now)
                return
            newer = msg.incarnation > me.incarnation
            if newer or (msg.incarnation == me.incarnation and (msg.addr, msg.meta) != (me.addr, me.meta)):
                self._refute(msg.incarnation)
            return
        m = core.members.get(msg.name)
        if m is None:
            m = Member(msg.name, msg.addr, msg.incarnation, MemberState.ALIVE, now, msg.meta)
            core.members[msg.name] = m
            core.add_live(m)
            core.event(EventKind.JOIN, m, now)
            if rebroadcast:
                core.queue_broadcast(node_key(m.name), msg)
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
            core.add_live(m)
            core.event(EventKind.JOIN, m, now)
        elif previous is MemberState.SUSPECT:
            core.event(EventKind.ALIVE, m, now)
        if changed:
            core.event(EventKind.UPDATE, m, now)
        core.queue_broadcast(node_key(m.name), msg)

    def on_suspect(self, msg: Suspect, now: float) -> None:
        core = self._core
        m = core.members.get(msg.name)
        if m is None:
            return
        if m is core.me:
            self._answer_accusation(msg.incarnation)
            return
        if msg.incarnation < m.incarnation:
            return
        if m.state is MemberState.SUSPECT:
            entry = self._suspicions.get(m.name)
            if entry and entry.suspicion.confirm(msg.sender, now):
                entry.timer.cancel()
                entry.timer = core.timers.at(
                    entry.suspicion.deadline, partial(self._suspicion_expired, m.name, entry.suspicion)
                )
                core.queue_broadcast(node_key(m.name), msg)
            return
        if m.state is not MemberState.ALIVE:
            return
        m.incarnation, m.state, m.since = msg.incarnation, MemberState.SUSPECT, now
        n = core.estimate_n()
        k = core.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        low = core.config.suspicion_min_timeout(n)
        high = core.config.suspicion_max_timeout_mult * low
        suspicion = Suspicion(msg.sender, k, low, high, msg.incarnation, now)
        timer = core.timers.at(suspicion.deadline, partial(self._suspicion_expired, m.name, suspicion))
        self._suspicions[m.name] = _Suspicion(suspicion, timer)
        core.queue_broadcast(node_key(m.name), msg)
        core.event(EventKind.SUSPECT, m, now)

    def on_dead(self, msg: Dead, now: float) -> None:
        core = self._core
        m = core.members.get(msg.name)
        if m is None:
            return
        if m is core.me:
            self._answer_accusation(msg.incarnation)
            return
        if msg.incarnation < m.incarnation or not m.live:
            return
        left = msg.sender == msg.name
        m.incarnation, m.since = msg.incarnation, now
        m.state = MemberState.LEFT if left else MemberState.DEAD
        self._cancel_suspicion(m.name)
        core.remove_live(m.name)
        self._recent_dead[m.name] = now
        core.queue_broadcast(node_key(m.name), msg)
        core.event(EventKind.LEFT if left else EventKind.DEAD, m, now)

    def _name_conflict(self, holder: Member, claim: Alive, now: float) -> None:
        """Count every conflicting claim; report each claimant address once, not every gossip round."""
        self._core.stats.name_conflicts += 1
        if self._conflicts.get(holder.name) != claim.addr:
            self._conflicts[holder.name] = claim.addr
            self._core.out.events.append(
                MemberEvent(EventKind.CONFLICT, holder.name, claim.incarnation, claim.addr, now)
            )

    def _suspicion_expired(self, name: str, suspicion: Suspicion, now: float) -> None:
        entry = self._suspicions.get(name)
        m = self._core.members.get(name)
        if entry is None or entry.suspicion is not suspicion or m is None:
            return
        if m.state is MemberState.SUSPECT and m.incarnation == suspicion.incarnation:
            self.on_dead(Dead(name, m.incarnation, self._core.name), now)

    def _cancel_suspicion(self, name: str) -> None:
        entry = self._suspicions.pop(name, None)
        if entry is not None:
            entry.timer.cancel()

    def _answer_accusation(self, incarnation: int) -> None:
        """Someone says we are suspect or dead. At or above our incarnation: refute. Below it, the
        accuser missed our earlier refutation; re-announce it (no bump) so it rides on the next
        datagram, the buddy-system ack included, instead of waiting for anti-entropy."""
        core = self._core
        if core.leaving:
            return
        if incarnation >= core.me.incarnation:
            self._refute(incarnation)
        else:
            core.broadcast_self_alive()

    def _refute(self, incarnation: int) -> None:
        core = self._core
        core.me.incarnation = bump(max(core.me.incarnation, incarnation))
        core.awareness.apply_delta(1)
        core.broadcast_self_alive()

    # --- full state ----------------------------------------------------------------------------

    def merge(self, msg: PushPull, now: float) -> None:
        """Fold a peer's full state into ours; its claims of death only make us suspect (memberlist)."""
        for r in msg.members:
            match r.state:
                case "alive":
                    # A joiner learning the whole cluster need not re-announce every member.
                    self.on_alive(Alive(r.name, r.incarnation, r.addr, r.meta), now, r.name == msg.sender)
                case "suspect" | "dead":
                    self.on_suspect(Suspect(r.name, r.incarnation, msg.sender), now)
                case "left":
                    self.on_dead(Dead(r.name, r.incarnation, r.name), now)
            for kv in r.kv:
                self._kv.on_update(kv, now, rebroadcast=False)
        self._app.merge_full_state(msg.app, now)

    def push_pull_msg(self, join: bool) -> PushPull:
        core = self._core
        app = self._app.full_state()
        return PushPull(core.name, join, tuple(m.record() for m in core.members.values()), app)

    def join(self, seeds: Sequence[Address]) -> None:
        core = self._core
        for addr in seeds:
            if addr != core.addr:
                core.stream(addr, self.push_pull_msg(join=True), PushPullWait(self, join=True))

    # --- periodic work -------------------------------------------------------------------------

    def gossip_tick(self, now: float) -> None:
        core = self._core
        core.timers.at(now + core.config.gossip_interval, self.gossip_tick)
        if not core.broadcasts:
            return
        targets = core.sample_live(core.config.gossip_nodes)
        if self._recent_dead:
            horizon = now - core.config.gossip_to_the_dead_time
            for name, since in list(self._recent_dead.items()):
                if since < horizon:
                    del self._recent_dead[name]
            pool = targets + list(self._recent_dead)
            targets = core.rng.sample(pool, min(core.config.gossip_nodes, len(pool)))
        for name in targets:
            budget = core.datagram_budget()
            encoded = core.broadcasts.take(budget)
            if not encoded:
                return
            core.emit(core.members[name].addr, encoded)

    def push_pull_tick(self, now: float) -> None:
        core = self._core
        n = core.estimate_n()
        core.timers.at(now + core.config.push_pull_scaled_interval(n), self.push_pull_tick)
        if core.leaving or not core.live:
            return
        target = core.members[core.rng.choice(core.live)]
        core.stream(target.addr, self.push_pull_msg(join=False), PushPullWait(self, join=False))

    def reconnect_tick(self, now: float) -> None:
        """Retry one failed member by push-pull: without this, two healed halves would never meet."""
        core = self._core
        core.timers.at(now + core.config.reconnect_interval, self.reconnect_tick)
        if core.leaving:
            return
        failed = [m for m in core.members.values() if m.state is MemberState.DEAD]
        if failed:
            target = core.rng.choice(failed)
            core.stream(target.addr, self.push_pull_msg(join=False), PushPullWait(self, join=False))

    def reap_tick(self, now: float) -> None:
        core = self._core
        core.timers.at(now + REAP_PERIOD, self.reap_tick)
        horizon = now - core.config.dead_member_reap_time
        for name in [n for n, m in core.members.items() if not m.live and n != core.name]:
            if core.members[name].since < horizon:
                del core.members[name]
                self._recent_dead.pop(name, None)

    # --- for the operator ----------------------------------------------------------------------

    def suspicions_report(self, now: float) -> list[dict[str, Any]]:
        return [
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

    def conflicts_report(self) -> dict[str, str]:
        return {name: f"{a[0]}:{a[1]}" for name, a in sorted(self._conflicts.items())}


@dataclass(frozen=True, slots=True)
class PushPullWait:
    """A join or a periodic exchange: either way the reply is the peer's full state."""

    membership: Membership
    join: bool

    def settled(self) -> None:
        pass

    def answered(self, msg: Message, now: float) -> bool:
        if not isinstance(msg, PushPull):
            return False
        self.membership.merge(msg, now)
        return True
