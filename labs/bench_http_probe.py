"""CPU per HTTP health-check GET: an httpx client per run (what HTTP checks did before) against the h11
probe they use now (:mod:`agent.health.httpprobe`), each against a local server, on the calling thread.

    python -m labs.bench_http_probe [--gets 300]

Prints milliseconds of CPU per GET for each; the server runs in another thread and is not counted.
"""

from __future__ import annotations

import argparse
import http.server
import resource
import socketserver
import ssl
import threading
from collections.abc import Awaitable, Callable

import httpx
import trio

from agent.health.httpprobe import get_status


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


def thread_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gets", type=int, default=300, help="GETs per contender (default 300)")
    args = parser.parse_args(argv)
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/healthz"
    context = ssl.create_default_context()  # built once, as the agent does; unused for http://

    async def httpx_client_per_run() -> None:
        for _ in range(args.gets):
            async with httpx.AsyncClient(verify=context, timeout=None) as client:
                await client.get(url)

    async def h11_probe() -> None:
        for _ in range(args.gets):
            await get_status(url, None)

    contenders: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("httpx client per run", httpx_client_per_run),
        ("h11 probe (agent.health.httpprobe)", h11_probe),
    ]
    try:
        for name, run in contenders:
            trio.run(run)  # warm-up: imports, first connections
            start = thread_cpu()
            trio.run(run)
            print(f"{name:30} {(thread_cpu() - start) / args.gets * 1000:6.3f} ms CPU per GET")
    finally:
        server.shutdown()
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
