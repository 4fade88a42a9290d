"""SWIM gossip: membership, failure detection and dissemination, sans-I/O core plus a Trio driver.

This is what other packages may import; the modules behind it are gossip's own business. The names
resolve lazily, on first use, so that ``from gossip import MemberInfo`` costs what importing
:mod:`gossip.events` costs and does not load Trio, msgpack and cryptography for a data type. Modules
inside ``gossip`` import each other by module path, never through this face, so it cannot cause an
import cycle.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import TYPE_CHECKING

from common.face import lazy_face

if TYPE_CHECKING:
    from gossip.codec import Codec, DecodeCache, Framing, NewerVersion, Refusals, WireError
    from gossip.config import PROFILES, GossipConfig, StreamLimits
    from gossip.events import EventKind, MemberEvent, MemberInfo, MemberState
    from gossip.keyquery import INSECURE, KEY_QUERY_TIMEOUT, KeyAnswer, KeyStore, MemoryKeys
    from gossip.keyring import (
        KEY_OPS,
        KEY_SIZE,
        Keyring,
        KeyringError,
        Sealer,
        fingerprint,
        generate_key,
        parse_key,
    )
    from gossip.memnet import MemoryNetwork, MemoryTransport
    from gossip.names import MAX_NAME_LEN, check_member_name, is_member_name, name_problem
    from gossip.node import GossipNode, read_snapshot
    from gossip.shared import SharedState
    from gossip.sim import Simulation
    from gossip.snapshot import SNAPSHOT_FILE, Remembered, join_targets
    from gossip.swim import StreamRequest, Swim, app_digest
    from gossip.transport import Transport, open_udp_tcp_transport

__all__ = [
    "INSECURE",
    "KEY_OPS",
    "KEY_QUERY_TIMEOUT",
    "KEY_SIZE",
    "MAX_NAME_LEN",
    "PROFILES",
    "SNAPSHOT_FILE",
    "Codec",
    "DecodeCache",
    "EventKind",
    "Framing",
    "GossipConfig",
    "GossipNode",
    "KeyAnswer",
    "KeyStore",
    "Keyring",
    "KeyringError",
    "MemberEvent",
    "MemberInfo",
    "MemberState",
    "MemoryKeys",
    "MemoryNetwork",
    "MemoryTransport",
    "NewerVersion",
    "Refusals",
    "Remembered",
    "Sealer",
    "SharedState",
    "Simulation",
    "StreamLimits",
    "StreamRequest",
    "Swim",
    "Transport",
    "WireError",
    "app_digest",
    "check_member_name",
    "fingerprint",
    "generate_key",
    "is_member_name",
    "join_targets",
    "name_problem",
    "open_udp_tcp_transport",
    "parse_key",
    "read_snapshot",
]

# Where each public name lives. Read-only: the face is fixed when the package is written.
_HOME = MappingProxyType(
    {
        "Codec": "gossip.codec",
        "DecodeCache": "gossip.codec",
        "Framing": "gossip.codec",
        "NewerVersion": "gossip.codec",
        "Refusals": "gossip.codec",
        "WireError": "gossip.codec",
        "GossipConfig": "gossip.config",
        "PROFILES": "gossip.config",
        "StreamLimits": "gossip.config",
        "EventKind": "gossip.events",
        "MemberEvent": "gossip.events",
        "MemberInfo": "gossip.events",
        "MemberState": "gossip.events",
        "INSECURE": "gossip.keyquery",
        "KEY_QUERY_TIMEOUT": "gossip.keyquery",
        "KeyAnswer": "gossip.keyquery",
        "KeyStore": "gossip.keyquery",
        "MemoryKeys": "gossip.keyquery",
        "KEY_OPS": "gossip.keyring",
        "KEY_SIZE": "gossip.keyring",
        "fingerprint": "gossip.keyring",
        "Keyring": "gossip.keyring",
        "KeyringError": "gossip.keyring",
        "Sealer": "gossip.keyring",
        "generate_key": "gossip.keyring",
        "parse_key": "gossip.keyring",
        "MemoryNetwork": "gossip.memnet",
        "MemoryTransport": "gossip.memnet",
        "GossipNode": "gossip.node",
        "read_snapshot": "gossip.node",
        "SharedState": "gossip.shared",
        "Simulation": "gossip.sim",
        "SNAPSHOT_FILE": "gossip.snapshot",
        "Remembered": "gossip.snapshot",
        "join_targets": "gossip.snapshot",
        "StreamRequest": "gossip.swim",
        "Swim": "gossip.swim",
        "app_digest": "gossip.swim",
        "Transport": "gossip.transport",
        "open_udp_tcp_transport": "gossip.transport",
        "MAX_NAME_LEN": "gossip.names",
        "check_member_name": "gossip.names",
        "is_member_name": "gossip.names",
        "name_problem": "gossip.names",
    }
)


if not TYPE_CHECKING:  # hidden from type checkers, so a misspelt import from gossip still fails there
    __getattr__, __dir__ = lazy_face(__name__, _HOME)
