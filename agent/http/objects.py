"""The HTTP API for cluster objects (VIPs, routes, policy sets, machine and mesh settings), and the
API's error shape.

Endpoints validate only the shape of a request (pydantic, from the object models) and leave every rule
that needs the rest of the cluster (unique names, addresses inside a routable CIDR, known machines and
policy sets, policy sets still in use) to the store, which is the one place those rules live; its
exceptions become 404/409/422 here. Every error, FastAPI's own included, has one JSON shape:
``{"error": "...", "detail": [{"loc": [...], "msg": "..."}]}``; ``loc`` is a field path, starting with
``"body"`` for fields of the request body, like FastAPI's own validation errors.

PATCH is a JSON merge patch (RFC 7396): keys set to ``null`` are removed (back to their default),
objects merge recursively, anything else replaces. Machine and mesh settings always exist (with
defaults) for every known machine, so PUT and PATCH on them create the record on first write.

Reads of VIPs and routes carry their live status from a :class:`StatusProvider`: which machines announce
them now (what a list page's green/red globe shows) and, per machine, its gossip member state, its check
verdict (state, since, consecutive count, last latency and error) and its announcement decision with the
reason and, for a hold, when it ends. ``GET /v1/health/checks`` lists every machine's verdicts.

Times are wall-clock RFC 3339 strings, as in ``/v1/members``, with the matching age in seconds beside
them. Verdict times were published by each machine on its own wall clock; a hold's end is the
provider's (Trio) clock, which means nothing to a client, so it goes out as this node's wall clock plus
the seconds the hold has left, the same relative form the hold travels in over gossip.
Every read also carries the record's HLC ``version`` and ``problems``: a replicated object may
reference what this node does not know yet (the store keeps it so replicas converge), and an operator
should see that rather than have it hidden.

No ``from __future__ import annotations`` here: the per-kind endpoints get their body model at run time
(:func:`_with_body`), and FastAPI must see real types in their signatures.
"""

import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from agent.announce.planner import Decision, explain
from agent.announce.status import Decisions, NoStatus, StatusProvider
from agent.cluster.objects import (
    MESH_KEY,
    MODELS,
    ClusterObject,
    Kind,
    MachineSettings,
    MeshSettings,
    PolicySet,
    Problem,
    Route,
    Vip,
    key_of,
)
from agent.cluster.store import Key, NotFound, ObjectStore, Record
from agent.health.verdict import Verdict
from agent.http.errors import ERROR_RESPONSES, ErrorDetail, error_response, problems_detail
from agent.logs import rfc3339
from common.address import format_address
from gossip import MemberInfo

log = logging.getLogger("wiremesh.api")

JSONDict = dict[str, Any]


# --- status ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveState:
    """What one request shows of the live state, read once so every object in a list agrees."""

    verdicts: Mapping[str, Mapping[str, Verdict]]
    decisions: Decisions
    decisions_now: float  # the provider's clock reading the holds in ``decisions`` are measured against
    members: Mapping[str, str]  # machine -> gossip member state
    wall_now: float

    def check_view(self, verdict: Verdict) -> JSONDict:
        """A verdict with wall-clock times; ``for_seconds`` is how long it has been in its state."""
        return {
            "state": verdict.state,
            "since": rfc3339(verdict.since),
            "for_seconds": round(max(0.0, self.wall_now - verdict.since), 3),
            "consecutive": verdict.consecutive,
            "last_ok": verdict.last_ok,
            "last_latency_ms": None if verdict.latency is None else round(verdict.latency * 1000, 3),
            "last_error": verdict.error,
            "checked_at": None if verdict.checked_at is None else rfc3339(verdict.checked_at),
        }

    def decision_view(self, decision: Decision) -> JSONDict:
        """A decision with its hold's end on the wall clock, and planner's one-line explanation."""
        held_until: str | None = None
        left: float | None = None
        if decision.held_until is not None:
            left = round(max(0.0, decision.held_until - self.decisions_now), 3)
            decision = replace(decision, held_until=round(self.wall_now + left, 1))
            held_until = rfc3339(self.wall_now + left)
        return {
            "announce": decision.announce,
            "reason": decision.reason.value,
            "held_until": held_until,
            "held_seconds_left": left,
            "peers": list(decision.peers),
            "explanation": explain(decision, self.wall_now),
        }

    def machine_view(self, key: str, machine: str) -> JSONDict:
        verdict = self.verdicts.get(machine, {}).get(key)
        decision = self.decisions.get(machine, {}).get(key)
        return {
            "member": self.members.get(machine),
            "check": None if verdict is None else self.check_view(verdict),
            "decision": None if decision is None else self.decision_view(decision),
        }


def parse_object_key(value: str) -> tuple[Kind, str] | None:
    """``vip/NAME`` or ``route/NAME`` as a kind and a name; None for anything else."""
    kind, sep, name = value.partition("/")
    if not sep or not name or kind not in (Kind.VIP.value, Kind.ROUTE.value):
        return None
    return Kind(kind), name


# --- views -----------------------------------------------------------------------------------------


def version_view(record: Record | None) -> JSONDict | None:
    """The HLC version of the stored record; ``None`` for implicit defaults that were never written."""
    if record is None:
        return None
    version = record.version
    return {"wall_ms": version.ts.wall_ms, "counter": version.ts.counter, "origin": version.origin}


PatchBody = Annotated[
    JSONDict,
    Body(
        media_type="application/merge-patch+json",
        description="JSON merge patch (RFC 7396): null removes a key, objects merge, anything else replaces",
    ),
]


class ObjectsApi:
    """The object endpoints' logic over one store; see the module docstring."""

    def __init__(
        self,
        store: Callable[[], ObjectStore],
        status: StatusProvider,
        members: Callable[[], list[MemberInfo]],
        wall_clock: Callable[[], float],
        committed: Callable[[], Awaitable[None]],
    ) -> None:
        self.store = store
        self.status = status
        self.members = members
        self.wall_clock = wall_clock
        self.committed = committed

    def wall_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    def live(self) -> LiveState:
        decisions_now, decisions = self.status.all_decisions()
        return LiveState(
            verdicts=self.status.verdicts(),
            decisions=decisions,
            decisions_now=decisions_now,
            members={m.name: str(m.state) for m in self.members()},
            wall_now=self.wall_clock(),
        )

    def view(
        self,
        kind: Kind,
        obj: ClusterObject,
        problems: Mapping[Key, list[Problem]],
        live: LiveState | None = None,
    ) -> JSONDict:
        """The object, its version, the problems it has here (a replicated object may reference what this
        node does not know), and for VIPs and routes its live status (from ``live``, read here if not
        given). The machines listed are the assigned ones, then any other that still announces it (say,
        one whose store lags behind)."""
        name = key_of(obj)
        body = obj.model_dump(mode="json")
        body["version"] = version_view(self.store().get_record(kind, name))
        body["problems"] = [d.model_dump() for d in problems_detail(problems.get((kind, name), []), ())]
        if isinstance(obj, Vip | Route):
            live = live or self.live()
            key = f"{kind.value}/{name}"
            announced_by = sorted(self.status.announced_by(kind, name))
            machines = [*obj.machines, *(m for m in announced_by if m not in obj.machines)]
            body["status"] = {
                "announced": bool(announced_by),
                "announced_by": announced_by,
                "machines": [
                    {
                        "name": m,
                        "assigned": m in obj.machines,
                        "health": self.status.health(kind, name, m),
                        "announcing": m in announced_by,
                        **live.machine_view(key, m),
                    }
                    for m in machines
                ],
            }
        return body

    def list_view(self, kind: Kind) -> list[JSONDict]:
        store = self.store()
        return self._views(kind, store.list(kind), store.problems())

    def _views(
        self, kind: Kind, objs: Sequence[ClusterObject], problems: Mapping[Key, list[Problem]]
    ) -> list[JSONDict]:
        """Several objects' views over one reading of the live state, so they agree with each other."""
        live = self.live()
        return [self.view(kind, obj, problems, live) for obj in objs]

    def one_view(self, kind: Kind, name: str) -> JSONDict:
        store = self.store()
        return self.view(kind, store.get(kind, name), {(kind, name): store.problems_of(kind, name)})

    def checks_view(self, machine: str | None, object_key: str | None) -> list[JSONDict]:
        """Every machine's check verdicts, by machine then object, optionally for one machine or object."""
        live = self.live()
        rows = []
        for name in sorted(live.verdicts):
            if machine is not None and name != machine:
                continue
            for key, verdict in sorted(live.verdicts[name].items()):
                if object_key is None or key == object_key:
                    rows.append(
                        {"machine": name, "member": live.members.get(name), "object": key}
                        | live.check_view(verdict)
                    )
        return rows

    def machine_view(self, settings: ClusterObject, *, full: bool) -> JSONDict:
        """A machine: its settings, its gossip member state, and the VIPs assigned to it (names, or
        whole VIP views when ``full``)."""
        assert isinstance(settings, MachineSettings)
        store = self.store()
        problems = store.problems()
        name = settings.name
        member = next((m for m in self.members() if m.name == name), None)
        vips = [v for v in store.list(Kind.VIP) if isinstance(v, Vip) and name in v.machines]
        settings_view = self.view(Kind.MACHINE, settings, problems)
        return {
            "name": name,
            "settings": {k: v for k, v in settings_view.items() if k not in ("version", "problems")},
            "version": settings_view["version"],
            "problems": settings_view["problems"],
            "member": None
            if member is None
            else {
                "state": str(member.state),
                "incarnation": member.incarnation,
                "addr": format_address(member.addr),
            },
            "vips": self._views(Kind.VIP, vips, problems) if full else [v.name for v in vips],
        }


async def nothing_to_wait_for() -> None:
    """``committed`` for a store that is not written to disk."""


def _with_body(
    endpoint: Callable[..., Awaitable[Response]], annotation: Any
) -> Callable[..., Awaitable[Response]]:
    """Give ``endpoint``'s ``body`` parameter a concrete model, so FastAPI validates it and documents it.

    The CRUD endpoints are written once for every kind; FastAPI reads parameter types from the signature,
    so each kind's copy gets a signature naming its own model.
    """
    sig = inspect.signature(endpoint)
    params = [p.replace(annotation=annotation) if p.name == "body" else p for p in sig.parameters.values()]
    endpoint.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return endpoint


COLLECTIONS: tuple[tuple[str, Kind, type[BaseModel]], ...] = (
    ("vips", Kind.VIP, Vip),
    ("routes", Kind.ROUTE, Route),
    ("policy-sets", Kind.POLICY_SET, PolicySet),
)


def create_objects_router(
    store: Callable[[], ObjectStore],
    status: StatusProvider | None = None,
    *,
    members: Callable[[], list[MemberInfo]],
    wall_clock: Callable[[], float],
    committed: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    """The ``/v1`` object endpoints. ``store`` is called per request, so the store may be opened later
    than the app is built; ``members`` feeds the machine views; ``wall_clock`` (seconds) stamps writes.
    ``committed`` waits until every write so far is on disk; a write answers only after it, so a 2xx
    means the change survives a crash (without it, e.g. a store with no disk, writes answer at once)."""
    api = ObjectsApi(store, status or NoStatus(), members, wall_clock, committed or nothing_to_wait_for)
    router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
    for plural, kind, model in COLLECTIONS:
        _add_collection(router, api, plural, kind, model)
    _add_machines(router, api)
    _add_mesh(router, api)
    _add_health(router, api)
    return router


def _add_collection(
    router: APIRouter, api: ObjectsApi, plural: str, kind: Kind, model: type[BaseModel]
) -> None:
    tags: list[str | Enum] = [plural]
    one = f"/{plural}/{{name}}"

    async def list_objects() -> Response:
        return JSONResponse(api.list_view(kind))

    async def get_object(name: str) -> Response:
        return JSONResponse(api.one_view(kind, name))

    async def create_object(body: Any) -> Response:
        record = api.store().create(kind, body, api.wall_ms())
        await api.committed()
        view = api.one_view(kind, record.name)
        return JSONResponse(view, status_code=201, headers={"location": f"/v1/{plural}/{quote(record.name)}"})

    async def replace_object(name: str, body: Any) -> Response:
        api.store().replace(kind, name, body, api.wall_ms())
        await api.committed()
        return JSONResponse(api.one_view(kind, name))

    async def patch_object(name: str, body: PatchBody) -> Response:
        api.store().patch(kind, name, body, api.wall_ms())
        await api.committed()
        return JSONResponse(api.one_view(kind, name))

    async def delete_object(name: str) -> Response:
        api.store().delete(kind, name, api.wall_ms())
        await api.committed()
        return Response(status_code=204)

    body_type = Annotated[model, Body()]  # type: ignore[valid-type]
    what = kind.value
    router.add_api_route(f"/{plural}", list_objects, methods=["GET"], tags=tags, summary=f"List {plural}")
    router.add_api_route(
        f"/{plural}",
        _with_body(create_object, body_type),
        methods=["POST"],
        status_code=201,
        tags=tags,
        summary=f"Create a {what}",
    )
    router.add_api_route(one, get_object, methods=["GET"], tags=tags, summary=f"Get a {what}")
    router.add_api_route(
        one, _with_body(replace_object, body_type), methods=["PUT"], tags=tags, summary=f"Replace a {what}"
    )
    router.add_api_route(one, patch_object, methods=["PATCH"], tags=tags, summary=f"Merge-patch a {what}")
    router.add_api_route(
        one, delete_object, methods=["DELETE"], status_code=204, tags=tags, summary=f"Delete a {what}"
    )


def _add_machines(router: APIRouter, api: ObjectsApi) -> None:
    tags: list[str | Enum] = ["machines"]

    @router.get("/machines", tags=tags, summary="List machines: current and past members, and their settings")
    async def list_machines() -> Response:
        return JSONResponse([api.machine_view(s, full=False) for s in api.store().list(Kind.MACHINE)])

    @router.get("/machines/{name}", tags=tags, summary="A machine: settings, its VIPs, its member state")
    async def get_machine(name: str) -> Response:
        return JSONResponse(api.machine_view(api.store().get(Kind.MACHINE, name), full=True))

    @router.get("/machines/{name}/vips", tags=tags, summary="The VIPs assigned to a machine")
    async def machine_vips(name: str) -> Response:
        return JSONResponse(api.machine_view(api.store().get(Kind.MACHINE, name), full=True)["vips"])

    @router.put("/machines/{name}", tags=tags, summary="Replace a machine's settings")
    async def put_machine(name: str, body: MachineSettings) -> Response:
        store = api.store()
        store.replace(Kind.MACHINE, name, body, api.wall_ms())
        await api.committed()
        return JSONResponse(api.machine_view(store.get(Kind.MACHINE, name), full=True))

    @router.patch("/machines/{name}", tags=tags, summary="Merge-patch a machine's settings")
    async def patch_machine(name: str, body: PatchBody) -> Response:
        store = api.store()
        store.patch(Kind.MACHINE, name, body, api.wall_ms())
        await api.committed()
        return JSONResponse(api.machine_view(store.get(Kind.MACHINE, name), full=True))


def _add_mesh(router: APIRouter, api: ObjectsApi) -> None:
    tags: list[str | Enum] = ["mesh"]

    @router.get("/mesh", tags=tags, summary="Mesh-wide settings")
    async def get_mesh() -> Response:
        return JSONResponse(api.one_view(Kind.MESH, MESH_KEY))

    @router.put("/mesh", tags=tags, summary="Replace the mesh-wide settings")
    async def put_mesh(body: MeshSettings) -> Response:
        api.store().replace(Kind.MESH, MESH_KEY, body, api.wall_ms())
        await api.committed()
        return JSONResponse(api.one_view(Kind.MESH, MESH_KEY))

    @router.patch("/mesh", tags=tags, summary="Merge-patch the mesh-wide settings")
    async def patch_mesh(body: PatchBody) -> Response:
        api.store().patch(Kind.MESH, MESH_KEY, body, api.wall_ms())
        await api.committed()
        return JSONResponse(api.one_view(Kind.MESH, MESH_KEY))


def _add_health(router: APIRouter, api: ObjectsApi) -> None:
    tags: list[str | Enum] = ["health"]

    @router.get(
        "/health/checks",
        tags=tags,
        summary="Every machine's health check verdicts, as each publishes them over gossip",
    )
    async def health_checks(
        machine: Annotated[str | None, Query(description="only this machine's verdicts")] = None,
        object_key: Annotated[
            str | None, Query(alias="object", description="only this object's: vip/NAME or route/NAME")
        ] = None,
    ) -> Response:
        """A filter naming nothing this node knows is a 404 rather than an empty list, so a typo shows."""
        store = api.store()
        if machine is not None:
            try:
                store.get(Kind.MACHINE, machine)
            except NotFound as exc:
                return error_response(404, str(exc), [ErrorDetail(loc=["query", "machine"], msg=str(exc))])
        if object_key is not None:
            parsed = parse_object_key(object_key)
            if parsed is None:
                msg = f"expected vip/NAME or route/NAME, got {object_key!r}"
                return error_response(422, "invalid request", [ErrorDetail(loc=["query", "object"], msg=msg)])
            try:
                store.get(*parsed)
            except NotFound as exc:
                return error_response(404, str(exc), [ErrorDetail(loc=["query", "object"], msg=str(exc))])
        return JSONResponse(api.checks_view(machine, object_key))


def object_counts(store: Callable[[], ObjectStore]) -> Callable[[], Mapping[str, int]]:
    """Live objects per kind (implicit defaults included), for the metrics collector."""
    return lambda: {kind.value: len(store().list(kind)) for kind in MODELS}
