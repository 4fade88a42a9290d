"""Creates per second through the HTTP API: N concurrent clients creating VIPs against one real agent
on loopback, so the number includes whatever a 2xx waits for (the commit to disk).

    python -m labs.bench_writes [--creates 2000] [--clients 32]

Prints creates/s and the p50/p99 latency of one create. The agent runs in a temporary directory and is
stopped at the end; everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import ipaddress
import tempfile
import time
from pathlib import Path

import httpx
import trio

from labs.kit.localcluster import API_ERRORS, LocalCluster
from labs.kit.wait import eventually_blocking

FIRST_ADDRESS = ipaddress.IPv4Address("100.64.0.1")  # inside the default routable CIDR (CGNAT)


def vip_body(i: int, machine: str) -> dict[str, object]:
    return {"name": f"bench-{i}", "address": str(FIRST_ADDRESS + i), "machines": [machine]}


async def create_all(
    api: str, headers: dict[str, str], machine: str, creates: int, clients: int
) -> list[float]:
    """Create ``creates`` VIPs from ``clients`` concurrent clients; returns each create's latency."""
    latencies: list[float] = []
    numbers = iter(range(creates))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=30.0) as http:
            for i in numbers:
                start = time.perf_counter()
                response = await http.post("/v1/vips", json=vip_body(i, machine))
                latencies.append(time.perf_counter() - start)
                if response.status_code != 201:
                    raise RuntimeError(f"create {i}: {response.status_code} {response.text}")

    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", type=int, default=2000, help="VIPs to create (default 2000)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-writes-") as tmp, LocalCluster(1, Path(tmp)) as cluster:
        name = next(iter(cluster.agents))
        agent = cluster.start(name)
        eventually_blocking(
            lambda: cluster.request(name, "GET", "/v1/health") is not None,
            what="the agent answers",
            timeout=30,
            ignore=API_ERRORS,
        )
        start = time.perf_counter()
        latencies = trio.run(
            create_all, agent.api, cluster.api_headers(name), name, args.creates, args.clients
        )
        elapsed = time.perf_counter() - start
    print(
        f"{args.creates} creates, {args.clients} clients: {args.creates / elapsed:.0f} creates/s, "
        f"p50 {percentile(latencies, 0.50) * 1000:.1f} ms, p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
