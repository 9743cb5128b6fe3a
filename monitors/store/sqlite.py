"""drops.db: the embedded default backend, one SQLite file (WAL) shared by every monitor and the ops commands.

Each writer takes short `BEGIN IMMEDIATE` transactions and waits on a busy
timeout, so six monitors never fail on each other's locks. The timeout is
short (`WRITE_BUSY_TIMEOUT`): the wait runs on the monitor's event loop, so
a lock held longer by another program (an operator's `sqlite3` in BEGIN
EXCLUSIVE) is StoreUnavailable, retried with backoff while the loop keeps
heartbeating, instead of a frozen monitor killed as hung; so is a full disk. Other errors stay
sqlite3 errors (a monitor exits and is restarted, as before). A corrupt file
is refused at start (bridge.integrity: exit 2).
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random

from bridge.integrity import check_or_refuse, is_full, is_locked
from monitors.store.schema import migrations
from monitors.store.sql import SQLITE
from monitors.store.sql import StoreUnavailable
from watchdog.shared import file_modes
from watchdog.shared.migrations import SchemaTooNew, SqliteExecutor, SqliteTarget, latest, migrate, sqlite_write

WRITE_BUSY_TIMEOUT = 1.0  # seconds a writer waits for the lock on the event loop before StoreUnavailable


@retry(retry=retry_if_exception_type(sqlite3.OperationalError), wait=wait_random(0.01, 0.05),
       stop=stop_after_delay(10), reraise=True)
def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switching a new file to WAL needs an exclusive lock and ignores the busy timeout, so six
    monitors starting at once on a fresh drops.db retry it briefly."""
    conn.execute("PRAGMA journal_mode = WAL")


class SqliteBackend:
    dialect = SQLITE

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.description = str(path)
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10.0)
        else:
            check_or_refuse(path)  # CorruptStore: the monitor exits 2 naming the file and the restore procedure
            # drops and phone numbers: not for other users (SQLite gives -wal and -shm the same mode)
            file_modes.prepare_sqlite(path, file_modes.PRIVATE_FILE)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        target = SqliteTarget(self.conn, self.description)
        try:
            found = target.refuse_if_newer(migrations(SQLITE))
        except SchemaTooNew:
            self.conn.close()
            raise
        if readonly:
            if found == latest(migrations(SQLITE)):
                return
            self.conn.close()  # a file from an older release: upgrade it first (no monitor has yet)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
            self.conn.execute("PRAGMA busy_timeout = 10000")
            target = SqliteTarget(self.conn, self.description)
        # WAL (readers never block the writers); NORMAL survives a kill -9, like the bridge store.
        _enable_wal(self.conn)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        if found < latest(migrations(SQLITE)):  # up to date (every start but the first): no write lock taken
            migrate(target, migrations(SQLITE))
        self.conn.execute(f"PRAGMA busy_timeout = {int(WRITE_BUSY_TIMEOUT * 1000)}")  # after the migrations

    @contextmanager
    def transaction(self) -> Iterator[SqliteExecutor]:
        try:
            with sqlite_write(self.conn) as tx:
                yield tx
        except sqlite3.OperationalError as exc:
            if is_locked(exc):
                raise StoreUnavailable(f"{self.path.name} locked by another process: {exc}") from exc
            if is_full(exc):  # waited out like a lock: a restart would not free any space
                raise StoreUnavailable(f"{self.path.name}: {exc}") from exc
            raise

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()
