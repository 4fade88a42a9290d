"""The routing tables, BIRD's shape: each peer feeds its Adj-RIB-In, the import policy sits between it
and the Loc-RIB, and the Loc-RIB keeps per destination every candidate, the best and the ECMP set.

* **Adj-RIB-In** per peer, before policy (what the peer sent, so a policy change re-runs without
  asking the peer again) and after (what was accepted, with the policy's changes). A path the policy
  leaves unchanged is one object in both. Paths from an external peer whose AS path holds this
  machine's ASN are dropped after the pre-policy table (loop detection, RFC 4271 9.1.2).
* **Loc-RIB**: per destination the accepted candidates and the :class:`Selection`. Each change
  re-runs the decision for that destination only.
* **Invalidation**: :meth:`Rib.invalidate` takes a peer's paths out of the Loc-RIB at once (gossip
  declared the member dead) but keeps its Adj-RIB-In, still updated, so :meth:`Rib.revalidate` puts
  them back without the peer re-sending; :meth:`Rib.peer_down` (session lost) forgets them, and the
  next session relearns them. Invalidation is by address and outlives sessions: a member gossip calls
  dead stays out even if its BGP session comes back first. Behind a route reflector a dead machine's
  paths arrive over the reflector's session, so :meth:`Rib.invalidate_originator` does the same for
  every path whose ORIGINATOR_ID is that machine's router id, whichever session brought it.
* **ADD-PATH** (RFC 7911): a path is known by (peer, prefix, path id), so a reflector's session can
  hold one path per announcing machine; a withdrawal names the path id and removes that path only.
  A session without ADD-PATH has path id 0 throughout.
* **Reflection loops** (RFC 4456 section 8): a path whose ORIGINATOR_ID is this machine's router id,
  or whose CLUSTER_LIST holds this machine's cluster id while it is a reflector, is dropped after the
  pre-policy table, like an AS-path loop, and counted (:attr:`Rib.loop_drops`).
* **Diffs**: the first change to a destination since the last :meth:`Rib.take_diff` remembers its
  selection then; :meth:`Rib.take_diff` reports the destinations whose best or ECMP set now differs
  (a flap back and forth reports nothing). The FIB and the export side drain it after each batch.

Pure: no I/O, no clock (``now`` is passed in and only orders paths for "Older Path").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from agent.routing.decision import DEFAULT_OPTIONS, DecisionOptions, Ranked, Selection, rank, select
from agent.routing.path import Attributes, Interner, Path, Peer, PeerKind, Prefix
from agent.routing.policy import Explanation, PolicyChain
from common.address import IPAddress

RETAIN_MIN = 4096  # distinct attribute sets interned before the first clean-up


@dataclass(frozen=True, slots=True)
class Change:
    """One destination whose outcome changed; ``None`` on a side means no route there."""

    prefix: Prefix
    before: Selection | None
    after: Selection | None

    @property
    def best_changed(self) -> bool:
        """The export side re-announces (or withdraws) this destination."""
        before = self.before.best if self.before is not None else None
        after = self.after.best if self.after is not None else None
        return before != after

    @property
    def next_hops_changed(self) -> bool:
        """The FIB reprograms this destination."""
        before = self.before.next_hops if self.before is not None else ()
        after = self.after.next_hops if self.after is not None else ()
        return before != after


@dataclass(frozen=True, slots=True)
class Diff:
    changes: tuple[Change, ...] = ()

    def __len__(self) -> int:
        return len(self.changes)

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    def __bool__(self) -> bool:
        return bool(self.changes)

    def by_prefix(self) -> dict[Prefix, Change]:
        return {c.prefix: c for c in self.changes}


@dataclass(frozen=True, slots=True)
class Destination:
    """A Loc-RIB entry as the CLI and UI see it."""

    prefix: Prefix
    candidates: tuple[Path, ...]
    selection: Selection


class _Entry:
    __slots__ = ("paths", "selection")

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.selection: Selection | None = None


class _Tables:
    """One path id's Adj-RIB-In of a session: what was sent (``pre``) and what was accepted."""

    __slots__ = ("path_id", "post", "pre")

    def __init__(self, path_id: int) -> None:
        self.path_id = path_id
        self.pre: dict[Prefix, Path] = {}
        self.post: dict[Prefix, Path] = {}


class _AdjIn(_Tables):
    """A session's Adj-RIB-In: path id 0 (every path of a session without ADD-PATH) in itself, so the
    common case costs no extra lookup, other path ids in ``by_id``."""

    __slots__ = ("by_id", "peer", "valid")

    def __init__(self, peer: Peer, valid: bool) -> None:
        super().__init__(0)
        self.peer = peer
        self.valid = valid  # False: invalidated, its paths are kept out of the Loc-RIB
        self.by_id: dict[int, _Tables] = {}

    def tables(self) -> list[_Tables]:
        return [self, *self.by_id.values()] if self.by_id else [self]

    def of(self, path_id: int, create: bool) -> _Tables | None:
        if not path_id:
            return self
        tables = self.by_id.get(path_id)
        if tables is None and create:
            tables = self.by_id[path_id] = _Tables(path_id)
        return tables


class Rib:
    """Adj-RIBs-In, import policy, Loc-RIB and the pending diff of one machine. The machine's own
    routes come from :attr:`local` (see :meth:`originate`) and skip the import policy."""

    def __init__(
        self,
        *,
        router_id: ipaddress.IPv4Address,
        asn: int,
        options: DecisionOptions = DEFAULT_OPTIONS,
        import_policy: PolicyChain | None = None,
        cluster_id: ipaddress.IPv4Address | None = None,
    ) -> None:
        self.local = Peer.local(router_id, asn)
        self._cluster_id = cluster_id  # None: this machine is not a route reflector
        self._dead_originators: set[ipaddress.IPv4Address] = set()
        self._loops = {"as-path": 0, "originator-id": 0, "cluster-list": 0}
        self._options = options
        self._policy = import_policy if import_policy is not None else PolicyChain()
        self._adj: dict[Peer, _AdjIn] = {self.local: _AdjIn(self.local, valid=True)}
        self._by_address: dict[IPAddress, Peer] = {}
        self._invalid: set[IPAddress] = set()
        self._loc: dict[Prefix, _Entry] = {}
        self._dirty: dict[Prefix, Selection | None] = {}
        self._interner = Interner()
        self._retain_at = RETAIN_MIN

    # -- configuration -----------------------------------------------------------------------------

    @property
    def options(self) -> DecisionOptions:
        return self._options

    @property
    def import_policy(self) -> PolicyChain:
        return self._policy

    def set_options(self, options: DecisionOptions) -> None:
        """New decision options: every destination is decided again (a configuration change)."""
        self._options = options
        for prefix, entry in self._loc.items():
            self._dirty.setdefault(prefix, entry.selection)
            entry.selection = select(entry.paths, options)

    def set_import_policy(self, policy: PolicyChain) -> None:
        """A new import chain: every peer's pre-policy table runs through it again (soft
        reconfiguration); only destinations whose accepted paths change are decided again."""
        self._policy = policy
        self._reimport()

    @property
    def cluster_id(self) -> ipaddress.IPv4Address | None:
        return self._cluster_id

    def set_cluster_id(self, cluster_id: ipaddress.IPv4Address | None) -> None:
        """This machine became a route reflector with ``cluster_id`` (or, with ``None``, stopped being
        one): the CLUSTER_LIST loop check changes, so every received path is imported again."""
        if cluster_id == self._cluster_id:
            return
        self._cluster_id = cluster_id
        self._reimport()

    def _reimport(self) -> None:
        for adj in self._adj.values():
            if adj.peer is not self.local:
                for tables in adj.tables():
                    for path in list(tables.pre.values()):
                        self._import(adj, tables, path, reevaluate=True)

    # -- sessions and membership -----------------------------------------------------------------

    def peer_up(self, peer: Peer) -> None:
        """A session is established. A previous session to the same address is dropped first."""
        if peer.kind is PeerKind.LOCAL:
            raise ValueError("the local pseudo-peer is always up")
        old = self._by_address.get(peer.address)
        if old is not None:
            self.peer_down(old)
        self._adj[peer] = _AdjIn(peer, valid=peer.address not in self._invalid)
        self._by_address[peer.address] = peer

    def peer_down(self, peer: Peer) -> None:
        """The session is gone: its paths leave every table."""
        if peer.kind is PeerKind.LOCAL:
            raise ValueError("the local pseudo-peer is always up")
        adj = self._adj_of(peer)
        if adj.valid:
            for tables in adj.tables():
                for prefix in tables.post:
                    self._place(prefix, adj.peer, tables.path_id, None)
        del self._adj[adj.peer]
        del self._by_address[adj.peer.address]

    def invalidate(self, address: IPAddress) -> None:
        """Take the paths of the peer at ``address`` out of the Loc-RIB at once (gossip: dead)."""
        if address in self._invalid:
            return
        self._invalid.add(address)
        peer = self._by_address.get(address)
        if peer is not None:
            adj = self._adj[peer]
            adj.valid = False
            for tables in adj.tables():
                for prefix in tables.post:
                    self._place(prefix, peer, tables.path_id, None)

    def revalidate(self, address: IPAddress) -> None:
        """Put them back (gossip: alive again), as the Adj-RIB-In holds them now."""
        if address not in self._invalid:
            return
        self._invalid.discard(address)
        peer = self._by_address.get(address)
        if peer is not None:
            adj = self._adj[peer]
            adj.valid = True
            dead = self._dead_originators
            for tables in adj.tables():
                for prefix, path in tables.post.items():
                    if not dead or path.attrs.originator_id not in dead:
                        self._place(prefix, peer, tables.path_id, path)

    def is_valid(self, address: IPAddress) -> bool:
        return address not in self._invalid

    def invalidate_originator(self, router_id: ipaddress.IPv4Address) -> None:
        """Take every path whose ORIGINATOR_ID is ``router_id`` out of the Loc-RIB at once, whichever
        session (a route reflector's) brought it (gossip: that machine is dead). Like
        :meth:`invalidate` it outlives sessions; paths keep being tracked in the Adj-RIBs-In. One pass
        over the accepted paths: a dead machine is rare, an index would cost every update."""
        if router_id in self._dead_originators:
            return
        self._dead_originators.add(router_id)
        for prefix, peer, path_id, _ in self._paths_of_originator(router_id):
            self._place(prefix, peer, path_id, None)

    def revalidate_originator(self, router_id: ipaddress.IPv4Address) -> None:
        """Put them back (gossip: alive again)."""
        if router_id not in self._dead_originators:
            return
        self._dead_originators.discard(router_id)
        for prefix, peer, path_id, path in self._paths_of_originator(router_id):
            self._place(prefix, peer, path_id, path)

    def _paths_of_originator(self, router_id: ipaddress.IPv4Address) -> list[tuple[Prefix, Peer, int, Path]]:
        """The accepted paths of valid sessions whose ORIGINATOR_ID is ``router_id`` (a list: the
        caller changes the Loc-RIB while it walks them)."""
        return [
            (prefix, adj.peer, tables.path_id, path)
            for adj in self._adj.values()
            if adj.valid and adj.peer is not self.local
            for tables in adj.tables()
            for prefix, path in tables.post.items()
            if path.attrs.originator_id == router_id
        ]

    def is_valid_originator(self, router_id: ipaddress.IPv4Address) -> bool:
        return router_id not in self._dead_originators

    @property
    def loop_drops(self) -> Mapping[str, int]:
        """Received paths dropped as loops, by the attribute that showed it (``as-path``,
        ``originator-id``, ``cluster-list``)."""
        return MappingProxyType(dict(self._loops))

    @property
    def peers(self) -> tuple[Peer, ...]:
        return tuple(self._by_address.values())

    # -- updates -------------------------------------------------------------------------------------

    def announce(
        self,
        peer: Peer,
        prefix: Prefix,
        attrs: Attributes,
        now: float,
        igp_cost: int = 0,
        path_id: int = 0,
    ) -> None:
        """``peer`` announces ``prefix`` (replacing its previous path there with the same
        ``path_id``). Re-announcing the same attributes is a no-op, so the path keeps its age."""
        adj = self._adj_of(peer)
        tables = adj if not path_id else adj.of(path_id, create=True)
        assert tables is not None
        self._announce(adj, tables, prefix, self._interner.attributes(attrs), now, igp_cost)
        self._maybe_retain()

    def announce_many(
        self,
        peer: Peer,
        prefixes: Iterable[Prefix],
        attrs: Attributes,
        now: float,
        igp_cost: int = 0,
        path_id: int = 0,
    ) -> None:
        """One UPDATE: many prefixes with the same attributes (and path id)."""
        adj = self._adj_of(peer)
        tables = adj.of(path_id, create=True)
        assert tables is not None
        shared = self._interner.attributes(attrs)
        for prefix in prefixes:
            self._announce(adj, tables, prefix, shared, now, igp_cost)
        self._maybe_retain()

    def withdraw(self, peer: Peer, prefix: Prefix, path_id: int = 0) -> None:
        """``peer`` withdraws its path ``path_id`` to ``prefix`` (its other paths there stay)."""
        if path_id:
            self.withdraw_many(peer, (prefix,), path_id)
        else:
            adj = self._adj_of(peer)
            self._withdraw(adj, adj, prefix)

    def withdraw_many(self, peer: Peer, prefixes: Iterable[Prefix], path_id: int = 0) -> None:
        adj = self._adj_of(peer)
        tables = adj.of(path_id, create=False)
        if tables is None:
            return
        for prefix in prefixes:
            self._withdraw(adj, tables, prefix)
        if tables is not adj and not tables.pre:
            del adj.by_id[path_id]

    def originate(self, prefix: Prefix, attrs: Attributes, now: float) -> None:
        """A route of this machine's own (preferred at "Local Route"; no import policy)."""
        self.announce(self.local, prefix, attrs, now)

    def withdraw_origin(self, prefix: Prefix) -> None:
        self.withdraw(self.local, prefix)

    def take_diff(self) -> Diff:
        """The destinations whose best path or ECMP set differ from when the last diff was taken."""
        changes = []
        loc = self._loc
        for prefix, before in self._dirty.items():
            entry = loc.get(prefix)
            after = entry.selection if entry is not None else None
            if before != after:
                changes.append(Change(prefix, before, after))
        self._dirty = {}
        return Diff(tuple(changes))

    # -- views ----------------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Destinations in the Loc-RIB."""
        return len(self._loc)

    def __contains__(self, prefix: Prefix) -> bool:
        return prefix in self._loc

    def selection(self, prefix: Prefix) -> Selection | None:
        entry = self._loc.get(prefix)
        return entry.selection if entry is not None else None

    def selections(self) -> Iterator[tuple[Prefix, Selection]]:
        """The whole Loc-RIB (a new export session, a FIB reconcile after restart)."""
        for prefix, entry in self._loc.items():
            if entry.selection is not None:
                yield prefix, entry.selection

    def destination(self, prefix: Prefix) -> Destination | None:
        entry = self._loc.get(prefix)
        if entry is None or entry.selection is None:
            return None
        return Destination(prefix, tuple(entry.paths), entry.selection)

    def explain(self, prefix: Prefix) -> tuple[Ranked, ...]:
        """Every candidate for ``prefix`` with the step where it lost (empty if there is none)."""
        entry = self._loc.get(prefix)
        return rank(entry.paths, self._options) if entry is not None else ()

    def explain_import(self, peer: Peer, prefix: Prefix, path_id: int = 0) -> Explanation | None:
        """How the import policy treated what ``peer`` sent for ``prefix`` (as path ``path_id``)."""
        tables = self._adj_of(peer).of(path_id, create=False)
        path = tables.pre.get(prefix) if tables is not None else None
        return self._policy.explain(prefix, path.attrs) if path is not None else None

    def adj_rib_in(self, peer: Peer, *, post_policy: bool, path_id: int = 0) -> Mapping[Prefix, Path]:
        """A read-only view of what ``peer`` sent (``post_policy=False``) or what was accepted, as path
        ``path_id`` (see :meth:`path_ids` for the others of an ADD-PATH session)."""
        tables = self._adj_of(peer).of(path_id, create=False)
        if tables is None:
            return MappingProxyType({})
        return MappingProxyType(tables.post if post_policy else tables.pre)

    def path_ids(self, peer: Peer) -> tuple[int, ...]:
        """The path ids ``peer`` has paths under (``(0,)`` for a session without ADD-PATH)."""
        adj = self._adj_of(peer)
        return tuple(t.path_id for t in adj.tables() if t.pre or t is adj)

    @property
    def attribute_sets(self) -> int:
        """Distinct attribute objects held (shared between paths)."""
        return len(self._interner)

    def path_count(self) -> int:
        """Paths held in the Adj-RIBs-In, before policy."""
        return sum(len(t.pre) for adj in self._adj.values() for t in adj.tables())

    # -- internals -----------------------------------------------------------------------------------

    def _adj_of(self, peer: Peer) -> _AdjIn:
        adj = self._adj.get(peer)
        if adj is None:
            raise KeyError(f"no session with {peer}: call peer_up first")
        return adj

    def _announce(
        self, adj: _AdjIn, tables: _Tables, prefix: Prefix, attrs: Attributes, now: float, igp_cost: int
    ) -> None:
        old = tables.pre.get(prefix)
        if old is not None and old.attrs is attrs and old.igp_cost == igp_cost:
            return
        path = Path(prefix, attrs, adj.peer, now, igp_cost, tables.path_id)
        tables.pre[prefix] = path
        self._import(adj, tables, path, reevaluate=False)

    def _withdraw(self, adj: _AdjIn, tables: _Tables, prefix: Prefix) -> None:
        if tables.pre.pop(prefix, None) is None:
            return
        if tables.post.pop(prefix, None) is not None and adj.valid:
            self._place(prefix, adj.peer, tables.path_id, None)

    def _loop(self, attrs: Attributes) -> str | None:
        """Which RFC 4456 loop check ``attrs`` fails, if any (only reflected routes get here)."""
        if attrs.originator_id is not None and attrs.originator_id == self.local.router_id:
            return "originator-id"
        if self._cluster_id is not None and self._cluster_id in attrs.cluster_list:
            return "cluster-list"
        return None

    def _import(self, adj: _AdjIn, tables: _Tables, path: Path, *, reevaluate: bool) -> None:
        """Run ``path`` (just placed in the pre-policy table) through the import policy into the
        post-policy table and, unless the peer or the path's originator is invalid, the Loc-RIB."""
        peer = adj.peer
        attrs = path.attrs
        out: Attributes | None
        if peer.kind is PeerKind.LOCAL:
            out = attrs
        elif peer.kind is PeerKind.EXTERNAL and self.local.asn in attrs.as_path.asns:
            out = None
            if not reevaluate:
                self._loops["as-path"] += 1
        elif (attrs.originator_id is not None or attrs.cluster_list) and (loop := self._loop(attrs)):
            out = None
            if not reevaluate:
                self._loops[loop] += 1
        else:
            out = self._policy.evaluate(path.prefix, attrs)
        prefix = path.prefix
        post = tables.post
        accepted: Path | None
        if out is None:
            if post.pop(prefix, None) is None and reevaluate:
                return  # rejected before and after
            accepted = None
        else:
            if out is not attrs:
                out = self._interner.attributes(out)
                if reevaluate:
                    current = post.get(prefix)
                    if current is not None and current.attrs is out:
                        return
                path = Path(prefix, out, peer, path.received, path.igp_cost, path.path_id)
            elif reevaluate and post.get(prefix) is path:
                return
            post[prefix] = path
            accepted = path
            if self._dead_originators and path.attrs.originator_id in self._dead_originators:
                accepted = None  # kept, but out of the Loc-RIB while its originator is dead
        if adj.valid:
            self._place(prefix, peer, tables.path_id, accepted)

    def _place(self, prefix: Prefix, peer: Peer, path_id: int, path: Path | None) -> None:
        """Set (or with ``None`` remove) ``peer``'s candidate ``path_id`` for ``prefix`` and decide
        it again."""
        entry = self._loc.get(prefix)
        if entry is None:
            if path is None:
                return
            entry = self._loc[prefix] = _Entry()
        paths = entry.paths
        index = -1
        for i, candidate in enumerate(paths):
            if candidate.peer is peer and candidate.path_id == path_id:
                index = i
                break
        if index < 0 and path is None:
            return
        if prefix not in self._dirty:
            self._dirty[prefix] = entry.selection
        if path is None:
            del paths[index]
            if not paths:
                del self._loc[prefix]
                return
        elif index < 0:
            paths.append(path)
        else:
            paths[index] = path
        entry.selection = select(paths, self._options)

    def _maybe_retain(self) -> None:
        if len(self._interner) > self._retain_at:
            self._interner.retain(
                p.attrs
                for adj in self._adj.values()
                for tables in adj.tables()
                for table in (tables.pre, tables.post)
                for p in table.values()
            )
            self._retain_at = max(RETAIN_MIN, 2 * len(self._interner))
