"""The reflector role's BIRD driver with a real BIRD 2 in a namespace of its own: started when the role
comes, reconfigured without touching unchanged sessions, restarted after a kill -9 (by its pid), stopped
when the role goes. The clients are passive sessions to addresses nobody holds: nothing is sent.

Needs root and Debian's ``bird2``; the namespace is deleted and BIRD stopped by pid, also on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.bgp.bird import BirdOptions, BirdReflector, ReflectorSession
from agent.bgp.birdconf import ReflectorSpec, clients_of
from common.backoff import RestartBackoff
from labs.kit.netns import NetnsLab
from labs.kit.proc import sh
from labs.kit.wait import eventually

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
]

ASN = 64512
RR = "198.18.0.1"


def spec(*hosts: int) -> ReflectorSpec:
    machines = [(f"m{h}", f"198.18.0.{h}", ASN) for h in hosts]
    return ReflectorSpec(RR, RR, ASN, RR, clients_of(machines))


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[str]:
    assert shutil.which("bird") and shutil.which("birdc"), "BIRD 2 is missing: make deps"
    with NetnsLab(tmp_path / "lab", bridge=False) as lab:
        name = lab.namespace("rr")
        sh("ip", "-n", name, "addr", "add", f"{RR}/32", "dev", "lo")  # no dummy links on this kernel
        yield name


async def test_bird_follows_the_role_and_its_clients(ns: str, tmp_path: Path) -> None:
    options = BirdOptions(
        state_dir=tmp_path / "state",
        bird_argv=("ip", "netns", "exec", ns, "bird"),
        apply_window=0.2,
        backoff=RestartBackoff(initial=0.2),
    )
    bird = BirdReflector(options)
    bird.set_spec(spec(10, 11))

    async def listed(count: int) -> dict[str, ReflectorSession] | None:
        found = {s.protocol: s for s in await bird.sessions()}
        return found if len(found) == count else None

    async with trio.open_nursery() as nursery:
        await nursery.start(bird.run)
        first = await eventually(lambda: listed(2), what="BIRD with two client sessions", timeout=20)
        assert {s.address for s in first.values()} == {"198.18.0.10", "198.18.0.11"}
        assert all(s.kind == "client" and s.state == "start" for s in first.values()), first
        assert oct(bird.config_path.stat().st_mode & 0o777) == "0o600"

        # A client added: one configure, the two sessions BIRD had keep their "since".
        await trio.sleep(1.1)  # BIRD's protocol times have a resolution of one second
        bird.set_spec(spec(10, 11, 12))
        third = await eventually(lambda: listed(3), what="the third session", timeout=20)
        assert {k: third[k].since for k in first} == {k: s.since for k, s in first.items()}
        assert bird.starts == 1

        # kill -9 by pid: started again after the backoff, with the same sessions.
        pid = bird.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await eventually(
            lambda: bird.starts == 2 and bird.pid not in (None, pid), what="a new BIRD", timeout=20
        )
        await eventually(lambda: listed(3), what="the sessions back after the restart", timeout=20)
        assert bird.last_error is None

        # The role handed over: BIRD stops, and stays stopped.
        second = bird.pid
        assert second is not None
        bird.set_spec(None)
        await eventually(lambda: bird.pid is None, what="BIRD stopped", timeout=20)
        with pytest.raises(ProcessLookupError):
            os.kill(second, 0)
        assert await bird.sessions() == []
        nursery.cancel_scope.cancel()
