"""How the CLI prints: tables for people, JSON for scripts, ages and clock times in a few characters."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

ERROR_WIDTH = 48  # last errors are cut to this in tables; --json has them whole


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


def yes_no(value: object) -> str:
    return "yes" if value else "no"
