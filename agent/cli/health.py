"""``wiremesh health``: every machine's check verdicts in one table."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, TextIO
from urllib.parse import urlencode

from agent.cli.client import add_client_options, client_for
from agent.cli.output import format_age, print_json, table, truncate


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


def add_health_command(sub: Any) -> None:
    parser = sub.add_parser("health", help="every machine's health check verdicts, as gossip shows them")
    parser.add_argument("--machine", metavar="NAME", help="only this machine's verdicts")
    parser.add_argument("--object", metavar="KIND/NAME", help="only this object's: vip/NAME or route/NAME")
    parser.set_defaults(handler=_health)
    add_client_options(parser)
