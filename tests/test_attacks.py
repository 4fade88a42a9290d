"""The attack suite, bounded: what was once tried against running agents by hand, kept so a regression
fails CI. Every case is quick (hypothesis with few examples, loopback sockets, simulated clusters).

Cases covered elsewhere, not repeated here, and marked ``attack`` where they are:

- slow connections (300 silent or trickling) while members' push-pulls are answered, strangers' large
  frames, stalled frames within the byte budget, fuzzed frames against the real transport:
  ``tests/test_transport_guards.py``;
- kill -9 during acknowledged writes: ``tests/test_durable_writes.py``;
- partitions with concurrent creates and edits converging, the conflict seen on every node that saw
  both versions, a refused far-future item pulled once: ``tests/test_objects_replication_sim.py``.

All of them: ``pytest -m attack`` (``make attacks``).
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.cluster.hlc import MAX_AHEAD_MS, MAX_COUNTER, MAX_WALL_MS, Timestamp, Version
from agent.cluster.objects import Kind
from agent.cluster.replication import ObjectReplicator, item_key
from agent.cluster.store import ObjectStore, Record, encode_all, encode_record
from gossip.config import LOCAL, StreamLimits
from gossip.keyring import Keyring, Sealer
from gossip.names import is_member_name
from gossip.node import GossipNode
from gossip.swim import Swim
from gossip.transport import Standing, open_udp_tcp_transport
from gossip.wire import Alive, AppUpdate, Dead, Message, PushPull, Suspect, decode_frame, encode_frame
from tests.swimkit import CLUSTER, QUIET, lone, make_sealer, node_addr, seal, wire_messages
from tests.test_objects_replication_sim import cluster, now_ms, spread, store, vip
from tests.test_transport_guards import MEMBER_HOST, _connect_from, _stranger_host, _wait_until_idle

pytestmark = pytest.mark.attack

KEY = Keyring([bytes(range(32))])
WRONG_KEY = Keyring([bytes(32)])
WALL_MS = 1_800_000_000_000  # the victim's wall clock, fixed

# Datagrams a member would really send; the fuzz truncates and flips them.
_GENUINE = [
    seal([Alive("intruder", 0, node_addr(9), b"")], KEY),
    seal([Suspect("b", 0, "intruder"), Dead("c", 0, "intruder")], KEY),
    seal([Alive("intruder", 7, node_addr(9), b"m" * 200), Alive("b", 9, node_addr(9), b"")], KEY),
]


def _truncated(data: bytes, cut: int) -> bytes:
    return data[: cut % len(data)]


def _flipped(data: bytes, where: int, mask: int) -> bytes:
    i = where % len(data)
    return data[:i] + bytes([data[i] ^ mask]) + data[i + 1 :]


_JUNK = st.one_of(
    st.binary(max_size=1500),
    st.builds(_truncated, st.sampled_from(_GENUINE), st.integers(0, 2000)),
    st.builds(_flipped, st.sampled_from(_GENUINE), st.integers(0, 2000), st.integers(1, 255)),
    st.lists(wire_messages(), min_size=1, max_size=3).map(lambda ms: seal(ms, WRONG_KEY)),
    st.lists(wire_messages(), min_size=1, max_size=3).map(lambda ms: seal(ms, None)),  # plaintext
    st.lists(wire_messages(), min_size=1, max_size=3).map(lambda ms: seal(ms, KEY, cluster="other")),
)


def _victim() -> Swim:
    a = lone(["b", "c"], keyring=KEY)
    a.take_events()
    a.take_datagrams()
    return a


def _refused(a: Swim) -> int:
    return a.stats.auth_failures + a.stats.decode_failures + a.stats.invalid_names


def _view(a: Swim) -> list[tuple[str, str, int]]:
    return sorted((m.name, str(m.state), m.incarnation) for m in a.members())


# --- datagrams from whoever can reach the port -----------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_JUNK, min_size=1, max_size=20))
def test_junk_datagrams_are_counted_and_change_nothing(datagrams: list[bytes]) -> None:
    a = _victim()
    before = _view(a)
    for i, data in enumerate(datagrams, start=1):
        a.receive_datagram(node_addr(9), data, 100.0)  # raises nothing
        assert _refused(a) == i  # each one refused, and counted once
    assert _view(a) == before  # no member added, none accused
    assert a.take_events() == [] and a.take_datagrams() == []  # nothing answered


# --- datagrams sealed with the real key, with crafted content ------------------------------------------

_ANY_NAME = st.text(max_size=12) | st.sampled_from(["😀/..", "..", "a b", "rtl\u202eexe", "n" * 200])
_KINDS = st.sampled_from(list(Kind))


def _record(kind: Kind, name: str, wall_ms: int, counter: int, origin: str, tomb: bool) -> Record:
    body = None if tomb else {"name": name, "address": "100.96.0.1", "machines": [origin]}
    return Record(kind, name, Version(Timestamp(wall_ms, counter), origin), body, wall_ms if tomb else None)


# Mostly timestamps far ahead of the victim's clock, some near it.
_STAMPS = st.integers(WALL_MS + MAX_AHEAD_MS + 1, MAX_WALL_MS) | st.integers(WALL_MS - 5_000, WALL_MS + 5_000)
_RECORDS = st.builds(
    _record,
    st.sampled_from([Kind.VIP, Kind.ROUTE, Kind.POLICY_SET]),
    st.sampled_from(["web", "api"]),
    _STAMPS,
    st.integers(0, MAX_COUNTER),
    st.sampled_from(["b", "c", "evil"]),
    st.booleans(),
)


def _app_messages() -> st.SearchStrategy[Message]:
    def update(record: Record, rekey: bool, garbage: bytes | None) -> Message:
        key = "vip/other" if rekey else item_key(record.kind, record.name)
        return AppUpdate(key, garbage if garbage is not None else encode_record(record))

    return st.builds(update, _RECORDS, st.booleans(), st.none() | st.binary(max_size=40))


def _objects_victim() -> tuple[Swim, ObjectStore]:
    objects = ObjectStore("a", lambda: {"a", "b", "c"})
    replicator = ObjectReplicator(objects, clock_ms=lambda: WALL_MS)
    a = Swim(QUIET, "a", node_addr(1), make_sealer(KEY, "a"), random.Random(0), 100.0, shared=replicator)
    return a, objects


def _assert_clock_bounded(objects: ObjectStore) -> None:
    bound = Timestamp(WALL_MS + MAX_AHEAD_MS + 1, 0)
    assert objects.clock.last < bound
    assert all(r.version.ts < bound for r in objects.records())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(wire_messages(names=_ANY_NAME) | _app_messages(), min_size=1, max_size=4)
        | st.lists(_RECORDS, max_size=4).map(lambda rs: [PushPull("b", False, (), encode_all(rs))]),
        min_size=1,
        max_size=8,
    )
)
def test_crafted_sealed_traffic_cannot_plant_bad_names_or_drag_the_clock(
    datagrams: list[list[Message]],
) -> None:
    """What a holder of the key can still send: it may add members with lawful names (SWIM trusts the
    key), but no name outside the rule, no object stamped beyond the skew bound, and no crash."""
    a, objects = _objects_victim()
    sealer = Sealer(KEY, CLUSTER)
    for messages in datagrams:
        if isinstance(messages[0], PushPull):
            a.handle_stream(node_addr(2), sealer.seal(encode_frame(messages[0])), 100.0)
        else:
            a.receive_datagram(node_addr(2), seal(messages, KEY), 100.0)
        a.tick(101.0)
        assert all(is_member_name(m.name) for m in a.members())
        _assert_clock_bounded(objects)
        for _, data in a.take_datagrams():
            assert len(data) <= a.config.udp_buffer_size
        a.take_stream_requests()
    # An honest edit now still wins over whatever was refused.
    edit = objects.create(Kind.POLICY_SET, {"name": "honest"}, WALL_MS + 1_000)
    assert edit.version.ts.wall_ms <= WALL_MS + MAX_AHEAD_MS + 1


def test_far_future_records_are_refused_and_counted() -> None:
    a, objects = _objects_victim()
    far = _record(Kind.VIP, "web", MAX_WALL_MS, 0, "evil", False)
    for _ in range(20):
        a.receive_datagram(node_addr(2), seal([AppUpdate("vip/web", encode_record(far))], KEY), 100.0)
    assert objects.get_record(Kind.VIP, "web") is None
    assert objects.refused_ahead == 1  # counted once, however often it comes


# --- memory under a flood ------------------------------------------------------------------------------


def _flood(a: Swim, rng: random.Random, n: int, start: int) -> None:
    for i in range(start, start + n):
        match i % 3:
            case 0:
                data = rng.randbytes(rng.randrange(1, 1400))
            case 1:
                data = _flipped(rng.choice(_GENUINE), rng.randrange(2000), rng.randrange(1, 256))
            case _:  # a distinct far-future record each time, validly sealed
                record = _record(Kind.VIP, f"v{i}", MAX_WALL_MS - i, 0, "evil", False)
                data = seal([AppUpdate(item_key(Kind.VIP, f"v{i}"), encode_record(record))], KEY)
        a.receive_datagram(node_addr(9), data, 100.0)


def test_a_flood_of_junk_and_refusals_does_not_grow_memory_past_a_bound() -> None:
    a, objects = _objects_victim()
    rng = random.Random(7)
    tracemalloc.start()  # before the warm-up, so what it allocated and the flood frees is counted
    try:
        # 1,600 refusals: every bounded memory is full (1,024 remembered) and its table has grown to
        # the size that churn keeps it at.
        _flood(a, rng, 4_800, 0)
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        _flood(a, rng, 1_500, 4_800)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert objects.records() == [] and _view(a) == [("a", "alive", 0)]
    assert objects.refused_ahead == 2_100  # every distinct one counted
    assert grown < 16 * 1024, f"grew {grown} bytes over 1,500 more datagrams"


# --- streams: many kinds of abuse at once, and members still served -----------------------------------

# Small limits so the bounds bite within a short test: a stranger may hold at most
# (max_connections - member_reserve) x stranger_frame_max bytes of frames being received.
_LIMITS = StreamLimits(
    timeout=2.0,
    first_frame_timeout=0.5,
    max_connections=40,
    member_reserve=8,
    per_source=4,
    stranger_frame_max=8 * 1024,
    buffer_budget=1 << 20,
)
_STRANGER_BOUND = (_LIMITS.max_connections - _LIMITS.member_reserve) * _LIMITS.stranger_frame_max


async def _abuse(server: tuple[str, int], host: str, how: int, stop: trio.Event) -> None:
    """One stranger's connection: silent, trickling, oversized lengths, a partial frame, or garbage."""
    for _ in range(10):  # bounded reconnects
        if stop.is_set():
            return
        try:
            stream = await _connect_from(host, server)
        except OSError:
            await trio.sleep(0.05)
            continue
        async with stream:
            try:
                match how:
                    case 1:
                        for _ in range(20):
                            await stream.send_all(b"\x00")
                            await trio.sleep(0.1)
                    case 2:  # past any frame limit
                        await stream.send_all((0xFFFFFFFF).to_bytes(4, "big") + b"\x01" * 1000)
                    case 3:  # past a stranger's frame limit
                        size = _LIMITS.stranger_frame_max + 1
                        await stream.send_all(size.to_bytes(4, "big") + b"\x01" * 1000)
                    case 4:  # all but the last byte of the largest frame a stranger may send
                        size = _LIMITS.stranger_frame_max
                        await stream.send_all(size.to_bytes(4, "big") + b"\x02" * (size - 1))
                    case 5:  # a whole frame of garbage
                        await stream.send_all((100).to_bytes(4, "big") + b"\x03" * 100)
                with trio.move_on_after(3.0):
                    while not stop.is_set() and await stream.receive_some(1024):
                        pass
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


async def test_members_are_served_while_strangers_abuse_the_stream_port_in_every_way() -> None:
    sealer = Sealer(KEY, "attacks")
    with trio.fail_after(30):
        async with (
            open_udp_tcp_transport(MEMBER_HOST, 0, limits=_LIMITS) as ta,
            open_udp_tcp_transport(MEMBER_HOST, 0) as tb,
            trio.open_nursery() as nursery,
        ):
            a = GossipNode(Swim(LOCAL, "a", ta.local_addr, sealer, random.Random(1), trio.current_time()), ta)
            b = GossipNode(Swim(LOCAL, "b", tb.local_addr, sealer, random.Random(2), trio.current_time()), tb)
            await nursery.start(a.run)
            await nursery.start(b.run)
            assert await b.join([ta.local_addr], attempts=3, retry_interval=0.5)
            while a.standing(MEMBER_HOST) is not Standing.LIVE:
                await trio.sleep(0.01)
            stop = trio.Event()
            async with trio.open_nursery() as attackers:
                for i in range(120):
                    attackers.start_soon(_abuse, ta.local_addr, _stranger_host(i // 3), i % 6, stop)
                await trio.sleep(0.3)
                frame = sealer.seal(encode_frame(PushPull("b", False, ())))
                answered = 0
                for _ in range(10):
                    reply = await tb.request(ta.local_addr, frame, timeout=1.0)
                    if reply is not None and isinstance(decode_frame(sealer.open(reply)), PushPull):
                        answered += 1
                    await trio.sleep(0.1)
                stop.set()
            await _wait_until_idle(ta)
            stats = dict(ta.stats.as_dict())
            nursery.cancel_scope.cancel()
    assert answered == 10, f"{answered} of 10 push-pulls answered"
    assert stats["buffered_bytes_peak"] <= min(_STRANGER_BOUND, _LIMITS.buffer_budget) + 64 * 1024
    assert stats["buffered_bytes"] == 0 and stats["streams_active"] == 0
    for reason in ("capacity", "oversize", "slow"):
        assert stats[f"streams_rejected_{reason}"] > 0, reason
    assert stats["stream_errors"] > 0  # the lengths past max_frame, and the garbage


# --- partitions: an edit on one side, a delete on the other --------------------------------------------


@pytest.mark.parametrize(("delete_first", "expect"), [(True, "resurrected"), (False, "deleted_edit")])
def test_a_delete_and_an_edit_across_a_partition_converge_with_the_conflict_recorded(
    delete_first: bool, expect: str
) -> None:
    """The later of the two wins everywhere; the nodes that saw both record which kind of loss it was
    (the other partition tests cover concurrent creates and edits)."""
    sim = cluster(10, seed=5)
    spread(sim, "n0", store(sim, "n0").create(Kind.VIP, vip("web", "100.96.0.1", "n0"), now_ms(sim)))
    sim.run_until(sim.now + 12.0)  # past the conflict window: the edits below follow the create
    sim.partition([set(sim.names[:5]), set(sim.names[5:])])
    sim.run_until(sim.now + 1.0)

    def delete(name: str) -> Record:
        return spread(sim, name, store(sim, name).delete(Kind.VIP, "web", now_ms(sim)))

    def edit(name: str) -> Record:
        return spread(sim, name, store(sim, name).patch(Kind.VIP, "web", {"holdoff": 9}, now_ms(sim)))

    lost = (delete if delete_first else edit)("n1")
    sim.run_until(sim.now + 1.0)
    won = (edit if delete_first else delete)("n7")  # later: it wins
    sim.run_until(sim.now + 5.0)
    sim.heal()
    sim.run_until(sim.now + 300.0)
    reference = store(sim, "n0").records()
    assert all(store(sim, n).records() == reference for n in sim.names)  # identical everywhere
    assert store(sim, "n0").get_record(Kind.VIP, "web") == won
    seen = [n for n in sim.names if store(sim, n).conflicts(Kind.VIP, "web")]
    assert set(sim.names[:5]) <= set(seen)  # the losing side, at least
    for name in seen:
        (conflict,) = store(sim, name).conflicts(Kind.VIP, "web")
        assert (conflict.type, conflict.lost, conflict.won) == (expect, lost.version, won.version)
        assert store(sim, name).conflict_counts == {("vip", expect): 1}
