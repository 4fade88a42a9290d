"""A write the API acknowledged is on disk: kill -9 the agent amid a stream of creates, restart it on
the same state directory, and every VIP that got a 201 is there."""

from __future__ import annotations

import ipaddress
import signal
import threading
from pathlib import Path

import httpx
import pytest

from labs.kit.localcluster import API_ERRORS, LocalCluster
from labs.kit.wait import eventually_blocking

pytestmark = [pytest.mark.integration, pytest.mark.attack]  # also part of the attack suite (test_attacks.py)

CLIENTS = 8
KILL_AFTER = 60  # acknowledged creates before the kill
MAX_CREATES = 2000  # bound on the loop, whatever happens


def test_every_acknowledged_create_survives_kill_9(tmp_path: Path) -> None:
    with LocalCluster(1, tmp_path / "agents", cluster="durable") as cluster:
        name = next(iter(cluster.agents))
        agent = cluster.start(name)
        eventually_blocking(
            lambda: cluster.request(name, "GET", "/v1/health") is not None,
            what="the agent answers",
            timeout=30,
            ignore=API_ERRORS,
        )
        headers = cluster.api_headers(name)
        acknowledged: list[str] = []
        lock = threading.Lock()
        enough = threading.Event()
        numbers = iter(range(MAX_CREATES))

        def client() -> None:
            with httpx.Client(base_url=agent.api, headers=headers, timeout=5.0) as http:
                while not enough.is_set() or len(acknowledged) < KILL_AFTER * 2:
                    with lock:
                        i = next(numbers, None)
                    if i is None:
                        return
                    vip = {"name": f"v{i}", "address": str(ipaddress.IPv4Address("100.64.0.1") + i)}
                    try:
                        response = http.post("/v1/vips", json=vip)
                    except httpx.HTTPError:
                        return  # the agent is gone
                    if response.status_code == 201:
                        with lock:
                            acknowledged.append(vip["name"])
                            if len(acknowledged) >= KILL_AFTER:
                                enough.set()

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        assert enough.wait(timeout=60), "the agent did not acknowledge enough creates"
        cluster.kill(name, signal.SIGKILL)  # right after a 201, with more creates in flight
        for thread in threads:
            thread.join(timeout=30)
        cluster.wait_exit(name)
        with lock:
            acked = set(acknowledged)
        assert len(acked) >= KILL_AFTER

        cluster.start(name)
        eventually_blocking(
            lambda: cluster.request(name, "GET", "/v1/health") is not None,
            what="the restarted agent answers",
            timeout=30,
            ignore=API_ERRORS,
        )
        stored = {vip["name"] for vip in cluster.request(name, "GET", "/v1/vips")}
        assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)}"
