"""Addresses, one name per concept: a socket address is ``Address`` (host, port); an IP address is
``IPAddress``; a prefix is ``IPNetwork``. ``host:port`` text is read and written here only."""

from __future__ import annotations

import ipaddress
from typing import TypeAlias

Address: TypeAlias = tuple[str, int]  # (host, port); the host is an IP literal or a name
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def format_address(addr: Address) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    host, port = addr
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(text: str, default_port: int | None = None, *, default_host: str | None = None) -> Address:
    """``host:port``, ``[v6]:port``, ``[v6]``, bare ``v6`` or ``host``, and ``:port`` when a
    ``default_host`` is given; ValueError says what is wrong."""
    text = text.strip()
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("missing ']' after IPv6 address")
        host, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("expected ':port' after ']'")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        host, port_text = text, None
    elif ":" in text:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host:
        if default_host is None:
            raise ValueError("empty host")
        host = default_host
    if port_text is None:
        if default_port is None:
            raise ValueError("missing port (expected host:port)")
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"bad port {port_text!r} (expected 0-65535)")
    return host, int(port_text)


__all__ = ["Address", "IPAddress", "IPNetwork", "format_address", "split_hostport"]
