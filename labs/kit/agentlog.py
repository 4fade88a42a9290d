"""Reading what an agent logged: its JSON lines' wall times, and when it decided to announce or
withdraw an object. The labs time a change from the agent's own decision, not from when a poll saw it."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path


def parse_wall(text: str) -> float:
    """An RFC 3339 UTC time from the agent's JSON log, or BIRD's ``YYYY-MM-DD HH:MM:SS.mmm`` (local)."""
    if text.endswith("Z"):
        return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def decisions(log: Path, key: str, action: str) -> list[float]:
    """Wall times the agent whose log is ``log`` logged ``key: action`` (``vip/web: withdraw ...``)."""
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        record = json.loads(line)
        if record.get("logger") == "wiremesh.announce" and record.get("msg", "").startswith(
            f"{key}: {action} "
        ):
            out.append(parse_wall(record["time"]))
    return out
