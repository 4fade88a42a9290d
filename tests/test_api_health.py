"""Health verdicts and announcement decisions in the API: ``GET /v1/health/checks`` and the per-machine
status of VIP and route reads, from a real :class:`Announcer` over a fake gossip view and health runner.

The scenario (also used by tests/test_cli_health.py): node-a is this machine; vip/web is assigned to
node-a..node-f and each of them is in a different situation (healthy, held, withdrawn because a peer
is healthy, machine disabled, not assigned in its own store yet, dead); node-g publishes garbage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import msgpack
import pytest
import trio
import trio.testing

from agent.announce.driver import Announcer
from agent.announce.planner import Decision, Reason, explain, to_wire
from agent.cluster.objects import Kind
from agent.cluster.replication import wall_ms
from agent.cluster.store import ObjectStore
from agent.health.verdict import Health, LocalVerdict, Verdict
from agent.http.app import create_app
from agent.logs import rfc3339
from agent.published import ANNOUNCE_KEY, HEALTH_KEY
from gossip.events import MemberEvent, MemberInfo, MemberState

TOKEN = "health-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
WALL = 1_700_000_000.0
CHECK = {"type": "tcp", "target": ":6443", "interval": 5, "timeout": 1}
MACHINES = ["node-a", "node-b", "node-c", "node-d", "node-e", "node-f"]
HOLD_LEFT = 20.5  # seconds node-b's hold has left when the scenario is built

# Published verdicts (wall-clock times, as a runner publishes them).
A_WEB = Verdict("healthy", WALL - 100, 7, True, 0.0021, None, WALL - 2)
B_WEB = Verdict("unhealthy", WALL - 5, 3, False, 1.0, "connect: connection refused " + "x" * 80, WALL - 1)
C_WEB = Verdict("unhealthy", WALL - 8, 4, False, 0.5, "timed out", WALL - 1)
F_WEB = Verdict("healthy", WALL - 500, 9, True, 0.003, None, WALL - 400)


class FakeGossip:
    """The gossip node as both the API (NodeView) and the announcer (GossipView) read it."""

    name = "node-a"

    def __init__(self, members: list[MemberInfo]) -> None:
        self.member_list = members

    def members(self) -> list[MemberInfo]:
        return list(self.member_list)

    def snapshot(self) -> dict[str, Any]:
        return {}

    def subscribe(self, max_buffer: int = 1024) -> trio.MemoryReceiveChannel[MemberEvent]:
        _send, receive = trio.open_memory_channel[MemberEvent](max_buffer)
        return receive

    async def set_kv(self, key: str, value: bytes | None) -> None:
        pass


@dataclass
class FakeHealth:
    """This machine's health runner: verdicts as published (wall clock)."""

    mine: dict[str, Verdict] = field(default_factory=dict)

    def local(self) -> dict[str, LocalVerdict]:
        return {k: LocalVerdict(Health(v.state), v.since) for k, v in self.mine.items()}

    def verdicts(self) -> dict[str, Verdict]:
        return dict(self.mine)

    def on_change(self, listener: Callable[[], None]) -> None:
        pass


@dataclass
class Scenario:
    gossip: FakeGossip
    health: FakeHealth
    store: ObjectStore
    announcer: Announcer
    now: float  # the Trio clock when it was built


def member(name: str, state: MemberState, **kv: bytes) -> MemberInfo:
    values: dict[str, tuple[int, bytes | None]] = {key: (1, value) for key, value in kv.items()}
    return MemberInfo(name, ("127.0.0.1", 7000), 1, state, 0.0, b"", values)


def health_value(verdicts: dict[str, Verdict]) -> bytes:
    packed: bytes = msgpack.packb({k: v.to_wire() for k, v in verdicts.items()}, use_bin_type=True)
    return packed


def announce_value(decisions: dict[str, Decision], now: float) -> bytes:
    packed: bytes = msgpack.packb(to_wire(decisions, now), use_bin_type=True)
    return packed


def republish(s: Scenario, machine: str, decisions: dict[str, Decision]) -> None:
    """``machine`` publishes a new announce value, with holds as the seconds they have left now."""
    for i, m in enumerate(s.gossip.member_list):
        if m.name == machine:
            version = m.kv[ANNOUNCE_KEY][0] + 1
            kv = m.kv | {ANNOUNCE_KEY: (version, announce_value(decisions, trio.current_time()))}
            s.gossip.member_list[i] = replace(m, kv=kv)


def build_scenario() -> Scenario:
    """Call inside Trio: the decisions' holds are on the Trio clock."""
    now = trio.current_time()
    decided = {
        "node-b": {"vip/web": Decision(True, Reason.HELD, now + HOLD_LEFT)},
        "node-c": {
            "vip/web": Decision(False, Reason.WITHDRAWN_PEER_HEALTHY, peers=("node-a",)),
            "vip/api": Decision(True, Reason.NO_CHECK),  # its store still lists it for vip/api
        },
        "node-d": {"vip/web": Decision(False, Reason.WITHDRAWN_MACHINE_DISABLED)},
        "node-e": {"vip/web": Decision(False, Reason.WITHDRAWN_NOT_ASSIGNED)},
        "node-f": {"vip/web": Decision(True, Reason.HEALTHY)},  # dead: must not count
    }
    verdicts = {"node-b": {"vip/web": B_WEB}, "node-c": {"vip/web": C_WEB}, "node-f": {"vip/web": F_WEB}}
    members = [member("node-a", MemberState.ALIVE)]
    for name in MACHINES[1:]:
        kv = {ANNOUNCE_KEY: announce_value(decided[name], now)}
        if name in verdicts:
            kv[HEALTH_KEY] = health_value(verdicts[name])
        members.append(member(name, MemberState.DEAD if name == "node-f" else MemberState.ALIVE, **kv))
    garbage = {HEALTH_KEY: b"\xc1", ANNOUNCE_KEY: msgpack.packb({"v": 99})}
    members.append(member("node-g", MemberState.ALIVE, **garbage))
    gossip = FakeGossip(members)
    store = ObjectStore("node-a", lambda: {m.name for m in gossip.members()})
    store.create(
        Kind.VIP,
        {"name": "web", "address": "100.96.0.1", "machines": MACHINES, "health_check": CHECK, "holdoff": 30},
        wall_ms(),
    )
    store.create(Kind.VIP, {"name": "api", "address": "100.96.0.2", "machines": ["node-b"]}, wall_ms())
    store.create(Kind.ROUTE, {"name": "lan", "prefix": "100.64.7.0/24", "machines": ["node-a"]}, wall_ms())
    store.patch(Kind.MACHINE, "node-d", {"enabled": False}, wall_ms())
    health = FakeHealth({"vip/web": A_WEB})
    announcer = Announcer(store, gossip, "node-a", health)
    announcer.decisions = {
        "vip/web": Decision(True, Reason.HEALTHY),
        "vip/api": Decision(False, Reason.WITHDRAWN_NOT_ASSIGNED),
        "route/lan": Decision(True, Reason.NO_CHECK),
    }
    return Scenario(gossip, health, store, announcer, now)


@pytest.fixture
async def env() -> AsyncIterator[tuple[httpx.AsyncClient, Scenario]]:
    """The wall clock moves with the Trio clock, WALL at the start. Tests that use it take
    ``mock_clock`` too: pytest-trio runs a test on a mock clock only when the test itself takes it."""
    s = build_scenario()
    app = create_app(
        s.gossip,
        token=TOKEN,
        store=lambda: s.store,
        status=s.announcer,
        wall_clock=lambda: WALL + trio.current_time() - s.now,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as client:
        yield client, s


def by_name(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in obj["status"]["machines"]}


# --- GET /v1/health/checks ---------------------------------------------------------------------------


async def test_every_machines_verdicts_with_wall_clock_times(
    env: tuple[httpx.AsyncClient, Scenario],
    mock_clock: trio.testing.MockClock,
) -> None:
    client, _ = env
    response = await client.get("/v1/health/checks")
    assert response.status_code == 200
    rows = response.json()
    # Sorted by machine; node-g's garbage is skipped; dead node-f's last verdict shows, marked dead.
    assert [(r["machine"], r["object"], r["member"], r["state"]) for r in rows] == [
        ("node-a", "vip/web", "alive", "healthy"),
        ("node-b", "vip/web", "alive", "unhealthy"),
        ("node-c", "vip/web", "alive", "unhealthy"),
        ("node-f", "vip/web", "dead", "healthy"),
    ]
    assert rows[1] == {
        "machine": "node-b",
        "member": "alive",
        "object": "vip/web",
        "state": "unhealthy",
        "since": rfc3339(WALL - 5),
        "for_seconds": 5.0,
        "consecutive": 3,
        "last_ok": False,
        "last_latency_ms": 1000.0,
        "last_error": B_WEB.error,
        "checked_at": rfc3339(WALL - 1),
    }
    assert rows[0]["last_latency_ms"] == 2.1 and rows[0]["last_error"] is None


async def test_for_seconds_grows_with_the_wall_clock(
    env: tuple[httpx.AsyncClient, Scenario], mock_clock: trio.testing.MockClock
) -> None:
    client, _ = env
    mock_clock.jump(60)
    rows = (await client.get("/v1/health/checks", params={"machine": "node-a"})).json()
    assert [(r["since"], r["for_seconds"]) for r in rows] == [(rfc3339(WALL - 100), 160.0)]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"machine": "node-c"}, [("node-c", "vip/web")]),
        ({"machine": "node-e"}, []),  # known, publishes no verdicts
        ({"object": "vip/web", "machine": "node-a"}, [("node-a", "vip/web")]),
        ({"object": "vip/api"}, []),  # exists, no check anywhere
        ({"object": "route/lan"}, []),
    ],
)
async def test_filters(
    env: tuple[httpx.AsyncClient, Scenario],
    mock_clock: trio.testing.MockClock,
    params: dict[str, str],
    expected: list[tuple[str, str]],
) -> None:
    client, _ = env
    response = await client.get("/v1/health/checks", params=params)
    assert response.status_code == 200
    assert [(r["machine"], r["object"]) for r in response.json()] == expected


async def test_object_filter_selects_one_object(
    env: tuple[httpx.AsyncClient, Scenario], mock_clock: trio.testing.MockClock
) -> None:
    client, s = env
    s.health.mine["route/lan"] = A_WEB
    rows = (await client.get("/v1/health/checks", params={"object": "route/lan"})).json()
    assert [(r["machine"], r["object"]) for r in rows] == [("node-a", "route/lan")]
    everything = (await client.get("/v1/health/checks")).json()
    assert ("node-a", "route/lan") in [(r["machine"], r["object"]) for r in everything]


@pytest.mark.parametrize(
    ("params", "status", "loc", "msg"),
    [
        ({"machine": "ghost"}, 404, ["query", "machine"], "no machine named 'ghost'"),
        ({"object": "vip/nope"}, 404, ["query", "object"], "no vip named 'nope'"),
        ({"object": "route/web"}, 404, ["query", "object"], "no route named 'web'"),
        ({"object": "web"}, 422, ["query", "object"], "expected vip/NAME or route/NAME, got 'web'"),
        ({"object": "vip/"}, 422, ["query", "object"], "expected vip/NAME or route/NAME, got 'vip/'"),
        ({"object": "machine/node-a"}, 422, ["query", "object"], None),
        ({"object": "policy-set/x"}, 422, ["query", "object"], None),
    ],
)
async def test_bad_filters_name_the_field(
    env: tuple[httpx.AsyncClient, Scenario],
    mock_clock: trio.testing.MockClock,
    params: dict[str, str],
    status: int,
    loc: list[str],
    msg: str | None,
) -> None:
    client, _ = env
    response = await client.get("/v1/health/checks", params=params)
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"]
    assert [d["loc"] for d in body["detail"]] == [loc]
    if msg is not None:
        assert body["detail"][0]["msg"] == msg


async def test_health_checks_need_the_token(
    env: tuple[httpx.AsyncClient, Scenario], mock_clock: trio.testing.MockClock
) -> None:
    client, _ = env
    for headers in ({"authorization": ""}, {"authorization": "Bearer wrong"}):
        response = await client.get("/v1/health/checks", headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"error", "detail"}


async def test_without_a_status_provider_there_are_no_verdicts() -> None:
    store = ObjectStore("node-a", lambda: {"node-a"})
    store.create(Kind.VIP, {"name": "web", "address": "100.96.0.1", "machines": ["node-a"]}, wall_ms())
    gossip = FakeGossip([member("node-a", MemberState.ALIVE)])
    app = create_app(gossip, token=TOKEN, store=lambda: store, wall_clock=lambda: WALL)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent", headers=AUTH) as client:
        assert (await client.get("/v1/health/checks")).json() == []
        machines = (await client.get("/v1/vips/web")).json()["status"]["machines"]
    assert machines == [
        {
            "name": "node-a",
            "assigned": True,
            "health": "unknown",
            "announcing": False,
            "member": "alive",
            "check": None,
            "decision": None,
        }
    ]


# --- per-machine status in VIP and route reads ------------------------------------------------------


async def test_vip_read_shows_each_machines_verdict_and_decision(
    env: tuple[httpx.AsyncClient, Scenario],
    mock_clock: trio.testing.MockClock,
) -> None:
    client, _ = env
    vip = (await client.get("/v1/vips/web")).json()
    status = vip["status"]
    assert status["announced_by"] == ["node-a", "node-b"]  # node-f is dead: it announces nothing
    machines = by_name(vip)
    assert list(machines) == MACHINES  # assigned ones, in the VIP's order

    a = machines["node-a"]
    assert (a["assigned"], a["member"], a["health"], a["announcing"]) == (True, "alive", "healthy", True)
    assert a["check"]["state"] == "healthy" and a["check"]["consecutive"] == 7
    assert a["decision"] == {
        "announce": True,
        "reason": "healthy",
        "held_until": None,
        "held_seconds_left": None,
        "peers": [],
        "explanation": explain(Decision(True, Reason.HEALTHY)),
    }

    b = machines["node-b"]
    assert (b["health"], b["announcing"]) == ("unhealthy", True)
    assert b["check"]["last_error"] == B_WEB.error
    assert b["decision"]["reason"] == "held" and b["decision"]["announce"] is True
    # The hold's end travelled as seconds left; here it is this node's wall clock plus those seconds.
    assert b["decision"]["held_seconds_left"] == HOLD_LEFT
    assert b["decision"]["held_until"] == rfc3339(WALL + HOLD_LEFT)
    assert b["decision"]["explanation"].startswith("announced (held): the health check fails here")
    assert f"kept for {HOLD_LEFT:.1f} s more" in b["decision"]["explanation"]

    c = machines["node-c"]
    assert c["decision"]["reason"] == "withdrawn_peer_healthy" and c["decision"]["peers"] == ["node-a"]
    assert "node-a is alive and healthy" in c["decision"]["explanation"]
    assert machines["node-d"]["decision"]["reason"] == "withdrawn_machine_disabled"
    assert machines["node-e"]["decision"]["reason"] == "withdrawn_not_assigned"
    assert machines["node-e"]["check"] is None and machines["node-e"]["health"] == "unknown"

    f = machines["node-f"]
    assert (f["member"], f["announcing"], f["decision"]) == ("dead", False, None)
    assert f["check"]["state"] == "healthy"  # its last verdict, beside its member state

    # The same views in the list and in the machine's own page.
    assert [v for v in (await client.get("/v1/vips")).json() if v["name"] == "web"] == [vip]
    machine = (await client.get("/v1/machines/node-b")).json()
    assert [v["status"] for v in machine["vips"] if v["name"] == "web"] == [status]


async def test_a_hold_counts_down_against_a_fixed_wall_clock_end(
    env: tuple[httpx.AsyncClient, Scenario], mock_clock: trio.testing.MockClock
) -> None:
    client, s = env
    s.announcer.decisions["vip/web"] = Decision(True, Reason.HELD, s.now + 12)  # this machine's own hold
    mock_clock.jump(5)
    machines = by_name((await client.get("/v1/vips/web")).json())
    assert machines["node-a"]["decision"]["held_seconds_left"] == 7.0
    assert machines["node-a"]["decision"]["held_until"] == rfc3339(WALL + 12)
    # A peer's hold is as fresh as its latest announce value: the fake node-b has not republished.
    assert machines["node-b"]["decision"]["held_seconds_left"] == HOLD_LEFT
    assert machines["node-b"]["decision"]["held_until"] == rfc3339(WALL + 5 + HOLD_LEFT)
    republish(s, "node-b", {"vip/web": Decision(True, Reason.HELD, s.now + HOLD_LEFT)})
    machines = by_name((await client.get("/v1/vips/web")).json())
    assert machines["node-b"]["decision"]["held_seconds_left"] == HOLD_LEFT - 5
    assert machines["node-b"]["decision"]["held_until"] == rfc3339(WALL + HOLD_LEFT)
    mock_clock.jump(30)  # past the end: never a negative time left
    machines = by_name((await client.get("/v1/vips/web")).json())
    assert machines["node-a"]["decision"]["held_seconds_left"] == 0.0
    assert machines["node-a"]["decision"]["held_until"] == rfc3339(WALL + 35)


async def test_a_machine_announcing_what_it_is_not_assigned_is_listed(
    env: tuple[httpx.AsyncClient, Scenario],
    mock_clock: trio.testing.MockClock,
) -> None:
    client, _ = env
    vip = (await client.get("/v1/vips/api")).json()
    assert vip["status"]["announced_by"] == ["node-c"]
    machines = by_name(vip)
    assert [(n, m["assigned"], m["announcing"]) for n, m in machines.items()] == [
        ("node-b", True, False),
        ("node-c", False, True),
    ]
    assert machines["node-b"]["decision"] is None  # node-b published nothing about vip/api
    assert machines["node-c"]["decision"]["reason"] == "no_check"


async def test_route_read_has_the_same_status(
    env: tuple[httpx.AsyncClient, Scenario], mock_clock: trio.testing.MockClock
) -> None:
    client, _ = env
    route = (await client.get("/v1/routes/lan")).json()
    (lan,) = route["status"]["machines"]
    assert (lan["name"], lan["announcing"], lan["check"]) == ("node-a", True, None)
    assert lan["decision"]["reason"] == "no_check"
    assert lan["decision"]["explanation"] == explain(Decision(True, Reason.NO_CHECK))
