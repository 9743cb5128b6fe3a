"""Schema versions of the drops store and messages.db: a release-before-migrations file is upgraded in place,
a newer one is refused (exit 2) untouched, and SQLite and PostgreSQL have the same tables and columns."""
from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import psycopg
import pytest

from bridge.schema import MIGRATIONS as MESSAGES_MIGRATIONS
from bridge.schema import messages_after
from bridge.store import Store
from monitors.drops_store import DropsDB, Position, ReceiptStamp, open_drops_store
from monitors.follow import StoreFollower
from monitors.main import MonitorProcess
from monitors.store.postgres import PostgresBackend
from monitors.store.schema import migrations
from monitors.store.sql import POSTGRES, SQLITE
from monitors.store.sqlite import SqliteBackend
from tests.conftest import BASE_CONFIG, ROOT
from watchdog.components import Config, load
from watchdog.shared.exitcodes import EXIT_CONFIG
from watchdog.shared.migrations import SchemaTooNew, latest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
DROPS_LATEST = latest(migrations(SQLITE))


def from_fixture(path: Path, name: str) -> Path:
    """A database file as the release before migrations wrote it (its DDL verbatim, a few rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / name).read_text())
    return path


def user_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA user_version").fetchone()[0]


def sqlite_shape(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in tables}


def cli(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "watchdog.cli", args[0], "--config", str(config_path), *args[1:]],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.fixture
def config(config_path: Path) -> Config:
    return load(config_path)


def test_a_drops_db_of_the_last_release_is_upgraded_in_place_and_keeps_recording(config: Config) -> None:
    path = from_fixture(config.data_dir / "drops.db", "drops-c7a211d.sql")
    assert user_version(path) == 0
    drops = open_drops_store(config)
    assert user_version(path) == DROPS_LATEST
    old = drops.drops()
    assert [(d.project, d.drop_number, d.backfilled, d.feedback_status) for d in old] == [
        ("lawley", "DR1734150", False, "sent"), ("mohadin", "DR471349", True, "pending")]
    assert len({uuid.UUID(d.public_id) for d in old}) == 2  # every old drop got its own public id
    (sent,) = drops.feedback_of(old[0])
    assert (sent.bridge_message_id, sent.delivered_at, sent.read_at) == ("3EB0AAAA", None, None)
    assert drops.position("lawley", "main") == Position(2)  # no marks yet: the old rule until it moves
    assert drops.reported_windows("mohadin", "main") == {1: None}  # claimed before window starts were kept
    # The old feedback now takes receipts, with their webhook events.
    assert drops.record_receipts([ReceiptStamp("3EB0AAAA", "delivered", "2026-11-24 08:00:02.000000+00:00")])[1] == 1
    assert [e.type for e in drops.outbox.due("ops")] == ["feedback.delivered"]
    drops.close()
    # Same tables and columns as a store created by this release.
    DropsDB(SqliteBackend(config.data_dir / "fresh.db")).close()
    assert sqlite_shape(path) == sqlite_shape(config.data_dir / "fresh.db")


def test_a_messages_db_of_the_last_release_is_upgraded_and_still_followed(config: Config) -> None:
    path = from_fixture(config.account("main").store, "messages-c7a211d.sql")
    store = Store(path)
    assert user_version(path) == latest(MESSAGES_MIGRATIONS)
    assert [(m.id, m.source) for m in messages_after(store.conn, 0)] == [("M1", "live"), ("M2", "offline")]
    assert store.outbox_by_key("k1").status == "sent"
    assert len(store.get_state("store_id") or "") == 32  # an upgraded file gets its identity too
    assert [r[1] for r in store.conn.execute("PRAGMA table_info(receipts)")] == [
        "id", "message_id", "chat_jid", "recipient_jid", "kind", "at", "stored_at"]
    store.close()
    # A monitor follows the upgraded store from its start and records both drops once.
    (monitor,) = MonitorProcess(config, [config.project("lawley")]).monitors
    follower = StoreFollower(path)
    asyncio.run(monitor.catch_up(follower))
    follower.close()
    assert [d.drop_number for d in monitor.drops.drops("lawley")] == ["DR1734150"]
    monitor.drops.close()


@pytest.mark.slow
def test_newer_files_are_refused_with_exit_2_and_left_as_they_are(config_path: Path, config: Config) -> None:
    drops_path = from_fixture(config.data_dir / "drops.db", "drops-c7a211d.sql")
    messages_path = from_fixture(config.account("main").store, "messages-c7a211d.sql")
    for path in (drops_path, messages_path):
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA user_version = 99")
    before = {p: p.read_bytes() for p in (drops_path, messages_path)}
    monitor = cli(config_path, "monitor", "--project", "lawley")
    assert monitor.returncode == EXIT_CONFIG, monitor.stderr
    assert f"{drops_path} has schema version 99, newer than this wa-watchdog knows ({DROPS_LATEST})" in monitor.stderr
    listing = cli(config_path, "drops")
    assert listing.returncode == EXIT_CONFIG and "schema version 99" in listing.stderr
    bridge = cli(config_path, "bridge", "--account", "main")
    assert bridge.returncode == EXIT_CONFIG, bridge.stderr
    assert f"{messages_path} has schema version 99, newer than this wa-watchdog knows ({latest(MESSAGES_MIGRATIONS)})" in bridge.stderr
    assert "Traceback" not in monitor.stderr + listing.stderr + bridge.stderr
    assert {p: p.read_bytes() for p in before} == before  # never half-used


def pg_shape(url: str, schema: str = "wa_watchdog") -> dict[str, list[str]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
                            "AND table_name <> 'schema_versions' ORDER BY table_name, ordinal_position",
                            (schema,)).fetchall()
    shape: dict[str, list[str]] = {}
    for table, column in rows:
        shape.setdefault(table, []).append(column)
    return shape


def test_postgres_has_the_same_tables_and_columns_and_refuses_a_newer_schema(pg_url: str, config: Config) -> None:
    sqlite_store = open_drops_store(config)
    sqlite_store.close()
    expected = {t: c for t, c in sqlite_shape(config.data_dir / "drops.db").items() if t != "sqlite_sequence"}
    pg = DropsDB(PostgresBackend(pg_url))
    assert pg.drop_count("lawley") == 0  # connects and migrates on first use
    pg.close()
    assert pg_shape(pg_url) == expected
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT max(version) FROM wa_watchdog.schema_versions").fetchone() == (
            latest(migrations(POSTGRES)),)
        conn.execute("INSERT INTO wa_watchdog.schema_versions (version, name) VALUES (99, 'from the future')")
    with pytest.raises(SchemaTooNew, match=r"PostgreSQL postgresql://postgres@127\.0\.0\.1:\d+/\w+ \(schema "
                                           r"wa_watchdog\) has schema version 99"):
        DropsDB(PostgresBackend(pg_url)).drop_count("lawley")


def test_processes_migrating_one_postgres_database_at_once_apply_each_step_once(pg_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def open_one() -> None:
        backend = PostgresBackend(pg_url, "racing")
        try:
            barrier.wait()
            backend.connect()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            backend.close()
    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with psycopg.connect(pg_url) as conn:
        versions = conn.execute("SELECT version FROM racing.schema_versions ORDER BY version").fetchall()
    assert versions == [(v,) for v in range(1, latest(migrations(POSTGRES)) + 1)]


@pytest.mark.slow
def test_a_pg_monitor_started_on_a_newer_schema_exits_2(write_config, pg_url: str) -> None:  # noqa: ANN001
    config_path = write_config(BASE_CONFIG + f'\n[database]\nurl = "{pg_url}"\n')
    DropsDB(PostgresBackend(pg_url)).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA wa_watchdog")
        conn.execute("CREATE TABLE wa_watchdog.schema_versions (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO wa_watchdog.schema_versions (version, name) VALUES (99, 'from the future')")
    monitor = cli(config_path, "monitor", "--project", "lawley")
    assert monitor.returncode == EXIT_CONFIG, monitor.stderr
    assert "has schema version 99" in monitor.stderr and "Traceback" not in monitor.stderr
