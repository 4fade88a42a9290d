"""The object store: local writes with typed errors, last-writer-wins replication, tombstones, the codec."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cluster.hlc import MAX_AHEAD_MS, Timestamp, Version
from agent.cluster.objects import Kind, MachineSettings, MeshSettings, PolicySet, Problem, Route, Vip
from agent.cluster.store import (
    CONFLICTS_PER_OBJECT,
    REFUSAL_MEMORY_MS,
    AlreadyExists,
    InUse,
    Invalid,
    NotFound,
    ObjectStore,
    RecentSet,
    Record,
    RecordDecodeError,
    decode_all,
    decode_record,
    encode_all,
    encode_record,
    merge_patch,
)

KNOWN = {"node1", "node2", "node3"}
T0 = 1_700_000_000_000


def make(node: str = "node1", known: set[str] | None = None) -> ObjectStore:
    machines = KNOWN if known is None else known
    return ObjectStore(node, lambda: machines)


def vip(name: str = "web", **fields: Any) -> dict[str, Any]:
    return {"name": name, "address": "100.96.0.1", "machines": ["node1"], **fields}


def snapshot(store: ObjectStore) -> tuple[list[Record], bytes]:
    return store.records(), store.encode_all()


# ---- local writes ------------------------------------------------------------------------------------


def test_create_get_list_and_version_stamp() -> None:
    store = make()
    record = store.create(Kind.VIP, vip(), T0)
    assert record.version == Version(Timestamp(T0, 0), "node1")
    assert record.body is not None and record.body["address"] == "100.96.0.1"
    got = store.get(Kind.VIP, "web")
    assert isinstance(got, Vip) and got.machines == ["node1"]
    store.create(Kind.VIP, Vip.model_validate(vip("api")), T0)
    assert [v.name for v in store.list(Kind.VIP)] == ["api", "web"]  # type: ignore[union-attr]
    assert store.get_record(Kind.VIP, "web") == record


def test_replace_and_patch_stamp_newer_versions() -> None:
    store = make()
    first = store.create(Kind.VIP, vip(), T0)
    second = store.replace(Kind.VIP, "web", vip(enabled=False), T0)  # same millisecond: counter moves
    assert second.version > first.version
    assert store.get(Kind.VIP, "web") == Vip.model_validate(vip(enabled=False))
    third = store.patch(
        Kind.VIP, "web", {"holdoff": 30, "health_check": {"type": "tcp", "target": ":80"}}, T0
    )
    assert third.version > second.version
    got = store.get(Kind.VIP, "web")
    assert (
        isinstance(got, Vip) and got.holdoff == 30 and got.enabled is False and got.health_check is not None
    )
    store.patch(Kind.VIP, "web", {"health_check": {"interval": 30}}, T0)  # nested objects merge
    got = store.get(Kind.VIP, "web")
    assert isinstance(got, Vip) and got.health_check is not None
    assert (got.health_check.target, got.health_check.interval) == (":80", 30)
    store.patch(Kind.VIP, "web", {"health_check": None}, T0)  # null removes
    assert store.get(Kind.VIP, "web").health_check is None  # type: ignore[union-attr]


def test_delete_leaves_a_tombstone() -> None:
    store = make()
    store.create(Kind.VIP, vip(), T0)
    record = store.delete(Kind.VIP, "web", T0 + 5)
    assert record.tombstone and record.deleted_at_ms == T0 + 5
    assert store.list(Kind.VIP) == []
    assert store.records() == [record]
    with pytest.raises(NotFound):
        store.get(Kind.VIP, "web")
    store.create(Kind.VIP, vip(), T0 + 6)  # the name is free again
    assert store.get_record(Kind.VIP, "web").version > record.version  # type: ignore[union-attr]


def test_typed_errors() -> None:
    store = make()
    store.create(Kind.VIP, vip(), T0)
    with pytest.raises(AlreadyExists, match="a vip named 'web' already exists"):
        store.create(Kind.VIP, vip(), T0)
    for call in (
        lambda: store.get(Kind.VIP, "nope"),
        lambda: store.replace(Kind.VIP, "nope", vip("nope"), T0),
        lambda: store.patch(Kind.VIP, "nope", {}, T0),
        lambda: store.delete(Kind.VIP, "nope", T0),
        lambda: store.get(Kind.MACHINE, "stranger"),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(Invalid) as info:
        store.create(Kind.VIP, vip("other", address="192.0.2.1", machines=["ghost"]), T0)
    assert [p.loc for p in info.value.problems] == [("address",), ("machines", 0)]
    with pytest.raises(Invalid) as info:
        store.create(Kind.ROUTE, {"name": "r", "prefix": "10.1.2.3/16"}, T0)
    assert info.value.problems == [Problem(("prefix",), "host bits set; did you mean 10.1.0.0/16?")]
    with pytest.raises(Invalid, match="cannot rename 'web' to 'api'"):
        store.replace(Kind.VIP, "web", vip("api"), T0)
    with pytest.raises(Invalid, match="cannot rename"):
        store.patch(Kind.VIP, "web", {"name": "api"}, T0)
    with pytest.raises(Invalid, match="expected a vip, got Route"):
        store.create(Kind.VIP, Route(name="r", prefix="10.0.0.0/8"), T0)
    with pytest.raises(Invalid, match="is an object"):
        store.create(Kind.VIP, ["not", "a", "mapping"], T0)  # type: ignore[arg-type]
    with pytest.raises(Invalid, match="patch is an object"):
        store.patch(Kind.VIP, "web", ["x"], T0)  # type: ignore[arg-type]


def test_policy_set_in_use_cannot_be_deleted() -> None:
    store = make()
    store.create(Kind.POLICY_SET, PolicySet(name="edge"), T0)
    store.patch(Kind.MACHINE, "node2", {"export_policies": ["edge"]}, T0)
    with pytest.raises(InUse) as info:
        store.delete(Kind.POLICY_SET, "edge", T0)
    assert info.value.where == ["machine node2 export_policies"]
    assert "still used by: machine node2 export_policies" in str(info.value)
    store.patch(Kind.MACHINE, "node2", {"export_policies": []}, T0)
    store.delete(Kind.POLICY_SET, "edge", T0)
    with pytest.raises(Invalid, match="unknown policy set 'edge'"):
        store.patch(Kind.MACHINE, "node2", {"import_policies": ["edge"]}, T0)


@pytest.mark.parametrize(
    "write",
    [
        lambda s: s.create(Kind.VIP, vip(address="192.0.2.1"), T0 + 9),
        lambda s: s.create(Kind.VIP, vip(), T0 + 9),
        lambda s: s.replace(Kind.VIP, "web", vip(machines=["ghost"]), T0 + 9),
        lambda s: s.patch(
            Kind.VIP, "web", {"health_check": {"type": "tcp", "target": ":1", "timeout": 99}}, T0 + 9
        ),
        lambda s: s.patch(Kind.MESH, "mesh", {"routable_cidrs": ["fd00::/8"]}, T0 + 9),
        lambda s: s.delete(Kind.POLICY_SET, "edge", T0 + 9),
        lambda s: s.delete(Kind.VIP, "nope", T0 + 9),
    ],
)
def test_a_refused_write_changes_nothing(write: Callable[[ObjectStore], object]) -> None:
    store = make()
    store.create(Kind.VIP, vip(), T0)
    store.create(Kind.POLICY_SET, PolicySet(name="edge"), T0)
    store.replace(Kind.MACHINE, "node1", MachineSettings(name="node1", import_policies=["edge"]), T0)
    seen: list[Record] = []
    store.on_change(seen.append)
    before, clock = snapshot(store), store.clock.last
    with pytest.raises((Invalid, AlreadyExists, InUse, NotFound)):
        write(store)
    assert snapshot(store) == before
    assert store.clock.last == clock
    assert seen == []


def test_mesh_and_machine_settings_exist_implicitly() -> None:
    store = make()
    assert store.get(Kind.MESH, "mesh") == MeshSettings()
    assert store.list(Kind.MESH) == [MeshSettings()]
    assert store.get(Kind.MACHINE, "node3") == MachineSettings(name="node3")
    assert [m.name for m in store.list(Kind.MACHINE)] == ["node1", "node2", "node3"]  # type: ignore[union-attr]
    store.patch(Kind.MACHINE, "node3", {"enabled": False}, T0)
    assert store.get(Kind.MACHINE, "node3") == MachineSettings(name="node3", enabled=False)
    store.patch(Kind.MESH, "mesh", {"routable_cidrs": ["100.96.0.0/16"]}, T0)
    with pytest.raises(Invalid, match="outside every routable CIDR"):
        store.create(Kind.VIP, vip(address="100.64.0.1"), T0)
    store.create(Kind.VIP, vip(address="100.96.0.9"), T0)


def test_deleting_mesh_settings_resets_them() -> None:
    store = make()
    store.patch(Kind.MESH, "mesh", {"routable_cidrs": ["100.64.0.0/10", "192.0.2.0/24"]}, T0)
    store.create(Kind.VIP, vip(address="192.0.2.7"), T0)
    with pytest.raises(Invalid, match=r"vip web \(192.0.2.7\) would be outside every routable CIDR"):
        store.delete(Kind.MESH, "mesh", T0)
    store.delete(Kind.VIP, "web", T0)
    store.delete(Kind.MESH, "mesh", T0)
    assert store.get(Kind.MESH, "mesh") == MeshSettings()


def test_listeners_see_every_change_and_can_unsubscribe() -> None:
    store, other = make(), make("node2")
    seen: list[Record] = []
    stop = store.on_change(seen.append)
    a = store.create(Kind.VIP, vip(), T0)
    b = store.delete(Kind.VIP, "web", T0)
    c = other.create(Kind.ROUTE, Route(name="r", prefix="10.0.0.0/8"), T0)
    store.merge(c, T0)
    store.merge(c, T0)  # not newer: no event
    assert seen == [a, b, c]
    stop()
    store.create(Kind.VIP, vip(), T0)
    assert len(seen) == 3


# ---- replication -------------------------------------------------------------------------------------


def test_newest_version_wins_and_merging_observes_the_clock() -> None:
    a, b = make("node1"), make("node2")
    old = a.create(Kind.VIP, vip(), T0)
    new = b.create(Kind.VIP, vip(holdoff=5), T0 + 1000)
    assert a.merge(new, T0) is True
    assert a.merge(old, T0) is False
    assert a.get(Kind.VIP, "web").holdoff == 5  # type: ignore[union-attr]
    # node1's clock is behind but its next edit still supersedes what it has seen
    edit = a.patch(Kind.VIP, "web", {"holdoff": 7}, T0 + 1)
    assert edit.version > new.version


def test_a_tombstone_wins_like_any_record_and_ties_break_on_origin() -> None:
    a, b = make("node1"), make("node2")
    a.create(Kind.VIP, vip(), T0)
    b.create(Kind.VIP, vip(holdoff=9), T0)  # same timestamp; node2 > node1
    tomb = a.delete(Kind.VIP, "web", T0)  # (T0, 1) beats (T0, 0)
    b.merge(tomb, T0)
    assert b.list(Kind.VIP) == []
    winner_a, winner_b = make("node3"), make("node3")
    ra = Record(Kind.VIP, "x", Version(Timestamp(T0, 0), "node1"), vip("x"))
    rb = Record(Kind.VIP, "x", Version(Timestamp(T0, 0), "node2"), vip("x", holdoff=1))
    winner_a.merge(ra, T0), winner_a.merge(rb, T0)
    winner_b.merge(rb, T0), winner_b.merge(ra, T0)
    assert winner_a.records() == winner_b.records() == [rb]


def test_concurrent_edits_converge_after_exchanging_state_both_ways() -> None:
    a, b = make("node1"), make("node2")
    a.create(Kind.POLICY_SET, PolicySet(name="edge"), T0)
    b.merge_all(a.encode_all(), T0)
    # partition: both sides edit
    a.create(Kind.VIP, vip(), T0 + 10)
    a.create(Kind.ROUTE, Route(name="lan", prefix="10.1.0.0/16"), T0 + 10)
    b.create(Kind.ROUTE, Route(name="lan", prefix="10.2.0.0/16"), T0 + 5)
    b.create(Kind.VIP, vip(holdoff=3), T0 + 20)
    b.delete(Kind.POLICY_SET, "edge", T0 + 30)
    a.patch(Kind.MESH, "mesh", {"routable_cidrs": ["100.64.0.0/10"]}, T0 + 40)
    assert a.digest() != b.digest()
    # heal
    b_state, a_state = b.encode_all(), a.encode_all()
    a.merge_all(b_state, T0 + 50)
    b.merge_all(a_state, T0 + 50)
    assert a.records() == b.records()
    assert a.digest() == b.digest()
    assert a.get(Kind.VIP, "web").holdoff == 3  # type: ignore[union-attr]
    assert a.get(Kind.ROUTE, "lan").prefix == "10.1.0.0/16"  # type: ignore[union-attr]
    assert a.list(Kind.POLICY_SET) == []
    assert a.get(Kind.MESH, "mesh") == MeshSettings(routable_cidrs=["100.64.0.0/10"])


def test_a_replicated_record_that_does_not_validate_here_is_stored_and_reported() -> None:
    there = make("node2", {"node1", "node2", "node9"})
    rec = there.create(Kind.VIP, vip(machines=["node9"]), T0)
    alien = Record(
        Kind.ROUTE, "future", Version(Timestamp(T0, 0), "node2"), {"name": "future", "colour": "x"}
    )
    here = make("node1")
    assert here.merge(rec, T0) and here.merge(alien, T0)
    assert here.get(Kind.VIP, "web").machines == ["node9"]  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        here.get(Kind.ROUTE, "future")
    found = here.problems()
    assert found[(Kind.VIP, "web")] == [
        Problem(("machines", 0), "unknown machine 'node9' (known: node1, node2, node3)")
    ]
    assert ("colour",) in [p.loc for p in found[(Kind.ROUTE, "future")]]
    assert alien in here.records()  # still replicated onwards


def test_restart_from_records_keeps_the_clock_ahead_of_them() -> None:
    a = make("node1")
    last = a.create(Kind.VIP, vip(), T0 + 60_000)
    restarted = ObjectStore("node1", lambda: KNOWN, a.records())
    assert restarted.records() == a.records()
    edit = restarted.patch(Kind.VIP, "web", {"holdoff": 1}, T0)  # wall clock went back a minute
    assert edit.version > last.version


def test_tombstones_expire_after_keep_ms() -> None:
    store = make()
    store.create(Kind.VIP, vip(), T0)
    store.create(Kind.VIP, vip("api"), T0)
    tomb = store.delete(Kind.VIP, "web", T0 + 1000)
    assert store.expire_tombstones(T0 + 1999, keep_ms=1000) == []
    assert store.expire_tombstones(T0 + 2000, keep_ms=1000) == [tomb]
    assert [r.name for r in store.records()] == ["api"]


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}, "f": [1]}) == {
        "a": 1,
        "b": {"d": 3, "e": 4},
        "f": [1],
    }
    assert merge_patch({"a": 1}, [1]) == [1]


# ---- merge properties (hypothesis) -------------------------------------------------------------------

names = st.sampled_from(["a", "b", "c"])
origins = st.sampled_from(["node1", "node2", "node3"])
versions = st.builds(Version, st.builds(Timestamp, st.integers(T0, T0 + 5), st.integers(0, 2)), origins)


@st.composite
def records(draw: st.DrawFn) -> Record:
    name, version = draw(names), draw(versions)
    if draw(st.booleans()):
        return Record(Kind.VIP, name, version, None, version.ts.wall_ms)
    body = vip(name, holdoff=draw(st.integers(0, 3)))
    return Record(Kind.VIP, name, version, body)


def _unique_versions(rs: list[Record]) -> list[Record]:
    """One body per (key, version): an HLC never stamps two writes of one origin alike."""
    seen: dict[tuple[str, Version], Record] = {}
    for r in rs:
        seen.setdefault((r.name, r.version), r)
    return list(seen.values())


@settings(max_examples=200)
@given(st.lists(records(), max_size=12).map(_unique_versions), st.randoms(use_true_random=False))
def test_merge_is_order_insensitive_and_idempotent(rs: list[Record], rnd: Any) -> None:
    a, b = make("node7"), make("node8")
    for r in rs:
        a.merge(r, T0)
    shuffled = list(rs) + list(rs)
    rnd.shuffle(shuffled)
    for r in shuffled:
        b.merge(r, T0)
    assert a.records() == b.records()
    assert a.digest() == b.digest()
    # the winner per key is the maximum version
    for record in a.records():
        assert record.version == max(r.version for r in rs if r.name == record.name)
    # merging everything again changes nothing
    assert a.merge_all(b.encode_all(), T0) == []


@settings(max_examples=100)
@given(st.lists(records(), max_size=8).map(_unique_versions), st.lists(records(), max_size=8))
def test_push_pull_both_ways_converges(left: list[Record], right: list[Record]) -> None:
    right = _unique_versions(left + right)[len(left) :]
    a, b = make("node7"), make("node8")
    for r in left:
        a.merge(r, T0)
    for r in right:
        b.merge(r, T0)
    a_state = a.encode_all()
    a.merge_all(b.encode_all(), T0)
    b.merge_all(a_state, T0)
    assert a.records() == b.records()


# ---- codec -------------------------------------------------------------------------------------------


def test_records_round_trip() -> None:
    store = make()
    store.create(Kind.VIP, vip(health_check={"type": "http", "target": "http://h/"}), T0)
    store.create(Kind.POLICY_SET, PolicySet.model_validate({"name": "p", "rules": [{"match": {}}]}), T0)
    store.delete(Kind.POLICY_SET, "p", T0)
    for record in store.records():
        assert decode_record(encode_record(record)) == record
    assert decode_all(encode_all(store.records())) == store.records()


def _wire(**overrides: Any) -> list[Any]:
    fields = {
        "fmt": 1,
        "kind": "vip",
        "name": "web",
        "wall": T0,
        "counter": 0,
        "origin": "node1",
        "body": {"name": "web"},
        "deleted": None,
    }
    fields.update(overrides)
    return list(fields.values())


@pytest.mark.parametrize(
    ("wire", "msg"),
    [
        (_wire(fmt=2), "unknown record format"),
        (_wire(kind="bogus"), "unknown kind"),
        (_wire(name=""), "bad name"),
        (_wire(kind="mesh", name="other"), "keyed 'mesh'"),
        (_wire(wall=-1), "bad timestamp"),
        (_wire(counter=1 << 20), "bad timestamp"),
        (_wire(counter=True), "bad timestamp"),
        (_wire(origin=5), "bad origin"),
        (_wire(body=None), "needs deleted_at_ms"),
        (_wire(deleted=T0), "live record has no deleted_at_ms"),
        (_wire(body=[1]), "body must be a map"),
        (_wire(body={"a": b"bytes"}), "body holds a bytes"),
        (_wire(body={"a": [float("nan")]}), "non-finite"),
        (_wire(body={"a": float("-inf")}), "non-finite"),
        (_wire(body={"a": {"b": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]}}), "nested too deeply"),
        (_wire()[:7], "array of 8 fields"),
        ({"not": "a list"}, "array of 8 fields"),
    ],
)
def test_malformed_records_raise_decode_error(wire: Any, msg: str) -> None:
    with pytest.raises(RecordDecodeError, match=msg):
        decode_record(msgpack.packb(wire, use_bin_type=True))


def test_non_msgpack_raises_decode_error() -> None:
    for junk in (b"", b"\xc1", b"\x92\x01", msgpack.packb(_wire()) + b"x", msgpack.packb({1: 2})):
        with pytest.raises(RecordDecodeError):
            decode_record(junk)


def test_a_bad_push_pull_payload_merges_nothing() -> None:
    store = make()
    good = encode_record(make("node2").create(Kind.VIP, vip(), T0))
    payload = msgpack.packb([1, [msgpack.unpackb(good), _wire(kind="bogus")]], use_bin_type=True)
    with pytest.raises(RecordDecodeError):
        store.merge_all(payload, T0)
    assert store.records() == []


@settings(max_examples=500)
@given(st.binary(max_size=200))
def test_decoding_arbitrary_bytes_raises_only_decode_error(data: bytes) -> None:
    with contextlib.suppress(RecordDecodeError):
        decode_record(data)
    with contextlib.suppress(RecordDecodeError):
        decode_all(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300)
@given(
    st.lists(msgpack_values, min_size=8, max_size=8).map(lambda v: [1, "vip", "x", T0, 0, "n", *v[6:]])
    | msgpack_values
)
def test_decoding_arbitrary_msgpack_raises_only_decode_error(value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    try:
        record = decode_record(data)
    except RecordDecodeError:
        return
    assert decode_record(encode_record(record)) == record


def _conflict_store() -> ObjectStore:
    return ObjectStore("a", lambda: {"a", "b"})


def _remote(origin: str, wall_ms: int, body: dict[str, object] | None, counter: int = 0) -> Record:
    version = Version(Timestamp(wall_ms, counter), origin)
    return Record(Kind.VIP, "web", version, body, None if body is not None else wall_ms)


def test_a_delete_undone_by_a_concurrent_edit_is_a_resurrection_conflict() -> None:
    store = _conflict_store()
    store.create(Kind.VIP, {"name": "web", "address": "100.96.0.1"}, 1_000)
    tomb = store.delete(Kind.VIP, "web", 2_000)
    edit = _remote("b", 3_000, {"name": "web", "address": "100.96.0.9"})
    assert store.merge(edit, 3_500)
    (conflict,) = store.conflicts(Kind.VIP, "web")
    assert (conflict.type, conflict.lost, conflict.lost_deleted, conflict.detected_ms) == (
        "resurrected",
        tomb.version,
        True,
        3_500,
    )
    assert store.merge(edit, 4_000) is False and len(store.conflicts(Kind.VIP, "web")) == 1  # once


def test_writes_far_apart_or_from_one_machine_are_no_conflict() -> None:
    store = _conflict_store()
    store.create(Kind.VIP, {"name": "web", "address": "100.96.0.1"}, 1_000)
    assert store.merge(_remote("a", 2_000, {"name": "web", "address": "100.96.0.2"}, counter=5), 2_000)
    assert store.merge(_remote("b", 60_000, {"name": "web", "address": "100.96.0.3"}), 60_000)
    assert store.conflicts(Kind.VIP, "web") == [] and store.conflict_counts == {}


def test_conflicts_are_bounded_per_object() -> None:
    store = _conflict_store()
    for i in range(10):
        origin = "a" if i % 2 else "b"
        store.merge(_remote(origin, 1_000 + i, {"name": "web", "address": "100.96.0.1"}), 2_000)
    assert len(store.conflicts(Kind.VIP, "web")) == CONFLICTS_PER_OBJECT
    assert store.conflict_counts == {("vip", "concurrent_write"): 9}


# ---- timestamps from the future ----------------------------------------------------------------------

YEAR_144700_MS = 4_503_000_000_000_000  # where forged records once dragged every replica's clock


def forged(wall_ms: int, origin: str = "node9", holdoff: int = 99) -> Record:
    """A record as a sender holding the key could craft it: any timestamp it likes."""
    body = Vip.model_validate(vip(holdoff=holdoff)).model_dump(mode="json")
    return Record(Kind.VIP, "web", Version(Timestamp(wall_ms, 0), origin), body)


def test_a_far_future_record_is_refused_and_later_edits_still_win(caplog: pytest.LogCaptureFixture) -> None:
    store = make()
    mine = store.create(Kind.VIP, vip(), T0)
    clock_before = store.clock.last
    for wall_ms in (YEAR_144700_MS, T0 + MAX_AHEAD_MS + 1):
        assert store.merge(forged(wall_ms), T0) is False
        assert store.merge_all(encode_all([forged(wall_ms, origin="node8")]), T0) == []
    assert store.clock.last == clock_before  # the clock did not move
    assert store.get_record(Kind.VIP, "web") == mine
    assert store.refused_ahead == 4
    # logged once per origin, however often it tries
    assert sorted(r.getMessage().split("'")[3] for r in caplog.records) == ["node8", "node9"]
    # an ordinary edit a second later still wins everywhere
    edit = store.patch(Kind.VIP, "web", {"holdoff": 7}, T0 + 1000)
    assert edit.version.ts == Timestamp(T0 + 1000, 0)
    other = make("node2")
    assert other.merge(forged(YEAR_144700_MS), T0 + 1000) is False
    assert other.merge(edit, T0 + 1000) is True
    assert other.get(Kind.VIP, "web").holdoff == 7  # type: ignore[union-attr]


def test_a_record_half_a_minute_ahead_is_accepted_and_the_clock_follows() -> None:
    store = make()
    store.create(Kind.VIP, vip(), T0)
    ahead = forged(T0 + 30_000)
    assert store.merge(ahead, T0) is True
    assert store.get(Kind.VIP, "web").holdoff == 99  # type: ignore[union-attr]
    assert store.clock.last > ahead.version.ts
    assert store.refused_ahead == 0
    # exactly the bound is still accepted
    assert make().merge(forged(T0 + MAX_AHEAD_MS), T0) is True


# ---- records from the far future kept on disk by an older agent -------------------------------------


def test_far_future_records_on_disk_are_restamped_on_load(caplog: pytest.LogCaptureFixture) -> None:
    sane = Record(Kind.VIP, "api", Version(Timestamp(T0 - 5_000, 3), "node2"), vip("api"))
    tomb = Record(Kind.POLICY_SET, "p", Version(Timestamp(YEAR_144700_MS, 1), "node8"), None, YEAR_144700_MS)
    store = ObjectStore("node1", lambda: KNOWN, [forged(YEAR_144700_MS), sane, tomb], wall_ms=T0)
    # The clock follows only the sane record: it is not dragged into the future.
    assert store.clock.last < Timestamp(T0 + MAX_AHEAD_MS, 0)
    web = store.get_record(Kind.VIP, "web")
    assert web is not None and web.body == forged(0).body  # content kept ...
    assert web.version.origin == "node9" and web.version.ts.wall_ms == T0  # ... origin kept, time now
    gone = store.get_record(Kind.POLICY_SET, "p")
    assert gone is not None and gone.tombstone and gone.deleted_at_ms == T0  # its expiry is reachable
    assert store.get_record(Kind.VIP, "api") == sane
    assert sorted(r.key for r in store.repaired) == [(Kind.POLICY_SET, "p"), (Kind.VIP, "web")]
    # Counted, shown in the object's problems, logged.
    assert store.conflict_counts == {("vip", "restamped"): 1, ("policy-set", "restamped"): 1}
    (problem,) = store.problems_of(Kind.VIP, "web")
    assert "re-stamped on start" in problem.msg and str(YEAR_144700_MS) in problem.msg
    assert sum("re-stamped at now" in r.getMessage() for r in caplog.records) == 2
    # A later edit here is stamped near now, so another node takes it and it wins there.
    edit = store.patch(Kind.VIP, "web", {"holdoff": 7}, T0 + 1_000)
    assert edit.version.ts == Timestamp(T0 + 1_000, 0)
    other = make("node2")
    assert other.merge(edit, T0 + 1_000) is True
    assert other.get(Kind.VIP, "web").holdoff == 7  # type: ignore[union-attr]


def test_two_nodes_repairing_the_same_record_converge_without_a_conflict() -> None:
    a = ObjectStore("node1", lambda: KNOWN, [forged(YEAR_144700_MS)], wall_ms=T0)
    b = ObjectStore("node2", lambda: KNOWN, [forged(YEAR_144700_MS)], wall_ms=T0 + 2_000)
    for record in a.repaired:
        b.merge(record, T0 + 3_000)
    for record in b.repaired:
        a.merge(record, T0 + 3_000)
    assert a.records() == b.records() and a.digest() == b.digest()
    assert a.conflict_counts == b.conflict_counts == {("vip", "restamped"): 1}


def test_without_wall_ms_records_load_as_stored() -> None:
    store = ObjectStore("node1", lambda: KNOWN, [forged(YEAR_144700_MS)])
    assert store.repaired == [] and store.get_record(Kind.VIP, "web") == forged(YEAR_144700_MS)


def test_a_refused_record_is_counted_once_while_remembered() -> None:
    store = make()
    for _ in range(50):
        assert store.merge(forged(YEAR_144700_MS), T0) is False
        assert store.merge_all(encode_all([forged(YEAR_144700_MS)]), T0 + 1_000) == []
    assert store.refused_ahead == 1 and store.refused(forged(YEAR_144700_MS), T0)
    assert store.merge(forged(YEAR_144700_MS + 1), T0) is False  # another version: news
    assert store.refused_ahead == 2
    later = T0 + REFUSAL_MEMORY_MS + 1  # forgotten in time, so refused (and counted) afresh
    assert not store.refused(forged(YEAR_144700_MS), later)
    assert store.merge(forged(YEAR_144700_MS), later) is False and store.refused_ahead == 3


def test_the_refusal_memory_is_bounded_in_size_and_time() -> None:
    memory: RecentSet[int] = RecentSet(size=3, ttl_ms=100)
    for i in range(10):
        memory.add(i, 0)
    assert len(memory) == 3 and [memory.seen(i, 50) for i in (6, 7, 8, 9)] == [False, True, True, True]
    memory.add(10, 150)  # the others expired at 100: dropped as soon as anything is added
    assert len(memory) == 1 and memory.seen(10, 249) and not memory.seen(10, 250)
