"""The control API over a real socket: status, restart, metrics, bearer token."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from watchdog.shared.config import WatchdogConfig
from watchdog.control.api import start_control_server
from watchdog.core.metrics import Metrics

COMPONENTS = [
    {"name": "bridge:main", "pid": 4242, "state": "running", "healthy": True, "uptime_s": 12.5, "restarts": 2,
     "last_cause": "SIGKILL", "endpoints": {"api": "http://127.0.0.1:8080"}, "status_text": "connected",
     "standby_pid": 4244},
    {"name": "monitor:lawley", "pid": 4243, "state": "running", "healthy": True, "uptime_s": 30.0, "restarts": 0,
     "last_cause": None, "endpoints": {}, "status_text": ""},
]


class Provider:
    """Stands in for the arbiter: what it was asked to restart, and its answers."""

    def __init__(self) -> None:
        self.restarted: list[str] = []
        self.reloads: list[str] = []
        self.reload_error = ""  # set: the next reload is refused with it, as an invalid config is

    def config_info(self) -> dict:
        return {"path": "/etc/wa-watchdog/config.toml", "sha256": "3f2a9c01d4e5" + "0" * 52, "loaded_at": 0.0,
                "age_s": 125.0, "reloads": 1, "programs": [c["name"] for c in COMPONENTS]}

    async def reload(self, cause: str) -> dict:
        self.reloads.append(cause)
        if self.reload_error:
            return {"ok": False, "error": self.reload_error}
        return {"ok": True, "sha256": "ab" * 32, "added": ["monitor:new"], "removed": [], "changed": [],
                "not_applied": []}

    def status(self) -> list[dict]:
        return COMPONENTS

    async def restart(self, name: str) -> dict:
        if name not in {c["name"] for c in COMPONENTS}:
            raise KeyError(name)
        if name == "monitor:lawley":
            raise RuntimeError(f"{name}: the watchdog is shutting down")
        self.restarted.append(name)
        return {"name": name, "old_pid": 4242, "pid": 5000, "state": "starting"}


def serve(config: WatchdogConfig, scenario: Callable[[str, Provider, aiohttp.ClientSession], Awaitable[None]]) -> Provider:
    provider = Provider()

    async def main() -> None:
        metrics = Metrics()
        metrics.count_restart("bridge:main", "SIGKILL")
        runner, url = await start_control_server(config, provider.status, provider.restart, metrics,
                                                 provider.reload, provider.config_info)
        try:
            async with aiohttp.ClientSession() as session:
                await scenario(url, provider, session)
        finally:
            await runner.cleanup()
    asyncio.run(main())
    return provider


def test_status_restart_and_metrics() -> None:
    async def scenario(url: str, provider: Provider, session: aiohttp.ClientSession) -> None:
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        async with session.get(f"{url}/status") as response:
            assert response.status == 200
            assert await response.json() == COMPONENTS
        async with session.post(f"{url}/restart/bridge:main") as response:
            assert response.status == 200
            assert await response.json() == {"name": "bridge:main", "old_pid": 4242, "pid": 5000, "state": "starting"}
        async with session.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            assert 'wa_watchdog_restarts_total{cause="SIGKILL",component="bridge:main"} 1.0' in await response.text()

    assert serve(WatchdogConfig(), scenario).restarted == ["bridge:main"]


def test_restart_of_an_unknown_component_is_404() -> None:
    async def scenario(url: str, provider: Provider, session: aiohttp.ClientSession) -> None:
        async with session.post(f"{url}/restart/bridge:nope") as response:
            assert response.status == 404
            assert await response.json() == {"error": "no component named bridge:nope"}

    assert serve(WatchdogConfig(), scenario).restarted == []


def test_a_restart_refused_by_the_watchdog_is_409_with_its_reason() -> None:
    async def scenario(url: str, provider: Provider, session: aiohttp.ClientSession) -> None:
        async with session.post(f"{url}/restart/monitor:lawley") as response:
            assert response.status == 409
            assert await response.json() == {"error": "monitor:lawley: the watchdog is shutting down"}

    assert serve(WatchdogConfig(), scenario).restarted == []


def test_a_configured_token_is_required_on_every_route() -> None:
    async def scenario(url: str, provider: Provider, session: aiohttp.ClientSession) -> None:
        for method, path in (("GET", "/status"), ("POST", "/restart/bridge:main"), ("GET", "/metrics")):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
                async with session.request(method, url + path, headers=headers) as response:
                    assert response.status == 401, (method, path, headers)
            async with session.request(method, url + path, headers={"Authorization": "Bearer s3cret"}) as response:
                assert response.status == 200, (method, path)

    assert serve(WatchdogConfig(control_token="s3cret"), scenario).restarted == ["bridge:main"]


def test_a_taken_port_is_a_clear_error() -> None:
    async def main() -> None:
        runner, url = await start_control_server(WatchdogConfig(), list, Provider().restart, Metrics())
        try:
            port = int(url.rsplit(":", 1)[1])
            with pytest.raises(OSError, match=f"control API cannot listen on 127.0.0.1:{port}"):
                await start_control_server(WatchdogConfig(control_port=port), list, Provider().restart, Metrics())
        finally:
            await runner.cleanup()
    asyncio.run(main())


def test_a_browser_page_cannot_restart_a_component() -> None:
    async def scenario(url: str, provider: Provider, session: aiohttp.ClientSession) -> None:
        port = url.rsplit(":", 1)[1]
        forgeries = [({"Content-Type": "text/plain"}, "x", 415), ({"Content-Type": "application/x-www-form-urlencoded"}, "", 415),
                     ({"Origin": "http://evil.example"}, None, 403), ({"Origin": "null"}, None, 403),
                     ({"Host": f"evil.example:{port}"}, None, 403), ({"Sec-Fetch-Site": "cross-site"}, None, 403)]
        for headers, data, status in forgeries:
            async with session.post(f"{url}/restart/bridge:main", headers=headers, data=data) as response:
                assert response.status == status, headers
                assert "error" in await response.json()
        async with session.get(f"{url}/restart/bridge:main") as response:
            assert response.status == 405 and "allowed: POST" in (await response.json())["error"]

    assert serve(WatchdogConfig(), scenario).restarted == []
