"""The remembered-members snapshot: its format and selection (sans I/O) and the driver's file I/O."""

from __future__ import annotations

import json
import logging
import os
import random
import stat
from functools import partial
from pathlib import Path

import pytest
import trio
from trio.testing import MockClock

from common.files import write_file_atomically
from gossip.config import GossipConfig
from gossip.events import MemberInfo, MemberState
from gossip.keyring import Keyring, Sealer
from gossip.memnet import MemoryNetwork
from gossip.node import GossipNode, read_snapshot
from gossip.snapshot import (
    DEFAULT_LIMIT,
    MAX_FILE_SIZE,
    Remembered,
    SnapshotError,
    decode,
    encode,
    join_targets,
    remember,
)
from gossip.swim import Swim
from labs.kit.wait import eventually
from tests.conftest import watchdog

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT


def info(name: str, state: MemberState, since: float, port: int = 7946) -> MemberInfo:
    return MemberInfo(name, ("198.18.0.1", port), 0, state, since, b"")


# --- which members, in what order ---------------------------------------------------------------


def test_live_members_come_first_then_the_gone_ones_most_recent_change_first() -> None:
    members = [
        info("me", ALIVE, 0.0),
        info("old-alive", ALIVE, 1.0),
        info("new-alive", ALIVE, 5.0),
        info("suspect", SUSPECT, 9.0),
        info("left", LEFT, 8.0),
        info("dead", DEAD, 7.0),
    ]
    assert [r.name for r in remember(members, "me")] == ["new-alive", "old-alive", "suspect", "left", "dead"]


def test_the_snapshot_is_bounded() -> None:
    members = [info(f"n{i}", ALIVE, float(i), 7000 + i) for i in range(40)] + [info("gone", LEFT, 99.0)]
    kept = remember(members, "me")
    assert len(kept) == DEFAULT_LIMIT
    assert [r.name for r in kept] == [f"n{i}" for i in range(39, 39 - DEFAULT_LIMIT, -1)]
    assert len(remember(members, "me", limit=3)) == 3


def test_join_targets_are_the_seeds_then_the_remembered_once_each_never_ourselves() -> None:
    own, seed, b, c = ("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1), ("10.0.0.4", 1)
    remembered = [Remembered("a", own, ALIVE), Remembered("b", b, ALIVE), Remembered("s", seed, LEFT)]
    remembered.append(Remembered("c", c, DEAD))
    assert join_targets([seed, own], remembered, own) == [seed, b, c]
    assert join_targets([], [], own) == []


# --- the format --------------------------------------------------------------------------------------


def test_round_trip() -> None:
    kept = [Remembered("b", ("127.0.0.1", 7956), ALIVE), Remembered("c", ("::1", 7966), LEFT)]
    data = encode(kept, 1_764_000_000.25)
    assert decode(data) == kept
    doc = json.loads(data)
    assert doc["version"] == 1
    assert doc["members"][1] == {"name": "c", "addr": "[::1]:7966", "state": "left"}


def test_decoding_is_bounded_too() -> None:
    kept = [Remembered(f"n{i}", ("127.0.0.1", 7000 + i), ALIVE) for i in range(30)]
    assert decode(encode(kept, 0.0)) == kept[:DEFAULT_LIMIT]  # a hand-edited file cannot make us dial 30
    assert len(decode(encode(kept, 0.0), limit=30)) == 30
    with pytest.raises(SnapshotError, match="more than"):
        decode(b" " * (MAX_FILE_SIZE + 1))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe",
        b"{not json",
        b"[]",
        b'{"version": 2, "members": []}',
        b'{"members": []}',
        b'{"version": 1, "members": {}}',
        b'{"version": 1, "members": [7]}',
        b'{"version": 1, "members": [{"name": "b", "addr": "127.0.0.1", "state": "alive"}]}',
        b'{"version": 1, "members": [{"name": "b", "addr": "127.0.0.1:1", "state": "happy"}]}',
        b'{"version": 1, "members": [{"name": "", "addr": "127.0.0.1:1", "state": "alive"}]}',
        b'{"version": 1, "members": [{"addr": "127.0.0.1:1", "state": "alive"}]}',
    ],
)
def test_malformed_snapshots_are_refused(data: bytes) -> None:
    with pytest.raises(SnapshotError):
        decode(data)


# --- the file ----------------------------------------------------------------------------------------


def test_written_atomically_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "members.json"
    leftover = tmp_path / f".members.json.{os.getpid()}.tmp"
    leftover.write_bytes(b"half")
    leftover.chmod(0o644)
    old_umask = os.umask(0)
    try:
        write_file_atomically(path, b"one")
        write_file_atomically(path, b"two")
    finally:
        os.umask(old_umask)
    assert path.read_bytes() == b"two"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["members.json"]  # no temporary file left


async def test_a_missing_snapshot_is_nothing_remembered(tmp_path: Path) -> None:
    assert await read_snapshot(tmp_path / "members.json") == []


async def test_a_corrupt_or_unreadable_snapshot_is_logged_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_bytes(b'{"version": 1, "members": [')
    unreadable = tmp_path / "unreadable.json"
    unreadable.mkdir()  # reading it fails with an OSError
    with caplog.at_level(logging.WARNING, logger="wiremesh.gossip"):
        assert await read_snapshot(corrupt) == []
        assert await read_snapshot(unreadable) == []
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"ignoring the member snapshot {corrupt}",
        f"ignoring the member snapshot {unreadable}",
    ]


# --- the driver keeps it -------------------------------------------------------------------------


async def test_the_node_keeps_the_members_it_knows(clock: MockClock, tmp_path: Path) -> None:
    async def write_here(target: Path, data: bytes) -> None:
        write_file_atomically(target, data)  # on the Trio thread: virtual time must not run on meanwhile

    net = MemoryNetwork(random.Random(1), default_latency=0.01)
    config = GossipConfig()
    sealer = Sealer(Keyring([b"\x11" * 32]), "snap")
    path = tmp_path / "members.json"

    def node(name: str, index: int) -> GossipNode:
        addr = (f"198.18.0.{index}", 7946)
        return GossipNode(
            Swim(config, name, addr, sealer, random.Random(index), trio.current_time()), net.endpoint(addr)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watchdog)
        nursery.start_soon(net.run)
        a, b, c = node("a", 1), node("b", 2), node("c", 3)
        for n in (a, b, c):
            await nursery.start(n.run)
        await nursery.start(partial(a.keep_snapshot, path, min_interval=5.0, write=write_here))
        await trio.sleep(10.0)
        assert not path.exists()  # nothing changed yet: an old snapshot would survive a lonely start
        joined_at = trio.current_time()
        assert await b.join([a.core.addr])

        def remembered() -> list[str]:
            # read on the Trio thread: under MockClock, virtual time runs on while a worker thread works
            return sorted(r.name for r in decode(path.read_bytes())) if path.exists() else []

        assert await eventually(remembered, what="a remembers b", poll=0.1) == ["b"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert await c.join([a.core.addr])
        await trio.sleep_until(joined_at + 4.0)
        assert remembered() == ["b"]  # rate-limited: the first write was at most 5 s ago

        def both() -> bool:
            return remembered() == ["b", "c"]

        assert await eventually(both, what="a remembers c too")
        assert trio.current_time() >= joined_at + 5.0
        nursery.cancel_scope.cancel()
