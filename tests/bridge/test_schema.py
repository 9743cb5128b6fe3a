"""messages.db's contract is one module both sides import: schema (migrations), version, readers."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge import schema, store
from monitors import follow
from watchdog.shared.migrations import SchemaTooNew


def test_the_writer_and_the_readers_share_one_module_with_a_version() -> None:
    assert schema.SCHEMA_VERSION == schema.MIGRATIONS[-1].version
    assert store.MIGRATIONS is schema.MIGRATIONS and follow.open_readonly is schema.open_readonly


def test_a_reader_refuses_a_file_written_by_a_newer_release(tmp_path: Path) -> None:
    path = tmp_path / "messages.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match=f"{path} has schema version {schema.SCHEMA_VERSION + 1}"):
        schema.open_readonly(path)
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
    schema.open_readonly(path).close()
