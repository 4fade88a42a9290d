"""The members a node remembers across restarts, sans I/O: which ones, and the bytes of the file.

A node that restarts without seeds (the first agent of a cluster usually has none) would otherwise
come back alone: the others marked it left or dead, and nobody contacts a member that left. So, like
serf's snapshot, a node keeps the members it knew and, on start, joins them besides its seeds. One
that answers hands back the full state, which makes us refute the stale "left" and be re-admitted.

What is kept: members still in our table (not reaped), ourselves excepted; the live ones (alive,
then suspect) before those that left or died, and within each group the most recent change first;
at most ``limit`` of them. Members that left or died are kept (after every live one) because in a
whole-cluster restart the member that stopped first is the one the others must find again.

The driver (:mod:`gossip.node`) reads and writes the file; this module only says what is in it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from common.address import Address, format_address, split_hostport
from gossip.events import MemberInfo, MemberState

FORMAT_VERSION = 1
DEFAULT_LIMIT = 16
SNAPSHOT_FILE = "members.json"  # its name in the state dir
# A file bigger than this is not one we wrote: refuse it rather than parse it.
MAX_FILE_SIZE = 256 * 1024

_RANK = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.LEFT: 2, MemberState.DEAD: 2}


class SnapshotError(ValueError):
    """The bytes are not a snapshot this version reads."""


@dataclass(frozen=True, slots=True)
class Remembered:
    """One remembered member: enough to contact it again."""

    name: str
    addr: Address
    state: MemberState


def remember(members: Iterable[MemberInfo], own_name: str, limit: int = DEFAULT_LIMIT) -> list[Remembered]:
    """The members worth keeping, best first (see the module docstring for the rule)."""
    others = [m for m in members if m.name != own_name]
    others.sort(key=lambda m: (_RANK[m.state], -m.since, m.name))
    return [Remembered(m.name, m.addr, m.state) for m in others[: max(0, limit)]]


def encode(remembered: Sequence[Remembered], written_at: float) -> bytes:
    """The file's bytes; ``written_at`` (wall clock, Unix seconds) is for the operator only."""
    doc = {
        "version": FORMAT_VERSION,
        "written_at": round(written_at, 3),
        "members": [
            {"name": r.name, "addr": format_address(r.addr), "state": r.state.value} for r in remembered
        ],
    }
    return (json.dumps(doc, indent=1) + "\n").encode()


def decode(data: bytes, limit: int = DEFAULT_LIMIT) -> list[Remembered]:
    """The remembered members, at most ``limit`` (the file may have been edited by hand)."""
    if len(data) > MAX_FILE_SIZE:
        raise SnapshotError(f"{len(data)} bytes, more than a snapshot can be")
    try:
        doc = json.loads(data)
    except ValueError as exc:  # UnicodeDecodeError included
        raise SnapshotError(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise SnapshotError("not a JSON object")
    version = doc.get("version")
    if version != FORMAT_VERSION:
        raise SnapshotError(f"version {version!r}; this agent reads version {FORMAT_VERSION}")
    entries = doc.get("members")
    if not isinstance(entries, list):
        raise SnapshotError("'members' is not a list")
    out: list[Remembered] = []
    for i, entry in enumerate(entries[: max(0, limit)]):
        if not isinstance(entry, dict):
            raise SnapshotError(f"members[{i}] is not an object")
        name, addr, state = entry.get("name"), entry.get("addr"), entry.get("state")
        if not isinstance(name, str) or not name or not isinstance(addr, str) or not isinstance(state, str):
            raise SnapshotError(f"members[{i}] needs 'name', 'addr' and 'state' strings")
        try:
            out.append(Remembered(name, split_hostport(addr), MemberState(state)))
        except ValueError as exc:
            raise SnapshotError(f"members[{i}]: {exc}") from None
    return out


def join_targets(seeds: Sequence[Address], remembered: Sequence[Remembered], own: Address) -> list[Address]:
    """The configured seeds, then the remembered members' addresses; each once, never our own."""
    out: list[Address] = []
    for addr in [*seeds, *(r.addr for r in remembered)]:
        if addr != own and addr not in out:
            out.append(addr)
    return out
