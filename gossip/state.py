"""One member as this node believes it to be."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.address import Address
from gossip.events import MemberInfo, MemberState
from gossip.wire import KvUpdate, MemberRecord

KvStore = dict[str, tuple[int, bytes | None]]

LIVE_STATES = (MemberState.ALIVE, MemberState.SUSPECT)


@dataclass(slots=True)
class Member:
    name: str
    addr: Address
    incarnation: int
    state: MemberState
    since: float
    meta: bytes = b""
    kv: KvStore = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    def info(self) -> MemberInfo:
        return MemberInfo(
            self.name, self.addr, self.incarnation, self.state, self.since, self.meta, dict(self.kv)
        )

    def record(self) -> MemberRecord:
        kv = tuple(KvUpdate(self.name, k, v, val) for k, (v, val) in self.kv.items())
        return MemberRecord(self.name, self.addr, self.incarnation, self.state.value, self.meta, kv)
