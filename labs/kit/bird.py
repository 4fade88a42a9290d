"""BIRD 2 in the labs: config for one external router, a handle on a running daemon, and its readiness.

Times in ``birdc`` output carry milliseconds, and failed sessions are retried within seconds instead
of BIRD's default minute, so a lab's timings are not BIRD's retry timers.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from labs.kit.proc import Proc, sh
from labs.kit.wait import eventually_blocking


def bird_statics(prefixes: Iterable[str], name: str = "ext") -> str:
    """A BIRD ``protocol static`` holding ``prefixes`` as blackhole routes: what a lab's BIRD exports."""
    routes = "".join(f"  route {p} blackhole;\n" for p in prefixes)
    return f"protocol static {name} {{\n  ipv4;\n{routes}}}"


def bird_edge_conf(
    *,
    router_id: str,
    local: str,
    local_as: int,
    neighbor: str,
    neighbor_as: int,
    statics: Iterable[str] = (),
    export: str = "where source = RTS_STATIC",
    hold_time: int = 30,
    log: str = "log stderr { warning, error, fatal };",
) -> str:
    """BIRD 2 as one external router: ``statics`` (blackhole routes) exported to one BGP neighbor
    (``protocol bgp edge``, ``export`` its export clause), everything it sends imported."""
    return f"""
router id {router_id};
{log}
timeformat route iso long ms;
timeformat protocol iso long ms;
protocol device {{}}
{bird_statics(statics)}
protocol bgp edge {{
  local {local} as {local_as};
  neighbor {neighbor} as {neighbor_as};
  hold time {hold_time};
  connect delay time 1;
  connect retry time 2;
  error wait time 1, 2;
  ipv4 {{ import all; export {export}; }};
}}
"""


@dataclass
class Bird:
    """A running BIRD (``bird -f``, our child: stopped by its pid) and its control socket."""

    proc: Proc
    socket: Path

    def birdc(self, *args: str) -> str:
        return sh("birdc", "-s", str(self.socket), *args, check=False)

    def route(self, prefix: str) -> str:
        """``show route all PREFIX`` (exactly that prefix, every protocol), or ``""`` if BIRD has none."""
        text = self.birdc("show", "route", "all", prefix)
        return text if "BGP.origin" in text else ""

    def answers(self) -> bool:
        done = subprocess.run(["birdc", "-s", str(self.socket), "show", "status"], capture_output=True)
        return done.returncode == 0

    def wait_ready(self, timeout: float = 15.0) -> Bird:
        """Until BIRD answers on its control socket; fails at once (with its log) if it exits."""
        eventually_blocking(
            self.answers,
            what="BIRD to open its control socket",
            timeout=timeout,
            failing=lambda: None if self.proc.running else self.proc.log.read_text(),
        )
        return self
