"""Gossip tunables. Defaults are hashicorp/memberlist's LAN profile."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


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

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
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
