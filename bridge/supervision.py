"""The bridge's hooks for the watchdog (`bridge.supervision:hooks`): how to read its health, its warm standby.

Its `GET /api/health` is classified, not just "up or down": a 503 `connecting`
/ `disconnected` is a WhatsApp-side outage (a restart would not bring WhatsApp
back), `stream_replaced` / `logged_out` need an operator, and only no answer,
a timeout or `store_error` mean the bridge itself is unwell. The standby is the
same command with `--standby`: it loads everything, then blocks on the session
lock, which the kernel hands it when the owner dies.

Imported by the watchdog: keep it free of the bridge's own (heavy) imports.
"""
from __future__ import annotations

import json
from datetime import datetime

from watchdog.hooks import Hooks
from watchdog.probes import FAILURE, OK, OPERATOR, OUTAGE, HealthResult
from watchdog.programs import Check, Program

OUTAGE_STATES = ("connecting", "disconnected")
OPERATOR_STATES = ("stream_replaced", "logged_out")


def classify(status: int, body: object) -> HealthResult:
    """Turn an HTTP status and decoded JSON body from /api/health into a HealthResult."""
    if not isinstance(body, dict):
        return HealthResult(FAILURE, "bad answer", f"HTTP {status} without a JSON object")
    state = str(body.get("state", ""))
    if status == 200:
        return HealthResult(OK, state or "connected")
    if state in OUTAGE_STATES:
        return HealthResult(OUTAGE, state, str(body.get("reason", "")), _window_start(body.get("open_window")))
    if state in OPERATOR_STATES:
        return HealthResult(OPERATOR, state, str(body.get("reason", "")))
    return HealthResult(FAILURE, state or f"HTTP {status}", str(body.get("reason", "")))


def _window_start(window: object) -> float | None:
    if not isinstance(window, dict):
        return None
    try:
        return datetime.fromisoformat(str(window.get("started_at"))).timestamp()
    except ValueError:
        return None


def _classify_bytes(status: int, body: bytes) -> HealthResult:
    try:
        decoded = json.loads(body)
    except ValueError:
        decoded = None
    return classify(status, decoded)


class BridgeHooks(Hooks):
    def classifier(self, check: Check):
        return _classify_bytes

    def standby_argv(self, program: Program) -> tuple[str, ...]:
        return (*program.argv, "--standby")


hooks = BridgeHooks()
