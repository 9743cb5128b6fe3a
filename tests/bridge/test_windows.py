"""Disconnect windows and backfill on a real store and recovery log.

The transport here is a minimal in-test Transport with a fixed history: it
stands in for WhatsApp's history responses only, to reach the branches the
simulator never takes (no history capability, connection lost mid-backfill).
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from loguru import logger

from bridge.alive import AliveFile, read_alive
from bridge.schema import format_ts, now_ts, parse_ts
from bridge.store import Store
from bridge.transport import (Capabilities, Handler, IncomingMessage, MediaInfo, NotConnected, OutgoingMessage,
                              SendResult, Transport)
from bridge.windows import Windows
from tests.conftest import GROUP_A, GROUP_B
from watchdog.shared import clock
from watchdog.shared.recovery_log import RecoveryLog


class FixedHistory(Transport):
    def __init__(self, messages: list[IncomingMessage], history_request: bool = True,
                 error: Exception | None = None) -> None:
        self.capabilities = Capabilities(history_request, "" if history_request else "no on-demand history here")
        self.messages = messages
        self.error = error
        self.requests: list[tuple[str, datetime, datetime]] = []

    async def request_history(self, chat_jid: str, since: datetime, until: datetime) -> list[IncomingMessage]:
        self.requests.append((chat_jid, since, until))
        if self.error:
            raise self.error
        return [m for m in self.messages if m.chat_jid == chat_jid and since <= m.timestamp <= until]

    async def run(self, handler: Handler) -> None:
        raise NotImplementedError

    async def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    async def download(self, media: MediaInfo) -> bytes:
        raise NotImplementedError

    async def joined_groups(self) -> list[str]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def message(n: int, at: datetime, chat: str = GROUP_A) -> IncomingMessage:
    return IncomingMessage(f"H{n}", chat, "27710000001@s.whatsapp.net", f"DR{5000000 + n}", at)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "messages.db")
    yield s
    s.close()


def make(store: Store, tmp_path: Path, transport: Transport) -> tuple[Windows, RecoveryLog]:
    log = RecoveryLog(tmp_path / "recoveries.jsonl")
    return Windows(store, AliveFile(tmp_path / "session/bridge.alive"), log, "bridge:main", transport,
                   [GROUP_A, GROUP_B]), log


def test_a_crash_opens_a_window_at_the_last_heartbeat(store: Store, tmp_path: Path) -> None:
    windows, log = make(store, tmp_path, FixedHistory([]))
    windows.on_start()  # first start ever: nothing to recover
    assert store.open_window() is None
    windows.heartbeat()
    pid, _, alive_at, _ = read_alive(tmp_path / "session/bridge.alive")
    assert pid == os.getpid() and alive_at > store.get_state("alive_at")  # the file is the later heartbeat
    windows.on_start()  # the previous run never stopped cleanly
    assert (store.open_window().started_at, store.open_window().reason) == (alive_at, "bridge crash")
    windows.on_caught_up(clock.instant())
    assert [r["event"] for r in log.read()] == ["disconnect", "reconnect"]
    assert "bridge crash" in list(log.read())[1]["message"]


def test_the_heartbeat_writes_nothing_to_the_store_and_its_file_is_private(store: Store, tmp_path: Path) -> None:
    windows, _ = make(store, tmp_path, FixedHistory([]))
    windows.on_start()
    reader = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
    version = reader.execute("PRAGMA data_version").fetchone()[0]
    before = read_alive(tmp_path / "session/bridge.alive")
    windows.heartbeat()
    store.probe_lock()
    assert read_alive(tmp_path / "session/bridge.alive").at > before.at
    assert reader.execute("PRAGMA data_version").fetchone()[0] == version  # no commit: no follower woken
    windows.record_alive()  # the slow write probe
    assert reader.execute("PRAGMA data_version").fetchone()[0] != version
    assert stat.S_IMODE((tmp_path / "session/bridge.alive").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "session").stat().st_mode) == 0o700
    reader.close()


def test_without_a_heartbeat_file_the_window_starts_at_the_stores_alive_at(store: Store, tmp_path: Path) -> None:
    """An upgrade from a release that heartbeat in bridge_state, or a record a power cut left unreadable."""
    windows, _ = make(store, tmp_path, FixedHistory([]))
    store.set_state(clean_stop="0", alive_at="2026-01-02 03:04:05.000000+00:00", alive_pid="4242")
    windows.on_start(died=(4242, "2026-01-02 03:04:05.400000+00:00"))  # that pid's exit, seen by the watchdog
    assert store.open_window().started_at == "2026-01-02 03:04:05.400000+00:00"
    windows.on_stop()
    windows.on_start()
    (tmp_path / "session/bridge.alive").write_bytes(b"\0" * 44)  # what a power cut can leave
    store.set_state(clean_stop="0", alive_at="2026-02-03 04:05:06.000000+00:00", alive_pid="1")
    store.end_window(now_ts())
    windows.on_start(died=(4242, "2026-02-03 04:05:07.000000+00:00"))  # another pid's exit says nothing
    assert store.open_window().started_at == "2026-02-03 04:05:06.000000+00:00"


def test_a_store_put_back_from_a_backup_is_dated_by_its_own_alive_at_not_the_newer_file(tmp_path: Path) -> None:
    """The file says when the process died; a restored store lacks what came after the backup: backfill that."""
    live = Store(tmp_path / "messages.db")
    windows, _ = make(live, tmp_path, FixedHistory([]))
    windows.on_start()
    backup_alive_at = live.get_state("alive_at")
    with sqlite3.connect(tmp_path / "backup.db") as backup:
        live.conn.backup(backup)
    live.add_messages([message(1, datetime.now(timezone.utc))])  # after the backup
    windows.heartbeat()
    assert read_alive(tmp_path / "session/bridge.alive").messages == 1
    live.close()
    for name in ("messages.db-wal", "messages.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "backup.db").replace(tmp_path / "messages.db")  # the corrupt-store procedure, docs/OPERATIONS.md
    restored = Store(tmp_path / "messages.db")
    make(restored, tmp_path, FixedHistory([]))[0].on_start()
    assert restored.open_window().started_at == backup_alive_at
    restored.close()


def test_a_clean_stop_is_no_crash(store: Store, tmp_path: Path) -> None:
    windows, log = make(store, tmp_path, FixedHistory([]))
    windows.on_start()
    windows.on_stop()
    windows.on_start()
    assert store.open_window().reason == "bridge stopped"
    assert list(log.read()) == []


def test_backfill_stores_what_is_missing_and_counts_it(store: Store, tmp_path: Path) -> None:
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    end = start + timedelta(minutes=2)
    inside = [message(n, start + timedelta(seconds=10 * n), GROUP_A if n % 2 else GROUP_B) for n in range(6)]
    margin_edge = message(90, start - timedelta(seconds=20))
    too_early = message(91, start - timedelta(minutes=2))
    store.add_messages(inside[:2])  # the offline queue delivered these
    transport = FixedHistory([*inside, margin_edge, too_early])
    windows, log = make(store, tmp_path, transport)
    store.start_window(format_ts(start), "server disconnect: scheduled")
    store.end_window(format_ts(end))
    (done,) = asyncio.run(windows.backfill())
    assert (done.backfill_status, done.recovered) == ("done", 5)  # 4 missing inside + 1 within the margin
    assert {c for c, *_ in transport.requests} == {GROUP_A, GROUP_B}
    assert all(since == parse_ts(format_ts(start)) - timedelta(seconds=30) for _, since, _ in transport.requests)
    sources = dict(store.conn.execute("SELECT id, source FROM message_meta"))
    assert sources["H0"] == "live" and sources["H2"] == "history" and "H91" not in sources
    assert asyncio.run(windows.backfill()) == []  # each window once
    record = list(log.read())[-1]
    assert record["event"] == "backfill" and "5 recovered from history" in record["message"]
    assert "scheduled" in record["message"] and record["recovered"] == 5


def test_without_history_windows_are_marked_unsupported_and_it_says_why_once(store: Store, tmp_path: Path) -> None:
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING")
    try:
        windows, log = make(store, tmp_path, FixedHistory([], history_request=False))
        for minute in (1, 2):
            store.start_window(f"2026-11-24 22:0{minute}:00.000000+00:00", "network")
            store.end_window(f"2026-11-24 22:0{minute}:30.000000+00:00")
        assert [w.backfill_status for w in asyncio.run(windows.backfill())] == ["unsupported", "unsupported"]
    finally:
        logger.remove(sink)
    assert sum("no on-demand history here" in w for w in warnings) == 1
    assert all("no on-demand history here" in r["message"] for r in log.read())


def test_a_backfill_cut_short_by_a_disconnect_stays_pending(store: Store, tmp_path: Path) -> None:
    windows, log = make(store, tmp_path, FixedHistory([], error=NotConnected("gone")))
    store.start_window("2026-11-24 22:00:00.000000+00:00", "network")
    store.end_window("2026-11-24 22:00:30.000000+00:00")
    assert asyncio.run(windows.backfill()) == []
    assert [w.backfill_status for w in store.windows_to_backfill()] == ["pending"]
    assert list(log.read()) == []


def test_a_failing_history_request_marks_the_window_failed(store: Store, tmp_path: Path) -> None:
    windows, log = make(store, tmp_path, FixedHistory([], error=RuntimeError("bad frame")))
    store.start_window("2026-11-24 22:00:00.000000+00:00", "network")
    store.end_window("2026-11-24 22:00:30.000000+00:00")
    (failed,) = asyncio.run(windows.backfill())
    assert failed.backfill_status == "failed"
    assert "failed" in list(log.read())[-1]["message"] and "bad frame" in list(log.read())[-1]["message"]


def test_a_sub_second_window_says_how_long_it_was(store: Store, tmp_path: Path) -> None:
    """A 0.35 s hang is a window of "0.35 s", not "0.0 s"."""
    windows, log = make(store, tmp_path, FixedHistory([]))
    start = clock.now() - timedelta(seconds=5)
    windows.on_disconnect("connection lost", format_ts(start))
    windows.on_caught_up(clock.instant((start + timedelta(milliseconds=350)).timestamp()))
    windows.on_disconnect("connection lost", format_ts(start + timedelta(seconds=1)))
    windows.on_caught_up(clock.instant((start + timedelta(seconds=1, milliseconds=42)).timestamp()))
    closed = [r["message"] for r in log.read() if r["event"] == "reconnect"]
    assert [m.rsplit(" closed after ", 1)[1] for m in closed] == ["0.35 s", "42 ms"]
