"""The msgpack wire format: every message round-trips, and no input makes a decoder raise anything but
DecodeError."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gossip.wire import (
    MAX_NAME_LEN,
    WIRE_VERSION,
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
    KeyReply,
    KvNotice,
    KvPull,
    KvUpdate,
    MemberRecord,
    Message,
    MsgType,
    Nack,
    Ping,
    PushPull,
    Suspect,
    assemble_packet,
    decode_frame,
    decode_packet,
    encode_frame,
    encode_message,
    encode_packet,
    packet_overhead,
    to_obj,
)
from tests.swimkit import wire_messages

ADDR = ("198.18.0.1", 7946)

KVS = (KvUpdate("a", "k", 1, b"v"), KvUpdate("a", "t", 2, None))
ONE_OF_EACH: list[Message] = [
    Ping(1, "b", "a", ADDR),
    IndirectPing(2, "c", ("198.18.0.3", 7946), True, "a", ADDR),
    Ack(3),
    Nack(4),
    Alive("a", 5, ADDR, b"\x00meta\xff"),
    Suspect("b", 6, "a"),
    Dead("b", 7, "b"),
    KvUpdate("a", "health", 8, b"ok"),
    KvUpdate("a", "gone", 9, None),
    KvNotice("a", "big", 10),
    PushPull(
        "a",
        True,
        (
            MemberRecord(
                "a", ADDR, 1, "alive", b"", (KvUpdate("a", "k", 1, b"v"), KvUpdate("a", "t", 2, None))
            ),
            MemberRecord("b", ("198.18.0.2", 7946), 0, "left", b"m", ()),
        ),
    ),
    KvPull("a", "big"),
    ErrorReply(""),
    ErrorReply("no such key"),
    PushPull("a", False, (), b"\x93app state"),
    AppUpdate("vip/web", b"record"),
    AppNotice("policy-set/edge", b"\x01" * 16),
    AppPull("policy-set/edge"),
    KeyQuery("list", b""),
    KeyQuery("install", b"\x42" * 32),
    KeyReply("", ("72cd6e8422c4",)),
    KeyReply("key 72cd6e8422c4 is not installed; install it first", ()),
]

DECODER_SETTINGS = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _decodes_or_refuses(data: bytes) -> None:
    """Both decoders either return messages or raise DecodeError; anything else fails the test."""
    for decode in (decode_packet, decode_frame):
        with contextlib.suppress(DecodeError):
            decode(data)


# --- round trips ----------------------------------------------------------------------------------


def test_every_message_type_is_covered() -> None:
    assert {MsgType(to_obj(m)[0]) for m in ONE_OF_EACH} == set(MsgType)


@pytest.mark.parametrize("msg", ONE_OF_EACH, ids=lambda m: type(m).__name__)
def test_round_trip_each_type(msg: Message) -> None:
    assert decode_frame(encode_frame(msg)) == msg
    assert decode_packet(encode_packet([msg])) == [(msg, len(encode_message(msg)))]


def test_packet_of_all_types_keeps_order_and_sizes() -> None:
    data = encode_packet(ONE_OF_EACH)
    assert data[0] == WIRE_VERSION
    decoded = decode_packet(data)
    assert [m for m, _ in decoded] == ONE_OF_EACH
    assert [size for _, size in decoded] == [len(encode_message(m)) for m in ONE_OF_EACH]


@pytest.mark.parametrize("n", [1, 2, 15, 16, 17, 300])
def test_packet_overhead_matches_assembly(n: int) -> None:
    encoded = [encode_message(Ack(i)) for i in range(n)]
    packet = assemble_packet(encoded)
    assert len(packet) == packet_overhead(n) + sum(len(e) for e in encoded)
    assert [m for m, _ in decode_packet(packet)] == [Ack(i) for i in range(n)]


@given(st.lists(wire_messages(), min_size=1, max_size=6))
@settings(max_examples=200, deadline=None)
def test_round_trip_any_valid_messages(messages: list[Message]) -> None:
    decoded = decode_packet(encode_packet(messages))
    assert [m for m, _ in decoded] == messages
    assert sum(size for _, size in decoded) == len(encode_packet(messages)) - packet_overhead(len(messages))
    for m in messages:
        assert decode_frame(encode_frame(m)) == m


# --- strictness -------------------------------------------------------------------------------------


def _pack(obj: Any) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    assert isinstance(data, bytes)
    return data


def _frame_of(obj: Any, version: int = WIRE_VERSION) -> bytes:
    return bytes([version]) + _pack(obj)


def _packet_of(*objs: Any) -> bytes:
    return assemble_packet([_pack(o) for o in objs])


@pytest.mark.parametrize("version", [0, 2, 0x80, 255])
def test_wrong_version_byte_refused(version: int) -> None:
    good_packet = encode_packet([Ack(1)])
    good_frame = encode_frame(Ack(1))
    with pytest.raises(DecodeError, match="version"):
        decode_packet(bytes([version]) + good_packet[1:])
    with pytest.raises(DecodeError, match="version"):
        decode_frame(bytes([version]) + good_frame[1:])


@pytest.mark.parametrize(
    "obj",
    [
        [],
        {},
        [True, 1],  # a bool is not a type number
        [99, 1],  # unknown type
        [0],
        [MsgType.ACK],  # too few fields
        [MsgType.ACK, 1, 2],  # too many fields
        [MsgType.ACK, -1],  # negative sequence
        [MsgType.ACK, True],  # bool where an int belongs
        [MsgType.ACK, 1.0],  # float where an int belongs
        [MsgType.ACK, 1 << 63],  # beyond the accepted range
        [MsgType.ALIVE, "", 0, ["h", 1], b""],  # empty name
        [MsgType.ALIVE, "x" * (MAX_NAME_LEN + 1), 0, ["h", 1], b""],  # name too long
        [MsgType.ALIVE, "a", 0, ["h", 65536], b""],  # port out of range
        [MsgType.ALIVE, "a", 0, ["h"], b""],  # address of one part
        [MsgType.ALIVE, "a", 0, ("h", 1, 2), b""],
        [MsgType.ALIVE, "a", 0, ["h", 1], "meta as str"],
        [MsgType.ALIVE, b"a", 0, ["h", 1], b""],  # name as bytes
        [MsgType.INDIRECT_PING, 1, "c", ["h", 1], 1, "a", ["h", 2]],  # 1 is not a bool
        [MsgType.KV, "a", "k" * 129, 1, b"v"],  # key too long
        [MsgType.KV, "a", "k", 1, "v"],  # value as str
        [MsgType.PUSH_PULL, "a", False, [["b", ["h", 1], 0, "zombie", b"", []]]],  # unknown state
        [MsgType.PUSH_PULL, "a", False, [["b", ["h", 1], 0, "alive", b"", [["b", "k", 1]]]]],
        [MsgType.PUSH_PULL, "a", False, {"b": 1}],
        [MsgType.ERROR, "x" * 1025],
    ],
    ids=repr,
)
def test_malformed_messages_refused(obj: Any) -> None:
    with pytest.raises(DecodeError):
        decode_frame(_frame_of(obj))
    with pytest.raises(DecodeError):
        decode_packet(_packet_of(obj))


@pytest.mark.parametrize("bad", ["😀/..", "a/b", "..", ".", "a b", "\x7f", "zero\u200bwidth", "n" * 129])
def test_a_message_naming_an_invalid_member_is_refused_as_invalid_name(bad: str) -> None:
    good = Alive("😀", 0, ("198.18.0.1", 7946), b"")  # printable non-ASCII is a valid name
    assert decode_packet(encode_packet([good])) == [(good, len(encode_message(good)))]
    for msg in (
        Alive(bad, 0, ("198.18.0.1", 7946), b""),
        Suspect("ok", 0, bad),
        KvNotice(bad, "k", 1),
        PushPull("ok", False, (MemberRecord(bad, ("198.18.0.1", 7946), 0, "alive", b"", ()),)),
    ):
        with pytest.raises(InvalidName):
            decode_packet(encode_packet([good, msg]))
        with pytest.raises(InvalidName):
            decode_frame(encode_frame(msg))


def test_one_bad_message_rejects_the_whole_packet() -> None:
    with pytest.raises(DecodeError):
        decode_packet(_packet_of(to_obj(Ack(1)), [MsgType.NACK, "x"], to_obj(Ack(2))))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([WIRE_VERSION]),
        bytes([WIRE_VERSION, 0x90]),  # a packet of zero messages
        encode_packet([Ack(1)]) + b"\x00",  # trailing bytes
        encode_packet([Ack(1), Ack(2)])[:-1],  # truncated
        bytes([WIRE_VERSION, 0x92]) + encode_message(Ack(1)),  # claims two, carries one
        bytes([WIRE_VERSION]) + _pack({"a": 1}),  # not an array
    ],
    ids=repr,
)
def test_malformed_packets_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_packet(data)


@pytest.mark.parametrize(
    "data",
    [b"", bytes([WIRE_VERSION]), encode_frame(Ack(1)) + b"\x00", encode_frame(Ack(1))[:-1]],
    ids=repr,
)
def test_malformed_frames_refused(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(data)


def test_map_keys_must_be_strings() -> None:
    # A map with non-string keys is refused by the unpacker itself (strict_map_key), still as DecodeError.
    with pytest.raises(DecodeError):
        decode_frame(_frame_of({1: 2}))


# --- fuzzing ------------------------------------------------------------------------------------------


@given(st.binary(max_size=300))
@DECODER_SETTINGS
def test_random_bytes_only_raise_decode_error(data: bytes) -> None:
    _decodes_or_refuses(data)
    _decodes_or_refuses(bytes([WIRE_VERSION]) + data)


SHORT_MESSAGES = wire_messages(names=st.text(min_size=1, max_size=12))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid packet or frame with bits flipped, bytes cut, inserted or deleted."""
    messages = draw(st.lists(SHORT_MESSAGES, min_size=1, max_size=4))
    data = bytearray(encode_packet(messages) if draw(st.booleans()) else encode_frame(messages[0]))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[i:]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[i]
    return bytes(data)


@given(mutated())
@DECODER_SETTINGS
def test_mutated_packets_only_raise_decode_error(data: bytes) -> None:
    _decodes_or_refuses(data)


@given(mutated())
@settings(max_examples=200, deadline=None)
def test_whatever_decodes_reencodes_to_the_same_messages(data: bytes) -> None:
    """A mutation that still decodes yields messages that survive their own round trip."""
    try:
        decoded = [m for m, _ in decode_packet(data)]
    except DecodeError:
        return
    assert [m for m, _ in decode_packet(encode_packet(decoded))] == decoded


MSGPACK_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
MSGPACK_OBJECTS = st.recursive(
    MSGPACK_LEAVES,
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def message_shaped(draw: st.DrawFn) -> list[Any]:
    """``[type, ...]`` with arbitrary fields, often of the right arity: reaches every field check."""
    t = draw(st.integers(0, 14))
    arity = {1: 4, 2: 6, 3: 1, 4: 1, 5: 4, 6: 3, 7: 3, 8: 4, 9: 3, 10: 3, 11: 2, 12: 1}.get(t, 2)
    n = draw(st.sampled_from([arity, arity, arity, max(0, arity - 1), arity + 1]))
    field_values = MSGPACK_OBJECTS | st.tuples(st.text(max_size=4), st.integers(-2, 70000)).map(list)
    return [t, *draw(st.lists(field_values, min_size=n, max_size=n))]


@given(MSGPACK_OBJECTS | message_shaped())
@DECODER_SETTINGS
def test_arbitrary_msgpack_objects_only_raise_decode_error(obj: Any) -> None:
    frame = _frame_of(obj)
    try:
        msg = decode_frame(frame)
    except DecodeError:
        pass
    else:
        assert decode_frame(encode_frame(msg)) == msg
    for data in (_packet_of(obj), _packet_of(obj, obj), bytes([WIRE_VERSION]) + _pack(obj)):
        with contextlib.suppress(DecodeError):
            decode_packet(data)
