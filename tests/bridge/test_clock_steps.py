"""The bridge across wall-clock steps (NTP correcting the host's time by an hour, either way), on real stores.

The clock seam (watchdog.shared.clock) is moved as a host's clocks move: `step_for_tests` steps the wall clock
alone, `pass_for_tests` lets time pass on both the wall clock and the boot's clock.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.alive import AliveFile
from bridge.outbox import Outbox
from bridge.schema import format_ts, parse_ts
from bridge.store import Store
from bridge.windows import Windows
from scripts.benchmarks.fake_clock import LIBFAKETIME, FakeClock
from tests.bridge.test_outbox import ScriptedTransport, request
from tests.bridge.test_windows import FixedHistory, message
from tests.bridge_support import call, health, rows, start_bridge, start_sim
from tests.conftest import GROUP_A, GROUP_B, Processes, wait_until
from watchdog.shared import clock
from watchdog.shared.recovery_log import RecoveryLog

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
HOUR = 3600.0
STEPS = pytest.mark.parametrize("step", [HOUR, -HOUR], ids=["forward", "back"])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "messages.db")
    yield s
    s.close()


@STEPS
def test_the_keyless_dedupe_window_is_kept_on_the_boots_clock(store: Store, fixed_clock: Callable, step: float) -> None:
    """Forward: a client's retry 30 s later is still the same send. Back: a new message 5 min later is sent."""
    fixed_clock(T0)
    transport = ScriptedTransport()
    outbox = Outbox(store, transport, "27710000000@s.whatsapp.net", delivery_wait=0, dedupe_window=120)
    first = asyncio.run(outbox.submit(request("hello"), None, None, "/send-message"))
    clock.step_for_tests(step)
    clock.pass_for_tests(30)
    assert asyncio.run(outbox.submit(request("hello"), None, None, "/send-message")) == first
    clock.pass_for_tests(300)
    again = asyncio.run(outbox.submit(request("hello"), None, None, "/send-message"))
    assert again[0] == 200 and again[1]["id"] != first[1]["id"]
    assert transport.sent == ["hello", "hello"]


def make(store: Store, tmp_path: Path, transport: FixedHistory) -> Windows:
    return Windows(store, AliveFile(tmp_path / "session/bridge.alive"), RecoveryLog(tmp_path / "recoveries.jsonl"),
                   "bridge:main", transport, [GROUP_A, GROUP_B])


@STEPS
def test_a_window_the_clock_was_stepped_in_asks_history_for_its_true_hour(
        store: Store, tmp_path: Path, fixed_clock: Callable, step: float) -> None:
    """Back: the start moves onto the corrected clock (the window keeps its length). Forward: the clock ran
    behind, or a VM was frozen and its time was right; the window covers both readings."""
    fixed_clock(T0)
    corrected = T0 + timedelta(seconds=step)  # the window's start on the corrected clock
    started = min(T0, corrected)
    lost = message(1, corrected + timedelta(seconds=60))  # WhatsApp's timestamps are the true time
    transport = FixedHistory([lost])
    windows = make(store, tmp_path, transport)
    windows.on_start()
    windows.on_disconnect("network", format_ts(T0))
    clock.pass_for_tests(60)
    clock.step_for_tests(step)  # NTP corrects the host's clock in the middle of the outage
    clock.pass_for_tests(60)
    windows.on_caught_up(clock.instant())
    (done,) = asyncio.run(windows.backfill())
    assert (done.started_at, done.ended_at) == (format_ts(started), format_ts(corrected + timedelta(minutes=2)))
    assert done.recovered == 1
    (_, since, until), _ = transport.requests
    assert (since, until) == (started - timedelta(seconds=30), corrected + timedelta(minutes=2, seconds=30))


@STEPS
def test_a_crash_window_is_dated_on_the_clock_after_the_step(store: Store, tmp_path: Path, fixed_clock: Callable,
                                                              step: float) -> None:
    """The store's alive_at was written before the step, the heartbeat file after it: the later on the boot's
    clock is the heartbeat, and the window starts at it on the corrected clock, wherever the step falls."""
    fixed_clock(T0)
    windows = make(store, tmp_path, FixedHistory([]))
    windows.on_start()
    windows.record_alive()  # the slow store probe, at T0
    clock.pass_for_tests(5)
    clock.step_for_tests(step)
    windows.heartbeat()  # the last beat before a kill -9, 5 s after the store's
    last_beat = T0 + timedelta(seconds=5 + step)
    clock.pass_for_tests(10)
    restarted = make(store, tmp_path, FixedHistory([]))
    restarted.on_start()
    assert parse_ts(store.open_window().started_at) == last_beat
    clock.pass_for_tests(3)
    restarted.on_caught_up(clock.instant())
    window = store.window(1)
    assert (parse_ts(window.started_at), parse_ts(window.ended_at)) == (last_beat, last_beat + timedelta(seconds=13))


@STEPS
def test_a_crash_window_covers_a_step_made_while_the_bridge_was_down(
        store: Store, tmp_path: Path, fixed_clock: Callable, step: float) -> None:
    """Back: it starts at the last beat on the corrected clock, not an hour ahead of it; forward: where it was."""
    fixed_clock(T0)
    make(store, tmp_path, FixedHistory([])).on_start()  # beats at T0, then dies
    clock.pass_for_tests(20)
    clock.step_for_tests(step)  # a VM restored, then its clock corrected; or NTP at the bridge's restart
    windows = make(store, tmp_path, FixedHistory([]))
    windows.on_start()
    assert parse_ts(store.open_window().started_at) == min(T0, T0 + timedelta(seconds=step))
    windows.on_caught_up(clock.instant())
    assert parse_ts(store.window(1).ended_at) == T0 + timedelta(seconds=step + 20)


@pytest.mark.slow
@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (Debian: faketime)")
def test_a_running_bridge_stepped_an_hour_each_way_dedupes_a_retry_and_dates_its_window_on_the_new_clock(
        procs: Processes, data_dir: Path, tmp_path: Path) -> None:
    """The bridge's own clocks are stepped by libfaketime while it runs (its offset file is read on every
    reading): forward an hour between a send and its keyless retry, back an hour in the middle of an outage."""
    fake = FakeClock(tmp_path)
    sim_proc, _ = start_sim(procs, data_dir)
    _, url = start_bridge(procs, data_dir, env=fake.env())
    send = {"recipient": GROUP_A, "message": "DR1000001 received"}
    status, first = call("POST", f"{url}/api/send", send)
    assert status == 200
    fake.set(3600)
    assert call("POST", f"{url}/api/send", send) == (200, first)  # the client's retry: the same message
    assert rows(data_dir, "SELECT COUNT(*) FROM outbox") == [(1,)]

    sim_proc.terminate()
    assert sim_proc.wait(timeout=10) == 0
    wait_until(lambda: health(url)["state"] == "disconnected", message="the bridge to see the outage")
    fake.set(0)  # NTP sets the clock right during the outage
    start_sim(procs, data_dir, old_pid=sim_proc.pid)
    (started, ended), = wait_until(lambda: rows(data_dir, "SELECT started_at, ended_at FROM disconnect_windows "
                                                          "WHERE backfill_status = 'done'"),
                                   timeout=30, message="the outage's window closed and backfilled")
    now = datetime.now(timezone.utc)
    assert now - timedelta(minutes=2) < parse_ts(started) < parse_ts(ended) <= now  # on the corrected clock
