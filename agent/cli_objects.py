"""The CLI's API client and the object commands: ``wiremesh vip|route|policy|machine|health ...``.

Every command is a thin call to the agent's HTTP API, so the CLI enforces no rule of its own: what the
API refuses is printed as the API said it, one line per field (``address: 1.2.3.4 is outside every
routable CIDR``), with exit code 1. Tables are for people; ``--json`` prints the API's JSON as is,
for scripts.

Edits are JSON merge patches: ``vip update web --holdoff 30`` changes the holdoff and nothing else,
and so do ``enable``/``disable``, so two operators editing different fields of one VIP do not undo
each other's change.

``vip show`` / ``route show`` explain each machine's announcement decision in a few words
(``held until 12:03:41 (no healthy peer)``, ``withdrawn: web-b is healthy``), with times in the local
time zone; ``--json`` has the API's full sentence (``explanation``) and RFC 3339 times.

The bearer token comes from ``--token-file``, then ``$WIREMESH_TOKEN`` (the token itself), then
``$WIREMESH_TOKEN_FILE``, then ``/var/lib/wiremesh/api-token``. A token that cannot be read is not an
error until the agent asks for one, so "cannot reach the agent" is still what an unreachable agent says.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

from agent.auth import TOKEN_ENV, TOKEN_FILE_ENV, TokenError, read_token, token_path
from agent.config import DEFAULT_STATE_DIR

DEFAULT_API = "http://127.0.0.1:7947"
API_ENV = "WIREMESH_API"
ERROR_WIDTH = 48  # last errors are cut to this in tables; --json has them whole
Handler = Callable[[argparse.Namespace, TextIO], int]


class ApiError(Exception):
    """The agent's API could not be used or refused the request; ``str()`` is meant for the user as is:
    the first line says what happened, one indented line per field the API named."""

    def __init__(self, message: str, detail: Sequence[Mapping[str, Any]] = ()) -> None:
        self.message = message
        self.detail = list(detail)
        lines = [message, *(f"  {_field_path(d.get('loc', []))}{d.get('msg', '')}" for d in self.detail)]
        super().__init__("\n".join(lines))


def _field_path(loc: Sequence[Any]) -> str:
    """``["body", "health_check", "timeout"]`` as ``health_check.timeout: ``; the ``body`` (or ``query``)
    prefix is noise."""
    parts = [str(p) for p in loc]
    if parts[:1] in (["body"], ["query"]):
        parts = parts[1:]
    return ".".join(parts) + ": " if parts else ""


def api_base(url: str) -> str:
    """Accept ``host:port`` as well as a full URL, since that is what people type."""
    url = url.strip().rstrip("/")
    return url if "://" in url else f"http://{url}"


def resolve_token(token_file: str | None, env: Mapping[str, str] = os.environ) -> tuple[str | None, str]:
    """The bearer token (or None), and where it came from or why there is none, for error messages."""
    if token_file:
        source = Path(token_file)
    elif env.get(TOKEN_ENV):
        return env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    elif env.get(TOKEN_FILE_ENV):
        source = Path(env[TOKEN_FILE_ENV])
    else:
        source = token_path(Path(DEFAULT_STATE_DIR))
    try:
        return read_token(source), str(source)
    except TokenError as exc:
        return None, f"{exc}; pass --token-file or set ${TOKEN_ENV}"


class ApiClient:
    """Blocking JSON calls to one agent; every failure is an :class:`ApiError`."""

    def __init__(self, api: str, token: str | None, token_source: str = "", *, timeout: float = 5.0) -> None:
        self.base = api_base(api)
        self.token = token
        self.token_source = token_source
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx  # only the client commands need it; the agent process is leaner without it

        headers = {"accept": "application/json"}
        if self.token is not None:
            headers["authorization"] = f"Bearer {self.token}"
        if body is not None:
            headers["content-type"] = (
                "application/merge-patch+json" if method == "PATCH" else "application/json"
            )
        url = self.base + path
        try:
            response = httpx.request(
                method,
                url,
                headers=headers,
                content=None if body is None else json.dumps(body).encode(),
                timeout=self.timeout,
            )
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the agent at {self.base} ({exc or type(exc).__name__})") from None
        except httpx.InvalidURL as exc:
            raise ApiError(f"bad --api URL {self.base!r}: {exc}") from None
        if response.status_code == 204:
            return None
        try:
            payload = response.json()
        except ValueError:
            if response.is_success:
                raise ApiError(f"{url}: the answer is not JSON (is this a wiremesh agent?)") from None
            payload = None
        if response.is_success:
            return payload
        raise self._error(response.status_code, response.reason_phrase, payload)

    def _error(self, status: int, reason: str, payload: Any) -> ApiError:
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            message, detail = payload["error"], payload.get("detail")
        else:
            message, detail = reason, None
        details = [d for d in detail if isinstance(d, dict)] if isinstance(detail, list) else []
        if status == 401:
            message += (
                f" (the token is from {self.token_source})" if self.token else f" ({self.token_source})"
            )
            details = []
        return ApiError(f"{message} (HTTP {status})", details)

    def get(self, path: str) -> Any:
        return self.request("GET", path)


def client_for(args: argparse.Namespace) -> ApiClient:
    token, source = resolve_token(getattr(args, "token_file", None))
    return ApiClient(args.api, token, source)


def add_client_options(parser: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    """--api and --token-file (and --json) for a command that talks to a running agent."""
    default_api = os.environ.get(API_ENV) or DEFAULT_API
    parser.add_argument(
        "--api", default=default_api, help=f"agent API URL (default ${API_ENV} or {DEFAULT_API})"
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"API token file (default ${TOKEN_ENV}, ${TOKEN_FILE_ENV}, or <state_dir>/api-token)",
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")


# --- output ----------------------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), file=out)


def format_age(seconds: float) -> str:
    """Two units at most (``3m12s``, ``2d4h``): enough to tell flapping from long-lived."""
    total = int(max(0.0, seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if total >= size or (unit == "s" and not parts):
            parts.append(f"{total // size}{unit}")
            total %= size
    return "".join(parts[:2])


def local_clock(timestamp: str) -> str:
    """An RFC 3339 time from the API as ``HH:MM:SS`` in the local time zone (unparsable: as given)."""
    try:
        return datetime.fromisoformat(timestamp).astimezone().strftime("%H:%M:%S")
    except (TypeError, ValueError):
        return str(timestamp)


def truncate(text: str, width: int = ERROR_WIDTH) -> str:
    """One line of at most ``width`` characters, for a table cell."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 3] + "..."


def check_summary(check: Mapping[str, Any] | None) -> str:
    """``tcp :6443`` as on the VIPs list page; empty without a health check."""
    return "" if not check else f"{check.get('type', '?')} {check.get('target', '')}"


def _yes_no(value: object) -> str:
    return "yes" if value else "no"


def announced_summary(obj: Mapping[str, Any]) -> str:
    by = obj.get("status", {}).get("announced_by", [])
    return f"yes ({','.join(by)})" if by else "no"


_DECISIONS = {
    "healthy": "announcing: healthy",
    "no_check": "announcing: no health check",
    "withdrawn_unhealthy": "withdrawn: unhealthy",
    "withdrawn_unknown": "withdrawn: check has not passed yet",
    "withdrawn_disabled": "withdrawn: disabled",
    "withdrawn_machine_disabled": "withdrawn: machine disabled",
    "withdrawn_not_assigned": "withdrawn: not assigned",
    "withdrawn_holdoff_expired": "withdrawn: unhealthy, holdoff expired",
}


def decision_summary(machine: Mapping[str, Any]) -> str:
    """A machine's announcement decision for one object in a few words (the reasons are the planner's)."""
    decision = machine.get("decision")
    if not isinstance(decision, dict):
        member = machine.get("member")
        if member in ("alive", "suspect"):
            return "unknown: no decision published yet"
        return f"unknown: machine {member or 'never seen'}"
    reason = decision.get("reason")
    if reason == "held":
        until = decision.get("held_until")
        return f"held until {local_clock(until)} (no healthy peer)" if until else "held (no healthy peer)"
    if reason == "withdrawn_peer_healthy":
        peers = decision.get("peers") or ["another machine"]
        return f"withdrawn: {', '.join(peers)} {'is' if len(peers) == 1 else 'are'} healthy"
    return _DECISIONS.get(str(reason), str(decision.get("explanation") or reason))


def health_summary(machine: Mapping[str, Any]) -> str:
    """``unhealthy for 12s``: the verdict's state and how long it has held; a machine gossip no longer
    sees alive gets its member state beside its last verdict."""
    check = machine.get("check")
    if not isinstance(check, dict):
        return str(machine.get("health", "unknown"))
    text = f"{check.get('state')} for {format_age(float(check.get('for_seconds') or 0))}"
    member = machine.get("member")
    return text if member in ("alive", "suspect") else f"{text} ({member or 'never seen'})"


def show_announcement(obj: Mapping[str, Any], what: str, out: TextIO) -> None:
    check = obj.get("health_check")
    lines = [
        ("name", obj.get("name", "")),
        (what, obj.get(what, "")),
        ("enabled", _yes_no(obj.get("enabled"))),
        ("announced", announced_summary(obj)),
        ("health check", check_summary(check) or "none (always announced while enabled)"),
    ]
    if check:
        lines += [
            ("  interval / timeout", f"{check.get('interval')}s / {check.get('timeout')}s"),
            (
                "  healthy / unhealthy",
                f"{check.get('healthy_threshold')} / {check.get('unhealthy_threshold')}",
            ),
        ]
    if "holdoff" in obj:
        lines.append(("holdoff", f"{obj['holdoff']}s"))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}", file=out)
    machines = obj.get("status", {}).get("machines", [])
    if machines:
        print("", file=out)
        rows = [
            (
                m["name"] if m.get("assigned", True) else f"{m['name']} (not assigned)",
                health_summary(m),
                _yes_no(m.get("announcing")),
                decision_summary(m),
            )
            for m in machines
        ]
        print(table(("MACHINE", "HEALTH", "ANNOUNCING", "DECISION"), rows), file=out)
    else:
        print("machines  none assigned", file=out)


# --- VIPs and routes -------------------------------------------------------------------------------


def _add_check_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("health check")
    group.add_argument("--check-type", choices=("tcp", "http", "grpc", "exec"), help="health check protocol")
    group.add_argument("--check-target", metavar="TARGET", help="host:port, URL, or command (exec)")
    group.add_argument("--interval", type=float, metavar="SECONDS", help="how often the check runs")
    group.add_argument("--timeout", type=float, metavar="SECONDS", help="how long one check may take")
    group.add_argument("--healthy-threshold", type=int, metavar="N", help="successes before announcing")
    group.add_argument("--unhealthy-threshold", type=int, metavar="N", help="failures before withdrawing")
    group.add_argument("--expected-status", metavar="LO-HI", help="http: accepted status range (200-399)")
    group.add_argument("--service", help="grpc: the service name to check")


def _check_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {
        key: value
        for key, value in (
            ("type", args.check_type),
            ("target", args.check_target),
            ("interval", args.interval),
            ("timeout", args.timeout),
            ("healthy_threshold", args.healthy_threshold),
            ("unhealthy_threshold", args.unhealthy_threshold),
            ("service", args.service),
        )
        if value is not None
    }
    if args.expected_status is not None:
        lo, sep, hi = args.expected_status.partition("-")
        if not (sep and lo.strip().isdigit() and hi.strip().isdigit()):
            raise ApiError(f"--expected-status: expected LO-HI, e.g. 200-399 (got {args.expected_status!r})")
        fields["expected_status"] = [int(lo), int(hi)]
    return fields


class Announcements:
    """``vip`` and ``route``: the same commands over two collections that differ in one field."""

    def __init__(self, kind: str, collection: str, field: str, *, holdoff: bool) -> None:
        self.kind = kind
        self.collection = collection
        self.field = field
        self.holdoff = holdoff

    def path(self, name: str | None = None) -> str:
        return f"/v1/{self.collection}" + ("" if name is None else f"/{quote(name, safe='')}")

    def add_commands(self, sub: Any) -> None:
        parser = sub.add_parser(self.kind, help=f"manage {self.collection} (cluster-wide)")
        cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        listing = cmds.add_parser("list", help=f"list {self.collection} with their live status")
        listing.set_defaults(handler=self.list)
        show = cmds.add_parser(
            "show", help=f"one {self.kind}, with each machine's health and announcement decision"
        )
        show.set_defaults(handler=self.show)
        create = cmds.add_parser("create", help=f"create a {self.kind}")
        create.set_defaults(handler=self.create)
        update = cmds.add_parser("update", help=f"change some fields of a {self.kind}")
        update.set_defaults(handler=self.update)
        delete = cmds.add_parser("delete", help=f"delete a {self.kind}")
        delete.set_defaults(handler=self.delete)
        enable = cmds.add_parser("enable", help=f"announce the {self.kind} again")
        enable.set_defaults(handler=lambda a, o: self.set_enabled(a, o, True))
        disable = cmds.add_parser("disable", help=f"stop announcing the {self.kind} without deleting it")
        disable.set_defaults(handler=lambda a, o: self.set_enabled(a, o, False))
        for p in (show, create, update, delete, enable, disable):
            p.add_argument("name", help=f"the {self.kind}'s name")
        for p in (create, update):
            p.add_argument(f"--{self.field}", required=p is create, help=f"the {self.field} to announce")
            p.add_argument(
                "--machine",
                action="append",
                metavar="NAME",
                help="a machine that announces it (repeatable; on update, replaces the list)",
            )
            if self.holdoff:
                p.add_argument(
                    "--holdoff", type=float, metavar="SECONDS", help="delay withdrawal (default 0)"
                )
            _add_check_options(p)
        create.add_argument("--disabled", action="store_true", help="create it disabled")
        update.add_argument("--no-health-check", action="store_true", help="remove the health check")
        for p in (listing, show, create, update, delete, enable, disable):
            add_client_options(p)

    def list(self, args: argparse.Namespace, out: TextIO) -> int:
        objs = client_for(args).get(self.path())
        if args.json:
            print_json(objs, out)
        elif not objs:
            print(f"no {self.collection}", file=out)
        else:
            header = ("NAME", self.field.upper(), "ENABLED", "ANNOUNCED", "HEALTH CHECK", "MACHINES")
            rows = [
                (
                    o["name"],
                    o[self.field],
                    _yes_no(o.get("enabled")),
                    announced_summary(o),
                    check_summary(o.get("health_check")),
                    ",".join(o.get("machines", [])),
                )
                for o in objs
            ]
            print(table(header, rows), file=out)
        return 0

    def _print(self, obj: Any, args: argparse.Namespace, out: TextIO) -> None:
        if args.json:
            print_json(obj, out)
        else:
            show_announcement(obj, self.field, out)

    def show(self, args: argparse.Namespace, out: TextIO) -> int:
        self._print(client_for(args).get(self.path(args.name)), args, out)
        return 0

    def create(self, args: argparse.Namespace, out: TextIO) -> int:
        body: dict[str, Any] = {"name": args.name, self.field: getattr(args, self.field)}
        body["enabled"] = not args.disabled
        body["machines"] = args.machine or []
        if self.holdoff and args.holdoff is not None:
            body["holdoff"] = args.holdoff
        check = _check_fields(args)
        if check:
            body["health_check"] = check
        self._print(client_for(args).request("POST", self.path(), body), args, out)
        return 0

    def update(self, args: argparse.Namespace, out: TextIO) -> int:
        changes: dict[str, Any] = {}
        if getattr(args, self.field) is not None:
            changes[self.field] = getattr(args, self.field)
        if args.machine is not None:
            changes["machines"] = args.machine
        if self.holdoff and args.holdoff is not None:
            changes["holdoff"] = args.holdoff
        check = _check_fields(args)
        if args.no_health_check and check:
            raise ApiError("--no-health-check contradicts the health check options; give one or the other")
        if args.no_health_check:
            changes["health_check"] = None
        elif check:
            changes["health_check"] = check
        if not changes:
            raise ApiError(
                f"nothing to update: give at least one option (see `wiremesh {self.kind} update -h`)"
            )
        self._print(client_for(args).request("PATCH", self.path(args.name), changes), args, out)
        return 0

    def delete(self, args: argparse.Namespace, out: TextIO) -> int:
        client_for(args).request("DELETE", self.path(args.name))
        if not args.json:
            print(f"deleted {self.kind} {args.name}", file=out)
        return 0

    def set_enabled(self, args: argparse.Namespace, out: TextIO, enabled: bool) -> int:
        self._print(client_for(args).request("PATCH", self.path(args.name), {"enabled": enabled}), args, out)
        return 0


# --- policy sets -----------------------------------------------------------------------------------


def _read_json_file(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(f"{path}: not JSON: {exc}") from None


def _policy_path(name: str | None = None) -> str:
    return "/v1/policy-sets" + ("" if name is None else f"/{quote(name, safe='')}")


def _policy_body(args: argparse.Namespace) -> dict[str, Any]:
    """The file's object (a whole policy set, or just a list of rules), with the name from the command."""
    body: dict[str, Any] = {}
    if args.file is not None:
        loaded = _read_json_file(args.file)
        if isinstance(loaded, list):
            body["rules"] = loaded
        elif isinstance(loaded, dict):
            body.update(loaded)
        else:
            raise ApiError(f"{args.file}: expected a policy set object or a list of rules")
    if args.default is not None:
        body["default"] = args.default
    return body


def _show_policy(obj: Mapping[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        print_json(obj, out)
        return
    rules = obj.get("rules", [])
    print(f"name     {obj.get('name')}\ndefault  {obj.get('default')}\nrules    {len(rules)}", file=out)
    for i, rule in enumerate(rules):
        label = f" {rule['name']}" if rule.get("name") else ""
        print(f"  {i + 1}.{label} -> {rule.get('result')}", file=out)
        for section in ("match", "actions"):
            for key, value in (rule.get(section) or {}).items():
                if value not in (None, [], {}):
                    print(f"     {section} {key}: {json.dumps(value)}", file=out)


def _policy_list(args: argparse.Namespace, out: TextIO) -> int:
    sets = client_for(args).get(_policy_path())
    if args.json:
        print_json(sets, out)
    elif not sets:
        print("no policy sets", file=out)
    else:
        rows = [(s["name"], str(len(s.get("rules", []))), str(s.get("default"))) for s in sets]
        print(table(("NAME", "RULES", "DEFAULT"), rows), file=out)
    return 0


def _policy_show(args: argparse.Namespace, out: TextIO) -> int:
    _show_policy(client_for(args).get(_policy_path(args.name)), args, out)
    return 0


def _policy_create(args: argparse.Namespace, out: TextIO) -> int:
    body = {**_policy_body(args), "name": args.name}
    _show_policy(client_for(args).request("POST", _policy_path(), body), args, out)
    return 0


def _policy_update(args: argparse.Namespace, out: TextIO) -> int:
    """With --file the file replaces the rules (PUT of the whole set); --default alone is a patch."""
    client = client_for(args)
    if args.file is None and args.default is None:
        raise ApiError("nothing to update: give --file and/or --default")
    if args.file is not None:
        current = client.get(_policy_path(args.name))
        body = {"default": current.get("default"), **_policy_body(args), "name": args.name}
        result = client.request("PUT", _policy_path(args.name), body)
    else:
        result = client.request("PATCH", _policy_path(args.name), {"default": args.default})
    _show_policy(result, args, out)
    return 0


def _policy_delete(args: argparse.Namespace, out: TextIO) -> int:
    client_for(args).request("DELETE", _policy_path(args.name))
    if not args.json:
        print(f"deleted policy set {args.name}", file=out)
    return 0


def _add_policy_commands(sub: Any) -> None:
    parser = sub.add_parser("policy", help="manage route policy sets (cluster-wide)")
    cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    handlers: dict[str, tuple[Handler, str]] = {
        "list": (_policy_list, "list policy sets"),
        "show": (_policy_show, "one policy set, rule by rule"),
        "create": (_policy_create, "create a policy set from a JSON file"),
        "update": (_policy_update, "replace a policy set's rules and/or default"),
        "delete": (_policy_delete, "delete a policy set (refused while a machine uses it)"),
    }
    for action, (handler, text) in handlers.items():
        p = cmds.add_parser(action, help=text)
        p.set_defaults(handler=handler)
        if action != "list":
            p.add_argument("name", help="the policy set's name")
        if action in ("create", "update"):
            p.add_argument(
                "--file",
                metavar="FILE",
                help='JSON: {"rules": [...], "default": "reject"} or just the list of rules; - for stdin',
            )
            p.add_argument(
                "--default", choices=("accept", "reject"), help="result for a route no rule matches"
            )
        add_client_options(p)


# --- machines --------------------------------------------------------------------------------------


def _machine_path(name: str | None = None) -> str:
    return "/v1/machines" + ("" if name is None else f"/{quote(name, safe='')}")


def _member_state(machine: Mapping[str, Any]) -> str:
    member = machine.get("member")
    return str(member["state"]) if isinstance(member, dict) else "never seen"


def _machine_list(args: argparse.Namespace, out: TextIO) -> int:
    machines = client_for(args).get(_machine_path())
    if args.json:
        print_json(machines, out)
    elif not machines:
        print("no machines", file=out)
    else:
        rows = [
            (
                m["name"],
                _member_state(m),
                _yes_no(m["settings"].get("enabled")),
                ",".join(m["settings"].get("import_policies", [])),
                ",".join(m["settings"].get("export_policies", [])),
                ",".join(m.get("vips", [])),
            )
            for m in machines
        ]
        print(table(("NAME", "STATE", "ENABLED", "IMPORT", "EXPORT", "VIPS"), rows), file=out)
    return 0


def _show_machine(machine: Mapping[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    if args.json:
        print_json(machine, out)
        return
    settings = machine["settings"]
    print(f"name             {machine['name']}", file=out)
    print(f"state            {_member_state(machine)}", file=out)
    print(f"enabled          {_yes_no(settings.get('enabled'))}", file=out)
    print(f"import policies  {', '.join(settings.get('import_policies', [])) or 'none'}", file=out)
    print(f"export policies  {', '.join(settings.get('export_policies', [])) or 'none'}", file=out)
    vips = machine.get("vips", [])
    if not vips:
        print("vips             none", file=out)
        return
    print("", file=out)
    rows = []
    for vip in vips:
        mine: Mapping[str, Any] = next(
            (m for m in vip.get("status", {}).get("machines", []) if m["name"] == machine["name"]), {}
        )
        rows.append((vip["name"], vip["address"], _yes_no(vip.get("enabled")), mine.get("health", "unknown")))
    print(table(("VIP", "ADDRESS", "ENABLED", "HEALTH HERE"), rows), file=out)


def _machine_show(args: argparse.Namespace, out: TextIO) -> int:
    _show_machine(client_for(args).get(_machine_path(args.name)), args, out)
    return 0


def _machine_set_enabled(args: argparse.Namespace, out: TextIO, enabled: bool) -> int:
    result = client_for(args).request("PATCH", _machine_path(args.name), {"enabled": enabled})
    _show_machine(result, args, out)
    return 0


def _machine_set(args: argparse.Namespace, out: TextIO) -> int:
    """Only the lists given change (a merge patch); ``--clear-*`` empties one."""
    changes: dict[str, list[str]] = {}
    for field, given, clear in (
        ("import_policies", args.import_policies, args.clear_import),
        ("export_policies", args.export_policies, args.clear_export),
    ):
        if given is not None:
            changes[field] = given
        elif clear:
            changes[field] = []
    if not changes:
        raise ApiError("nothing to set: give --import/--export SET or --clear-import/--clear-export")
    _show_machine(client_for(args).request("PATCH", _machine_path(args.name), changes), args, out)
    return 0


def _add_machine_set_options(parser: argparse.ArgumentParser) -> None:
    for direction in ("import", "export"):
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            f"--{direction}",
            dest=f"{direction}_policies",
            action="append",
            metavar="SET",
            help=f"an {direction} policy set, in order (repeatable; replaces the machine's list)",
        )
        group.add_argument(
            f"--clear-{direction}", action="store_true", help=f"remove every {direction} policy set"
        )


def _add_machine_commands(sub: Any) -> None:
    parser = sub.add_parser("machine", help="machines: settings, VIPs, maintenance")
    cmds = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    handlers: dict[str, tuple[Handler, str]] = {
        "list": (_machine_list, "list machines (members and machines with settings)"),
        "show": (_machine_show, "one machine: state, settings, its VIPs"),
        "set": (_machine_set, "attach import/export route policy sets to the machine"),
        "enable": (lambda a, o: _machine_set_enabled(a, o, True), "let the machine announce again"),
        "disable": (
            lambda a, o: _machine_set_enabled(a, o, False),
            "maintenance/drain: the machine announces nothing",
        ),
    }
    for action, (handler, text) in handlers.items():
        p = cmds.add_parser(action, help=text)
        p.set_defaults(handler=handler)
        if action != "list":
            p.add_argument("name", help="the machine's name")
        if action == "set":
            _add_machine_set_options(p)
        add_client_options(p)


# --- health ----------------------------------------------------------------------------------------


def _consecutive(check: Mapping[str, Any]) -> str:
    last_ok = check.get("last_ok")
    if last_ok is None:
        return "-"
    return f"{check.get('consecutive', 0)} {'passed' if last_ok else 'failed'}"


def health_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """``GET /v1/health/checks`` rows; a machine gossip no longer sees alive is marked with its state."""
    header = ("MACHINE", "OBJECT", "STATE", "FOR", "CONSECUTIVE", "LATENCY", "LAST ERROR")
    cells = []
    for r in rows:
        member = r.get("member")
        latency = r.get("last_latency_ms")
        cells.append(
            (
                r["machine"] if member in ("alive", None) else f"{r['machine']} ({member})",
                r["object"],
                r["state"],
                format_age(float(r.get("for_seconds") or 0)),
                _consecutive(r),
                "-" if latency is None else f"{latency:.1f}ms",
                truncate(r.get("last_error") or ""),
            )
        )
    return table(header, cells)


def _health(args: argparse.Namespace, out: TextIO) -> int:
    query = {k: v for k, v in (("machine", args.machine), ("object", args.object)) if v is not None}
    path = "/v1/health/checks" + (f"?{urlencode(query)}" if query else "")
    rows = client_for(args).get(path)
    if args.json:
        print_json(rows, out)
    elif not rows:
        print("no health check verdicts", file=out)
    else:
        print(health_table(rows), file=out)
    return 0


def _add_health_command(sub: Any) -> None:
    parser = sub.add_parser("health", help="every machine's health check verdicts, as gossip shows them")
    parser.add_argument("--machine", metavar="NAME", help="only this machine's verdicts")
    parser.add_argument("--object", metavar="KIND/NAME", help="only this object's: vip/NAME or route/NAME")
    parser.set_defaults(handler=_health)
    add_client_options(parser)


VIPS = Announcements("vip", "vips", "address", holdoff=True)
ROUTES = Announcements("route", "routes", "prefix", holdoff=False)


def add_object_commands(sub: Any) -> None:
    """Register ``vip``, ``route``, ``policy``, ``machine`` and ``health`` on the top-level subparsers;
    each leaf sets ``handler``, which ``main`` calls with the parsed args and stdout."""
    VIPS.add_commands(sub)
    ROUTES.add_commands(sub)
    _add_policy_commands(sub)
    _add_machine_commands(sub)
    _add_health_command(sub)
