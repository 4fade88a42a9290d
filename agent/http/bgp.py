"""The HTTP API of the BGP speaker: the RIB with best-path explanations, and the neighbors.

``GET /v1/rib`` lists destinations in prefix order (``limit`` of them, 1,000 by default: a full
table is large), each with its best path, its ECMP next hops, what the kernel holds for it, and every
candidate path with its attributes, its source peer, the machine that originated it
(``origin_machine``: behind a reflector, the member whose router id is the ORIGINATOR_ID), its age
and why it is not best (the routing core's :meth:`agent.routing.Ranked.reason`: the step it lost at,
both values and the winner).
``GET /v1/rib?prefix=P`` is one destination: ``P`` exactly if it is a prefix, the longest match if it
is an address. ``GET /v1/bgp/neighbors`` lists every configured session: state, uptime, prefixes in
and out, last error, and whether it is to a route reflector's BIRD. ``GET /v1/bgp/reflectors`` is
route reflection as this machine computes it (:mod:`agent.bgp.reflectors`): full mesh or reflected,
the reflectors, this machine's role, its claim, whether a switch between plans is in progress, the
live members whose placement knobs differ from ours (``disagree``) and, on a reflector, its BIRD's
sessions.

With BGP off (``[bgp] enabled = false``) they answer 404 with a message that says so.

``GET /v1/machines/{name}/rib`` (same query, same JSON as ``/v1/rib``) is another machine's RIB,
fetched from that machine's own API at the address it publishes in gossip (:mod:`agent.http.advertise`), with
the caller's ``Authorization`` header passed on: the operator uses one API token on every machine
(write the same ``api-token`` file into each state directory), so a caller allowed here is allowed
there, and no machine holds a credential that lets it act alone on another. Errors name the machine:
404 for a machine gossip never saw, or one that runs no speaker; 502 when it is dead or left, publishes
no API address, refuses the connection or our token; 504 when it does not answer within
``proxy_timeout``. The target's own 4xx (no route for a prefix) comes back as is, prefixed by its name.
"""

from __future__ import annotations

import heapq
import ipaddress
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Protocol, runtime_checkable

import trio
from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, ValidationError

from agent.kernel.fib import FibState
from agent.logs import rfc3339
from agent.published import API, API_KEY, BGP_KEY
from agent.routing import PeerKind, Prefix, Ranked, Rib
from gossip import MemberInfo, MemberState, Refusals

if TYPE_CHECKING:
    import httpx

    from agent.bgp.reflection import ReflectionView
    from agent.bgp.speaker import NeighborView

log = logging.getLogger("wiremesh.api")

MAX_LIMIT = 1_000_000
PROXY_TIMEOUT = 5.0  # seconds for another machine's API to answer /v1/machines/{name}/rib
PrefixQuery = Annotated[str | None, Query(description="a prefix (exact) or an address (longest match)")]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_LIMIT)]


class SpeakerView(Protocol):
    """What the endpoints read; :class:`agent.bgp.speaker.BgpSpeaker` is the real one."""

    machine: str
    router_id: str
    asn: int
    rib: Rib
    fib_state: FibState

    def peer_name(self, address: str) -> str | None: ...

    def neighbor_views(self) -> list[NeighborView]: ...


@runtime_checkable
class Reflecting(Protocol):
    """A speaker that places route reflectors (the real one does; test fakes may not)."""

    def reflection_view(self) -> ReflectionView: ...


@runtime_checkable
class NamesOriginators(Protocol):
    """A speaker that knows which machine a router id is (the real one does; test fakes may not)."""

    def originator_name(self, router_id: str) -> str | None: ...


class PathOut(BaseModel):
    peer: str  # the neighbor's address; "local" for a route this machine originates
    peer_name: str | None  # the mesh machine the neighbor is, if it is one
    peer_asn: int
    peer_router_id: str  # from the peer's OPEN (the last tie-breaker but one)
    peer_type: str  # external, internal, local
    next_hop: str | None
    as_path: str
    origin: str
    med: int | None
    local_pref: int | None
    communities: list[str]
    age_seconds: float
    best: bool
    multipath: bool
    reason: str  # "best", or the step it lost at with both values and the winner
    lost_at: str | None
    path_id: int = 0  # RFC 7911 path id: one of several paths the same peer (a route reflector) sent
    originator_id: str | None = None  # RFC 4456: the machine that announced it, behind a reflector
    cluster_list: list[str] = []  # the reflectors it passed, the last one first
    origin_machine: str | None = None  # the mesh machine that announced it (behind a reflector too)


class DestinationOut(BaseModel):
    prefix: str
    best: PathOut
    ecmp: list[str]  # the next hops the FIB wants (the ECMP set's, best first)
    installed: list[str]  # what the kernel holds under our protocol
    fib_error: str | None
    paths: list[PathOut]


class RibOut(BaseModel):
    machine: str
    router_id: str
    asn: int
    destinations: int  # in the whole Loc-RIB
    truncated: bool
    routes: list[DestinationOut]


class NeighborOut(BaseModel):
    address: str
    name: str | None
    description: str
    type: str  # internal (iBGP) or external (eBGP)
    peer_as: int
    local_as: int
    passive: bool
    state: str  # idle, connected, up, down
    since: str | None
    uptime_seconds: float | None
    prefixes_in: int
    prefixes_out: int
    last_error: str | None
    end_of_rib: bool
    reflector: bool = False  # to a route reflector's BIRD (port 1790), not to a machine's ExaBGP


class BirdSessionOut(BaseModel):
    machine: str
    address: str
    kind: str  # client or reflector
    state: str  # BIRD's: up, start, down
    since: str
    info: str  # Established, Active, Connect, Passive, or why it failed


class DisagreeOut(BaseModel):
    machine: str  # a live member whose placement knobs differ from this machine's
    knob: str  # reflectors, full_mesh_below, margin, reflector_hold
    ours: int | float
    theirs: int | float


class ReflectorsOut(BaseModel):
    mode: str  # full-mesh or reflected
    reflectors: list[str]
    role: str  # reflector, client, peer (full mesh or legacy), absent
    eligibility: str  # auto, always, never (as published; never when refused)
    claim: int | None  # the HLC time this machine took the role, while it holds it
    switching: bool  # still holding the previous plan's sessions
    refused: str | None  # why this machine may not reflect although configured to
    bird_pid: int | None
    bird_sessions: list[BirdSessionOut]
    disagree: list[DisagreeOut] = []  # placement still uses this machine's knobs; fix the configs


def _path(view: SpeakerView, ranked: Ranked, now: float) -> PathOut:
    path = ranked.path
    attrs = path.attrs
    local = path.peer.kind is PeerKind.LOCAL
    address = "local" if local else str(path.peer.address)
    peer_name = view.machine if local else view.peer_name(address)
    return PathOut(
        peer=address,
        peer_name=peer_name,
        peer_asn=path.peer.asn,
        peer_router_id=str(path.peer.router_id),
        peer_type=path.peer.kind.name.lower(),
        next_hop=str(attrs.next_hop) if attrs.next_hop is not None else None,
        as_path=attrs.as_path.text,
        origin=attrs.origin.name.lower(),
        med=attrs.med,
        local_pref=attrs.local_pref,
        communities=attrs.community_texts(),
        age_seconds=round(max(0.0, now - path.received), 3),
        best=ranked.best,
        multipath=ranked.multipath,
        reason=ranked.reason(),
        lost_at=ranked.lost_at.value if ranked.lost_at is not None else None,
        path_id=path.path_id,
        originator_id=str(attrs.originator_id) if attrs.originator_id is not None else None,
        cluster_list=[str(c) for c in attrs.cluster_list],
        origin_machine=_origin_machine(view, attrs.originator_id, peer_name),
    )


def _origin_machine(
    view: SpeakerView, originator: ipaddress.IPv4Address | None, peer_name: str | None
) -> str | None:
    """Behind a reflector the machine whose router id is the path's ORIGINATOR_ID (``None`` if no
    member publishes it); otherwise the peer itself, as mesh machines announce only their own routes."""
    if originator is None:
        return peer_name
    return view.originator_name(str(originator)) if isinstance(view, NamesOriginators) else None


def destination(view: SpeakerView, prefix: Prefix, now: float) -> DestinationOut | None:
    selection = view.rib.selection(prefix)
    if selection is None:
        return None
    paths = [_path(view, r, now) for r in view.rib.explain(prefix)]
    best = next((p for p in paths if p.best), paths[0])
    installed = view.fib_state.installed.get(prefix, ())
    return DestinationOut(
        prefix=str(prefix),
        best=best,
        ecmp=[str(h) for h in selection.next_hops],
        installed=[str(h) for h in installed],
        fib_error=view.fib_state.failed.get(prefix),
        paths=paths,
    )


def first_destinations(view: SpeakerView, limit: int, now: float) -> list[DestinationOut]:
    """The first ``limit`` destinations in prefix order, without sorting a whole table (a poll with
    ``limit=1`` stays cheap)."""
    prefixes = heapq.nsmallest(limit, (p for p, _selection in view.rib.selections()))
    return [d for p in prefixes if (d := destination(view, p, now)) is not None]


def longest_match(rib: Rib, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> Prefix | None:
    bits = address.max_prefixlen
    for length in range(bits, -1, -1):
        network = int(address) >> (bits - length) << (bits - length)
        prefix = Prefix(address.version, network, length)
        if prefix in rib:
            return prefix
    return None


def _lookup(rib: Rib, text: str) -> Prefix | None:
    try:
        if "/" in text:
            return Prefix.parse(text)
        return longest_match(rib, ipaddress.ip_address(text))
    except ValueError as exc:
        raise HTTPException(400, f"not a prefix or an address: {text!r} ({exc})") from None


def _error_text(response: httpx.Response) -> str:
    try:
        body: Any = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return str(body)[:200]


def proxy_target(members: list[MemberInfo], name: str, refusals: Refusals) -> str:
    """The API address of machine ``name`` for a proxied request, or the HTTPException that says why
    there is none (see the module docstring)."""
    member = next((m for m in members if m.name == name), None)
    if member is None:
        raise HTTPException(404, f"no machine named {name!r} in the cluster")
    address = API.decode(member.kv.get(API_KEY, (0, None))[1], member.name, refusals)
    where = f" (API at {address})" if address else f" (gossip address {member.addr[0]})"
    if member.state in (MemberState.DEAD, MemberState.LEFT):
        raise HTTPException(502, f"machine {name} is {member.state.value}{where}")
    if member.kv.get(BGP_KEY, (0, None))[1] is None and address is None:
        raise HTTPException(404, f"machine {name} runs no BGP speaker ([bgp] enabled = false there)")
    if address is None:
        raise HTTPException(
            502,
            f"machine {name} publishes no API address: its http_listen is loopback-only (set it to "
            f'"0.0.0.0:7947" or a reachable address there) or it runs an older agent',
        )
    return address


def create_bgp_router(
    view: SpeakerView | None,
    *,
    clock: Callable[[], float] = trio.current_time,
    wall_clock: Callable[[], float] = time.time,
    machine: str | None = None,
    members: Callable[[], list[MemberInfo]] | None = None,
    proxy_transport: httpx.AsyncBaseTransport | None = None,
    proxy_timeout: float = PROXY_TIMEOUT,
) -> APIRouter:
    """``machine`` (this agent's name) and ``members`` (gossip) enable ``/v1/machines/{name}/rib``;
    ``proxy_transport`` replaces the network in tests."""
    router = APIRouter()
    refusals = Refusals(log)  # members' ``api`` values refused, each logged once

    def speaker() -> SpeakerView:
        if view is None:
            raise HTTPException(404, "BGP is not enabled on this agent (set [bgp] enabled = true)")
        return view

    @router.get("/v1/rib")
    async def rib(prefix: PrefixQuery = None, limit: LimitQuery = 1000) -> RibOut:
        v = speaker()
        now = clock()
        if prefix is not None:
            found = _lookup(v.rib, prefix)
            entry = destination(v, found, now) if found is not None else None
            if entry is None:
                raise HTTPException(404, f"no route for {prefix}")
            routes = [entry]
            truncated = False
        else:
            routes = first_destinations(v, limit, now)
            truncated = len(v.rib) > limit
        return RibOut(
            machine=v.machine,
            router_id=v.router_id,
            asn=v.asn,
            destinations=len(v.rib),
            truncated=truncated,
            routes=routes,
        )

    @router.get("/v1/machines/{name}/rib")
    async def machine_rib(
        name: str,
        request: Request,
        prefix: PrefixQuery = None,
        limit: LimitQuery = 1000,
    ) -> RibOut:
        """Machine ``name``'s RIB, from its own agent (this one's when it is ``name``)."""
        if name == machine or (view is not None and name == view.machine):
            return await rib(prefix, limit)
        if members is None:
            raise HTTPException(404, "this agent cannot reach other machines' APIs")
        address = proxy_target(members(), name, refusals)
        params: dict[str, str | int] = {"limit": limit}
        if prefix is not None:
            params["prefix"] = prefix
        headers = {"accept": "application/json"}
        auth = request.headers.get("authorization")
        if auth is not None:
            headers["authorization"] = auth
        url = f"http://{address}/v1/rib"
        import httpx  # on the first proxied request: ~6 MiB a machine that never proxies does not load

        try:
            async with httpx.AsyncClient(transport=proxy_transport, timeout=proxy_timeout) as client:
                response = await client.get(url, params=params, headers=headers)
        except httpx.TimeoutException:
            raise HTTPException(
                504, f"machine {name}'s API at {address} did not answer within {proxy_timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:
            raise HTTPException(502, f"cannot reach machine {name}'s API at {address}: {exc}") from None
        if response.status_code == 401:
            raise HTTPException(
                502,
                f"machine {name}'s API at {address} refused our token: use the same API token on "
                "every machine (the api-token file in each state directory)",
            )
        if response.status_code in (400, 404, 422):
            raise HTTPException(response.status_code, f"machine {name}: {_error_text(response)}")
        if response.status_code != 200:
            raise HTTPException(
                502,
                f"machine {name}'s API at {address} answered HTTP {response.status_code}: "
                f"{_error_text(response)}",
            )
        try:
            return RibOut.model_validate(response.json())
        except (ValueError, ValidationError) as exc:
            raise HTTPException(502, f"machine {name}'s API at {address} sent no RIB: {exc}") from None

    @router.get("/v1/bgp/neighbors")
    async def bgp_neighbors() -> list[NeighborOut]:
        v = speaker()
        now, wall_now = clock(), wall_clock()
        out: list[NeighborOut] = []
        for n in v.neighbor_views():
            s = n.status
            out.append(
                NeighborOut(
                    address=n.address,
                    name=n.name,
                    description=n.description,
                    type="internal" if n.peer_as == n.local_as else "external",
                    peer_as=n.peer_as,
                    local_as=n.local_as,
                    passive=n.passive,
                    state=s.state,
                    since=rfc3339(wall_now - (now - s.since)) if s.since is not None else None,
                    uptime_seconds=round(s.uptime, 3) if s.uptime is not None else None,
                    prefixes_in=s.prefixes_in,
                    prefixes_out=s.prefixes_out,
                    last_error=s.last_error,
                    end_of_rib=s.end_of_rib,
                    reflector=n.reflector,
                )
            )
        return out

    @router.get("/v1/bgp/reflectors")
    async def bgp_reflectors() -> ReflectorsOut:
        v = speaker()
        if not isinstance(v, Reflecting):
            raise HTTPException(404, "this speaker does not place route reflectors")
        r = v.reflection_view()
        return ReflectorsOut(
            mode=r.mode,
            reflectors=list(r.reflectors),
            role=r.role,
            eligibility=r.eligibility,
            claim=r.claim,
            switching=r.switching,
            refused=r.refused,
            bird_pid=r.bird_pid,
            bird_sessions=[
                BirdSessionOut(
                    machine=b.machine,
                    address=b.address,
                    kind=b.kind,
                    state=b.state,
                    since=b.since,
                    info=b.info,
                )
                for b in r.bird_sessions
            ],
            disagree=[
                DisagreeOut(machine=d.machine, knob=d.knob, ours=d.ours, theirs=d.theirs) for d in r.disagree
            ],
        )

    return router
