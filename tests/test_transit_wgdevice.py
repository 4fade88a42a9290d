"""Desired -> actual WireGuard reconcile: minimal ``set`` operations, idempotent, convergent."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.address import IPNetwork
from transit.endpoint import Endpoint, parse_network
from transit.keys import PrivateKey, PublicKey
from transit.uapi import DeviceState, PeerState, PeerUpdate, SetRequest
from transit.wgdevice import DesiredDevice, DesiredPeer, plan, reconcile

KEY = PrivateKey(bytes(range(32)))
PK = [PublicKey(bytes([i + 1]) * 32) for i in range(6)]
N = [parse_network(f"100.64.0.{i}/32") for i in range(1, 9)]
EP = Endpoint.parse("198.18.0.2:51820")


def apply(state: DeviceState, req: SetRequest) -> DeviceState:
    """What wireguard-go does with a ``set`` (the subset we send), including that a prefix belongs
    to one peer only: adding it to one peer takes it from any other."""
    peers = {} if req.replace_peers else dict(state.peers)
    for u in req.peers:
        if u.remove:
            peers.pop(u.public_key, None)
            continue
        cur = peers.get(u.public_key)
        if cur is None:
            if u.update_only:
                continue
            cur = PeerState(u.public_key)
        ips = set() if u.replace_allowed_ips else set(cur.allowed_ips)
        for net in u.allowed_ips:
            for k, other in list(peers.items()):
                if k != u.public_key and net in other.allowed_ips:
                    peers[k] = dataclasses.replace(other, allowed_ips=other.allowed_ips - {net})
            ips.add(net)
        peers[u.public_key] = dataclasses.replace(
            cur,
            endpoint=u.endpoint if u.endpoint is not None else cur.endpoint,
            persistent_keepalive=(
                u.persistent_keepalive if u.persistent_keepalive is not None else cur.persistent_keepalive
            ),
            allowed_ips=frozenset(ips),
        )
    return DeviceState(
        req.private_key if req.private_key is not None else state.private_key,
        req.listen_port if req.listen_port is not None else state.listen_port,
        state.fwmark,
        peers,
    )


class FakeDevice:
    def __init__(self, state: DeviceState | None = None) -> None:
        self.state = state or DeviceState()
        self.sets: list[SetRequest] = []

    async def get(self) -> DeviceState:
        return self.state

    async def set(self, request: SetRequest) -> None:
        self.sets.append(request)
        self.state = apply(self.state, request)


def device(*peers: DesiredPeer, port: int | None = 51820) -> DesiredDevice:
    return DesiredDevice.build(KEY, port, peers)


def configured(d: DesiredDevice) -> DeviceState:
    req = plan(d, DeviceState())
    assert req is not None
    return apply(DeviceState(), req)


def test_empty_device_gets_everything() -> None:
    d = device(DesiredPeer(PK[0], frozenset({N[0], N[1]}), EP, 25), DesiredPeer(PK[1]))
    req = plan(d, DeviceState())
    assert req is not None
    assert req.private_key == KEY and req.listen_port == 51820 and not req.replace_peers
    assert req.peers == (
        PeerUpdate(
            PK[0], endpoint=EP, persistent_keepalive=25, replace_allowed_ips=True, allowed_ips=(N[0], N[1])
        ),
        PeerUpdate(PK[1], persistent_keepalive=0, replace_allowed_ips=True),
    )


def test_matching_device_needs_nothing() -> None:
    d = device(DesiredPeer(PK[0], frozenset({N[0]}), EP, 25))
    state = configured(d)
    assert plan(d, state) is None
    # the device reports the key clamped; ours is clamped too, so an unclamped copy is the same key
    assert plan(dataclasses.replace(d, private_key=PrivateKey(bytes(range(32)))), state) is None
    # the device's port is kept when we do not care
    assert (
        plan(dataclasses.replace(d, listen_port=None), dataclasses.replace(state, listen_port=4000)) is None
    )


def test_only_the_difference_is_sent() -> None:
    base = device(DesiredPeer(PK[0], frozenset({N[0]}), EP, 25), DesiredPeer(PK[1], frozenset({N[1]})))
    state = configured(base)
    keepalive = device(DesiredPeer(PK[0], frozenset({N[0]}), EP, 10), DesiredPeer(PK[1], frozenset({N[1]})))
    assert plan(keepalive, state) == SetRequest(
        peers=(PeerUpdate(PK[0], update_only=True, persistent_keepalive=10),)
    )
    # Relay PK[0]'s address through PK[1]: one addition there, one replace here.
    relayed = device(DesiredPeer(PK[0], frozenset(), EP, 25), DesiredPeer(PK[1], frozenset({N[0], N[1]})))
    req = plan(relayed, state)
    assert req == SetRequest(
        peers=(
            PeerUpdate(PK[0], update_only=True, replace_allowed_ips=True),
            PeerUpdate(PK[1], update_only=True, allowed_ips=(N[0],)),
        )
    )
    assert plan(relayed, apply(state, req)) is None


def test_stale_peers_are_removed_and_endpoints_left_to_roaming() -> None:
    state = configured(device(DesiredPeer(PK[0], frozenset({N[0]}), EP), DesiredPeer(PK[1])))
    roamed = Endpoint.parse("203.0.113.7:40000")
    state.peers[PK[0]] = dataclasses.replace(state.peers[PK[0]], endpoint=roamed)
    want = device(DesiredPeer(PK[0], frozenset({N[0]})))  # endpoint None: do not touch
    assert plan(want, state) == SetRequest(peers=(PeerUpdate(PK[1], remove=True),))
    enforce = device(DesiredPeer(PK[0], frozenset({N[0]}), EP))
    req = plan(enforce, apply(state, SetRequest(peers=(PeerUpdate(PK[1], remove=True),))))
    assert req == SetRequest(peers=(PeerUpdate(PK[0], update_only=True, endpoint=EP),))


def test_another_private_key_is_replaced() -> None:
    state = dataclasses.replace(configured(device()), private_key=PrivateKey(bytes([7]) * 32))
    req = plan(device(), state)
    assert req is not None and req.private_key == KEY and req.peers == ()


def test_desired_state_is_validated() -> None:
    with pytest.raises(ValueError, match="twice"):
        device(DesiredPeer(PK[0]), DesiredPeer(PK[0]))
    with pytest.raises(ValueError, match="both"):
        device(DesiredPeer(PK[0], frozenset({N[0]})), DesiredPeer(PK[1], frozenset({N[0]})))
    with pytest.raises(ValueError, match="own key"):
        device(DesiredPeer(KEY.public_key))


async def test_reconcile_applies_and_then_rests() -> None:
    dev = FakeDevice()
    d = device(DesiredPeer(PK[0], frozenset({N[0]}), EP, 25))
    assert await reconcile(dev, d) is not None
    assert await reconcile(dev, d) is None
    assert len(dev.sets) == 1


# Random desired and actual states: one reconcile always converges and a second is a no-op.
nets = st.sampled_from([*N, parse_network("fd00::/64"), parse_network("100.96.0.0/24")])
endpoints = st.one_of(st.none(), st.sampled_from([EP, Endpoint(ipaddress.IPv6Address("2001:db8::1"), 51821)]))


@st.composite
def desired_devices(draw: st.DrawFn) -> DesiredDevice:
    keys = draw(st.lists(st.sampled_from(PK), unique=True, max_size=5))
    owner: dict[IPNetwork, PublicKey] = {}
    for net in draw(st.lists(nets, unique=True)):
        if keys:
            owner[net] = draw(st.sampled_from(keys))
    peers = [
        DesiredPeer(
            k,
            frozenset(n for n, o in owner.items() if o == k),
            draw(endpoints),
            draw(st.sampled_from([0, 10, 25])),
        )
        for k in keys
    ]
    return DesiredDevice.build(KEY, draw(st.sampled_from([None, 51820, 51821])), peers)


@st.composite
def device_states(draw: st.DrawFn) -> DeviceState:
    peers = {}
    taken: set[IPNetwork] = set()
    for k in draw(st.lists(st.sampled_from(PK), unique=True, max_size=5)):
        ips = frozenset(draw(st.lists(nets, unique=True, max_size=3))) - taken
        taken |= ips
        peers[k] = PeerState(k, draw(endpoints), ips, draw(st.sampled_from([0, 10, 25])))
    key = draw(st.sampled_from([None, KEY, PrivateKey(bytes([9]) * 32)]))
    return DeviceState(key, draw(st.sampled_from([0, 51820])), 0, peers)


@settings(max_examples=300)
@given(desired_devices(), device_states())
def test_one_round_converges_and_the_next_is_empty(desired: DesiredDevice, actual: DeviceState) -> None:
    req = plan(desired, actual)
    after = apply(actual, req) if req is not None else actual
    assert plan(desired, after) is None
    assert set(after.peers) == set(desired.peers)
    for k, want in desired.peers.items():
        assert after.peers[k].allowed_ips == want.allowed_ips
        assert after.peers[k].persistent_keepalive == want.persistent_keepalive
        if want.endpoint is not None:
            assert after.peers[k].endpoint == want.endpoint
        else:
            assert after.peers[k].endpoint == (actual.peers[k].endpoint if k in actual.peers else None)
    if req is not None:  # minimal: a peer that already matches is not mentioned
        for u in req.peers:
            cur = actual.peers.get(u.public_key)
            want_peer = desired.peers.get(u.public_key)
            assert (
                u.remove
                or cur is None
                or want_peer is None
                or plan(
                    DesiredDevice(KEY, None, {u.public_key: want_peer}),
                    DeviceState(KEY, 0, 0, {u.public_key: cur}),
                )
                is not None
            )
