"""The ExaBGP supervisor against a stand-in ExaBGP (``fixtures/exabgp/fake_exabgp.py``) that runs the
real bridge: start, commands and acks, batched reloads, restart after a kill, a late ack, and stop.
Real processes and real time, no root; the real ExaBGP is in ``test_bgp_exabgp_netns.py``."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import trio

from agent.bgp.api import Announce, PeerState, SessionState, Withdraw
from agent.bgp.config import Neighbor
from agent.bgp.lifecycle import ReloadReason, Resync
from agent.bgp.supervisor import (
    REACTOR_SPEED,
    CommandFailed,
    CommandTimeout,
    ExaBGPSupervisor,
    NotConnected,
    SpeakerDown,
    SpeakerUp,
    SupervisorEvent,
    SupervisorOptions,
    _descends_from,
)
from labs.kit.wait import eventually_blocking

FAKE = Path(__file__).parent / "fixtures" / "exabgp" / "fake_exabgp.py"
TIMEOUT = 20.0


def neighbor(address: str) -> Neighbor:
    return Neighbor(address, 65000, 65001, "198.18.0.2", local_address="198.18.0.2")


@dataclass
class Harness:
    sup: ExaBGPSupervisor
    log: Path
    events: list[SupervisorEvent] = field(default_factory=list)
    resyncs: list[Resync] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(TIMEOUT):
            while not predicate():
                self.changed = trio.Event()
                await self.changed.wait()

    def commands(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def ups(self, address: str) -> int:
        return sum(
            1
            for e in self.events
            if isinstance(e, PeerState) and e.peer.address == address and e.state is SessionState.UP
        )


@asynccontextmanager
async def running(
    tmp_path: Path,
    neighbors: list[Neighbor],
    ack_timeout: float = 2.0,
    env: dict[str, str] | None = None,
    reload_attempts: int = 20,
) -> AsyncIterator[Harness]:
    log = tmp_path / "commands.log"
    options = SupervisorOptions(
        state_dir=tmp_path / "state",
        exabgp_argv=(sys.executable, str(FAKE)),
        env={"FAKE_EXABGP_LOG": str(log), **(env or {})},
        ack_timeout=ack_timeout,
        reload_window=0.3,
        reload_retry_initial=0.05,
        reload_retry_max=0.1,
        reload_attempts=reload_attempts,
        backoff_initial=0.1,
        stop_timeout=3.0,
    )
    h: Harness

    async def on_resync(resync: Resync) -> None:
        h.resyncs.append(resync)
        h.changed.set()

    h = Harness(ExaBGPSupervisor(options, neighbors, on_resync=on_resync), log)

    async def collect() -> None:
        async for event in h.sup.events:
            h.events.append(event)
            h.changed.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(h.sup.run)
        nursery.start_soon(collect)
        try:
            yield h
        finally:
            nursery.cancel_scope.cancel()


async def test_start_commands_acks_and_stop(tmp_path: Path) -> None:
    async with running(tmp_path, [neighbor("198.18.0.1")]) as h:
        await h.wait_for(lambda: bool(h.resyncs) and h.ups("198.18.0.1") == 1)
        assert h.resyncs[0] == Resync(ReloadReason.START, frozenset({"198.18.0.1"}))
        assert isinstance(h.events[0], SpeakerUp) and not h.events[0].restart
        pid = h.sup.pid
        assert pid is not None
        await h.sup.send(Announce("100.96.0.10/32", neighbor="198.18.0.1"))
        await h.sup.send(Withdraw("100.96.0.10/32"))
        with pytest.raises(CommandFailed):
            await h.sup.send(Announce("100.96.0.10/32", neighbor="198.51.100.66"))
        assert h.commands() == [
            "neighbor 198.18.0.1 announce route 100.96.0.10/32 next-hop self origin igp",
            "withdraw route 100.96.0.10/32",
            "neighbor 198.51.100.66 announce route 100.96.0.10/32 next-hop self origin igp",
        ]
        assert stat.S_IMODE(h.sup.config_path.stat().st_mode) == 0o600  # it may hold MD5 passwords
        assert stat.S_IMODE(h.sup.socket_path.stat().st_mode) == 0o600
    # cancelled: ExaBGP was stopped and reaped, the socket file is gone
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not h.sup.socket_path.exists()


async def test_neighbor_changes_are_batched_into_one_reload(tmp_path: Path) -> None:
    async with running(tmp_path, [neighbor("198.18.0.1")]) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        h.sup.set_neighbors([neighbor("198.18.0.1"), neighbor("198.18.0.3")])
        h.sup.set_neighbors([neighbor("198.18.0.1"), neighbor("198.18.0.3"), neighbor("198.18.0.5")])
        await h.wait_for(lambda: len(h.resyncs) == 2 and h.ups("198.18.0.5") == 1)
        assert h.commands().count("reload") == 1
        assert h.resyncs[1] == Resync(ReloadReason.RELOAD, frozenset({"198.18.0.3", "198.18.0.5"}))
        assert h.ups("198.18.0.1") == 1  # the unchanged neighbor was not touched
        text = h.sup.config_path.read_text()
        assert all(f"neighbor {a} {{" in text for a in ("198.18.0.1", "198.18.0.3", "198.18.0.5"))


async def test_a_dropped_reload_is_sent_again_before_the_resync(tmp_path: Path) -> None:
    """ExaBGP 5.0.15 acks a reload and may then drop it: the removed neighbor would stay a peer."""
    env = {"FAKE_EXABGP_DROP_RELOADS": "2"}
    async with running(tmp_path, [neighbor("198.18.0.1"), neighbor("198.18.0.3")], env=env) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        h.sup.set_neighbors([neighbor("198.18.0.1"), neighbor("198.18.0.5")])
        await h.wait_for(lambda: len(h.resyncs) == 2)
        assert h.resyncs[1] == Resync(
            ReloadReason.RELOAD, frozenset({"198.18.0.5"}), frozenset({"198.18.0.3"})
        )
        commands = h.commands()
        assert commands.count("reload") == 3  # two dropped, the third applied
        assert commands[-1] == "show neighbor summary"  # the resync waited for the confirmation
        assert h.ups("198.18.0.5") == 1
        assert not any(isinstance(e, SpeakerDown) for e in h.events)


async def test_a_dropped_reload_that_only_changes_a_neighbor_is_sent_again(tmp_path: Path) -> None:
    """The peer list is the same before and after: only the stamp in ExaBGP's configuration tells."""
    env = {"FAKE_EXABGP_DROP_RELOADS": "1"}
    async with running(tmp_path, [neighbor("198.18.0.1"), neighbor("198.18.0.3")], env=env) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        h.sup.set_neighbors([neighbor("198.18.0.1"), replace(neighbor("198.18.0.3"), hold_time=30)])
        await h.wait_for(lambda: len(h.resyncs) == 2)
        assert h.resyncs[1] == Resync(ReloadReason.RELOAD, frozenset({"198.18.0.3"}))
        assert h.commands().count("reload") == 2  # the first dropped, the second applied
        text = h.sup.config_path.read_text()
        assert 'description "[g1]";' in text  # 198.18.0.1 unchanged: its stamp from the start
        assert 'description "[g2]";' in text  # 198.18.0.3 changed by the reload


async def test_a_reload_never_applied_ends_the_life(tmp_path: Path) -> None:
    """The fresh start that follows reads the plan from the config file."""
    env = {"FAKE_EXABGP_DROP_RELOADS": "3"}
    async with running(
        tmp_path, [neighbor("198.18.0.1"), neighbor("198.18.0.3")], env=env, reload_attempts=3
    ) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        h.sup.set_neighbors([neighbor("198.18.0.1")])
        await h.wait_for(lambda: len(h.resyncs) == 2)
        down = next(e for e in h.events if isinstance(e, SpeakerDown))
        assert "did not apply a reload" in down.reason
        assert h.resyncs[1] == Resync(ReloadReason.RESTART, frozenset({"198.18.0.1"}))
        assert "198.18.0.3" not in h.sup.config_path.read_text()


async def test_killed_exabgp_is_restarted_and_resynced(tmp_path: Path) -> None:
    async with running(tmp_path, [neighbor("198.18.0.1")]) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        first = h.sup.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await h.wait_for(lambda: len(h.resyncs) == 2)
        assert h.resyncs[1].reason is ReloadReason.RESTART
        assert h.resyncs[1].neighbors == {"198.18.0.1"}
        kinds = [type(e).__name__ for e in h.events if isinstance(e, SpeakerUp | SpeakerDown)]
        assert kinds == ["SpeakerUp", "SpeakerDown", "SpeakerUp"]
        down = next(e for e in h.events if isinstance(e, SpeakerDown))
        assert "-9" in down.reason
        assert h.sup.pid not in (None, first)
        await h.sup.send(Announce("100.96.0.10/32"))  # the new life takes commands


async def test_an_ack_timeout_ends_the_life(tmp_path: Path) -> None:
    """A missing ack would be taken for the next command's: ExaBGP is restarted instead."""
    async with running(tmp_path, [neighbor("198.18.0.1")], ack_timeout=0.5) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        first = h.sup.pid
        with pytest.raises(CommandTimeout):
            await h.sup.send(Announce("100.96.0.10/32", neighbor="198.51.100.99"))  # never answered
        await h.wait_for(lambda: len(h.resyncs) == 2)
        down = next(e for e in h.events if isinstance(e, SpeakerDown))
        assert "no ack" in down.reason and h.sup.pid != first
        with pytest.raises(CommandFailed):  # acks match commands again
            await h.sup.send(Announce("100.96.0.12/32", neighbor="198.51.100.66"))
        await h.sup.send(Announce("100.96.0.12/32"))


async def test_a_cancelled_send_does_not_shift_the_acks(tmp_path: Path) -> None:
    async with running(tmp_path, [neighbor("198.18.0.1")]) as h:
        await h.wait_for(lambda: bool(h.resyncs))
        with trio.move_on_after(0.2):  # cancelled after the write, before its (late) ack
            await h.sup.send(Announce("100.96.0.10/32", neighbor="198.51.100.77"))
        assert "198.51.100.77" in h.commands()[-1]
        with pytest.raises(CommandFailed):
            await h.sup.send(Announce("100.96.0.11/32", neighbor="198.51.100.66"))
        await h.sup.send(Announce("100.96.0.12/32"))


async def test_send_without_exabgp_raises(tmp_path: Path) -> None:
    sup = ExaBGPSupervisor(SupervisorOptions(state_dir=tmp_path))
    with pytest.raises(NotConnected):
        await sup.send(Announce("100.96.0.10/32"))


def test_only_children_of_exabgp_count() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert _descends_from(child.pid, os.getpid())
        assert not _descends_from(os.getpid(), child.pid)
    finally:
        child.kill()
        child.wait()


AGENT_STANDIN = """
import sys, trio
from pathlib import Path
from agent.bgp.supervisor import ExaBGPSupervisor, SpeakerUp, SupervisorOptions

async def main() -> None:
    tmp = Path(sys.argv[1])
    options = SupervisorOptions(
        state_dir=tmp / "state", exabgp_argv=(sys.executable, sys.argv[2]),
        env={"FAKE_EXABGP_LOG": str(tmp / "commands.log"), "FAKE_EXABGP_OUTLIVE_API": "1"},
    )
    sup = ExaBGPSupervisor(options, [])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        async for event in sup.events:
            if isinstance(event, SpeakerUp):
                print(sup.pid, flush=True)
trio.run(main)
"""


def test_exabgp_dies_with_a_killed_agent(tmp_path: Path) -> None:
    """kill -9 of the agent leaves no ExaBGP behind announcing routes nobody checks any more."""
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT_STANDIN, str(tmp_path), str(FAKE)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    exabgp: int | None = None
    try:
        assert agent.stdout is not None
        exabgp = int(agent.stdout.readline())
        os.kill(exabgp, 0)  # running
        agent.kill()
        agent.wait(timeout=TIMEOUT)
        pid = exabgp

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # Reaped by init once it exits; until then it may linger as a zombie, which counts as gone.
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")

        eventually_blocking(
            gone, what=f"ExaBGP (pid {exabgp}) to exit after its agent was killed", timeout=TIMEOUT, poll=0.05
        )
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
        if exabgp is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(exabgp, signal.SIGKILL)


def test_exabgp_reactor_runs_slower_than_its_default_unless_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ExaBGP's default reactor speed wakes it 100 times a second; ours 10, and an operator's
    ``exabgp_reactor_speed`` in the agent's environment still wins."""
    sup = ExaBGPSupervisor(SupervisorOptions(state_dir=tmp_path), [])
    monkeypatch.delenv("exabgp_reactor_speed", raising=False)
    assert sup._env()["exabgp_reactor_speed"] == REACTOR_SPEED == "10.0"
    monkeypatch.setenv("exabgp_reactor_speed", "1.0")
    assert sup._env()["exabgp_reactor_speed"] == "1.0"
