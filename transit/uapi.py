"""The WireGuard cross-platform userspace API (the UAPI socket wireguard-go serves), as a sans-I/O codec
and a thin Trio client.

The protocol is text over a Unix stream socket at ``/var/run/wireguard/IFNAME.sock``: a request is
``get=1`` or ``set=1`` followed by ``key=value`` lines and an empty line; the reply is ``key=value``
lines (for ``get``, the device, then each peer starting at its ``public_key``) ending with
``errno=N`` and an empty line, N = 0 on success and negative (``-EINVAL`` ...) on error. Keys are hex.
A ``set`` is applied line by line, so a failed one may have been applied in part: callers re-read and
reconcile rather than assume (see :mod:`transit.wgdevice`).

The encoded ``set`` request can hold the private key: it is never logged here and must not be logged
by callers; the request objects' reprs hide it (:class:`transit.keys.PrivateKey`).
"""

from __future__ import annotations

import errno as errno_mod
import os
from dataclasses import dataclass, field
from pathlib import Path

import trio

from common.address import IPNetwork
from transit.endpoint import Endpoint, parse_network
from transit.keys import PrivateKey, PublicKey

RUN_DIR = Path("/var/run/wireguard")
MAX_RESPONSE = 8 << 20  # 8 MiB: ~20,000 peers; a reply past this is a protocol error, not a device
MAX_KEEPALIVE = 65535


class UapiError(Exception):
    """The device refused a request (``errno`` is the negative errno it returned)."""

    def __init__(self, errno: int, request: str) -> None:
        self.errno = errno
        name = errno_mod.errorcode.get(abs(errno), "?")
        super().__init__(f"wireguard {request} failed: errno={errno} ({name}: {os.strerror(abs(errno))})")


class UapiProtocolError(Exception):
    """The reply did not follow the protocol."""


def socket_path(ifname: str, run_dir: Path = RUN_DIR) -> Path:
    return run_dir / f"{ifname}.sock"


# --- device state as ``get`` returns it ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerState:
    public_key: PublicKey
    endpoint: Endpoint | None = None
    allowed_ips: frozenset[IPNetwork] = frozenset()
    persistent_keepalive: int = 0
    last_handshake: float | None = None  # Unix time (wall clock); None: never
    rx_bytes: int = 0
    tx_bytes: int = 0
    has_preshared_key: bool = False  # the key itself is not kept

    def handshake_age(self, wall_now: float) -> float | None:
        """Seconds since the last handshake, for :meth:`transit.pathmon.PathMonitor.observe_handshake`."""
        return None if self.last_handshake is None else max(0.0, wall_now - self.last_handshake)


@dataclass(frozen=True, slots=True)
class DeviceState:
    private_key: PrivateKey | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: dict[PublicKey, PeerState] = field(default_factory=dict)


def _int(value: str, key: str, hi: int = (1 << 64) - 1) -> int:
    if not value.isdigit() or int(value) > hi:
        raise UapiProtocolError(f"{key}: expected an integer up to {hi}, got {value!r}")
    return int(value)


def parse_errno(lines: list[str]) -> int:
    """The ``errno`` of a complete reply (its last line)."""
    if not lines or not lines[-1].startswith("errno="):
        raise UapiProtocolError("reply does not end with errno=N")
    value = lines[-1].removeprefix("errno=")
    try:
        return int(value)
    except ValueError:
        raise UapiProtocolError(f"errno: not an integer: {value!r}") from None


@dataclass(slots=True)
class _PeerBuilder:
    """Collects one peer's lines of a ``get`` reply (local to one parse)."""

    public_key: PublicKey
    endpoint: Endpoint | None = None
    allowed_ips: set[IPNetwork] = field(default_factory=set)
    persistent_keepalive: int = 0
    handshake_sec: int = 0
    handshake_nsec: int = 0
    rx_bytes: int = 0
    tx_bytes: int = 0
    has_preshared_key: bool = False

    def line(self, key: str, value: str) -> None:
        if key == "endpoint":
            self.endpoint = Endpoint.parse(value)
        elif key == "allowed_ip":
            self.allowed_ips.add(parse_network(value))
        elif key == "persistent_keepalive_interval":
            self.persistent_keepalive = _int(value, key, MAX_KEEPALIVE)
        elif key == "last_handshake_time_sec":
            self.handshake_sec = _int(value, key)
        elif key == "last_handshake_time_nsec":
            self.handshake_nsec = _int(value, key, 999_999_999)
        elif key == "rx_bytes":
            self.rx_bytes = _int(value, key)
        elif key == "tx_bytes":
            self.tx_bytes = _int(value, key)
        elif key == "preshared_key":
            self.has_preshared_key = any(bytes.fromhex(value))

    def build(self) -> PeerState:
        handshake = None
        if self.handshake_sec or self.handshake_nsec:
            handshake = self.handshake_sec + self.handshake_nsec / 1e9
        return PeerState(
            self.public_key,
            self.endpoint,
            frozenset(self.allowed_ips),
            self.persistent_keepalive,
            handshake,
            self.rx_bytes,
            self.tx_bytes,
            self.has_preshared_key,
        )


def parse_get(lines: list[str]) -> DeviceState:
    """Parse a complete ``get`` reply. Unknown keys are skipped, so a newer implementation that reports
    more does not break us; malformed values raise :class:`UapiProtocolError`."""
    err = parse_errno(lines)
    if err != 0:
        raise UapiError(err, "get")
    private: PrivateKey | None = None
    listen_port = fwmark = 0
    peers: dict[PublicKey, PeerState] = {}
    peer: _PeerBuilder | None = None
    for line in lines[:-1]:
        key, sep, value = line.partition("=")
        if not sep:
            raise UapiProtocolError(f"not a key=value line: {line[:40]!r}")
        try:
            if key == "public_key":
                if peer is not None:
                    peers[peer.public_key] = peer.build()
                peer = _PeerBuilder(PublicKey.from_hex(value))
            elif peer is not None:
                peer.line(key, value)
            elif key == "private_key":
                raw = bytes.fromhex(value)
                private = None if not any(raw) else PrivateKey(raw)
            elif key == "listen_port":
                listen_port = _int(value, key, 65535)
            elif key == "fwmark":
                fwmark = _int(value, key, (1 << 32) - 1)
        except ValueError as exc:  # bad hex, key length, address, port
            raise UapiProtocolError(f"{key}: {exc}") from None
    if peer is not None:
        peers[peer.public_key] = peer.build()
    return DeviceState(private, listen_port, fwmark, peers)


# --- set requests ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerUpdate:
    """One peer's part of a ``set``: only the fields that are not None/False are sent."""

    public_key: PublicKey
    remove: bool = False
    update_only: bool = False
    endpoint: Endpoint | None = None
    persistent_keepalive: int | None = None
    replace_allowed_ips: bool = False
    allowed_ips: tuple[IPNetwork, ...] = ()

    def __post_init__(self) -> None:
        if self.persistent_keepalive is not None and not 0 <= self.persistent_keepalive <= MAX_KEEPALIVE:
            raise ValueError(f"persistent keepalive must be in 0..{MAX_KEEPALIVE}")
        if self.remove and (self.endpoint or self.allowed_ips or self.replace_allowed_ips):
            raise ValueError("a removed peer takes no other settings")


@dataclass(frozen=True, slots=True)
class SetRequest:
    private_key: PrivateKey | None = None
    listen_port: int | None = None
    replace_peers: bool = False
    peers: tuple[PeerUpdate, ...] = ()

    def __post_init__(self) -> None:
        if self.listen_port is not None and not 0 <= self.listen_port <= 65535:
            raise ValueError("listen_port must be in 0..65535")

    @property
    def empty(self) -> bool:
        device = self.private_key is not None or self.listen_port is not None or self.replace_peers
        return not device and not self.peers


def encode_get() -> bytes:
    return b"get=1\n\n"


def encode_set(request: SetRequest) -> bytes:
    """The ``set`` request text. It may contain the private key: send it, never log it."""
    lines = ["set=1"]
    if request.private_key is not None:
        lines.append(f"private_key={request.private_key.reveal().hex()}")
    if request.listen_port is not None:
        lines.append(f"listen_port={request.listen_port}")
    if request.replace_peers:
        lines.append("replace_peers=true")
    for p in request.peers:
        lines.append(f"public_key={p.public_key.hex}")
        if p.remove:
            lines.append("remove=true")
            continue
        if p.update_only:
            lines.append("update_only=true")
        if p.endpoint is not None:
            lines.append(f"endpoint={p.endpoint}")
        if p.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={p.persistent_keepalive}")
        if p.replace_allowed_ips:
            lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={net}" for net in p.allowed_ips)
    return ("\n".join(lines) + "\n\n").encode()


class ReplyReader:
    """Frames one reply out of the byte stream: complete at the first empty line."""

    def __init__(self, limit: int = MAX_RESPONSE) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[str] | None:
        """Add bytes; the reply's lines once complete, else None."""
        self._buf += data
        if self._buf.startswith(b"\n"):
            raise UapiProtocolError("empty reply")
        end = self._buf.find(b"\n\n")
        if end < 0:
            if len(self._buf) > self._limit:
                raise UapiProtocolError(f"reply longer than {self._limit} bytes")
            return None
        try:
            text = self._buf[:end].decode("ascii")
        except UnicodeDecodeError:
            raise UapiProtocolError("reply is not ASCII") from None
        return text.split("\n")


# --- the Trio client ---------------------------------------------------------------------------------


class UapiClient:
    """Talks to one device's UAPI socket, one connection per request (as ``wg`` does): a device that
    restarted meanwhile is simply reached again."""

    def __init__(self, path: Path | str, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    async def _exchange(self, payload: bytes) -> list[str]:
        with trio.fail_after(self.timeout):
            stream = await trio.open_unix_socket(str(self.path))
            async with stream:
                await stream.send_all(payload)
                reader = ReplyReader()
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise UapiProtocolError("connection closed before the reply was complete")
                    lines = reader.feed(data)
                    if lines is not None:
                        return lines

    async def get(self) -> DeviceState:
        return parse_get(await self._exchange(encode_get()))

    async def set(self, request: SetRequest) -> None:
        if request.empty:
            return
        err = parse_errno(await self._exchange(encode_set(request)))
        if err != 0:
            raise UapiError(err, "set")


__all__ = [
    "RUN_DIR",
    "DeviceState",
    "PeerState",
    "PeerUpdate",
    "ReplyReader",
    "SetRequest",
    "UapiClient",
    "UapiError",
    "UapiProtocolError",
    "encode_get",
    "encode_set",
    "parse_errno",
    "parse_get",
    "socket_path",
]
