"""Session status from ExaBGP's events, and which paths a session going down invalidates."""

from __future__ import annotations

from pathlib import Path

from agent.bgp.api import Ack, ApiPeer, Event, Notification, PeerState, SessionState, Text, parse_line
from agent.bgp.status import SessionTable

FIXTURES = Path(__file__).parent / "fixtures" / "exabgp"


def events(name: str) -> list[Event]:
    out: list[Event] = []
    for line in (FIXTURES / name).read_text().splitlines():
        message = parse_line(line)
        if not isinstance(message, Ack | Text):
            out.append(message)
    return out


def test_replay_of_a_real_session() -> None:
    table = SessionTable(["198.18.0.1", "2001:db8:ff::1", "198.18.1.1"])
    invalidated: dict[str, frozenset[str]] = {}
    for i, event in enumerate(events("bird_session.jsonl")):
        invalidated.update(table.apply(event, now=float(i)))
    # 198.18.0.1 went down on a Cease: what it had sent was invalidated, then it came back up
    assert invalidated["198.18.0.1"] == {"203.0.113.0/24"}
    status = {s.address: s for s in table.snapshot(now=100.0, prefixes_out={"198.18.0.1": 3})}
    r1 = status["198.18.0.1"]
    assert r1.state == "up" and r1.prefixes_in == 1 and r1.prefixes_out == 3 and r1.end_of_rib
    assert r1.last_error == "closing connection"  # after the Cease, BIRD refused one reconnection
    assert r1.uptime is not None and r1.uptime > 0
    assert status["198.18.1.1"].prefixes_in == 2  # 203.0.113.0/24 and 100.96.0.13/32
    assert status["2001:db8:ff::1"].prefixes_in == 1


def test_speaker_down_invalidates_everything() -> None:
    table = SessionTable()
    for i, event in enumerate(events("bird_session.jsonl")):
        table.apply(event, now=float(i))
    gone = table.speaker_down("exabgp exited with status -9", now=200.0)
    assert set(gone) == {"198.18.0.1", "198.18.1.1", "2001:db8:ff::1"}
    assert all(s.state == "down" and s.prefixes_in == 0 for s in table.snapshot(201.0))
    assert table.configure(["198.18.0.1"]) == {"198.18.1.1", "2001:db8:ff::1"}
    assert [s.address for s in table.snapshot(202.0)] == ["198.18.0.1"]


def test_a_removed_neighbor_is_not_brought_back_by_its_late_events() -> None:
    """Events ExaBGP sent before it let go of a neighbor (still queued when the reload's resync
    configured the table), or from a peer it failed to drop, do not list it again."""
    gone, kept = ApiPeer("198.18.0.5", "198.18.0.2", 65001, 65000), "198.18.0.1"
    table = SessionTable([kept, gone.address])
    assert table.configure([kept]) == {gone.address}
    table.apply(PeerState(gone, SessionState.CONNECTED), now=1.0)
    table.apply(Notification(gone, "receive", 6, 3), now=2.0)
    table.apply(PeerState(gone, SessionState.DOWN, "notification received (6,3)"), now=3.0)
    assert [s.address for s in table.snapshot(4.0)] == [kept]
    table.configure([kept, gone.address])  # planned again: its events count again
    table.apply(PeerState(gone, SessionState.UP), now=5.0)
    assert {s.address: s.state for s in table.snapshot(6.0)} == {kept: "idle", gone.address: "up"}


def test_a_neighbor_planned_again_counts_from_the_reload_not_from_its_confirmation() -> None:
    """Once handed to ExaBGP again, a removed neighbor's session can come up before the reload is
    confirmed and the resync configures the table: that "up" must not be lost (it stayed "idle")."""
    back, kept = ApiPeer("198.18.0.17", "198.18.0.11", 64512, 64512), "198.18.0.1"
    table = SessionTable([kept, back.address])
    table.configure([kept])  # a reflector's BIRD dropped from the plan
    table.expect([kept, back.address])  # then planned again: the reload goes out
    table.apply(PeerState(back, SessionState.UP), now=5.0)  # up before the confirmation
    table.configure([kept, back.address])  # the resync, after the reload was confirmed
    assert {s.address: s.state for s in table.snapshot(6.0)} == {kept: "idle", back.address: "up"}


def test_the_resync_of_an_older_reload_does_not_take_out_a_neighbor_planned_since() -> None:
    """Reload A removes the BIRD at 198.18.0.17 and is slow to be confirmed; meanwhile plan B puts it
    back and its session comes up; then A's resync configures the table without it. The "up" stays."""
    back, kept = ApiPeer("198.18.0.17", "198.18.0.11", 64512, 64512), "198.18.0.1"
    table = SessionTable([kept, back.address])
    table.expect([kept])  # plan A handed over
    table.expect([kept, back.address])  # plan B, before A's confirmation
    table.apply(PeerState(back, SessionState.UP), now=5.0)
    assert table.configure([kept]) == frozenset()  # A's resync: B still has it
    table.apply(PeerState(back, SessionState.UP), now=6.0)
    table.configure([kept, back.address])  # B's resync
    assert {s.address: s.state for s in table.snapshot(7.0)} == {kept: "idle", back.address: "up"}
