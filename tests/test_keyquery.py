"""Keyring rotation: the ring's rules, the key query messages, and a live rotation across a simulated
cluster of Trio-driven nodes (in-memory network, MockClock) with traffic flowing throughout."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import msgpack
import pytest
import trio
import trio.testing

from gossip.config import GossipConfig
from gossip.events import EventKind, MemberEvent
from gossip.keyquery import KeyAnswer, MemoryKeys
from gossip.keyring import MAX_KEYS, Keyring, KeyringError, Sealer, fingerprint
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode
from gossip.swim import Swim
from gossip.wire import (
    WIRE_VERSION,
    DecodeError,
    KeyQuery,
    KeyReply,
    MsgType,
    decode_frame,
    encode_frame,
    key_query,
)
from labs.kit.wait import eventually

OLD = b"\x01" * 32
NEW = b"\x02" * 32
OTHER = b"\x03" * 32


# --- the ring's rules ------------------------------------------------------------------------------


def test_install_appends_and_is_idempotent() -> None:
    ring = Keyring([OLD])
    assert ring.planned("install", NEW) == (OLD, NEW)
    assert ring.keys == (OLD,)  # planning changes nothing
    ring.replace(ring.planned("install", NEW))
    assert ring.planned("install", NEW) == (OLD, NEW)


def test_use_moves_an_installed_key_first_and_keeps_the_rest_in_order() -> None:
    ring = Keyring([OLD, NEW, OTHER])
    assert ring.planned("use", OTHER) == (OTHER, OLD, NEW)
    assert ring.planned("use", OLD) == (OLD, NEW, OTHER)
    with pytest.raises(KeyringError, match=f"key {fingerprint(b'9' * 32)} is not installed"):
        ring.planned("use", b"9" * 32)


def test_remove_refuses_the_primary_and_is_idempotent_for_an_absent_key() -> None:
    ring = Keyring([OLD, NEW])
    with pytest.raises(KeyringError, match="is the primary key"):
        ring.planned("remove", OLD)
    assert ring.planned("remove", NEW) == (OLD,)
    assert ring.planned("remove", OTHER) == (OLD, NEW)


def test_bad_operations_and_keys_are_refused() -> None:
    ring = Keyring([OLD])
    with pytest.raises(KeyringError, match="unknown key operation"):
        ring.planned("rotate", NEW)
    with pytest.raises(KeyringError, match="expected a 32-byte key, got 5"):
        ring.planned("install", b"short")
    full = Keyring([bytes([i]) * 32 for i in range(MAX_KEYS)])
    with pytest.raises(KeyringError, match=f"already holds {MAX_KEYS} keys"):
        full.planned("install", b"\xff" * 32)
    assert ring.planned("list", b"") == (OLD,)


def test_replace_swaps_the_sending_key_and_the_keys_that_open() -> None:
    sender, receiver = Sealer(Keyring([OLD]), "c"), Sealer(Keyring([OLD]), "c")
    assert receiver.keyring is not None and sender.keyring is not None
    receiver.keyring.replace((OLD, NEW))
    old_blob = sender.seal(b"x")
    sender.keyring.replace((NEW,))
    assert receiver.open(sender.seal(b"y")) == b"y"  # opened with the second key
    receiver.keyring.replace((NEW,))
    with pytest.raises(DecodeError):
        receiver.open(old_blob)
    with pytest.raises(KeyringError):
        receiver.keyring.replace(())


def test_fingerprint_is_the_start_of_the_sha256_of_the_raw_key() -> None:
    assert fingerprint(OLD) == "72cd6e8422c4"  # echo AQEB...AQ== | base64 -d | sha256sum
    assert Keyring([OLD, NEW]).fingerprints() == (fingerprint(OLD), fingerprint(NEW))


# --- the messages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "msg",
    [
        KeyQuery("list", b""),
        KeyQuery("install", NEW),
        KeyQuery("use", NEW),
        KeyQuery("remove", OLD),
        KeyReply("", ("72cd6e8422c4", "abcdef012345")),
        KeyReply("key 72cd6e8422c4 is the primary key; use another key first", ()),
    ],
)
def test_key_messages_round_trip(msg: KeyQuery | KeyReply) -> None:
    assert decode_frame(encode_frame(msg)) == msg


def _frame(*fields: object) -> bytes:
    packed: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return bytes([WIRE_VERSION]) + packed


@pytest.mark.parametrize(
    "frame",
    [
        _frame(MsgType.KEY_QUERY, "rotate", NEW),  # unknown op
        _frame(MsgType.KEY_QUERY, "install", b"short"),  # wrong length
        _frame(MsgType.KEY_QUERY, "install", b""),  # no key
        _frame(MsgType.KEY_QUERY, "list", NEW),  # list takes none
        _frame(MsgType.KEY_QUERY, "install", "AQEBAQ=="),  # text, not bytes
        _frame(MsgType.KEY_QUERY, "install"),  # missing field
        _frame(MsgType.KEY_REPLY, "", ["NOT-HEX"]),
        _frame(MsgType.KEY_REPLY, "", ["ab"] * 65),  # too many keys
        _frame(MsgType.KEY_REPLY, 7, []),
    ],
)
def test_malformed_key_messages_are_refused(frame: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(frame)


def test_a_key_never_shows_in_a_query_repr() -> None:
    assert NEW.hex() not in repr(KeyQuery("install", NEW)) and str(NEW) not in repr(KeyQuery("install", NEW))
    with pytest.raises(DecodeError, match="takes a 32-byte key"):
        key_query("use", b"")


# --- a live rotation across a simulated cluster ----------------------------------------------------


@pytest.fixture(autouse=True)
def _quiet_gossip_log() -> Iterator[None]:
    logger = logging.getLogger("wiremesh.gossip")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@dataclass
class Ring:
    """Nodes that each hold their own keyring object, as separate machines would."""

    net: MemoryNetwork
    nursery: trio.Nursery
    config: GossipConfig
    nodes: dict[str, GossipNode] = field(default_factory=dict)
    rings: dict[str, Keyring] = field(default_factory=dict)
    cores: dict[str, Swim] = field(default_factory=dict)
    scopes: dict[str, trio.CancelScope] = field(default_factory=dict)
    seen: list[tuple[str, MemberEvent]] = field(default_factory=list)

    async def add(self, name: str, index: int, keys: tuple[bytes, ...]) -> GossipNode:
        addr = (f"198.18.0.{index}", 7946)
        ring = Keyring(keys)
        core = Swim(self.config, name, addr, Sealer(ring, "sim"), random.Random(index), trio.current_time())
        node = GossipNode(core, self.net.endpoint(addr), keys=MemoryKeys(ring))
        self.nodes[name], self.rings[name], self.cores[name] = node, ring, core
        self.scopes[name] = await self.nursery.start(self._run, name, node)
        return node

    async def _run(
        self, name: str, node: GossipNode, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        with trio.CancelScope() as scope:
            events = node.subscribe(max_buffer=100_000)
            async with trio.open_nursery() as inner:
                await inner.start(node.run)
                inner.start_soon(self._traffic, node)
                task_status.started(scope)
                async for event in events:
                    self.seen.append((name, event))

    @staticmethod
    async def _traffic(node: GossipNode) -> None:
        """Application traffic besides the probes: a node-local value rewritten every 100 ms."""
        for i in range(100_000):
            await node.set_kv("tick", str(i).encode())
            await trio.sleep(0.1)

    def kill(self, name: str) -> None:
        self.net.kill(self.nodes[name].core.addr)
        self.scopes[name].cancel()

    def alive_views(self) -> list[int]:
        return [n.core.alive_count() for name, n in self.nodes.items() if not self.scopes[name].cancel_called]

    def failures(self) -> list[tuple[str, MemberEvent]]:
        return [(who, e) for who, e in self.seen if e.kind in (EventKind.SUSPECT, EventKind.DEAD)]

    def auth_failures(self) -> int:
        return sum(core.stats.auth_failures for core in self.cores.values())


@asynccontextmanager
async def ring_of(n: int, keys: tuple[bytes, ...] = (OLD,)) -> AsyncIterator[Ring]:
    net = MemoryNetwork(random.Random(3), default_latency=0.002)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        r = Ring(net, nursery, GossipConfig())
        for i in range(n):
            await r.add(f"n{i}", i + 1, keys)
        for i in range(1, n):
            await r.nodes[f"n{i}"].join([r.nodes["n0"].core.addr], attempts=10)
        await eventually(lambda: min(r.alive_views()) == n, timeout=60, poll=0.2)
        yield r
        nursery.cancel_scope.cancel()


def _oks(answers: dict[str, KeyAnswer | None]) -> dict[str, str | None]:
    return {name: "no answer" if a is None else a.error for name, a in answers.items()}


async def test_install_use_remove_on_every_member_under_traffic(clock: trio.testing.MockClock) -> None:
    async with ring_of(4) as r:
        names = sorted(r.nodes)
        initiator = r.nodes["n2"]
        await trio.sleep(5)

        answers = await initiator.rotate_keys("install", NEW)
        assert _oks(answers) == dict.fromkeys(names)
        assert all(a is not None and a.keys == (fingerprint(OLD), fingerprint(NEW)) for a in answers.values())
        await trio.sleep(3)

        answers = await initiator.rotate_keys("use", NEW)
        assert _oks(answers) == dict.fromkeys(names)
        assert all(a is not None and a.primary == fingerprint(NEW) for a in answers.values())
        await trio.sleep(3)

        answers = await initiator.rotate_keys("remove", OLD)
        assert _oks(answers) == dict.fromkeys(names)
        assert {name: ring.keys for name, ring in r.rings.items()} == dict.fromkeys(names, (NEW,))
        listed = await r.nodes["n0"].rotate_keys("list", b"")
        assert {a.keys for a in listed.values() if a is not None} == {(fingerprint(NEW),)}
        await trio.sleep(10)  # a few probe rounds on the new key alone

        assert r.failures() == []
        assert r.auth_failures() == 0  # no datagram was ever sealed with a key its receiver lacked
        assert min(r.alive_views()) == 4

        # A machine holding only the new key joins; one holding only the old key no longer can.
        newcomer = await r.add("fresh", 10, (NEW,))
        assert await newcomer.join([r.nodes["n0"].core.addr], attempts=3, retry_interval=1.0)
        stale = await r.add("stale", 11, (OLD,))
        assert not await stale.join([r.nodes["n0"].core.addr], attempts=3, retry_interval=1.0)
        await eventually(lambda: r.nodes["n0"].core.alive_count() == 5, timeout=30, poll=0.2)
        assert stale.core.alive_count() == 1
        assert r.cores["n0"].stats.auth_failures > 0  # the stale machine's traffic, refused


async def test_refused_here_means_nothing_is_sent_anywhere(clock: trio.testing.MockClock) -> None:
    async with ring_of(3) as r:
        initiator = r.nodes["n0"]
        streams = initiator.stats.stream_requests
        with pytest.raises(KeyringError, match="is not installed"):
            await initiator.rotate_keys("use", NEW)
        with pytest.raises(KeyringError, match="is the primary key"):
            await initiator.rotate_keys("remove", OLD)
        with pytest.raises(KeyringError, match="expected a 32-byte key"):
            await initiator.rotate_keys("install", b"short")
        assert initiator.stats.stream_requests == streams
        assert {name: ring.keys for name, ring in r.rings.items()} == dict.fromkeys(r.rings, (OLD,))


async def test_each_member_answers_for_itself_and_a_dead_one_not_at_all(
    clock: trio.testing.MockClock,
) -> None:
    async with ring_of(4) as r:
        r.rings["n3"].replace((OLD, NEW))  # only n3 and the initiator hold NEW
        r.rings["n0"].replace((OLD, NEW))
        r.kill("n2")
        answers = await r.nodes["n0"].rotate_keys("use", NEW, timeout=2.0)
        assert answers["n0"] == KeyAnswer(None, (fingerprint(NEW), fingerprint(OLD)))
        assert answers["n3"] == KeyAnswer(None, (fingerprint(NEW), fingerprint(OLD)))
        n1 = answers["n1"]
        assert n1 is not None and n1.error is not None and "not installed" in n1.error
        assert n1.keys == (fingerprint(OLD),)
        assert answers["n2"] is None
        assert r.rings["n1"].keys == (OLD,)
