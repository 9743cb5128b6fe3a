"""The console over a real socket without a browser: the page, forged requests refused, sign-in, live stream."""
from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import BASE_CONFIG
from watchdog.components import load
from watchdog.control.console.changes import Changes
from watchdog.control.console.extensions import load as load_views
from watchdog.control.console.view import Console
from watchdog.control.api import start_control_server
from watchdog.core.metrics import Metrics
from watchdog.shared.recovery_log import RecoveryLog

COMPONENTS = [
    {"name": "bridge:main", "pid": 4242, "state": "running", "healthy": True, "condition": "connected",
     "uptime_s": 12.5, "restarts": 2, "last_cause": "SIGKILL", "endpoints": {}, "status_text": "", "alerts": [],
     "standby_pid": 4244, "connection": {"connected": True, "state": "connected", "reason": "", "open_window": None,
                                         "outbox_depth": 3, "last_event_age_s": 0.4, "caught_up": True,
                                         "sending": {"paused": False, "reason": "", "until": None, "rate_limited": 0,
                                                     "depth": 3, "next_send_at": "2026-12-06T17:00:12+00:00",
                                                     "next_send_s": 12.0, "drain_s": 95.0}}},
    {"name": "monitor:lawley", "pid": 4243, "state": "backoff", "healthy": False, "condition": "", "uptime_s": None,
     "restarts": 0, "last_cause": "exit code 1", "endpoints": {}, "status_text": "", "alerts": ["crash_loop"]},
]


class Arbiter:
    def __init__(self) -> None:
        self.restarted: list[str] = []
        self.changes = Changes()

    def status(self) -> list[dict]:
        return COMPONENTS

    async def restart(self, name: str) -> dict:
        if name not in {c["name"] for c in COMPONENTS}:
            raise KeyError(name)
        self.restarted.append(name)
        return {"name": name, "old_pid": 4242, "pid": 5000, "state": "starting"}


Scenario = Callable[[str, Arbiter, aiohttp.ClientSession], Awaitable[None]]


def serve(tmp_path: Path, scenario: Scenario, token: str = "", restart_token: str = "") -> Arbiter:
    text = BASE_CONFIG.replace("control_port = 0", f'control_port = 0\ncontrol_token = "{token}"') if token \
        else BASE_CONFIG
    (tmp_path / "wa.toml").write_text(text)
    config = load(tmp_path / "wa.toml")
    RecoveryLog(config.watchdog.recovery_log).append("bridge:main", "exit", pid=4000, cause="SIGKILL")
    arbiter = Arbiter()

    async def main() -> None:
        console = Console(config, arbiter.status, arbiter.restart,  # the bridge's view draws its connection line
                          load_views(config, ("bridge.console_view:ConnectionView",)))
        runner, url = await start_control_server(config.watchdog, arbiter.status, arbiter.restart, Metrics(),
                                                 restart_token=restart_token, console=console,
                                                 changes=arbiter.changes)
        try:
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # IP hosts
                await scenario(url, arbiter, session)
        finally:
            await runner.cleanup()
    asyncio.run(main())
    return arbiter


async def page_and_csrf(session: aiohttp.ClientSession, url: str) -> tuple[str, str]:
    async with session.get(url + "/") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        html = await response.text()
    return html, re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def test_the_page_shows_every_component_and_reads_without_javascript(tmp_path: Path) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        html, _ = await page_and_csrf(session, url)
        for c in COMPONENTS:
            assert f'data-component="{c["name"]}"' in html
        assert "1 of 2 not healthy: monitor:lawley" in html and "alerts firing: monitor:lawley crash loop" in html
        assert "outbox 3" in html and "connected" in html
        assert "next send 17:00:12 UTC, drained in ~" in html  # the paced queue (bridge/pace.py)
        assert '<svg class="timeline"' in html and 'data-kind="crash"' in html  # the outage in the log, drawn
        assert "killed by SIGKILL" in html  # the incident
        # the firing alert says what to do, and where the runbook says the rest
        assert 'href="#do-crash_loop"' in html and '<li id="do-crash_loop"' in html
        assert "wa-watchdog recoveries --component COMPONENT" in html and "docs/OPERATIONS.md#alert-crash-loop" in html
        assert "http://" not in html.replace(url, "")  # nothing from elsewhere: no CDN, no web fonts
        for asset in ("console.css", "console.js"):
            async with session.get(f"{url}/console/static/{asset}") as response:
                assert response.status == 200 and len(await response.read()) > 100
        async with session.get(url + "/?range=7d") as response:
            assert 'data-range="7d"' in await response.text()

    serve(tmp_path, scenario)


def test_a_restart_needs_our_origin_and_the_csrf_token(tmp_path: Path) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        _, csrf = await page_and_csrf(session, url)
        form = {"component": "bridge:main", "csrf": csrf}
        forged = [
            ({"Origin": "http://127.0.0.1:1"}, form),  # another page on this host
            ({"Origin": "null"}, form),  # a sandboxed or data: page
            ({"Origin": url, "Sec-Fetch-Site": "same-site"}, form),
            ({}, form),  # no Origin, no Referer: not a form on our page
            ({"Origin": url}, {"component": "bridge:main"}),  # no token
            ({"Origin": url}, {"component": "bridge:main", "csrf": "0" * 64}),
        ]
        for headers, data in forged:
            async with session.post(url + "/console/restart", data=data, headers=headers,
                                    allow_redirects=False) as response:
                assert response.status == 403, headers
        assert arbiter.restarted == []
        async with session.post(url + "/console/restart", data=form, headers={"Origin": url},
                                allow_redirects=False) as response:
            assert response.status == 303
            assert response.headers["Location"] == "/?restarted=bridge%3Amain&old=4242&pid=5000"
        async with session.get(url + response.headers["Location"]) as response:
            assert "restarted bridge:main: pid 4242 → 5000" in await response.text()
        assert arbiter.restarted == ["bridge:main"]

    serve(tmp_path, scenario)


def test_the_json_api_refuses_browser_forgeries_but_not_the_cli(tmp_path: Path) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        for headers in ({"Origin": "http://127.0.0.1:1", "Content-Type": "text/plain"},
                        {"Sec-Fetch-Site": "cross-site"}, {"Host": "evil.example:80"}):
            async with session.post(url + "/restart/bridge:main", headers=headers) as response:
                assert response.status == 403, headers
                assert (await response.json())["error"]  # web_guard's reason
        async with session.get(url + "/", headers={"Host": "evil.example"}) as response:
            assert response.status == 403  # DNS rebinding: the page (and its CSRF token) stays unreadable
        async with session.post(url + "/restart/bridge:main") as response:  # what the CLI sends
            assert response.status == 200
        assert arbiter.restarted == ["bridge:main"]

    serve(tmp_path, scenario)


def test_with_a_control_token_the_browser_signs_in_and_the_api_still_wants_the_bearer(tmp_path: Path) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        async with session.get(url + "/") as response:
            assert response.status == 401 and 'action="/console/login"' in await response.text()
        async with session.get(url + "/console/static/console.css") as response:
            assert response.status == 200
        async with session.post(url + "/console/login", data={"token": "wrong"}, headers={"Origin": url}) as response:
            assert response.status == 401 and "wrong token" in await response.text()
        async with session.post(url + "/console/login", data={"token": "s3cret"},
                                headers={"Origin": "http://127.0.0.1:1"}) as response:
            assert response.status == 403
        async with session.post(url + "/console/login", data={"token": "s3cret"}, headers={"Origin": url},
                                allow_redirects=False) as response:
            assert response.status == 303
        html, _ = await page_and_csrf(session, url)  # the cookie now opens the page
        assert 'data-component="bridge:main"' in html
        async with session.get(url + "/status") as response:
            assert response.status == 401  # the JSON API is for bearer-token clients only

    serve(tmp_path, scenario, token="s3cret")


def test_the_live_stream_sends_panels_and_again_on_a_change(tmp_path: Path) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        async with session.get(url + "/console/events") as response:
            assert response.status == 406  # not an EventSource: refused rather than left hanging
        async with session.get(url + "/console/events", headers={"Accept": "text/event-stream"},
                               timeout=aiohttp.ClientTimeout(total=20)) as response:
            assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"  # else read as Latin-1
            names = []
            while not {"now", "timeline", "incidents", "logs"} <= set(names):
                line = (await response.content.readline()).decode()
                if line.startswith("event: "):
                    names.append(line[7:].strip())
            COMPONENTS[0]["pid"] = 4343
            try:
                arbiter.changes.bump()
                while True:
                    line = (await response.content.readline()).decode()
                    if line.startswith("data: ") and 'data-pid="4343"' in line:
                        break
            finally:
                COMPONENTS[0]["pid"] = 4242

    serve(tmp_path, scenario)


def test_with_the_restart_token_reading_is_open_and_a_restart_needs_signing_in(tmp_path: Path) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        async with session.get(url + "/") as response:
            html = await response.text()
        assert response.status == 200 and 'data-component="bridge:main"' in html
        assert 'name="csrf"' not in html and 'href="/console/login">sign in to restart' in html
        async with session.post(url + "/console/restart", data={"component": "bridge:main", "csrf": "x"},
                                headers={"Origin": url}) as response:
            assert response.status == 401 and "sign in" in await response.text()
        async with session.get(url + "/console/login") as response:
            assert "run/control.token" in await response.text()
        async with session.post(url + "/console/login", data={"token": "r3start"}, headers={"Origin": url},
                                allow_redirects=False) as response:
            assert response.status == 303
        _, csrf = await page_and_csrf(session, url)
        async with session.post(url + "/console/restart", data={"component": "bridge:main", "csrf": csrf},
                                headers={"Origin": url}, allow_redirects=False) as response:
            assert response.status == 303
        assert arbiter.restarted == ["bridge:main"]
        async with session.post(url + "/restart/bridge:main") as response:
            assert response.status == 401  # the JSON API wants the bearer token, not the console's cookie

    serve(tmp_path, scenario, restart_token="r3start")


@pytest.mark.parametrize("query", ["?range=bogus", "?range=%00"])
def test_a_bad_range_falls_back_to_24_hours(tmp_path: Path, query: str) -> None:
    async def scenario(url: str, arbiter: Arbiter, session: aiohttp.ClientSession) -> None:
        async with session.get(url + "/" + query) as response:
            assert response.status == 200 and 'data-range="24h"' in await response.text()

    serve(tmp_path, scenario)
