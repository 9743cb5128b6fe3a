"""The browser-forgery guard and JSON errors, over a real socket: each forgery a page can make is refused
before the handler runs; curl-like and whatsapp-mcp-like clients pass."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from loguru import logger

from watchdog.shared import web_guard
from watchdog.shared.logs import RateLimitedLog

TOKEN = "t0ken"
Scenario = Callable[[str, list, aiohttp.ClientSession], Awaitable[None]]


def serve(scenario: Scenario, **guard: object) -> list:
    """Run `scenario(url, acted, session)` against an app whose POST /act records its JSON body in `acted`."""
    acted: list = []

    async def act(request: web.Request) -> web.Response:
        acted.append(await web_guard.json_body(request))
        return web.json_response({"ok": True})

    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret detail")

    async def main() -> None:
        app = web.Application(middlewares=web_guard.middlewares(**guard), client_max_size=200_000)
        app.router.add_post("/act", act)
        app.router.add_get("/boom", boom)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession() as session:
                await scenario(str(server.make_url("")).rstrip("/"), acted, session)
        finally:
            await server.close()
    asyncio.run(main())
    return acted


async def answer(session: aiohttp.ClientSession, method: str, url: str, **kwargs: object) -> tuple[int, dict]:
    async with session.request(method, url, **kwargs) as response:
        assert response.content_type == "application/json", await response.text()
        return response.status, await response.json()


def test_every_browser_forgery_is_refused_and_nothing_runs() -> None:
    async def scenario(url: str, acted: list, session: aiohttp.ClientSession) -> None:
        port = url.rsplit(":", 1)[1]
        forgeries = [  # (what a page can send without a preflight, expected status, words of the answer)
            ({"data": "recipient=x&message=y", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
             415, "application/json"),  # a form post without Origin (old browsers)
            ({"data": "", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}, 415, "application/json"),
            ({"data": '{"message": "x"}', "headers": {"Content-Type": "text/plain"}}, 415, "text/plain"),
            ({"data": '{"message": "x"}', "headers": {"Content-Type": "text/plain", "Origin": "http://evil.example"}},
             403, "Origin 'http://evil.example'"),
            ({"json": {"m": 1}, "headers": {"Origin": "null"}}, 403, "Origin: null"),
            ({"json": {"m": 1}, "headers": {"Origin": "http://127.0.0.1:1"}}, 403, "is not allowed"),  # other port
            ({"json": {"m": 1}, "headers": {"Host": f"rebound.evil.example:{port}"}}, 403, "DNS-rebinding"),
            ({"json": {"m": 1}, "headers": {"Sec-Fetch-Site": "cross-site"}}, 403, "cross-site"),
            ({"json": {"m": 1}, "headers": {"Sec-Fetch-Site": "same-site"}}, 403, "same-site"),
        ]
        for kwargs, status, words in forgeries:
            got, body = await answer(session, "POST", f"{url}/act", **kwargs)
            assert got == status and words in body["error"], (kwargs, got, body)
        assert acted == []
        # curl, a server-side web app and whatsapp-mcp's client (requests json=) send none of that
        assert (await answer(session, "POST", f"{url}/act", json={"m": 1}))[0] == 200
        assert (await answer(session, "POST", f"{url}/act", data=b'{"m": 2}',
                             headers={"Content-Type": "application/json; charset=utf-8"}))[0] == 200
        assert (await answer(session, "POST", f"{url}/act", json={"m": 3},  # the page's own origin
                             headers={"Origin": url, "Sec-Fetch-Site": "same-origin"}))[0] == 200
        assert (await answer(session, "POST", f"{url}/act", json={"m": 4}, headers={"Host": f"localhost:{port}"}))[0] == 200
        assert acted == [{"m": 1}, {"m": 2}, {"m": 3}, {"m": 4}]
        # reading is not guarded: a GET from a foreign page cannot act
        assert (await answer(session, "GET", f"{url}/nope", headers={"Origin": "http://evil.example"}))[0] == 404

    serve(scenario)


def test_allow_lists_for_a_reverse_proxy() -> None:
    async def scenario(url: str, acted: list, session: aiohttp.ClientSession) -> None:
        proxied = {"Host": "wa.example.com", "Origin": "https://qa.example.com", "Sec-Fetch-Site": "cross-site"}
        assert (await answer(session, "POST", f"{url}/act", json={"m": 1}, headers=proxied))[0] == 200
        status, body = await answer(session, "POST", f"{url}/act", json={"m": 2},
                                    headers={**proxied, "Origin": "https://other.example.com"})
        assert status == 403 and "allowed_origins" in body["error"]
        assert acted == [{"m": 1}]

    serve(scenario, allowed_hosts=["wa.example.com"], allowed_origins=["https://QA.example.com/"])


def test_errors_are_json_in_the_shape_asked_for() -> None:
    async def scenario(url: str, acted: list, session: aiohttp.ClientSession) -> None:
        status, body = await answer(session, "GET", f"{url}/act")
        assert status == 405 and body == {"success": False, "message": "method GET not allowed on /act (allowed: POST)"}
        assert (await answer(session, "GET", f"{url}/nope"))[1]["message"] == "no such endpoint: GET /nope"
        status, body = await answer(session, "POST", f"{url}/act", json={"pad": "x" * 300_000})
        assert status == 413 and "200000" in body["message"]
        status, body = await answer(session, "GET", f"{url}/boom")
        assert status == 500 and body == {"success": False, "message": "internal error: RuntimeError"}
        cases = [(b"[" * 100_000, "nested deeper than 32"), (b"[" * 33 + b"]" * 33, "nested deeper than 32"),
                 (b'{"message": "bad \\udfff"}', "message contains a lone surrogate"),
                 (b'{"a": [1, {"\\ud800": 1}]}', "a key in a[1] contains a lone surrogate"),
                 (b"\xff\xfe{", "bad JSON"), (b"{not json", "bad JSON")]
        for raw, words in cases:
            status, body = await answer(session, "POST", f"{url}/act", data=raw,
                                        headers={"Content-Type": "application/json"})
            assert status == 400 and words in body["message"], (raw[:40], body)
        assert acted == []

    serve(scenario, error_body=web_guard.mcp_shape)


def test_a_nul_or_an_integer_too_long_to_convert_is_a_400_naming_the_field_never_a_500() -> None:
    """int() of more than 4,300 digits raises ValueError (not a JSONDecodeError): it used to be a 500."""
    async def scenario(url: str, acted: list, session: aiohttp.ClientSession) -> None:
        cases = [(b'{"message": "a\\u0000b"}', "message contains a NUL character"),
                 (b'{"a": {"\\u0000": 1}}', "a key in a contains a NUL character"),
                 (b'{"limit": %s}' % (b"9" * 5000), "limit is a number of 5,000 digits (at most 100)"),
                 (b'{"pad": "%s", "n": [-%s]}' % (b"x" * 70_000, b"1" * 101), "n[0] is a number of 101 digits")]
        for raw, words in cases:
            status, body = await answer(session, "POST", f"{url}/act", data=raw,
                                        headers={"Content-Type": "application/json"})
            assert status == 400 and words in body["error"], (raw[:40], body)
        assert acted == []
        fine = {"n": int("9" * 100), "t": "tab\tnew\nline"}
        assert (await answer(session, "POST", f"{url}/act", json=fine))[0] == 200
        assert acted == [fine]

    serve(scenario)


def test_bearer_token_scheme_is_case_insensitive_and_checked_in_constant_time() -> None:
    async def scenario(url: str, acted: list, session: aiohttp.ClientSession) -> None:
        for header in (None, TOKEN, f"Bearer {TOKEN}x", f"Basic {TOKEN}", "Bearer "):
            status, body = await answer(session, "POST", f"{url}/act", json={},
                                        headers={"Authorization": header} if header else {})
            assert status == 401 and "bearer token" in body["error"], header
        for header in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER   {TOKEN} "):
            assert (await answer(session, "POST", f"{url}/act", json={}, headers={"Authorization": header}))[0] == 200
        async with session.get(f"{url}/nope") as response:
            assert response.status == 401 and response.headers["WWW-Authenticate"] == "Bearer"

    serve(scenario, token=TOKEN)
    assert web_guard.bearer_token("bEaReR abc") == "abc" and web_guard.bearer_token("Bearer") is None
    assert web_guard.authorized(None, "") and not web_guard.authorized("Bearer \udcff", TOKEN)


def test_refusals_are_logged_once_per_client_and_minute_with_a_count() -> None:
    now = [1000.0]
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        log = RateLimitedLog(clock=lambda: now[0])
        assert [log.report("10.0.0.1", "refused a request from 10.0.0.1: 403 Origin") for _ in range(5)] == [
            True, False, False, False, False]
        assert log.report("10.0.0.2", "refused a request from 10.0.0.2: 401 token") is True
        now[0] += 61
        assert log.report("10.0.0.1", "refused a request from 10.0.0.1: 403 Origin") is True
    finally:
        logger.remove(sink)
    assert [line.strip() for line in lines] == [
        "refused a request from 10.0.0.1: 403 Origin", "refused a request from 10.0.0.2: 401 token",
        "refused a request from 10.0.0.1: 403 Origin (4 more like this in the last 60 s)"]


@pytest.mark.slow
@pytest.mark.parametrize("text, problem", [("ok", None), ({"a": ["\udfff"]}, "a[0] contains a lone surrogate (not valid Unicode text)")])
def test_json_problem_names_the_field(text: object, problem: str | None) -> None:
    assert web_guard.json_problem(json.loads(json.dumps(text))) == problem
