"""Route reflector placement inside the mesh (RFC 4456), computed by every agent from gossip alone.

No election messages: each machine publishes, in its ``bgp`` value (:class:`agent.wirevalues.ReflectorInfo`),
whether it may reflect (``auto`` / ``always`` / ``never``, its config's ``[bgp] reflector``) and, while it
is one, its **claim**: the HLC time it took the role. :func:`place` turns the live members' values into
the reflector set; every agent that sees the same membership computes the same set, in any input order,
and a newly joined agent computes it too, because the memory of who holds the role is the published
claims, not local history.

The rule (:func:`place`):

1. **Who counts.** Live speakers: members alive or suspect that publish ``bgp``. A suspect member keeps
   what it holds (its claim, its sessions) until gossip says dead or left, or until it has been suspect
   for longer than ``suspect_hold`` (30 s by default: past the minimum suspicion timeout of the LAN
   profile up to 10,000 members, 4 x log10 N x 1 s = 16 s, which a dead member's suspicion reaches
   once enough members confirm it, so it is normally declared dead, or refutes, before the hold ends).
   ``suspect_for`` is each agent's own view, so two agents can disagree for the moments in which one
   has passed the hold and the other has not; both converge when gossip declares the member dead.
2. **Full mesh or reflected.** Below ``full_mesh_below`` live speakers (8 by default) the mesh stays a
   full mesh, as today: 28 sessions at 8 machines, 7 per ExaBGP, which today's figures handle easily
   (30 MiB ExaBGP with 29 sessions), while a reflected mesh of under 8 machines saves little and puts
   most machines' routes one reflector death from a re-peering. At or above it the mesh is reflected.
   Hysteresis without local state: a reflected mesh (some live claim exists) stays reflected until it
   falls below ``full_mesh_below - margin`` (6 by default); a full mesh has no claims, so a mesh that
   shrinks to 7 and grows back to 8 switches once each way, not on every join and leave in between.
   With no member allowed to reflect (all ``never``, or all legacy), the mesh stays a full mesh.
3. **Seats.** ``max(k, live always-members)`` seats (``k`` = 2 by default: one reflector can die and
   every client still has every route through the other, while the replacement is peered; a third
   adds a session per client for a double fault). ``always`` members always hold a seat (an operator's
   explicit choice; one joining may displace the newest ``auto`` claimer, once).
4. **Sticky claims.** The remaining seats go first to ``auto`` members that claim the role (alive, or
   suspect within the hold), earliest claim first, then lowest hash of the name (sha256): so more than
   ``k`` concurrent claims (a healed partition, a refuted suspicion) resolve to the same ``k``
   everywhere, and the losers withdraw their claims (:func:`own_claim`).
5. **Filling.** Seats still empty go to alive (not suspect) ``auto`` members by lowest hash of the
   name. The chosen machine then publishes a claim, and from there on it is sticky: members joining or
   leaving that are not reflectors never change the set.

A **legacy** member (one that publishes ``bgp`` without reflector info: an agent from before this
rule) peers with every machine, as it always did; so in a reflected mesh every machine keeps a direct
session to it, and it is never a reflector. A mixed-version mesh therefore still has every route
everywhere.

**Sessions** (:func:`session_plan` of a :class:`Placement`): full mesh, every pair; reflected,
reflectors with each other (plain iBGP, no client flag) and each reflector with every client (the
client end marked), so a client holds exactly one session per reflector (plus one per legacy member).

**Switching without a blackhole** (:func:`transition`). Between an old plan and a new one (full mesh to
reflected, a reflector replaced, back to full mesh) each machine holds the old plan's sessions plus the
new plan's, until every session of the new plan is established; then it drops to the new plan. A session
in both plans reflects if either has it reflect. While the switch lasts the old plan is whole, so every
pair of machines keeps the path it had (direct, or through an old reflector that still treats its old
clients as clients); afterwards the new plan is whole. A machine that joined during the switch is
reached once its own new sessions are up, as any newcomer. Sessions to machines that are no longer live
are dropped at once (a reflector that died is covered by the other ``k - 1``). On a machine, "every
session of the new plan is established" is its own sessions as the speaker reports them, and for every
other machine the plan it publishes as settled (``ReflectorInfo.settled`` = :meth:`Placement.digest`). A
session whose client flag changes while it stays (set at the start of a switch, cleared at its end) must
be reconfigured without a reset, or counted as a new session, when this is wired to the speaker.
:func:`uncovered` states the property the tests check: no pair of live machines without a direct
established session or an established pair of sessions through a machine that reflects between them.

**Knobs that differ.** The rule is the same on every machine only if ``k``, ``full_mesh_below``, the
margin and ``suspect_hold`` are; each machine publishes the ones it uses (``ReflectorInfo.knobs``).
A machine that sees a live member publish other values keeps computing with its own (it never
adopts another's, which could flap between two camps, and there is no one to say whose are right);
it logs a warning once per change naming the member and each differing knob with both values, and
``/v1/bgp/reflectors`` lists them (``disagree``). The operator fixes the config. Until then the
machines may place different reflectors: a session one of them expects can stay down, and its plan
stays switching (the old sessions held), which the same view shows. A member that publishes no
knobs (an older agent) is not reported.

Pure: no clock (``suspect_for`` and the claim times are passed in), no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from enum import StrEnum

from agent.config.bgp import DEFAULT_FULL_MESH_BELOW, DEFAULT_REFLECTOR_HOLD, DEFAULT_REFLECTORS, BgpSettings
from agent.published import BGP, BGP_KEY, Eligibility, ReflectorKnobs, SpeakerInfo
from gossip import MemberInfo, MemberState, Refusals

DEFAULT_MARGIN = 2  # a reflected mesh returns to a full mesh only below full_mesh_below - this

LIVE_STATES = frozenset({MemberState.ALIVE, MemberState.SUSPECT})

Pair = tuple[str, str]


def pair(a: str, b: str) -> Pair:
    """The canonical (sorted) form of an unordered pair of machine names."""
    if a == b:
        raise ValueError(f"a session needs two machines, not {a!r} twice")
    return (a, b) if a < b else (b, a)


def name_hash(name: str) -> int:
    """The tie-breaker every agent computes identically: the first 8 bytes of sha256(name)."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


@dataclass(frozen=True, slots=True)
class Params:
    """The rule's knobs (see the module docstring for the defaults' reasons). Every agent of a mesh must
    use the same values, or they compute different sets: they come from the config's ``[bgp]``."""

    k: int = DEFAULT_REFLECTORS
    full_mesh_below: int = DEFAULT_FULL_MESH_BELOW
    margin: int = DEFAULT_MARGIN
    suspect_hold: float = DEFAULT_REFLECTOR_HOLD

    def knobs(self) -> ReflectorKnobs:
        """The knobs as published (``rr.p``), so other machines can tell whether they agree."""
        return ReflectorKnobs(self.k, self.full_mesh_below, self.margin, self.suspect_hold)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be at least 1, not {self.k}")
        if self.full_mesh_below < 0:
            raise ValueError(f"full_mesh_below must be 0 or more, not {self.full_mesh_below}")
        if not 0 <= self.margin <= self.full_mesh_below:
            raise ValueError(f"margin must be 0..full_mesh_below ({self.full_mesh_below}), not {self.margin}")
        if not self.suspect_hold >= 0:
            raise ValueError(f"suspect_hold must be 0 or more seconds, not {self.suspect_hold}")


@dataclass(frozen=True, slots=True)
class Speaker:
    """One member as the rule sees it: from gossip (state) and its published ``bgp`` value.
    ``eligibility`` ``None``: a legacy speaker (publishes no reflector info). ``claim``: the HLC time it
    claimed the role, ``None`` if it does not. ``suspect_for``: seconds it has been suspect, as this
    agent's gossip saw it (0 unless suspect)."""

    name: str
    state: MemberState
    eligibility: Eligibility | None = Eligibility.AUTO
    claim: int | None = None
    suspect_for: float = 0.0


class Mode(StrEnum):
    FULL_MESH = "full-mesh"
    REFLECTED = "reflected"


class Role(StrEnum):
    REFLECTOR = "reflector"
    CLIENT = "client"
    PEER = "peer"  # a full-mesh member
    ABSENT = "absent"  # not a live speaker


@dataclass(frozen=True, slots=True)
class Session:
    """One BGP session of a plan: ``a < b``; ``client`` is the end the other reflects to (``None``: a
    plain iBGP session, full mesh or reflector to reflector)."""

    a: str
    b: str
    client: str | None = None

    @property
    def pair(self) -> Pair:
        return (self.a, self.b)

    def reflects(self, via: str) -> bool:
        """Whether ``via`` (one end) treats the other end as its client."""
        return self.client is not None and self.client != via


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """The sessions the live ``machines`` should hold, all of them (each machine holds its own)."""

    machines: frozenset[str]
    sessions: frozenset[Session]

    def by_pair(self) -> dict[Pair, Session]:
        return {s.pair: s for s in self.sessions}

    def of(self, name: str) -> frozenset[Session]:
        """The sessions ``name`` holds."""
        return frozenset(s for s in self.sessions if name in (s.a, s.b))

    def peers_of(self, name: str) -> frozenset[str]:
        return frozenset(s.b if s.a == name else s.a for s in self.of(name))


@dataclass(frozen=True, slots=True)
class Placement:
    """What :func:`place` decided: the mode, the reflectors (sorted), the live speakers, and which of
    them are legacy."""

    mode: Mode
    machines: frozenset[str]
    reflectors: tuple[str, ...] = ()
    legacy: frozenset[str] = frozenset()

    def role(self, name: str) -> Role:
        if name not in self.machines:
            return Role.ABSENT
        if self.mode is Mode.FULL_MESH or name in self.legacy:
            return Role.PEER
        return Role.REFLECTOR if name in self.reflectors else Role.CLIENT

    def digest(self) -> int:
        """A 32-bit name for this placement's shape (mode and reflectors, not the clients), which a
        machine publishes as settled once every session of its plan is established."""
        text = "\n".join((self.mode.value, *self.reflectors))
        return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")

    def peers_of(self, name: str) -> frozenset[str]:
        """The machines ``name`` should hold a session with (without building the whole plan)."""
        if name not in self.machines:
            return frozenset()
        if self.mode is Mode.FULL_MESH or name in self.legacy or name in self.reflectors:
            return self.machines - {name}
        return (frozenset(self.reflectors) | self.legacy) - {name}


def params_from(settings: BgpSettings) -> Params:
    """The rule's knobs from the ``[bgp]`` settings (the margin is fixed, and no larger than the
    threshold)."""
    return Params(
        k=settings.reflectors,
        full_mesh_below=settings.full_mesh_below,
        margin=min(DEFAULT_MARGIN, settings.full_mesh_below),
        suspect_hold=settings.reflector_hold,
    )


def speakers_from(
    members: Iterable[MemberInfo], own_name: str, own: SpeakerInfo, now: float, *, refusals: Refusals
) -> list[Speaker]:
    """The rule's input from this agent's gossip view: every member that publishes a readable ``bgp``
    value, and this machine itself from ``own`` (what it is about to publish, not what gossip last
    echoed). ``now`` is on gossip's clock, the one ``MemberInfo.since`` is on. A value this agent
    cannot read is reported to ``refusals``, and that member counts as no speaker."""

    decoded = [
        (m, info)
        for m in members
        if m.name != own_name
        and (info := BGP.decode(m.kv.get(BGP_KEY, (0, None))[1], m.name, refusals)) is not None
    ]
    return speakers_of(decoded, own_name, own, now)


def speakers_of(
    decoded: Iterable[tuple[MemberInfo, SpeakerInfo]], own_name: str, own: SpeakerInfo, now: float
) -> list[Speaker]:
    """:func:`speakers_from` for ``bgp`` values already decoded (one decode per replan serves the
    rule and the rest of the plan)."""

    def speaker(name: str, state: MemberState, info: SpeakerInfo, suspect_for: float) -> Speaker:
        rr = info.reflector
        if rr is None:
            return Speaker(name, state, None, None, suspect_for)
        return Speaker(name, state, rr.eligibility, rr.claim, suspect_for)

    out = [speaker(own_name, MemberState.ALIVE, own, 0.0)]
    for member, info in decoded:
        if member.name == own_name:
            continue
        suspect_for = max(0.0, now - member.since) if member.state is MemberState.SUSPECT else 0.0
        out.append(speaker(member.name, member.state, info, suspect_for))
    return out


def _holds(s: Speaker, params: Params) -> bool:
    """Alive, or suspect for no longer than the hold: still holds what it held."""
    return s.state is MemberState.ALIVE or (
        s.state is MemberState.SUSPECT and s.suspect_for <= params.suspect_hold
    )


def place(speakers: Iterable[Speaker], params: Params | None = None) -> Placement:
    """The reflector placement from one membership view (see the module docstring for the rule).
    A name listed twice is an error: gossip has one entry per member."""
    params = params or Params()
    live: dict[str, Speaker] = {}
    for s in speakers:
        if s.state not in LIVE_STATES:
            continue
        if s.name in live:
            raise ValueError(f"member {s.name!r} is listed twice")
        live[s.name] = s
    machines = frozenset(live)
    legacy = frozenset(n for n, s in live.items() if s.eligibility is None)
    holders = [s for s in live.values() if s.eligibility in (Eligibility.AUTO, Eligibility.ALWAYS)]
    holders = [s for s in holders if _holds(s, params)]
    claimed = any(s.claim is not None for s in holders)
    size = len(machines)
    reflected = size >= params.full_mesh_below or (claimed and size >= params.full_mesh_below - params.margin)
    if not reflected or not holders:
        return Placement(Mode.FULL_MESH, machines, (), legacy)

    always = [s.name for s in holders if s.eligibility is Eligibility.ALWAYS]
    seats = max(params.k, len(always)) - len(always)
    auto = [s for s in holders if s.eligibility is Eligibility.AUTO]
    claimers = sorted(
        (s for s in auto if s.claim is not None), key=lambda s: (s.claim or 0, name_hash(s.name), s.name)
    )
    chosen = always + [s.name for s in claimers[:seats]]
    seats -= min(seats, len(claimers))
    fill = sorted(
        (s for s in auto if s.claim is None and s.state is MemberState.ALIVE),
        key=lambda s: (name_hash(s.name), s.name),
    )
    chosen += [s.name for s in fill[:seats]]
    return Placement(Mode.REFLECTED, machines, tuple(sorted(chosen)), legacy)


def own_claim(placement: Placement, name: str, current: int | None, now_hlc: int) -> int | None:
    """What ``name`` should publish as its claim: its current one while it stays a reflector, a new one
    (``now_hlc``) when it becomes one, none when it is not (any more)."""
    if placement.role(name) is not Role.REFLECTOR:
        return None
    return current if current is not None else now_hlc


def session_plan(placement: Placement) -> SessionPlan:
    """Every session of the placement (O(machines x reflectors) reflected, O(machines²) full mesh)."""
    names = sorted(placement.machines)
    out: set[Session] = set()
    if placement.mode is Mode.FULL_MESH:
        out = {Session(a, b) for i, a in enumerate(names) for b in names[i + 1 :]}
        return SessionPlan(placement.machines, frozenset(out))
    reflectors = set(placement.reflectors)
    for r in placement.reflectors:
        for m in names:
            if m == r or (m in reflectors and m < r):
                continue
            a, b = pair(r, m)
            plain = m in reflectors or m in placement.legacy
            out.add(Session(a, b, None if plain else m))
    for legacy in placement.legacy:
        out |= {Session(*pair(legacy, m)) for m in names if m != legacy and m not in reflectors}
    return SessionPlan(placement.machines, frozenset(out))


def settled(plan: SessionPlan, established: Set[Pair]) -> bool:
    """Whether every session of ``plan`` is established."""
    return all(s.pair in established for s in plan.sessions)


def transition(old: SessionPlan, new: SessionPlan, established: Set[Pair]) -> SessionPlan:
    """The sessions to hold while switching from ``old`` to ``new``: ``new`` once every session of it is
    established; until then the old sessions between live machines, plus the new plan's others. A
    session in both reflects if either plan has it reflect (an old reflector keeps reflecting to its
    old clients, a new one starts at once: reflection only adds paths). ``old`` is what was held before
    (itself possibly a transition), so a second change during a switch keeps the first's sessions."""
    if settled(new, established):
        return new
    held = {s.pair: s for s in old.sessions if s.a in new.machines and s.b in new.machines}
    for s in new.sessions:
        kept = held.get(s.pair)
        if kept is None or kept.client is None:
            held[s.pair] = s
    return SessionPlan(new.machines, frozenset(held.values()))


def uncovered(plan: SessionPlan, established: Set[Pair]) -> list[Pair]:
    """Pairs of the plan's machines with no BGP path: neither a direct established session nor two
    established sessions through a machine that reflects between them (one of the pair is its client).
    Empty is the no-blackhole property."""
    up: dict[Pair, Session] = {p: s for p, s in plan.by_pair().items() if p in established}
    neighbours: dict[str, dict[str, Session]] = {m: {} for m in plan.machines}
    for s in up.values():
        neighbours[s.a][s.b] = s
        neighbours[s.b][s.a] = s
    names = sorted(plan.machines)
    missing: list[Pair] = []
    for i, x in enumerate(names):
        for y in names[i + 1 :]:
            if y in neighbours[x]:
                continue
            if not any(
                r in neighbours[y] and (sx.reflects(r) or neighbours[y][r].reflects(r))
                for r, sx in neighbours[x].items()
            ):
                missing.append((x, y))
    return missing


def census(placement: Placement) -> Mapping[str, int]:
    """Session counts without building the plan (the scale model uses it at 10,000 machines)."""
    n, r, legacy = len(placement.machines), len(placement.reflectors), len(placement.legacy)
    if placement.mode is Mode.FULL_MESH:
        return {"total": n * (n - 1) // 2, "per_reflector": 0, "per_client": max(n - 1, 0)}
    clients = n - r
    total = r * (r - 1) // 2 + r * clients + legacy * (clients - legacy) + legacy * (legacy - 1) // 2
    return {"total": total, "per_reflector": n - 1, "per_client": r + legacy}
