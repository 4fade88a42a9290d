"""Gossip messages and their msgpack encoding.

A datagram is one version byte followed by a msgpack array of messages, each itself an array
``[type, field, ...]``. A stream frame carries exactly one message the same way. Decoding is strict:
anything that is not exactly a known shape raises :class:`DecodeError` and nothing else, so a
hostile or corrupt packet can never crash a node or reach the state machine half-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

import msgpack

from common.address import Address
from gossip.names import MAX_NAME_LEN as MAX_NAME_LEN
from gossip.names import name_problem

WIRE_VERSION = 1
MAX_KEY_LEN = 128
# The largest sequence number, incarnation or version the decoder accepts.
MAX_COUNTER = (1 << 63) - 1
# A key query names one of these; every op but ``list`` carries one AES-256 key.
KEY_OPS = ("list", "install", "use", "remove")
KEY_SIZE = 32
MAX_KEY_ANSWER = 64  # fingerprints in one key reply


class DecodeError(ValueError):
    """A packet or frame that is not a well-formed message of this protocol version."""


class InvalidName(DecodeError):
    """A well-formed message that names a member by a name no member may have (:mod:`gossip.names`).
    Only a sender holding the key can produce one, so it is counted apart from corrupt packets."""


class MsgType(IntEnum):
    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    KV = 8
    KV_NOTICE = 9
    PUSH_PULL = 10
    KV_PULL = 11
    ERROR = 12
    APP = 13
    APP_NOTICE = 14
    APP_PULL = 15
    KEY_QUERY = 16
    KEY_REPLY = 17


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str
    source: str
    source_addr: Address


@dataclass(frozen=True, slots=True)
class IndirectPing:
    """Ask a member to probe ``target`` for us (SWIM's ping-req); ``nack`` asks for a nack on timeout."""

    seq: int
    target: str
    target_addr: Address
    nack: bool
    source: str
    source_addr: Address


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int


@dataclass(frozen=True, slots=True)
class Alive:
    name: str
    incarnation: int
    addr: Address
    meta: bytes


@dataclass(frozen=True, slots=True)
class Suspect:
    name: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``sender == name`` means the member left on purpose."""

    name: str
    incarnation: int
    sender: str


@dataclass(frozen=True, slots=True)
class KvUpdate:
    """One node-local key/value; ``value is None`` is a tombstone."""

    node: str
    key: str
    version: int
    value: bytes | None


@dataclass(frozen=True, slots=True)
class KvNotice:
    """A value too large for a datagram exists; fetch it from the sender over a stream."""

    node: str
    key: str
    version: int


@dataclass(frozen=True, slots=True)
class MemberRecord:
    name: str
    addr: Address
    incarnation: int
    state: str
    meta: bytes
    kv: tuple[KvUpdate, ...]


@dataclass(frozen=True, slots=True)
class PushPull:
    sender: str
    join: bool
    members: tuple[MemberRecord, ...]
    app: bytes = b""  # the application's own full state (see gossip.shared), opaque here


@dataclass(frozen=True, slots=True)
class KvPull:
    node: str
    key: str


@dataclass(frozen=True, slots=True)
class ErrorReply:
    reason: str


@dataclass(frozen=True, slots=True)
class AppUpdate:
    """One item of application state that every member replicates; ``key`` names the subject."""

    key: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppNotice:
    """An application item too large for a datagram changed; pull it from the sender if you want it."""

    key: str
    digest: bytes


@dataclass(frozen=True, slots=True)
class AppPull:
    key: str


@dataclass(frozen=True, slots=True)
class KeyQuery:
    """Change (or just list) the receiver's keyring. Travels only sealed, over a stream; ``key`` is
    empty for ``list``. The receiver answers with a :class:`KeyReply`."""

    op: str
    key: bytes

    def __repr__(self) -> str:  # a key must never reach a log line by way of a repr
        return f"KeyQuery(op={self.op!r}, key=<{len(self.key)} bytes>)"


@dataclass(frozen=True, slots=True)
class KeyReply:
    """What a member made of a :class:`KeyQuery`: ``error`` empty when it applied it, and the
    fingerprints of the keys it holds afterwards, its primary first (never the keys themselves)."""

    error: str
    keys: tuple[str, ...]


Message: TypeAlias = (
    Ping
    | IndirectPing
    | Ack
    | Nack
    | Alive
    | Suspect
    | Dead
    | KvUpdate
    | KvNotice
    | PushPull
    | KvPull
    | ErrorReply
    | AppUpdate
    | AppNotice
    | AppPull
    | KeyQuery
    | KeyReply
)

MEMBER_STATES = ("alive", "suspect", "dead", "left")


# --- encoding -----------------------------------------------------------------------------------


def _addr(a: Address) -> list[Any]:
    return [a[0], a[1]]


def _kv(m: KvUpdate) -> list[Any]:
    return [m.node, m.key, m.version, m.value]


def to_obj(msg: Message) -> list[Any]:
    """The msgpack-ready array for one message."""
    match msg:
        case Ping():
            return [MsgType.PING, msg.seq, msg.target, msg.source, _addr(msg.source_addr)]
        case IndirectPing():
            return [
                MsgType.INDIRECT_PING,
                msg.seq,
                msg.target,
                _addr(msg.target_addr),
                msg.nack,
                msg.source,
                _addr(msg.source_addr),
            ]
        case Ack():
            return [MsgType.ACK, msg.seq]
        case Nack():
            return [MsgType.NACK, msg.seq]
        case Alive():
            return [MsgType.ALIVE, msg.name, msg.incarnation, _addr(msg.addr), msg.meta]
        case Suspect():
            return [MsgType.SUSPECT, msg.name, msg.incarnation, msg.sender]
        case Dead():
            return [MsgType.DEAD, msg.name, msg.incarnation, msg.sender]
        case KvUpdate():
            return [MsgType.KV, *_kv(msg)]
        case KvNotice():
            return [MsgType.KV_NOTICE, msg.node, msg.key, msg.version]
        case PushPull():
            return [
                MsgType.PUSH_PULL,
                msg.sender,
                msg.join,
                [
                    [r.name, _addr(r.addr), r.incarnation, r.state, r.meta, [_kv(k) for k in r.kv]]
                    for r in msg.members
                ],
                msg.app,
            ]
        case KvPull():
            return [MsgType.KV_PULL, msg.node, msg.key]
        case ErrorReply():
            return [MsgType.ERROR, msg.reason]
        case AppUpdate():
            return [MsgType.APP, msg.key, msg.payload]
        case AppNotice():
            return [MsgType.APP_NOTICE, msg.key, msg.digest]
        case AppPull():
            return [MsgType.APP_PULL, msg.key]
        case KeyQuery():
            return [MsgType.KEY_QUERY, msg.op, msg.key]
        case KeyReply():
            return [MsgType.KEY_REPLY, msg.error, list(msg.keys)]
    raise TypeError(f"not a gossip message: {msg!r}")  # pragma: no cover


def encode_message(msg: Message) -> bytes:
    """One message as msgpack bytes (no version byte): the unit the broadcast queue sizes."""
    return msgpack.packb(to_obj(msg), use_bin_type=True)  # type: ignore[no-any-return]


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def packet_overhead(n_messages: int) -> int:
    """Bytes a packet adds around its encoded messages."""
    return 1 + len(_array_header(n_messages))


def assemble_packet(encoded: list[bytes]) -> bytes:
    """A datagram from messages already encoded with :func:`encode_message`."""
    return bytes([WIRE_VERSION]) + _array_header(len(encoded)) + b"".join(encoded)


def encode_packet(messages: list[Message]) -> bytes:
    return assemble_packet([encode_message(m) for m in messages])


def encode_frame(msg: Message) -> bytes:
    """A stream frame body: version byte + one message."""
    return bytes([WIRE_VERSION]) + encode_message(msg)


# --- decoding -----------------------------------------------------------------------------------


def _fail(why: str) -> DecodeError:
    return DecodeError(why)


def _int(v: Any, what: str, lo: int = 0, hi: int = MAX_COUNTER) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise _fail(f"{what}: expected an integer in [{lo}, {hi}]")
    return v


def _str(v: Any, what: str, max_len: int = MAX_NAME_LEN, allow_empty: bool = False) -> str:
    if type(v) is not str or len(v) > max_len or (not v and not allow_empty):
        raise _fail(f"{what}: expected a string of 1..{max_len} characters")
    return v


def _member(v: Any, what: str) -> str:
    """A member name; :class:`InvalidName` if it breaks the rule, so the whole packet is refused."""
    if type(v) is not str:
        raise _fail(f"{what}: expected a string")
    problem = name_problem(v)
    if problem is not None:
        raise InvalidName(f"{what}: {problem}")
    return v


def _bytes(v: Any, what: str, max_len: int = 1 << 24) -> bytes:
    if type(v) is not bytes or len(v) > max_len:
        raise _fail(f"{what}: expected bytes of at most {max_len}")
    return v


def _bool(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise _fail(f"{what}: expected a boolean")
    return v


def _list(v: Any, what: str, n: int | None = None) -> list[Any]:
    if type(v) is not list or (n is not None and len(v) != n):
        raise _fail(f"{what}: expected an array" + (f" of {n}" if n is not None else ""))
    return v


def _address(v: Any) -> Address:
    host, port = _list(v, "address", 2)
    return (_str(host, "address host", 255), _int(port, "address port", 0, 65535))


def _kv_fields(f: list[Any]) -> KvUpdate:
    node, key, version, value = f
    return KvUpdate(
        _member(node, "kv node"),
        _str(key, "kv key", MAX_KEY_LEN),
        _int(version, "kv version"),
        None if value is None else _bytes(value, "kv value"),
    )


def _record(v: Any) -> MemberRecord:
    name, addr, inc, state, meta, kv = _list(v, "member record", 6)
    if state not in MEMBER_STATES:
        raise _fail("member record: unknown state")
    return MemberRecord(
        _member(name, "member name"),
        _address(addr),
        _int(inc, "incarnation"),
        state,
        _bytes(meta, "meta", 1 << 16),
        tuple(_kv_fields(_list(k, "kv", 4)) for k in _list(kv, "kv list")),
    )


_ARITY = {
    MsgType.PING: 5,
    MsgType.INDIRECT_PING: 7,
    MsgType.ACK: 2,
    MsgType.NACK: 2,
    MsgType.ALIVE: 5,
    MsgType.SUSPECT: 4,
    MsgType.DEAD: 4,
    MsgType.KV: 5,
    MsgType.KV_NOTICE: 4,
    MsgType.PUSH_PULL: 5,
    MsgType.KV_PULL: 3,
    MsgType.ERROR: 2,
    MsgType.APP: 3,
    MsgType.APP_NOTICE: 3,
    MsgType.APP_PULL: 2,
    MsgType.KEY_QUERY: 3,
    MsgType.KEY_REPLY: 3,
}


# Plain dict lookups: constructing an IntEnum per message is measurable on the hot path.
_TYPES: dict[int, MsgType] = {int(t): t for t in MsgType}

CODE_OF: dict[type, int] = {
    Ping: MsgType.PING,
    IndirectPing: MsgType.INDIRECT_PING,
    Ack: MsgType.ACK,
    Nack: MsgType.NACK,
    Alive: MsgType.ALIVE,
    Suspect: MsgType.SUSPECT,
    Dead: MsgType.DEAD,
    KvUpdate: MsgType.KV,
    KvNotice: MsgType.KV_NOTICE,
    PushPull: MsgType.PUSH_PULL,
    KvPull: MsgType.KV_PULL,
    ErrorReply: MsgType.ERROR,
    AppUpdate: MsgType.APP,
    AppNotice: MsgType.APP_NOTICE,
    AppPull: MsgType.APP_PULL,
    KeyQuery: MsgType.KEY_QUERY,
    KeyReply: MsgType.KEY_REPLY,
}


def key_query(op: Any, key: Any) -> KeyQuery:
    """A well-formed key query, or :class:`DecodeError` (a ValueError) saying what is wrong."""
    if op not in KEY_OPS or type(op) is not str:
        raise _fail(f"key query: op must be one of {', '.join(KEY_OPS)}")
    raw = _bytes(key, "key query key", KEY_SIZE)
    if len(raw) != (0 if op == "list" else KEY_SIZE):
        raise _fail(f"key query: {op} takes {'no key' if op == 'list' else f'a {KEY_SIZE}-byte key'}")
    return KeyQuery(op, raw)


_HEX = frozenset("0123456789abcdef")


def _key_reply(error: Any, keys: Any) -> KeyReply:
    prints = _list(keys, "key reply keys")
    if len(prints) > MAX_KEY_ANSWER:
        raise _fail(f"key reply: more than {MAX_KEY_ANSWER} keys")
    for p in prints:
        if not _str(p, "key fingerprint", 64).isascii() or not set(p) <= _HEX:
            raise _fail("key fingerprint: expected lowercase hex")
    return KeyReply(_str(error, "key reply error", 1024, allow_empty=True), tuple(prints))


def from_obj(obj: Any) -> Message:
    """The message an array describes; :class:`DecodeError` if it describes none."""
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise _fail("message: expected [type, ...]")
    t = _TYPES.get(obj[0])
    if t is None:
        raise _fail(f"message: unknown type {obj[0]}")
    if len(obj) != _ARITY[t]:
        raise _fail(f"{t.name}: expected {_ARITY[t] - 1} fields")
    f = obj[1:]
    match t:
        case MsgType.PING:
            return Ping(_int(f[0], "seq"), _member(f[1], "target"), _member(f[2], "source"), _address(f[3]))
        case MsgType.INDIRECT_PING:
            return IndirectPing(
                _int(f[0], "seq"),
                _member(f[1], "target"),
                _address(f[2]),
                _bool(f[3], "nack"),
                _member(f[4], "source"),
                _address(f[5]),
            )
        case MsgType.ACK:
            return Ack(_int(f[0], "seq"))
        case MsgType.NACK:
            return Nack(_int(f[0], "seq"))
        case MsgType.ALIVE:
            return Alive(
                _member(f[0], "name"),
                _int(f[1], "incarnation"),
                _address(f[2]),
                _bytes(f[3], "meta", 1 << 16),
            )
        case MsgType.SUSPECT:
            return Suspect(_member(f[0], "name"), _int(f[1], "incarnation"), _member(f[2], "sender"))
        case MsgType.DEAD:
            return Dead(_member(f[0], "name"), _int(f[1], "incarnation"), _member(f[2], "sender"))
        case MsgType.KV:
            return _kv_fields(f)
        case MsgType.KV_NOTICE:
            return KvNotice(
                _member(f[0], "kv node"), _str(f[1], "kv key", MAX_KEY_LEN), _int(f[2], "version")
            )
        case MsgType.PUSH_PULL:
            return PushPull(
                _member(f[0], "sender"),
                _bool(f[1], "join"),
                tuple(_record(r) for r in _list(f[2], "members")),
                _bytes(f[3], "app state"),
            )
        case MsgType.KV_PULL:
            return KvPull(_member(f[0], "kv node"), _str(f[1], "kv key", MAX_KEY_LEN))
        case MsgType.ERROR:
            return ErrorReply(_str(f[0], "reason", 1024, allow_empty=True))
        case MsgType.APP:
            return AppUpdate(_str(f[0], "app key", MAX_KEY_LEN), _bytes(f[1], "app payload"))
        case MsgType.APP_NOTICE:
            return AppNotice(_str(f[0], "app key", MAX_KEY_LEN), _bytes(f[1], "app digest", 64))
        case MsgType.APP_PULL:
            return AppPull(_str(f[0], "app key", MAX_KEY_LEN))
        case MsgType.KEY_QUERY:
            return key_query(f[0], f[1])
        case MsgType.KEY_REPLY:
            return _key_reply(f[0], f[1])
    raise _fail("unreachable")  # pragma: no cover


def _unpack(data: bytes) -> Any:
    if not data:
        raise _fail("empty packet")
    if data[0] != WIRE_VERSION:
        raise _fail(f"unsupported wire version {data[0]}")
    try:
        return msgpack.unpackb(
            data[1:],
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises many types (ExtraData, FormatError, ValueError, ...)
        raise _fail(f"malformed msgpack: {type(exc).__name__}") from None


def decode_packet(data: bytes) -> list[tuple[Message, int]]:
    """Each message of a datagram with its encoded size; one bad message rejects the whole packet."""
    if not data:
        raise _fail("empty packet")
    if data[0] != WIRE_VERSION:
        raise _fail(f"unsupported wire version {data[0]}")
    unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=True, max_buffer_size=len(data))
    unpacker.feed(data[1:])
    out: list[tuple[Message, int]] = []
    try:
        n = unpacker.read_array_header()
        if n == 0:
            raise _fail("packet: no messages")
        for _ in range(n):
            start = unpacker.tell()
            obj = unpacker.unpack()
            out.append((from_obj(obj), unpacker.tell() - start))
    except DecodeError:
        raise
    except Exception as exc:  # msgpack raises many types (OutOfData, FormatError, ValueError, ...)
        raise _fail(f"malformed msgpack: {type(exc).__name__}") from None
    if unpacker.tell() != len(data) - 1:
        raise _fail("packet: trailing bytes")
    return out


def decode_frame(data: bytes) -> Message:
    return from_obj(_unpack(data))
