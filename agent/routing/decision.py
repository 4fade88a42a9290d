"""Best-path selection: which of a destination's candidate paths wins, which join it in the ECMP set,
and for every other path the step at which it lost and the values that decided it.

The order is RFC 4271 9.1.2.2 as BIRD and FRR extend it (names as FRR prints them):

==============  ======================================================================================
Local Pref      highest LOCAL_PREF (missing counts as 100)
Local Route     a route this machine originates itself
AS Path         shortest AS path (an AS_SET counts as one)
Origin          lowest ORIGIN (igp < egp < incomplete)
MED             lowest MED, compared only between paths from the same neighbouring AS unless
                ``always_compare_med``; a missing MED is 0, or the worst with ``med_missing_as_worst``
Peer Type       external over internal
IGP Metric      lowest IGP cost to the next hop
Older Path      the oldest path, if ``prefer_oldest`` and the paths left are all external (RFC 5004)
Router ID       lowest router id; a reflected route's ORIGINATOR_ID stands in for the router id of
                the peer that sent it (RFC 4456 section 9)
Cluster length  shortest CLUSTER_LIST (missing counts as empty; RFC 4456 section 9)
Neighbor IP     lowest peer address
==============  ======================================================================================

Behind a route reflector with ADD-PATH one session brings several paths to a prefix, all with the
reflector's address and router id: ORIGINATOR_ID is what tells the announcing machines apart, so
they tie-break as they would over a full mesh. Two paths that tie on everything (the same peer and
originator) are ordered by their path id, so the outcome still does not depend on arrival order.

**Elimination, not pairwise comparison.** Because MED is compared only within a neighbouring AS, a
pairwise "better than" is not transitive (A beats B on MED, B beats C on Peer Type, C beats A on Router
ID), so a router that compares paths in arrival order can pick different winners for the same set.
Here, as RFC 4271 describes it, each step removes from the whole remaining set the paths worse than
the best at that step (for MED: worse than the best of their own neighbouring AS). The result depends
only on the set, never on arrival order; only "Older Path", off by default, looks at time.

**Multipath.** The paths left after "IGP Metric" (equal down to, excluding, the router-id step, and
"Older Path" is a tie-break too) form the ECMP set, best first, cut at ``max_paths`` next hops (a
path's copies through several reflectors count once). Router ID and
Cluster length come after it, so machines announcing the same prefix through one reflector (different
ORIGINATOR_IDs) share the set as they do over a full mesh.

:func:`select` is the fast path the RIB runs on every change; :func:`rank` replays the same steps
recording why each path lost, for the CLI and UI (the tests check both agree).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from agent.routing.path import MAX_U32, Path, PeerKind
from common.address import IPAddress


class Step(StrEnum):
    """The decision steps, in order, named as FRR names them."""

    LOCAL_PREF = "Local Pref"
    LOCAL_ROUTE = "Local Route"
    AS_PATH = "AS Path"
    ORIGIN = "Origin"
    MED = "MED"
    PEER_TYPE = "Peer Type"
    IGP_METRIC = "IGP Metric"
    OLDER_PATH = "Older Path"
    ROUTER_ID = "Router ID"
    CLUSTER_LENGTH = "Cluster length"
    NEIGHBOR_IP = "Neighbor IP"


STEPS: tuple[Step, ...] = tuple(Step)


@dataclass(frozen=True, slots=True)
class DecisionOptions:
    """``max_paths`` 1 means no ECMP (BIRD's and FRR's default); the BGP speaker raises it to spread
    traffic over equally good machines."""

    always_compare_med: bool = False
    med_missing_as_worst: bool = False
    prefer_oldest: bool = False
    max_paths: int = 1

    def __post_init__(self) -> None:
        if self.max_paths < 1:
            raise ValueError("max_paths must be at least 1")


DEFAULT_OPTIONS = DecisionOptions()


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome for one destination: ``multipath[0]`` is ``best``."""

    best: Path
    multipath: tuple[Path, ...]

    @property
    def next_hops(self) -> tuple[IPAddress, ...]:
        """The ECMP set's distinct next hops, best first: what the FIB installs."""
        return tuple(dict.fromkeys(p.attrs.next_hop for p in self.multipath if p.attrs.next_hop is not None))


def _med(path: Path, options: DecisionOptions) -> int:
    med = path.attrs.med
    if med is None:
        return MAX_U32 if options.med_missing_as_worst else 0
    return med


def _med_group(path: Path, index: int, options: DecisionOptions) -> int:
    """Paths whose MEDs may be compared share a group: the same neighbouring AS, or both with an empty
    AS path (originated inside this AS, as FRR does); a path starting with an AS_SET has no neighbour,
    so a group of its own."""
    if options.always_compare_med:
        return 0
    as_path = path.attrs.as_path
    if as_path.neighbor_as is not None:
        return as_path.neighbor_as
    return -1 if not as_path.segments else -2 - index


def _oldest_applies(paths: Sequence[Path], options: DecisionOptions) -> bool:
    return options.prefer_oldest and all(p.peer.kind is PeerKind.EXTERNAL for p in paths)


def router_id_key(path: Path) -> int:
    """What the Router ID step compares: the ORIGINATOR_ID if the path has one, else the sender's."""
    key = path.attrs.originator_key
    return path.peer.router_id_key if key is None else key


def _tiebreak(oldest: bool) -> Callable[[Path], tuple[float, int, int, tuple[int, int], int]]:
    # router_id_key inlined: this runs for every ECMP candidate on every change
    if oldest:
        return lambda p: (
            p.received,
            p.peer.router_id_key if p.attrs.originator_key is None else p.attrs.originator_key,
            p.attrs.cluster_length,
            p.peer.address_key,
            p.path_id,
        )
    return lambda p: (
        0.0,
        p.peer.router_id_key if p.attrs.originator_key is None else p.attrs.originator_key,
        p.attrs.cluster_length,
        p.peer.address_key,
        p.path_id,
    )


def _med_step(paths: list[Path], options: DecisionOptions) -> list[Path]:
    """Keep, within each group of comparable MEDs, the paths with the lowest."""
    lowest: dict[int, int] = {}
    groups = [_med_group(p, i, options) for i, p in enumerate(paths)]
    for path, group in zip(paths, groups, strict=True):
        med = _med(path, options)
        if lowest.get(group, med) >= med:
            lowest[group] = med
    return [p for p, g in zip(paths, groups, strict=True) if _med(p, options) == lowest[g]]


def select(candidates: Sequence[Path], options: DecisionOptions = DEFAULT_OPTIONS) -> Selection | None:
    """The best path and the ECMP set among ``candidates`` (``None`` if there are none)."""
    if len(candidates) <= 1:
        if not candidates:
            return None
        only = candidates[0]
        return Selection(only, (only,))
    best_key: tuple[int, bool, int, int] | None = None
    pool: list[Path] = []
    for path in candidates:
        attrs = path.attrs
        lp = attrs.local_pref
        key = (
            -(100 if lp is None else lp),
            path.peer.kind is not PeerKind.LOCAL,
            attrs.as_path.length,
            attrs.origin,
        )
        if best_key is None or key < best_key:
            best_key, pool = key, [path]
        elif key == best_key:
            pool.append(path)
    if len(pool) > 1:
        pool = _med_step(pool, options)
    if len(pool) > 1:
        lowest = min((p.peer.kind is PeerKind.INTERNAL, p.igp_cost) for p in pool)
        pool = [p for p in pool if (p.peer.kind is PeerKind.INTERNAL, p.igp_cost) == lowest]
    if len(pool) > 1:
        pool.sort(key=_tiebreak(_oldest_applies(pool, options)))
    return Selection(pool[0], _cut(pool, options.max_paths))


def _cut(pool: Sequence[Path], max_paths: int) -> tuple[Path, ...]:
    """The ECMP set: the paths of the first ``max_paths`` next hops, in order. Counted by next hop,
    not by path: behind two reflectors each announcer's path arrives several times (one per reflector,
    ADD-PATH), and those copies must not crowd another announcer out of the set."""
    if max_paths == 1:
        return tuple(pool[:1])  # no ECMP: the best alone
    hops: set[object] = set()
    out: list[Path] = []
    for p in pool:
        hop = p.attrs.next_hop
        if hop not in hops:
            if len(hops) >= max_paths:
                continue
            hops.add(hop)
        out.append(p)
    return tuple(out)


# Per step: the key, lower is better.
_KEYS: Mapping[Step, Callable[[Path, DecisionOptions], tuple[float, ...]]] = MappingProxyType(
    {
        Step.LOCAL_PREF: lambda p, o: (-p.attrs.effective_local_pref,),
        Step.LOCAL_ROUTE: lambda p, o: (p.peer.kind is not PeerKind.LOCAL,),
        Step.AS_PATH: lambda p, o: (p.attrs.as_path.length,),
        Step.ORIGIN: lambda p, o: (p.attrs.origin,),
        Step.MED: lambda p, o: (_med(p, o),),
        Step.PEER_TYPE: lambda p, o: (p.peer.kind is PeerKind.INTERNAL,),
        Step.IGP_METRIC: lambda p, o: (p.igp_cost,),
        Step.OLDER_PATH: lambda p, o: (p.received,),
        Step.ROUTER_ID: lambda p, o: (router_id_key(p),),
        Step.CLUSTER_LENGTH: lambda p, o: (p.attrs.cluster_length,),
        Step.NEIGHBOR_IP: lambda p, o: p.peer.address_key,
    }
)


def step_value(step: Step, path: Path, options: DecisionOptions = DEFAULT_OPTIONS) -> str:
    """``path``'s value at ``step`` as the CLI shows it."""
    attrs = path.attrs
    if step is Step.LOCAL_PREF:
        return str(attrs.effective_local_pref)
    if step is Step.LOCAL_ROUTE:
        return "local" if path.peer.kind is PeerKind.LOCAL else "learned"
    if step is Step.AS_PATH:
        return str(attrs.as_path.length)
    if step is Step.ORIGIN:
        return attrs.origin.name.lower()
    if step is Step.MED:
        return str(attrs.med) if attrs.med is not None else f"missing ({_med(path, options)})"
    if step is Step.PEER_TYPE:
        return "internal" if path.peer.kind is PeerKind.INTERNAL else "external"
    if step is Step.IGP_METRIC:
        return str(path.igp_cost)
    if step is Step.OLDER_PATH:
        return f"received {path.received:g}"
    if step is Step.ROUTER_ID:
        if attrs.originator_id is not None:
            return f"{attrs.originator_id} (originator)"
        return str(path.peer.router_id)
    if step is Step.CLUSTER_LENGTH:
        return str(attrs.cluster_length)
    return str(path.peer.address)


def compare(a: Path, b: Path, options: DecisionOptions = DEFAULT_OPTIONS) -> tuple[Path, Step | None]:
    """The classic pairwise comparison (as FRR's ``bgp_path_info_cmp``): the better of two paths and
    the step that decided, ``None`` if nothing did. Not what :func:`select` uses (see the module
    docstring); it is here to state and test how the two relate."""
    for step in STEPS:
        if step is Step.MED and _med_group(a, 0, options) != _med_group(b, 1, options):
            continue
        if step is Step.OLDER_PATH and not _oldest_applies((a, b), options):
            continue
        ka, kb = _KEYS[step](a, options), _KEYS[step](b, options)
        if ka < kb:
            return a, step
        if kb < ka:
            return b, step
    return a, None


@dataclass(frozen=True, slots=True)
class Ranked:
    """One candidate's fate. For a path that is not best: ``lost_at`` is the step that removed it (or,
    for another ECMP member, the tie-break that put it behind the best), ``value`` its value there and
    ``winning_value`` that of ``beaten_by``, the path that removed it (the best, except at MED, where
    it is the best path from the same neighbouring AS)."""

    path: Path
    best: bool
    multipath: bool
    lost_at: Step | None = None
    value: str | None = None
    beaten_by: Path | None = None
    winning_value: str | None = None

    def reason(self) -> str:
        """One line for the CLI: ``best``, or e.g. ``lost at Local Pref: 100 vs 200 (via 198.18.0.2)``."""
        if self.best:
            return "best"
        if self.lost_at is None or self.beaten_by is None:
            return "no decision"
        head = "multipath, behind best at" if self.multipath else "lost at"
        via = str(self.beaten_by.peer.address)
        if self.beaten_by.path_id:
            via += f" path {self.beaten_by.path_id}"
        return f"{head} {self.lost_at}: {self.value} vs {self.winning_value} (via {via})"


def rank(candidates: Sequence[Path], options: DecisionOptions = DEFAULT_OPTIONS) -> tuple[Ranked, ...]:
    """Every candidate with the step where it lost: best first, then the rest of the ECMP set, then
    the others, those that lasted longer first."""
    remaining = list(candidates)
    lost: dict[int, tuple[int, Step, Path | None]] = {}  # id(path) -> (step index, step, MED winner)
    pool: list[Path] | None = None  # what is left after IGP Metric: the ECMP candidates
    for index, step in enumerate(STEPS):
        if len(remaining) <= 1:
            break
        if step is Step.OLDER_PATH and not _oldest_applies(remaining, options):
            continue
        if step is Step.MED:
            kept = _med_step(remaining, options)
            kept_ids = {id(k) for k in kept}
            groups = {id(p): _med_group(p, i, options) for i, p in enumerate(remaining)}
            for path in remaining:
                if id(path) not in kept_ids:
                    rival = min((k for k in kept if groups[id(k)] == groups[id(path)]), key=_tiebreak(False))
                    lost[id(path)] = (index, step, rival)
        else:
            key = _KEYS[step]
            lowest = min(key(p, options) for p in remaining)
            kept = [p for p in remaining if key(p, options) == lowest]
            for path in remaining:
                if key(path, options) != lowest:
                    lost[id(path)] = (index, step, None)
        remaining = kept
        if step is Step.IGP_METRIC:
            pool = remaining
    if not remaining:
        return ()
    remaining.sort(key=_tiebreak(False))  # more than one only if they share a peer and originator
    best = remaining[0]
    if pool is None:
        pool = remaining
    pool = list(_cut(sorted(pool, key=_tiebreak(_oldest_applies(pool, options))), options.max_paths))
    in_pool = {id(p) for p in pool}

    def describe(path: Path) -> Ranked:
        if path is best:
            return Ranked(path, best=True, multipath=True)
        lost_entry = lost.get(id(path))
        if lost_entry is None:
            return Ranked(path, best=False, multipath=id(path) in in_pool)
        _, step, rival = lost_entry
        winner = rival if rival is not None else best
        return Ranked(
            path,
            best=False,
            multipath=id(path) in in_pool,
            lost_at=step,
            value=step_value(step, path, options),
            beaten_by=winner,
            winning_value=step_value(step, winner, options),
        )

    order = {id(p): i for i, p in enumerate(pool)}
    tie = _tiebreak(False)
    ranked = sorted(
        candidates,
        key=lambda p: (
            order.get(id(p), len(pool)),
            -lost.get(id(p), (len(STEPS), Step.NEIGHBOR_IP, None))[0],
            tie(p),
        ),
    )
    return tuple(describe(p) for p in ranked)
