"""The ExaBGP API codec: commands as ExaBGP 5 parses them, and real ExaBGP 5 output parsed back.

The fixtures in ``tests/fixtures/exabgp`` are lines ExaBGP 5.0.15 wrote to its API process while
peering with BIRD 2 in network namespaces (eBGP over IPv4 and IPv6, iBGP with LOCAL_PREF, an AS_SET,
communities, a withdrawal, a Cease NOTIFICATION, acks, a reload answer, a shutdown).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.bgp.api import (
    Ack,
    Announce,
    ApiCodecError,
    ApiDecoder,
    EndOfRib,
    Message,
    Notification,
    Origin,
    PeerState,
    Reload,
    RouteAttributes,
    SessionState,
    Shutdown,
    Text,
    Update,
    Withdraw,
    community_pair,
    encode_command,
    parse_line,
    prepend_path,
)
from agent.routing import GRACEFUL_SHUTDOWN

FIXTURES = Path(__file__).parent / "fixtures" / "exabgp"


def fixture_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def parse_all(name: str) -> list[Message]:
    return [parse_line(line) for line in fixture_lines(name)]


# --- commands -------------------------------------------------------------------------------------


def test_announce_with_every_attribute() -> None:
    attrs = RouteAttributes(
        origin=Origin.INCOMPLETE,
        as_path=(65001, 65001),
        as_sets=((64513, 64512),),
        med=50,
        local_pref=200,
        communities=((65535, 0), (65001, 100), (65001, 100)),
        large_communities=((65001, 7, 8),),
    )
    cmd = Announce("100.96.0.10/32", attrs, neighbor="198.18.0.1")
    assert cmd.encode() == (
        "neighbor 198.18.0.1 announce route 100.96.0.10/32 next-hop self origin incomplete"
        " as-path [ 65001 65001 ] ( 64512 64513 ) med 50 local-preference 200"
        " community [ 65001:100 65535:0 ] large-community [ 65001:7:8 ]"
    )
    assert encode_command(cmd).endswith(b"\n")


def test_announce_defaults_leave_the_path_to_exabgp() -> None:
    assert (
        Announce("2001:DB8:96::10/128").encode()
        == "announce route 2001:db8:96::10/128 next-hop self origin igp"
    )
    explicit = Announce("100.96.0.0/24", next_hop="198.18.0.9")
    assert "next-hop 198.18.0.9" in explicit.encode()
    only_set = Announce("100.96.0.0/24", RouteAttributes(as_sets=((1, 2),)))
    assert "as-path ( 1 2 )" in only_set.encode()


def test_withdraw_and_reload() -> None:
    assert Withdraw("100.96.0.10/32", neighbor="198.18.0.1").encode() == (
        "neighbor 198.18.0.1 withdraw route 100.96.0.10/32"
    )
    assert Withdraw("2001:db8::/64").encode() == "withdraw route 2001:db8::/64"  # no next-hop: v6 would fail
    assert encode_command(Reload()) == b"reload\n"


@pytest.mark.parametrize(
    "make",
    [
        lambda: Announce("100.96.0.10/24"),  # host bits
        lambda: Announce("not a prefix"),
        lambda: Announce("100.96.0.10/32", neighbor="198.18.0.1; shutdown"),
        lambda: RouteAttributes(med=-1),
        lambda: RouteAttributes(local_pref=1 << 32),
        lambda: RouteAttributes(communities=((65536, 1),)),
        lambda: RouteAttributes(large_communities=((1, 2),)),  # type: ignore[arg-type]
        lambda: RouteAttributes(as_path=(True,)),
        lambda: RouteAttributes(as_sets=((),)),
        lambda: RouteAttributes(origin="bogus"),  # type: ignore[arg-type]
    ],
)
def test_invalid_values_are_refused(make: Any) -> None:
    with pytest.raises(ValueError):
        make()


def test_attributes_compare_as_sets() -> None:
    a = RouteAttributes(communities=((2, 2), (1, 1)), large_communities=((3, 3, 3), (1, 1, 1)))
    b = RouteAttributes(communities=((1, 1), (2, 2), (1, 1)), large_communities=((1, 1, 1), (3, 3, 3)))
    assert a == b
    assert a.with_communities(community_pair(GRACEFUL_SHUTDOWN)).communities == ((1, 1), (2, 2), (65535, 0))


def test_prepend_path() -> None:
    assert prepend_path(65001, 65000) == ()  # ExaBGP's default: [65001] on eBGP
    assert prepend_path(65001, 65000, 2) == (65001, 65001, 65001)  # ExaBGP sends an explicit path as is
    assert prepend_path(65001, 65001, 2) == (65001, 65001)  # iBGP: only the prepends
    with pytest.raises(ValueError):
        prepend_path(65001, 65000, -1)


# --- real ExaBGP output ---------------------------------------------------------------------------


def test_fixture_session_with_bird_parses_completely() -> None:
    messages = parse_all("bird_session.jsonl")
    assert all(not isinstance(m, Text) for m in messages)
    states = [m for m in messages if isinstance(m, PeerState)]
    assert {s.state for s in states} == {SessionState.CONNECTED, SessionState.UP, SessionState.DOWN}
    assert any(s.reason == "notification received (6,2)" for s in states)
    assert [m for m in messages if isinstance(m, Ack)] == [Ack(ok=True)]


def test_fixture_ebgp_update_with_policy_attributes() -> None:
    updates = [m for m in parse_all("bird_session.jsonl") if isinstance(m, Update)]
    first = updates[0]
    assert first.peer.address == "198.18.0.1" and first.peer.asn == 65000 and first.peer.local_asn == 65001
    assert {r.prefix for r in first.announced} == {"203.0.113.0/24", "203.0.113.128/25"}
    route = first.announced[0]
    assert route.next_hop == "198.18.0.1"
    assert route.attributes == RouteAttributes(
        origin=Origin.IGP,
        as_path=(65000, 65000),
        med=77,
        communities=((65000, 42), (65535, 0)),
        large_communities=((65000, 1, 2),),
    )


def test_fixture_ipv6_update_keeps_the_global_next_hop() -> None:
    line = fixture_lines("bird_session.jsonl")[9]
    assert "fe80::" in line  # BIRD sent a link-local next hop too; ExaBGP lists the prefix twice
    update = parse_line(line)
    assert isinstance(update, Update)
    assert [(r.prefix, r.next_hop) for r in update.announced] == [("2001:db8:100::/48", "2001:db8:ff::1")]


def test_fixture_ibgp_update_with_local_pref_and_as_set() -> None:
    updates = [m for m in parse_all("bird_session.jsonl") if isinstance(m, Update)]
    ibgp = [u for u in updates if u.peer.address == "198.18.1.1" and u.announced]
    assert ibgp[0].announced[0].attributes.local_pref == 250
    assert ibgp[0].announced[0].attributes.as_path == ()  # iBGP from the origin AS: empty path
    with_set = next(u for u in ibgp if u.announced[0].prefix == "100.96.0.13/32").announced[0].attributes
    assert with_set.origin is Origin.INCOMPLETE
    assert with_set.as_path == (65001, 65001) and with_set.as_sets == ((64512, 64513),)
    assert with_set.med == 5 and with_set.large_communities == ((65001, 7, 8),)


def test_fixture_withdraw_eor_notification() -> None:
    messages = parse_all("bird_session.jsonl")
    withdrawals = [m for m in messages if isinstance(m, Update) and m.withdrawn]
    assert withdrawals[0].withdrawn == ("203.0.113.128/25",) and withdrawals[0].announced == ()
    eors = {(m.peer.address, m.family) for m in messages if isinstance(m, EndOfRib)}
    assert ("198.18.0.1", "ipv4 unicast") in eors and ("2001:db8:ff::1", "ipv6 unicast") in eors
    notification = next(m for m in messages if isinstance(m, Notification))
    assert (notification.direction, notification.code, notification.subcode) == ("receive", 6, 2)


def test_fixture_acks_reload_answer_and_shutdown() -> None:
    messages = parse_all("acks_and_shutdown.jsonl")
    assert Text("reload in progress") in messages
    assert [m.ok for m in messages if isinstance(m, Ack)] == [True, True, False, True]
    downs = [m for m in messages if isinstance(m, PeerState) and m.state is SessionState.DOWN]
    assert downs and all("shutting down" in d.reason for d in downs)
    assert isinstance(messages[-1], Shutdown)


def test_decoder_handles_split_lines_and_bad_input() -> None:
    raw = "\n".join(fixture_lines("bird_session.jsonl")).encode() + b"\n"
    decoder = ApiDecoder()
    out: list[Message] = []
    for i in range(0, len(raw), 97):  # chunks that cut lines anywhere
        out += decoder.feed(raw[i : i + 97])
    assert out == parse_all("bird_session.jsonl")
    assert decoder.feed(b'{"type": "state"}\n{not json\n\n{"type": "keepalive"}\ndone\n') == [Ack(ok=True)]
    assert decoder.skipped == 3


def test_decoder_skips_overlong_lines() -> None:
    decoder = ApiDecoder(max_line=100)
    assert decoder.feed(b"x" * 150) == []
    assert decoder.feed(b"y" * 150 + b"\ndone\n") == [Ack(ok=True)]
    assert decoder.skipped == 1


@pytest.mark.parametrize(
    "line",
    [
        '{"type": "update", "neighbor": {"address": {"local": "1.1.1.1", "peer": "2.2.2.2"},'
        ' "asn": {"local": 1, "peer": 2}, "direction": "send", "message": {"update": {}}}}',
        '{"type": "open"}',
        '{"type": "fsm", "neighbor": {}}',
    ],
)
def test_messages_we_did_not_ask_for_are_rejected_clearly(line: str) -> None:
    with pytest.raises(ApiCodecError):
        parse_line(line)


def test_other_families_are_skipped_not_fatal() -> None:
    msg = json.loads(fixture_lines("bird_session.jsonl")[6])
    update = msg["neighbor"]["message"]["update"]
    update["announce"]["ipv4 flow"] = {"198.18.0.1": [{"nlri": "whatever"}]}
    update["withdraw"] = {"l2vpn vpls": [{"x": 1}]}
    parsed = parse_line(json.dumps(msg))
    assert isinstance(parsed, Update) and len(parsed.announced) == 2 and parsed.withdrawn == ()


# --- never crash on arbitrary input ---------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(1 << 40), 1 << 40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
SAMPLES = [json.loads(line) for line in fixture_lines("bird_session.jsonl") if line.startswith("{")]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = new
    return copy


def _parse_or_api_error(line: str) -> None:
    try:
        result = parse_line(line)
    except ApiCodecError:
        return
    assert isinstance(result, Ack | Text | PeerState | Update | EndOfRib | Notification | Shutdown)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parser_never_crashes_on_arbitrary_json(value: Any) -> None:
    _parse_or_api_error(json.dumps(value))


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_parser_never_crashes_on_mutated_real_messages(data: st.DataObject) -> None:
    sample = data.draw(st.sampled_from(SAMPLES))
    path = data.draw(st.sampled_from(_paths(sample)))
    mutated = _replace(sample, path, data.draw(json_values))
    _parse_or_api_error(json.dumps(mutated))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_decoder_never_raises_on_bytes(chunks: list[bytes]) -> None:
    decoder = ApiDecoder(max_line=256)
    for chunk in chunks:
        decoder.feed(chunk)
