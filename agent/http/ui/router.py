"""The web UI at ``/ui``: server-rendered pages (Jinja2) over the same sources as the JSON API.

Reads reuse the API's own view code (:class:`agent.http.objects.ObjectsApi`,
:func:`agent.http.bgp.destination`,
:func:`agent.http.peers.peers_view`), so a page shows exactly what ``/v1`` returns. Writes go through the
store's ``create`` / ``replace`` / ``delete``, the calls the API endpoints make, so there is one set of
rules; a refused write re-renders the form with each problem next to its field and changes nothing.

Live status: pages mark regions with ``data-poll`` and a fragment URL (``/ui/.../_rows`` and the like);
``static/ui.js`` re-fetches them every few seconds. Pages work without JavaScript, minus the refresh,
the dialogs (the create form is then shown inline) and another machine's RIB (fetched by the browser
from ``/v1/machines/{name}/rib``).

Endpoints are ``async def``: FastAPI would run plain ``def`` ones in threads, where the Trio objects
behind the sources must not be touched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from agent.announce.status import StatusProvider
from agent.cluster.objects import Kind, MachineSettings, PolicySet, Problem
from agent.cluster.store import AlreadyExists, InUse, Invalid, NotFound, ObjectStore
from agent.http.auth import token_matches
from agent.http.bgp import DestinationOut, Reflecting, SpeakerView, first_destinations
from agent.http.metrics import CheckSource
from agent.http.objects import ObjectsApi
from agent.http.peers import PeersSource, peers_view, reachability
from agent.http.ui import forms
from agent.http.ui.forms import Errors, Form
from agent.http.ui.session import (
    LOGIN_PATH,
    STATIC_DIR,
    UI_PREFIX,
    clear_cookie_header,
    safe_next,
    set_cookie_header,
)
from gossip import MemberInfo

TEMPLATES = Path(__file__).parent / "templates"
RIB_LIMIT = 500
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
TABS = ("vips", "routing", "peers", "health")
CHECK_LABELS = {"tcp": "TCP", "http": "HTTP", "grpc": "gRPC", "exec": "Exec"}
JSONDict = dict[str, Any]


class UiNode(Protocol):
    """What the UI reads of the gossip node: this machine's name and the members."""

    @property
    def name(self) -> str: ...

    def members(self) -> list[MemberInfo]: ...


def check_text(check: Mapping[str, Any] | None) -> str:
    """The list pages' Health Check column, as the seed shows it: ``TCP :6443``; empty without one."""
    if not check:
        return ""
    return f"{CHECK_LABELS.get(str(check.get('type')), str(check.get('type')))} {check.get('target', '')}"


def path_text(path: str) -> str:
    """A peer's path as the Peers tab names it: Direct, Transit via R, Unreachable."""
    if path.startswith("transit"):
        return "Transit" + path[len("transit") :]
    if path.startswith("via "):
        return "Transit " + path
    return path.capitalize()


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # no stat() per render on the Trio thread: the templates ship with the code
    )
    env.globals.update(
        check_text=check_text, path_text=path_text, prefix=UI_PREFIX, empty_rule=forms.EMPTY_RULE
    )
    return env


def compile_templates(env: Environment) -> None:
    """Compile every template into ``env``'s cache, so that no request compiles one on the Trio thread.
    Blocking (~0.3 s): the runner (:mod:`agent.runner`) runs it in a worker thread once the API is up,
    off the start-up path. A page rendered before it finishes compiles its own template (Jinja's cache
    is thread-safe; the worst case is a template compiled twice)."""
    for name in env.list_templates():
        env.get_template(name)


def _static_assets() -> dict[str, tuple[bytes, str]]:
    """The shipped assets by file name, read once at startup (no file I/O in a request)."""
    return {
        path.name: (path.read_bytes(), STATIC_TYPES[path.suffix])
        for path in STATIC_DIR.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix in STATIC_TYPES
    }


class Ui:
    """The pages' logic over the agent's sources; see the module docstring."""

    def __init__(
        self,
        node: UiNode,
        *,
        token: str,
        store: Callable[[], ObjectStore] | None,
        status: StatusProvider,
        checks: CheckSource | None,
        peers: PeersSource | None,
        bgp: SpeakerView | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        committed: Callable[[], Awaitable[None]],
    ) -> None:
        self.node = node
        self.token = token
        self.store_source = store
        self.status = status
        self.checks = checks
        self.peers = peers
        self.bgp = bgp
        self.clock = clock
        self.wall_clock = wall_clock
        self.env = _environment()
        self.api = ObjectsApi(self.store, status, node.members, wall_clock, committed)

    def store(self) -> ObjectStore:
        if self.store_source is None:
            raise NotFound(Kind.MESH, "object store (this agent runs without one)")
        return self.store_source()

    def wall_ms(self) -> int:
        return int(self.wall_clock() * 1000)

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("machine_name", self.node.name)
        context.setdefault("errors", Errors())
        html = self.env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})

    def machine_names(self) -> list[str]:
        """Known machines (current and past gossip members), for the Machines pickers."""
        return [m.name for m in self.store().list(Kind.MACHINE) if isinstance(m, MachineSettings)]

    def policy_names(self) -> list[str]:
        return [str(p.name) for p in self.store().list(Kind.POLICY_SET) if isinstance(p, PolicySet)]

    # --- RIB ------------------------------------------------------------------------------------

    def local_rib(self) -> tuple[list[DestinationOut], int] | None:
        """The first :data:`RIB_LIMIT` destinations of this machine's Loc-RIB, and how many there are;
        None with BGP off."""
        view = self.bgp
        if view is None:
            return None
        return first_destinations(view, RIB_LIMIT, self.clock()), len(view.rib)

    # --- peers ----------------------------------------------------------------------------------

    def peer_rows(self, machine: str) -> tuple[list[JSONDict] | None, str | None]:
        """This machine's WireGuard peers from the transit driver; another machine's from the
        reachability vector it gossips (direct up/down, RTT, route: no handshake times)."""
        if machine == self.node.name:
            if self.peers is None:
                return None, "WireGuard is not enabled on this machine ([wireguard] enabled = false)."
            report = peers_view(self.peers.report(), self.wall_clock())
            return [p.model_dump() for p in report.peers], None
        member = next((m for m in self.node.members() if m.name == machine), None)
        vector = None if member is None else reachability(member)
        if vector is None:
            return None, f"{machine} publishes no reachability over gossip (no WireGuard there, or not yet)."
        if "error" in vector and not isinstance(vector["error"], dict):
            return None, f"{machine}'s reachability vector cannot be read: {vector['error']}"
        rows = [
            {
                "name": peer,
                "path": "direct" if e["route"] == "direct" else e["route"],
                "rtt_ms": e["rtt_ms"],
                "direct": e["direct"],
                "gossip": True,
            }
            for peer, e in vector.items()
        ]
        return rows, None


def _problems_of(exc: Exception) -> list[Problem]:
    if isinstance(exc, Invalid):
        return list(exc.problems)
    if isinstance(exc, AlreadyExists):
        return [Problem(("name",), str(exc))]
    if isinstance(exc, InUse):
        return [Problem((), f"{exc}: used by {w}") for w in exc.where]
    return [Problem((), str(exc))]


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def _save(
    ui: Ui,
    kind: Kind,
    name: str,
    body: JSONDict,
    done: str,
    refused: Callable[[Errors], Response],
) -> Response:
    """Replace ``name`` with ``body`` (the name is not editable: renaming is delete + create), then go
    to ``done``; a refusal is ``refused`` with the problems by field, and nothing changes."""
    body["name"] = name
    try:
        ui.store().replace(kind, name, body, ui.wall_ms())
    except NotFound as exc:
        return _not_found(ui, exc)
    except Invalid as exc:
        return refused(forms.errors_from(exc.problems))
    await ui.api.committed()
    return _see_other(done)


def ui_router(ui: Ui) -> APIRouter:
    """The ``/ui`` pages over ``ui``."""
    router = APIRouter(prefix=UI_PREFIX, include_in_schema=False)
    _add_session(router, ui)
    _add_vips(router, ui)
    _add_routes(router, ui)
    _add_policy_sets(router, ui)
    _add_machines(router, ui)
    return router


async def _form(request: Request) -> Form:
    return Form.parse(await request.body())


def _not_found(ui: Ui, exc: NotFound) -> HTMLResponse:
    return ui.render("error.html", 404, title="Not found", message=str(exc))


# --- session ----------------------------------------------------------------------------------------


def _add_session(router: APIRouter, ui: Ui) -> None:
    @router.get("")
    async def root() -> Response:
        return _see_other(f"{UI_PREFIX}/vips")

    @router.get("/login")
    async def login_page(next: str | None = None, expired: str | None = None) -> Response:
        message = "Your session has ended (the token changed?): paste the token again." if expired else None
        return ui.render("login.html", next=safe_next(next), message=message, nav=False)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = await _form(request)
        target = safe_next(form.get("next"))
        presented = form.text("token")
        if not presented or not token_matches(presented, ui.token):
            message = "Paste the API token." if not presented else "That is not this agent's API token."
            return ui.render("login.html", 401, next=target, error=message, nav=False)
        response = _see_other(target)
        response.headers["set-cookie"] = set_cookie_header(ui.token, secure=request.url.scheme == "https")
        return response

    @router.post("/logout")
    async def logout() -> Response:
        response = _see_other(LOGIN_PATH)
        response.headers["set-cookie"] = clear_cookie_header()
        return response

    assets = _static_assets()

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        """Shipped assets only (no directory walks): the names are fixed at build time."""
        if name not in assets:
            return Response("not found\n", status_code=404, media_type="text/plain")
        content, media_type = assets[name]
        return Response(content, media_type=media_type, headers={"cache-control": "no-cache"})


# --- VIPs -------------------------------------------------------------------------------------------


def _vip_values(vip: Mapping[str, Any] | None, machine: str | None = None) -> JSONDict:
    """A form's field values: an existing VIP's, or a new one's (assigned to ``machine`` if given)."""
    if vip is None:
        return {"enabled": True, "machines": [machine] if machine else [], "health_check": None}
    return dict(vip)


def _submitted_vip(form: Form) -> JSONDict:
    """What was typed, to show again beside the errors (numbers as typed, not parsed)."""
    return {
        "name": form.text("name"),
        "address": form.text("address"),
        "enabled": form.checked("enabled"),
        "machines": form.all("machines"),
        "holdoff": form.text("holdoff"),
        "health_check": {
            "type": form.text("hc_type"),
            "target": form.get("hc_target"),
            **{k: form.text(f"hc_{k}") for k in forms.HC_FIELDS},
        }
        if form.text("hc_type")
        else None,
    }


def _add_vips(router: APIRouter, ui: Ui) -> None:
    def list_page(
        status: int = 200,
        *,
        values: JSONDict | None = None,
        errors: Errors | None = None,
        notice: str | None = None,
        open_dialog: bool = False,
    ) -> HTMLResponse:
        return ui.render(
            "vips.html",
            status,
            page="vips",
            vips=ui.api.list_view(Kind.VIP),
            machines=ui.machine_names(),
            values=values or _vip_values(None),
            errors=errors or Errors(),
            notice=notice,
            open_dialog=open_dialog,
            return_to=f"{UI_PREFIX}/vips",
        )

    @router.get("/vips")
    async def vips(
        created: str | None = None, deleted: str | None = None, new: str | None = None
    ) -> Response:
        notice = f"Created VIP {created}." if created else (f"Deleted VIP {deleted}." if deleted else None)
        return list_page(notice=notice, open_dialog=new is not None)

    @router.get("/vips/_rows")
    async def vip_rows() -> Response:
        return ui.render("vip_rows.html", vips=ui.api.list_view(Kind.VIP))

    @router.post("/vips")
    async def create_vip(request: Request) -> Response:
        form = await _form(request)
        return_to = safe_next(form.get("return_to"))
        try:
            record = ui.store().create(Kind.VIP, forms.vip_body(form, with_holdoff=False), ui.wall_ms())
        except (Invalid, AlreadyExists) as exc:
            errors = forms.errors_from(_problems_of(exc))
            values = _submitted_vip(form)
            code = 409 if isinstance(exc, AlreadyExists) else 422
            if return_to.startswith(f"{UI_PREFIX}/machines/"):
                machine = return_to.split("/")[3].split("?")[0]
                return _machine_page(
                    ui, machine, "vips", code, values=values, errors=errors, open_dialog=True
                )
            return list_page(code, values=values, errors=errors, open_dialog=True)
        await ui.api.committed()
        sep = "&" if "?" in return_to else "?"
        return _see_other(f"{return_to}{sep}created={record.name}")

    @router.get("/vips/{name}")
    async def vip_page(name: str, saved: str | None = None) -> Response:
        try:
            vip = ui.api.one_view(Kind.VIP, name)
        except NotFound as exc:
            return _not_found(ui, exc)
        return ui.render(
            "vip_edit.html",
            page="vips",
            vip=vip,
            values=vip,
            machines=ui.machine_names(),
            notice="Saved." if saved else None,
        )

    @router.get("/vips/{name}/_status")
    async def vip_status(name: str, part: str | None = None) -> Response:
        """The per-machine table, or with ``part=globe`` just the heading's globe."""
        try:
            vip = ui.api.one_view(Kind.VIP, name)
        except NotFound as exc:
            return _not_found(ui, exc)
        return ui.render("vip_status.html", vip=vip, part=part)

    @router.post("/vips/{name}")
    async def save_vip(name: str, request: Request) -> Response:
        form = await _form(request)

        def refused(errors: Errors) -> Response:
            return ui.render(
                "vip_edit.html",
                422,
                page="vips",
                vip=ui.api.one_view(Kind.VIP, name),
                values={**_submitted_vip(form), "name": name},
                machines=ui.machine_names(),
                errors=errors,
            )

        body = forms.vip_body(form, with_holdoff=True)
        return await _save(ui, Kind.VIP, name, body, f"{UI_PREFIX}/vips/{name}?saved=1", refused)

    _add_delete(router, ui, "vips", Kind.VIP, "VIP")


def _add_delete(router: APIRouter, ui: Ui, plural: str, kind: Kind, label: str) -> None:
    """``GET .../delete`` asks (the page without JavaScript); ``POST`` deletes. A refusal (a policy set
    still attached) is shown on the confirmation page, and nothing changes."""

    @router.get(f"/{plural}/{{name}}/delete")
    async def confirm(name: str) -> Response:
        try:
            ui.store().get(kind, name)
        except NotFound as exc:
            return _not_found(ui, exc)
        return ui.render("confirm_delete.html", page=plural, label=label, name=name, plural=plural)

    @router.post(f"/{plural}/{{name}}/delete")
    async def delete(name: str) -> Response:
        try:
            ui.store().delete(kind, name, ui.wall_ms())
        except NotFound as exc:
            return _not_found(ui, exc)
        except InUse as exc:
            return ui.render(
                "confirm_delete.html",
                409,
                page=plural,
                label=label,
                name=name,
                plural=plural,
                errors=forms.errors_from(_problems_of(exc)),
            )
        await ui.api.committed()
        return _see_other(f"{UI_PREFIX}/{plural}?deleted={name}")


# --- routes -----------------------------------------------------------------------------------------


def _add_routes(router: APIRouter, ui: Ui) -> None:
    def form_page(route: JSONDict | None, values: JSONDict, status: int = 200, **extra: Any) -> HTMLResponse:
        return ui.render(
            "route_edit.html",
            status,
            page="routes",
            route=route,
            values=values,
            machines=ui.machine_names(),
            **extra,
        )

    @router.get("/routes")
    async def routes(created: str | None = None, deleted: str | None = None) -> Response:
        notice = (
            f"Created route {created}." if created else (f"Deleted route {deleted}." if deleted else None)
        )
        return ui.render("routes.html", page="routes", routes=ui.api.list_view(Kind.ROUTE), notice=notice)

    @router.get("/routes/_rows")
    async def route_rows() -> Response:
        return ui.render("route_rows.html", routes=ui.api.list_view(Kind.ROUTE))

    @router.get("/routes/new")
    async def new_route() -> Response:
        return form_page(None, {"enabled": True, "machines": [], "health_check": None})

    @router.post("/routes")
    async def create_route(request: Request) -> Response:
        form = await _form(request)
        try:
            record = ui.store().create(Kind.ROUTE, forms.route_body(form), ui.wall_ms())
        except (Invalid, AlreadyExists) as exc:
            return form_page(None, _submitted_route(form), 422, errors=forms.errors_from(_problems_of(exc)))
        await ui.api.committed()
        return _see_other(f"{UI_PREFIX}/routes?created={record.name}")

    @router.get("/routes/{name}")
    async def route_page(name: str, saved: str | None = None) -> Response:
        try:
            route = ui.api.one_view(Kind.ROUTE, name)
        except NotFound as exc:
            return _not_found(ui, exc)
        return form_page(route, route, notice="Saved." if saved else None)

    @router.post("/routes/{name}")
    async def save_route(name: str, request: Request) -> Response:
        form = await _form(request)

        def refused(errors: Errors) -> Response:
            route = ui.api.one_view(Kind.ROUTE, name)
            return form_page(route, {**_submitted_route(form), "name": name}, 422, errors=errors)

        body = forms.route_body(form)
        return await _save(ui, Kind.ROUTE, name, body, f"{UI_PREFIX}/routes/{name}?saved=1", refused)

    _add_delete(router, ui, "routes", Kind.ROUTE, "route")


def _submitted_route(form: Form) -> JSONDict:
    values = _submitted_vip(form)
    values["prefix"] = form.text("prefix")
    return values


# --- route policy sets ------------------------------------------------------------------------------


def _policy_usage(ui: Ui) -> dict[str, list[str]]:
    """Where each policy set is attached: ``machine (import)`` and ``machine (export)``."""
    used: dict[str, list[str]] = {}
    for settings in ui.store().list(Kind.MACHINE):
        if not isinstance(settings, MachineSettings):
            continue
        for direction, names in (("import", settings.import_policies), ("export", settings.export_policies)):
            for name in names:
                used.setdefault(name, []).append(f"{settings.name} ({direction})")
    return used


def _add_policy_sets(router: APIRouter, ui: Ui) -> None:
    def form_page(
        policy: JSONDict | None,
        values: JSONDict,
        rules: list[dict[str, str]],
        status: int = 200,
        **extra: Any,
    ) -> HTMLResponse:
        return ui.render(
            "policy_set_edit.html",
            status,
            page="policy-sets",
            policy=policy,
            values=values,
            rules=rules,
            **extra,
        )

    @router.get("/policy-sets")
    async def policy_sets(created: str | None = None, deleted: str | None = None) -> Response:
        notice = (
            f"Created policy set {created}."
            if created
            else (f"Deleted policy set {deleted}." if deleted else None)
        )
        return ui.render(
            "policy_sets.html",
            page="policy-sets",
            policies=ui.api.list_view(Kind.POLICY_SET),
            used=_policy_usage(ui),
            notice=notice,
        )

    @router.get("/policy-sets/new")
    async def new_policy_set() -> Response:
        return form_page(None, {"default": "reject"}, [])

    @router.post("/policy-sets")
    async def create_policy_set(request: Request) -> Response:
        form = await _form(request)
        body = forms.policy_set_body(form)
        try:
            record = ui.store().create(Kind.POLICY_SET, body, ui.wall_ms())
        except (Invalid, AlreadyExists) as exc:
            return form_page(
                None,
                {"name": body["name"], "default": body["default"]},
                forms.policy_form_from_submitted(form),
                422,
                errors=forms.errors_from(_problems_of(exc)),
            )
        await ui.api.committed()
        return _see_other(f"{UI_PREFIX}/policy-sets?created={record.name}")

    @router.get("/policy-sets/{name}")
    async def policy_set_page(name: str, saved: str | None = None) -> Response:
        try:
            policy = ui.api.one_view(Kind.POLICY_SET, name)
        except NotFound as exc:
            return _not_found(ui, exc)
        return form_page(
            policy,
            policy,
            forms.policy_form_values(policy),
            used=_policy_usage(ui).get(name, []),
            notice="Saved." if saved else None,
        )

    @router.post("/policy-sets/{name}")
    async def save_policy_set(name: str, request: Request) -> Response:
        form = await _form(request)
        body = forms.policy_set_body(form)

        def refused(errors: Errors) -> Response:
            return form_page(
                ui.api.one_view(Kind.POLICY_SET, name),
                {"name": name, "default": body["default"]},
                forms.policy_form_from_submitted(form),
                422,
                errors=errors,
            )

        done = f"{UI_PREFIX}/policy-sets/{name}?saved=1"
        return await _save(ui, Kind.POLICY_SET, name, body, done, refused)

    _add_delete(router, ui, "policy-sets", Kind.POLICY_SET, "policy set")


# --- machines ---------------------------------------------------------------------------------------


def _machine_page(ui: Ui, name: str, tab: str, status: int = 200, **extra: Any) -> HTMLResponse:
    try:
        machine = ui.api.machine_view(ui.store().get(Kind.MACHINE, name), full=True)
    except NotFound as exc:
        return _not_found(ui, exc)
    extra.setdefault("values", _vip_values(None, name))
    return ui.render(
        "machine.html",
        status,
        page="machines",
        machine=machine,
        tab=tab if tab in TABS else "vips",
        tabs=TABS,
        policies=ui.policy_names(),
        machines=ui.machine_names(),
        return_to=f"{UI_PREFIX}/machines/{name}?tab=vips",
        **_tab_context(ui, name, tab, machine),
        **extra,
    )


def _tab_context(ui: Ui, name: str, tab: str, machine: JSONDict) -> JSONDict:
    local = name == ui.node.name
    if tab == "routing":
        rib = ui.local_rib() if local else None
        return {
            "local": local,
            "rib": None if rib is None else rib[0],
            "rib_total": 0 if rib is None else rib[1],
            "reflection": ui.bgp.reflection_view() if local and isinstance(ui.bgp, Reflecting) else None,
        }
    if tab == "peers":
        rows, message = ui.peer_rows(name)
        return {"local": local, "peer_rows": rows, "peers_message": message}
    if tab == "health":
        checks = ui.checks if local else None  # run counts are this machine's own only
        return {
            "local": local,
            "checks": ui.api.checks_view(name, None),
            "runs": {} if checks is None else checks.runs,
            "failures": {} if checks is None else checks.failures,
        }
    return {"local": local, "vips": machine["vips"]}


def _add_machines(router: APIRouter, ui: Ui) -> None:
    def rows() -> list[JSONDict]:
        return [ui.api.machine_view(s, full=False) for s in ui.store().list(Kind.MACHINE)]

    @router.get("/machines")
    async def machines() -> Response:
        return ui.render("machines.html", page="machines", rows=rows())

    @router.get("/machines/_rows")
    async def machine_rows() -> Response:
        return ui.render("machine_rows.html", rows=rows())

    @router.get("/machines/{name}")
    async def machine(
        name: str,
        tab: str = "vips",
        created: str | None = None,
        saved: str | None = None,
        new: str | None = None,
    ) -> Response:
        """``new`` opens the Create VIP dialog (the VIPs tab's Create link, without script)."""
        notice = f"Created VIP {created}." if created else ("Settings saved." if saved else None)
        return _machine_page(ui, name, tab, notice=notice, open_dialog=new is not None and tab == "vips")

    @router.get("/machines/{name}/_tab/{tab}")
    async def machine_tab(name: str, tab: str) -> Response:
        try:
            machine = ui.api.machine_view(ui.store().get(Kind.MACHINE, name), full=True)
        except NotFound as exc:
            return _not_found(ui, exc)
        tab = tab if tab in TABS else "vips"
        return ui.render(f"tab_{tab}.html", machine=machine, **_tab_context(ui, name, tab, machine))

    @router.post("/machines/{name}/settings")
    async def save_settings(name: str, request: Request) -> Response:
        form = await _form(request)
        body: JSONDict = {
            "enabled": form.checked("enabled"),
            "import_policies": form.all("import_policies"),
            "export_policies": form.all("export_policies"),
        }

        def refused(errors: Errors) -> Response:
            return _machine_page(ui, name, "vips", 422, settings_errors=errors)

        return await _save(ui, Kind.MACHINE, name, body, f"{UI_PREFIX}/machines/{name}?saved=1", refused)


__all__ = ["Ui", "UiNode", "check_text", "compile_templates", "path_text", "ui_router"]
