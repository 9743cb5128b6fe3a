"""Bounded connections over real sockets: a cap that sheds with 503, a header-read timeout, aiohttp's own
protocol errors as JSON, repeated events logged once with a count, a probe that tells the cap's 503
(overloaded) from a failure, and the service's own unix socket outside the cap."""
from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from aiohttp import web
from loguru import logger

from watchdog.core import probes
from watchdog.shared import web_guard
from watchdog.shared.http_server import LimitedRunner, serve_private

Scenario = Callable[[str, int], Awaitable[None]]


def serve(scenario: Scenario, private: Path | None = None, **limits: object) -> list[str]:
    """Run `scenario(url, port)` against a guarded app served by LimitedRunner (also on the unix socket `private`
    when given); returns the warnings logged."""
    lines: list[str] = []

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "state": "connected"})

    async def main() -> None:
        app = web.Application(middlewares=web_guard.middlewares(error_body=web_guard.mcp_shape))
        app.router.add_get("/api/health", health)
        runner = LimitedRunner(app, error_body=web_guard.mcp_shape, access_log=None, **limits)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        if private is not None:
            assert await serve_private(runner, private)
        try:
            await scenario(f"http://127.0.0.1:{port}", port)
        finally:
            await runner.cleanup()

    sink = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        asyncio.run(main())
    finally:
        logger.remove(sink)
    return lines


async def raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def test_connections_above_the_cap_get_503_at_once_and_the_log_says_so_once() -> None:
    async def scenario(url: str, port: int) -> None:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        await asyncio.sleep(0)  # let the server register them
        for _ in range(10):
            answer = await raw(port, b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head
            assert json.loads(body) == {"success": False, "message": "too many connections; retry shortly"}
        for _, writer in idle:
            writer.close()
        async with aiohttp.ClientSession() as session:
            for _ in range(50):  # the slots come back once the idle ones are gone
                async with session.get(f"{url}/api/health") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert response.status == 200

    lines = serve(scenario, max_connections=3)
    assert len([line for line in lines if "shedding connections with 503" in line]) == 1


def test_a_connection_that_never_finishes_its_headers_is_closed() -> None:
    async def scenario(url: str, port: int) -> None:
        started = asyncio.get_running_loop().time()
        assert await raw(port, b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Slow: ") == b""  # closed, nothing answered
        assert asyncio.get_running_loop().time() - started < 4.5
        assert await raw(port, b"") == b""  # a connection that sends nothing at all too

    serve(scenario, header_timeout=0.3)


def test_aiohttps_own_400s_are_json_and_logged_once_a_minute() -> None:
    async def scenario(url: str, port: int) -> None:
        for request in (b"NOT HTTP AT ALL\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"):
            head, _, body = (await raw(port, request)).partition(b"\r\n\r\n")
            assert head.split(b" ")[1] == b"400" and b"application/json" in head, head
            assert json.loads(body)["success"] is False and json.loads(body)["message"]

    lines = serve(scenario)
    assert len([line for line in lines if "malformed HTTP request (400)" in line]) == 1


def test_a_new_connection_is_probed_and_the_caps_503_is_overloaded_not_a_failure() -> None:
    async def scenario(url: str, port: int) -> None:
        async with aiohttp.ClientSession() as pooled, aiohttp.ClientSession() as watchdog:
            health = f"{url}/api/health"
            assert (await probes.probe_http(watchdog, health, 2.0, probes.expect_status(200))).kind == probes.OK
            async with pooled.get(f"{url}/api/health") as response:  # takes the one slot and keeps it
                assert response.status == 200
            result = await probes.probe_http(watchdog, health, 2.0, probes.expect_status(200))
            assert result.kind == probes.OVERLOADED and "limit of 1 connections" in result.detail, result
            async with pooled.get(f"{url}/api/health") as response:  # the old connection is still served
                assert response.status == 200

    serve(scenario, max_connections=1)


def test_the_services_own_unix_socket_is_neither_counted_nor_shed(tmp_path: Path) -> None:
    """Every public slot held by a connection that sent half a request header: the probe over the 0600 unix
    socket is answered at once, and unix connections do not take public slots either."""
    private = tmp_path / "run" / "bridge-main.sock"

    async def scenario(url: str, port: int) -> None:
        held = []
        for _ in range(3):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/health HTTP/1.1\r\nHost: loc")
            held.append(writer)
        async with aiohttp.ClientSession() as watchdog:
            shed = await probes.probe_http(watchdog, f"{url}/api/health", 2.0, probes.expect_status(200))
            assert shed.kind == probes.OVERLOADED, shed
            own = [await probes.probe_http(watchdog, "http://localhost/api/health", 2.0, probes.expect_status(200),
                                           unix_socket=str(private)) for _ in range(5)]
            assert [r.kind for r in own] == [probes.OK] * 5
        for writer in held:
            writer.close()

    serve(scenario, private=private, max_connections=3)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600 and stat.S_IMODE(os.stat(private.parent).st_mode) == 0o700
