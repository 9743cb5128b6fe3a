"""Numbered schema migrations: the one runner behind messages.db (bridge) and the drops store (monitors).

Why numbered steps instead of `CREATE TABLE IF NOT EXISTS` at every start:
columns get added to tables that already hold data, and a database written
by a newer release must be refused rather than half-used. Each store keeps
the number of the last step it applied (SQLite `PRAGMA user_version`, a
`schema_versions` table in PostgreSQL); at start-up the pending steps run in
ONE transaction under the store's write lock (SQLite `BEGIN IMMEDIATE`, a
PostgreSQL advisory lock), so six processes starting at once apply each step
exactly once and a kill half way leaves the database at the old version.

Step 1 of each list is the schema of the release before migrations existed,
written with `IF NOT EXISTS`: a database from that release and an empty one
both start there. A released step is never edited; changes are new steps.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

from watchdog.shared.exitcodes import EXIT_CONFIG


class Executor(Protocol):
    """Runs one SQL statement (no parameters needed by DDL) inside the migration's transaction."""

    def run(self, sql: str, params: Sequence[object] = ()) -> None: ...

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]: ...


Step = str | Callable[[Executor], None]  # SQL (statements separated by ';') or a data step in Python


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    steps: tuple[Step, ...]


class Target(Protocol):
    """A database that keeps its schema version: the runner's view of a store."""

    description: str  # names the file or database in messages

    def locked(self) -> AbstractContextManager[Executor]:
        """A write transaction that no other process can run a migration beside."""

    def version(self, ex: Executor) -> int: ...

    def set_version(self, ex: Executor, migration: Migration) -> None: ...


class SchemaTooNew(Exception):
    """The database was written by a newer release: using it could corrupt what that release relies on."""

    exit_code = EXIT_CONFIG


def latest(migrations: Sequence[Migration]) -> int:
    return migrations[-1].version if migrations else 0


def check_list(migrations: Sequence[Migration]) -> None:
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise ValueError(f"migration versions must be 1..{len(migrations)} in order: "
                         f"{[m.version for m in migrations]}")


def refuse_if_newer(target: Target, found: int, migrations: Sequence[Migration]) -> None:
    if found > latest(migrations):
        raise SchemaTooNew(f"{target.description} has schema version {found}, newer than this wa-watchdog knows "
                           f"({latest(migrations)}): it was written by a newer release; refusing to use it "
                           f"(upgrade wa-watchdog, or restore a backup made by this release)")


def _statements(sql: str) -> Iterator[str]:
    for statement in sql.split(";"):
        if statement.strip():
            yield statement


def migrate(target: Target, migrations: Sequence[Migration]) -> int:
    """Apply the pending steps; returns the version the database is at now. Raises SchemaTooNew."""
    check_list(migrations)
    with target.locked() as ex:
        found = target.version(ex)
        refuse_if_newer(target, found, migrations)
        for migration in migrations[found:]:
            for step in migration.steps:
                if isinstance(step, str):
                    for statement in _statements(step):
                        ex.run(statement)
                else:
                    step(ex)
            target.set_version(ex, migration)
    return latest(migrations)


# -- SQLite (messages.db, drops.db): the version is the file header's user_version ---------------

class SqliteExecutor:
    """Statements on a connection opened with isolation_level=None (we issue BEGIN/COMMIT ourselves)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(sql, params)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple]:
        return self.conn.execute(sql, params).fetchall()

    def at_commit(self, sql: str, params: Sequence[object] = ()) -> None:
        """Now: BEGIN IMMEDIATE already holds the file's one write lock for the whole transaction."""
        self.run(sql, params)


@contextmanager
def sqlite_write(conn: sqlite3.Connection) -> Iterator[SqliteExecutor]:
    """BEGIN IMMEDIATE ... COMMIT: the file's write lock for the whole transaction (waits on busy_timeout)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield SqliteExecutor(conn)
    except BaseException:
        if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class SqliteTarget:
    def __init__(self, conn: sqlite3.Connection, description: str) -> None:
        self.conn = conn
        self.description = description

    def refuse_if_newer(self, migrations: Sequence[Migration]) -> int:
        """Before anything touches the file (even switching it to WAL rewrites its header); returns its version."""
        found = self.version(SqliteExecutor(self.conn))
        refuse_if_newer(self, found, migrations)
        return found

    def locked(self) -> AbstractContextManager[Executor]:
        return sqlite_write(self.conn)

    def version(self, ex: Executor) -> int:
        return ex.rows("PRAGMA user_version")[0][0]

    def set_version(self, ex: Executor, migration: Migration) -> None:
        ex.run(f"PRAGMA user_version = {int(migration.version)}")  # transactional: part of the same commit
