"""Following the bridge's messages.db read-only: new rows, windows, and a cheap change signal.

A monitor is woken by inotify when the bridge writes the store
(monitors/store_watch.py), then asks `PRAGMA data_version`, which changes
exactly when another connection committed to the file; in WAL mode reading
it only looks at the shared-memory WAL index (no disk read, no lock that
could slow the bridge). An idle monitor thus sleeps in the kernel instead
of polling 50 times a second. `SAFETY_INTERVAL` is the slow check for a wake
that never comes (a store replaced in a way inotify does not report); where
inotify is unavailable (its per-user instance limit) the monitor polls
every `POLL_INTERVAL`, as before.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from bridge.schema import (StoredMessage, Window, WindowCounts, bridge_state, marks_down_from, messages_after,
                           open_readonly, store_id, window_counts, windows)

POLL_INTERVAL = 0.02  # seconds between data_version checks without inotify
SAFETY_INTERVAL = 5.0  # seconds between full looks with inotify (woken at once on a write)
SETTLE_DELAYS = (0.002, 0.005, 0.01, 0.01, 0.01, 0.02, 0.02, 0.02, 0.05, 0.2, 1.0)  # looks again after
# a wake that found no commit yet: the WAL write wakes us before the writer's fsync and its wal-index update
# make the commit visible (a few to tens of ms later, and no write event then), so the first 100 ms are
# looked at every 10-20 ms, as the 20 ms poll did; later when the writer is descheduled on a loaded host

T = TypeVar("T")

# The bridge creates these in one transaction; until then the store is not ready to follow.
REQUIRED_TABLES = ("messages", "message_meta", "disconnect_windows")


class StoreNotReady(Exception):
    """messages.db does not exist yet, or the bridge has not created its tables yet."""


class StoreFollower:
    def __init__(self, path: Path) -> None:
        """Open the store read-only; raises StoreNotReady while there is nothing to follow yet."""
        if not path.exists():
            raise StoreNotReady(f"{path} does not exist yet (has the bridge started?)")
        self.path = path
        self.conn = open_readonly(path)
        try:
            tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreNotReady(f"{path} is not readable yet: {exc}") from None
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            self.conn.close()
            raise StoreNotReady(f"{path} has no {', '.join(missing)} table yet")
        self._data_version: int | None = None
        self._read: dict[tuple, object] = {}  # reads since `changed()` last saw a commit (see _once)
        self._store_id: str | None = None

    def _once(self, key: tuple, read: Callable[[], T]) -> T:
        """`read()`, or its result from an earlier call with the same key since `changed()` last saw a commit.

        A monitor process's projects follow one store from (usually) the same cursor, so a new message
        would otherwise be read once per project. A commit landing after `changed()` may be missing from a
        shared answer; the wake-up it causes makes `changed()` see it and the next look reads it.
        """
        if key not in self._read:
            self._read[key] = read()
        return self._read[key]  # type: ignore[return-value]

    def close(self) -> None:
        self.conn.close()

    def changed(self) -> bool:
        """True when another connection committed since the last call (and on the first call)."""
        version = self.conn.execute("PRAGMA data_version").fetchone()[0]
        changed, self._data_version = version != self._data_version, version
        if changed:
            self._read = {}
        return changed

    def store_id(self) -> str | None:
        """The file's identity (bridge_state), read until the bridge has written it (a file it has not migrated yet)."""
        if self._store_id is None:
            self._store_id = store_id(self.conn)
        return self._store_id

    def start_rowid(self) -> int | None:
        """The newest rowid when the bridge last started on this file: every row above it was stored since."""
        value = bridge_state(self.conn, "start_rowid")
        return int(value) if value and value.isdigit() else None

    def marks_down_from(self, rowid: int) -> Iterator[tuple[int, str, str | None]]:
        """(rowid, message id, stored_at) at or below `rowid`, newest first (monitors/lineage.py walks them)."""
        return marks_down_from(self.conn, rowid)

    def newest_rowid(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0]

    def messages_after(self, rowid: int, limit: int) -> list[StoredMessage]:
        """Rows after `rowid` (shared by the projects that ask the same while the store is unchanged: read-only)."""
        return self._once(("messages", rowid, limit), lambda: messages_after(self.conn, rowid, limit))

    def windows(self, after: int = 0) -> list[Window]:
        """Disconnect windows with an id above `after`, oldest first."""
        return self._once(("windows", after), lambda: windows(self.conn, after))

    def window_counts(self, window: Window, groups: frozenset[str]) -> WindowCounts:
        """This project's share of what a finished window's messages did (the bridge's line counts them alike)."""
        return window_counts(self.conn, window, groups)
