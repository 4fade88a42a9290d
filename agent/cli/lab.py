"""``wiremesh lab NAME [ARGS...]``: run one of the lab scenarios in ``labs/`` (``python -m labs.NAME``).

The labs build a mininet site (real agents, BIRD 2, baselines) and need root and ``make deps``; this
command only finds the scenario and hands it the remaining arguments, so ``wiremesh lab holdoff
--outage 5`` is ``python -m labs.holdoff --outage 5``.
"""

from __future__ import annotations

import argparse
import importlib
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


def _lab(args: argparse.Namespace, out: TextIO) -> int:
    module = importlib.import_module(SCENARIOS[args.scenario])
    code: int = module.main(list(args.lab_args))
    return code


def add_lab_command(sub: Any) -> None:
    """Register ``lab`` on the top-level subparsers."""
    lab = sub.add_parser(
        "lab",
        help="run a lab scenario (mininet, real agents, BIRD; needs root)",
        description="Run a lab scenario; results go to labs/results/NAME.json and .png.",
    )
    lab.add_argument("scenario", choices=sorted(SCENARIOS), metavar="NAME", help=", ".join(sorted(SCENARIOS)))
    lab.add_argument("lab_args", nargs=argparse.REMAINDER, metavar="ARGS", help="the scenario's own options")
    lab.set_defaults(handler=_lab)
