"""Address value types shared by the metadata codec, the UAPI codec and the peer reconcile.

One parsed, validated type per idea (a UDP endpoint, an IP prefix) so that comparisons in the reconcile
are exact: ``100.64.0.2/32`` written by us and read back from wireguard-go must compare equal.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from common.address import IPAddress, IPNetwork


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """A UDP endpoint (IP literal and port); no host names, so nothing here resolves DNS."""

    host: IPAddress
    port: int

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port must be in 1..65535 (got {self.port})")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``192.0.2.1:51820`` or ``[2001:db8::1]:51820``, as ``wg`` prints them."""
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"not an endpoint (IP:port or [IPv6]:port): {text!r}")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
            addr: IPAddress = ipaddress.IPv6Address(host)
        else:
            addr = ipaddress.IPv4Address(host)
        return cls(addr, int(port))

    def __str__(self) -> str:
        if isinstance(self.host, ipaddress.IPv6Address):
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_network(text: str) -> IPNetwork:
    """A prefix in canonical form (host bits cleared), so equal prefixes compare equal."""
    return ipaddress.ip_network(text.strip(), strict=False)


def host_network(addr: IPAddress) -> IPNetwork:
    """The /32 or /128 of one address: what a mesh address is in AllowedIPs."""
    return ipaddress.ip_network(addr)


__all__ = ["Endpoint", "host_network", "parse_network"]
