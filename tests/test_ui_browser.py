"""The web UI in a real browser: Debian's Chromium, headless, driven by Playwright (no browser download).

Two setups. A real agent process on loopback (exec checks allowed in its config): log in, create a VIP
through the dialog (a bad address first: the error shows beside the field), watch its globe turn green
when the check passes and red when it fails, see the per-machine reason, delete it through the row menu.
And an in-process app whose BGP speaker holds a RIB built by hand (:mod:`tests.test_ui_kit`): the
Routing tab expands a destination into its alternatives and why each lost; another machine's RIB, which
this agent does not serve, shows a clear message.

Screenshots of each page go to ``tests/artifacts/ui/``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from labs.kit.localcluster import LocalCluster
from tests.test_ui_kit import AUTH, RIB_PREFIX, TOKEN, Fakes, serve_in_thread

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("WIREMESH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts" / "ui"
SERVICE_FILE = "service-up"
LIVE_TIMEOUT_MS = 30_000  # check interval 1 s, thresholds 1: a few seconds, with room for a slow CI


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make deps` installs Debian's chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Page, base: str, token: str, start: str = "/ui/vips") -> None:
    page.goto(base + start)
    expect(page).to_have_url(re.compile(r".*/ui/login\?next="))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + start)


# --- a real agent -------------------------------------------------------------------------------------


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[LocalCluster, str]]:
    with LocalCluster(1, tmp_path / "agents", cluster="uitest", config={"allow_exec_checks": True}) as c:
        c.start_all()
        node = next(iter(c.agents.values()))
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(node.api + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or not node.running:
                pytest.fail(f"agent did not start; its log:\n{node.log.read_text()[-3000:]}")
            time.sleep(0.1)
        yield c, node.name


def test_vip_lifecycle_in_the_browser(page: Page, agent: tuple[LocalCluster, str]) -> None:
    cluster, name = agent
    base = cluster.agents[name].api
    token = (cluster.state_dir(name) / "api-token").read_text().strip()
    service = cluster.state_dir(name) / SERVICE_FILE

    page.goto(base + "/ui/vips")
    expect(page.get_by_label("API token")).to_be_visible()
    page.get_by_label("API token").fill("wrong-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#token-error")).to_contain_text("not this agent's API token")
    shot(page, "01-login-refused")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(base + "/ui/vips")
    expect(page.locator("#vips")).to_contain_text("No VIPs yet")

    # The dialog, with a bad address first: the error comes back beside the field, nothing is stored.
    page.get_by_role("link", name="Create").click()
    dialog = page.get_by_role("dialog", name="Create VIP")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label("Name", exact=True)).to_be_focused()
    dialog.get_by_label("Name", exact=True).fill("web")
    dialog.get_by_label("Address").fill("not-an-ip")
    dialog.get_by_label(name).check()
    dialog.get_by_text("Health Check", exact=True).click()
    dialog.get_by_label("Health Check Type").select_option("exec")
    dialog.get_by_label("Health Check Target").fill(f"test -e {service}")
    dialog.get_by_label("Interval (seconds)").fill("1")
    dialog.get_by_label("Timeout (seconds)").fill("0.5")
    dialog.get_by_label("Healthy Threshold", exact=True).fill("1")
    dialog.get_by_label("Unhealthy Threshold").fill("1")
    shot(page, "02-create-vip-dialog")
    dialog.get_by_role("button", name="Create").click()
    dialog = page.get_by_role("dialog", name="Create VIP")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#err-address")).to_contain_text("'not-an-ip' is not an IPv4 or IPv6 address")
    expect(dialog.get_by_label("Address")).to_be_focused()
    expect(dialog.get_by_label("Health Check Target")).to_have_value(f"test -e {service}")  # kept as typed
    shot(page, "03-create-vip-field-error")
    assert cluster.request(name, "GET", "/v1/vips") == []

    service.write_text("up\n")
    dialog.get_by_label("Address").fill("100.96.0.10")
    dialog.get_by_role("button", name="Create").click()
    expect(page).to_have_url(base + "/ui/vips?created=web")
    row = page.locator('#vips tr[data-name="web"]')
    expect(row).to_contain_text("100.96.0.10")
    expect(row).to_contain_text(f"Exec test -e {service}")
    expect(row).to_contain_text(name)

    # Live status, no reload: green once the check passes and the machine announces, red when it fails.
    expect(row.locator("svg.globe")).to_have_attribute("data-announced", "yes", timeout=LIVE_TIMEOUT_MS)
    expect(row.locator("svg.globe")).to_have_class("globe on")
    shot(page, "04-vips-announced")
    service.unlink()
    expect(row.locator("svg.globe")).to_have_attribute("data-announced", "no", timeout=LIVE_TIMEOUT_MS)
    expect(row.locator("svg.globe")).to_have_class("globe off")
    shot(page, "05-vips-withdrawn")

    # The edit page: the same fields plus Holdoff, and per machine its health and the decision's reason.
    row.get_by_role("link", name="web").click()
    expect(page).to_have_url(base + "/ui/vips/web")
    expect(page.get_by_label("Holdoff (seconds)")).to_have_value("0.0")
    machine_row = page.locator(f'#vip-machines tr[data-machine="{name}"]')
    expect(machine_row).to_contain_text("unhealthy", timeout=LIVE_TIMEOUT_MS)
    expect(machine_row).to_contain_text("withdrawn_unhealthy")
    shot(page, "06-vip-edit")

    # The machine's pages.
    page.goto(base + "/ui/machines")
    expect(page.locator(f'#machines tr[data-name="{name}"]')).to_contain_text("alive")
    shot(page, "07-machines")
    for tab, text in (
        ("VIPs", "web"),
        ("Routing", "BGP is not enabled"),
        ("Peers", "WireGuard is not enabled"),
        ("Health", "vip/web"),
    ):
        page.goto(base + f"/ui/machines/{name}")
        page.get_by_role("navigation", name="Machine sections").get_by_role("link", name=tab).click()
        expect(page.locator(".tab-panel")).to_contain_text(text)
        shot(page, f"08-machine-{tab.lower()}")

    # Delete through the row menu, confirmed in a dialog.
    page.goto(base + "/ui/vips")
    page.get_by_label("Actions for web").click()
    page.get_by_role("link", name="Delete…").click()
    confirm = page.get_by_role("dialog", name="Delete web?")
    expect(confirm).to_be_visible()
    shot(page, "09-delete-confirm")
    confirm.get_by_role("button", name="Delete").click()
    expect(page).to_have_url(base + "/ui/vips?deleted=web")
    expect(page.locator("#vips")).to_contain_text("No VIPs yet")
    assert cluster.request(name, "GET", "/v1/vips") == []


def test_policy_set_editor_orders_rules(page: Page, agent: tuple[LocalCluster, str]) -> None:
    cluster, name = agent
    base = cluster.agents[name].api
    token = (cluster.state_dir(name) / "api-token").read_text().strip()
    log_in(page, base, token, "/ui/policy-sets")
    page.get_by_role("link", name="Create").click()
    page.get_by_label("Name", exact=True).fill("from-lan")
    page.get_by_role("button", name="Add rule").click()
    page.get_by_label("Rule name").nth(0).fill("second")
    page.get_by_role("button", name="Add rule").click()
    page.get_by_label("Rule name").nth(1).fill("first")
    page.get_by_label("Prefix list").nth(1).fill("10.0.0.0/8 ge 16 le 24")
    page.get_by_label("LOCAL_PREF").nth(1).fill("200")
    page.get_by_role("button", name="Move rule up").nth(1).click()
    shot(page, "10-policy-set-editor")
    page.get_by_role("button", name="Create").click()
    expect(page).to_have_url(base + "/ui/policy-sets?created=from-lan")
    shot(page, "11-policy-sets")
    stored = cluster.request(name, "GET", "/v1/policy-sets/from-lan")
    assert [r["name"] for r in stored["rules"]] == ["first", "second"]
    assert stored["rules"][0]["actions"]["set_local_pref"] == 200
    page.goto(base + "/ui/routes/new")
    page.get_by_label("Name", exact=True).fill("lan")
    page.get_by_label("Prefix", exact=True).fill("100.70.0.0/16")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#routes")).to_contain_text("100.70.0.0/16")
    shot(page, "12-routes")


# --- the RIB, from a speaker fed by hand -------------------------------------------------------------------


@pytest.fixture
def served() -> Iterator[str]:
    yield from serve_in_thread(Fakes().app())


def test_routing_tab_expands_a_destination_into_its_alternatives(page: Page, served: str) -> None:
    log_in(page, served, TOKEN, "/ui/machines/node-a?tab=routing")
    dest = page.locator(f'tbody.dest[data-prefix="{RIB_PREFIX}"]')
    expect(dest.locator("td.best")).to_contain_text("via 198.18.0.1")
    expect(dest.locator("tr.alternatives")).to_be_hidden()
    dest.get_by_role("button", name=RIB_PREFIX).click()
    expect(dest.get_by_role("button", name=RIB_PREFIX)).to_have_attribute("aria-expanded", "true")
    alternatives = dest.locator("tr.alternatives table.paths tbody tr")
    expect(alternatives).to_have_count(3)
    expect(dest.locator("tr.best td.reason")).to_have_text("best")
    expect(dest.locator("tr.lost")).to_have_count(2)
    expect(dest.locator('tr.lost[data-peer="198.18.0.3"] td.reason')).to_contain_text(
        "lost at Local Pref: 50 vs 100"
    )
    expect(dest.locator('tr.lost[data-peer="198.18.0.2"] td.reason')).to_contain_text("lost at AS Path")
    shot(page, "13-machine-routing-expanded")

    # Another machine's RIB comes from /v1/machines/NAME/rib; without that endpoint, say so.
    page.goto(served + "/ui/machines/node-b?tab=routing")
    status = page.locator("[data-rib-status]")
    expect(status).to_contain_text("node-b")
    expect(status).not_to_contain_text("Loading")
    shot(page, "14-machine-routing-remote-unavailable")

    # When that endpoint answers (here: this agent's own RIB, served in its place), the browser renders it.
    rib = httpx.get(served + "/v1/rib", headers=AUTH, timeout=5.0).json()
    page.route("**/v1/machines/node-b/rib", lambda route: route.fulfill(json=rib))
    page.goto(served + "/ui/machines/node-b?tab=routing")
    dest = page.locator(f'#rib tbody.dest[data-prefix="{RIB_PREFIX}"]')
    dest.get_by_role("button", name=RIB_PREFIX).click()
    expect(dest.locator("tr.lost")).to_have_count(2)
    expect(dest.locator('tr.lost[data-peer="198.18.0.3"] td.reason')).to_contain_text("Local Pref: 50 vs 100")
    shot(page, "15-machine-routing-remote")

    page.goto(served + "/ui/machines/node-a?tab=peers")
    expect(page.locator('#machine-peers tr[data-peer="node-c"]')).to_contain_text("Transit via node-b")
    expect(page.locator('#machine-peers tr[data-peer="node-b"]')).to_contain_text("Direct")
    shot(page, "16-machine-peers")
