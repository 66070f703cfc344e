"""The admin web page in a real browser, against a real daemon.

One daemon for the module, with --admin-tcp on a random loopback address, two networks and a
few containers made with the real CLI; Debian's headless Chromium, driven by Playwright, opens
the page (/ui/#token=...). What the page shows is compared with what the admin API reports
(network and container inspect, /v1/resolve), never with hard-coded values. The daemon runs
with --no-cache, so that the page and the test asking the same forwarded name both get the
upstream's answer (not one of them the cache's).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from bench.labs.daemon import DaemonProcess, running_daemon, suffix
from bench.labs.upstreams import free_loopback_address
from tests.netns.conftest import Lab

CHROMIUM = Path("/usr/bin/chromium")
ADMIN_PORT = 8053
WAIT_MS = 10_000  # for a loaded CI machine; a working page needs well under a second

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the daemon makes namespaces"),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian's chromium ({CHROMIUM})"),
]


def browser_args(address: str) -> list[str]:
    """Every host name but the daemon's address maps to "not found": the browser reaches
    nothing but the page, never the machine's resolver or anything outside."""
    return [
        "--no-sandbox",
        "--no-proxy-server",
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {address}",
    ]


# Straight to the daemon, whatever proxy the environment names.
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Site:
    daemon: DaemonProcess
    address: str  # 127.x.y.z
    token: str
    networks: tuple[str, str]
    tag: str

    @property
    def base(self) -> str:
        return f"http://{self.address}:{ADMIN_PORT}"

    def page_url(self, token: str | None = None) -> str:
        token = self.token if token is None else token
        return f"{self.base}/ui/" + (f"#token={token}" if token else "")

    def api(self, path: str, **query: str) -> Any:
        """What the admin API (over TCP, with the token) reports: what the page should show."""
        url = f"{self.base}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        with DIRECT.open(request, timeout=10) as response:
            return json.load(response)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    address = free_loopback_address(ADMIN_PORT)
    tmp = tmp_path_factory.mktemp("page")
    with running_daemon(tmp, "--admin-tcp", f"{address}:{ADMIN_PORT}", "--no-cache") as d:
        lab = Lab(tag=suffix())  # for its subnet picker only: random, overlapping nothing
        tag = lab.tag
        front, back = f"pgf-{tag}", f"pgb-{tag}"
        d.network(front, "--subnet", str(lab.ipv4_subnet()))
        d.network(back, "--subnet", str(lab.ipv4_subnet()))
        d.container(f"pgw-{tag}", "--network", front, "--network-alias", f"www-{tag}")
        d.container(f"pga-{tag}", "--network", front)
        d.cli("network", "connect", "--alias", f"api-{tag}", back, f"pga-{tag}")
        d.container(f"pgd-{tag}", "--network", back, "--network-alias", f"db-{tag}")
        token = (d.root / "state" / "admin.token").read_text().strip()
        yield Site(d, address, token, (front, back), tag)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Browser]:
    """After the site: Playwright's sync API keeps an event loop running on this thread, and
    the site's set-up (pyroute2) wants to run one of its own."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=browser_args(site.address), headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


@contextmanager
def new_tab(browser: Browser) -> Iterator[Page]:
    """A tab in a fresh context (no token kept from another tab); fails the test if the
    page's script threw anything."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    errors: list[str] = []
    try:
        tab = context.new_page()
        tab.on("pageerror", lambda error: errors.append(str(error)))
        yield tab
    finally:
        context.close()
    assert errors == [], f"the page's script failed: {errors}"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with new_tab(browser) as tab:
        yield tab


def open_live(page: Page, site: Site) -> None:
    page.goto(site.page_url())
    page.wait_for_selector('#status[data-state="live"]')


def bare(address: str) -> str:
    return address.split("/")[0]


def squeeze(zone_line: str) -> str:
    return re.sub(r"\s+", " ", zone_line).strip()


# -- serving the page -----------------------------------------------------------------------


def test_the_page_files_come_without_the_token_but_the_api_needs_it(site: Site) -> None:
    files = [("/", "text/html"), ("/ui/", "text/html"), ("/ui/app.js", "text/javascript")]
    for path, kind in files:
        with DIRECT.open(site.base + path, timeout=10) as response:  # no token
            assert response.status == 200, path
            assert response.headers["Content-Type"].startswith(kind), path
    with pytest.raises(urllib.error.HTTPError) as refused:
        DIRECT.open(site.base + "/v1/networks", timeout=10)
    assert refused.value.code == 401
    assert "admin.token" in json.load(refused.value)["message"]


def test_the_daemon_logs_the_page_address_but_not_the_token(site: Site) -> None:
    logged = site.daemon.logs()
    assert f"admin page: {site.base}/ui/#token=<the token in " in logged
    assert site.token not in logged


# -- the networks ----------------------------------------------------------------------------


def test_each_network_lists_its_containers_addresses_and_names_as_the_api_reports(
    page: Page, site: Site
) -> None:
    open_live(page, site)
    for network_name in site.networks:
        network = site.api("/v1/networks/" + network_name)
        assert network["Containers"], f"the test made containers on {network_name}"
        section = page.locator(f'section.network[data-network="{network_name}"]')
        section.wait_for()
        subnet = network["IPAM"]["Config"][0]["Subnet"]
        assert subnet in section.locator(".network-header").inner_text()
        rows = section.locator("tbody tr")
        shown = rows.evaluate_all("rows => rows.map(r => r.dataset.container)")
        assert sorted(shown) == sorted(m["Name"] for m in network["Containers"].values())
        for member in network["Containers"].values():
            row = section.locator(f'tr[data-container="{member["Name"]}"]')
            assert row.locator("td.ipv4").inner_text() == bare(member["IPv4Address"])
            settings = site.api("/v1/containers/" + member["Name"])["NetworkSettings"]["Networks"][
                network_name
            ]
            names = row.locator("td.names .name").all_inner_texts()
            aliases = row.locator("td.names .name.alias").all_inner_texts()
            assert names == settings["DNSNames"]
            assert aliases == settings["Aliases"]
    # The connected container shows on both networks, each time with that network's names.
    both = page.locator(f'tr[data-container="pga-{site.tag}"]')
    assert both.count() == 2
    counts = f"{len(site.api('/v1/networks'))} networks · {len(site.api('/v1/containers'))}"
    assert page.locator("#counts").inner_text().startswith(counts)


def test_the_token_leaves_the_address_bar_and_a_reload_still_reads_the_api(
    page: Page, site: Site
) -> None:
    open_live(page, site)
    assert "token" not in page.url
    page.reload()
    page.wait_for_selector('#status[data-state="live"]')
    page.locator(f'section.network[data-network="{site.networks[0]}"]').wait_for()
    assert page.locator("#auth").is_hidden()


# -- the live feed ---------------------------------------------------------------------------


def test_a_container_created_after_the_page_loaded_shows_in_the_feed_and_the_table(
    page: Page, site: Site
) -> None:
    open_live(page, site)
    front = site.networks[0]
    late = f"pgl-{site.tag}"
    assert page.locator(f'li.event:has-text("{late}")').count() == 0
    site.daemon.container(late, "--network", front)
    created = page.locator(f'li.event[data-type="container.create"]:has-text("{late}")')
    created.wait_for()
    attached = page.locator(f'li.event[data-type="endpoint.attach"]:has-text("{late}")')
    attached.wait_for()
    address = bare(site.api("/v1/networks/" + front)["Containers"][
        site.api("/v1/containers/" + late)["Id"]
    ]["IPv4Address"])  # fmt: skip
    assert address in attached.inner_text()
    # The feed is newest first, and its seqs are the daemon's.
    seqs = [int(s) for s in page.locator("li.event").evaluate_all("l => l.map(e => e.dataset.seq)")]
    assert seqs == sorted(seqs, reverse=True)
    row = page.locator(f'section.network[data-network="{front}"] tr[data-container="{late}"]')
    row.wait_for()
    assert row.locator("td.ipv4").inner_text() == address
    # The resolve box can pick it, too.
    page.wait_for_function(
        "name => [...document.querySelectorAll('#resolve-from option')]"
        ".some(o => o.value === name)",
        arg=late,
    )


# -- the resolve box -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resolve_page(browser: Browser, site: Site) -> Iterator[Page]:
    """One tab for all the questions to the resolve box: each replaces the last answer."""
    with new_tab(browser) as tab:
        open_live(tab, site)
        yield tab


def ask(page: Page, source: str, name: str, qtype: str) -> Locator:
    page.eval_on_selector("#resolve-result", "box => box.replaceChildren()")  # no stale answer
    page.select_option("#resolve-from", source)
    page.fill("#resolve-name", name)
    page.select_option("#resolve-type", qtype)
    page.click("#resolve-form button")
    result = page.locator("#resolve-result .result")
    result.wait_for()
    return result


@pytest.mark.parametrize(
    ("source", "name", "qtype", "rcode"),
    [
        ("pgw-{tag}", "pga-{tag}", "A", "NOERROR"),
        ("pgd-{tag}", "api-{tag}", "A", "NOERROR"),
        ("pgw-{tag}", "pga-{tag}", "AAAA", "NOERROR"),
        ("pgw-{tag}", "db-{tag}", "A", "NXDOMAIN"),
        ("pgw-{tag}", "nothing-{tag}.test", "A", "NXDOMAIN"),
    ],
    ids=[
        "r1-a-container-on-the-same-network",
        "r2-an-alias-on-the-other-network-of-a-container",
        "r6-aaaa-for-an-ipv4-only-name-is-nodata",
        "r1-a-name-held-only-by-a-network-the-source-is-not-on",
        "r11-forwarded-the-upstream-says-nxdomain",
    ],
)
def test_the_resolve_box_shows_the_answer_rule_and_path_of_v1_resolve(
    resolve_page: Page, site: Site, source: str, name: str, qtype: str, rcode: str
) -> None:
    source, name = source.format(tag=site.tag), name.format(tag=site.tag)
    result = ask(resolve_page, source, name, qtype)
    assert f"{name} {qtype}" in result.locator(".result-head").inner_text()
    api = site.api("/v1/resolve", **{"from": source, "name": name, "type": qtype})
    assert api["rcode"] == rcode, f"the case is not the one meant: {api}"

    def field(key: str) -> str:
        return result.locator(f'[data-field="{key}"]').inner_text()

    assert result.get_attribute("data-rcode") == field("rcode") == api["rcode"]
    assert field("rule") == api["rule"]
    assert field("outcome") == api["outcome"]
    assert field("path").split(" ")[0] == api["path"]
    assert api["upstream"] in field("path")
    answers = api["answers"] + api["additional"]
    if answers:
        assert field("answers").splitlines() == [squeeze(a) for a in answers]
    else:
        assert field("answers") == "No records."
    assert field("networks_holding") == (", ".join(api["networks_holding"]) or "—")
    # An error rcode stands out from an answer.
    colour = "ok" if rcode == "NOERROR" else "bad"
    assert colour in (result.locator(".rcode").get_attribute("class") or "").split()


# -- no or a wrong token ---------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "not-the-token"], ids=["missing", "wrong"])
def test_without_the_right_token_the_page_says_where_the_token_is(
    page: Page, site: Site, token: str
) -> None:
    page.goto(site.page_url(token))
    banner = page.locator("#auth")
    banner.wait_for(state="visible")
    text = banner.inner_text()
    token_file = str(site.daemon.root / "state" / "admin.token")
    assert token_file in text
    assert "#token=" in text
    assert ("no admin token" if not token else "refused") in text
    assert page.locator("#status").get_attribute("data-state") == "error"
    assert page.locator("section.network").count() == 0
