"""Route policy: the :class:`~agent.cluster.objects.PolicySet` models compiled once into fast matchers, run as
a chain on import or export, and explained rule by rule for the CLI and UI.

**Semantics.** A set is an ordered rule list. A rule matches when every condition it gives holds: the
prefix is in any entry of its prefix list (``ge``/``le`` as on Cisco and BIRD), the route carries any
of its communities (standard, large or well-known names), its AS path matches its regex. The first
matching rule applies its actions (LOCAL_PREF, MED, communities replace, or remove then add, then AS
prepend) and its result decides; no match falls to the set's default. In a chain (a machine's import
or export list), sets run in order, each on the previous one's output: ``accept`` passes the route on,
``reject`` ends it. An empty chain accepts.

**AS-path regexes** are Python regexes over the AS path as text, run by RE2 so that matching is linear
in the path whatever the pattern: AS numbers separated by spaces, an AS_SET as ``{a,b}``, ``_`` a
boundary (start, end, space, comma, brace) as on routers. ``_65001_``: 65001 anywhere; ``^65001_``:
received from AS 65001; ``_65001$``: originated by it; ``^$``: originated in this AS;
``^(65001_)+65002$``: 65002 behind any prepends of 65001. The translation and the check (a bad regex,
or one RE2 cannot run, is refused when the set is saved) live in
:func:`agent.cluster.objects.as_path_pattern`; compiling here cannot fail for a saved set.

**Speed.** No pydantic at match time. A prefix list is a per-IP-version table keyed by entry length
then masked network, so a lookup costs one dict probe per distinct entry length; community conditions
are set intersections over integers; each regex is compiled once per rule. Community and AS-path
conditions and a rule's actions depend only on the attributes, and attribute objects are shared
between prefixes, so their results are memoised per object (bounded). See :class:`CompiledPolicySet`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.cluster.objects import (
    AsPathPattern,
    PolicyActions,
    PolicyMatch,
    PolicyRule,
    PolicySet,
    PrefixMatch,
    as_path_pattern,
)
from agent.routing.path import (
    NO_COMMUNITIES,
    NO_LARGE_COMMUNITIES,
    Attributes,
    LargeCommunity,
    Path,
    Prefix,
    split_communities,
)

MEMO_LIMIT = 8192  # per memo: distinct attribute sets remembered before it starts over


class PrefixIndex:
    """Prefix-list entries, each labelled with a bit; :meth:`lookup` ORs the bits of the entries a
    prefix matches. Per IP version a tuple of ``(entry length, shift, table)`` sorted by length, where
    ``table`` maps an entry's network shifted right by ``shift`` to its ``(bit, ge, le)`` entries: a
    lookup costs one dict probe per distinct entry length, however long the lists. A policy set
    indexes all its rules' lists at once (bit i: rule i), so one lookup serves every rule."""

    __slots__ = ("_tables",)

    def __init__(self, entries: Iterable[tuple[int, PrefixMatch]]) -> None:
        raw: dict[int, dict[int, dict[int, list[tuple[int, int, int]]]]] = {4: {}, 6: {}}
        for bit, entry in entries:
            prefix = Prefix.parse(entry.prefix)
            low, high = entry.length_range()
            shift = prefix.max_length - prefix.length
            by_net = raw[prefix.version].setdefault(prefix.length, {})
            by_net.setdefault(prefix.network >> shift, []).append((bit, low, high))
        self._tables: dict[int, tuple[tuple[int, int, dict[int, tuple[tuple[int, int, int], ...]]], ...]] = {
            version: tuple(
                (
                    length,
                    (32 if version == 4 else 128) - length,
                    {net: tuple(hits) for net, hits in by_net.items()},
                )
                for length, by_net in sorted(by_length.items())
            )
            for version, by_length in raw.items()
        }

    def lookup(self, prefix: Prefix) -> int:
        length = prefix.length
        network = prefix.network
        mask = 0
        for entry_length, shift, table in self._tables[prefix.version]:
            if entry_length > length:
                break
            hits = table.get(network >> shift)
            if hits is not None:
                for bit, low, high in hits:
                    if low <= length <= high:
                        mask |= bit
        return mask


class PrefixList(PrefixIndex):
    """One rule's prefix list: does any entry match?"""

    __slots__ = ()

    def __init__(self, entries: Iterable[PrefixMatch]) -> None:
        super().__init__((1, e) for e in entries)

    def __contains__(self, prefix: Prefix) -> bool:
        return self.lookup(prefix) != 0


class Actions:
    """A rule's actions as one function of the attributes, memoised per (shared) input object."""

    __slots__ = (
        "_memo",
        "add",
        "add_large",
        "local_pref",
        "med",
        "prepend",
        "remove",
        "remove_large",
        "replace",
        "replace_large",
    )

    def __init__(self, model: PolicyActions) -> None:
        self.local_pref = model.set_local_pref
        self.med = model.set_med
        self.replace: frozenset[int] | None = None
        self.replace_large: frozenset[LargeCommunity] | None = None
        self.add, self.add_large = NO_COMMUNITIES, NO_LARGE_COMMUNITIES
        self.remove, self.remove_large = NO_COMMUNITIES, NO_LARGE_COMMUNITIES
        if model.communities is not None:
            if model.communities.replace is not None:
                self.replace, self.replace_large = split_communities(model.communities.replace)
            self.add, self.add_large = split_communities(model.communities.add or ())
            self.remove, self.remove_large = split_communities(model.communities.remove or ())
        self.prepend = (model.as_prepend.asn, model.as_prepend.count) if model.as_prepend else None
        self._memo: dict[Attributes, Attributes] = {}

    @property
    def empty(self) -> bool:
        return (
            self.local_pref is None
            and self.med is None
            and self.replace is None
            and not (self.add or self.add_large or self.remove or self.remove_large)
            and self.prepend is None
        )

    def __call__(self, attrs: Attributes) -> Attributes:
        out = self._memo.get(attrs)
        if out is None:
            out = self._apply(attrs)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[attrs] = out
        return out

    def _apply(self, attrs: Attributes) -> Attributes:
        if self.replace is not None and self.replace_large is not None:
            communities, large = self.replace, self.replace_large
        else:
            communities = (attrs.communities - self.remove) | self.add
            large = (attrs.large_communities - self.remove_large) | self.add_large
        out = attrs.replace(
            local_pref=self.local_pref,
            med=self.med,
            communities=communities if communities != attrs.communities else attrs.communities,
            large_communities=large if large != attrs.large_communities else attrs.large_communities,
            as_path=attrs.as_path.prepend(*self.prepend) if self.prepend else None,
        )
        return attrs if out == attrs else out


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready to run. ``None`` conditions are absent; a community condition holds if the route
    carries any of ``communities`` or ``large_communities``."""

    index: int
    name: str | None
    prefixes: PrefixList | None
    communities: frozenset[int] | None
    large_communities: frozenset[LargeCommunity] | None
    as_path: AsPathPattern | None
    actions: Actions
    accept: bool
    model: PolicyRule

    @classmethod
    def compile(cls, index: int, rule: PolicyRule) -> CompiledRule:
        match: PolicyMatch = rule.match
        communities, large = split_communities(match.communities)
        return cls(
            index=index,
            name=rule.name,
            prefixes=PrefixList(match.prefix_list) if match.prefix_list else None,
            communities=communities if match.communities else None,
            large_communities=large if match.communities else None,
            as_path=as_path_pattern(match.as_path) if match.as_path is not None else None,
            actions=Actions(rule.actions),
            accept=rule.result == "accept",
            model=rule,
        )

    def matches(self, prefix: Prefix, attrs: Attributes) -> bool:
        if self.prefixes is not None and prefix not in self.prefixes:
            return False
        if (
            self.communities is not None
            and self.large_communities is not None
            and self.communities.isdisjoint(attrs.communities)
            and self.large_communities.isdisjoint(attrs.large_communities)
        ):
            return False
        return self.as_path is None or self.as_path.search(attrs.as_path.text) is not None

    @property
    def label(self) -> str:
        """How an explanation names the rule: ``#2 "prefer-transit"`` or ``#2``."""
        return f'#{self.index} "{self.name}"' if self.name else f"#{self.index}"


class CompiledPolicySet:
    """A policy set compiled once (when the cluster object changes) and run for every route.

    :meth:`evaluate` finds the first matching rule with two bit masks instead of a loop over rules:
    the rules whose prefix condition holds (one :class:`PrefixIndex` lookup) and the rules whose
    community and AS-path conditions hold, which depend only on the (shared) attribute object and are
    memoised per object. The lowest bit set in both is the first matching rule. :meth:`first_match`
    is the plain loop over :meth:`CompiledRule.matches`, for explanations (the tests check they agree).
    """

    __slots__ = ("_attr_masks", "_index", "_without_prefixes", "default_accept", "model", "name", "rules")

    def __init__(self, model: PolicySet) -> None:
        self.model = model
        self.name = model.name
        self.rules = tuple(CompiledRule.compile(i, r) for i, r in enumerate(model.rules))
        self.default_accept = model.default == "accept"
        entries = [(1 << i, e) for i, r in enumerate(model.rules) for e in r.match.prefix_list]
        self._index = PrefixIndex(entries) if entries else None
        self._without_prefixes = sum(1 << r.index for r in self.rules if r.prefixes is None)
        self._attr_masks: dict[Attributes, int] = {}

    @classmethod
    def compile(cls, model: PolicySet) -> CompiledPolicySet:
        return cls(model)

    def first_match(self, prefix: Prefix, attrs: Attributes) -> CompiledRule | None:
        for rule in self.rules:
            if rule.matches(prefix, attrs):
                return rule
        return None

    def _attr_mask(self, attrs: Attributes) -> int:
        mask = 0
        text = attrs.as_path.text
        for rule in self.rules:
            if (
                rule.communities is not None
                and rule.large_communities is not None
                and rule.communities.isdisjoint(attrs.communities)
                and rule.large_communities.isdisjoint(attrs.large_communities)
            ):
                continue
            if rule.as_path is not None and rule.as_path.search(text) is None:
                continue
            mask |= 1 << rule.index
        if len(self._attr_masks) >= MEMO_LIMIT:
            self._attr_masks.clear()
        self._attr_masks[attrs] = mask
        return mask

    def evaluate(self, prefix: Prefix, attrs: Attributes) -> Attributes | None:
        """The attributes after this set, or ``None`` if it rejects the route."""
        hits = self._attr_masks.get(attrs)
        if hits is None:
            hits = self._attr_mask(attrs)
        if hits:
            if self._index is not None:
                hits &= self._without_prefixes | self._index.lookup(prefix)
            else:
                hits &= self._without_prefixes
        if not hits:
            return attrs if self.default_accept else None
        rule = self.rules[(hits & -hits).bit_length() - 1]
        return rule.actions(attrs) if rule.accept else None


@dataclass(frozen=True, slots=True)
class AttributeChange:
    """One attribute a rule changed, both values as the CLI shows them."""

    attribute: Literal["local_pref", "med", "communities", "as_path"]
    before: str
    after: str


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """What one set did to the route: the rule that matched (``None``: no rule did, the default
    applied), the result, and what the rule changed."""

    policy_set: str
    rule: CompiledRule | None
    accepted: bool
    changes: tuple[AttributeChange, ...]

    def describe(self) -> str:
        which = f"rule {self.rule.label}" if self.rule is not None else "no rule matched, default"
        what = "accept" if self.accepted else "reject"
        changed = "; ".join(f"{c.attribute} {c.before} -> {c.after}" for c in self.changes)
        return f"{self.policy_set}: {which}: {what}" + (f" ({changed})" if changed else "")


@dataclass(frozen=True, slots=True)
class Explanation:
    """A route's way through a chain: one outcome per set that ran (evaluation stops at a reject),
    and the attributes before and after (``None`` after: rejected)."""

    prefix: Prefix
    before: Attributes
    after: Attributes | None
    outcomes: tuple[SetOutcome, ...]

    @property
    def accepted(self) -> bool:
        return self.after is not None

    def lines(self) -> list[str]:
        """The explanation as the CLI prints it."""
        head = f"{self.prefix}: {'accepted' if self.accepted else 'rejected'}"
        if not self.outcomes:
            return [head + " (no policy sets)"]
        return [head, *(f"  {o.describe()}" for o in self.outcomes)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, for the API and the web UI."""
        return {
            "prefix": str(self.prefix),
            "accepted": self.accepted,
            "sets": [
                {
                    "policy_set": o.policy_set,
                    "rule_index": o.rule.index if o.rule is not None else None,
                    "rule_name": o.rule.name if o.rule is not None else None,
                    "result": "accept" if o.accepted else "reject",
                    "changes": [
                        {"attribute": c.attribute, "before": c.before, "after": c.after} for c in o.changes
                    ],
                }
                for o in self.outcomes
            ],
        }


def _communities_text(attrs: Attributes) -> str:
    return " ".join(attrs.community_texts()) or "(none)"


def changes_between(before: Attributes, after: Attributes) -> tuple[AttributeChange, ...]:
    """The attributes a policy can set that differ between ``before`` and ``after``."""
    out: list[AttributeChange] = []
    if before.local_pref != after.local_pref:
        out.append(AttributeChange("local_pref", str(before.local_pref), str(after.local_pref)))
    if before.med != after.med:
        out.append(AttributeChange("med", str(before.med), str(after.med)))
    if (before.communities, before.large_communities) != (after.communities, after.large_communities):
        out.append(AttributeChange("communities", _communities_text(before), _communities_text(after)))
    if before.as_path != after.as_path:
        out.append(AttributeChange("as_path", before.as_path.text or "(empty)", after.as_path.text))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class PolicyChain:
    """The policy sets attached to a machine's import (or export) list, in order."""

    sets: tuple[CompiledPolicySet, ...] = ()

    @classmethod
    def of(cls, sets: Iterable[PolicySet | CompiledPolicySet]) -> PolicyChain:
        return cls(
            tuple(s if isinstance(s, CompiledPolicySet) else CompiledPolicySet.compile(s) for s in sets)
        )

    def evaluate(self, prefix: Prefix, attrs: Attributes) -> Attributes | None:
        """The attributes after every set, or ``None`` as soon as one rejects."""
        for policy_set in self.sets:
            out = policy_set.evaluate(prefix, attrs)
            if out is None:
                return None
            attrs = out
        return attrs

    def explain(self, prefix: Prefix, attrs: Attributes) -> Explanation:
        """The same evaluation, recording the rule that matched in each set and what it changed."""
        outcomes: list[SetOutcome] = []
        current = attrs
        for policy_set in self.sets:
            rule = policy_set.first_match(prefix, current)
            accepted = rule.accept if rule is not None else policy_set.default_accept
            after = rule.actions(current) if rule is not None and accepted else current
            changes = changes_between(current, after) if accepted else ()
            outcomes.append(SetOutcome(policy_set.name, rule, accepted, changes))
            if not accepted:
                return Explanation(prefix, attrs, None, tuple(outcomes))
            current = after
        return Explanation(prefix, attrs, current, tuple(outcomes))


def explain(route: Path, policy_sets: Sequence[PolicySet | CompiledPolicySet] | PolicyChain) -> Explanation:
    """Which rule matched in which set for ``route`` and what it changed (for the CLI and UI)."""
    chain = policy_sets if isinstance(policy_sets, PolicyChain) else PolicyChain.of(policy_sets)
    return chain.explain(route.prefix, route.attrs)
