"""``wiremesh lab NAME [ARGS...]``: run one of the lab scenarios in ``labs/`` (``python -m labs.NAME``).

The labs build a mininet site (real agents, BIRD 2, baselines), need root and ``make deps``, and ship
with the source tree, not the wheel. So this command never imports them: it finds the ``labs`` package
(a source checkout on the path) and runs the scenario as its own process with the remaining
arguments, so ``wiremesh lab holdoff --outage 5`` is ``python -m labs.holdoff --outage 5``. Without a
checkout it says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import subprocess
import sys
import threading
from typing import Any, TextIO

SCENARIOS = {
    "vip-failover": "labs.vip_failover",
    "holdoff": "labs.holdoff",
    "crash": "labs.crash",
    "transit": "labs.transit",
    "policy": "labs.policy",
    "scale": "labs.scale",
    "demo": "labs.demo",
}
EXIT_NO_LABS = 2


def _labs_present() -> bool:
    """The ``labs`` package is importable (a source checkout), found without importing it."""
    try:
        return importlib.util.find_spec("labs") is not None
    except (ImportError, ValueError):
        return False


def _lab(args: argparse.Namespace, out: TextIO) -> int:
    if not _labs_present():
        print(
            "wiremesh: error: the labs ship with the source tree, not the package: "
            "run `wiremesh lab` from a checkout (make venv)",
            file=sys.stderr,
        )
        return EXIT_NO_LABS
    return _run([sys.executable, "-m", SCENARIOS[args.scenario], *args.lab_args])


def _run(argv: list[str]) -> int:
    """Run the scenario to its end, whatever we are told meanwhile: a Ctrl-C reaches it too (same
    process group) and a SIGTERM is passed on to its pid, and either way it cleans up its namespaces
    before it exits, so we wait for it rather than kill it."""
    with subprocess.Popen(argv) as proc:
        forward = signal.getsignal(signal.SIGTERM)
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signal.SIGTERM))
        try:
            while True:
                try:
                    return proc.wait()
                except KeyboardInterrupt:
                    continue
        finally:
            if on_main:
                signal.signal(signal.SIGTERM, forward)


def add_lab_command(sub: Any) -> None:
    """Register ``lab`` on the top-level subparsers."""
    lab = sub.add_parser(
        "lab",
        help="run a lab scenario (mininet, real agents, BIRD; needs root and a source checkout)",
        description="Run a lab scenario; results go to labs/results/NAME.json and .png.",
    )
    lab.add_argument("scenario", choices=sorted(SCENARIOS), metavar="NAME", help=", ".join(sorted(SCENARIOS)))
    lab.add_argument("lab_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the scenario's own options")
    lab.set_defaults(handler=_lab)
