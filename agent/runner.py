"""The composition root: wires config, keyring, gossip and the HTTP API into one Trio nursery tree.

Shutdown: SIGTERM or SIGINT makes the node leave the cluster gracefully (so peers mark it "left"
at once instead of suspecting it), then everything is cancelled and ``run_agent`` returns, so the
process exits 0. With BGP on, the speaker drains first (every route re-announced with
GRACEFUL_SHUTDOWN, withdrawn after ``bgp.drain_time``) while the node is still a member, so peers
move traffic away before gossip and the sessions say it is gone. A second signal during the drain or
the leave skips the rest of it.

On disk, under ``cfg.state_dir``: the API token, the cluster objects (SQLite), the members gossip
knew (``members.json``, joined on the next start besides the seeds, so an agent without seeds finds
the cluster again after a restart), the WireGuard key and mesh-address claim, and ExaBGP's config.
Nothing else is written, but for the keyring file (``keyring_file``, wherever the config puts it),
which ``wiremesh keys`` rewrites (:mod:`agent.keyfile`) so that a rotation outlives a restart.
"""

from __future__ import annotations

import errno
import logging
import random
import signal
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import trio

from agent.announce.driver import Announcer
from agent.bgp.speaker import BgpSpeaker, WireStatus, build_speaker
from agent.cluster.replication import ObjectReplicator, wall_ms
from agent.cluster.storage import SqliteObjectStorage, StorageError
from agent.cluster.store import ObjectStore
from agent.config.loader import AgentConfig, HostPort, load_keyring
from agent.health.execpolicy import ExecPolicy
from agent.health.runner import HealthRunner
from agent.http.advertise import api_address
from agent.http.app import create_app, serve_api
from agent.http.auth import load_or_create_token
from agent.keyfile import KeyFileStore
from agent.published import API, API_KEY
from common.address import Address, format_address
from common.memory import release_free_memory
from gossip import (
    SNAPSHOT_FILE,
    GossipNode,
    MemberInfo,
    Remembered,
    Sealer,
    Swim,
    join_targets,
    open_udp_tcp_transport,
    read_snapshot,
)
from transit import TransitDriver

log = logging.getLogger("wiremesh.agent")

OBJECTS_DB = "objects.db"


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What a started agent reports to whoever started it (tests, labs): where to reach it."""

    name: str
    gossip_addr: Address
    advertise_addr: Address
    api_port: int


@dataclass(frozen=True, slots=True)
class _NamedNode:
    """The API's view of the node: the node itself plus the name it was configured with."""

    node: GossipNode
    name: str

    def members(self) -> list[MemberInfo]:
        return self.node.members()

    def snapshot(self) -> dict[str, Any]:
        return self.node.snapshot()


async def resolve_seeds(seeds: Sequence[HostPort], own: Address) -> list[Address]:
    """Seeds as IP addresses of our own family, skipping ourselves and names that do not resolve."""
    family = socket.AF_INET6 if ":" in own[0] else socket.AF_INET
    resolved: list[Address] = []
    for seed in seeds:
        try:
            infos = await trio.socket.getaddrinfo(seed.host, seed.port, family=family, type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("cannot resolve seed %s: %s", seed, exc)
            continue
        sockaddr = infos[0][4]
        addr = (str(sockaddr[0]), int(sockaddr[1]))
        if addr != own and addr not in resolved:
            resolved.append(addr)
    return resolved


async def _join(node: GossipNode, cfg: AgentConfig, own: Address, remembered: Sequence[Remembered]) -> None:
    """Join the configured seeds and the members remembered from the last run: the ones that marked
    us left never contact us again, so without seeds only the remembered ones lead back."""
    seeds = join_targets(await resolve_seeds(cfg.join, own), remembered, own)
    if not seeds:
        log.info("no seeds to join and no members remembered; waiting for other nodes to join us")
        return
    if remembered:
        log.info("joining %d member(s) remembered from the last run besides the seeds", len(remembered))
    ok = await node.join(seeds, attempts=cfg.join_attempts, retry_interval=cfg.join_retry_interval)
    if ok:
        log.info("joined the cluster", extra={"seeds": ", ".join(map(format_address, seeds))})
    else:
        log.warning(
            "could not join any seed; running alone until another node joins us",
            extra={"seeds": ", ".join(map(format_address, seeds))},
        )


async def run_agent(
    cfg: AgentConfig,
    *,
    sealer: Sealer | None = None,
    task_status: trio.TaskStatus[AgentInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run until SIGTERM/SIGINT (then leave and return) or until cancelled (then just stop)."""
    if sealer is None:
        sealer = Sealer(load_keyring(cfg), cfg.cluster)
    if sealer.keyring is None:
        log.warning("gossip encryption is OFF (insecure = true); anyone who can reach the port can join")
    token = load_or_create_token(cfg.state_dir)  # before binding anything: an unusable state dir stops us
    async with AsyncExitStack() as stack:
        signals = stack.enter_context(trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT))
        try:
            transport = await stack.enter_async_context(
                open_udp_tcp_transport(cfg.bind.host, cfg.bind.port, limits=cfg.gossip.streams)
            )
        except OSError as exc:
            raise OSError(exc.errno, f"cannot bind gossip to {cfg.bind}: {exc.strerror or exc}") from None
        storage = stack.enter_context(await _open_storage(Path(cfg.state_dir) / OBJECTS_DB))
        records = await trio.to_thread.run_sync(storage.load)
        snapshot_path = Path(cfg.state_dir) / SNAPSHOT_FILE
        remembered = await read_snapshot(snapshot_path, logger=log)
        bound = transport.local_addr
        advertise = (cfg.advertise.host, cfg.advertise.port or bound[1])
        # Machines "known" to validation: every member gossip has seen, past ones included.
        store = ObjectStore(
            cfg.name,
            lambda: core.names(),
            records,
            conflict_window_ms=round(cfg.conflict_window * 1000),
            wall_ms=wall_ms(),
        )
        replicator = ObjectReplicator(store)
        core = Swim(
            cfg.gossip, cfg.name, advertise, sealer, random.Random(), trio.current_time(), shared=replicator
        )
        node = GossipNode(core, transport, keys=KeyFileStore(sealer.keyring, cfg.keyring_file))
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            await nursery.start(partial(node.keep_snapshot, snapshot_path))
            await nursery.start(partial(replicator.run, storage, node, tombstone_keep_s=cfg.tombstone_keep))
            health = HealthRunner(store, ExecPolicy.from_config(cfg), cfg.name, node.set_kv)
            announcer = Announcer(store, node, cfg.name, health)
            await nursery.start(health.run)
            await nursery.start(announcer.run)
            transit = await _start_transit(nursery, node, cfg, advertise)
            speaker = await _start_speaker(nursery, cfg, store, node, announcer, transit)
            app = create_app(
                _NamedNode(node, cfg.name),
                token=token,
                store=lambda: store,
                committed=replicator.committed,
                status=announcer if speaker is None else WireStatus(announcer, speaker),
                checks=health,
                peers=transit,
                bgp=speaker,
                keys=node,
            )
            api_port = await nursery.start(serve_api, app, str(cfg.http_listen))
            await _publish_api(node, cfg, api_port)
            log.info(
                "agent %s started: gossip on %s (advertised as %s), API on %s",
                cfg.name,
                format_address(bound),
                format_address(advertise),
                format_address((cfg.http_listen.host, api_port)),
            )
            nursery.start_soon(_join, node, cfg, advertise, remembered)
            nursery.start_soon(_after_start_up, app.state.warm_up)
            task_status.started(AgentInfo(cfg.name, bound, advertise, api_port))

            async for signum in signals:
                log.info("%s received: leaving the cluster", signal.Signals(signum).name)
                break
            with trio.CancelScope() as leave_scope:
                nursery.start_soon(_cancel_on_next_signal, signals, leave_scope)
                if speaker is not None:  # drain first (peers still route around us), then leave
                    await speaker.drain_for_shutdown()
                await node.leave(linger=cfg.gossip.leave_propagate_delay)
            nursery.cancel_scope.cancel()
    log.info("agent %s stopped", cfg.name)


async def _start_transit(
    nursery: trio.Nursery, node: GossipNode, cfg: AgentConfig, advertise: Address
) -> TransitDriver | None:
    """The WireGuard mesh, when ``[wireguard] enabled = true``: started before the API so that
    ``/v1/peers`` has something to show, and before joining so the first members see our metadata."""
    if not cfg.wireguard.enabled:
        return None
    driver = TransitDriver(node, cfg.name, Path(cfg.state_dir), cfg.wireguard, advertise_host=advertise[0])
    await nursery.start(driver.run)
    return driver


async def _start_speaker(
    nursery: trio.Nursery,
    cfg: AgentConfig,
    store: ObjectStore,
    node: GossipNode,
    announcer: Announcer,
    transit: TransitDriver | None = None,
) -> BgpSpeaker | None:
    """The BGP speaker, when ``[bgp] enabled = true``: it reacts to the announcer's decisions as they
    are published and peers with every member that runs one (see :mod:`agent.bgp.speaker`). With the
    WireGuard mesh on, it peers over mesh addresses once ours is up, and hands the routes it installs
    via peers' mesh addresses to transit for their AllowedIPs."""
    if not cfg.bgp.enabled:
        return None
    speaker = build_speaker(
        cfg.bgp,
        machine=cfg.name,
        address=cfg.advertise.host,
        state_dir=Path(cfg.state_dir),
        store=store,
        node=node,
        decisions=lambda: announcer.decisions,
        mesh=transit is not None,
        routed=transit.set_routed if transit is not None else None,
    )
    if transit is not None:
        transit.watch_mesh_address(lambda a: speaker.set_mesh_address(str(a) if a is not None else None))
    await nursery.start(speaker.run)
    return speaker


async def _after_start_up(warm_up: Callable[[], None]) -> None:
    """What start-up (spawn to ``/healthz``) need not wait for: the UI's templates compiled (blocking,
    so in a worker thread while the agent runs), then the heap start-up freed handed back to the OS
    (:func:`common.memory.release_free_memory`; ~2 MiB of RSS)."""
    await trio.to_thread.run_sync(warm_up)
    release_free_memory()


async def _publish_api(node: GossipNode, cfg: AgentConfig, port: int) -> None:
    """Where other agents reach our API (for ``/v1/machines/{name}/rib``); see :mod:`agent.http.advertise`."""
    mesh = str(cfg.wireguard.mesh_address) if cfg.wireguard.enabled and cfg.wireguard.mesh_address else None
    address = api_address(cfg.http_listen.host, port, advertise_host=cfg.advertise.host, mesh_address=mesh)
    if address is not None:
        await node.set_kv(API_KEY, API.encode(address))


async def _open_storage(path: Path) -> SqliteObjectStorage:
    """The object database, opened off the Trio thread; a bad file stops startup with one clear line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return await trio.to_thread.run_sync(SqliteObjectStorage, path)
    except StorageError as exc:
        raise OSError(errno.EIO, str(exc)) from None


async def _cancel_on_next_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.warning("%s received again: not waiting for the leave to finish", signal.Signals(signum).name)
        scope.cancel()
        return
