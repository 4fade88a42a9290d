"""What this machine sends its BGP neighbors, without I/O: the planner's decisions as prefixes, the
machine's export policy chain over them, the drain (RFC 8326) and the per-session wire form.

The pipeline, each step a pure function or a small state machine with ``now`` passed in:

1. :func:`originated`: every announced decision (``vip/NAME`` -> the VIP's /32 or /128,
   ``route/NAME`` -> its prefix) as ``{prefix: object key}``.
2. :func:`apply_export_policy`: the machine's export chain over each, starting from plain attributes
   (ORIGIN IGP, empty AS path); a reject means the prefix is not sent at all.
3. :class:`Drain`: on shutdown, or when the machine is disabled, the routes that were on the wire are
   sent again tagged GRACEFUL_SHUTDOWN (65535:0) for ``drain_time``, then withdrawn. The planner already
   withdraws everything of a disabled machine; the drain deliberately overrides that for the drain
   time, so that peers move traffic away before it disappears.
4. :func:`for_session`: per neighbor, the routes of its family, in the form ExaBGP sends: our own ASN
   put in front of an explicit AS path on eBGP (ExaBGP sends an explicit path verbatim), LOCAL_PREF 0
   on iBGP while draining (RFC 8326 4.2).

:class:`agent.bgp.adjout.AdjRibOut` then turns the per-neighbor sets into commands.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from agent.announce.planner import Decision
from agent.bgp.api import Family, RouteAttributes, community_pair
from agent.bgp.api import Origin as WireOrigin
from agent.cluster.objects import Route, Vip
from agent.routing import GRACEFUL_SHUTDOWN, Attributes, Origin, PolicyChain, Prefix, SegmentType

log = logging.getLogger("wiremesh.bgp.export")

LOCAL_ATTRIBUTES = Attributes()  # a route we originate: ORIGIN IGP, empty AS path, nothing else

_ORIGIN_TO_WIRE = {
    Origin.IGP: WireOrigin.IGP,
    Origin.EGP: WireOrigin.EGP,
    Origin.INCOMPLETE: WireOrigin.INCOMPLETE,
}


def vip_prefix(address: str) -> Prefix:
    """A VIP's host route: /32 or /128."""
    ip = ipaddress.ip_address(address)
    return Prefix(ip.version, int(ip), ip.max_prefixlen)


def originated(
    decisions: Mapping[str, Decision], vips: Mapping[str, Vip], routes: Mapping[str, Route]
) -> dict[Prefix, str]:
    """Prefixes to originate from the planner's decisions (announced ones only), each with the key of
    the object it comes from. Two objects with one prefix originate it once, under the first key in
    sorted order, so the result does not depend on dict order."""
    out: dict[Prefix, str] = {}
    for key in sorted(decisions):
        if not decisions[key].announce:
            continue
        kind, _, name = key.partition("/")
        prefix: Prefix | None = None
        if kind == "vip" and name in vips:
            prefix = vip_prefix(vips[name].address)
        elif kind == "route" and name in routes:
            prefix = Prefix.parse(routes[name].prefix)
        if prefix is not None:
            out.setdefault(prefix, key)
    return out


def apply_export_policy(local: Mapping[Prefix, str], chain: PolicyChain) -> dict[Prefix, Attributes]:
    """The routes the export chain lets out, with its changes (communities, MED, AS prepend, ...)."""
    out: dict[Prefix, Attributes] = {}
    for prefix in local:
        attrs = chain.evaluate(prefix, LOCAL_ATTRIBUTES)
        if attrs is not None:
            out[prefix] = attrs
    return out


class DrainReason(StrEnum):
    SHUTDOWN = "shutdown"
    MACHINE_DISABLED = "machine disabled"


@dataclass(frozen=True, slots=True)
class DrainStatus:
    reason: DrainReason
    started: float
    until: float

    def done(self, now: float) -> bool:
        return now >= self.until


class Drain:
    """Decides what goes on the wire given what the policy wants (``live``) and whether the machine is
    enabled. A drain starts when the machine is disabled or :meth:`shutdown` is called: the routes
    last sent are frozen, tagged GRACEFUL_SHUTDOWN until ``until``, then nothing. A machine enabled
    again cancels a disable drain (not a shutdown: that one is final). With ``drain_time`` 0 there is
    nothing to warn about and routes are withdrawn at once."""

    def __init__(self, drain_time: float) -> None:
        if drain_time < 0:
            raise ValueError("drain_time must be >= 0")
        self.drain_time = drain_time
        self.status: DrainStatus | None = None
        self._frozen: dict[Prefix, Attributes] = {}
        self._last: dict[Prefix, Attributes] = {}

    @property
    def draining(self) -> bool:
        return self.status is not None

    @property
    def deadline(self) -> float | None:
        """When :meth:`routes` next changes on its own (the end of the drain), if it will."""
        return self.status.until if self.status is not None else None

    def done(self, now: float) -> bool:
        return self.status is not None and self.status.done(now)

    def shutdown(self, now: float) -> DrainStatus:
        if self.status is None or self.status.reason is not DrainReason.SHUTDOWN:
            self._start(DrainReason.SHUTDOWN, now)
        assert self.status is not None
        return self.status

    def _start(self, reason: DrainReason, now: float) -> None:
        if self.status is None:
            self._frozen = dict(self._last)
            # Nothing on the wire: nothing to warn anyone about, so no reason to wait.
            until = now + self.drain_time if self._frozen else now
            self.status = DrainStatus(reason, now, until)
        else:  # a shutdown during a disable drain: keep the routes and the deadline already running
            self.status = DrainStatus(reason, self.status.started, self.status.until)
        log.info(
            "draining (%s) for %.1f s: %d routes tagged graceful-shutdown",
            reason,
            self.drain_time,
            len(self._frozen),
        )

    def routes(
        self, live: Mapping[Prefix, Attributes], *, enabled: bool, now: float
    ) -> dict[Prefix, Attributes]:
        """What to have on the wire now."""
        status = self.status
        if status is not None and status.reason is DrainReason.MACHINE_DISABLED and enabled:
            log.info("machine enabled again: drain cancelled")
            self.status = status = None
        if status is None and not enabled:
            self._start(DrainReason.MACHINE_DISABLED, now)
            status = self.status
        if status is None:
            self._last = dict(live)
            return dict(self._last)
        if status.done(now):
            self._last = {}
            return {}
        out = {p: a.replace(communities=a.communities | {GRACEFUL_SHUTDOWN}) for p, a in self._frozen.items()}
        self._last = dict(self._frozen)
        return out


@dataclass(frozen=True, slots=True)
class Session:
    """An export target: one neighbor as configured."""

    address: str
    local_as: int
    peer_as: int

    @property
    def family(self) -> Family:
        return Family.IPV6_UNICAST if ":" in self.address else Family.IPV4_UNICAST

    @property
    def internal(self) -> bool:
        return self.local_as == self.peer_as


def wire_attributes(attrs: Attributes, session: Session, *, draining: bool = False) -> RouteAttributes:
    """``attrs`` (a locally originated route after export policy) as ExaBGP should send it on
    ``session``. ExaBGP sends an explicit AS path verbatim, so on eBGP our ASN goes in front of it; an
    empty path is left to ExaBGP's default (``[local-as]`` on eBGP, empty on iBGP)."""
    sequence: list[int] = []
    sets: list[tuple[int, ...]] = []
    for kind, numbers in attrs.as_path.segments:
        if kind is SegmentType.AS_SEQUENCE and not sets:
            sequence.extend(numbers)
        else:
            sets.append(numbers)
    if (sequence or sets) and not session.internal:
        sequence.insert(0, session.local_as)
    local_pref = attrs.local_pref
    if draining and session.internal:
        local_pref = 0
    return RouteAttributes(
        origin=_ORIGIN_TO_WIRE[attrs.origin],
        as_path=tuple(sequence),
        as_sets=tuple(sets),
        med=attrs.med,
        local_pref=local_pref,
        communities=tuple(community_pair(c) for c in attrs.communities),
        large_communities=tuple(attrs.large_communities),
    )


def for_session(
    routes: Mapping[Prefix, Attributes], session: Session, *, draining: bool = False
) -> dict[str, RouteAttributes]:
    """The routes ``session`` carries (its own address family only: ExaBGP's ``next-hop self`` cannot
    fill in a next hop of the other family), keyed by prefix text as :class:`AdjRibOut` takes them."""
    version = 6 if session.family is Family.IPV6_UNICAST else 4
    return {
        str(prefix): wire_attributes(attrs, session, draining=draining)
        for prefix, attrs in routes.items()
        if prefix.version == version
    }
