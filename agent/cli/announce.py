"""``wiremesh vip ...`` and ``wiremesh route ...``: the announced objects, with each machine's decision.

Edits are JSON merge patches: ``vip update web --holdoff 30`` changes the holdoff and nothing else,
and so do ``enable``/``disable``, so two operators editing different fields of one VIP do not undo
each other's change.

``vip show`` / ``route show`` explain each machine's announcement decision in a few words
(``held until 12:03:41 (no healthy peer)``, ``withdrawn: web-b is healthy``), with times in the local
time zone; ``--json`` has the API's full sentence (``explanation``) and RFC 3339 times.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

from agent.cli.client import RequestFailed, add_client_options, client_for
from agent.cli.output import format_age, local_clock, print_json, table, yes_no


def check_summary(check: Mapping[str, Any] | None) -> str:
    """``tcp :6443`` as on the VIPs list page; empty without a health check."""
    return "" if not check else f"{check.get('type', '?')} {check.get('target', '')}"


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
        ("enabled", yes_no(obj.get("enabled"))),
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
                yes_no(m.get("announcing")),
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
            raise RequestFailed(
                f"--expected-status: expected LO-HI, e.g. 200-399 (got {args.expected_status!r})"
            )
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
                    yes_no(o.get("enabled")),
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
            raise RequestFailed(
                "--no-health-check contradicts the health check options; give one or the other"
            )
        if args.no_health_check:
            changes["health_check"] = None
        elif check:
            changes["health_check"] = check
        if not changes:
            raise RequestFailed(
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


VIPS = Announcements("vip", "vips", "address", holdoff=True)
ROUTES = Announcements("route", "routes", "prefix", holdoff=False)
