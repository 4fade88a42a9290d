"""The holdoff end to end, on a simulated 3-machine cluster under ``MockClock``.

Each machine runs what the agent runs (see :mod:`agent.runner`): a real :class:`~gossip.swim.Swim`
core driven by a :class:`~gossip.node.GossipNode` on the in-memory network, an
:class:`~agent.cluster.store.ObjectStore` replicated by an
:class:`~agent.cluster.replication.ObjectReplicator`, a :class:`~agent.health.runner.HealthRunner` and
an :class:`~agent.announce.driver.Announcer`. Only the check's probe is scripted: each machine has a
:class:`Service` that is up, down (refused at once) or hanging (the
check times out), or that follows a pattern of results. One VIP, created on m1 and replicated, lists
the three machines, with a check every ``INTERVAL`` seconds, ``RISE``/``FALL`` thresholds and a
holdoff. Every scenario is read two ways: each machine's own decisions (every plan is recorded, with
its input), and what the other machines receive over gossip (``announce`` and ``health`` values).

Timing bounds (all times on the Trio clock, which MockClock makes exact):

* A check result is taken at the end of its run: at the slot for "down" or "up", at the slot +
  ``TIMEOUT`` for "hang". Slots are ``INTERVAL`` apart, the first one jittered within ``[0, INTERVAL)``
  of the check reaching the machine. So a verdict turns unhealthy at the end of the ``FALL``-th failing
  run, at most ``FALL * INTERVAL`` (+ ``TIMEOUT`` when hanging) after the service failed, and healthy
  at the end of the ``RISE``-th passing run, at most ``RISE * INTERVAL`` after it recovered.
* The machine's own decision changes at that same instant: a verdict change wakes its announcer, and
  nothing sleeps in between. So does a peer's reaction to a ``health`` value arriving.
* ``GOSSIP_DELAY``: a node-local value (``health``, ``announce``) set at ``t`` is in both other
  machines' views by ``t + gossip_interval + LATENCY``: set_kv queues it, the next gossip round (every
  ``gossip_interval``) sends it to ``gossip_nodes`` = 3 >= 2 live peers, memnet delivers it after
  ``LATENCY``, and nothing is lost. The runner publishes ``health`` without waiting, since its last
  publish was one result, ``INTERVAL`` >= ``PUBLISH_INTERVAL``, ago.
* A hold travels as the seconds it has left when published; read back on another machine, it ends
  within ``GOSSIP_DELAY`` after the holder's own ``held_until``.
* ``EXPIRY_SLACK``: a hold ends on time, not on an event, so it is acted on at the announcer's next
  periodic plan: at most ``PLAN_INTERVAL`` after ``held_until``.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import msgpack
import pytest
import trio
import trio.testing

from agent.announce.driver import PLAN_INTERVAL, Announcer
from agent.announce.planner import (
    DEFAULT_STALE_FACTOR,
    Decision,
    PeerView,
    PlanInput,
    Reason,
    from_wire,
    healthy_peers,
)
from agent.cluster.objects import HealthCheck, Kind
from agent.cluster.replication import ObjectReplicator, wall_ms
from agent.cluster.storage import SqliteObjectStorage
from agent.cluster.store import ObjectStore, Record
from agent.health.execpolicy import ExecPolicy
from agent.health.probes import CheckResult
from agent.health.runner import PUBLISH_INTERVAL, HealthRunner
from agent.published import ANNOUNCE_KEY, HEALTH, HEALTH_KEY
from common.address import Address
from gossip.config import GossipConfig
from gossip.events import EventKind, MemberState
from gossip.keyring import Keyring
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode
from gossip.swim import Swim
from labs.kit.wait import eventually
from tests.conftest import watchdog
from tests.swimkit import make_sealer, node_addr

NAMES = ("m1", "m2", "m3")
VIP = "web"
KEY = f"vip/{VIP}"
INTERVAL = 2.0
TIMEOUT = 0.5
RISE = 2
FALL = 3
HOLDOFF = 30.0
STALE_AFTER = DEFAULT_STALE_FACTOR * INTERVAL
LATENCY = 0.001
GOSSIP = GossipConfig(probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.02, push_pull_interval=5.0)
GOSSIP_DELAY = GOSSIP.gossip_interval + LATENCY
EXPIRY_SLACK = PLAN_INTERVAL
EXACT = 1e-9  # "the same instant", allowing for float rounding

assert GOSSIP.gossip_nodes >= len(NAMES) - 1 and INTERVAL >= PUBLISH_INTERVAL  # the bounds above


def same(t: float) -> object:
    return pytest.approx(t, abs=EXACT)


# --- the machines ---------------------------------------------------------------------------------

Mode = Literal["up", "down", "hang"]


@dataclass(frozen=True, slots=True)
class Run:
    start: float
    end: float
    ok: bool


class Service:
    """What one machine's check finds: ``mode``, or while ``pattern`` is set, its results in turn."""

    def __init__(self) -> None:
        self.mode: Mode = "up"
        self.pattern: tuple[bool, ...] = ()
        self._next = 0
        self.runs: list[Run] = []

    def flap(self, pattern: tuple[bool, ...]) -> None:
        self.pattern, self._next = pattern, 0

    async def probe(self, check: HealthCheck) -> CheckResult:
        start = trio.current_time()
        if self.pattern:
            ok = self.pattern[self._next % len(self.pattern)]
            self._next += 1
            result = CheckResult(ok=ok, latency=0.0, error=None if ok else "refused")
        elif self.mode == "hang":
            await trio.sleep(check.timeout)
            result = CheckResult(ok=False, latency=check.timeout, error="timed out")
        else:
            ok = self.mode == "up"
            result = CheckResult(ok=ok, latency=0.0, error=None if ok else "refused")
        self.runs.append(Run(start, trio.current_time(), result.ok))
        return result


@dataclass(frozen=True, slots=True)
class Step:
    at: float
    input: PlanInput
    decision: Decision


class RecordingAnnouncer(Announcer):
    """The real announcer, recording every plan of the VIP (with its input) and every change of reason."""

    def __init__(self, store: ObjectStore, node: GossipNode, machine: str, health: HealthRunner) -> None:
        super().__init__(store, node, machine, health)
        self.steps: list[Step] = []
        self.changes: list[Step] = []
        self._input: PlanInput | None = None

    def build_input(self, now: float) -> PlanInput:
        self._input = super().build_input(now)
        return self._input

    async def step(self) -> None:
        await super().step()
        decision = self.decisions.get(KEY)
        if decision is None or self._input is None:
            return
        step = Step(trio.current_time(), self._input, decision)
        self.steps.append(step)
        if not self.changes or self.changes[-1].decision.reason is not decision.reason:
            self.changes.append(step)


@dataclass(frozen=True, slots=True)
class Seen:
    at: float
    value: str  # a Reason's value for ``announce``, a health state for ``health``


@dataclass
class Machine:
    name: str
    addr: Address
    node: GossipNode
    store: ObjectStore
    health: HealthRunner
    announcer: RecordingAnnouncer
    service: Service
    verdicts: list[Seen] = field(default_factory=list)  # this machine's verdict, each change
    records: list[tuple[float, Record]] = field(default_factory=list)  # store changes, as they arrived
    # What arrived over gossip from each peer, each change: its announcement and its verdict.
    announced: dict[str, list[Seen]] = field(default_factory=dict)
    healths: dict[str, list[Seen]] = field(default_factory=dict)

    @property
    def decision(self) -> Decision:
        return self.announcer.decisions[KEY]

    def changes(self, since: float = -math.inf) -> list[Step]:
        return [s for s in self.announcer.changes if s.at >= since]

    def seen(self, peer: str, since: float = -math.inf) -> list[Seen]:
        return [s for s in self.announced.get(peer, []) if s.at >= since]

    def runs(self, since: float) -> list[Run]:
        return [r for r in self.service.runs if r.start >= since]


def _record(log: list[Seen], value: str) -> None:
    if not log or log[-1].value != value:
        log.append(Seen(trio.current_time(), value))


async def _watch_gossip(machine: Machine) -> None:
    """Log each change of a peer's ``announce`` (the VIP's reason) and ``health`` (its state) values as
    they arrive here."""
    async with machine.node.subscribe() as events:
        async for event in events:
            if event.kind is not EventKind.KV or event.name == machine.name:
                continue
            member = next(m for m in machine.node.members() if m.name == event.name)
            _version, value = member.kv.get(event.key or "", (0, None))
            if value is None:
                continue
            if event.key == ANNOUNCE_KEY:
                decision = from_wire(msgpack.unpackb(value), trio.current_time()).get(KEY)
                if decision is not None:
                    _record(machine.announced.setdefault(event.name, []), decision.reason.value)
            elif event.key == HEALTH_KEY:
                verdict = HEALTH.parse(value).get(KEY)
                if verdict is not None:
                    _record(machine.healths.setdefault(event.name, []), verdict.state)


class Cluster:
    """Three machines on one in-memory network, and what the scenarios need to script and read them."""

    def __init__(self, net: MemoryNetwork, machines: dict[str, Machine]) -> None:
        self.net = net
        self.machines = machines

    def __getitem__(self, name: str) -> Machine:
        return self.machines[name]

    def __iter__(self) -> Iterator[Machine]:
        return iter(self.machines.values())

    def everyone_sees(self, reason: Reason, names: tuple[str, ...] = NAMES) -> bool:
        """Each of ``names`` decided ``reason``, and every other machine has received it."""
        for m in self:
            if KEY not in m.announcer.decisions:
                return False
            for name in names:
                log = [Seen(0.0, m.decision.reason.value)] if name == m.name else m.seen(name)
                if not log or log[-1].value != reason.value:
                    return False
        return True

    async def create_vip(self, holdoff: float = HOLDOFF) -> None:
        """Create the VIP on m1 and wait until every machine announces it and everyone knows."""
        check = {
            "type": "tcp",
            "target": ":80",
            "interval": INTERVAL,
            "timeout": TIMEOUT,
            "healthy_threshold": RISE,
            "unhealthy_threshold": FALL,
        }
        body = {
            "name": VIP,
            "address": "100.96.0.1",
            "machines": list(NAMES),
            "health_check": check,
            "holdoff": holdoff,
        }
        self["m1"].store.create(Kind.VIP, body, wall_ms())
        await eventually(
            lambda: self.everyone_sees(Reason.HEALTHY), what="every machine healthy", timeout=30.0, poll=0.01
        )

    def quiet_time(self, after: float) -> float:
        """The first time from ``after`` on that is at least 0.1 s from every check slot, so that what a
        scenario flips then is unambiguously before or after each run."""
        t = after
        while any(abs(t - self.next_slot(m.name, t - 0.1)) < 0.1 for m in self):
            t += 0.05
        return t

    def next_slot(self, name: str, after: float) -> float:
        """The first slot of ``name``'s check at or after ``after`` (slots are INTERVAL apart)."""
        last = self[name].service.runs[-1].start
        return last + max(0, math.ceil((after - last) / INTERVAL)) * INTERVAL

    def set_mode(self, mode: Mode, *names: str) -> None:
        for name in names:
            self[name].service.mode = mode

    def announced_by(self, observer: str) -> list[str]:
        return self[observer].announcer.announced_by(Kind.VIP, VIP)


@asynccontextmanager
async def cluster(tmp_path: Path, config: GossipConfig = GOSSIP) -> AsyncIterator[Cluster]:
    net = MemoryNetwork(random.Random(1), default_latency=LATENCY)
    keyring = Keyring([b"\x07" * 32])
    machines: dict[str, Machine] = {}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        await nursery.start(net.run)
        for i, name in enumerate(NAMES):
            cores: list[Swim] = []

            def known(cores: list[Swim] = cores) -> set[str]:
                return {m.name for m in cores[0].members()} if cores else set()

            store = ObjectStore(name, known)
            replicator = ObjectReplicator(store)
            addr = node_addr(i + 1)
            sealer = make_sealer(keyring, name)
            core = Swim(config, name, addr, sealer, random.Random(i), trio.current_time(), shared=replicator)
            cores.append(core)
            node = GossipNode(core, net.endpoint(addr))
            service = Service()
            health = HealthRunner(
                store,
                ExecPolicy(),
                name,
                node.set_kv,
                rng=random.Random(100 + i),
                probe=service.probe,
                wall_clock=trio.current_time,
            )
            announcer = RecordingAnnouncer(store, node, name, health)
            machine = Machine(name, addr, node, store, health, announcer, service)

            def on_verdict(machine: Machine = machine) -> None:
                state = machine.health.states.get(KEY)
                if state is not None:
                    _record(machine.verdicts, state.state)

            def on_record(record: Record, machine: Machine = machine) -> None:
                machine.records.append((trio.current_time(), record))

            # Registered before the runner and announcer start, so these see each change first.
            health.on_change(on_verdict)
            store.on_change(on_record)
            await nursery.start(node.run)
            nursery.start_soon(replicator.run, SqliteObjectStorage(tmp_path / f"{name}.db"), node)
            nursery.start_soon(_watch_gossip, machine)
            await nursery.start(health.run)
            await nursery.start(announcer.run)
            machines[name] = machine
        for name in NAMES[1:]:
            assert await machines[name].node.join([machines[NAMES[0]].addr], attempts=5, retry_interval=0.2)
        yield Cluster(net, machines)
        nursery.cancel_scope.cancel()


# --- reading the results --------------------------------------------------------------------------


def crossing(runs: list[Run], ok: bool, count: int) -> Run:
    """The run at which ``count`` consecutive results equal to ``ok``, the first of ``runs``, make a
    threshold: checks that the runs are there, agree, and lie on the INTERVAL grid."""
    assert len(runs) >= count, runs
    streak = runs[:count]
    assert all(r.ok is ok for r in streak), streak
    for a, b in itertools.pairwise(streak):
        assert b.start - a.start == pytest.approx(INTERVAL, abs=EXACT)
    return streak[-1]


def reasons(steps: list[Step]) -> list[Reason]:
    return [s.decision.reason for s in steps]


def counted(step: Step) -> tuple[str, ...]:
    """The peers that counted as somewhere to go in ``step``'s plan."""
    spec = next(s for s in step.input.objects if s.key == KEY)
    return healthy_peers(spec, step.input)


def would_count(step: Step, peer: str, change: Callable[[PeerView], PeerView]) -> tuple[str, ...]:
    """The peers that would have counted in ``step``'s plan had ``peer`` looked like ``change`` makes it
    look: shows that one condition alone kept it out."""
    peers = {**step.input.peers, peer: change(step.input.peers[peer])}
    return counted(replace(step, input=replace(step.input, peers=peers)))


# --- the scenarios --------------------------------------------------------------------------------


async def test_checks_start_jittered_then_turn_healthy_after_exactly_rise_passes(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with cluster(tmp_path) as c:
        await c.create_vip()
        for m in c:
            arrived = next(t for t, r in m.records if r.kind is Kind.VIP)  # on m1: created there
            first = m.service.runs[0]
            assert 0.0 <= first.start - arrived < INTERVAL  # the jitter
            healthy = crossing(m.service.runs, True, RISE)
            assert [(v.at, v.value) for v in m.verdicts] == [
                (same(arrived), "unknown"),
                (same(healthy.end), "healthy"),
            ]
            assert [(s.at, s.decision.reason) for s in m.changes()] == [
                (same(arrived), Reason.WITHDRAWN_UNKNOWN),
                (same(healthy.end), Reason.HEALTHY),
            ]
            for observer in c:
                if observer is not m:
                    [*_, last] = observer.seen(m.name)
                    assert last.value == Reason.HEALTHY.value
                    assert healthy.end + LATENCY <= last.at <= healthy.end + GOSSIP_DELAY
        assert [c.announced_by(o) for o in NAMES] == [list(NAMES)] * 3


@pytest.mark.parametrize(
    ("holdoff", "mode", "reason"),
    [
        (0.0, "down", Reason.WITHDRAWN_UNHEALTHY),
        (HOLDOFF, "down", Reason.WITHDRAWN_PEER_HEALTHY),
        (HOLDOFF, "hang", Reason.WITHDRAWN_PEER_HEALTHY),
    ],
)
async def test_one_fails_while_the_others_are_healthy_it_withdraws_within_the_threshold(
    clock: trio.testing.MockClock, tmp_path: Path, holdoff: float, mode: Mode, reason: Reason
) -> None:
    async with cluster(tmp_path) as c:
        await c.create_vip(holdoff)
        failed = c.quiet_time(trio.current_time())
        await trio.sleep_until(failed)
        c.set_mode(mode, "m1")
        await trio.sleep(FALL * INTERVAL + TIMEOUT + 1.0)

        last = crossing(c["m1"].runs(failed), False, FALL)
        run_time = TIMEOUT if mode == "hang" else 0.0
        assert last.end - last.start == same(run_time)
        assert (FALL - 1) * INTERVAL + run_time < last.end - failed <= FALL * INTERVAL + run_time
        last_verdict = c["m1"].verdicts[-1]
        assert (last_verdict.at, last_verdict.value) == (same(last.end), "unhealthy")
        # Withdrawn the instant the verdict turned, with both peers as somewhere to go.
        [change] = c["m1"].changes(failed)
        peers = () if reason is Reason.WITHDRAWN_UNHEALTHY else ("m2", "m3")
        assert (change.at, change.decision) == (same(last.end), Decision(False, reason, peers=peers))
        for name in ("m2", "m3"):
            assert c[name].changes(failed) == []  # they keep announcing, as healthy
            [arrived] = c[name].seen("m1", failed)
            assert arrived.value == reason.value
            assert last.end + LATENCY <= arrived.at <= last.end + GOSSIP_DELAY

        await trio.sleep(3 * INTERVAL)  # and it stays that way while the check keeps failing
        assert [len(m.changes(failed)) for m in c] == [1, 0, 0]
        assert [c.announced_by(o) for o in NAMES] == [["m2", "m3"]] * 3


async def all_fail_together(c: Cluster) -> tuple[float, dict[str, Run]]:
    """Every service fails at one moment; returns it and each machine's crossing run, once all crossed."""
    failed = c.quiet_time(trio.current_time())
    await trio.sleep_until(failed)
    c.set_mode("down", *NAMES)
    await trio.sleep(FALL * INTERVAL + 0.1)
    return failed, {m.name: crossing(m.runs(failed), False, FALL) for m in c}


def assert_held_from_crossing(c: Cluster, failed: float, crossed: dict[str, Run]) -> None:
    """Each machine held the VIP at the instant its check crossed, until crossing + holdoff, and every
    other machine saw the hold within the gossip delay, with its end converted to their clock."""
    for m in c:
        at = crossed[m.name].end
        held = m.changes(failed)[0]
        assert (held.at, held.decision) == (same(at), Decision(True, Reason.HELD, held_until=at + HOLDOFF))
        # Not counted at that instant: the others' latest results fail, or they are unhealthy too.
        assert counted(held) == ()
        for observer in c:
            if observer is not m:
                seen = observer.seen(m.name, failed)[0]
                assert seen.value == Reason.HELD.value
                assert at + LATENCY <= seen.at <= at + GOSSIP_DELAY


async def test_all_fail_together_all_hold_then_withdraw_when_the_holdoff_runs_out(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with cluster(tmp_path) as c:
        await c.create_vip()
        failed, crossed = await all_fail_together(c)
        assert max(r.end for r in crossed.values()) - failed <= FALL * INTERVAL
        assert_held_from_crossing(c, failed, crossed)
        first_expiry = min(r.end for r in crossed.values()) + HOLDOFF
        await trio.sleep_until(first_expiry - 0.01)
        # Still announced by all three, as each machine plans and as everyone reads gossip.
        assert all(m.decision.reason is Reason.HELD for m in c)
        assert [c.announced_by(o) for o in NAMES] == [list(NAMES)] * 3
        for observer in c:
            for m in c:
                if m is not observer:
                    decision = observer.announcer.announcements()[m.name][KEY]
                    ends = crossed[m.name].end + HOLDOFF
                    assert decision.held_until is not None
                    assert ends <= decision.held_until <= ends + GOSSIP_DELAY

        last_expiry = max(r.end for r in crossed.values()) + HOLDOFF
        await trio.sleep_until(last_expiry + EXPIRY_SLACK + GOSSIP_DELAY + 0.01)
        for m in c:
            ends = crossed[m.name].end + HOLDOFF
            held, expired = m.changes(failed)
            assert expired.decision == Decision(False, Reason.WITHDRAWN_HOLDOFF_EXPIRED)
            assert ends <= expired.at <= ends + EXPIRY_SLACK  # not earlier, at most one plan later
            after = m.announcer.steps[next(i for i, s in enumerate(m.announcer.steps) if s is held) :]
            assert all(s.decision.reason is Reason.HELD for s in after if s.at < ends)
            for observer in c:
                if observer is not m:
                    [_, seen] = observer.seen(m.name, failed)
                    assert seen.value == Reason.WITHDRAWN_HOLDOFF_EXPIRED.value
                    assert expired.at + LATENCY <= seen.at <= expired.at + GOSSIP_DELAY
        assert [c.announced_by(o) for o in NAMES] == [[]] * 3


async def test_all_fail_one_recovers_at_10s_the_others_withdraw_as_its_verdict_arrives(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with cluster(tmp_path) as c:
        await c.create_vip()
        failed, crossed = await all_fail_together(c)
        assert_held_from_crossing(c, failed, crossed)
        await trio.sleep_until(failed + 10.0)
        assert all(m.decision.reason is Reason.HELD for m in c)
        c.set_mode("up", "m2")
        await trio.sleep(RISE * INTERVAL + 1.0)

        recovered = crossing(c["m2"].runs(failed + 10.0), True, RISE)
        assert recovered.end - (failed + 10.0) <= RISE * INTERVAL
        last_verdict = c["m2"].verdicts[-1]
        assert (last_verdict.at, last_verdict.value) == (same(recovered.end), "healthy")
        assert [(s.at, s.decision.reason) for s in c["m2"].changes(failed)] == [
            (same(crossed["m2"].end), Reason.HELD),
            (same(recovered.end), Reason.HEALTHY),
        ]
        for name in ("m1", "m3"):
            m = c[name]
            # The verdict reached it within the gossip delay, and it withdrew at that very instant.
            arrived = m.healths["m2"][-1]
            assert arrived.value == "healthy"
            assert recovered.end + LATENCY <= arrived.at <= recovered.end + GOSSIP_DELAY
            _held, withdrawn = m.changes(failed)
            assert (withdrawn.at, withdrawn.decision) == (
                same(arrived.at),
                Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("m2",)),
            )
            assert withdrawn.at - failed <= 10.0 + RISE * INTERVAL + GOSSIP_DELAY
            for observer in c:
                if observer is not m:
                    seen = observer.seen(name, failed)[-1]
                    assert seen.value == Reason.WITHDRAWN_PEER_HEALTHY.value
                    assert withdrawn.at + LATENCY <= seen.at <= withdrawn.at + GOSSIP_DELAY

        # Final for this unhealthy spell: nothing changes after, not even when the holds would have ended.
        await trio.sleep_until(max(r.end for r in crossed.values()) + HOLDOFF + 2 * EXPIRY_SLACK)
        assert [len(m.changes(failed)) for m in c] == [2, 2, 2]
        assert [c.announced_by(o) for o in NAMES] == [["m2"]] * 3


@pytest.mark.parametrize(
    ("fault", "suspicion_mult", "state"),
    [("partition", 30, MemberState.SUSPECT), ("kill", 1, MemberState.DEAD)],
)
async def test_a_failing_machine_does_not_count_a_healthy_peer_that_may_be_down(
    clock: trio.testing.MockClock,
    tmp_path: Path,
    fault: Literal["partition", "kill"],
    suspicion_mult: int,
    state: MemberState,
) -> None:
    """m1 and m2 fail while m3, healthy, is cut off (still suspect) or stopped (already dead): its last
    verdict is healthy, passed after their failures began and is fresh, so only its member state keeps
    it from counting. The choreography, from m3's slot ``s3`` (the pass that must count but for that):
    m1 and m2 fail at ``s3 - 2.8``, so their first failing runs fall in ``[s3 - 2.8, s3 - 0.8)``,
    ``confirm_delay`` (0.5 s) and more before the pass; they cross ``(FALL - 1) * INTERVAL`` = 4 s later,
    in ``[s3 + 1.2, s3 + 3.2)``, before the pass goes stale at ``s3 + 6``. m3 is cut off at
    ``s3 + 0.05``, after its pass reached them; SWIM suspects it within 0.8 s (it is probed within 3
    probe intervals, and suspected at the end of that probe's interval), then declares it dead after
    ``suspicion_mult x probe_interval``: 6 s (still suspect at the crossings) or 0.2 s (dead by them)."""
    config = replace(GOSSIP, suspicion_mult=suspicion_mult)
    async with cluster(tmp_path, config) as c:
        await c.create_vip()
        s3 = c.next_slot("m3", trio.current_time() + 3.0)
        failed = s3 - 2.8
        await trio.sleep_until(failed)
        c.set_mode("down", "m1", "m2")
        await trio.sleep_until(s3 + 0.05)
        if fault == "partition":
            c.net.partition([{c["m1"].addr, c["m2"].addr}, {c["m3"].addr}])
        else:
            c.net.kill(c["m3"].addr)
        await trio.sleep_until(failed + FALL * INTERVAL + 0.1)

        for name in ("m1", "m2"):
            m = c[name]
            last = crossing(m.runs(failed), False, FALL)
            held = m.changes(failed)[0]
            assert (held.at, held.decision) == (
                same(last.end),
                Decision(True, Reason.HELD, held_until=last.end + HOLDOFF),
            )
            # m3 looked healthy, passing, fresh and confirmed: only its member state kept it out.
            view = held.input.peers["m3"]
            assert view.member is state
            assert held.at - view.verdicts[KEY].received_at <= STALE_AFTER
            assert counted(held) == ()
            assert would_count(held, "m3", lambda v: replace(v, member=MemberState.ALIVE)) == ("m3",)

        # It never counts, whatever SWIM says of it later: both hold to the end of the holdoff.
        await trio.sleep_until(failed + FALL * INTERVAL + HOLDOFF + EXPIRY_SLACK + 0.1)
        for name in ("m1", "m2"):
            m = c[name]
            ends = m.changes(failed)[0].decision.held_until
            assert ends is not None
            assert reasons(m.changes(failed)) == [Reason.HELD, Reason.WITHDRAWN_HOLDOFF_EXPIRED]
            assert ends <= m.changes(failed)[1].at <= ends + EXPIRY_SLACK
            assert any(s.input.peers["m3"].member is MemberState.DEAD for s in m.announcer.steps)
        assert c["m3"].decision.reason is Reason.HEALTHY  # its own check never failed


@pytest.mark.parametrize(
    "pattern",
    [(False, True), (False, False, True), (True, False, False, True, True, False)],
    ids=["fail-pass", "fail-fail-pass", "mixed"],
)
async def test_a_check_flapping_faster_than_the_thresholds_never_changes_the_announcement(
    clock: trio.testing.MockClock, tmp_path: Path, pattern: tuple[bool, ...]
) -> None:
    async with cluster(tmp_path) as c:
        await c.create_vip()
        start = c.quiet_time(trio.current_time())
        await trio.sleep_until(start)
        c["m1"].service.flap(pattern)
        await trio.sleep(12 * INTERVAL)
        runs = c["m1"].runs(start)
        assert len(runs) >= 12 and {r.ok for r in runs} == {True, False}
        assert [v.at for v in c["m1"].verdicts if v.at >= start] == []
        transitions = [len(m.changes(start)) for m in c]
        seen = [len(o.seen(m.name, start)) for o in c for m in c if m is not o]
        assert transitions == [0, 0, 0]
        assert seen == [0] * 6
        assert [c.announced_by(o) for o in NAMES] == [list(NAMES)] * 3


async def test_a_check_flapping_at_the_thresholds_changes_the_announcement_no_faster_than_they_allow(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """FALL failures then RISE passes, over and over: each is just enough to turn the verdict, so the
    announcement turns with it (withdrawn, the other two being healthy; then announced again), and no
    more often: every withdrawal lasts RISE intervals and every announcement FALL intervals."""
    async with cluster(tmp_path) as c:
        await c.create_vip()
        start = c.quiet_time(trio.current_time())
        await trio.sleep_until(start)
        cycles = 3
        c["m1"].service.flap((False,) * FALL + (True,) * RISE)
        await trio.sleep(cycles * (FALL + RISE) * INTERVAL + 1.0)
        changes = c["m1"].changes(start)
        assert reasons(changes) == [Reason.WITHDRAWN_PEER_HEALTHY, Reason.HEALTHY] * cycles
        verdicts = [(v.at, v.value) for v in c["m1"].verdicts if v.at >= start]
        assert [(s.at, s.decision.reason) for s in changes] == [
            (same(at), Reason.WITHDRAWN_PEER_HEALTHY if value == "unhealthy" else Reason.HEALTHY)
            for at, value in verdicts
        ]
        gaps = [b.at - a.at for a, b in itertools.pairwise(changes)]
        assert gaps == [same(RISE * INTERVAL if i % 2 == 0 else FALL * INTERVAL) for i in range(len(gaps))]
        for observer in ("m2", "m3"):
            assert len(c[observer].seen("m1", start)) == len(changes)
            assert c[observer].changes(start) == []


async def test_a_disabled_machine_withdraws_and_does_not_count_as_a_healthy_peer(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with cluster(tmp_path) as c:
        await c.create_vip()
        since = trio.current_time()
        c["m1"].store.patch(Kind.MACHINE, "m3", {"enabled": False}, wall_ms())
        await eventually(
            lambda: all(any(r.kind is Kind.MACHINE and r.name == "m3" for _t, r in m.records) for m in c),
            what="m3's machine record on every machine",
            timeout=10.0,
            poll=0.01,
        )
        await trio.sleep(1.0)
        # m3 withdraws the instant the setting reaches it (over gossip, from m1), and everyone sees it.
        arrived = next(t for t, r in c["m3"].records if r.kind is Kind.MACHINE)
        [disabled] = c["m3"].changes(since)
        assert (disabled.at, disabled.decision) == (
            same(arrived),
            Decision(False, Reason.WITHDRAWN_MACHINE_DISABLED),
        )
        for name in ("m1", "m2"):
            seen = c[name].seen("m3", since)[-1]
            assert seen.value == Reason.WITHDRAWN_MACHINE_DISABLED.value
            assert arrived + LATENCY <= seen.at <= arrived + GOSSIP_DELAY
        assert [c.announced_by(o) for o in NAMES] == [["m1", "m2"]] * 3

        # m1 and m2 fail together: m3's check still passes, but a disabled machine is nowhere to go.
        failed = c.quiet_time(trio.current_time())
        await trio.sleep_until(failed)
        c.set_mode("down", "m1", "m2")
        await trio.sleep(FALL * INTERVAL + HOLDOFF + EXPIRY_SLACK + 0.1)
        for name in ("m1", "m2"):
            m = c[name]
            last = crossing(m.runs(failed), False, FALL)
            held, expired = m.changes(failed)
            assert (held.at, held.decision) == (
                same(last.end),
                Decision(True, Reason.HELD, held_until=last.end + HOLDOFF),
            )
            assert held.input.peers["m3"].enabled is False
            assert counted(held) == ()
            assert would_count(held, "m3", lambda v: replace(v, enabled=True)) == ("m3",)
            assert expired.decision.reason is Reason.WITHDRAWN_HOLDOFF_EXPIRED
            assert last.end + HOLDOFF <= expired.at <= last.end + HOLDOFF + EXPIRY_SLACK
            # From the moment the setting reached it, m3 never counted, held or not.
            known = next(t for t, r in m.records if r.kind is Kind.MACHINE)
            assert all("m3" not in counted(s) for s in m.announcer.steps if s.at >= known)
        assert c["m3"].verdicts[-1].value == "healthy"
        assert all(r.ok for r in c["m3"].runs(failed))
        assert c["m3"].changes(failed) == []
