"""The bridge's connection state and the `GET /api/health` answer.

Why so much in a health answer: the prober must tell a hang (no answer, a
frozen loop, store_error) from a WhatsApp-side outage (connecting,
disconnected: a restart would not help) from an operator case
(stream_replaced, logged_out) from a temporary ban (temporary_ban: nothing
to do but wait for its expiry, which the reason names; the bridge connects
again by itself then). The state machine asserts its transitions so a
wrong event order is a loud bug, not a silently wrong health answer.
"""
from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field

from bridge.schema import Window
from bridge.transport import ConnectionKind

CONNECTING = "connecting"
CONNECTED = "connected"
DISCONNECTED = "disconnected"
STREAM_REPLACED = "stream_replaced"
LOGGED_OUT = "logged_out"
TEMPORARY_BAN = "temporary_ban"
STORE_ERROR = "store_error"  # reported over any connection state while the store cannot be written

_LIVE = {CONNECTED, DISCONNECTED, STREAM_REPLACED, LOGGED_OUT, TEMPORARY_BAN}
TRANSITIONS: dict[str, set[str]] = {
    CONNECTING: _LIVE,
    CONNECTED: {DISCONNECTED, STREAM_REPLACED, LOGGED_OUT, TEMPORARY_BAN},
    DISCONNECTED: _LIVE,
    TEMPORARY_BAN: _LIVE - {TEMPORARY_BAN},  # lifted: connected again (or worse)
    STREAM_REPLACED: set(),  # terminal: only an operator (restart) leaves it
    LOGGED_OUT: set(),
}

# What each transport event means for the state; None = no state change.
STATE_OF_KIND: dict[ConnectionKind, str | None] = {
    ConnectionKind.CONNECTED: CONNECTED,
    ConnectionKind.DISCONNECTED: DISCONNECTED,
    ConnectionKind.CONNECT_FAILED: DISCONNECTED,
    ConnectionKind.OFFLINE_SYNC_DONE: None,
    ConnectionKind.STREAM_REPLACED: STREAM_REPLACED,
    ConnectionKind.LOGGED_OUT: LOGGED_OUT,
    ConnectionKind.TEMPORARY_BAN: TEMPORARY_BAN,
    ConnectionKind.CLIENT_OUTDATED: LOGGED_OUT,
}

LAG_INTERVAL = 0.25  # seconds between event-loop lag samples


@dataclass(frozen=True)
class HealthInputs:
    """What the snapshot needs from the rest of the bridge, read at request time."""

    outbox_depth: int
    open_window: Window | None
    dead_letters: int = 0  # outbox rows moved aside for good
    quarantine: dict[str, int] = field(default_factory=dict)  # poison messages: sanitised / quarantined
    membership: dict = field(default_factory=dict)  # groups / not_in_groups (bridge/membership.py)
    sending: dict = field(default_factory=dict)  # paused, reason, until (bridge/send_pause.py)


class Health:
    def __init__(self, account: str) -> None:
        self.account = account
        self.state = CONNECTING
        self.reason = "starting"
        self.store_writable = True
        self.store_problem = ""
        self._locked_file = ""  # the store file another program holds locked ('' = not a lock problem)
        self._problem_since = 0.0
        self.loop_lag_ms = 0.0
        self._last_event = time.monotonic()
        self._connected_at = 0.0  # monotonic: when the state last became connected

    def transition(self, state: str, reason: str = "") -> bool:
        """Move to `state`; returns False (no change) for a repeat or after a terminal state."""
        if state == self.state:
            self.reason = reason or self.reason  # e.g. a new reason while still disconnected
            return False
        if state not in TRANSITIONS[self.state]:
            if not TRANSITIONS[self.state]:
                return False  # terminal: the transport stopped; late events change nothing
            raise AssertionError(f"bad bridge state transition {self.state} -> {state}")
        self.state, self.reason = state, reason
        if state == CONNECTED:
            self._connected_at = time.monotonic()
        return True

    def event_seen(self) -> None:
        self._last_event = time.monotonic()

    def store_result(self, problem: str, locked_file: str = "") -> None:
        """Record the outcome of the last store write ('' = it worked); `locked_file` if another program holds it."""
        if problem and self.store_writable:
            self._problem_since = time.monotonic()
        self.store_writable, self.store_problem, self._locked_file = not problem, problem, locked_file

    @property
    def store_reason(self) -> str:
        """What is wrong with the store, e.g. `messages.db locked by another process for 12 s`."""
        if self._locked_file:
            return f"{self._locked_file} locked by another process for {time.monotonic() - self._problem_since:.0f} s"
        return self.store_problem

    @property
    def terminal(self) -> bool:
        """Stream replaced or logged out: nothing but an operator changes the state any more."""
        return not TRANSITIONS[self.state]

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    @property
    def reported_state(self) -> str:
        return self.state if self.store_writable else STORE_ERROR

    def snapshot(self, inputs: HealthInputs) -> tuple[int, dict]:
        healthy = self.connected and self.store_writable
        window = inputs.open_window
        body = {
            "status": "ok" if healthy else "unavailable",
            "connected": self.connected,
            "state": self.reported_state,
            "reason": self.store_reason if not self.store_writable else ("" if healthy else self.reason),
            "account": self.account,
            "pid": os.getpid(),
            "last_event_age_s": round(time.monotonic() - self._last_event, 3),
            "loop_lag_ms": round(self.loop_lag_ms, 3),
            "outbox_depth": inputs.outbox_depth,
            "dead_letters": inputs.dead_letters,
            "quarantine": inputs.quarantine,
            "open_window": {"started_at": window.started_at, "reason": window.reason} if window else None,
            "caught_up": self.connected and window is None,  # connected and the offline queue replayed
            # how long this connection has lasted: a cluster's new sender knows whether its device would have
            # received the copy of a message another host may have sent (monitors/fate.py)
            "connected_for_s": round(time.monotonic() - self._connected_at, 3) if self.connected else None,
            "store_writable": self.store_writable,
            "groups": None,  # the groups WhatsApp lists for this number (null: not asked yet)
            "not_in_groups": [],
            **inputs.membership,
            "sending": inputs.sending or None,
        }
        return (200 if healthy else 503), body

    async def measure_loop_lag(self) -> None:
        """Sleep a fixed interval and record how late the loop woke us: a busy or blocked loop shows here."""
        while True:
            started = time.monotonic()
            await asyncio.sleep(LAG_INTERVAL)
            self.loop_lag_ms = max(0.0, (time.monotonic() - started - LAG_INTERVAL) * 1000)
