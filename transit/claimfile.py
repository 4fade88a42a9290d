"""When this machine first claimed its mesh address, kept across restarts.

The claim time is what makes "the later machine does not take the address" hold after a restart: a
machine that has used 100.64.0.5 for a month keeps its month-old claim, while a newcomer with a copied
config records the time it first tried. The file is ``<state_dir>/mesh-claim.json``; a changed address
in the config starts a new claim (the old seniority belonged to the old address).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

from common.address import IPAddress

CLAIM_FILE = "mesh-claim.json"


def load_or_record_claim(state_dir: Path, address: IPAddress, now_ms: int) -> int:
    """The claim time (wall clock, ms) for ``address``: the recorded one, or ``now_ms``, recorded now.

    An unreadable or foreign file is replaced: losing seniority is safe (at worst this machine yields
    an address it could have kept), refusing to start over a damaged bookkeeping file is not useful."""
    path = state_dir / CLAIM_FILE
    try:
        data = json.loads(path.read_text())
        if ipaddress.ip_address(data["address"]) == address:
            claimed = data["claimed_at_ms"]
            if isinstance(claimed, int) and not isinstance(claimed, bool) and claimed >= 0:
                return claimed
    except (OSError, ValueError, KeyError, TypeError):
        pass
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"address": str(address), "claimed_at_ms": now_ms}) + "\n")
    os.replace(tmp, path)
    return now_ms


__all__ = ["CLAIM_FILE", "load_or_record_claim"]
