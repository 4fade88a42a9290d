"""A rolling restart of an agent that has no ``join`` list must not split the cluster.

The first agent of a by-hand cluster is started without seeds; when it restarts, only what it
remembered in its state dir can bring it back to the others, who marked it left (or dead) and do
not contact a member that said goodbye.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs.kit.localcluster import API_ERRORS, LocalCluster
from labs.kit.wait import eventually_blocking

pytestmark = pytest.mark.integration

# Fast failure detection, and a reconnect interval far beyond the test's wait, so only a fix that
# does not rely on the survivor's periodic retry of failed members passes.
FAST = {
    "probe_interval": 0.5,
    "probe_timeout": 0.25,
    "gossip_interval": 0.1,
    "suspicion_mult": 3,
    "reconnect_interval": 600.0,
}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(2, tmp_path / "agents", cluster="rejoin", gossip=FAST) as c:
        c.start_all()  # node1 has no join list; node2 joins node1
        c.wait_converged(timeout=60)
        yield c


def _remembers(cluster: LocalCluster, name: str, other: str) -> bool:
    path = cluster.state_dir(name) / "members.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return any(m.get("name") == other for m in data.get("members", []))


def _restart_without_seeds(cluster: LocalCluster, sig: signal.Signals, marked: str) -> None:
    first, second = list(cluster.agents)
    eventually_blocking(
        lambda: _remembers(cluster, first, second), what=f"{first} remembers {second}", timeout=30
    )
    cluster.kill(first, sig)
    cluster.wait_exit(first, timeout=15)
    eventually_blocking(
        lambda: cluster.states(second)[first] == marked,
        what=f"{second} marks {first} {marked}",
        timeout=60,
        ignore=API_ERRORS,
    )
    cluster.start(first)  # same state dir, still no join list
    cluster.wait_converged(timeout=20)


def test_an_agent_without_seeds_rejoins_after_a_graceful_restart(pair: LocalCluster) -> None:
    _restart_without_seeds(pair, signal.SIGTERM, "left")


def test_an_agent_without_seeds_rejoins_after_a_kill(pair: LocalCluster) -> None:
    _restart_without_seeds(pair, signal.SIGKILL, "dead")
