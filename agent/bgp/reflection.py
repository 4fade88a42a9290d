"""One machine's route reflection: the live members' ``bgp`` values and the placement rule
(:mod:`agent.bgp.reflectors`) turned into what the speaker carries out: the claim and settled plan it
publishes, the sessions it holds (ExaBGP's split into direct ones and ones to a reflector's BIRD) and,
while this machine reflects, its BIRD's spec.

Sans-I/O: :meth:`Reflection.replan` takes the gossip view, the time on gossip's clock, a claim time and
the names of the machines our sessions are up with, and returns what changed; the speaker
(:class:`agent.bgp.speaker.BgpSpeaker`) reads the clocks, the sessions, drives BIRD and publishes. Each
replan decodes every member's ``bgp`` value once, for the rule, the settled check and BIRD's clients.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass

from agent.bgp.bird import ReflectorSession
from agent.bgp.birdconf import ReflectorMode, ReflectorSpec
from agent.bgp.birdconf import Session as BirdSession
from agent.bgp.config import BGP_PORT
from agent.bgp.mesh import PEERING_STATES, MeshPeer, session_addresses
from agent.bgp.reflectors import (
    Mode,
    Pair,
    Placement,
    Role,
    SessionPlan,
    own_claim,
    params_from,
    place,
    session_plan,
    speakers_of,
    transition,
)
from agent.config.bgp import BgpSettings, MeshAsnMode
from agent.published import BGP_KEY, Eligibility, ReflectorInfo, ReflectorKnobs, SpeakerInfo
from gossip import DecodeCache, MemberInfo

log = logging.getLogger("wiremesh.bgp.reflection")


def bird_router_id(router_id: str) -> str:
    """The reflector BIRD's own router id: not the machine's, because the machine's ExaBGP peers with
    it over iBGP and an OPEN carrying the receiver's own identifier is refused (RFC 4271 6.2). In
    127/8, where no machine's router id is (they are its addresses), derived from the machine's."""
    a, b, c, d = (int(x) for x in router_id.split("."))
    if a == 127:  # a loopback router id (a lab): still another one
        b = (b + 1) % 256
    return f"127.{b}.{c}.{d or 1}"


@dataclass(frozen=True, slots=True)
class Disagreement:
    """One knob of the placement rule a live member publishes with another value than ours."""

    machine: str
    knob: str  # reflectors, full_mesh_below, margin, reflector_hold
    ours: int | float
    theirs: int | float


def disagreements(
    machine: str, ours: ReflectorKnobs, theirs: ReflectorKnobs | None
) -> tuple[Disagreement, ...]:
    """Each knob ``machine`` publishes (``theirs``) with another value than ``ours``; none when it
    publishes no knobs (an agent from before they were published)."""
    if theirs is None:
        return ()
    out = []
    for f in dataclasses.fields(ReflectorKnobs):
        a, b = getattr(ours, f.name), getattr(theirs, f.name)
        if a != b:
            out.append(Disagreement(machine, f.name, a, b))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ReflectionView:
    """Route reflection as ``/v1/bgp/reflectors`` shows it: the placement this machine computes, its
    role, what it publishes, whether a switch is in progress, and on a reflector BIRD's sessions."""

    mode: str
    reflectors: tuple[str, ...]
    role: str
    eligibility: str
    claim: int | None
    switching: bool  # holding the previous plan's sessions until the new plan's are established
    refused: str | None  # why this machine may not reflect, if it was configured to
    bird_pid: int | None
    bird_sessions: tuple[ReflectorSession, ...]
    disagree: tuple[Disagreement, ...] = ()  # live members whose rule knobs differ from ours


@dataclass(frozen=True, slots=True)
class Replanned:
    """What one :meth:`Reflection.replan` changed: ``neighbors``, ExaBGP's sessions may differ;
    ``publish``, our ``bgp`` value does (claim or settled plan); ``spec``, BIRD's spec to set (``None``:
    no BIRD), meaningful only on a machine that has one."""

    neighbors: bool
    publish: bool
    spec: ReflectorSpec | None


class Reflection:
    """The reflection state of machine ``machine``: eligibility (refused without BIRD or with
    per-machine ASNs), the claim, the placement, the plan targeted and the plan held (the previous
    plan's sessions too while a switch lasts), and BIRD's sessions as the speaker last read them."""

    def __init__(
        self, settings: BgpSettings, *, machine: str, router_id: str, asn: int, has_bird: bool
    ) -> None:
        self.machine = machine
        self.router_id = router_id
        self.asn = asn
        self.hold_time = settings.hold_time
        self.has_bird = has_bird
        self.refused: str | None = None
        self.eligibility = Eligibility(settings.reflector)
        if self.eligibility is not Eligibility.NEVER:
            if not has_bird:
                self.refused = "no BIRD for the reflector role on this machine"
            elif settings.plan.mode is not MeshAsnMode.SHARED:
                self.refused = "reflection needs the shared ASN plan (per-machine ASNs: full mesh)"
            if self.refused is not None:
                level = logging.WARNING if self.eligibility is Eligibility.ALWAYS else logging.INFO
                log.log(level, "this machine will not be a route reflector: %s", self.refused)
                self.eligibility = Eligibility.NEVER
        self.params = params_from(settings)
        self.claim: int | None = None
        self.settled: int | None = None  # the digest of the placement whose sessions are all up here
        self.placement = Placement(Mode.FULL_MESH, frozenset({machine}))
        self.target = session_plan(self.placement)
        self.held = self.target
        self.bird_sessions: tuple[ReflectorSession, ...] = ()
        self.knobs = self.params.knobs()
        self.disagree: dict[str, tuple[Disagreement, ...]] = {}  # by live member, as last logged

    def info(self) -> ReflectorInfo:
        """What this machine publishes as ``rr`` in its ``bgp`` value."""
        return ReflectorInfo(self.eligibility, self.claim, self.settled, self.knobs)

    @property
    def switching(self) -> bool:
        return self.held != self.target

    def replan(
        self,
        members: Iterable[MemberInfo],
        own: SpeakerInfo,
        *,
        now: float,
        hlc: int,
        up: Set[str],
        values: DecodeCache[SpeakerInfo],
    ) -> Replanned:
        """Placement, claim and session plan from one gossip view. ``own``: what this machine is about
        to publish (its ``rr`` is replaced by ours); ``now`` on gossip's clock; ``hlc`` the claim time
        should this machine take the role; ``up`` the machines our ExaBGP has an established session
        with (BIRD's are :attr:`bird_sessions`)."""
        decoded = [
            (m, info)
            for m in members
            if m.name != self.machine
            and (info := values.decode(m.kv.get(BGP_KEY, (0, None))[1], m.name)) is not None
        ]
        placement = place(speakers_of(decoded, self.machine, self._own(own), now), self.params)
        publish = False
        claim = own_claim(placement, self.machine, self.claim, hlc)
        if claim != self.claim:
            self.claim = claim
            placement = place(speakers_of(decoded, self.machine, self._own(own), now), self.params)
            publish = True
        if (placement.mode, placement.reflectors) != (self.placement.mode, self.placement.reflectors):
            log.info(
                "BGP mesh %s%s; this machine: %s",
                placement.mode.value,
                f" via {', '.join(placement.reflectors)}" if placement.reflectors else "",
                placement.role(self.machine).value,
            )
        self.placement = placement
        target = session_plan(placement)
        infos = {m.name: info for m, info in decoded if m.state in PEERING_STATES}
        self._compare_knobs(infos)
        established = self._established(target, infos, up)
        held = transition(self.held, target, established)
        changed = held != self.held or target != self.target
        self.target, self.held = target, held
        mine = target.of(self.machine)
        settled = placement.digest() if all(s.pair in established for s in mine) else None
        if settled != self.settled:
            self.settled = settled
            publish = True
        spec = self._bird_spec(self._own(own), infos) if self.has_bird else None
        return Replanned(changed, publish, spec)

    def _compare_knobs(self, infos: Mapping[str, SpeakerInfo]) -> None:
        """Keep :attr:`disagree` for the live members, logging each change once: the rule goes on
        with our knobs (see :mod:`agent.bgp.reflectors`), so the operator has to be told."""
        current: dict[str, tuple[Disagreement, ...]] = {}
        for name, info in sorted(infos.items()):
            theirs = info.reflector.knobs if info.reflector is not None else None
            found = disagreements(name, self.knobs, theirs)
            if found:
                current[name] = found
            if found == self.disagree.get(name, ()):
                continue
            for d in found:
                log.warning(
                    "reflector placement: %s uses %s = %s, this machine %s; placing with this "
                    "machine's (set the same [bgp] value on every machine)",
                    name, d.knob, d.theirs, d.ours,
                )  # fmt: skip
            if not found:
                log.info("reflector placement: %s's knobs agree with this machine's now", name)
        self.disagree = current

    def _own(self, own: SpeakerInfo) -> SpeakerInfo:
        return dataclasses.replace(own, reflector=self.info())

    def _established(self, target: SessionPlan, infos: Mapping[str, SpeakerInfo], up: Set[str]) -> set[Pair]:
        """The target plan's sessions known to be up: ours as ExaBGP (``up``) and, on a reflector,
        BIRD report them; the others' from the plan each machine publishes as settled."""
        up_names = set(up) | {s.machine for s in self.bird_sessions if s.info.startswith("Established")}
        digest = self.placement.digest()
        done = {n for n, info in infos.items() if info.reflector and info.reflector.settled == digest}
        out: set[Pair] = set()
        for s in target.sessions:
            ends = {s.a, s.b}
            if self.machine in ends:
                other = s.b if s.a == self.machine else s.a
                if other in up_names:
                    out.add(s.pair)
            elif ends & done:
                out.add(s.pair)
        return out

    def _bird_spec(self, own: SpeakerInfo, infos: Mapping[str, SpeakerInfo]) -> ReflectorSpec | None:
        """BIRD's clients: every live machine's ExaBGP (ours too) while this machine is a reflector;
        while it hands the role over, those the held plan still has it reflect to. None otherwise."""
        if self.placement.role(self.machine) is Role.REFLECTOR:
            served = set(self.placement.machines - self.placement.legacy)
        else:
            served = {s.client for s in self.held.of(self.machine) if s.reflects(self.machine) and s.client}
            if served:
                served.add(self.machine)
        local = session_addresses(own, own)
        if not served or local is None:
            return None
        clients: list[BirdSession] = [BirdSession(self.machine, local[0], self.asn, BGP_PORT)]
        for name in sorted(served - {self.machine}):
            info = infos.get(name)
            pair_addresses = session_addresses(own, info) if info is not None else None
            if pair_addresses is None:
                continue
            if pair_addresses[0] != local[0]:
                log.warning("reflector: %s is reached from %s, not from %s: not served",
                            name, pair_addresses[0], local[0])  # fmt: skip
                continue
            clients.append(BirdSession(name, pair_addresses[1], self.asn, BGP_PORT))
        return ReflectorSpec(
            router_id=bird_router_id(self.router_id),
            cluster_id=self.router_id,
            asn=self.asn,
            local_address=local[0],
            clients=tuple(clients),
            mode=ReflectorMode.REFLECT,
            hold_time=self.hold_time,
        )

    def split(
        self, mesh: Mapping[str, MeshPeer], own: SpeakerInfo
    ) -> tuple[dict[str, MeshPeer], dict[str, MeshPeer]]:
        """ExaBGP's mesh sessions for the plan held, by address: (direct, to a BIRD). A full mesh as
        before; reflected, a session to each reflector's BIRD (a reflector's to its own too) and direct
        sessions to legacy members and to the previous plan's peers while a switch lasts. Every
        machine's ExaBGP is a client of every reflector, other reflectors' included, and BIRDs do not
        peer with each other: each has every route straight from its announcer, and a machine taking
        or leaving the role keeps its client sessions to the other reflectors, so no session of the
        others is reset. A machine's session to a machine it reflects to is that machine's to its
        BIRD, not an ExaBGP one."""
        if not self.held.sessions:
            return dict(mesh), {}
        reflected = self.placement.mode is Mode.REFLECTED
        birds = set(self.placement.reflectors) if reflected else set()  # whose BIRD we connect to
        plain: set[str] = set()
        for session in self.held.of(self.machine):
            other = session.b if session.a == self.machine else session.a
            if session.client == self.machine:
                birds.add(other)  # it reflects to us (still, while a switch lasts)
            elif session.client is None:
                plain.add(other)
        direct: dict[str, MeshPeer] = {}
        to_birds: dict[str, MeshPeer] = {}
        for address, peer in mesh.items():
            if peer.name in birds:
                to_birds[address] = peer
            elif peer.name in plain:
                direct[address] = peer
        if self.machine in birds:
            local = session_addresses(own, own)
            if local is not None:
                to_birds[local[0]] = MeshPeer(
                    self.machine, local[0], self.asn, bird_router_id(self.router_id),
                    None if local[0] == own.address else local[0],
                )  # fmt: skip
        return direct, to_birds

    def view(self, bird_pid: int | None) -> ReflectionView:
        return ReflectionView(
            mode=self.placement.mode.value,
            reflectors=self.placement.reflectors,
            role=self.placement.role(self.machine).value,
            eligibility=self.eligibility.value,
            claim=self.claim,
            switching=self.switching,
            refused=self.refused,
            bird_pid=bird_pid,
            bird_sessions=self.bird_sessions,
            disagree=tuple(d for found in self.disagree.values() for d in found),
        )
