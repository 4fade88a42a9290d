"""The export side without I/O: decisions -> prefixes -> export policy -> drain -> wire form."""

from __future__ import annotations

from agent.announce.planner import Decision, Reason
from agent.bgp.adjout import AdjRibOut
from agent.bgp.api import RouteAttributes
from agent.bgp.export import (
    LOCAL_ATTRIBUTES,
    Drain,
    DrainReason,
    Session,
    apply_export_policy,
    for_session,
    originated,
    vip_prefix,
    wire_attributes,
)
from agent.cluster.objects import PolicySet, Route, Vip
from agent.routing import GRACEFUL_SHUTDOWN, AsPath, PolicyChain, Prefix

ANNOUNCE = Decision(True, Reason.HEALTHY)
WITHDRAW = Decision(False, Reason.WITHDRAWN_UNHEALTHY)
VIPS = {
    "web": Vip(name="web", address="100.96.0.10", machines=["m1"]),
    "web6": Vip(name="web6", address="fd00::10", machines=["m1"]),
    "db": Vip(name="db", address="100.96.0.20", machines=["m1"]),
}
ROUTES = {"lan": Route(name="lan", prefix="100.100.1.0/24", machines=["m1"])}
EBGP = Session("198.18.0.1", local_as=64512, peer_as=65000)
IBGP = Session("198.18.0.11", local_as=64512, peer_as=64512)
EBGP6 = Session("2001:db8::1", local_as=64512, peer_as=65000)

TAG = PolicySet.model_validate(
    {
        "name": "tag",
        "rules": [
            {"match": {"prefix_list": [{"prefix": "100.96.0.20/32"}]}, "result": "reject"},
            {
                "match": {"prefix_list": [{"prefix": "100.96.0.0/16", "le": 32}]},
                "actions": {
                    "set_med": 50,
                    "communities": {"add": ["64512:100"]},
                    "as_prepend": {"asn": 64512, "count": 2},
                },
            },
        ],
        "default": "accept",
    }
)


def test_originated_follows_the_announced_decisions() -> None:
    decisions = {
        "vip/web": ANNOUNCE,
        "vip/web6": ANNOUNCE,
        "vip/db": WITHDRAW,
        "route/lan": ANNOUNCE,
        "vip/gone": ANNOUNCE,  # no such object (deleted meanwhile): nothing to send
    }
    assert originated(decisions, VIPS, ROUTES) == {
        Prefix.parse("100.96.0.10/32"): "vip/web",
        Prefix.parse("fd00::10/128"): "vip/web6",
        Prefix.parse("100.100.1.0/24"): "route/lan",
    }
    assert vip_prefix("fd00::10") == Prefix.parse("fd00::10/128")


def test_export_policy_rejects_and_rewrites() -> None:
    local = originated({"vip/web": ANNOUNCE, "vip/db": ANNOUNCE, "route/lan": ANNOUNCE}, VIPS, ROUTES)
    out = apply_export_policy(local, PolicyChain.of([TAG]))
    assert Prefix.parse("100.96.0.20/32") not in out  # rejected: not sent at all
    web = out[Prefix.parse("100.96.0.10/32")]
    assert web.med == 50 and web.community_texts() == ["64512:100"] and web.as_path == AsPath.of(64512, 64512)
    assert out[Prefix.parse("100.100.1.0/24")] == LOCAL_ATTRIBUTES  # default accept, untouched
    assert apply_export_policy(local, PolicyChain()) == dict.fromkeys(local, LOCAL_ATTRIBUTES)


def test_wire_form_per_session() -> None:
    web = apply_export_policy({Prefix.parse("100.96.0.10/32"): "vip/web"}, PolicyChain.of([TAG]))
    attrs = next(iter(web.values()))
    ebgp = wire_attributes(attrs, EBGP)
    assert ebgp.as_path == (64512, 64512, 64512)  # ExaBGP sends it verbatim: our ASN once more
    assert ebgp.med == 50 and ebgp.communities == ((64512, 100),)
    assert wire_attributes(attrs, IBGP).as_path == (64512, 64512)
    assert wire_attributes(LOCAL_ATTRIBUTES, EBGP) == RouteAttributes()  # ExaBGP's default path
    assert wire_attributes(LOCAL_ATTRIBUTES, IBGP, draining=True).local_pref == 0  # RFC 8326 4.2
    assert wire_attributes(LOCAL_ATTRIBUTES, EBGP, draining=True).local_pref is None


def test_each_session_carries_its_own_family() -> None:
    routes = dict.fromkeys([Prefix.parse("100.96.0.10/32"), Prefix.parse("fd00::10/128")], LOCAL_ATTRIBUTES)
    assert list(for_session(routes, EBGP)) == ["100.96.0.10/32"]
    assert list(for_session(routes, EBGP6)) == ["fd00::10/128"]


def test_disable_drains_then_withdraws_and_enable_cancels() -> None:
    drain = Drain(5.0)
    live = {Prefix.parse("100.96.0.10/32"): LOCAL_ATTRIBUTES}
    assert drain.routes(live, enabled=True, now=0.0) == live and drain.deadline is None
    # Disabled: the planner already withdrew everything (live is empty); the drain keeps what was sent.
    tagged = drain.routes({}, enabled=False, now=1.0)
    assert list(tagged) == list(live)
    assert GRACEFUL_SHUTDOWN in tagged[Prefix.parse("100.96.0.10/32")].communities
    assert drain.status is not None and drain.status.reason is DrainReason.MACHINE_DISABLED
    assert drain.deadline == 6.0
    assert drain.routes({}, enabled=False, now=5.9) == tagged
    assert drain.routes({}, enabled=False, now=6.0) == {}
    assert drain.routes(live, enabled=True, now=7.0) == live and not drain.draining
    drain.routes({}, enabled=False, now=8.0)
    assert drain.routes(live, enabled=True, now=9.0) == live  # enabled again mid-drain: cancelled


def test_shutdown_is_final_and_an_empty_wire_needs_no_wait() -> None:
    drain = Drain(5.0)
    live = {Prefix.parse("100.96.0.10/32"): LOCAL_ATTRIBUTES}
    drain.routes(live, enabled=True, now=0.0)
    status = drain.shutdown(1.0)
    assert status.until == 6.0
    assert GRACEFUL_SHUTDOWN in drain.routes(live, enabled=True, now=2.0)[next(iter(live))].communities
    assert drain.routes(live, enabled=True, now=6.0) == {} and drain.done(6.0)
    empty = Drain(5.0)
    empty.routes({}, enabled=True, now=0.0)
    assert empty.shutdown(1.0).until == 1.0  # nothing on the wire: nothing to warn anyone about


def test_adjout_turns_the_drain_into_commands() -> None:
    adj = AdjRibOut()
    drain = Drain(5.0)
    live = {Prefix.parse("100.96.0.10/32"): LOCAL_ATTRIBUTES}
    first = adj.set_routes(EBGP.address, for_session(drain.routes(live, enabled=True, now=0.0), EBGP))
    assert [c.encode() for c in first] == [
        "neighbor 198.18.0.1 announce route 100.96.0.10/32 next-hop self origin igp"
    ]
    drain.shutdown(1.0)
    second = adj.set_routes(EBGP.address, for_session(drain.routes(live, enabled=True, now=1.0), EBGP))
    assert [c.encode() for c in second] == [
        "neighbor 198.18.0.1 announce route 100.96.0.10/32 next-hop self origin igp community [ 65535:0 ]"
    ]
    third = adj.set_routes(EBGP.address, for_session(drain.routes(live, enabled=True, now=6.0), EBGP))
    assert [c.encode() for c in third] == ["neighbor 198.18.0.1 withdraw route 100.96.0.10/32"]
