"""A host of a cluster whose peer went silent inside a transaction (cut off from PostgreSQL: its locks stay held
until the server's TCP gives up, hours) is not stalled by those locks: the wait fails within LOCK_WAIT_MS as the
store being unavailable, so its monitor keeps its heartbeat and its lease keeper can take over (found by
`scripts/bench cluster`'s partition case: B's monitor restarted by the watchdog again and again)."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from monitors.drops_store import LOCK_WAIT_MS, Submission, open_drops_store
from monitors.store.sql import StoreUnavailable
from tests.conftest import BASE_CONFIG, GROUP_A
from watchdog.components import load

DROP = Submission("DR1000001", GROUP_A, "Lawley Fibre", "27710000001@s.whatsapp.net", "M1",
                  "2026-12-06 09:00:00.000000+00:00", False)


@pytest.mark.timeout(60)
def test_a_lock_held_by_a_silent_host_fails_the_wait_instead_of_stalling_the_monitor(
        write_config: Callable[..., Path], pg_url: str) -> None:
    config = load(write_config(BASE_CONFIG + f'\n[database]\nurl = "{pg_url}"\n\n[cluster]\nnode = "vps-b"\n'))
    drops = open_drops_store(config)
    drops.db.connect()  # the schema exists
    silent = psycopg.connect(pg_url)  # host A, in a transaction when its packets stopped
    silent.execute("LOCK TABLE wa_watchdog.drops IN ACCESS EXCLUSIVE MODE")
    outcome: list[BaseException | None] = []

    def record() -> None:
        try:
            drops.record("lawley", "main", 1, [DROP], None)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001: the outcome is the test's subject
            outcome.append(exc)

    try:
        began = time.monotonic()
        recording = threading.Thread(target=record, daemon=True)
        recording.start()
        recording.join(timeout=10)
        waited = time.monotonic() - began
        assert not recording.is_alive(), "the monitor's store call waited on a silent host's lock"
        assert isinstance(outcome[0], StoreUnavailable), outcome
        assert LOCK_WAIT_MS / 1000 <= waited < LOCK_WAIT_MS / 1000 + 3
    finally:
        silent.close()  # the lock is gone: the same call records the drop now
    drops.record("lawley", "main", 1, [DROP], None)
    assert drops.db.rows("SELECT drop_number FROM drops") == [("DR1000001",)]
    drops.close()

