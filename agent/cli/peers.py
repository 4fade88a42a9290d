"""``wiremesh peers [--json]``: this machine's WireGuard peers and the path to each, from ``/v1/peers``.

The table has one row per peer: path (``direct``, ``transit via R``, ``unreachable``), the RTT of that
path, direct-path loss, handshake age, bytes, and for how long the path has been what it is. Problems
the agent reports (a mesh address another machine holds, a member with a cloned key) are printed under
the table, since they explain rows that look wrong. ``--json`` prints the API's answer as it is.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from agent.cli.client import add_client_options, client_for
from agent.cli.output import format_age, print_json, table


def format_bytes(n: float) -> str:
    """Binary units, one decimal past KiB: enough to see that traffic moves."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _rtt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.1f}ms"


def _handshake(age: Any) -> str:
    return "never" if age is None else f"{format_age(float(age))} ago"


def _mesh(peer: Mapping[str, Any]) -> str:
    addr = str(peer["mesh_address"])
    return addr if peer.get("holds_address", True) else f"{addr} (held by another)"


def _name(peer: Mapping[str, Any]) -> str:
    member = peer.get("member")
    return str(peer["name"]) if member in ("alive", None) else f"{peer['name']} ({member})"


def peers_table(peers: Sequence[Mapping[str, Any]]) -> str:
    header = ("PEER", "MESH ADDRESS", "ENDPOINT", "PATH", "RTT", "LOSS", "HANDSHAKE", "RX", "TX", "SINCE")
    rows = [
        (
            _name(p),
            _mesh(p),
            str(p.get("endpoint") or "-"),
            str(p["path"]),
            _rtt(p.get("rtt_ms")),
            f"{100 * float(p.get('loss') or 0):.0f}%",
            _handshake(p.get("handshake_age_seconds")),
            format_bytes(p.get("rx_bytes") or 0),
            format_bytes(p.get("tx_bytes") or 0),
            format_age(float(p.get("for_seconds") or 0)),
        )
        for p in peers
    ]
    return table(header, rows)


def show_peers(view: Mapping[str, Any], out: TextIO) -> None:
    print(
        f"{view['name']}: {view['mesh_address']} on {view['interface']}, "
        f"public key {view['public_key']}, port {view['listen_port']}",
        file=out,
    )
    peers = view.get("peers") or []
    print(peers_table(peers) if peers else "no peers", file=out)
    for error in view.get("errors") or []:
        print(f"error: {error}", file=out)


def _peers(args: argparse.Namespace, out: TextIO) -> int:
    view = client_for(args).get("/v1/peers")
    if args.json:
        print_json(view, out)
    else:
        show_peers(view, out)
    return 0


def add_peers_command(sub: Any) -> None:
    """Register ``peers`` on the top-level subparsers; ``main`` calls its ``handler``."""
    parser = sub.add_parser(
        "peers", help="WireGuard peers and the path to each (direct, transit, unreachable)"
    )
    parser.set_defaults(handler=_peers)
    add_client_options(parser)


__all__ = ["add_peers_command", "format_bytes", "peers_table", "show_peers"]
