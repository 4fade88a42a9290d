"""Real agent processes on loopback with encrypted gossip: converge, crash, leave, refuse strangers."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labs.kit.localcluster import API_ERRORS, LocalCluster
from labs.kit.wait import eventually_blocking

pytestmark = pytest.mark.integration

# Faster than the LAN profile so the test is quick; the LAN defaults are what the benchmark measures.
FAST = {"probe_interval": 0.5, "probe_timeout": 0.25, "gossip_interval": 0.1, "suspicion_mult": 3}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(5, tmp_path / "agents", cluster="itest", gossip=FAST) as c:
        c.start_all()
        yield c


def test_five_agents_converge_detect_a_kill_and_see_a_leave(cluster: LocalCluster) -> None:
    names = list(cluster.agents)
    cluster.wait_converged(timeout=60)

    victim = names[2]
    killed = cluster.kill(victim, signal.SIGKILL)
    survivors = [n for n in names if n != victim]
    eventually_blocking(
        lambda: all(cluster.states(s)[victim] == "dead" for s in survivors),
        what=f"everyone marks {victim} dead",
        timeout=60,
        ignore=API_ERRORS,
    )
    # Every survivor logged the death as a structured JSON event, after the kill.
    deaths = {e.observer for e in cluster.all_events() if e.member == victim and e.event == "dead"}
    assert deaths == set(survivors)
    assert all(e.at >= killed for e in cluster.all_events() if e.member == victim and e.event == "dead")

    leaver = names[4]
    cluster.kill(leaver, signal.SIGTERM)
    assert cluster.wait_exit(leaver, timeout=15) == 0
    rest = [n for n in survivors if n != leaver]
    eventually_blocking(
        lambda: all(cluster.states(s)[leaver] == "left" for s in rest),
        what=f"everyone marks {leaver} left",
        timeout=30,
        ignore=API_ERRORS,
    )
    # Left is not dead: nobody suspected or killed the member that said goodbye.
    assert not [e for e in cluster.all_events() if e.member == leaver and e.event in ("suspect", "dead")]

    debug = httpx.get(
        cluster.agents[names[0]].api + "/debug/gossip", headers=cluster.api_headers(names[0]), timeout=5
    ).json()
    states = {m["name"]: m["state"] for m in debug["members"]}
    assert states == {names[0]: "alive", names[1]: "alive", victim: "dead", names[3]: "alive", leaver: "left"}
    assert debug["traffic"]["decode_failures"] == 0
    assert debug["traffic"]["auth_failures"] == 0


def test_restarted_agent_rejoins_alive_with_a_higher_incarnation(cluster: LocalCluster) -> None:
    names = list(cluster.agents)
    cluster.wait_converged(timeout=60)
    victim = names[3]
    cluster.kill(victim, signal.SIGKILL)
    cluster.wait_exit(victim)
    eventually_blocking(
        lambda: cluster.states(names[0])[victim] == "dead",
        what=f"{victim} dead",
        timeout=60,
        ignore=API_ERRORS,
    )
    cluster.start(victim)
    cluster.wait_converged(timeout=60)
    incarnations = {m["name"]: m["incarnation"] for m in cluster.members(names[0])}
    assert incarnations[victim] >= 1


def test_agent_with_another_key_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    names = list(cluster.agents)
    cluster.wait_converged(timeout=60)
    seed_port = cluster.seed.gossip_port
    with LocalCluster(
        1, tmp_path / "stranger", cluster="itest", gossip=FAST, prefix="stranger", seed_port=seed_port
    ) as stranger:  # same cluster name, its own keyring
        stranger.start_all()
        eventually_blocking(
            lambda: stranger.states("stranger1") != {},
            what="the stranger is up",
            timeout=30,
            ignore=API_ERRORS,
        )

        def refused() -> bool:
            seed = cluster.seed.name
            snapshot = httpx.get(
                cluster.seed.api + "/debug/gossip", headers=cluster.api_headers(seed), timeout=5
            ).json()
            return bool(snapshot["traffic"]["auth_failures"] > 0)

        eventually_blocking(
            refused, what="the seed refused the stranger's traffic", timeout=30, ignore=API_ERRORS
        )
        assert set(stranger.states("stranger1")) == {"stranger1"}
    assert set(cluster.states(names[0])) == set(names)


def test_bad_config_exits_2_with_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "a"\ninsecure = true\n[gossip]\nprobe_timeout = "soon"\n')
    result = subprocess.run(
        [sys.executable, "-m", "agent", "agent", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(bad) in lines[0] and "gossip.probe_timeout" in lines[0]


def test_a_vip_created_on_one_agent_is_on_every_agent_and_survives_a_restart(cluster: LocalCluster) -> None:
    names = list(cluster.agents)
    cluster.wait_converged(timeout=60)
    first = cluster.agents[names[0]]
    token_file = cluster.workdir / f"{names[0]}.state" / "api-token"
    created = subprocess.run(
        [sys.executable, "-m", "agent", "vip", "create", "web", "--address", "100.96.0.10",
         "--machine", names[1], "--machine", names[2], "--check-type", "tcp", "--check-target", ":8080",
         "--api", first.api, "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr

    def vip_on(name: str) -> dict[str, object] | None:
        agent = cluster.agents[name]
        response = httpx.get(agent.api + "/v1/vips/web", headers=cluster.api_headers(name), timeout=5)
        return response.json() if response.status_code == 200 else None

    eventually_blocking(
        lambda: all(vip_on(n) for n in names), what="every agent has the VIP", timeout=30, ignore=API_ERRORS
    )
    view = vip_on(names[4])
    assert view is not None and view["address"] == "100.96.0.10" and view["machines"] == names[1:3]

    refused = subprocess.run(
        [sys.executable, "-m", "agent", "vip", "create", "bad", "--address", "8.8.8.8",
         "--api", first.api, "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "address" in refused.stderr and "routable" in refused.stderr

    victim = names[3]
    cluster.kill(victim, signal.SIGKILL)
    cluster.wait_exit(victim)
    cluster.start(victim)
    # After a restart the VIP is there again (its own disk; test_replication checks that alone).
    eventually_blocking(
        lambda: vip_on(victim) is not None, what=f"{victim} answers", timeout=30, ignore=API_ERRORS
    )
