"""Every published gossip value: round trips, today's bytes still read (frozen vectors made with the
codecs these replaced), and refusals (newer, malformed) ignored and logged once."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.published import (
    ANNOUNCE,
    API,
    BGP,
    HEALTH,
    METADATA,
    PUBLISHED,
    REACHABILITY,
    Announced,
    Eligibility,
    ReflectorInfo,
    ReflectorKnobs,
    SpeakerInfo,
    Verdict,
)
from agent.wirevalues import ANNOUNCING, STATES, Reason
from common.address import format_address
from gossip.codec import Codec, NewerVersion, Refusals, WireError
from transit.endpoint import Endpoint
from transit.keys import PublicKey
from transit.meta import TransitMeta
from transit.reachability import DIRECT, UNREACHABLE, PeerReach, ReachRoute, ReachVector

KEY = PublicKey(bytes(range(32)))

# Bytes the agents published before the shared codec (made with encode_api, SpeakerInfo.encode,
# planner.to_wire + msgpack, HealthRunner.encode, encode_vector and encode_meta), with what they hold.
FROZEN: list[tuple[Codec[Any], str, object]] = [
    (API, "82a17601a461646472af3139382e31382e302e323a37393437", "198.18.0.2:7947"),
    (API, "82a17601a461646472b05b323030313a6462383a3a315d3a3830", "[2001:db8::1]:80"),
    (
        BGP,
        "85a17601a361736ecdfc00a3726964aa3139382e31382e302e32a461646472aa3139382e31382e302e32a473656e74"
        "92a8726f7574652f7231a77669702f776562",
        SpeakerInfo(64512, "198.18.0.2", "198.18.0.2", ("route/r1", "vip/web")),
    ),
    (
        BGP,
        "86a17601a361736ecefa56ea00a3726964a831302e302e302e31a461646472ab323030313a6462383a3a32a473656e74"
        "90a46d657368aa3130302e36342e302e31",
        SpeakerInfo(4200000000, "10.0.0.1", "2001:db8::2", (), "100.64.0.1"),
    ),
    (
        BGP,
        "86a17601a361736ecdfc00a3726964aa3139382e31382e302e32a461646472aa3139382e31382e302e32a473656e74"
        "90a2727283a165a46175746fa163cf018bcfe568000000a173ce12345678",
        SpeakerInfo(
            64512,
            "198.18.0.2",
            "198.18.0.2",
            reflector=ReflectorInfo(Eligibility.AUTO, 1700000000000 << 16, 0x12345678),
        ),
    ),
    (
        ANNOUNCE,
        "82a17601a76f626a6563747383a77669702f77656294c3a468656c64cb400400000000000091a26d32a7726f7574652f"
        "7294c2b677697468647261776e5f706565725f6865616c746879c092a26d32a26d33a57669702f7894c3a76865616c74"
        "6879c090",
        {
            "vip/web": Announced(True, Reason.HELD, 2.5, ("m2",)),
            "route/r": Announced(False, Reason.WITHDRAWN_PEER_HEALTHY, None, ("m2", "m3")),
            "vip/x": Announced(True, Reason.HEALTHY, None, ()),
        },
    ),
    (ANNOUNCE, "82a17601a76f626a6563747380", {}),
    (
        HEALTH,
        "82a7726f7574652f7287a173a9756e6865616c746879a174cb41d954fc40100000a16e03a16fc2a16cc0a165b2636f6e"
        "6e656374696f6e2072656675736564a163cb41d954fc40600000a77669702f77656287a173a76865616c746879a174cb"
        "41d954fc40000000a16e05a16fc3a16ccb3f713404ea4a8c15a165c0a163cb41d954fc40800000",
        {
            "route/r": Verdict(
                "unhealthy", 1700000000.25, 3, False, None, "connection refused", 1700000001.5
            ),
            "vip/web": Verdict("healthy", 1700000000.0, 5, True, 0.0042, None, 1700000002.0),
        },
    ),
    (
        HEALTH,
        "81a77669702f6e657787a173a7756e6b6e6f776ea174cb4014000000000000a16e00a16fc0a16cc0a165c0a163c0",
        {"vip/new": Verdict("unknown", 5.0)},
    ),
    (
        REACHABILITY,
        "920183a26d32920103a26d33930000a26d32a26d34920200",
        ReachVector(
            {
                "m2": PeerReach(True, 3, DIRECT),
                "m3": PeerReach(False, 0, ReachRoute.via("m2")),
                "m4": PeerReach(False, 0, UNREACHABLE),
            }
        ),
    ),
    (REACHABILITY, "920180", ReachVector()),
    (
        METADATA,
        "9601c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc40464400001cf0000018bcf"
        "e568009292c404c6120001cdca6c92c41020010db8000000000000000000000001cdca6d01",
        TransitMeta(
            KEY,
            ipaddress.ip_address("100.64.0.1"),
            1700000000000,
            (
                Endpoint(ipaddress.ip_address("198.18.0.1"), 51820),
                Endpoint(ipaddress.ip_address("2001:db8::1"), 51821),
            ),
            relay=False,
        ),
    ),
    (
        METADATA,
        "9601c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fc410fd00000000000000000000"
        "0000000001009000",
        TransitMeta(KEY, ipaddress.ip_address("fd00::1"), 0),
    ),
]


@pytest.mark.parametrize(("codec", "hex_bytes", "value"), FROZEN)
def test_todays_bytes_decode_and_encode_identically(codec: Codec[Any], hex_bytes: str, value: object) -> None:
    data = bytes.fromhex(hex_bytes)
    assert codec.parse(data) == value
    assert codec.encode(value) == data


def test_every_key_is_declared_once() -> None:
    keys = [c.key for c in PUBLISHED]
    assert keys == ["api", "announce", "health", "bgp", "transit.reach", "transit.meta"]
    assert all(c.version == 1 for c in PUBLISHED)


# --- round trips ----------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
object_keys = st.builds(lambda k, n: f"{k}/{n}", st.sampled_from(["vip", "route"]), names)
finite = st.floats(-1e12, 1e12, allow_nan=False)
ipv4 = st.ip_addresses(v=4)
ips = st.ip_addresses()


@given(ips, st.integers(1, 65535))
def test_api_round_trips(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int) -> None:
    address = format_address((str(ip), port))
    assert API.parse(API.encode(address)) == address


announced = st.sampled_from(Reason).flatmap(
    lambda r: st.builds(
        Announced,
        st.just(r in ANNOUNCING),
        st.just(r),
        st.floats(0, 1e9) if r is Reason.HELD else st.none(),
        st.lists(names, max_size=3).map(tuple),
    )
)


@given(st.dictionaries(object_keys, announced, max_size=6))
def test_announce_round_trips(value: dict[str, Announced]) -> None:
    assert ANNOUNCE.parse(ANNOUNCE.encode(value)) == value


verdicts = st.builds(
    Verdict,
    st.sampled_from(STATES),
    finite,
    st.integers(0, 1 << 40),
    st.none() | st.booleans(),
    st.none() | finite,
    st.none() | st.text(max_size=20),
    st.none() | finite,
)


@given(st.dictionaries(object_keys, verdicts, max_size=6))
def test_health_round_trips(value: dict[str, Verdict]) -> None:
    assert HEALTH.parse(HEALTH.encode(value)) == value


speakers = st.builds(
    SpeakerInfo,
    st.integers(1, (1 << 32) - 1),
    ipv4.map(str),
    ips.map(str),
    st.lists(object_keys, unique=True, max_size=4).map(lambda keys: tuple(sorted(keys))),
    st.none() | ips.map(str),
    st.none()
    | st.builds(
        ReflectorInfo,
        st.sampled_from(Eligibility),
        st.none() | st.integers(0, (1 << 63) - 1),
        st.none() | st.integers(0, (1 << 32) - 1),
        st.none()
        | st.builds(
            ReflectorKnobs,
            st.integers(1, 16),
            st.integers(0, 100_000),
            st.integers(0, 100),
            st.floats(0, 3600, allow_nan=False),
        ),
    ),
)


def test_an_older_agent_reads_a_speaker_that_publishes_reflector_info() -> None:
    """What an agent without reflectors reads: the same fields, the ``rr`` key ignored."""
    new = SpeakerInfo(64512, "198.18.0.2", "198.18.0.2", reflector=ReflectorInfo(Eligibility.NEVER, 7))
    body = msgpack.unpackb(BGP.encode(new))
    assert body["rr"] == {"e": "never", "c": 7}
    del body["rr"]
    assert BGP.parse(msgpack.packb(body)) == SpeakerInfo(64512, "198.18.0.2", "198.18.0.2")


def test_reflector_knobs_are_optional_and_unknown_knobs_ignored() -> None:
    """A value from before the knobs were published decodes with none; a newer agent's extra knob is
    ignored, not a reason to refuse the whole value."""
    old = {"v": 1, "asn": 64512, "rid": "198.18.0.2", "addr": "198.18.0.2", "sent": [], "rr": {"e": "auto"}}
    info = BGP.parse(msgpack.packb(old))
    assert info.reflector == ReflectorInfo(Eligibility.AUTO) and info.reflector.knobs is None
    newer = {**old, "rr": {"e": "auto", "p": {"k": 3, "b": 8, "m": 2, "h": 30, "z": 1}}}
    read = BGP.parse(msgpack.packb(newer)).reflector
    assert read is not None and read.knobs == ReflectorKnobs(3, 8, 2, 30.0)


@pytest.mark.parametrize(
    ("rr", "words"),
    [
        ("auto", "rr: expected a map"),
        ({"e": "maybe"}, "rr.e"),
        ({"e": ["auto"]}, "rr.e"),
        ({"e": "auto", "c": -1}, "rr.c"),
        ({"e": "auto", "c": True}, "rr.c"),
        ({"e": "auto", "s": 1 << 32}, "rr.s"),
        ({"e": "auto", "p": [2, 8, 2, 30.0]}, "rr.p: expected a map"),
        ({"e": "auto", "p": {"k": 2, "b": 8, "m": 2}}, "rr.p.h"),
        ({"e": "auto", "p": {"k": 2, "b": 8, "m": 2, "h": float("inf")}}, "rr.p.h"),
        ({"e": "auto", "p": {"k": -1, "b": 8, "m": 2, "h": 30.0}}, "rr.p.k"),
        ({"e": "auto", "p": {"b": 8, "m": 2, "h": 30.0}}, "rr.p: needs k, b and m"),
    ],
)
def test_bad_reflector_info_is_refused(rr: object, words: str) -> None:
    body = {"v": 1, "asn": 64512, "rid": "198.18.0.2", "addr": "198.18.0.2", "sent": [], "rr": rr}
    with pytest.raises(WireError, match=words.replace(".", r"\.")):
        BGP.parse(msgpack.packb(body))


@given(speakers)
def test_bgp_round_trips(value: SpeakerInfo) -> None:
    assert BGP.parse(BGP.encode(value)) == value


def _entries(draw: st.DrawFn) -> ReachVector:
    peers = draw(st.lists(names, unique=True, max_size=6))
    entries: dict[str, PeerReach] = {}
    for peer in peers:
        relay = draw(st.none() | names)
        if relay is not None and relay != peer:
            route = ReachRoute.via(relay)
        else:
            route = draw(st.sampled_from([DIRECT, UNREACHABLE]))
        entries[peer] = PeerReach(draw(st.booleans()), draw(st.integers(0, 65535)), route)
    return ReachVector(entries)


@given(st.composite(_entries)())
def test_reach_round_trips(value: ReachVector) -> None:
    assert REACHABILITY.parse(REACHABILITY.encode(value)) == value


endpoints = st.builds(Endpoint, ips, st.integers(1, 65535))
metas = st.builds(
    TransitMeta,
    st.binary(min_size=32, max_size=32).map(PublicKey),
    ips,
    st.integers(0, (1 << 63) - 1),
    st.lists(endpoints, max_size=8).map(tuple),
    st.booleans(),
)


@given(metas)
def test_meta_round_trips(value: TransitMeta) -> None:
    assert METADATA.parse(METADATA.encode(value)) == value


@pytest.mark.parametrize("codec", PUBLISHED, ids=lambda c: c.key)
@given(data=st.binary(max_size=200))
def test_decoders_raise_only_wire_error(codec: Codec[Any], data: bytes) -> None:
    with contextlib.suppress(WireError):
        codec.parse(data)


# --- refusals -------------------------------------------------------------------------------------


def test_a_newer_version_is_ignored_and_logged_once_per_key_sender_and_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = Refusals()
    v2 = msgpack.packb({"v": 2, "addr": "198.18.0.2:7947"})
    with pytest.raises(NewerVersion):
        API.parse(v2)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert API.decode(v2, "m2", refusals) is None
        assert API.decode(v2, "m3", refusals) is None
        assert API.decode(msgpack.packb({"v": 3}), "m2", refusals) is None
        assert REACHABILITY.decode(msgpack.packb([2, {}]), "m2", refusals) is None
        assert HEALTH.decode(msgpack.packb({"v": 2}), "m2", refusals) is None
    assert len(caplog.records) == 5
    assert refusals.logged() == {
        ("api", "m2", 2),
        ("api", "m3", 2),
        ("api", "m2", 3),
        ("transit.reach", "m2", 2),
        ("health", "m2", 2),
    }


def test_a_malformed_value_is_ignored_and_logged_once_until_a_good_one_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refusals = Refusals()
    with caplog.at_level(logging.WARNING):
        for junk in (b"\xc1", b"\x01junk", msgpack.packb({"v": 1, "asn": 0})):
            assert BGP.decode(junk, "m2", refusals) is None
        assert len(caplog.records) == 1
        good = SpeakerInfo(64512, "198.18.0.2", "198.18.0.2")
        assert BGP.decode(BGP.encode(good), "m2", refusals) == good
        assert BGP.decode(b"\xc1", "m2", refusals) is None
    assert len(caplog.records) == 2
    assert BGP.decode(None, "m2", refusals) is None  # absent: not a refusal


@pytest.mark.parametrize(
    "raw",
    [{"v": 0, "addr": "1.1.1.1:1"}, {"v": True, "addr": "1.1.1.1:1"}, {"v": "1"}, {"addr": "1.1.1.1:1"}, [1]],
)
def test_other_versions_and_framings_are_malformed(raw: object) -> None:
    with pytest.raises(WireError) as info:
        API.parse(msgpack.packb(raw))
    assert not isinstance(info.value, NewerVersion)
