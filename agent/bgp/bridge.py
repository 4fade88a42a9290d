"""ExaBGP's API process: ``python -m agent.bgp.bridge SOCKET``.

ExaBGP writes events to this program's stdin and reads commands from its stdout. The bridge connects
to the agent's Unix socket and copies bytes both ways, so the agent, not ExaBGP, owns the API end. It
exits as soon as either side closes: ExaBGP gone (stdin EOF) or agent gone (socket EOF).

Both directions are non-blocking with their own buffer. ExaBGP writes to us with blocking writes and
reads our commands in the same loop, so a bridge that blocked on one direction could deadlock it.
Plain ``selectors`` instead of Trio: this runs once per ExaBGP start and should start fast.
"""

from __future__ import annotations

import errno
import os
import selectors
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


def pump(in_fd: int, out_fd: int, sock: socket.socket) -> None:
    """Copy ``in_fd`` to ``sock`` and ``sock`` to ``out_fd`` until either source ends or a write fails.
    What was read from one side and not yet written to the other is flushed on the way out if it can
    be, without waiting."""
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
                if key.data == "in":
                    data = os.read(in_fd, CHUNK)
                    if not data:
                        _flush(sock, to_sock)
                        return
                    to_sock += data
                elif key.data == "sock":
                    if events & selectors.EVENT_READ:
                        data = sock.recv(CHUNK)
                        if not data:
                            _flush_fd(out_fd, to_out)
                            return
                        to_out += data
                    if events & selectors.EVENT_WRITE and to_sock:
                        del to_sock[: sock.send(to_sock)]
                elif key.data == "out":
                    del to_out[: os.write(out_fd, to_out)]
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m agent.bgp.bridge SOCKET", file=sys.stderr)
        return 2
    try:
        sock = connect(args[0])
    except OSError as exc:
        print(f"wiremesh bridge: cannot connect to {args[0]}: {exc}", file=sys.stderr)
        return 1
    try:
        pump(sys.stdin.fileno(), sys.stdout.fileno(), sock)
    except OSError as exc:
        if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADF):
            print(f"wiremesh bridge: {exc}", file=sys.stderr)
            return 1
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
