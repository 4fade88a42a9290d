"""``wiremesh machine ...``: machine settings, members and their state."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

from agent.cli.client import Handler, RequestFailed, add_client_options, client_for
from agent.cli.output import print_json, table, yes_no


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
                yes_no(m["settings"].get("enabled")),
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
    print(f"enabled          {yes_no(settings.get('enabled'))}", file=out)
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
        rows.append((vip["name"], vip["address"], yes_no(vip.get("enabled")), mine.get("health", "unknown")))
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
        raise RequestFailed("nothing to set: give --import/--export SET or --clear-import/--clear-export")
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


def add_machine_commands(sub: Any) -> None:
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
