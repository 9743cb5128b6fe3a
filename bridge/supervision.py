"""The bridge's hooks for the watchdog (`bridge.supervision:hooks`): how to read its health, its warm standby.

Its `GET /api/health` is classified, not just "up or down": a 503 `connecting`
/ `disconnected` is a WhatsApp-side outage (a restart would not bring WhatsApp
back), `stream_replaced` / `logged_out` need an operator, `temporary_ban` is
alerted (its reason names WhatsApp's code and the expiry) and resolved when the
bridge connects again after it, and only no answer
or a timeout mean the bridge itself is unwell. `store_error` (disk full, the
store locked by another program) is answered by a live event loop: a restart
would not free the disk or the lock, so it is an outage too (alerted with its
reason, not restarted). The standby is the
same command with `--standby`: it loads everything, then blocks on the session
lock, which the kernel hands it when the owner dies.

Imported by the watchdog: keep it free of the bridge's own (heavy) imports.
"""
from __future__ import annotations

import json
from datetime import datetime

from bridge.alert_rules import DISCONNECT, NOT_PAIRED
from watchdog.core.hooks import EXIT_RULES, ExitRule, Hooks  # the extension point: what a hook may say
from watchdog.core.probes import FAILURE, OK, OPERATOR, OUTAGE, HealthResult
from watchdog.shared.exitcodes import EXIT_NEEDS_OPERATOR
from watchdog.shared.programs import Check, Program

OUTAGE_STATES = ("connecting", "disconnected", "store_error")
OPERATOR_STATES = ("stream_replaced", "logged_out", "temporary_ban")  # the state is the alert rule
CONNECTION_KEYS = ("account", "connected", "state", "reason", "open_window", "outbox_depth", "last_event_age_s",
                   "caught_up", "not_in_groups", "sending")


def classify(status: int, body: object) -> HealthResult:
    """Turn an HTTP status and decoded JSON body from /api/health into a HealthResult."""
    if not isinstance(body, dict):
        return HealthResult(FAILURE, "bad answer", f"HTTP {status} without a JSON object")
    state = str(body.get("state", ""))
    reason = str(body.get("reason", ""))
    if status == 200:
        return HealthResult(OK, state or "connected", body=body)
    if state in OUTAGE_STATES:
        return HealthResult(OUTAGE, state, reason, _window_start(body.get("open_window")), body=body)
    if state in OPERATOR_STATES:
        return HealthResult(OPERATOR, state, reason, body=body)
    return HealthResult(FAILURE, state or f"HTTP {status}", reason, body=body)


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
    outage_rule = DISCONNECT  # WhatsApp away
    # Exit 4 is a session that was never paired: a logout is seen live by the health probe (`logged_out`).
    exit_rules = {**EXIT_RULES, EXIT_NEEDS_OPERATOR: ExitRule(NOT_PAIRED, "needs an operator (not paired)")}

    def classifier(self, check: Check):
        return _classify_bytes

    def gauges(self, last_probe: HealthResult | None) -> dict[str, tuple[str, float]]:
        """The outbox for /metrics: its depth, when its next message is due and when it is expected empty (the
        pace, bridge/pace.py), and whether sending is paused. None before a health answer that tells them."""
        body = last_probe.body if last_probe is not None else None
        sending = body.get("sending") if isinstance(body, dict) else None
        if not isinstance(sending, dict) or "depth" not in sending:
            return {}
        return {"outbox_depth": ("Messages queued in the bridge's outbox", float(sending["depth"])),
                "outbox_next_send_seconds": ("Seconds until the next queued message is due (pace or pause)",
                                             float(sending.get("next_send_s") or 0.0)),
                "outbox_drain_seconds": ("Seconds until the outbox is expected empty at the account's pace",
                                         float(sending.get("drain_s") or 0.0)),
                "sending_paused": ("1 while WhatsApp's rate limit or a temporary ban holds the account's sending",
                                   1.0 if sending.get("paused") else 0.0)}

    def standby_argv(self, program: Program) -> tuple[str, ...]:
        return (*program.argv, "--standby")

    def status_fields(self, last_probe: HealthResult | None) -> dict:
        """`connection`: the bridge's WhatsApp connection as its last health answer told it (null before one)."""
        body = last_probe.body if last_probe is not None else None
        if body is None:
            return {"connection": None}
        return {"connection": {key: body.get(key) for key in CONNECTION_KEYS}}


hooks = BridgeHooks()
