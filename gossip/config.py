"""Gossip tunables, and memberlist's three presets of them (:data:`PROFILES`).

The defaults are hashicorp/memberlist's LAN profile (DefaultLANConfig); :data:`WAN` and :data:`LOCAL`
change what memberlist's DefaultWANConfig and DefaultLocalConfig change, and nothing else (values
checked against memberlist 0.2.2's config.go, as Debian packages it).

:class:`StreamLimits` (what strangers may hold of the TCP stream server, :mod:`gossip.transport`) is
ours, not memberlist's; it lives here, free of Trio, so that the agent's config can carry it as
``GossipConfig.streams``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from types import MappingProxyType

# The largest stream frame anyone may send (a push-pull of a large cluster's full state fits).
MAX_FRAME = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """What one peer, and all peers together, may hold of the stream server (see gossip.transport)."""

    # The whole exchange of a connection (request and reply; our handler's time aside).
    timeout: float = 10.0
    # A request frame of at most stranger_frame_max bytes must arrive, header and body, within this
    # (a member's larger frame gets ``timeout``): a LAN path moves 64 KiB well inside 2 s, so this
    # only cuts off peers that trickle bytes to hold a slot.
    first_frame_timeout: float = 2.0
    max_frame: int = MAX_FRAME
    # Inbound connections at once: a node has a handful in flight, 256 is headroom for bursts.
    max_connections: int = 256
    # Slots only addresses of live members may take, so members reach each other under a flood.
    member_reserve: int = 32
    # Concurrent connections per source address: a member has at most a few requests to us at once.
    per_source: int = 8
    # The largest frame taken from a stranger (an address not in the member list): enough for a
    # joining node's push-pull; larger ones (the full state of a big cluster) only from members.
    stranger_frame_max: int = 64 * 1024
    # Bytes all inbound frames together may hold while received and handled: two maximum frames.
    buffer_budget: int = 2 * MAX_FRAME

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if self.first_frame_timeout <= 0:
            raise ValueError("first_frame_timeout must be positive")
        if self.first_frame_timeout > self.timeout:
            raise ValueError("first_frame_timeout must not exceed timeout (the whole exchange)")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if not 0 <= self.member_reserve < self.max_connections:
            raise ValueError("member_reserve must be at least 0 and below max_connections")
        if self.per_source < 1:
            raise ValueError("per_source must be at least 1")
        if self.max_frame < 0:
            raise ValueError("max_frame must not be negative")
        if self.stranger_frame_max < 0:
            raise ValueError("stranger_frame_max must not be negative")
        if self.buffer_budget < max(self.stranger_frame_max, 1):
            raise ValueError("buffer_budget must hold at least one stranger-sized frame (stranger_frame_max)")


@dataclass(frozen=True)
class GossipConfig:
    """Every knob of the SWIM + Lifeguard layer; all times in seconds."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    retransmit_mult: int = 4
    push_pull_interval: float = 30.0
    awareness_max_multiplier: int = 8
    udp_buffer_size: int = 1400
    tcp_timeout: float = 10.0
    disable_tcp_pings: bool = False
    meta_max_size: int = 512
    # Node-local values larger than this are announced by a small notice and fetched over TCP.
    kv_datagram_max: int = 512
    kv_value_max: int = 1 << 20
    # Dead and left members are forgotten after this long (they stay visible until then).
    dead_member_reap_time: float = 3600.0
    # Failed (not left) members are retried by push-pull this often, so partitions heal.
    reconnect_interval: float = 30.0
    # Relays nack an indirect probe after this share of probe_timeout, so the nack beats the deadline.
    nack_fraction: float = 0.8
    # After its leave notice went out, a leaving node keeps answering (and telling) this long (serf: 1 s).
    leave_propagate_delay: float = 1.0
    # What the TCP stream server lets peers hold (config file: ``[gossip.streams]``).
    streams: StreamLimits = StreamLimits()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if isinstance(value, int | float) and value < 0:
                raise ValueError(f"{f.name} must not be negative (got {value})")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("probe_timeout must be shorter than probe_interval")
        if self.probe_interval <= 0 or self.gossip_interval <= 0 or self.probe_timeout <= 0:
            raise ValueError("probe_interval, probe_timeout and gossip_interval must be positive")
        if self.suspicion_mult < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("suspicion_mult and suspicion_max_timeout_mult must be at least 1")
        if self.awareness_max_multiplier < 1:
            raise ValueError("awareness_max_multiplier must be at least 1")
        if not 0 < self.nack_fraction <= 1:
            raise ValueError("nack_fraction must be in (0, 1]")
        if self.udp_buffer_size < 512:
            raise ValueError("udp_buffer_size must be at least 512 bytes")

    def retransmit_limit(self, n: int) -> int:
        """How many times one update is piggybacked: RetransmitMult x ceil(log10(N+1))."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_min_timeout(self, n: int) -> float:
        """SuspicionMult x max(1, log10 N) x probe interval."""
        scale = max(1.0, math.log10(max(1, n)))
        return self.suspicion_mult * scale * self.probe_interval

    def push_pull_scaled_interval(self, n: int) -> float:
        """Push-pull period that grows with cluster size, as memberlist's pushPullScale does."""
        threshold = 32
        if n <= threshold:
            return self.push_pull_interval
        multiplier = math.ceil(math.log2(n) - math.log2(threshold)) + 1
        return self.push_pull_interval * multiplier


# One data centre: RTTs well under a millisecond, so a 1 s probe with a 0.5 s ack deadline leaves
# hundreds of RTTs of slack, and suspicion (4 x log10 N probe intervals) turns a silent member dead in
# seconds. Gossip to 3 members every 0.2 s reaches everyone in O(log N) rounds, push-pull every 30 s
# repairs whatever gossip missed. This is GossipConfig() exactly: the agent's behaviour by default.
LAN = GossipConfig()

# Across regions: RTTs of 100-300 ms, with jitter and the odd lost datagram.
WAN = replace(
    LAN,
    # An ack must survive one RTT plus queueing on a loaded path: 3 s is ten RTTs at the worst sites,
    # so a slow link is not taken for a dead member.
    probe_timeout=3.0,
    # The interval must stay above the timeout (one probe in flight at a time); 5 s also keeps
    # probe traffic small on links that are paid for.
    probe_interval=5.0,
    # Lost datagrams are likelier, so wait more probe intervals before declaring a suspect dead.
    suspicion_mult=6,
    # Each round costs more wall time, so each one tells one more member, and rounds are spaced to
    # carry larger piggyback batches instead of many small ones.
    gossip_nodes=4,
    gossip_interval=0.5,
    # With slower detection a dead member's news needs longer to be gossiped to the others.
    gossip_to_the_dead_time=60.0,
    # Full-state exchanges are the expensive part over long links: half as often.
    push_pull_interval=60.0,
    # A TCP connect and full-state transfer over a long fat pipe can take seconds.
    tcp_timeout=30.0,
    # The server gives an exchange as long as the client waits for it; and a stranger's 64 KiB first
    # frame needs a few round trips of TCP slow start at 300 ms each, so 5 s instead of 2 s.
    streams=StreamLimits(timeout=30.0, first_frame_timeout=5.0),
)

# One machine (loopback, tests, labs): RTTs in microseconds and no loss, so everything can be fast.
LOCAL = replace(
    LAN,
    # Loopback answers at once: 0.2 s is still thousands of RTTs; the interval stays 1 s.
    probe_timeout=0.2,
    # One relay is enough to rule out a broken direct path when there are no paths to break.
    indirect_checks=1,
    # No loss to make up for: fewer retransmissions and a shorter suspicion suffice.
    retransmit_mult=2,
    suspicion_mult=3,
    # Gossip rounds are cheap on loopback: twice as often spreads news twice as fast.
    gossip_interval=0.1,
    gossip_to_the_dead_time=15.0,
    # Full-state repair is cheap too, so do it twice as often.
    push_pull_interval=15.0,
    # A loopback TCP connect that takes a second has failed.
    tcp_timeout=1.0,
)

PROFILES: Mapping[str, GossipConfig] = MappingProxyType({"lan": LAN, "wan": WAN, "local": LOCAL})
