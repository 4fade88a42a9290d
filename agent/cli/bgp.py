"""``wiremesh rib [PREFIX] [--machine M] [--all-paths] [--json]``, ``wiremesh bgp neighbors [--json]`` and
``wiremesh bgp reflectors [--json]``.

``rib`` prints one line per destination: the best path's next hop (the whole ECMP set when there is
one), AS path, LOCAL_PREF, MED, origin, source (for a reflected path, the machine that announced it
and the reflector it came through: ``m3 via m1``) and age; ``--all-paths`` adds, under each destination,
every other candidate with the reason it is not best. With ``PREFIX`` (a prefix, or an address for the
longest match) it prints that one destination with every path and its communities. ``--machine M``
shows machine M's RIB instead, fetched by the agent the CLI talks to from M's agent
(``/v1/machines/M/rib``).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import quote

from agent.cli.client import add_client_options, client_for
from agent.cli.output import format_age, print_json, table


def _dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _source(path: Mapping[str, Any]) -> str:
    if path["peer"] == "local":
        return "local"
    who = path.get("peer_name") or path["peer"]
    origin = path.get("origin_machine")  # absent from an older agent
    if origin and origin != path.get("peer_name"):  # reflected: the announcer, then the reflector
        return f"{origin} via {who} AS{path['peer_asn']}"
    return f"{who} AS{path['peer_asn']}"


def _row(prefix: str, marker: str, path: Mapping[str, Any], hops: str | None = None) -> tuple[str, ...]:
    return (
        prefix,
        marker,
        hops if hops is not None else _dash(path["next_hop"]),
        path["as_path"] or "(empty)",
        _dash(path["local_pref"]),
        _dash(path["med"]),
        path["origin"],
        _source(path),
        format_age(path["age_seconds"]),
    )


HEADER = ("PREFIX", "", "NEXT HOP", "AS PATH", "LOCPREF", "MED", "ORIGIN", "FROM", "AGE")


def rib_table(rib: Mapping[str, Any], *, all_paths: bool) -> str:
    rows: list[tuple[str, ...]] = []
    notes: dict[int, str] = {}
    for dest in rib["routes"]:
        best = dest["best"]
        hops = ", ".join(dest["ecmp"]) if len(dest["ecmp"]) > 1 else None
        rows.append(_row(dest["prefix"], "*", best, hops))
        if not all_paths:
            continue
        for path in dest["paths"]:
            if path["best"]:
                continue
            marker = "=" if path["multipath"] else ""
            rows.append(_row("", marker, path))
            notes[len(rows) - 1] = path["reason"]
    if not rows:
        return "no routes"
    lines = table(HEADER, rows).splitlines()
    out = [lines[0]]
    for i, line in enumerate(lines[1:]):
        out.append(line + (f"  ({notes[i]})" if i in notes else ""))
    if rib.get("truncated"):
        out.append(f"... {rib['destinations']} destinations in all; use --limit to see more")
    return "\n".join(out)


def destination_detail(dest: Mapping[str, Any]) -> str:
    lines = [f"{dest['prefix']}"]
    if dest["ecmp"]:
        lines.append(f"  forwarding: {', '.join(dest['ecmp'])}")
    installed = ", ".join(dest["installed"]) or "nothing"
    lines.append(f"  kernel: {installed}" + (f" ({dest['fib_error']})" if dest.get("fib_error") else ""))
    for path in dest["paths"]:
        marker = "*" if path["best"] else "=" if path["multipath"] else " "
        lines.append(
            f"  {marker} via {_dash(path['next_hop'])} from {_source(path)} ({path['peer_type']}), "
            f"age {format_age(path['age_seconds'])}"
        )
        lines.append(
            f"      as path {path['as_path'] or '(empty)'}, origin {path['origin']}, "
            f"local pref {_dash(path['local_pref'])}, med {_dash(path['med'])}"
        )
        if path["communities"]:
            lines.append(f"      communities {' '.join(path['communities'])}")
        lines.append(f"      {path['reason']}")
    return "\n".join(lines)


def neighbors_table(neighbors: list[Mapping[str, Any]]) -> str:
    if not neighbors:
        return "no neighbors"
    header = ("NEIGHBOR", "NAME", "AS", "TYPE", "RR", "STATE", "UPTIME", "IN", "OUT", "LAST ERROR")
    rows = [
        (
            n["address"],
            n["name"] or n["description"] or "-",
            str(n["peer_as"]),
            "ibgp" if n["type"] == "internal" else "ebgp",
            "reflector" if n.get("reflector") else "-",  # absent from an older agent
            n["state"] + (" (passive)" if n["passive"] and n["state"] != "up" else ""),
            format_age(n["uptime_seconds"]) if n["uptime_seconds"] is not None else "-",
            str(n["prefixes_in"]),
            str(n["prefixes_out"]),
            _dash(n["last_error"]),
        )
        for n in neighbors
    ]
    return table(header, rows)


def reflectors_text(r: Mapping[str, Any]) -> str:
    """``wiremesh bgp reflectors``: the mode, the reflectors, this machine's role, the members whose
    placement knobs differ from ours, BIRD's sessions."""
    lines = [
        f"mode: {r['mode']}",
        f"reflectors: {', '.join(r['reflectors']) or '-'}",
        f"this machine: {r['role']} (may reflect: {r['eligibility']})"
        + (f", refused: {r['refused']}" if r.get("refused") else "")
        + (", switching plans" if r.get("switching") else ""),
    ]
    for d in r.get("disagree", []):  # absent from an older agent
        lines.append(
            f"knobs differ: {d['machine']} has {d['knob']} = {d['theirs']}, this machine {d['ours']} "
            "(placing with this machine's; set the same [bgp] value everywhere)"
        )
    if r.get("bird_pid"):
        lines.append(f"bird pid {r['bird_pid']}")
        rows = [(b["machine"], b["address"], b["kind"], b["state"], b["info"]) for b in r["bird_sessions"]]
        if rows:
            lines.append(table(("MACHINE", "ADDRESS", "KIND", "STATE", "INFO"), rows))
    return "\n".join(lines)


def _reflectors(args: argparse.Namespace, out: TextIO) -> int:
    data = client_for(args).get("/v1/bgp/reflectors")
    if args.json:
        print_json(data, out)
    else:
        print(reflectors_text(data), file=out)
    return 0


def _rib(args: argparse.Namespace, out: TextIO) -> int:
    client = client_for(args)
    base = f"/v1/machines/{quote(args.machine, safe='')}/rib" if args.machine else "/v1/rib"
    path = f"{base}?limit={args.limit}"
    if args.prefix:
        path += f"&prefix={quote(args.prefix, safe='')}"
    rib = client.get(path)
    if args.json:
        print_json(rib, out)
    elif args.prefix:
        print(destination_detail(rib["routes"][0]), file=out)
    else:
        print(rib_table(rib, all_paths=args.all_paths), file=out)
    return 0


def _neighbors(args: argparse.Namespace, out: TextIO) -> int:
    neighbors = client_for(args).get("/v1/bgp/neighbors")
    if args.json:
        print_json(neighbors, out)
    else:
        print(neighbors_table(neighbors), file=out)
    return 0


def add_bgp_commands(sub: Any) -> None:
    """Register ``rib`` and ``bgp`` on the top-level subparsers; each leaf sets ``handler``."""
    rib = sub.add_parser("rib", help="show this machine's BGP routes and why each best path won")
    rib.add_argument("prefix", nargs="?", metavar="PREFIX", help="one destination (a prefix, or an address)")
    rib.add_argument("--all-paths", action="store_true", help="every candidate path, with why it is not best")
    rib.add_argument("--limit", type=int, default=1000, help="destinations to list (default 1000)")
    rib.add_argument(
        "--machine", metavar="M", help="machine M's RIB, through its own agent (default: this one)"
    )
    add_client_options(rib)
    rib.set_defaults(handler=_rib)

    bgp = sub.add_parser("bgp", help="the BGP speaker")
    bgp_sub = bgp.add_subparsers(dest="bgp_command", required=True, metavar="WHAT")
    neighbors = bgp_sub.add_parser("neighbors", help="BGP sessions: state, uptime, prefixes in and out")
    add_client_options(neighbors)
    neighbors.set_defaults(handler=_neighbors)
    reflectors = bgp_sub.add_parser(
        "reflectors", help="route reflection: mode, reflectors, this machine's role, BIRD's sessions"
    )
    add_client_options(reflectors)
    reflectors.set_defaults(handler=_reflectors)
