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
  dead stays out even if its BGP session comes back first.
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


class _AdjIn:
    __slots__ = ("peer", "post", "pre", "valid")

    def __init__(self, peer: Peer, valid: bool) -> None:
        self.peer = peer
        self.valid = valid  # False: invalidated, its paths are kept out of the Loc-RIB
        self.pre: dict[Prefix, Path] = {}
        self.post: dict[Prefix, Path] = {}


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
    ) -> None:
        self.local = Peer.local(router_id, asn)
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
        for adj in self._adj.values():
            if adj.peer is not self.local:
                for path in list(adj.pre.values()):
                    self._import(adj, path, reevaluate=True)

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
            for prefix in adj.post:
                self._place(prefix, adj.peer, None)
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
            for prefix in adj.post:
                self._place(prefix, peer, None)

    def revalidate(self, address: IPAddress) -> None:
        """Put them back (gossip: alive again), as the Adj-RIB-In holds them now."""
        if address not in self._invalid:
            return
        self._invalid.discard(address)
        peer = self._by_address.get(address)
        if peer is not None:
            adj = self._adj[peer]
            adj.valid = True
            for prefix, path in adj.post.items():
                self._place(prefix, peer, path)

    def is_valid(self, address: IPAddress) -> bool:
        return address not in self._invalid

    @property
    def peers(self) -> tuple[Peer, ...]:
        return tuple(self._by_address.values())

    # -- updates -------------------------------------------------------------------------------------

    def announce(self, peer: Peer, prefix: Prefix, attrs: Attributes, now: float, igp_cost: int = 0) -> None:
        """``peer`` announces ``prefix`` (replacing its previous path there). Re-announcing the same
        attributes is a no-op, so the path keeps its age."""
        self._announce(self._adj_of(peer), prefix, self._interner.attributes(attrs), now, igp_cost)
        self._maybe_retain()

    def announce_many(
        self, peer: Peer, prefixes: Iterable[Prefix], attrs: Attributes, now: float, igp_cost: int = 0
    ) -> None:
        """One UPDATE: many prefixes with the same attributes."""
        adj = self._adj_of(peer)
        shared = self._interner.attributes(attrs)
        for prefix in prefixes:
            self._announce(adj, prefix, shared, now, igp_cost)
        self._maybe_retain()

    def withdraw(self, peer: Peer, prefix: Prefix) -> None:
        self._withdraw(self._adj_of(peer), prefix)

    def withdraw_many(self, peer: Peer, prefixes: Iterable[Prefix]) -> None:
        adj = self._adj_of(peer)
        for prefix in prefixes:
            self._withdraw(adj, prefix)

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

    def explain_import(self, peer: Peer, prefix: Prefix) -> Explanation | None:
        """How the import policy treated what ``peer`` sent for ``prefix``."""
        path = self._adj_of(peer).pre.get(prefix)
        return self._policy.explain(prefix, path.attrs) if path is not None else None

    def adj_rib_in(self, peer: Peer, *, post_policy: bool) -> Mapping[Prefix, Path]:
        """A read-only view of what ``peer`` sent (``post_policy=False``) or what was accepted."""
        adj = self._adj_of(peer)
        return MappingProxyType(adj.post if post_policy else adj.pre)

    @property
    def attribute_sets(self) -> int:
        """Distinct attribute objects held (shared between paths)."""
        return len(self._interner)

    def path_count(self) -> int:
        """Paths held in the Adj-RIBs-In, before policy."""
        return sum(len(adj.pre) for adj in self._adj.values())

    # -- internals -----------------------------------------------------------------------------------

    def _adj_of(self, peer: Peer) -> _AdjIn:
        adj = self._adj.get(peer)
        if adj is None:
            raise KeyError(f"no session with {peer}: call peer_up first")
        return adj

    def _announce(self, adj: _AdjIn, prefix: Prefix, attrs: Attributes, now: float, igp_cost: int) -> None:
        old = adj.pre.get(prefix)
        if old is not None and old.attrs is attrs and old.igp_cost == igp_cost:
            return
        path = Path(prefix, attrs, adj.peer, now, igp_cost)
        adj.pre[prefix] = path
        self._import(adj, path, reevaluate=False)

    def _withdraw(self, adj: _AdjIn, prefix: Prefix) -> None:
        if adj.pre.pop(prefix, None) is None:
            return
        if adj.post.pop(prefix, None) is not None and adj.valid:
            self._place(prefix, adj.peer, None)

    def _import(self, adj: _AdjIn, path: Path, *, reevaluate: bool) -> None:
        """Run ``path`` (just placed in the pre-policy table) through the import policy into the
        post-policy table and, unless the peer is invalid, the Loc-RIB."""
        peer = adj.peer
        attrs = path.attrs
        out: Attributes | None
        if peer.kind is PeerKind.LOCAL:
            out = attrs
        elif peer.kind is PeerKind.EXTERNAL and self.local.asn in attrs.as_path.asns:
            out = None
        else:
            out = self._policy.evaluate(path.prefix, attrs)
        prefix = path.prefix
        accepted: Path | None
        if out is None:
            if adj.post.pop(prefix, None) is None and reevaluate:
                return  # rejected before and after
            accepted = None
        else:
            if out is not attrs:
                out = self._interner.attributes(out)
                if reevaluate:
                    current = adj.post.get(prefix)
                    if current is not None and current.attrs is out:
                        return
                path = Path(prefix, out, peer, path.received, path.igp_cost)
            elif reevaluate and adj.post.get(prefix) is path:
                return
            adj.post[prefix] = path
            accepted = path
        if adj.valid:
            self._place(prefix, peer, accepted)

    def _place(self, prefix: Prefix, peer: Peer, path: Path | None) -> None:
        """Set (or with ``None`` remove) ``peer``'s candidate for ``prefix`` and decide it again."""
        entry = self._loc.get(prefix)
        if entry is None:
            if path is None:
                return
            entry = self._loc[prefix] = _Entry()
        paths = entry.paths
        index = -1
        for i, candidate in enumerate(paths):
            if candidate.peer is peer:
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
                p.attrs for adj in self._adj.values() for table in (adj.pre, adj.post) for p in table.values()
            )
            self._retain_at = max(RETAIN_MIN, 2 * len(self._interner))
