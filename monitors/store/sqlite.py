"""drops.db: the embedded default backend, one SQLite file (WAL) shared by every monitor and the ops commands.

Each writer takes short `BEGIN IMMEDIATE` transactions and waits on a busy
timeout, so six monitors never fail on each other's locks. Errors stay
sqlite3 errors (a monitor exits and is restarted, as before): a local file
that cannot be written is not an outage to wait out.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random

from monitors.store.schema import migrations
from monitors.store.sql import SQLITE
from watchdog.migrations import SqliteExecutor, SqliteTarget, latest, migrate, refuse_if_newer, sqlite_write


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
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # drops and phone numbers: not for other users (SQLite gives -wal and -shm the same mode)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        target = SqliteTarget(self.conn, self.description)
        if readonly:
            found = target.version(SqliteExecutor(self.conn))
            refuse_if_newer(target, found, migrations(SQLITE))
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
        migrate(target, migrations(SQLITE))

    @contextmanager
    def transaction(self) -> Iterator[SqliteExecutor]:
        with sqlite_write(self.conn) as tx:
            yield tx

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        self.conn.close()
