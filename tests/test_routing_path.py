"""Routes and attributes: prefixes, AS paths, communities, interning."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.routing.decision import Selection
from agent.routing.path import (
    AsPath,
    Attributes,
    Interner,
    Path,
    Peer,
    PeerKind,
    Prefix,
    SegmentType,
    format_community,
    parse_community,
)

SEQ, SET = SegmentType.AS_SEQUENCE, SegmentType.AS_SET


@pytest.mark.parametrize(
    "text", ["10.0.0.0/8", "0.0.0.0/0", "203.0.113.7/32", "fd00::/8", "::/0", "fd00:1:2::/48"]
)
def test_prefix_round_trips(text: str) -> None:
    prefix = Prefix.parse(text)
    assert str(prefix) == text and prefix.to_network() == ipaddress.ip_network(text)
    assert Prefix.from_network(ipaddress.ip_network(text)) == prefix


@pytest.mark.parametrize(
    ("text", "message"),
    [("10.0.0.1/8", "did you mean 10.0.0.0/8"), ("10.0.0.0", "not a CIDR"), ("10.0.0.0/33", "not a CIDR")],
)
def test_bad_prefixes_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Prefix.parse(text)


def test_prefixes_validate_when_built_directly_and_sort_by_version_network_length() -> None:
    with pytest.raises(ValueError, match="host bits"):
        Prefix(4, 1, 8)
    with pytest.raises(ValueError):
        Prefix(5, 0, 0)
    with pytest.raises(ValueError):
        Prefix(4, 0, 33)
    texts = ["fd00::/8", "10.0.0.0/16", "10.0.0.0/8", "9.0.0.0/8"]
    assert [str(p) for p in sorted(map(Prefix.parse, texts))] == [
        "9.0.0.0/8",
        "10.0.0.0/8",
        "10.0.0.0/16",
        "fd00::/8",
    ]
    assert len({Prefix.parse("10.0.0.0/8"), Prefix(4, 10 << 24, 8)}) == 1


def test_as_path_length_text_and_neighbour() -> None:
    path = AsPath.parse("65001 65002 {65004,65003,65004}")
    assert path.segments == ((SEQ, (65001, 65002)), (SET, (65003, 65004)))
    assert (path.text, path.length, path.neighbor_as) == ("65001 65002 {65003,65004}", 3, 65001)
    assert path.asns == {65001, 65002, 65003, 65004}
    assert AsPath.parse("{65001 65002} 65003").neighbor_as is None  # a leading set has no neighbour
    empty = AsPath.parse("")
    assert (empty.text, empty.length, empty.neighbor_as, empty) == ("", 0, None, AsPath())
    with pytest.raises(ValueError, match="not an AS path"):
        AsPath.parse("65001 x")
    with pytest.raises(ValueError, match="empty AS set"):
        AsPath.parse("65001 {}")
    with pytest.raises(ValueError, match="AS numbers"):
        AsPath.of(2**32)


def test_as_paths_are_canonical() -> None:
    assert AsPath(((SEQ, (1,)), (SEQ, (2,)), (SET, ()))) == AsPath.of(1, 2)
    assert AsPath(((SET, (2, 1, 2)),)) == AsPath(((SET, (1, 2)),))
    assert hash(AsPath.parse("1 2")) == hash(AsPath.of(1, 2))


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(
        st.tuples(st.sampled_from(SegmentType), st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4)),
        max_size=4,
    ),
    asn=st.integers(1, 2**32 - 1),
    count=st.integers(1, 10),
)
def test_prepend_adds_count_to_the_length_and_leads_the_path(
    segments: list[tuple[SegmentType, list[int]]], asn: int, count: int
) -> None:
    path = AsPath(tuple((kind, tuple(numbers)) for kind, numbers in segments))
    longer = path.prepend(asn, count)
    assert longer.length == path.length + count
    assert longer.neighbor_as == asn
    assert longer.text == " ".join([str(asn)] * count + ([path.text] if path.text else []))
    assert AsPath.parse(longer.text) == longer


def test_communities_parse_and_format() -> None:
    assert parse_community("65001:100") == 65001 << 16 | 100
    assert parse_community("1:2:3") == (1, 2, 3)
    assert format_community(parse_community("no-export")) == "no-export"  # type: ignore[arg-type]
    assert format_community(parse_community("65535:666")) == "blackhole"  # type: ignore[arg-type]
    assert format_community(65001 << 16 | 7) == "65001:7"
    with pytest.raises(ValueError):
        parse_community("65536:1")


def test_attributes_validate_ranges() -> None:
    with pytest.raises(ValueError, match="med"):
        Attributes(med=2**32)
    with pytest.raises(ValueError, match="local_pref"):
        Attributes(local_pref=-1)
    assert Attributes().effective_local_pref == 100


def test_a_route_without_next_hop_has_nothing_to_install() -> None:
    peer = Peer.local(ipaddress.IPv4Address("198.18.255.1"), 65000)
    path = Path(Prefix.parse("100.96.0.1/32"), Attributes(), peer, 0.0)
    assert Selection(path, (path,)).next_hops == ()
    assert peer.kind is PeerKind.LOCAL and not peer.internal


def test_interning_shares_equal_objects_and_their_parts() -> None:
    interner = Interner()
    nh = ipaddress.IPv4Address("198.18.0.1")
    first = interner.attributes(Attributes(nh, AsPath.of(1, 2), communities=frozenset({1})))
    again = interner.attributes(Attributes(nh, AsPath.of(1, 2), communities=frozenset({1})))
    assert again is first and len(interner) == 1
    other = interner.attributes(Attributes(nh, AsPath.of(1, 2), med=5, communities=frozenset({1})))
    assert other is not first
    assert other.as_path is first.as_path and other.communities is first.communities
    interner.retain([other])
    assert len(interner) == 1
    assert interner.attributes(Attributes(nh, AsPath.of(1, 2), med=5, communities=frozenset({1}))) is other
    assert interner.attributes(Attributes(nh, AsPath.of(1, 2), communities=frozenset({1}))) is not first
