"""The application's replicated state, as the gossip layer sees it (memberlist's delegate, sans I/O).

Gossip carries the application's items without understanding them: a changed item is piggybacked
on datagrams (or, when too large, announced by a digest and pulled over a stream from whoever
announced it), and the application's full state rides on every push-pull so replicas that missed
a broadcast, or sat on the other side of a partition, converge. The application decides what
"newer" means (a version, a clock); gossip only asks it.
"""

from __future__ import annotations

from typing import Protocol


class SharedState(Protocol):
    def receive(self, key: str, payload: bytes, now: float) -> bool:
        """Fold in one item; True when it changed our state (gossip then passes it on)."""
        ...

    def get(self, key: str) -> bytes | None:
        """Our current item for ``key``, for a peer that pulls it."""
        ...

    def wants(self, key: str, digest: bytes) -> bool:
        """Whether an item we have not seen (``digest`` of its payload) is worth pulling."""
        ...

    def full_state(self) -> bytes:
        """Everything, for push-pull."""
        ...

    def merge_full_state(self, data: bytes, now: float) -> None:
        """Fold in a peer's full state; must be idempotent and ignore what it cannot decode."""
        ...
