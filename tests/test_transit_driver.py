"""The transit driver's refusals, which need neither root nor WireGuard: an agent asked for the kernel
backend on a machine without the module stops at start with one clear line."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from transit.config import TransitConfig
from transit.driver import TransitDriver, TransitError, kernel_backend_problem

pytestmark = pytest.mark.integration


class NoGossip:
    """Never reached: the backend is refused before the driver talks to gossip."""

    def members(self) -> list[object]:
        raise AssertionError("not expected")


def test_kernel_backend_problem_names_the_fix() -> None:
    problem = kernel_backend_problem()
    assert 'backend = "kernel"' in problem and 'use backend = "userspace"' in problem


async def test_the_driver_refuses_the_kernel_backend_before_touching_anything(tmp_path: Path) -> None:
    if Path("/sys/module/wireguard").exists():
        pytest.skip("this machine has the WireGuard module")
    cfg = TransitConfig(enabled=True, mesh_address=ipaddress.ip_address("100.64.0.1"), backend="kernel")
    driver = TransitDriver(NoGossip(), "a", tmp_path / "state", cfg)  # type: ignore[arg-type]
    with pytest.raises(TransitError, match="kernel"):
        await driver.run()
    assert not (tmp_path / "state").exists()  # no key was generated, nothing was started


def test_agent_with_the_kernel_backend_exits_with_one_line(tmp_path: Path) -> None:
    if Path("/sys/module/wireguard").exists():
        pytest.skip("this machine has the WireGuard module")
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""name = "a"
insecure = true
bind = "127.0.0.1:0"
http_listen = "127.0.0.1:0"
state_dir = "{tmp_path / "state"}"

[wireguard]
enabled = true
mesh_address = "100.64.0.1"
backend = "kernel"
"""
    )
    done = subprocess.run(
        [sys.executable, "-m", "agent", "agent", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("wiremesh: error: ") and "not available on this machine" in last
