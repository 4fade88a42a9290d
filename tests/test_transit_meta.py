"""Transit metadata codec and the mesh-address claim rule."""

from __future__ import annotations

import contextlib
import ipaddress

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gossip.codec import WireError
from gossip.events import MemberInfo, MemberState
from transit.endpoint import Endpoint
from transit.keys import PrivateKey, PublicKey
from transit.meta import (
    MAX_ENDPOINTS,
    META,
    PROBE_PREFIX,
    Claim,
    TransitMeta,
    mesh_view,
    probe_address,
    resolve_claims,
)

KEY = PublicKey(bytes(range(32)))
A1 = ipaddress.ip_address("100.64.0.1")
A2 = ipaddress.ip_address("100.64.0.2")


def meta(addr: str = "100.64.0.1", at: int = 1000, key: PublicKey = KEY) -> TransitMeta:
    return TransitMeta(
        key,
        ipaddress.ip_address(addr),
        at,
        (Endpoint.parse("198.18.0.1:51820"), Endpoint.parse("[2001:db8::1]:51821")),
    )


def member(name: str, m: TransitMeta | None, state: MemberState = MemberState.ALIVE) -> MemberInfo:
    return MemberInfo(name, ("198.18.0.1", 7946), 1, state, 0.0, META.encode(m) if m else b"")


def test_round_trip_and_size() -> None:
    m = meta()
    data = META.encode(m)
    assert META.parse(data) == m
    full = TransitMeta(
        KEY,
        ipaddress.ip_address("fd00::1"),
        2**62,
        tuple(Endpoint(ipaddress.ip_address(f"2001:db8::{i}"), 65535) for i in range(MAX_ENDPOINTS)),
    )
    assert META.parse(META.encode(full)) == full
    assert len(META.encode(full)) < 512  # gossip's metadata limit, with room for more


def test_trailing_fields_from_a_newer_minor_version_are_ignored() -> None:
    raw = msgpack.unpackb(META.encode(meta()))
    assert META.parse(msgpack.packb([*raw, "future", 42])) == meta()


@pytest.mark.parametrize(
    "raw",
    [
        [],
        [2, KEY.raw, A1.packed, 0, []],  # unknown version
        [True, KEY.raw, A1.packed, 0, []],
        [1, KEY.raw, A1.packed, 0],  # too short
        [1, KEY.raw[:31], A1.packed, 0, []],
        [1, KEY.raw, b"\x01\x02\x03", 0, []],
        [1, KEY.raw, "100.64.0.1", 0, []],
        [1, KEY.raw, A1.packed, -1, []],
        [1, KEY.raw, A1.packed, 1.5, []],
        [1, KEY.raw, A1.packed, 0, [[A2.packed, 0]]],
        [1, KEY.raw, A1.packed, 0, [[A2.packed, 70000]]],
        [1, KEY.raw, A1.packed, 0, [[A2.packed]]],
        [1, KEY.raw, A1.packed, 0, [[A2.packed, 1]] * (MAX_ENDPOINTS + 1)],
        {"v": 1},
    ],
)
def test_malformed_records_are_refused(raw: object) -> None:
    with pytest.raises(WireError):
        META.parse(msgpack.packb(raw, use_bin_type=True))


@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_meta_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        META.parse(data)


def test_the_earlier_claim_holds_and_both_are_told() -> None:
    res = resolve_claims([Claim("newcomer", A1, 2000), Claim("veteran", A1, 1000), Claim("other", A2, 3000)])
    assert res.holders == {A1: "veteran", A2: "other"}
    assert res.holds("veteran", A1) and not res.holds("newcomer", A1)
    (conflict,) = res.conflicts
    assert conflict.holder.name == "veteran" and [c.name for c in conflict.refused] == ["newcomer"]
    assert res.conflict_for("other") is None
    to_loser = conflict.message_for("newcomer")
    to_holder = conflict.message_for("veteran")
    assert "already held by veteran" in to_loser and "newcomer does not take it" in to_loser
    assert "also claimed by newcomer" in to_holder and "veteran keeps it" in to_holder
    assert str(A1) in to_loser and str(A1) in to_holder
    assert res.conflict_for("newcomer") is res.conflict_for("veteran") is conflict


def test_equal_claim_times_fall_back_to_the_name() -> None:
    res = resolve_claims([Claim("b", A1, 1000), Claim("a", A1, 1000), Claim("c", A1, 999)])
    assert res.holders[A1] == "c"
    assert [x.name for x in res.conflicts[0].refused] == ["a", "b"]


def test_one_claim_per_member() -> None:
    with pytest.raises(ValueError):
        resolve_claims([Claim("a", A1, 1), Claim("a", A2, 2)])


claims_st = st.lists(
    st.builds(
        Claim,
        st.sampled_from(list("abcdefgh")),
        st.sampled_from([A1, A2, ipaddress.ip_address("fd00::1")]),
        st.integers(0, 5),
    ),
    unique_by=lambda c: c.name,
)


@given(claims_st, st.data())
def test_resolution_ignores_input_order(claims: list[Claim], data: st.DataObject) -> None:
    shuffled = data.draw(st.permutations(claims))
    a, b = resolve_claims(claims), resolve_claims(shuffled)
    assert a.holders == b.holders and a.conflicts == b.conflicts
    for c in claims:  # every claimant is either the holder or told why not
        if a.holders[c.address] != c.name:
            conflict = a.conflict_for(c.name)
            assert conflict is not None and conflict.holder.rank < c.rank


def test_mesh_view_counts_live_members_and_reports_bad_metadata() -> None:
    k1, k2 = PrivateKey.generate().public_key, PrivateKey.generate().public_key
    members = [
        member("a", meta("100.64.0.1", 2000, k1)),
        member("gone", meta("100.64.0.1", 1000, k2), MemberState.DEAD),  # dead: frees its address
        member("left", meta("100.64.0.1", 500, k2), MemberState.LEFT),
        member("sus", meta("100.64.0.2", 3000, k2), MemberState.SUSPECT),
        member("plain", None),  # runs no transit
        MemberInfo("junk", ("198.18.0.9", 7946), 1, MemberState.ALIVE, 0.0, b"\x93\x01\x02"),
    ]
    view = mesh_view(members)
    assert set(view.metas) == {"a", "sus"}
    assert view.claims.holders == {A1: "a", A2: "sus"}
    assert set(view.errors) == {"junk"}
    assert view.shared_keys == {}


def test_mesh_view_flags_a_cloned_key() -> None:
    view = mesh_view([member("a", meta("100.64.0.1")), member("b", meta("100.64.0.2"))])
    assert view.shared_keys == {KEY: ("a", "b")}


def test_probe_address_is_stable_distinct_and_in_the_prefix() -> None:
    keys = [PrivateKey.generate().public_key for _ in range(50)]
    addrs = [probe_address(k) for k in keys]
    assert len(set(addrs)) == 50 and all(a in PROBE_PREFIX for a in addrs)
    assert probe_address(KEY) == probe_address(PublicKey(bytes(range(32))))


def test_relay_opt_out_travels_in_the_flags_and_older_records_relay() -> None:
    quiet = TransitMeta(KEY, A1, 1000, (), relay=False)
    assert META.parse(META.encode(quiet)) == quiet and not META.parse(META.encode(quiet)).relay
    older = msgpack.packb([1, KEY.raw, A1.packed, 1000, []], use_bin_type=True)  # before the flags
    assert META.parse(older).relay
    with pytest.raises(WireError):
        META.parse(msgpack.packb([1, KEY.raw, A1.packed, 1000, [], "no"], use_bin_type=True))
