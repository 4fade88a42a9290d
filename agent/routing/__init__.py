"""The routing core: routes and attributes (:mod:`.path`), route policy (:mod:`.policy`), best-path
selection (:mod:`.decision`) and the tables (:mod:`.rib`). Pure logic: the BGP speaker feeds it what
ExaBGP receives and applies the diffs it returns to the kernel and to the export side.
"""

from agent.routing.decision import DecisionOptions, Ranked, Selection, Step, compare, rank, select
from agent.routing.path import (
    GRACEFUL_SHUTDOWN,
    WELL_KNOWN_COMMUNITIES,
    AsPath,
    Attributes,
    Interner,
    Origin,
    Path,
    Peer,
    PeerKind,
    Prefix,
    SegmentType,
    format_community,
    parse_community,
    split_communities,
)
from agent.routing.policy import CompiledPolicySet, Explanation, PolicyChain, explain
from agent.routing.rib import Change, Destination, Diff, Rib

__all__ = [
    "GRACEFUL_SHUTDOWN",
    "WELL_KNOWN_COMMUNITIES",
    "AsPath",
    "Attributes",
    "Change",
    "CompiledPolicySet",
    "DecisionOptions",
    "Destination",
    "Diff",
    "Explanation",
    "Interner",
    "Origin",
    "Path",
    "Peer",
    "PeerKind",
    "PolicyChain",
    "Prefix",
    "Ranked",
    "Rib",
    "SegmentType",
    "Selection",
    "Step",
    "compare",
    "explain",
    "format_community",
    "parse_community",
    "rank",
    "select",
    "split_communities",
]
