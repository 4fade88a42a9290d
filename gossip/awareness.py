"""Lifeguard's local health awareness: a node that misses acks it should have got slows itself down.

A score of 0 is healthy. Failed probes whose relays also failed to nack, and having to refute a
suspicion about ourselves, raise it; successful probes lower it. The score multiplies the probe
interval and deadline, so an overloaded node stops accusing healthy peers it merely failed to hear.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        if max_multiplier < 1:
            raise ValueError("awareness max multiplier must be at least 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, timeout: float) -> float:
        return timeout * (self.score + 1)
