"""CORS on a real `wa-watchdog drops-api`: preflights answered without the token, CORS headers for the allowed
origins only; then a real Chromium on pages served from other 127.0.0.1 ports, one allowed and one not."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Processes
from tests.monitors.test_drops_api import TOKEN, api_config, get, record_drops, start_api

CHROMIUM = os.environ.get("WA_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.slow


def request(method: str, url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], object]:
    """(status, headers, JSON body or None) also for 4xx answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


class Pages:
    """Static pages on 127.0.0.1:<free port>: an origin of its own for the browser."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir()
        self.directory = directory
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Pages, Pages]]:
    allowed, other = Pages(tmp_path / "allowed"), Pages(tmp_path / "other")
    yield allowed, other
    allowed.close()
    other.close()


@pytest.fixture
def api(write_config, sites: tuple[Pages, Pages]) -> Iterator[str]:
    allowed, _ = sites
    config_path = write_config(api_config() + f'allowed_origins = ["{allowed.origin}"]\n')
    record_drops(config_path, 1)
    procs = Processes(config_path)
    try:
        yield start_api(procs, config_path.parent / "data")
    finally:
        procs.stop_all()


def test_preflights_without_the_token_and_cors_headers_for_allowed_origins_only(api: str,
                                                                                 sites: tuple[Pages, Pages]) -> None:
    allowed, other = sites
    drop_id = get(f"{api}/api/drops")[1]["drops"][0]["id"]
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type,idempotency-key"}
    status, headers, _ = request("OPTIONS", f"{api}/api/drops/{drop_id}/feedback",
                                 {"Origin": allowed.origin, **preflight})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == allowed.origin, (status, headers)
    assert headers["Access-Control-Allow-Methods"] == "POST" and headers["Vary"] == "Origin"
    assert {"authorization", "content-type", "idempotency-key"} <= {
        h.strip().lower() for h in headers["Access-Control-Allow-Headers"].split(",")}
    status, headers, _ = request("OPTIONS", f"{api}/api/drops", {"Origin": allowed.origin,
                                                                  "Access-Control-Request-Method": "GET"})
    assert status == 204 and "GET" in headers["Access-Control-Allow-Methods"]
    status, _, body = request("OPTIONS", f"{api}/api/drops", {"Origin": allowed.origin,
                                                              "Access-Control-Request-Method": "DELETE"})
    assert status == 405 and body["error"].startswith("method DELETE not allowed")

    for origin in (other.origin, "null", allowed.origin + ".evil.example"):  # never for another origin, never *
        status, headers, body = request("OPTIONS", f"{api}/api/drops/{drop_id}/feedback",
                                        {"Origin": origin, **preflight})
        assert status == 403 and "not allowed" in body["error"], (origin, status, body)
        assert "Access-Control-Allow-Origin" not in headers and headers["Vary"] == "Origin"
        status, headers, _ = request("GET", f"{api}/api/drops", {"Origin": origin, "Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and "Access-Control-Allow-Origin" not in headers

    status, headers, _ = request("GET", f"{api}/api/drops", {"Origin": allowed.origin,
                                                             "Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == allowed.origin
    status, headers, _ = request("GET", f"{api}/api/drops", {"Origin": allowed.origin})  # the page reads the 401
    assert status == 401 and headers["Access-Control-Allow-Origin"] == allowed.origin
    assert "WWW-Authenticate" in headers["Access-Control-Expose-Headers"]
    status, headers, _ = request("GET", f"{api}/api/drops", {"Authorization": f"Bearer {TOKEN}"})  # curl, a server
    assert status == 200 and "Access-Control-Allow-Origin" not in headers and headers["Vary"] == "Origin"


SCRIPT = """
window.result = (async () => {
  const auth = {"Authorization": "Bearer %(token)s"};
  try {
    const denied = await fetch("%(api)s/api/drops?limit=1");
    const list = await fetch("%(api)s/api/drops?limit=1", {headers: auth});
    const drop = (await list.json()).drops[0];
    const sent = await fetch(`%(api)s/api/drops/${drop.id}/feedback`, {
      method: "POST", body: JSON.stringify({message: "%(message)s"}),
      headers: {...auth, "Content-Type": "application/json", "Idempotency-Key": "%(message)s"}});
    return {denied: denied.status, list: list.status, sent: sent.status, feedback: (await sent.json()).feedback.text};
  } catch (error) {
    return {error: String(error)};
  }
})();
"""


def test_a_browser_page_on_an_allowed_origin_uses_the_api_and_another_origin_cannot(
        api: str, sites: tuple[Pages, Pages], tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    allowed, other = sites
    for site, message in ((allowed, "from the web app"), (other, "from elsewhere")):
        script = SCRIPT % {"api": api, "token": TOKEN, "message": message}
        (site.directory / "index.html").write_text(f"<!doctype html><title>app</title><script>{script}</script>")
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{allowed.origin}/index.html")
            result = page.evaluate("window.result")
            # no bridge runs: the feedback is recorded and left for the monitor (202)
            assert result == {"denied": 401, "list": 200, "sent": 202,
                              "feedback": "@27710000001 DR7000000 - from the web app"}, result
            page.goto(f"{other.origin}/index.html")
            result = page.evaluate("window.result")
            assert result == {"error": "TypeError: Failed to fetch"}, result
        finally:
            browser.close()
    drop_id = get(f"{api}/api/drops")[1]["drops"][0]["id"]
    assert [f["text"] for f in get(f"{api}/api/drops/{drop_id}")[1]["feedback"]] == [
        "@27710000001 DR7000000 - from the web app"]  # nothing from the other origin
