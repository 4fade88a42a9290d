"""The ``[bgp]`` config section: off by default, every value checked, errors naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.bgp.config import external_neighbor
from agent.config.bgp import DEFAULT_ROUTE_PROTOCOL, BgpSettings, MeshAsnMode, derive_private_asn
from agent.config.loader import ConfigError, load_config

BASE = 'name = "edge1"\nbind = "198.18.0.2:7946"\ninsecure = true\n'


def load(tmp_path: Path, text: str) -> BgpSettings:
    path = tmp_path / "agent.toml"
    path.write_text(BASE + text)
    return load_config(path).bgp


def error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    return info.value


def test_off_by_default(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert settings == BgpSettings()
    assert not settings.enabled
    assert settings.route_protocol == DEFAULT_ROUTE_PROTOCOL


def test_a_full_section(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
[bgp]
enabled = true
asn = 65001
router_id = "198.18.0.2"
hold_time = 30
drain_time = 7
max_paths = 8
route_protocol = 201
route_table = 100

[[bgp.peers]]
address = "198.18.0.1"
peer_asn = 65000
local_address = "198.18.0.2"
hold_time = 9
md5_password = "s3cret"
multihop = 2
passive = true
description = "upstream"

[[bgp.peers]]
address = "2001:db8::1"
peer_asn = 65010
local_asn = 65020
""",
    )
    assert settings.enabled and settings.plan.mode is MeshAsnMode.SHARED and settings.plan.asn == 65001
    assert settings.machine_asn("edge1") == 65001
    assert (settings.hold_time, settings.drain_time, settings.max_paths) == (30, 7.0, 8)
    assert (settings.route_protocol, settings.route_table) == (201, 100)
    first, second = settings.peers
    neighbor = external_neighbor(first, "198.18.0.2", 65001)
    assert (neighbor.peer_as, neighbor.local_as, neighbor.passive, neighbor.multihop) == (
        65000,
        65001,
        True,
        2,
    )
    assert neighbor.md5_password == "s3cret" and neighbor.listen and neighbor.description == "upstream"
    assert "s3cret" not in repr(neighbor)
    other = external_neighbor(second, "198.18.0.2", 65001)
    assert other.local_as == 65020 and other.local_address is None and not other.listen


def test_per_machine_asns(tmp_path: Path) -> None:
    derived = load(tmp_path, '[bgp]\nenabled = true\nasn_plan = "per-machine"\n')
    assert derived.plan.mode is MeshAsnMode.PER_MACHINE
    assert derived.machine_asn("edge1") == derive_private_asn("edge1")
    explicit = load(tmp_path, '[bgp]\nenabled = true\nasn_plan = "per-machine"\nasn = 4200000001\n')
    assert explicit.machine_asn("edge1") == 4200000001


def test_router_id_defaults_to_the_advertise_address(tmp_path: Path) -> None:
    settings = load(tmp_path, "[bgp]\nenabled = true\n")
    assert settings.resolved_router_id("198.18.0.2") == "198.18.0.2"


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[bgp]\nenabled = "yes"\n', "bgp.enabled", "expected bool"),
        ('[bgp]\nasn_plan = "one"\n', "bgp.asn_plan", "shared, per-machine"),
        ("[bgp]\nasn = 23456\n", "bgp.asn", "AS_TRANS"),
        ("[bgp]\nasn = 0\n", "bgp.asn", "out of range"),
        ('[bgp]\nrouter_id = "::1"\n', "bgp.router_id", "dotted quad"),
        ("[bgp]\nhold_time = 2\n", "bgp.hold_time", "0 or 3-65535"),
        ("[bgp]\ndrain_time = -1\n", "bgp.drain_time", "0-3600"),
        ("[bgp]\nmax_paths = 0\n", "bgp.max_paths", "out of range"),
        ("[bgp]\nroute_protocol = 2\n", "bgp.route_protocol", "out of range"),
        ("[bgp]\nroute_table = 255\n", "bgp.route_table", "reserved"),
        ("[bgp]\nholdtime = 9\n", "bgp.holdtime", "unknown key"),
        ('[bgp]\nreflector = "yes"\n', "bgp.reflector", "auto, always, never"),
        ("[bgp]\nreflector = true\n", "bgp.reflector", "auto, always, never"),
        ("[bgp]\nreflectors = 0\n", "bgp.reflectors", "out of range: 0 (must be 1-16)"),
        ("[bgp]\nfull_mesh_below = -1\n", "bgp.full_mesh_below", "out of range"),
        ("[bgp]\nreflector_hold = -5\n", "bgp.reflector_hold", "out of range"),
        ("[bgp]\npeers = 3\n", "bgp.peers", "array of tables"),
        ("[[bgp.peers]]\npeer_asn = 1\n", "bgp.peers[0].address", "missing required key"),
        ('[[bgp.peers]]\naddress = "198.18.0.1"\n', "bgp.peers[0].peer_asn", "missing required key"),
        ('[[bgp.peers]]\naddress = "nope"\npeer_asn = 1\n', "bgp.peers[0].address", "not an IP address"),
        (
            '[[bgp.peers]]\naddress = "198.18.0.1"\npeer_asn = 1\npassive = true\n',
            "bgp.peers[0].passive",
            "local_address",
        ),
        (
            '[[bgp.peers]]\naddress = "198.18.0.1"\npeer_asn = 1\nlocal_address = "::1"\n',
            "bgp.peers[0].local_address",
            "same family",
        ),
        (
            f'[[bgp.peers]]\naddress = "198.18.0.1"\npeer_asn = 1\nmd5_password = "{"x" * 81}"\n',
            "bgp.peers[0].md5_password",
            "1-80 bytes",
        ),
        (
            '[[bgp.peers]]\naddress = "198.18.0.1"\npeer_asn = 1\nmultihop = 0\n',
            "bgp.peers[0].multihop",
            "range",
        ),
        (
            '[[bgp.peers]]\naddress = "198.18.0.1"\npeer_asn = 1\n'
            '[[bgp.peers]]\naddress = "198.18.0.1"\npeer_asn = 2\n',
            "bgp.peers[1].address",
            "listed twice",
        ),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, key: str, words: str) -> None:
    exc = error(tmp_path, text)
    assert exc.key == key, exc
    assert words in exc.problem
    assert str(tmp_path / "agent.toml") in str(exc)


def test_an_ipv6_underlay_needs_an_explicit_router_id(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('name = "e"\nbind = "[2001:db8::2]:7946"\ninsecure = true\n[bgp]\nenabled = true\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "bgp.router_id" and "not IPv4" in info.value.problem
    path.write_text(path.read_text() + 'router_id = "10.0.0.1"\n')
    assert load_config(path).bgp.router_id == "10.0.0.1"


def test_reflector_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, "")
    assert (settings.reflector, settings.reflectors, settings.full_mesh_below) == ("auto", 2, 8)
    settings = load(
        tmp_path, '[bgp]\nreflector = "never"\nreflectors = 3\nfull_mesh_below = 20\nreflector_hold = 5\n'
    )
    assert (settings.reflector, settings.reflectors, settings.full_mesh_below) == ("never", 3, 20)
    assert settings.reflector_hold == 5.0
