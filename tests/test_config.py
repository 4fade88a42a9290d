"""Config files and flags: good input, and for every class of mistake an error naming file, key and reason."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from pathlib import Path
from typing import Any

import pytest

from agent.cluster.replication import DEFAULT_TOMBSTONE_KEEP_S
from agent.config.loader import (
    AgentConfig,
    ConfigError,
    HostPort,
    load_config,
    load_keyring,
)
from common.address import format_address, split_hostport
from gossip.config import PROFILES, GossipConfig, StreamLimits
from gossip.keyring import generate_key
from transit.config import TransitConfig
from transit.endpoint import Endpoint
from transit.pathmon import PathConfig
from transit.relay import SelectorConfig


def no_detect(family: socket.AddressFamily) -> str | None:
    return None


def load(tmp_path: Path, text: str, overrides: dict[str, Any] | None = None, **kw: Any) -> AgentConfig:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    kw.setdefault("hostname", lambda: "testhost")
    kw.setdefault("detect_address", no_detect)
    return load_config(path, overrides, **kw)


def config_error(
    tmp_path: Path, text: str, overrides: dict[str, Any] | None = None, **kw: Any
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, overrides, **kw)
    return info.value


GOOD = """
name = "node-a"
bind = "127.0.0.1:7000"
advertise = "127.0.0.2:7001"
join = ["127.0.0.3:7002", "127.0.0.4", "seed.example"]
join_attempts = 3
join_retry_interval = 1
keyring_file = "keys/ring"
cluster = "prod"
http_listen = "127.0.0.1:8000"
state_dir = "state"
log_format = "json"
log_level = "debug"
tombstone_keep = 3600
allow_exec_checks = true
exec_check_paths = ["/usr/local/bin/check-web", "/opt/checks/db check"]

[gossip]
probe_interval = 2
probe_timeout = 0.75
disable_tcp_pings = true
"""


def test_good_file(tmp_path: Path) -> None:
    cfg = load(tmp_path, GOOD)
    assert cfg.name == "node-a"
    assert cfg.bind == HostPort("127.0.0.1", 7000)
    assert cfg.advertise == HostPort("127.0.0.2", 7001)
    assert cfg.join == (
        HostPort("127.0.0.3", 7002),
        HostPort("127.0.0.4", 7946),
        HostPort("seed.example", 7946),
    )
    assert cfg.join_attempts == 3
    assert cfg.join_retry_interval == 1.0 and isinstance(cfg.join_retry_interval, float)
    # Relative paths in a file are relative to the file, not to wherever the agent was started.
    assert cfg.keyring_file == tmp_path / "keys" / "ring"
    assert cfg.state_dir == tmp_path / "state"
    assert not cfg.insecure
    assert cfg.cluster == "prod"
    assert cfg.http_listen == HostPort("127.0.0.1", 8000)
    assert (cfg.log_format, cfg.log_level) == ("json", "debug")
    assert cfg.tombstone_keep == 3600.0 and isinstance(cfg.tombstone_keep, float)
    assert cfg.allow_exec_checks
    assert cfg.exec_check_paths == ("/usr/local/bin/check-web", "/opt/checks/db check")
    assert cfg.gossip == GossipConfig(probe_interval=2.0, probe_timeout=0.75, disable_tcp_pings=True)


def test_defaults(tmp_path: Path) -> None:
    cfg = load(tmp_path, "insecure = true\nbind = '127.0.0.1'\n")
    assert cfg.name == "testhost"
    assert cfg.bind == HostPort("127.0.0.1", 7946)
    assert cfg.advertise == cfg.bind
    assert cfg.join == ()
    assert cfg.keyring_file is None and cfg.insecure
    assert cfg.cluster == "wiremesh"
    assert cfg.http_listen == HostPort("127.0.0.1", 7947)
    assert cfg.state_dir == Path("/var/lib/wiremesh")
    assert (cfg.log_format, cfg.log_level) == ("text", "info")
    assert (cfg.join_attempts, cfg.join_retry_interval) == (5, 2.0)
    assert cfg.tombstone_keep == 604800.0 == DEFAULT_TOMBSTONE_KEEP_S  # 7 days, replication's default
    assert (cfg.allow_exec_checks, cfg.exec_check_paths) == (False, ())
    assert cfg.gossip == GossipConfig()


def test_every_gossip_field_maps(tmp_path: Path) -> None:
    changed: dict[str, Any] = {}
    for f in dataclasses.fields(GossipConfig):
        default = getattr(GossipConfig(), f.name)
        if f.name == "streams":  # a table of its own: test_stream_limits_are_configurable
            continue
        if isinstance(default, bool):
            changed[f.name] = not default
        elif isinstance(default, int):
            changed[f.name] = default + 1
        else:  # stay valid: fractions such as nack_fraction must not pass 1
            changed[f.name] = default * 1.5 if default >= 1 else default / 2
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in changed.items()]
    cfg = load(tmp_path, "insecure = true\nbind = '127.0.0.1:1'\n[gossip]\n" + "\n".join(lines) + "\n")
    assert cfg.gossip == GossipConfig(**changed)
    assert cfg.gossip != GossipConfig()


# Each body goes under a [wireguard] header (see the parametrize of test_errors_name_file_key_and_reason).
WIREGUARD_ERRORS = [
    ("enabled = true", "wireguard.mesh_address", "missing required key"),
    ("mesh_address = 'mesh-a'", "wireguard.mesh_address", "not an IP address"),
    ("mesh_address = '0.0.0.0'", "wireguard.mesh_address", "cannot be a machine's mesh address"),
    ("enabled = 'yes'", "wireguard.enabled", "expected boolean"),
    ("interface = 'a-very-long-interface'", "wireguard.interface", "bad interface name"),
    ("interface = 'wg/0'", "wireguard.interface", "bad interface name"),
    ("listen_port = 70000", "wireguard.listen_port", "out of range: 70000"),
    ("endpoint = 'vpn.example.com:51820'", "wireguard.endpoint", "host must be an IP address"),
    ("endpoint = '203.0.113.7:0'", "wireguard.endpoint", "port must be 1-65535"),
    ("backend = 'ebpf'", "wireguard.backend", "must be one of auto, kernel, userspace"),
    ("wireguard_go = ' '", "wireguard.wireguard_go", "must not be empty"),
    ("persistent_keepalive = -1", "wireguard.persistent_keepalive", "out of range"),
    ("route_protocol = 2", "wireguard.route_protocol", "must be 5-255"),
    ("remove_grace = -1", "wireguard.remove_grace", ">= 0"),
    ("mesh_adress = '100.64.0.1'", "wireguard.mesh_adress", "did you mean 'wireguard.mesh_address'"),
    ("path = 1", "wireguard.path", "expected table"),
    ("[wireguard.path]\nprobe_interval = 0", "wireguard.path.probe_interval", "must be positive"),
    ("[wireguard.path]\nrise = 1.5", "wireguard.path.rise", "expected integer"),
    (
        "[wireguard.path]\nfast_probe_interval = 2.0",
        "wireguard.path.fast_probe_interval",
        "must not exceed",
    ),
    ("[wireguard.path]\nprobe_intervall = 1", "wireguard.path.probe_intervall", "did you mean"),
    (
        "[wireguard.relay]\nswitch_margin_ratio = 1.5",
        "wireguard.relay.switch_margin_ratio",
        "ratio below 1",
    ),
    ("[wireguard.relay]\nfailback_hold = -1", "wireguard.relay.failback_hold", ">= 0"),
    ("route_protocol = 200\n[bgp]", "wireguard.route_protocol", "is bgp.route_protocol too"),
]


@pytest.mark.parametrize(
    ("body", "key", "reason"),
    [
        # wrong type
        ("join_attempts = '5'", "join_attempts", "expected integer, got string '5'"),
        ("insecure = 1", "insecure", "expected boolean, got integer 1"),
        ("join = '127.0.0.1:1'", "join", "expected array, got string"),
        ("join = [1]", "join[0]", "expected string, got integer 1"),
        ("[gossip]\ndisable_tcp_pings = 1", "gossip.disable_tcp_pings", "expected boolean"),
        ("[gossip]\nindirect_checks = 1.5", "gossip.indirect_checks", "expected integer, got number 1.5"),
        ("gossip = 3", "gossip", "expected table, got integer"),
        # out of range
        ("join_attempts = 0", "join_attempts", "out of range: 0 (must be >= 1)"),
        ("join_retry_interval = 0", "join_retry_interval", "out of range: 0.0 (must be > 0.0)"),
        ("[gossip]\nprobe_timeout = 2.0", "gossip.probe_timeout", "must be shorter than probe_interval"),
        ("[gossip]\nudp_buffer_size = 100", "gossip.udp_buffer_size", "at least 512"),
        ("[gossip]\nretransmit_mult = -1", "gossip.retransmit_mult", "must not be negative"),
        ("log_format = 'xml'", "log_format", "must be one of text, json (got 'xml')"),
        ("name = 'has space'", "name", "no spaces"),
        ("name = '" + "n" * 129 + "'", "name", "too long"),
        ("name = 'a/b'", "name", "no '/'"),  # gossip's member-name rule, as for the API's machines
        ("name = '..'", "name", "must not be '.' or '..'"),
        ("name = 'rtl\u202eexe'", "name", "unprintable"),
        ("tombstone_keep = 0", "tombstone_keep", "out of range: 0.0 (must be > 0.0)"),
        ("tombstone_keep = -60", "tombstone_keep", "out of range: -60.0 (must be > 0.0)"),
        ("tombstone_keep = '7d'", "tombstone_keep", "expected number, got string '7d'"),
        ("tombstone_keep = inf", "tombstone_keep", "must be a finite number (got inf)"),
        ("tombstone_keep = nan", "tombstone_keep", "must be a finite number (got nan)"),
        ("join_retry_interval = nan", "join_retry_interval", "must be a finite number"),
        # exec checks
        ("allow_exec_checks = 'yes'", "allow_exec_checks", "expected boolean, got string 'yes'"),
        ("exec_check_paths = '/bin/true'", "exec_check_paths", "expected array, got string"),
        ("exec_check_paths = [1]", "exec_check_paths[0]", "expected string, got integer 1"),
        (
            "exec_check_paths = ['/bin/true', 'bin/check']",
            "exec_check_paths[1]",
            "must be an absolute path to an executable (got 'bin/check')",
        ),
        ("exec_check_paths = ['check-web']", "exec_check_paths[0]", "must be an absolute path"),
        ("exec_check_paths = ['']", "exec_check_paths[0]", "must be an absolute path"),
        ('exec_check_paths = ["/bin/x\\ty"]', "exec_check_paths[0]", "no control characters"),
        # bad addresses
        ("bind = '127.0.0.1:99999'", "bind", "bad port '99999'"),
        ("bind = 'example.com:1'", "bind", "host must be an IP address"),
        ("bind = '[::1:7946'", "bind", "missing ']'"),
        ("advertise = '0.0.0.0:1'", "advertise", "cannot advertise the unspecified address"),
        ("join = ['127.0.0.1:1', 'bad host!']", "join[1]", "bad address 'bad host!'"),
        ("join = ['127.0.0.1:0']", "join[0]", "port must be 1-65535"),
        ("http_listen = '127.0.0.1'", "http_listen", "missing port"),
        # unknown keys, with a hint for typos
        ("nmae = 'x'", "nmae", "unknown key (did you mean 'name'?)"),
        (
            "[gossip]\nprobe_timout = 0.1",
            "gossip.probe_timout",
            "unknown key (did you mean 'gossip.probe_timeout'?)",
        ),
        ("[transit]\nx = 1", "transit", "unknown key"),
        *[("[wireguard]\n" + body, key, reason) for body, key, reason in WIREGUARD_ERRORS],
    ],
)
def test_errors_name_file_key_and_reason(tmp_path: Path, body: str, key: str, reason: str) -> None:
    # Every case is otherwise valid, so the error can only come from ``body``.
    base = [line for line in ("insecure = true", "bind = '127.0.0.1:7946'") if not body.startswith(line[:4])]
    err = config_error(tmp_path, "\n".join([*base, body]) + "\n")
    path = tmp_path / "agent.toml"
    assert (err.source, err.key) == (str(path), key)
    assert reason in err.problem
    assert str(err).startswith(f"{path}: {key}: ")
    assert "\n" not in str(err)


def test_toml_syntax_error_gives_line(tmp_path: Path) -> None:
    err = config_error(tmp_path, "insecure = true\nbind = \n")
    assert err.source == str(tmp_path / "agent.toml")
    assert "TOML syntax error" in str(err) and "line 2" in str(err)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read config file \(No such file"):
        load_config(tmp_path / "nope.toml")


def test_insecure_without_keyring_is_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, "bind = '127.0.0.1:1'\n")
    assert err.key == "keyring_file"
    assert "missing required key" in err.problem and "insecure = true" in err.problem


def test_insecure_and_keyring_together_is_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, "bind = '127.0.0.1:1'\ninsecure = true\nkeyring_file = 'k'\n")
    assert err.key == "insecure" and "contradicts keyring_file" in err.problem


def test_flags_override_file(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        GOOD,
        {
            "bind": "127.0.0.9:9000",
            "join": ["127.0.0.8:1"],
            "name": "flagged",
            "keyring_file": "rel",
            "cluster": None,
            "tombstone_keep": 90,
        },
    )
    assert cfg.name == "flagged"
    assert cfg.bind == HostPort("127.0.0.9", 9000)
    assert cfg.advertise == HostPort("127.0.0.2", 7001)  # still from the file
    assert cfg.join == (HostPort("127.0.0.8", 1),)  # replaced, not appended
    assert cfg.keyring_file == Path("rel")  # a flag path is relative to the working directory
    assert cfg.cluster == "prod"  # None means "flag not given"
    assert cfg.tombstone_keep == 90.0
    assert cfg.exec_check_paths == ("/usr/local/bin/check-web", "/opt/checks/db check")  # from the file


def test_flags_alone(tmp_path: Path) -> None:
    cfg = load_config(
        None, {"name": "solo", "bind": "[::1]:0", "insecure": True, "http_listen": "127.0.0.1:0"}
    )
    assert (cfg.name, cfg.bind, cfg.advertise, cfg.insecure) == (
        "solo",
        HostPort("::1", 0),
        HostPort("::1", 0),
        True,
    )


def test_flag_errors_name_the_flag(tmp_path: Path) -> None:
    err = config_error(tmp_path, GOOD, {"bind": "nonsense:port", "http_listen": "x"})
    assert str(err).startswith("command line: --bind: bad address 'nonsense:port'")
    with pytest.raises(ConfigError, match=r"^command line: --keyring: missing required key"):
        load_config(None, {"bind": "127.0.0.1:1"})
    err = config_error(tmp_path, GOOD, {"tombstone_keep": 0.0})
    assert str(err) == "command line: --tombstone-keep: out of range: 0.0 (must be > 0.0)"


@pytest.mark.parametrize(("key", "value"), [("allow_exec_checks", True), ("exec_check_paths", ["/bin/sh"])])
def test_exec_checks_only_from_the_config_file(tmp_path: Path, key: str, value: Any) -> None:
    # They let cluster objects, editable from any node, run commands here: only this machine's file decides.
    err = config_error(tmp_path, "insecure = true\nbind = '127.0.0.1:1'\n", {key: value})
    assert str(err) == f"command line: {key}: can only be set in the machine's config file"


def test_ipv6(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        "insecure = true\nbind = '[::1]:7000'\nhttp_listen = '[::1]:0'\n"
        "join = ['[::1]:7001', '[fe80::1]', '::2']\n",
    )
    assert cfg.bind == HostPort("::1", 7000)
    assert cfg.advertise == cfg.bind
    assert cfg.join == (HostPort("::1", 7001), HostPort("fe80::1", 7946), HostPort("::2", 7946))
    assert str(cfg.http_listen) == "[::1]:0"
    assert format_address(("::1", 7946)) == "[::1]:7946"
    assert split_hostport("[::1]:80", None) == ("::1", 80)
    with pytest.raises(ValueError, match="expected ':port'"):
        split_hostport("[::1]80", None)


def test_advertise_defaults(tmp_path: Path) -> None:
    asked: list[socket.AddressFamily] = []

    def detect(family: socket.AddressFamily) -> str | None:
        asked.append(family)
        return "127.0.0.5" if family == socket.AF_INET else "::5"

    wildcard = load(tmp_path, "insecure = true\nbind = '0.0.0.0:7100'\n", detect_address=detect)
    assert wildcard.advertise == HostPort("127.0.0.5", 7100)
    assert load(
        tmp_path, "insecure = true\nbind = '[::]:7100'\n", detect_address=detect
    ).advertise == HostPort("::5", 7100)
    assert asked == [socket.AF_INET, socket.AF_INET6]
    # An advertise address without a port takes the bind port.
    explicit = load(
        tmp_path, "insecure = true\nbind = '0.0.0.0:7100'\nadvertise = '127.0.0.6'\n", detect_address=detect
    )
    assert explicit.advertise == HostPort("127.0.0.6", 7100)


def test_wildcard_bind_with_nothing_to_advertise_is_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, "insecure = true\n")  # default bind 0.0.0.0, detector finds nothing
    assert err.key == "advertise" and "missing required key" in err.problem and "0.0.0.0" in err.problem


def test_load_keyring(tmp_path: Path) -> None:
    (tmp_path / "ring").write_text(f"# primary first\n{generate_key()}\n\n{generate_key()}\n")
    cfg = load(tmp_path, "bind = '127.0.0.1:1'\nkeyring_file = 'ring'\n")
    keyring = load_keyring(cfg)
    assert keyring is not None and len(keyring) == 2
    assert load_keyring(dataclasses.replace(cfg, keyring_file=None, insecure=True)) is None

    (tmp_path / "ring").write_text("not-a-key\n")
    with pytest.raises(ConfigError, match=r"^keyring_file: .*ring:1: not valid base64"):
        load_keyring(cfg)


def test_a_keyring_others_can_read_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ring = tmp_path / "ring"
    ring.write_text(f"{generate_key()}\n")
    cfg = load(tmp_path, "bind = '127.0.0.1:1'\nkeyring_file = 'ring'\n")
    ring.chmod(0o600)
    with caplog.at_level("WARNING", logger="wiremesh.config"):
        load_keyring(cfg)
    assert not caplog.records
    ring.chmod(0o644)
    with caplog.at_level("WARNING", logger="wiremesh.config"):
        assert load_keyring(cfg) is not None
    assert [r.getMessage() for r in caplog.records] == [
        f"keyring file {ring} is readable by others (mode 644); chmod 600 it"
    ]


# --- [wireguard] --------------------------------------------------------------------------------------

WG_BASE = "insecure = true\nbind = '127.0.0.1:7946'\n"


def test_wireguard_is_off_by_default_and_nothing_else_changes(tmp_path: Path) -> None:
    cfg = load(tmp_path, WG_BASE)
    assert cfg.wireguard == TransitConfig() and not cfg.wireguard.enabled


def test_wireguard_section(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        WG_BASE
        + """
[wireguard]
enabled = true
interface = "wm-test0"
listen_port = 51999
mesh_address = "100.64.0.7"
endpoint = "203.0.113.7"
backend = "userspace"
wireguard_go = "/usr/local/bin/wireguard-go"
persistent_keepalive = 15
route_protocol = 200
remove_grace = 30

[wireguard.path]
down_after = 2.5
rise = 2

[wireguard.relay]
failback_hold = 5
switch_hold = 4
""",
    )
    wg = cfg.wireguard
    assert wg.enabled and wg.interface == "wm-test0" and wg.listen_port == 51999
    assert wg.mesh_address == ipaddress.IPv4Address("100.64.0.7")
    assert wg.endpoint == Endpoint.parse("203.0.113.7:51999")  # no port: the listen port
    assert (wg.backend, wg.wireguard_go) == ("userspace", "/usr/local/bin/wireguard-go")
    assert (wg.persistent_keepalive, wg.route_protocol, wg.remove_grace) == (15, 200, 30.0)
    assert wg.path == PathConfig(down_after=2.5, rise=2)
    assert wg.relay == SelectorConfig(failback_hold=5.0, switch_hold=4.0)


def test_wireguard_disabled_still_checks_what_is_written(tmp_path: Path) -> None:
    cfg = load(tmp_path, WG_BASE + "[wireguard]\ninterface = 'wg9'\n")
    assert not cfg.wireguard.enabled and cfg.wireguard.mesh_address is None
    err = config_error(tmp_path, WG_BASE + "[wireguard]\nlisten_port = 0\n")
    assert err.key == "wireguard.listen_port"


def test_wireguard_relay_opt_out(tmp_path: Path) -> None:
    assert load(tmp_path, WG_BASE).wireguard.relay_enabled
    cfg = load(tmp_path, WG_BASE + "[wireguard.relay]\nenabled = false\nswitch_hold = 3\n")
    assert not cfg.wireguard.relay_enabled and cfg.wireguard.relay == SelectorConfig(switch_hold=3.0)
    err = config_error(tmp_path, WG_BASE + "[wireguard.relay]\nenabled = 0\n")
    assert (err.key, "expected boolean" in err.problem) == ("wireguard.relay.enabled", True)


# --- one error format for every section ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("join_attempts = '5'", "join_attempts: expected integer, got string '5'"),
        ("[gossip]\nprobe_interval = 'fast'", "gossip.probe_interval: expected number, got string 'fast'"),
        (
            "[[bgp.peers]]\naddress = '198.18.0.1'\npeer_asn = 0",
            "bgp.peers[0].peer_asn: out of range: 0 (must be 1-4294967295)",
        ),
        ("[wireguard]\nlisten_port = 0", "wireguard.listen_port: out of range: 0 (must be 1-65535)"),
        (
            "[wireguard.relay]\nswitch_hold = -2",
            "wireguard.relay.switch_hold: out of range: -2.0 (must be >= 0.0)",
        ),
    ],
)
def test_every_section_reports_in_one_format(tmp_path: Path, body: str, line: str) -> None:
    err = config_error(tmp_path, WG_BASE + body + "\n")
    assert str(err) == f"{tmp_path / 'agent.toml'}: {line}"


@pytest.mark.parametrize(
    ("body", "key", "suggestion"),
    [
        ("bnid = '127.0.0.1'", "bnid", "bind"),
        ("[gossip]\ngossip_node = 2", "gossip.gossip_node", "gossip.gossip_nodes"),
        ("[bgp]\nenable = true", "bgp.enable", "bgp.enabled"),
        (
            "[[bgp.peers]]\naddress = '198.18.0.1'\npeer_asn = 1\nmultihopp = 2",
            "bgp.peers[0].multihopp",
            "bgp.peers[0].multihop",
        ),
        ("[wireguard]\nlisten_prot = 1", "wireguard.listen_prot", "wireguard.listen_port"),
        ("[wireguard.relay]\nenable = false", "wireguard.relay.enable", "wireguard.relay.enabled"),
    ],
)
def test_unknown_keys_suggest_the_closest_known_one(
    tmp_path: Path, body: str, key: str, suggestion: str
) -> None:
    err = config_error(tmp_path, WG_BASE + body + "\n")
    assert str(err) == f"{tmp_path / 'agent.toml'}: {key}: unknown key (did you mean {suggestion!r}?)"


def test_an_unknown_key_far_from_any_gets_no_suggestion(tmp_path: Path) -> None:
    assert config_error(tmp_path, WG_BASE + "[bgp]\nxyzzy = 1\n").problem == "unknown key"


def test_every_problem_of_a_file_is_reported(tmp_path: Path) -> None:
    err = config_error(
        tmp_path,
        "insecure = true\nbind = '127.0.0.1'\njoin_attempts = 0\nlog_levle = 'info'\n"
        "[gossip]\nindirect_checks = 'three'\n"
        "[[bgp.peers]]\naddress = 'nope'\npeer_asn = 65000\n"
        "[wireguard]\nbackend = 'ebpf'\n",
    )
    path = tmp_path / "agent.toml"
    assert sorted(str(err).splitlines()) == sorted(
        [
            f"{path}: join_attempts: out of range: 0 (must be >= 1)",
            f"{path}: log_levle: unknown key (did you mean 'log_level'?)",
            f"{path}: gossip.indirect_checks: expected integer, got string 'three'",
            f"{path}: bgp.peers[0].address: not an IP address: 'nope'",
            f"{path}: wireguard.backend: must be one of auto, kernel, userspace (got 'ebpf')",
        ]
    )
    assert [str(p) for p in err.problems] == str(err).splitlines()
    assert (err.source, err.key, err.problem) == (
        err.problems[0].source,
        err.problems[0].key,
        err.problems[0].problem,
    )


def test_cross_field_rules_of_one_table_are_all_reported(tmp_path: Path) -> None:
    err = config_error(
        tmp_path,
        WG_BASE + "[[bgp.peers]]\naddress = '198.18.0.1'\npeer_asn = 1\npassive = true\n"
        "[[bgp.peers]]\naddress = '198.18.0.1'\npeer_asn = 2\nlocal_address = '::1'\n",
    )
    assert [p.key for p in err.problems] == ["bgp.peers[0].passive", "bgp.peers[1].local_address"]


def test_flag_and_file_problems_are_reported_together(tmp_path: Path) -> None:
    err = config_error(tmp_path, WG_BASE + "cluster = 'a b'\n", {"tombstone_keep": -1.0})
    file_problem = "must be non-empty with no spaces or control characters (got 'a b')"
    assert set(str(err).splitlines()) == {
        "command line: --tombstone-keep: out of range: -1.0 (must be > 0.0)",
        f"{tmp_path / 'agent.toml'}: cluster: {file_problem}",
    }


def test_section_models_cover_every_core_field() -> None:
    from agent.config.model import GossipSection, StreamsSection
    from agent.config.wireguard import PathSection, RelaySection

    def names(core: Any) -> set[str]:
        return {f.name for f in dataclasses.fields(core)}

    assert set(GossipSection.model_fields) == names(GossipConfig) | {"profile"}
    assert set(StreamsSection.model_fields) == names(StreamLimits)
    assert set(PathSection.model_fields) == names(PathConfig)
    assert set(RelaySection.model_fields) == names(SelectorConfig) | {"enabled"}


def test_config_does_not_import_the_parts_that_use_it() -> None:
    code = (
        "import sys, agent.config.loader\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "[['agent', p] for p in ('bgp', 'http', 'health', 'announce', 'cli', 'runner')])\n"
        "assert not bad, bad\n"
    )
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent, timeout=60)


# --- [gossip] profiles -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lan", "wan", "local"])
def test_gossip_profiles_load(tmp_path: Path, name: str) -> None:
    cfg = load(tmp_path, WG_BASE + f"[gossip]\nprofile = '{name}'\n")
    assert cfg.gossip == PROFILES[name]


def test_lan_is_the_default_and_wan_local_differ() -> None:
    assert PROFILES["lan"] == GossipConfig()
    assert PROFILES["wan"].probe_interval > PROFILES["lan"].probe_interval
    assert PROFILES["local"].probe_timeout < PROFILES["lan"].probe_timeout


def test_gossip_keys_override_the_profile(tmp_path: Path) -> None:
    cfg = load(tmp_path, WG_BASE + "[gossip]\nprofile = 'wan'\ngossip_nodes = 6\n")
    assert cfg.gossip == dataclasses.replace(PROFILES["wan"], gossip_nodes=6)
    err = config_error(tmp_path, WG_BASE + "[gossip]\nprofile = 'wan'\nprobe_timeout = 6\n")
    assert (err.key, err.problem) == (
        "gossip.probe_timeout",
        "probe_timeout must be shorter than probe_interval",
    )


def test_an_unknown_gossip_profile_suggests_one(tmp_path: Path) -> None:
    err = config_error(tmp_path, WG_BASE + "[gossip]\nprofile = 'lcoal'\n")
    assert str(err) == (
        f"{tmp_path / 'agent.toml'}: gossip.profile: "
        "must be one of lan, wan, local (got 'lcoal') (did you mean 'local'?)"
    )


# --- [gossip.streams] ------------------------------------------------------------------------------------


def test_stream_limits_default_to_the_transports_own(tmp_path: Path) -> None:
    assert load(tmp_path, WG_BASE).gossip.streams == StreamLimits()
    assert PROFILES["lan"].streams == PROFILES["local"].streams == StreamLimits()


def test_stream_limits_are_configurable(tmp_path: Path) -> None:
    changed: dict[str, Any] = {}
    for f in dataclasses.fields(StreamLimits):
        default = getattr(StreamLimits(), f.name)
        changed[f.name] = default / 2 if isinstance(default, float) else default // 2
    changed["first_frame_timeout"] = 0.5  # below timeout's 5.0
    lines = [f"{k} = {v}" for k, v in changed.items()]
    cfg = load(tmp_path, WG_BASE + "[gossip.streams]\n" + "\n".join(lines) + "\n")
    assert cfg.gossip.streams == StreamLimits(**changed)
    assert cfg.gossip == dataclasses.replace(GossipConfig(), streams=StreamLimits(**changed))


def test_stream_limits_override_the_profile(tmp_path: Path) -> None:
    cfg = load(tmp_path, WG_BASE + "[gossip]\nprofile = 'wan'\n[gossip.streams]\nper_source = 2\n")
    assert cfg.gossip.streams == dataclasses.replace(PROFILES["wan"].streams, per_source=2)
    assert cfg.gossip.streams.timeout == PROFILES["wan"].tcp_timeout  # the server waits as long as clients


@pytest.mark.parametrize(
    ("body", "line"),
    [
        ("per_source = 0", "gossip.streams.per_source: per_source must be at least 1"),
        ("per_source = '8'", "gossip.streams.per_source: expected integer, got string '8'"),
        ("member_reserve = 300", "gossip.streams.member_reserve: member_reserve must be at least 0"),
        ("first_frame_timeout = 11.0", "gossip.streams.first_frame_timeout: first_frame_timeout must not"),
        ("timeout = 0", "gossip.streams.timeout: timeout must be positive"),
        ("buffer_budget = 10", "gossip.streams.buffer_budget: buffer_budget must hold at least one"),
        ("stranger_frame_max = -1", "gossip.streams.stranger_frame_max: stranger_frame_max must not be"),
        ("per_sourc = 2", "gossip.streams.per_sourc: unknown key (did you mean 'gossip.streams.per_source"),
    ],
)
def test_stream_limit_errors_in_the_one_format(tmp_path: Path, body: str, line: str) -> None:
    err = config_error(tmp_path, WG_BASE + "[gossip.streams]\n" + body + "\n")
    assert str(err).startswith(f"{tmp_path / 'agent.toml'}: {line}"), str(err)
    assert len(err.problems) == 1, str(err)


# --- conflict_window -------------------------------------------------------------------------------------


def test_conflict_window_defaults_to_the_stores_and_is_configurable(tmp_path: Path) -> None:
    from agent.cluster.store import DEFAULT_CONFLICT_WINDOW_MS

    assert load(tmp_path, WG_BASE).conflict_window * 1000 == DEFAULT_CONFLICT_WINDOW_MS
    assert load(tmp_path, WG_BASE + "conflict_window = 2.5\n").conflict_window == 2.5
    assert load(tmp_path, WG_BASE + "conflict_window = 0\n").conflict_window == 0.0  # records none


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("conflict_window = -1", "out of range: -1.0 (must be >= 0.0)"),
        ("conflict_window = 7200", "out of range: 7200.0 (must be <= 3600.0)"),
        ("conflict_window = '10s'", "expected number, got string '10s'"),
    ],
)
def test_conflict_window_errors_in_the_one_format(tmp_path: Path, body: str, reason: str) -> None:
    err = config_error(tmp_path, WG_BASE + body + "\n")
    assert str(err) == f"{tmp_path / 'agent.toml'}: conflict_window: {reason}"
