"""The bridge's health state machine and answer (what the watchdog's prober classifies)."""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from bridge.health import (CONNECTED, CONNECTING, DISCONNECTED, STATE_OF_KIND, STREAM_REPLACED, TEMPORARY_BAN, Health,
                           HealthInputs)
from bridge.schema import Window
from bridge.transport import ConnectionKind

WINDOW = Window(1, "2026-11-24 22:00:00.000000+00:00", None, "server disconnect: scheduled", "pending", 0, None)


def test_connected_and_writable_is_200_with_every_field() -> None:
    health = Health("main")
    assert health.snapshot(HealthInputs(0, None))[0] == 503
    assert health.transition(CONNECTED)
    status, body = health.snapshot(HealthInputs(3, None, 1, {"sanitised": 2, "quarantined": 0}))
    assert status == 200
    assert body == {"status": "ok", "connected": True, "state": "connected", "reason": "", "account": "main",
                    "pid": os.getpid(), "last_event_age_s": body["last_event_age_s"], "loop_lag_ms": 0.0,
                    "outbox_depth": 3, "dead_letters": 1, "quarantine": {"sanitised": 2, "quarantined": 0},
                    "open_window": None, "caught_up": True, "connected_for_s": body["connected_for_s"],
                    "store_writable": True, "groups": None, "not_in_groups": [], "sending": None}
    assert 0 <= body["connected_for_s"] < 60


def test_an_outage_is_503_with_its_reason_and_window() -> None:
    health = Health("main")
    health.transition(CONNECTED)
    health.transition(DISCONNECTED, "server disconnect: scheduled")
    assert not health.transition(DISCONNECTED, "cannot connect")  # same outage, newer reason
    status, body = health.snapshot(HealthInputs(0, WINDOW))
    assert (status, body["status"], body["state"], body["reason"]) == (503, "unavailable", "disconnected",
                                                                       "cannot connect")
    assert body["open_window"] == {"started_at": WINDOW.started_at, "reason": WINDOW.reason}


def test_store_error_overrides_the_connection_state_until_a_write_works() -> None:
    health = Health("main")
    health.transition(CONNECTED)
    health.store_result("cannot write messages.db: database or disk is full")
    status, body = health.snapshot(HealthInputs(0, None))
    assert (status, body["state"], body["store_writable"]) == (503, "store_error", False)
    assert "disk is full" in body["reason"]
    health.store_result("")
    assert health.snapshot(HealthInputs(0, None))[0] == 200


def test_terminal_states_stay_and_bad_transitions_are_loud() -> None:
    health = Health("main")
    health.transition(STATE_OF_KIND[ConnectionKind.STREAM_REPLACED], "stream replaced")
    assert health.terminal and not health.transition(CONNECTED)
    assert health.snapshot(HealthInputs(0, None))[1]["state"] == STREAM_REPLACED
    with pytest.raises(AssertionError, match="connected -> connecting"):
        fresh = Health("main")
        fresh.transition(CONNECTED)
        fresh.transition(CONNECTING)


def test_a_temporary_ban_is_its_own_state_and_is_left_by_connecting_again() -> None:
    """Not terminal as a logout is: the ban expires and the bridge connects again by itself."""
    health = Health("main")
    health.transition(CONNECTED)
    until = "2026-11-24T23:31:27+00:00"
    assert health.transition(STATE_OF_KIND[ConnectionKind.TEMPORARY_BAN], f"temporary ban by WhatsApp "
                                                                          f"(SEND_TO_TOO_MANY_PEOPLE) until {until}")
    status, body = health.snapshot(HealthInputs(2, WINDOW))
    assert (status, body["state"]) == (503, TEMPORARY_BAN) and "SEND_TO_TOO_MANY_PEOPLE" in body["reason"]
    assert not health.terminal and health.transition(CONNECTED)


def test_loop_lag_shows_a_blocked_loop() -> None:
    async def block() -> float:
        health = Health("main")
        task = asyncio.create_task(health.measure_loop_lag())
        await asyncio.sleep(0.01)
        time.sleep(0.4)  # block the loop: the condition under test, not a wait
        while health.loop_lag_ms == 0.0:
            await asyncio.sleep(0.01)
        task.cancel()
        return health.loop_lag_ms
    assert asyncio.run(block()) >= 50
