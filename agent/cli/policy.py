"""``wiremesh policy ...``: route policy sets, read from and written to JSON files."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from agent.cli.client import Handler, RequestFailed, add_client_options, client_for
from agent.cli.output import print_json, table


def _read_json_file(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RequestFailed(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RequestFailed(f"{path}: not JSON: {exc}") from None


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
            raise RequestFailed(f"{args.file}: expected a policy set object or a list of rules")
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
        raise RequestFailed("nothing to update: give --file and/or --default")
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


def add_policy_commands(sub: Any) -> None:
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
