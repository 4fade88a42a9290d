"""The ``wiremesh`` command: run the agent, and talk to a running one over its HTTP API.

Exit codes: 0 success, 1 the agent could not be reached or answered with an error, 2 bad usage or a
bad configuration (a ``wiremesh: error: ...`` line on stderr per problem, like argparse's own usage
errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from agent.cli import announce, client, health, machine, output, policy
from agent.cli import bgp as cli_bgp
from agent.cli import keys as cli_keys
from agent.cli import lab as cli_lab
from agent.cli import peers as cli_peers
from agent.config.loader import LOG_FORMATS, LOG_LEVELS, ConfigError, flag_for, load_config, load_keyring
from gossip import Sealer, generate_key

PROG = "wiremesh"
DEFAULT_API = client.DEFAULT_API
API_ENV = client.API_ENV
EXIT_UNREACHABLE = 1
EXIT_USAGE = 2
RequestFailed = client.RequestFailed
api_base = client.api_base
format_age = output.format_age


def fetch_json(api: str, path: str, *, token_file: str | None = None, timeout: float = 5.0) -> Any:
    token, source = client.resolve_token(token_file)
    return client.ApiClient(api, token, source, timeout=timeout).get(path)


def members_table(members: list[dict[str, Any]]) -> str:
    header = ("NAME", "ADDRESS", "STATE", "INCARNATION", "SINCE")
    rows = [
        (str(m["name"]), str(m["addr"]), str(m["state"]), str(m["incarnation"]), format_age(m["age_seconds"]))
        for m in members
    ]
    return output.table(header, rows)


def _run_agent(args: argparse.Namespace) -> int:
    # Imported here so that the client subcommands do not pay for importing the gossip stack.
    import gc

    import trio

    from agent.logs import configure_logging
    from agent.runner import run_agent

    overrides = {
        "name": args.name,
        "bind": args.bind,
        "advertise": args.advertise,
        "join": args.join,
        "keyring_file": args.keyring,
        "insecure": args.insecure,
        "cluster": args.cluster,
        "http_listen": args.http,
        "state_dir": args.state_dir,
        "log_format": args.log_format,
        "log_level": args.log_level,
        "tombstone_keep": args.tombstone_keep,
    }
    try:
        cfg = load_config(Path(args.config) if args.config else None, overrides)
        sealer = Sealer(load_keyring(cfg), cfg.cluster)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(cfg.log_format, cfg.log_level)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(run_agent, cfg, sealer=sealer))
            # Everything made during startup (modules, config, the app) lives as long as the process:
            # moving it out of the collector's generations keeps full collections short, which with
            # hundreds of health checks was the largest source of late check starts (p99 ~30 ms -> ~8).
            gc.freeze()

    try:
        trio.run(main)
    except KeyboardInterrupt:  # a Ctrl-C before the signal handler was installed
        return 130
    except (OSError, BaseExceptionGroup) as exc:
        # Startup failures (a port already taken) arrive wrapped by however many nurseries they crossed.
        leaf = _only_oserror(exc)
        if leaf is None:
            raise
        print(f"{PROG}: error: {leaf.strerror or leaf}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return 0


def _only_oserror(exc: BaseException) -> OSError | None:
    """The first OSError inside ``exc`` if that is all it holds, else None (a bug: let it propagate)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_only_oserror(e) for e in exc.exceptions]
        return leaves[0] if leaves and all(leaves) else None
    return None


def _members(args: argparse.Namespace, out: TextIO) -> int:
    members = fetch_json(args.api, "/v1/members", token_file=args.token_file)
    if args.json:
        print(json.dumps(members, indent=2), file=out)
    elif members:
        print(members_table(members), file=out)
    else:
        print("no members", file=out)
    return 0


def _debug_gossip(args: argparse.Namespace, out: TextIO) -> int:
    snapshot = fetch_json(args.api, "/debug/gossip", token_file=args.token_file)
    print(json.dumps(snapshot, indent=2, sort_keys=True), file=out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="WireGuard mesh agent")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    agent = sub.add_parser("agent", help="run the agent", description="Run the agent in the foreground.")
    agent.add_argument("--config", metavar="FILE", help="TOML config file; flags override its values")
    agent.add_argument("--name", help="node name (default: host name)")
    agent.add_argument("--bind", metavar="HOST:PORT", help="gossip bind address (default 0.0.0.0:7946)")
    agent.add_argument("--advertise", metavar="HOST:PORT", help="address other nodes reach us at")
    agent.add_argument(
        "--join",
        metavar="HOST:PORT",
        action="append",
        help="seed to join (repeatable; replaces the file's list)",
    )
    agent.add_argument(flag_for("keyring_file"), metavar="FILE", help="keyring file (see `wiremesh keygen`)")
    agent.add_argument(
        "--insecure",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run gossip unencrypted (no keyring)",
    )
    agent.add_argument("--cluster", help="cluster name; nodes of other clusters are refused")
    agent.add_argument(
        flag_for("http_listen"), metavar="HOST:PORT", help="HTTP API address (default 127.0.0.1:7947)"
    )
    agent.add_argument("--state-dir", metavar="DIR", help="where the agent keeps its state")
    agent.add_argument(
        "--log-format", choices=LOG_FORMATS, help="text (default) or json, one object per line"
    )
    agent.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    agent.add_argument(
        "--tombstone-keep",
        type=float,
        metavar="SECONDS",
        help="how long a deleted object's tombstone is kept (default 604800 = 7 days)",
    )

    members = sub.add_parser("members", help="list cluster members as a running agent sees them")
    client.add_client_options(members)

    sub.add_parser("keygen", help="print a new encryption key (one line of a keyring file)")

    debug = sub.add_parser("debug", help="inspect a running agent")
    debug_sub = debug.add_subparsers(dest="debug_command", required=True, metavar="WHAT")
    gossip = debug_sub.add_parser("gossip", help="print the gossip layer's debug snapshot")
    client.add_client_options(gossip, json_flag=False)
    announce.VIPS.add_commands(sub)
    announce.ROUTES.add_commands(sub)
    policy.add_policy_commands(sub)
    machine.add_machine_commands(sub)
    health.add_health_command(sub)
    cli_peers.add_peers_command(sub)
    cli_keys.add_keys_command(sub)
    cli_bgp.add_bgp_commands(sub)
    cli_lab.add_lab_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "agent":
            return _run_agent(args)
        if args.command == "members":
            return _members(args, sys.stdout)
        if args.command == "debug":
            return _debug_gossip(args, sys.stdout)
        if hasattr(args, "handler"):  # vip, route, policy, machine, health, peers, keys
            handler: client.Handler = args.handler
            return handler(args, sys.stdout)
        print(generate_key())
        return 0
    except RequestFailed as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
