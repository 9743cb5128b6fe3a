"""Health checks a child cannot fake by heartbeating: the bridge's /api/health, and resident memory.

The health answer is classified, not just "up or down": a bridge that answers
503 `disconnected` is a WhatsApp-side outage (a restart would not bring
WhatsApp back), `stream_replaced` / `logged_out` need an operator, and only
no answer, a timeout or `store_error` mean the process itself is unwell.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

import aiohttp
import psutil

OK = "ok"  # 200: connected, store writable
OUTAGE = "outage"  # connecting / disconnected: WhatsApp's side, do not restart
OPERATOR = "operator"  # stream_replaced / logged_out: alert, do not restart
FAILURE = "failure"  # no answer, timeout, store_error, nonsense: counts towards failure_threshold

OUTAGE_STATES = ("connecting", "disconnected")
OPERATOR_STATES = ("stream_replaced", "logged_out")


@dataclass(frozen=True)
class HealthResult:
    kind: str
    state: str  # the bridge's `state`, or what went wrong ("timeout", "connection refused", ...)
    detail: str = ""
    outage_started_at: float | None = None  # epoch seconds, from open_window.started_at
    body: dict | None = None  # the bridge's answer as it came (connection details for the console)


def classify(status: int, body: object) -> HealthResult:
    """Turn an HTTP status and decoded JSON body from /api/health into a HealthResult."""
    if not isinstance(body, dict):
        return HealthResult(FAILURE, "bad answer", f"HTTP {status} without a JSON object")
    state = str(body.get("state", ""))
    if status == 200:
        return HealthResult(OK, state or "connected", body=body)
    if state in OUTAGE_STATES:
        return HealthResult(OUTAGE, state, str(body.get("reason", "")), _window_start(body.get("open_window")),
                            body=body)
    if state in OPERATOR_STATES:
        return HealthResult(OPERATOR, state, str(body.get("reason", "")), body=body)
    return HealthResult(FAILURE, state or f"HTTP {status}", str(body.get("reason", "")), body=body)


def _window_start(window: object) -> float | None:
    if not isinstance(window, dict):
        return None
    try:
        return datetime.fromisoformat(str(window.get("started_at"))).timestamp()
    except ValueError:
        return None


async def probe_health(session: aiohttp.ClientSession, url: str, timeout: float, token: str = "") -> HealthResult:
    """GET <url>/api/health within `timeout` seconds, with the bridge's bearer token when it has one."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with session.get(url.rstrip("/") + "/api/health", headers=headers,
                               timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            return classify(response.status, body)
    except asyncio.TimeoutError:
        return HealthResult(FAILURE, "timeout", f"no answer within {timeout:g} s")
    except aiohttp.ClientConnectorError as exc:
        return HealthResult(FAILURE, "connection refused", str(exc.os_error or exc))
    except aiohttp.ClientError as exc:
        return HealthResult(FAILURE, "no answer", f"{type(exc).__name__}: {exc}")


def is_stopped(pid: int) -> bool:
    """True if the process is frozen by SIGSTOP: it cannot answer, however long we wait.

    A tracing stop (strace, a debugger) does not count: an operator is looking at it.
    """
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.Error:
        return False


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a process and all its descendants; None if it is gone."""
    try:
        process = psutil.Process(pid)
        total = process.memory_info().rss
        for child in process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                continue
        return total
    except psutil.Error:
        return None
