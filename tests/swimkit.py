"""A tiny deterministic harness that wires a few :class:`~gossip.swim.Swim` cores together in-process.

No sockets, no Trio, no clock: the harness owns ``now``. It delivers datagrams between cores (after an
optional fixed latency, subject to drop rules), answers stream requests by calling the peer's
``handle_stream`` and feeding the reply back through ``stream_result``, advances time to the earliest
``next_deadline()`` (or pending delivery) and ticks every core that is due, and records every datagram
sent (decoded) and every event published, stamped with the time. Same seed, same run.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar, overload

from hypothesis import strategies as st

from common.address import Address
from gossip.config import GossipConfig
from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
from gossip.keyquery import MemoryKeys
from gossip.keyring import Keyring, Sealer
from gossip.names import is_member_name
from gossip.swim import StreamRequest, Swim
from gossip.wire import (
    MAX_KEY_LEN,
    MAX_NAME_LEN,
    MEMBER_STATES,
    Ack,
    Alive,
    AppNotice,
    AppPull,
    AppUpdate,
    Dead,
    DecodeError,
    ErrorReply,
    IndirectPing,
    KeyQuery,
    KeyReply,
    KvNotice,
    KvPull,
    KvUpdate,
    MemberRecord,
    Message,
    Nack,
    Ping,
    PushPull,
    Suspect,
    decode_frame,
    decode_packet,
    encode_packet,
)

M = TypeVar(
    "M", Ping, IndirectPing, Ack, Nack, Alive, Suspect, Dead, KvUpdate, KvNotice, PushPull, KvPull, ErrorReply
)

CLUSTER = "wiremesh-test"
PORT = 7946

# Only the timers under test fire often: push-pull and reconnect wait up to 1000 s for their first,
# randomly placed, tick (so a long run may still see one) unless a test asks for them.
QUIET = GossipConfig(push_pull_interval=1000.0, reconnect_interval=1000.0)


def node_addr(index: int) -> Address:
    """Underlay addresses from the benchmarking range; nothing is ever sent to them."""
    return (f"198.18.0.{index}", PORT)


def make_sealer(keyring: Keyring | None, name: str, cluster: str = CLUSTER, life: int = 0) -> Sealer:
    """A node's sealer, with nonces from a generator seeded by its name and life, so encrypted runs
    are reproducible (and no two nodes, nor two lives of one node, repeat a nonce)."""
    rng = random.Random(f"nonce:{name}:{life}")
    return Sealer(keyring, cluster, nonce_source=rng.randbytes)


@dataclass(frozen=True, slots=True)
class Sent:
    """One datagram as it left a node; ``messages`` is empty when it could not be opened."""

    at: float
    src: str
    dst: Address
    dst_name: str | None
    data: bytes
    messages: tuple[Message, ...]
    dropped: bool


@dataclass(frozen=True, slots=True)
class Traffic:
    """What a drop rule is asked about: one datagram, or one stream connection (both directions)."""

    src: str
    dst: str
    stream: bool
    messages: tuple[Message, ...]


# A drop rule returns True to lose the traffic.
DropRule = Callable[[Traffic], bool]


@dataclass(frozen=True, slots=True)
class StreamSent:
    """One stream request as it was opened; ``message`` is the decoded request."""

    at: float
    src: str
    dst_name: str | None
    message: Message | None
    dropped: bool


@dataclass(frozen=True, slots=True)
class Seen:
    """One event as ``observer`` published it."""

    observer: str
    event: MemberEvent


@dataclass(order=True, slots=True)
class _Pending:
    when: float
    seq: int
    action: Callable[[], None] = field(compare=False)


class Harness:
    """Several cores on one simulated network; ``now`` only moves when the harness is told to run."""

    def __init__(
        self,
        config: GossipConfig = QUIET,
        *,
        seed: int = 0,
        keyring: Keyring | None = None,
        latency: float = 0.0,
        start: float = 100.0,
    ) -> None:
        self.config = config
        self.seed = seed
        self.keyring = keyring
        self.latency = latency
        self.now = start
        self.nodes: dict[str, Swim] = {}  # running cores, in the order they were added
        self.sealers: dict[str, Sealer] = {}
        self.addrs: dict[str, Address] = {}
        self.by_addr: dict[Address, str] = {}
        self.sent: list[Sent] = []
        self.streams: list[StreamSent] = []
        self.seen: list[Seen] = []
        self.rules: list[DropRule] = []
        self._pending: list[_Pending] = []
        self._seq = itertools.count()
        self._lives: dict[str, int] = {}

    # --- membership of the harness -----------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        incarnation: int = 0,
        meta: bytes = b"",
        keyring: Keyring | str | None = "cluster",  # "cluster" means the harness keyring
        cluster: str = CLUSTER,
        config: GossipConfig | None = None,
    ) -> Swim:
        """Start a core called ``name`` (again, at its old address, if it ran before)."""
        if name in self.nodes:
            raise ValueError(f"{name} is already running")
        if name not in self.addrs:
            addr = node_addr(len(self.addrs) + 1)
            self.addrs[name] = addr
            self.by_addr[addr] = name
        ring = self.keyring if isinstance(keyring, str) else keyring
        life = self._lives.get(name, 0)
        self._lives[name] = life + 1
        sealer = make_sealer(ring, name, cluster, life)
        node = Swim(
            config or self.config,
            name,
            self.addrs[name],
            sealer,
            random.Random(f"{self.seed}:{name}:{life}"),
            self.now,
            meta=meta,
            incarnation=incarnation,
        )
        self.nodes[name] = node
        self.sealers[name] = sealer
        self._collect(name)
        return node

    def cluster(self, *names: str) -> list[Swim]:
        """Start ``names``, join each to the first, and run until everyone sees everyone alive."""
        nodes = [self.add(n) for n in names]
        for n in names[1:]:
            self.join(n, names[0])
        assert self.run_until(lambda: self.converged(names), 30.0), "cluster did not converge"
        return nodes

    def crash(self, name: str) -> None:
        """Stop ``name`` dead: it is never ticked again and traffic to it vanishes."""
        del self.nodes[name]

    def addr(self, name: str) -> Address:
        return self.addrs[name]

    # --- network control ---------------------------------------------------------------------

    def drop(self, rule: DropRule) -> DropRule:
        self.rules.append(rule)
        return rule

    def isolate(self, name: str) -> DropRule:
        """Lose everything to and from ``name``."""
        return self.drop(lambda t: name in (t.src, t.dst))

    def deafen(self, name: str) -> DropRule:
        """Lose every datagram sent to ``name`` and every stream it takes part in."""
        return self.drop(lambda t: t.dst == name or (t.stream and t.src == name))

    def heal(self, rule: DropRule | None = None) -> None:
        if rule is None:
            self.rules.clear()
        else:
            self.rules.remove(rule)

    def _dropped(self, src: str, dst: str | None, stream: bool, messages: tuple[Message, ...]) -> bool:
        if dst is None or dst not in self.nodes:
            return True
        traffic = Traffic(src, dst, stream, messages)
        return any(rule(traffic) for rule in self.rules)

    # --- inputs --------------------------------------------------------------------------------

    def join(self, name: str, *seeds: str) -> None:
        self.nodes[name].join([self.addrs[s] for s in seeds], self.now)
        self._collect(name)
        self._settle()

    def inject(self, name: str, src: Address, data: bytes) -> None:
        """Hand ``name`` a raw datagram from ``src`` right now."""
        self.nodes[name].receive_datagram(src, data, self.now)
        self._collect(name)
        self._settle()

    def inject_messages(self, name: str, src: Address, messages: list[Message]) -> None:
        """Hand ``name`` a datagram of ``messages``, sealed as the cluster seals them."""
        self.inject(name, src, seal(messages, self.keyring))

    def call(self, name: str, action: Callable[[Swim], object]) -> None:
        """Do something to one core now (``set_kv``, ``leave``, ...) and let its output flow."""
        action(self.nodes[name])
        self._collect(name)
        self._settle()

    # --- time ----------------------------------------------------------------------------------

    def next_time(self) -> float:
        t = min((n.next_deadline() for n in self.nodes.values()), default=float("inf"))
        if self._pending:
            t = min(t, self._pending[0].when)
        return t

    def step(self) -> None:
        """Jump to the next deadline or delivery and run everything due then."""
        t = self.next_time()
        if t == float("inf"):
            raise RuntimeError("nothing left to happen")
        self.now = max(self.now, t)
        self._settle()

    def run_until_time(self, t: float) -> None:
        while self.next_time() <= t:
            self.step()
        self.now = max(self.now, t)

    def run_for(self, seconds: float) -> None:
        self.run_until_time(self.now + seconds)

    def run_until(self, predicate: Callable[[], bool], within: float) -> bool:
        """Run until ``predicate()`` holds (True) or ``within`` seconds pass (False)."""
        limit = self.now + within
        while not predicate():
            if self.next_time() > limit:
                self.now = limit
                return predicate()
            self.step()
        return True

    def _settle(self) -> None:
        """Deliver and tick everything due at ``now`` until nothing is."""
        while True:
            busy = False
            while self._pending and self._pending[0].when <= self.now:
                heapq.heappop(self._pending).action()
                busy = True
            for name, node in list(self.nodes.items()):
                if name in self.nodes and node.next_deadline() <= self.now:
                    node.tick(self.now)
                    self._collect(name)
                    busy = True
            if not busy:
                return

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._pending, _Pending(self.now + delay, next(self._seq), action))

    # --- plumbing ------------------------------------------------------------------------------

    def _collect(self, name: str) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        for event in node.take_events():
            self.seen.append(Seen(name, event))
        for dst, data in node.take_datagrams():
            dst_name = self.by_addr.get(dst)
            messages = self._open(name, data)
            dropped = self._dropped(name, dst_name, False, messages)
            self.sent.append(Sent(self.now, name, dst, dst_name, data, messages, dropped))
            if not dropped and dst_name is not None:
                self._later(self.latency, partial(self._deliver, dst_name, node.addr, data))
        for request in node.take_stream_requests():
            self._serve(name, request)

    def _open(self, name: str, data: bytes) -> tuple[Message, ...]:
        try:
            return tuple(m for m, _ in decode_packet(self.sealers[name].open(data)))
        except DecodeError:
            return ()

    def _deliver(self, dst: str, src: Address, data: bytes) -> None:
        node = self.nodes.get(dst)
        if node is None:
            return
        node.receive_datagram(src, data, self.now)
        self._collect(dst)

    def _serve(self, name: str, request: StreamRequest) -> None:
        """Connect, let the peer answer, and report the reply (or a timeout) back to ``name``."""
        peer = self.by_addr.get(request.addr)
        src = self.addrs[name]
        try:
            messages: tuple[Message, ...] = (decode_frame(self.sealers[name].open(request.data)),)
        except DecodeError:
            messages = ()
        dropped = peer is None or self._dropped(name, peer, True, messages)
        self.streams.append(StreamSent(self.now, name, peer, messages[0] if messages else None, dropped))
        if dropped:
            self._later(request.timeout, partial(self._result, name, request.id, None))
            return
        assert peer is not None

        def answer() -> None:
            node = self.nodes.get(peer)
            if node is None:
                self._later(request.timeout, partial(self._result, name, request.id, None))
                return
            answer = node.handle_stream(src, request.data, self.now)
            if isinstance(answer, KeyQuery):  # the peer's ring, in memory
                answer = node.answer_key_query(
                    MemoryKeys(self.sealers[peer].keyring).apply_now(answer.op, answer.key)
                )
            reply = answer
            self._collect(peer)
            self._later(self.latency, partial(self._result, name, request.id, reply))

        self._later(self.latency, answer)

    def _result(self, name: str, request_id: int, reply: bytes | None) -> None:
        node = self.nodes.get(name)
        if node is None:
            return
        node.stream_result(request_id, reply, self.now)
        self._collect(name)

    # --- queries -------------------------------------------------------------------------------

    def state(self, observer: str, name: str) -> MemberState | None:
        info = self.nodes[observer].member(name)
        return info.state if info else None

    def converged(self, names: Iterable[str], state: MemberState = MemberState.ALIVE) -> bool:
        """Every running node in ``names`` sees every node in ``names`` in ``state``."""
        names = list(names)
        return all(self.state(o, n) is state for o in names if o in self.nodes for n in names if n != o)

    def events(
        self, observer: str | None = None, kind: EventKind | None = None, name: str | None = None
    ) -> list[MemberEvent]:
        return [
            s.event
            for s in self.seen
            if (observer is None or s.observer == observer)
            and (kind is None or s.event.kind is kind)
            and (name is None or s.event.name == name)
        ]

    def datagrams(
        self,
        src: str | None = None,
        dst: str | None = None,
        of: type[Message] | tuple[type[Message], ...] | None = None,
        since: float = float("-inf"),
    ) -> list[Sent]:
        """Datagrams sent (dropped or not); ``of`` keeps those carrying such a message."""
        return [
            s
            for s in self.sent
            if (src is None or s.src == src)
            and (dst is None or s.dst_name == dst)
            and s.at >= since
            and (of is None or any(isinstance(m, of) for m in s.messages))
        ]

    def stream_requests(self, of: type[Message], src: str | None = None) -> list[StreamSent]:
        return [s for s in self.streams if isinstance(s.message, of) and (src is None or s.src == src)]

    @overload
    def messages(
        self, of: type[M], src: str | None = None, dst: str | None = None, since: float = float("-inf")
    ) -> list[tuple[Sent, M]]: ...

    @overload
    def messages(
        self,
        of: tuple[type[Message], ...],
        src: str | None = None,
        dst: str | None = None,
        since: float = float("-inf"),
    ) -> list[tuple[Sent, Message]]: ...

    def messages(
        self, of: Any, src: str | None = None, dst: str | None = None, since: float = float("-inf")
    ) -> list[tuple[Sent, Any]]:
        """Each message of type ``of`` sent (dropped or not), with the datagram that carried it."""
        return [(s, m) for s in self.datagrams(src, dst, of, since) for m in s.messages if isinstance(m, of)]

    def view(self, observer: str, name: str) -> MemberInfo:
        """What ``observer`` believes about ``name`` (which it must know)."""
        return info(self.nodes[observer], name)


# --- a single core driven by hand -----------------------------------------------------------------


def info(node: Swim, name: str) -> MemberInfo:
    """What ``node`` believes about ``name``; fails the test if it has never heard of it."""
    member = node.member(name)
    assert member is not None, f"{node.name} does not know {name}"
    return member


def seal(messages: list[Message], keyring: Keyring | None = None, cluster: str = CLUSTER) -> bytes:
    """A datagram of ``messages`` as a member of ``cluster`` would send it (random nonce)."""
    return Sealer(keyring, cluster).seal(encode_packet(messages))


def lone(
    peers: Iterable[str] = (),
    *,
    name: str = "a",
    config: GossipConfig = QUIET,
    now: float = 100.0,
    seed: int = 0,
    keyring: Keyring | None = None,
) -> Swim:
    """A core nobody answers, that already believes ``peers`` alive (taught by one Alive datagram each)."""
    node = Swim(config, name, node_addr(1), make_sealer(keyring, name), random.Random(seed), now)
    for i, peer in enumerate(peers, start=2):
        node.receive_datagram(node_addr(i), seal([Alive(peer, 0, node_addr(i), b"")], keyring), now)
    return node


def opened(data: bytes, keyring: Keyring | None = None) -> list[Message]:
    """The messages inside a datagram a core emitted."""
    return [m for m, _ in decode_packet(Sealer(keyring, CLUSTER).open(data))]


# --- hypothesis strategies for well-formed messages -----------------------------------------------

UINT = st.integers(min_value=0, max_value=(1 << 63) - 1)


# Any name gossip.names accepts: printable, no space or '/', not a dot segment.
MEMBER_NAMES = st.text(
    st.characters(
        blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"), blacklist_characters="/"
    ),
    min_size=1,
    max_size=MAX_NAME_LEN,
).filter(is_member_name)


def wire_messages(
    names: st.SearchStrategy[str] | None = None, numbers: st.SearchStrategy[int] = UINT
) -> st.SearchStrategy[Message]:
    """Every message type, with fields anywhere in the range the decoder accepts."""
    name = names if names is not None else MEMBER_NAMES
    key = st.text(min_size=1, max_size=MAX_KEY_LEN)
    addr = st.tuples(st.text(min_size=1, max_size=255), st.integers(0, 65535))
    meta = st.binary(max_size=64)
    kv = st.builds(KvUpdate, name, key, numbers, st.none() | st.binary(max_size=64))
    record = st.builds(
        MemberRecord,
        name,
        addr,
        numbers,
        st.sampled_from(MEMBER_STATES),
        meta,
        st.lists(kv, max_size=3).map(tuple),
    )
    return st.one_of(
        st.builds(Ping, numbers, name, name, addr),
        st.builds(IndirectPing, numbers, name, addr, st.booleans(), name, addr),
        st.builds(Ack, numbers),
        st.builds(Nack, numbers),
        st.builds(Alive, name, numbers, addr, meta),
        st.builds(Suspect, name, numbers, name),
        st.builds(Dead, name, numbers, name),
        kv,
        st.builds(KvNotice, name, key, numbers),
        st.builds(PushPull, name, st.booleans(), st.lists(record, max_size=4).map(tuple), meta),
        st.builds(KvPull, name, key),
        st.builds(ErrorReply, st.text(max_size=1024)),
        st.builds(AppUpdate, key, meta),
        st.builds(AppNotice, key, st.binary(max_size=64)),
        st.builds(AppPull, key),
        st.just(KeyQuery("list", b"")),
        st.builds(
            KeyQuery, st.sampled_from(("install", "use", "remove")), st.binary(min_size=32, max_size=32)
        ),
        st.builds(
            KeyReply,
            st.text(max_size=1024),
            st.lists(st.text("0123456789abcdef", min_size=1, max_size=64), max_size=8).map(tuple),
        ),
    )
