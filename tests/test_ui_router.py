"""The web UI without a browser: login and the session cookie (where it is accepted and where not),
and form posts that the store refuses, shown field by field with nothing changed."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from agent.cluster.objects import Kind, Problem, Vip
from agent.health.verdict import Verdict
from agent.http.ui import forms
from agent.http.ui.session import COOKIE_NAME, session_value
from tests.test_ui_kit import AUTH, TOKEN, WALL, Fakes

BASE = "http://agent"


@dataclass
class Env:
    fakes: Fakes
    anon: httpx.AsyncClient  # no credentials at all
    client: httpx.AsyncClient  # logged in through the login page (cookie only)


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    fakes = Fakes()
    transport = httpx.ASGITransport(app=fakes.app(clock=lambda: 10.0, wall_clock=lambda: WALL))
    async with (
        httpx.AsyncClient(transport=transport, base_url=BASE) as anon,
        httpx.AsyncClient(transport=transport, base_url=BASE) as client,
    ):
        response = await client.post("/ui/login", data={"token": TOKEN, "next": "/ui/vips"})
        assert response.status_code == 303, response.text
        yield Env(fakes, anon, client)


def field_error(page: str, key: str) -> str:
    """The error text rendered beside field ``key``."""
    found = re.search(
        rf'<span class="field-error" id="err-{re.escape(key)}" role="alert">([^<]*)</span>', page
    )
    assert found, f"no error beside {key}"
    return html.unescape(found.group(1))


# --- auth ------------------------------------------------------------------------------------------


async def test_ui_without_a_token_redirects_to_the_login_page(env: Env) -> None:
    for path in ("/ui", "/ui/vips", "/ui/machines/node-a?tab=routing", "/ui/no-such-page"):
        response = await env.anon.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/ui/login?next=%2Fui"), path
    page = await env.anon.get("/ui/login")
    assert page.status_code == 200 and 'name="token"' in page.text and '<label for="token"' in page.text
    assert (await env.anon.get("/ui/static/ui.js")).status_code == 200
    assert (await env.anon.get("/ui/static/ui.css")).headers["content-type"].startswith("text/css")


async def test_a_wrong_token_is_refused_and_sets_no_cookie(env: Env) -> None:
    response = await env.anon.post("/ui/login", data={"token": "not-the-token", "next": "/ui/vips"})
    assert response.status_code == 401
    assert "set-cookie" not in response.headers
    assert "not this agent" in field_error_any(response.text)
    assert (await env.anon.get("/ui/vips")).status_code == 303
    empty = await env.anon.post("/ui/login", data={"token": ""})
    assert empty.status_code == 401 and "set-cookie" not in empty.headers


def field_error_any(page: str) -> str:
    found = re.search(r'class="field-error"[^>]*>([^<]*)<', page)
    assert found
    return html.unescape(found.group(1))


async def test_the_session_cookie_is_httponly_strict_and_not_the_token(env: Env) -> None:
    response = await env.anon.post("/ui/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/vips"  # no open redirect
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie and session_value(TOKEN) in cookie
    assert (await env.client.get("/ui/vips")).status_code == 200


async def test_the_cookie_opens_the_ui_and_its_rib_reads_only(env: Env) -> None:
    assert (await env.client.get("/ui/machines")).status_code == 200
    # Not the API at large: objects, metrics, members, writes.
    for method, path in (
        ("GET", "/v1/vips"),
        ("GET", "/metrics"),
        ("GET", "/v1/members"),
        ("GET", "/v1/rib"),
        ("POST", "/v1/machines/node-b/rib"),
    ):
        response = await env.client.request(method, path)
        assert response.status_code == 401, (method, path)
    # The one JSON read the pages make passes auth and reaches the proxy, which answers for node-b
    # (it runs no speaker in this fake cluster).
    remote = await env.client.get("/v1/machines/node-b/rib")
    assert remote.status_code == 404
    assert "node-b runs no BGP speaker" in remote.json()["error"]


async def test_a_forged_cookie_is_dropped_and_the_bearer_token_still_works(env: Env) -> None:
    env.anon.cookies.set(COOKIE_NAME, session_value("another-token"))
    response = await env.anon.get("/ui/vips")
    assert response.status_code == 303 and "expired=1" in response.headers["location"]
    assert "Max-Age=0" in response.headers["set-cookie"]
    env.anon.cookies.clear()
    assert (await env.anon.get("/ui/vips", headers=AUTH)).status_code == 200
    wrong = await env.anon.get("/ui/vips", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401


async def test_a_cross_site_write_with_the_cookie_is_refused(env: Env) -> None:
    body = {"name": "web", "address": "100.96.0.1", "enabled": "on"}
    response = await env.client.post("/ui/vips", data=body, headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    response = await env.client.post("/ui/vips", data=body, headers={"sec-fetch-site": "cross-site"})
    assert response.status_code == 403
    assert env.fakes.store.list(Kind.VIP) == []
    same = await env.client.post(
        "/ui/vips", data=body, headers={"origin": BASE, "sec-fetch-site": "same-origin"}
    )
    assert same.status_code == 303


async def test_logout_clears_the_cookie(env: Env) -> None:
    response = await env.client.post("/ui/logout", headers={"origin": BASE})
    assert response.status_code == 303 and "Max-Age=0" in response.headers["set-cookie"]
    assert (await env.client.get("/ui/vips")).status_code == 303


# --- writes and their errors -------------------------------------------------------------------------

GOOD_VIP = {
    "name": "web",
    "address": "100.96.0.10",
    "enabled": "on",
    "machines": ["node-a", "node-b"],
    "hc_type": "tcp",
    "hc_target": ":6443",
    "hc_interval": "5",
    "hc_timeout": "1",
    "hc_healthy_threshold": "",
    "hc_unhealthy_threshold": "",
}


async def test_creating_a_vip_through_the_form_stores_it_as_the_api_would(env: Env) -> None:
    response = await env.client.post("/ui/vips", data=GOOD_VIP)
    assert response.status_code == 303 and response.headers["location"] == "/ui/vips?created=web"
    vip = env.fakes.store.get(Kind.VIP, "web")
    assert isinstance(vip, Vip) and vip.machines == ["node-a", "node-b"]
    assert vip.health_check is not None and vip.health_check.interval == 5.0
    assert vip.health_check.healthy_threshold == 2  # left empty: the model's default
    page = (await env.client.get("/ui/vips?created=web")).text
    assert "Created VIP web." in page and "TCP :6443" in page and 'data-announced="no"' in page
    env.fakes.status.announcing["web"] = ["node-b"]
    rows = (await env.client.get("/ui/vips/_rows")).text
    assert 'data-announced="yes"' in rows and "announced by node-b" in rows


@pytest.mark.parametrize(
    ("change", "key", "text"),
    [
        ({"address": "not-an-ip"}, "address", "is not an IPv4 or IPv6 address"),
        ({"address": "8.8.8.8"}, "address", "outside every routable CIDR"),
        ({"name": "Bad Name"}, "name", "should match pattern"),
        ({"machines": ["node-zz"]}, "machines", "unknown machine 'node-zz'"),
        ({"hc_interval": "soon"}, "hc_interval", "valid number"),
        ({"hc_timeout": "9"}, "hc_timeout", "less than interval"),
        ({"hc_target": "6443"}, "hc_target", "host:port"),
    ],
)
async def test_a_refused_vip_shows_the_error_beside_its_field_and_stores_nothing(
    env: Env, change: dict[str, object], key: str, text: str
) -> None:
    response = await env.client.post("/ui/vips", data={**GOOD_VIP, **change})
    assert response.status_code == 422
    assert text in field_error(response.text, key)
    assert "data-open-on-load" in response.text  # the dialog comes back open, as typed
    assert env.fakes.store.list(Kind.VIP) == []


async def test_a_duplicate_name_is_an_error_on_the_name(env: Env) -> None:
    assert (await env.client.post("/ui/vips", data=GOOD_VIP)).status_code == 303
    response = await env.client.post("/ui/vips", data={**GOOD_VIP, "address": "100.96.0.11"})
    assert response.status_code == 409 and "already exists" in field_error(response.text, "name")


async def test_editing_a_vip_keeps_it_when_refused_and_saves_when_valid(env: Env) -> None:
    await env.client.post("/ui/vips", data=GOOD_VIP)
    before = env.fakes.store.get_record(Kind.VIP, "web")
    bad = await env.client.post("/ui/vips/web", data={**GOOD_VIP, "holdoff": "-1"})
    assert bad.status_code == 422 and "greater than or equal to 0" in field_error(bad.text, "holdoff")
    assert env.fakes.store.get_record(Kind.VIP, "web") == before
    good = await env.client.post("/ui/vips/web", data={**GOOD_VIP, "holdoff": "30", "hc_type": ""})
    assert good.status_code == 303
    vip = env.fakes.store.get(Kind.VIP, "web")
    assert isinstance(vip, Vip) and vip.holdoff == 30.0 and vip.health_check is None


async def test_the_vip_page_shows_each_machines_health_and_decision(env: Env) -> None:
    await env.client.post("/ui/vips", data=GOOD_VIP)
    env.fakes.status.verdicts_by_machine["node-b"] = {
        "vip/web": Verdict("unhealthy", WALL - 30, 3, False, None, "connection refused", WALL - 1)
    }
    page = (await env.client.get("/ui/vips/web")).text
    assert "Holdoff" in page and "connection refused" in page and "unhealthy" in page
    assert (await env.client.get("/ui/vips/nope")).status_code == 404


async def test_deleting_asks_then_deletes(env: Env) -> None:
    await env.client.post("/ui/vips", data=GOOD_VIP)
    confirm = await env.client.get("/ui/vips/web/delete")
    assert confirm.status_code == 200 and "Delete VIP web?" in confirm.text
    assert env.fakes.store.list(Kind.VIP) != []
    done = await env.client.post("/ui/vips/web/delete")
    assert done.status_code == 303 and env.fakes.store.list(Kind.VIP) == []


async def test_routes_create_edit_and_refuse(env: Env) -> None:
    body = {"name": "lan", "prefix": "192.168.1.0/24", "enabled": "on", "machines": ["node-a"], "hc_type": ""}
    bad = await env.client.post("/ui/routes", data={**body, "prefix": "192.168.1.1/24"})
    assert bad.status_code == 422 and "host bits set" in field_error(bad.text, "prefix")
    assert (await env.client.post("/ui/routes", data=body)).status_code == 303
    page = (await env.client.get("/ui/routes")).text
    assert "192.168.1.0/24" in page
    edit = await env.client.post("/ui/routes/lan", data={**body, "machines": ["node-b"]})
    assert edit.status_code == 303
    assert (await env.client.post("/ui/routes/lan/delete")).status_code == 303


def rule(i: int, **fields: str) -> dict[str, str]:
    return {f"rule-{i}-{k}": v for k, v in fields.items()}


async def test_policy_sets_keep_rule_order_and_show_rule_errors(env: Env) -> None:
    body = {
        "name": "in",
        "default": "reject",
        **rule(0, name="prefer-b", communities="65001:100", set_local_pref="200", result="accept"),
        **rule(
            3,
            name="lans",
            prefixes="10.0.0.0/8 ge 16 le 24\n192.168.0.0/16",
            comm_mode="edit",
            comm_add="no-export",
            prepend_asn="65000",
            prepend_count="2",
            result="accept",
        ),
    }
    bad = await env.client.post("/ui/policy-sets", data={**body, **rule(3, comm_add="65001:99999")})
    assert bad.status_code == 422
    assert "out of range" in field_error(bad.text, "rule-1-comm_add")  # re-shown as the second rule
    assert env.fakes.store.list(Kind.POLICY_SET) == []
    assert (await env.client.post("/ui/policy-sets", data=body)).status_code == 303
    policy = env.fakes.store.get(Kind.POLICY_SET, "in").model_dump(mode="json")
    assert [r["name"] for r in policy["rules"]] == ["prefer-b", "lans"]
    assert policy["rules"][1]["match"]["prefix_list"][0] == {"prefix": "10.0.0.0/8", "ge": 16, "le": 24}
    assert policy["rules"][1]["actions"]["as_prepend"] == {"asn": 65000, "count": 2}
    page = (await env.client.get("/ui/policy-sets/in")).text
    assert "10.0.0.0/8 ge 16 le 24" in page
    # Attached to a machine, it cannot be deleted; the refusal says where it is used.
    saved = await env.client.post(
        "/ui/machines/node-a/settings", data={"enabled": "on", "import_policies": "in"}
    )
    assert saved.status_code == 303
    refused = await env.client.post("/ui/policy-sets/in/delete")
    assert refused.status_code == 409 and "machine node-a import_policies" in refused.text
    assert env.fakes.store.list(Kind.POLICY_SET) != []


async def test_machine_settings_refuse_an_unknown_policy(env: Env) -> None:
    response = await env.client.post("/ui/machines/node-a/settings", data={"import_policies": "nope"})
    assert response.status_code == 422 and "unknown policy set" in field_error(
        response.text, "import_policies"
    )


# --- machine tabs ----------------------------------------------------------------------------------


async def test_machine_tabs_show_the_rib_peers_and_checks(env: Env) -> None:
    routing = (await env.client.get("/ui/machines/node-a?tab=routing")).text
    assert "203.0.113.0/24" in routing and "100.96.0.10/32" in routing
    assert routing.count('class="lost"') == 2 and "AS path" in routing  # two alternatives, with reasons
    assert "65001:100" in routing
    peers = (await env.client.get("/ui/machines/node-a/_tab/peers")).text
    assert "Transit via node-b" in peers and "Direct" in peers and "12 s ago" in peers
    health = (await env.client.get("/ui/machines/node-a?tab=health")).text
    assert "publishes no check verdicts" in health
    remote = (await env.client.get("/ui/machines/node-b?tab=routing")).text
    assert 'data-remote-rib="/v1/machines/node-b/rib"' in remote
    remote_peers = (await env.client.get("/ui/machines/node-b?tab=peers")).text
    assert "publishes no reachability" in remote_peers
    assert (await env.client.get("/ui/machines/nobody")).status_code == 404


# --- form notation -----------------------------------------------------------------------------------


def test_prefix_list_lines_and_error_fields() -> None:
    assert forms.prefix_entry("10.0.0.0/8 ge 16 le 24") == {"prefix": "10.0.0.0/8", "ge": "16", "le": "24"}
    assert forms.prefix_entry("10.0.0.0/8 junk") == {"prefix": "10.0.0.0/8 junk"}
    assert forms.field_for(("health_check", "interval")) == "hc_interval"
    assert forms.field_for(("rules", 2, "actions", "as_prepend", "count")) == "rule-2-prepend_count"
    assert forms.field_for(("rules", 0, "match", "prefix_list", 1, "ge")) == "rule-0-prefixes"
    assert forms.field_for(("machines", 1)) == "machines"
    errors = forms.errors_from([Problem(("bogus",), "x"), Problem((), "y")])
    assert errors.general == ["bogus: x", "y"]


async def test_a_vip_created_from_a_machine_tab_returns_there(env: Env) -> None:
    back = "/ui/machines/node-a?tab=vips"
    page = await env.client.get("/ui/machines/node-a?tab=vips&new=1")
    assert "data-open-on-load" in page.text and 'value="node-a" checked' in page.text
    bad = await env.client.post("/ui/vips", data={**GOOD_VIP, "address": "", "return_to": back})
    assert bad.status_code == 422 and "VIPs on node-a" in bad.text
    assert "not an IPv4 or IPv6 address" in field_error(bad.text, "address")
    good = await env.client.post("/ui/vips", data={**GOOD_VIP, "return_to": back})
    assert good.headers["location"] == back + "&created=web"
    tab = (await env.client.get("/ui/machines/node-a/_tab/vips")).text
    assert 'data-name="web"' in tab
    outside = await env.client.post("/ui/vips", data={**GOOD_VIP, "name": "x", "return_to": "https://evil/"})
    assert outside.headers["location"] == "/ui/vips?created=x"
