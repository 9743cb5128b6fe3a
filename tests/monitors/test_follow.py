"""Monitors woken by store changes (monitors/store_watch.py, Monitor.follow): inotify, not a 20 ms poll."""
from __future__ import annotations

import select
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

from bridge.store import Store, parse_ts
from bridge.transport import IncomingMessage
from monitors.follow import SAFETY_INTERVAL
from monitors.store_watch import StoreWatch
from tests.conftest import GROUP_A, Processes, wait_until
from tests.monitor_support import query, start_monitor


def post(store: Store, msg_id: str, text: str) -> None:
    store.add_messages([IncomingMessage(msg_id, GROUP_A, "27710000001@s.whatsapp.net", text,
                                        datetime.now(timezone.utc))])


def readable(watch: StoreWatch, timeout: float = 5.0) -> bool:
    return bool(select.select([watch], [], [], timeout)[0])


def test_a_commit_to_the_store_or_its_wal_wakes_the_watch_and_files_beside_it_do_not(tmp_path: Path) -> None:
    path = tmp_path / "messages.db"
    store = Store(path)
    watch = StoreWatch(path)
    try:
        assert not readable(watch, 0)
        post(store, "M1", "DR1734150 installed")
        assert readable(watch) and watch.drain()  # the commit's write to messages.db-wal
        assert not watch.drain()  # drained: nothing pending until the next write
        (tmp_path / "notes.txt").write_text("beside the store")
        assert readable(watch) and not watch.drain()
        store.close()  # the last connection checkpoints the WAL and removes it
        watch.drain()
        store = Store(path)
        post(store, "M2", "DR1734151 installed")  # the WAL is created again: still seen
        assert readable(watch) and watch.drain()
    finally:
        watch.close()
        store.close()


def voluntary_switches(pid: int) -> int:
    return psutil.Process(pid).num_ctx_switches().voluntary


def test_an_idle_monitor_sleeps_until_the_store_changes_then_records_at_once(procs: Processes,
                                                                              data_dir: Path) -> None:
    store = Store(data_dir / "accounts" / "main" / "messages.db")
    try:
        monitor = start_monitor(procs, "lawley")
        post(store, "M1", "DR1734150 installed")
        wait_until(lambda: query(data_dir, "SELECT drop_number FROM drops") == [("DR1734150",)], timeout=20,
                   message="the first drop recorded (the monitor is following)")
        before = voluntary_switches(monitor.pid)
        time.sleep(2.0)  # a measuring window, not a wait: a 20 ms poll wakes ~100 times in it
        wakes = voluntary_switches(monitor.pid) - before
        assert wakes < 30, f"an idle monitor woke {wakes} times in 2 s"
        for n in range(10):  # each one alone: a wake that comes before its commit is visible must not wait 2 s
            number = f"DR{1734160 + n}"
            post(store, f"N{n}", f"{number} installed")
            (posted, detected), = wait_until(
                lambda: query(data_dir, "SELECT message_time, detected_at FROM drops WHERE drop_number = ?", number),
                timeout=10, message=f"{number} recorded")
            latency = (parse_ts(detected) - parse_ts(posted)).total_seconds()
            assert latency < SAFETY_INTERVAL / 2, f"{number} after {latency:.3f} s: not woken by its commit"
    finally:
        store.close()
