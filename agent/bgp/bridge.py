"""ExaBGP's API process: ``python -I -S .../agent/bgp/bridge.py SOCKET`` (standard library only).

ExaBGP writes events to this program's stdin and reads commands from its stdout. The bridge connects
to the agent's Unix socket and copies bytes both ways, so the agent, not ExaBGP, owns the API end. It
exits as soon as either side closes: ExaBGP gone (stdin EOF) or agent gone (socket EOF or error).

When the agent is gone, the bridge also sends SIGTERM to its ExaBGP before exiting. ExaBGP runs in its
own session so the agent can stop exactly its process group, which also means nothing stops it when
the agent dies without stopping it (kill -9, OOM): it would keep every session up and every route
announced with no health check behind it, and restart the bridge over and over. SIGTERM lets it close
its sessions with a NOTIFICATION, so routers drop our routes at once. (The kernel's parent-death signal
cannot do this: it follows the thread that forked, and Trio starts processes from worker threads that
come and go.) An agent that closes the socket on purpose stops ExaBGP itself anyway.

Both directions are non-blocking with their own buffer. ExaBGP writes to us with blocking writes and
reads our commands in the same loop, so a bridge that blocked on one direction could deadlock it.
Plain ``selectors`` instead of Trio: this runs once per ExaBGP start and should start fast.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence

CHUNK = 65536
CONNECT_TIMEOUT = 10.0
CONNECT_RETRY = 0.1


def connect(path: str, timeout: float = CONNECT_TIMEOUT) -> socket.socket:
    """Connect to the agent, retrying briefly: the agent listens before it starts ExaBGP, so a retry
    only covers a socket being recreated."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(CONNECT_RETRY)


AGENT_GONE = "agent"
EXABGP_GONE = "exabgp"


def pump(in_fd: int, out_fd: int, sock: socket.socket) -> str:
    """Copy ``in_fd`` to ``sock`` and ``sock`` to ``out_fd`` until either side ends or fails; returns
    which (:data:`AGENT_GONE` or :data:`EXABGP_GONE`). What was read from one side and not yet written
    to the other is flushed on the way out if it can be, without waiting."""
    for fd in (in_fd, out_fd):
        os.set_blocking(fd, False)
    sock.setblocking(False)
    to_sock = bytearray()  # ExaBGP -> agent
    to_out = bytearray()  # agent -> ExaBGP
    sel = selectors.DefaultSelector()
    try:
        while True:
            sel.register(in_fd, selectors.EVENT_READ, "in")
            sock_events = selectors.EVENT_READ | (selectors.EVENT_WRITE if to_sock else 0)
            sel.register(sock, sock_events, "sock")
            if to_out:
                sel.register(out_fd, selectors.EVENT_WRITE, "out")
            ready = sel.select()
            for key in list(sel.get_map().values()):
                sel.unregister(key.fileobj)
            for key, events in ready:
                if key.data == "sock":
                    try:
                        if events & selectors.EVENT_READ:
                            data = sock.recv(CHUNK)
                            if not data:
                                _flush_fd(out_fd, to_out)
                                return AGENT_GONE
                            to_out += data
                        if events & selectors.EVENT_WRITE and to_sock:
                            del to_sock[: sock.send(to_sock)]
                    except OSError:
                        return AGENT_GONE
                    continue
                try:
                    if key.data == "in":
                        data = os.read(in_fd, CHUNK)
                        if not data:
                            _flush(sock, to_sock)
                            return EXABGP_GONE
                        to_sock += data
                    else:
                        del to_out[: os.write(out_fd, to_out)]
                except OSError:
                    return EXABGP_GONE
    finally:
        sel.close()


def _flush(sock: socket.socket, buffer: bytearray) -> None:
    try:
        while buffer:
            del buffer[: sock.send(buffer)]
    except OSError:
        pass


def _flush_fd(fd: int, buffer: bytearray) -> None:
    try:
        while buffer:
            del buffer[: os.write(fd, buffer)]
    except OSError:
        pass


def stop_exabgp(exabgp: int) -> None:
    """SIGTERM ExaBGP, if it is still our parent (not already gone, leaving us to init)."""
    if os.getppid() == exabgp and exabgp > 1:
        with contextlib.suppress(ProcessLookupError):
            os.kill(exabgp, signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -I -S bridge.py SOCKET", file=sys.stderr)
        return 2
    exabgp = os.getppid()
    try:
        sock = connect(args[0])
    except OSError as exc:
        print(f"wiremesh bridge: cannot connect to {args[0]}: {exc}; stopping exabgp", file=sys.stderr)
        stop_exabgp(exabgp)
        return 1
    try:
        gone = pump(sys.stdin.fileno(), sys.stdout.fileno(), sock)
    finally:
        sock.close()
    if gone == AGENT_GONE:
        stop_exabgp(exabgp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
