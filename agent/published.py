"""Everything a machine publishes over gossip, declared in one place: key, version, value type, codec.

Each value is node-local state other machines read (``node.set_kv(key, codec.encode(value))``, or
``set_meta`` for transit's metadata blob), framed and versioned by :class:`gossip.codec.Codec`, so a
peer's value that is malformed or newer than this agent reads is ignored and logged once
(:class:`gossip.codec.Refusals`, held by whoever decodes). The bytes are exactly what the agents
published before this module existed, so mixed-version clusters keep reading each other.

===================  ===========================  =======  ===============================================
key                  publisher                    version  value
===================  ===========================  =======  ===============================================
``api``              agent.runner                 1        ``"host:port"`` where other agents reach this
                                                           one's HTTP API (``{"v", "addr"}``)
``announce``         agent.announce.driver        1        per object key, :class:`Announced`: announce?,
                                                           reason, hold seconds left, peers
                                                           (``{"v", "objects"}``)
``health``           agent.health.runner          1        per object key, the check :class:`Verdict`
                                                           (a bare map: predates versioning, ``v`` implied)
``bgp``              agent.bgp.speaker            1        :class:`SpeakerInfo`: ASN, router id, underlay
                                                           and mesh address, keys on the wire, reflector
                                                           eligibility / claim / settled / the rule's
                                                           knobs (``rr``, optional: older agents ignore
                                                           it; ``rr.p`` optional the same way)
``transit.reach``    transit.driver               1        the reachability vector: per peer, direct up,
                                                           RTT ms, route (``[1, {peer: [...]}]``)
``transit.meta``     transit.driver (metadata)    1        :class:`transit.meta.TransitMeta`: public key,
                                                           mesh address, claim time, endpoints, flags
===================  ===========================  =======  ===============================================

Why the types are where they are: agent/health, agent/announce, agent/bgp and agent/http import this
module, so it imports none of them; their value types live in :mod:`agent.wirevalues` below it. Transit
cannot import agent at all, so its two codecs stay in transit (:mod:`transit.reachability`,
:mod:`transit.meta`) and are only referenced here, a downward import.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from agent.wirevalues import (
    ANNOUNCING,
    Announced,
    Eligibility,
    Reason,
    ReflectorInfo,
    ReflectorKnobs,
    SpeakerInfo,
    Verdict,
)
from gossip import Codec, Framing, WireError
from transit import META, REACH, ReachVector, TransitMeta

API_KEY = "api"
ANNOUNCE_KEY = "announce"
HEALTH_KEY = "health"
BGP_KEY = "bgp"
REACH_KEY = REACH.key
META_KEY = META.key

# --- api -------------------------------------------------------------------------------------------


def _api_body(address: str) -> dict[str, Any]:
    return {"addr": address}


def _api_from_body(body: dict[Any, Any]) -> str:
    addr = body.get("addr")
    if not isinstance(addr, str):
        raise WireError("addr: expected a string")
    host, _, port = addr.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise WireError(f"addr: {addr!r} is not IP:port") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise WireError(f"addr: {addr!r} has no port in 1..65535")
    return addr


API: Codec[str] = Codec(API_KEY, 1, Framing.MAP, _api_body, _api_from_body)

# --- announce --------------------------------------------------------------------------------------


def _announce_body(objects: Mapping[str, Announced]) -> dict[str, Any]:
    return {
        "objects": {
            key: [a.announce, a.reason.value, a.seconds_left, list(a.peers)] for key, a in objects.items()
        }
    }


def _announced(key: str, item: Any) -> Announced:
    if not isinstance(item, list | tuple) or len(item) != 4:
        raise WireError(f"objects[{key!r}]: expected [announce, reason, seconds_left, peers]")
    announce, reason, left, peers = item
    if not isinstance(peers, list | tuple) or not all(isinstance(p, str) for p in peers):
        raise WireError(f"objects[{key!r}]: peers must be a list of machine names")
    try:
        parsed = Reason(reason)
    except ValueError:
        raise WireError(f"objects[{key!r}]: unknown reason {reason!r}") from None
    if not isinstance(announce, bool) or announce != (parsed in ANNOUNCING):
        raise WireError(f"objects[{key!r}]: announce does not match reason {parsed.value}")
    if parsed is Reason.HELD:
        if isinstance(left, bool) or not isinstance(left, int | float) or not 0 <= left < float("inf"):
            raise WireError(f"objects[{key!r}]: a hold needs its seconds left")
        return Announced(True, parsed, float(left), tuple(peers))
    if left is not None:
        raise WireError(f"objects[{key!r}]: only a hold has seconds left")
    return Announced(announce, parsed, None, tuple(peers))


def _announce_from_body(body: dict[Any, Any]) -> dict[str, Announced]:
    objects = body.get("objects")
    if not isinstance(objects, dict):
        raise WireError("objects: expected a map")
    out: dict[str, Announced] = {}
    for key, item in objects.items():
        if not isinstance(key, str):
            raise WireError(f"objects[{key!r}]: expected a string key")
        out[key] = _announced(key, item)
    return out


ANNOUNCE: Codec[Mapping[str, Announced]] = Codec(
    ANNOUNCE_KEY, 1, Framing.MAP, _announce_body, _announce_from_body, strict_map_key=False
)

# --- health ----------------------------------------------------------------------------------------


def _health_body(verdicts: Mapping[str, Verdict]) -> dict[str, Any]:
    return {key: v.to_wire() for key, v in sorted(verdicts.items())}


def _health_from_body(body: dict[Any, Any]) -> dict[str, Verdict]:
    """Malformed entries are skipped, not the whole value: one bad check does not hide the others."""
    out: dict[str, Verdict] = {}
    for key, item in body.items():
        if not isinstance(key, str):
            continue
        try:
            out[key] = Verdict.from_wire(item)
        except ValueError:
            continue
    return out


HEALTH: Codec[Mapping[str, Verdict]] = Codec(
    HEALTH_KEY, 1, Framing.MAP, _health_body, _health_from_body, implicit=True, strict_map_key=False
)

# --- bgp -------------------------------------------------------------------------------------------


def _bgp_body(info: SpeakerInfo) -> dict[str, Any]:
    body: dict[str, Any] = {
        "asn": info.asn,
        "rid": info.router_id,
        "addr": info.address,
        "sent": sorted(info.sent),
    }
    if info.mesh is not None:
        body["mesh"] = info.mesh
    if info.reflector is not None:
        body["rr"] = _rr_body(info.reflector)
    return body


def _rr_body(rr: ReflectorInfo) -> dict[str, Any]:
    body: dict[str, Any] = {"e": rr.eligibility.value}
    if rr.claim is not None:
        body["c"] = rr.claim
    if rr.settled is not None:
        body["s"] = rr.settled
    if rr.knobs is not None:
        p = rr.knobs
        body["p"] = {"k": p.reflectors, "b": p.full_mesh_below, "m": p.margin, "h": p.reflector_hold}
    return body


def _uint(value: Any, bits: int, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << bits:
        raise WireError(f"{what}: {value!r} is not an integer in 0..2^{bits}-1")
    return value


def _rr_from_body(body: Any) -> ReflectorInfo | None:
    if body is None:
        return None
    if not isinstance(body, dict):
        raise WireError("rr: expected a map")
    e = body.get("e")
    if not isinstance(e, str) or e not in set(Eligibility):
        raise WireError(f"rr.e: {e!r} is not auto, always or never")
    eligibility = Eligibility(e)
    return ReflectorInfo(
        eligibility,
        _uint(body.get("c"), 63, "rr.c"),
        _uint(body.get("s"), 32, "rr.s"),
        _knobs_from_body(body.get("p")),
    )


def _knobs_from_body(body: Any) -> ReflectorKnobs | None:
    """``rr.p``: absent from agents before it (``None``); keys this agent does not know are ignored."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise WireError("rr.p: expected a map")
    values = {key: _uint(body.get(key), 32, f"rr.p.{key}") for key in ("k", "b", "m")}
    hold = body.get("h")
    if isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 <= hold < float("inf"):
        raise WireError(f"rr.p.h: {hold!r} is not a number of seconds")
    k, below, margin = values["k"], values["b"], values["m"]
    if k is None or below is None or margin is None:
        raise WireError("rr.p: needs k, b and m")
    return ReflectorKnobs(k, below, margin, float(hold))


def _ip(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise WireError(f"{what}: expected an address")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise WireError(f"{what}: {value!r} is not an address") from None


def _bgp_from_body(body: dict[Any, Any]) -> SpeakerInfo:
    asn, sent, mesh = body.get("asn"), body.get("sent", []), body.get("mesh")
    if not isinstance(asn, int) or isinstance(asn, bool) or not 1 <= asn < 1 << 32:
        raise WireError(f"asn: {asn!r} is not an ASN")
    rid = _ip(body.get("rid"), "rid")
    if ipaddress.ip_address(rid).version != 4:
        raise WireError(f"rid: {rid!r} is not an IPv4 address")
    if not isinstance(sent, list) or not all(isinstance(k, str) for k in sent):
        raise WireError("sent: expected a list of object keys")
    return SpeakerInfo(
        asn,
        rid,
        _ip(body.get("addr"), "addr"),
        tuple(sent),
        None if mesh is None else _ip(mesh, "mesh"),
        _rr_from_body(body.get("rr")),
    )


BGP: Codec[SpeakerInfo] = Codec(BGP_KEY, 1, Framing.MAP, _bgp_body, _bgp_from_body)

# --- transit (codecs in transit, which cannot import agent) ---------------------------------------

REACHABILITY: Codec[ReachVector] = REACH
METADATA: Codec[TransitMeta] = META

PUBLISHED: tuple[Codec[Any], ...] = (API, ANNOUNCE, HEALTH, BGP, REACHABILITY, METADATA)

__all__ = [
    "ANNOUNCE",
    "ANNOUNCE_KEY",
    "API",
    "API_KEY",
    "BGP",
    "BGP_KEY",
    "HEALTH",
    "HEALTH_KEY",
    "METADATA",
    "META_KEY",
    "PUBLISHED",
    "REACHABILITY",
    "REACH_KEY",
    "Announced",
    "Eligibility",
    "ReflectorInfo",
    "ReflectorKnobs",
    "SpeakerInfo",
    "Verdict",
]
