"""``wiremesh keys list | install KEY | use KEY | remove KEY``: the gossip keyring of every live member.

Rotation is three steps, each applied by every live member and reported per member: ``install`` the
new key (from ``wiremesh keygen``) everywhere, ``use`` it (it becomes the key every member sends
with), then ``remove`` the old one. Every step is idempotent, so a step that some member did not
answer is simply run again. ``list`` shows each key's fingerprint (the first 12 hex digits of the
SHA-256 of the raw key: ``base64 -d <<< KEY | sha256sum``), how many members hold it and how many use
it as primary, out of those that answered; keys themselves are never printed.

``KEY`` may be ``-`` to read it from standard input, which keeps it out of the shell history and the
process list. Exit status 1 when any member failed or did not answer (the table says which).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from agent.cli.client import ApiClient, RequestFailed, add_client_options, resolve_token
from agent.cli.output import print_json, table, truncate
from gossip import KEY_QUERY_TIMEOUT

# The agent answers once every member answered or timed out, so give it that long and some.
REQUEST_TIMEOUT = KEY_QUERY_TIMEOUT + 10.0


def keys_table(view: Mapping[str, Any]) -> str:
    answered = int(view["answered"])
    header = ("KEY", "MEMBERS", "PRIMARY")
    rows = [
        (str(k["fingerprint"]), f"{k['members']}/{answered}", f"{k['primary']}/{answered}")
        for k in view["keys"]
    ]
    return table(header, rows) if rows else "no keys reported"


def _result(member: Mapping[str, Any]) -> str:
    if member["status"] == "error":
        return truncate(f"error: {member['error']}")
    return str(member["status"])


def members_table(view: Mapping[str, Any]) -> str:
    header = ("MEMBER", "RESULT", "PRIMARY", "KEYS")
    rows = [
        (
            str(m["name"]),
            _result(m),
            str(m["primary"] or "-"),
            str(len(m["keys"])) if m["status"] != "no answer" else "-",
        )
        for m in view["members"]
    ]
    return table(header, rows)


def show(view: Mapping[str, Any], out: TextIO) -> None:
    op, asked, ok = view["op"], view["asked"], view["ok"]
    subject = f"{op} key {view['key']}" if view.get("key") else op
    print(f"{subject}: {ok} of {asked} members ok, {view['answered']} answered", file=out)
    print(keys_table(view), file=out)
    if op != "list" or ok != asked:
        print(file=out)
        print(members_table(view), file=out)


def _read_key(arg: str) -> str:
    if arg != "-":
        return arg
    line = sys.stdin.readline().strip()
    if not line:
        raise RequestFailed("no key on standard input")
    return line


def _client(args: argparse.Namespace) -> ApiClient:
    token, source = resolve_token(getattr(args, "token_file", None))
    return ApiClient(args.api, token, source, timeout=REQUEST_TIMEOUT)


def _keys(args: argparse.Namespace, out: TextIO) -> int:
    client = _client(args)
    if args.keys_command == "list":
        view = client.get("/v1/keys")
    else:
        view = client.request("POST", f"/v1/keys/{args.keys_command}", {"key": _read_key(args.key)})
    if args.json:
        print_json(view, out)
    else:
        show(view, out)
    return 0 if view["ok"] == view["asked"] else 1


def add_keys_command(sub: Any) -> None:
    """Register ``keys`` on the top-level subparsers; each leaf sets ``handler``."""
    keys = sub.add_parser("keys", help="list and rotate the gossip encryption keys of every live member")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="WHAT")
    listing = keys_sub.add_parser("list", help="each key's fingerprint, how many members hold it and use it")
    add_client_options(listing)
    listing.set_defaults(handler=_keys)
    for op, text in (
        ("install", "add KEY on every live member (step 1 of a rotation)"),
        ("use", "make KEY the primary on every live member (step 2; it must be installed)"),
        ("remove", "remove KEY from every live member (step 3; never the primary)"),
    ):
        parser = keys_sub.add_parser(op, help=text)
        parser.add_argument("key", metavar="KEY", help="the base64 key (`wiremesh keygen`), or - for stdin")
        add_client_options(parser)
        parser.set_defaults(handler=_keys)


__all__ = ["add_keys_command", "keys_table", "members_table", "show"]
