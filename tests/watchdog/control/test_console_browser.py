"""The console in a real headless Chromium (Debian's, driven by Playwright) against a real `wa-watchdog run`.

One system and one browser for the module; the tests run in file order and
each checks its own part: the page, the live view when the bridge is killed,
the timeline of that outage, the restart button, a cross-origin form refused.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bridge_support import inject
from tests.conftest import BASE_CONFIG, GROUP_A, Processes, wait_until
from watchdog.shared import endpoints

CHROMIUM = os.environ.get("WA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
COMPONENTS = ("sim", "bridge:main", "monitor:lawley", "monitor:mohadin")

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

pytestmark = pytest.mark.slow


class System:
    def __init__(self, root: Path) -> None:
        self.config_path = root / "wa.toml"
        self.config_path.write_text(BASE_CONFIG)
        self.data_dir = root / "data"
        self.procs = Processes(self.config_path)
        self.log = open(root / "watchdog.out", "wb")
        self.procs.start("run", stdout=self.log, stderr=subprocess.STDOUT)
        self.url = ""

    def wait_healthy(self) -> None:
        self.url = wait_until(lambda: endpoints.url(self.data_dir, "watchdog", "control"), 60,
                              message="the control endpoint")
        wait_until(lambda: all(c["healthy"] for c in self.status()), 90, 0.1, "every component healthy")

    def pid(self, component: str) -> int | None:
        for item in self.status():
            if item["name"] == component:
                return item["pid"]
        return None

    def status(self) -> list[dict]:
        with urllib.request.urlopen(self.url + "/status", timeout=5) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.procs.stop_all()
        self.log.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    running = System(tmp_path_factory.mktemp("console"))
    try:
        running.wait_healthy()
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
        viewport={"width": 1400, "height": 1000}, locale="en-US")  # a 12-hour locale: the page must say 24-hour
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(scope="module")
def page(browser: object, system: System) -> object:
    page = browser.pages[0] if browser.pages else browser.new_page()
    page.set_default_timeout(15_000)
    return page


def row_pid(page: object, component: str) -> str:
    return page.get_attribute(f'tr.component[data-component="{component}"]', "data-pid") or ""


def test_the_page_loads_and_shows_every_component(page: object, system: System) -> None:
    page.goto(system.url + "/")
    for component in COMPONENTS:
        assert page.locator(f'tr.component[data-component="{component}"]').count() == 1
    assert "all 4 components healthy" in page.inner_text("#summary-line")
    assert page.locator('svg.timeline g.row[data-row="bridge:main"]').count() == 1
    page.wait_for_selector("#live.ok")  # the live stream is connected
    # the Sending panel: the number sends, nothing queued; each project's feedback through it
    assert page.get_attribute('#x-sending tr.account[data-account="main"]', "data-sending") == "sending"
    assert page.inner_text('#x-sending tr.account[data-account="main"] td:nth-child(6)') == "0"
    assert page.get_attribute('#x-sending tr.route[data-project="lawley"]', "data-through") == "main"


def test_the_live_view_changes_when_the_bridge_is_killed_and_the_timeline_shows_it(page: object,
                                                                                   system: System) -> None:
    page.goto(system.url + "/?range=1h")
    page.wait_for_selector("#live.ok")
    page.evaluate("window.notReloaded = true")
    before = int(row_pid(page, "bridge:main"))
    assert page.locator('svg.timeline g.marks[data-row="bridge:main"] rect[data-kind="crash"]').count() == 0
    os.kill(before, signal.SIGKILL)
    page.wait_for_function(
        "pid => { const r = document.querySelector('tr.component[data-component=\"bridge:main\"]');"
        " return r && r.dataset.pid && r.dataset.pid !== String(pid); }", arg=before)
    page.wait_for_selector('svg.timeline g.marks[data-row="bridge:main"] rect[data-kind="crash"]', state="attached")
    assert page.evaluate("window.notReloaded") is True  # changed live, not by a reload
    assert re.fullmatch(r"as of \d\d:\d\d:\d\d", page.inner_text("#updated"))  # 24-hour, as the server writes it
    title = page.text_content('svg.timeline g.marks[data-row="bridge:main"] rect[data-kind="crash"] title')
    assert "killed by SIGKILL" in title
    page.wait_for_selector("ol.incidents li.k-exit")
    assert "bridge:main killed by SIGKILL" in page.inner_text("ol.incidents li.k-exit summary")
    page.wait_for_function(  # the watchdog's log, live in the Logs panel
        "pid => (document.querySelector('details.log[data-component=\"watchdog\"] pre') || {}).textContent"
        "?.includes(`pid ${pid} exited: SIGKILL`)", arg=before)
    assert page.evaluate("window.notReloaded") is True


def test_a_drop_appears_with_a_link_to_its_message(page: object, system: System) -> None:
    inject(endpoints.url(system.data_dir, "sim"), "DR7700001 pole 3 installed", GROUP_A)
    row = '#x-drops .project[data-project="lawley"] tr.drop[data-drop="DR7700001"]'

    def shown() -> bool:
        page.goto(system.url + "/")
        return page.locator(row).count() == 1
    wait_until(shown, 30, 0.5, "the drop on the console")  # the panel is at most 2 s behind the store
    assert page.inner_text(f"{row} td:nth-child(2)") == "Lawley Fibre"
    page.click(f"{row} a:has-text('messages')")
    page.wait_for_selector("text=DR7700001 (lawley)")
    assert "DR7700001 pole 3 installed" in page.inner_text("main")


def test_the_page_reads_without_javascript(playwright: object, system: System, tmp_path: Path) -> None:
    context = playwright.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                            headless=True, args=FLAGS, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(system.url + "/?range=1h")
        assert page.inner_text("#live") == "static page (reload to refresh)"
        for component in COMPONENTS:
            assert page.locator(f'tr.component[data-component="{component}"]').count() == 1
        assert page.locator('svg.timeline g.marks[data-row="bridge:main"] rect[data-kind="crash"]').count() >= 1
        assert page.locator("ol.incidents li").count() >= 1 and page.locator("#x-drops .project").count() == 2
        incident = page.locator("ol.incidents li details").first
        incident.locator("summary").click()  # an incident opens to its raw records without a script
        assert incident.get_attribute("open") is not None and '"event": "exit"' in page.content()
    finally:
        context.close()


def test_the_restart_button_restarts_after_signing_in_and_a_confirmation(page: object, system: System) -> None:
    page.goto(system.url + "/")
    page.click("text=sign in to restart")  # reading is open; acting needs the restart token
    page.fill('input[name="token"]', (system.data_dir / "run" / "control.token").read_text().strip())
    page.click('button:has-text("sign in")')
    page.wait_for_selector('tr.component[data-component="monitor:lawley"] details.confirm')
    before = system.pid("monitor:lawley")
    row = page.locator('tr.component[data-component="monitor:lawley"]')
    button = row.locator("button", has_text="restart monitor:lawley now")
    assert not button.is_visible()  # behind the confirmation
    row.locator("summary", has_text="restart").click()
    button.click()
    page.wait_for_selector("#flash")
    assert f"restarted monitor:lawley: pid {before} →" in page.inner_text("#flash")
    wait_until(lambda: system.pid("monitor:lawley") not in (None, before), 15, message="a new monitor:lawley")


def test_a_cross_origin_form_post_is_refused(page: object, system: System, tmp_path: Path) -> None:
    page.goto(system.url + "/")
    csrf = page.get_attribute('input[name="csrf"]', "value")  # even knowing the token does not help
    before = system.pid("bridge:main")
    (tmp_path / "console.html").write_text(
        f'<form id="f" method="post" action="{system.url}/console/restart">'
        f'<input name="component" value="bridge:main"><input name="csrf" value="{csrf}"></form>'
        f'<script>document.getElementById("f").submit()</script>')
    (tmp_path / "api.html").write_text(
        f'<form id="f" method="post" enctype="text/plain" action="{system.url}/restart/bridge:main">'
        f'<input name="x" value="y"></form><script>document.getElementById("f").submit()</script>')
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **kw)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for name in ("console.html", "api.html"):
            with page.expect_navigation(url=lambda u: u.startswith(system.url)) as navigation:
                page.goto(f"http://127.0.0.1:{server.server_address[1]}/{name}")
            response = navigation.value
            assert response.status == 403, name
            assert "refused" in page.content() or "is not allowed" in page.content()  # console / JSON API wording
    finally:
        server.shutdown()
        server.server_close()
    assert system.pid("bridge:main") == before


def test_logs_carry_the_writer_and_the_watchdog_writes_its_own(system: System) -> None:
    logs = system.data_dir / "logs"
    watchdog_log = (logs / "watchdog.log").read_text()
    assert f"watchdog[{system.procs.started[0].pid}] INFO" in watchdog_log
    bridge_log = wait_until(lambda: (t := (logs / "bridge-main.log").read_text()) and "bridge:main/standby[" in t
                            and t, 20, message="the standby's own lines")
    assert "standby pid" in bridge_log and "waiting for session" in bridge_log
