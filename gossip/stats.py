"""Traffic counters for the debug snapshot: packets and bytes per message type, and what was refused."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from gossip.wire import MsgType


def _type_name(t: int) -> str:
    try:
        return MsgType(t).name.lower()
    except ValueError:
        return f"type{t}"


@dataclass
class TrafficStats:
    datagrams_in: int = 0
    datagrams_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    streams_in: int = 0
    streams_out: int = 0
    stream_failures: int = 0
    decode_failures: int = 0
    auth_failures: int = 0
    invalid_names: int = 0  # well-formed and authentic, but naming a member by a name none may have
    ignored: int = 0
    name_conflicts: int = 0
    # Keyed by the wire type code; names are only worked out for the snapshot.
    msgs_in: Counter[int] = field(default_factory=Counter)
    msg_bytes_in: Counter[int] = field(default_factory=Counter)
    msgs_out: Counter[int] = field(default_factory=Counter)
    msg_bytes_out: Counter[int] = field(default_factory=Counter)

    def count_in(self, msg_type: int, size: int) -> None:
        self.msgs_in[msg_type] += 1
        self.msg_bytes_in[msg_type] += size

    def count_out(self, msg_type: int, size: int) -> None:
        self.msgs_out[msg_type] += 1
        self.msg_bytes_out[msg_type] += size

    def as_dict(self) -> dict[str, Any]:
        per_type = {
            direction: {
                _type_name(code): {"messages": msgs[code], "bytes": sizes[code]} for code in sorted(msgs)
            }
            for direction, msgs, sizes in (
                ("in", self.msgs_in, self.msg_bytes_in),
                ("out", self.msgs_out, self.msg_bytes_out),
            )
        }
        return {
            "datagrams_in": self.datagrams_in,
            "datagrams_out": self.datagrams_out,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "streams_in": self.streams_in,
            "streams_out": self.streams_out,
            "stream_failures": self.stream_failures,
            "decode_failures": self.decode_failures,
            "auth_failures": self.auth_failures,
            "invalid_names": self.invalid_names,
            "ignored": self.ignored,
            "name_conflicts": self.name_conflicts,
            "per_type": per_type,
        }
