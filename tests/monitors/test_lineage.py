"""A cursor is checked against the file it follows: a restored, salvaged, pruned or new messages.db (issue 19 item 1).

Real SQLite files throughout: the bridge's Store writes them, `sqlite3`'s backup API copies them, and a monitor
process object (MonitorProcess) starts on them against drops.db or PostgreSQL.
"""
from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.alive import AliveFile
from bridge.store import Store
from bridge.transport import IncomingMessage, Source
from bridge.windows import Windows
from monitors.drops_store import DropsDB, Position, open_drops_store
from monitors.follow import StoreFollower
from monitors.lineage import recheck
from monitors.main import MonitorProcess
from monitors.prune import prune_store
from monitors.store.sqlite import SqliteBackend
from tests.bridge.test_windows import FixedHistory
from tests.conftest import BASE_CONFIG, GROUP_A
from tests.monitor_support import store_rows as rows
from watchdog.shared import clock
from watchdog.components import Config, load
from watchdog.shared.recovery_log import RecoveryLog

CONTRACTOR = "27710000001@s.whatsapp.net"
NOW = datetime.now(timezone.utc)


@pytest.fixture
def config(write_config, drops_backend: str) -> Config:  # noqa: ANN001
    return load(write_config(BASE_CONFIG + drops_backend))


def post(store: Store, *numbers: int, prefix: str = "M", source: Source = Source.LIVE,
         at: datetime = NOW) -> None:
    """One message per number, each with drop DR<1000000 + number>, in lawley's group."""
    store.add_messages([IncomingMessage(f"{prefix}{n}", GROUP_A, CONTRACTOR, f"DR{1000000 + n} done", at, source,
                                        chat_name="Lawley Fibre") for n in numbers])


def copy(source: Path, target: Path) -> None:
    """What `wa-watchdog backup` does for one file: SQLite's online backup API."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def put_back(backup: Path, path: Path) -> None:
    """docs/OPERATIONS.md's restore: the old file and its WAL go, the backup comes back."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(backup.read_bytes())


def run_monitor(config: Config) -> None:
    """A monitor process started as after a restart: positions, rechecks, catches up, stops."""
    monitor = MonitorProcess(config, [config.project("lawley")])

    async def start_and_stop() -> int:
        asyncio.get_running_loop().call_later(0.5, monitor.entry.request_stop)
        return await monitor.run()
    assert asyncio.run(start_and_stop()) == 0


def drop_numbers(config: Config) -> list[int]:
    return [int(r[0][2:]) - 1000000 for r in rows(config, "SELECT drop_number FROM drops ORDER BY drop_number")]


def rereads(config: Config) -> list[dict]:
    return [r for r in RecoveryLog(config.watchdog.recovery_log).read() if r["event"] == "reread"]


def test_a_cursor_keeps_the_message_and_file_it_was_taken_in(config: Config) -> None:
    store = Store(config.account("main").store)
    post(store, 1, 2, 3)
    run_monitor(config)
    drops = open_drops_store(config)
    position = drops.position("lawley", "main")
    drops.close()
    (stored_at,) = store.conn.execute("SELECT stored_at FROM message_meta WHERE id = 'M3'").fetchone()
    assert position == Position(3, "M3", stored_at, store.get_state("store_id"))
    assert len(position.store_id or "") == 32
    follower = StoreFollower(store.path)
    assert recheck(follower, position) == (position, 0, "")  # every ordinary start: the cursor stands
    follower.close()
    store.close()


def test_a_restored_backup_is_read_again_from_where_it_ends_nothing_skipped_nothing_twice(config: Config) -> None:
    """The issue's scenario: backup, the cursor moves on, the file is put back, WhatsApp replays into old rowids."""
    path = config.account("main").store
    store = Store(path)
    post(store, 1, 2, 3)
    copy(path, path.with_name("backup.db"))  # rowids 1-3
    post(store, 4, 5, 6, 7, 8)
    run_monitor(config)
    assert rows(config, "SELECT rowid FROM cursors") == [(8,)]
    store.close()
    put_back(path.with_name("backup.db"), path)
    store = Store(path)
    post(store, *range(20, 27), prefix="O", source=Source.OFFLINE)  # posted while stopped: rowids 4-10
    post(store, 4, 5, source=Source.HISTORY)  # the crash window's backfill brings back two: rowids 11, 12
    store.close()
    run_monitor(config)
    assert drop_numbers(config) == [1, 2, 3, 4, 5, 6, 7, 8, *range(20, 27)]
    # Re-read messages add nothing: no second acknowledgement, no second event for the same message.
    assert rows(config, "SELECT COUNT(*), COUNT(DISTINCT drop_id) FROM feedback") == [(15, 15)]
    assert rows(config, "SELECT COUNT(*) FROM drop_events") == [(15,)]
    assert rows(config, "SELECT rowid, message_id FROM cursors") == [(12, "M5")]
    (line,) = rereads(config)
    assert (line["component"], line["account"], line["cursor"], line["rowid"], line["reread"]) == (
        "monitor:lawley", "main", 8, 3, 5)
    assert "the message read at rowid 8 (M8) is another message (O24) and 5 messages at or below it were stored " \
           "after it (a restored or salvaged file): read again from rowid 3" in line["message"]
    run_monitor(config)
    assert len(rereads(config)) == 1  # said once: the cursor now belongs to the file


def test_a_clock_stepped_back_before_the_restart_hides_none_of_what_the_bridge_stored_since(
        config: Config, fixed_clock) -> None:  # noqa: ANN001
    """stored_at is the bridge's wall clock. The cursor's message was stored, then the clock was stepped an hour
    back (NTP, a VM restored from a snapshot), the backup put back and WhatsApp's replay stored in it: every
    replayed row looks stored before the cursor's message, the walk stopped at the first one below the cursor
    and the rows under it were never read. The bridge marks the newest rowid it started on (`start_rowid`):
    nothing above it was stored in a file a cursor that lost its message was taken in."""
    fixed_clock(NOW)
    path = config.account("main").store
    store = Store(path)
    post(store, 1, 2, 3)
    copy(path, path.with_name("backup.db"))
    post(store, 4, 5, 6, 7, 8)
    run_monitor(config)
    store.close()
    put_back(path.with_name("backup.db"), path)
    clock.step_for_tests(-3600)
    store = Store(path)
    bridge_started(store, config)  # the restarted bridge, before WhatsApp replays
    post(store, *range(20, 27), prefix="O", source=Source.OFFLINE)  # rowids 4-10, stored an hour "earlier"
    store.close()
    run_monitor(config)
    assert drop_numbers(config) == [*range(1, 9), *range(20, 27)]
    (line,) = rereads(config)
    assert (line["cursor"], line["rowid"], line["reread"]) == (8, 3, 5)


def test_a_file_that_lost_its_tail_is_followed_from_its_end_before_anything_new_arrives(config: Config) -> None:
    """A backup put back (or `.recover` salvaging a shorter file) and the monitor starts first."""
    path = config.account("main").store
    store = Store(path)
    post(store, 1, 2)
    copy(path, path.with_name("backup.db"))
    post(store, 3, 4, 5)
    run_monitor(config)
    store.close()
    put_back(path.with_name("backup.db"), path)
    run_monitor(config)
    assert rows(config, "SELECT rowid, message_id FROM cursors") == [(2, "M2")]
    (line,) = rereads(config)
    assert "it ends at rowid 2, before the cursor 5" in line["message"] and line["reread"] == 0
    store = Store(path)
    post(store, 6, 7, 8, 9, source=Source.OFFLINE)  # rowids 3-6: under the old cursor
    store.close()
    run_monitor(config)
    assert drop_numbers(config) == list(range(1, 10))


def test_a_salvaged_file_missing_rows_in_the_middle_and_its_tail(config: Config) -> None:
    """What `.recover` gives for damaged pages: rows gone here and there, the tail shorter; rowids kept."""
    path = config.account("main").store
    store = Store(path)
    post(store, *range(1, 11))
    run_monitor(config)  # cursor 10
    with store.transaction() as conn:
        for rowid in (4, 5, 9, 10):
            conn.execute("DELETE FROM message_meta WHERE id = (SELECT id FROM messages WHERE rowid = ?)", (rowid,))
            conn.execute("DELETE FROM messages WHERE rowid = ?", (rowid,))
    post(store, 30, 31, 32, source=Source.OFFLINE)  # rowids 9, 10, 11
    store.close()
    run_monitor(config)
    assert drop_numbers(config) == [*range(1, 11), 30, 31, 32]
    (line,) = rereads(config)
    assert (line["cursor"], line["rowid"], line["reread"]) == (10, 8, 2)


def bridge_started(store: Store, config: Config) -> None:
    """What the bridge's start writes (bridge/windows.py `on_start`), `start_rowid` among it."""
    Windows(store, AliveFile(store.path.parent / "session/bridge.alive"), RecoveryLog(config.watchdog.recovery_log),
            "bridge:main", FixedHistory([]), [GROUP_A]).on_start()


def test_a_pruned_cursor_message_moves_nothing_and_reads_nothing_again(config: Config) -> None:
    """Also while the bridge that stored every row still runs: rows above its start_rowid were read."""
    path = config.account("main").store
    store = Store(path)
    bridge_started(store, config)
    old = NOW - timedelta(days=400)
    post(store, 1, 2)  # young: prune keeps them, below the cursor
    post(store, 3, 4, at=old)  # old: pruned, the cursor's own message (rowid 4) with them
    run_monitor(config)
    post(store, 5)  # not read yet: the newest row, never pruned
    cutoff = (NOW - timedelta(days=180)).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
    assert prune_store(str(path), cutoff, 4, dry_run=False)["messages"] == 2
    follower = StoreFollower(path)
    drops = open_drops_store(config)
    position = drops.position("lawley", "main")
    drops.close()
    assert position.rowid == 4
    assert recheck(follower, position) == (position, 0, "")  # one step down: row 2 is older, nothing new below
    follower.close()
    run_monitor(config)
    assert drop_numbers(config) == [1, 2, 3, 4, 5]
    assert rereads(config) == []
    store.close()


def test_another_file_is_read_from_its_start(config: Config) -> None:
    path = config.account("main").store
    store = Store(path)
    post(store, *range(1, 6))
    run_monitor(config)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    store = Store(path)  # created anew: another store id, rowids from 1 again
    post(store, *range(10, 17))  # more rows than the old cursor: its rowid tells nothing
    store.close()
    run_monitor(config)
    assert drop_numbers(config) == [1, 2, 3, 4, 5, *range(10, 17)]
    (line,) = rereads(config)
    assert "it is another file (store id" in line["message"] and (line["cursor"], line["rowid"]) == (5, 0)
    assert "reread" not in line


def test_a_cursor_saved_before_marks_keeps_the_old_rule(tmp_path: Path) -> None:
    path = tmp_path / "messages.db"
    store = Store(path)
    post(store, 1, 2, 3)
    follower = StoreFollower(path)
    assert recheck(follower, Position(2)) == (Position(2), 0, "")
    assert recheck(follower, Position(7)).position == Position(0)  # ends before the cursor: a new file
    follower.close()
    store.close()


def test_an_upgraded_cursor_gets_its_marks_with_the_next_message(config: Config) -> None:
    path = config.account("main").store
    store = Store(path)
    post(store, 1, 2)
    drops = open_drops_store(config)
    drops.save_cursors([("lawley", "main", Position(2))])  # as migration 7 leaves a cursor: a rowid alone
    drops.close()
    post(store, 3)
    run_monitor(config)
    drops = open_drops_store(config)
    assert drops.position("lawley", "main")[:2] == (3, "M3")
    drops.close()
    assert drop_numbers(config) == [3]
    store.close()


def test_a_cursor_recorded_as_a_bare_rowid_has_no_marks(tmp_path: Path) -> None:
    drops = DropsDB(SqliteBackend(tmp_path / "drops.db"))
    drops.record("lawley", "main", 7, [], None)  # a bare rowid: benchmarks and old callers
    assert drops.position("lawley", "main") == Position(7)
    drops.close()
