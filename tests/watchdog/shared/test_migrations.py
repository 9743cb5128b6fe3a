"""The migration runner on real SQLite files: steps in order, all-or-nothing, a newer file refused untouched."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.migrations import Executor, Migration, SchemaTooNew, SqliteTarget, migrate

STEPS = [
    Migration(1, "t", ("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, name TEXT)",)),
    Migration(2, "t.extra", ("ALTER TABLE t ADD COLUMN extra TEXT",)),
]


def connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def columns(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]


def test_pending_steps_run_once_in_order_and_a_data_step_sees_the_earlier_ones(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    assert migrate(SqliteTarget(conn, str(path)), STEPS[:1]) == 1
    conn.execute("INSERT INTO t (name) VALUES ('a')")

    def fill(ex: Executor) -> None:
        for (row_id,) in ex.rows("SELECT id FROM t WHERE extra IS NULL"):
            ex.run("UPDATE t SET extra = ? WHERE id = ?", (f"x{row_id}", row_id))
    steps = [STEPS[0], Migration(2, "t.extra", ("ALTER TABLE t ADD COLUMN extra TEXT", fill))]
    assert migrate(SqliteTarget(conn, str(path)), steps) == 2
    assert migrate(SqliteTarget(conn, str(path)), steps) == 2  # nothing left: ALTER would fail if it ran again
    assert conn.execute("SELECT name, extra FROM t").fetchall() == [("a", "x1")]
    assert version(path) == 2


def test_a_failing_step_leaves_the_database_at_its_old_version(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    migrate(SqliteTarget(conn, str(path)), STEPS[:1])
    broken = [*STEPS, Migration(3, "broken", ("CREATE TABLE u (id INTEGER)", "ALTER TABLE nowhere ADD COLUMN y"))]
    with pytest.raises(sqlite3.OperationalError, match="nowhere"):
        migrate(SqliteTarget(conn, str(path)), broken)
    assert version(path) == 1
    assert columns(path, "t") == ["id", "name"]  # step 2 rolled back with step 3
    assert columns(path, "u") == []


def test_a_database_newer_than_the_code_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = connect(path)
    migrate(SqliteTarget(conn, str(path)), STEPS)
    conn.execute("PRAGMA user_version = 7")
    with pytest.raises(SchemaTooNew, match=r"x\.db has schema version 7, newer than this wa-watchdog knows \(1\)"):
        migrate(SqliteTarget(conn, str(path)), STEPS[:1])
    assert SchemaTooNew.exit_code == EXIT_CONFIG
    assert version(path) == 7


def test_versions_must_be_numbered_from_one_without_gaps(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="1..2 in order"):
        migrate(SqliteTarget(connect(tmp_path / "x.db"), "x"), [STEPS[1], STEPS[0]])
