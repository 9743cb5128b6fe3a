"""`wa-watchdog backup DIR`: consistent SQLite copies under WAL while a writer runs, private files, a restore."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.store import Store
from monitors.drops_store import open_drops_store
from tests.conftest import BASE_CONFIG, ROOT
from tests.monitor_support import cli
from watchdog.components import load

# Writes pairs of messages, each pair in one transaction, until killed: a consistent copy holds whole pairs only.
WRITER = """
import sys
from datetime import datetime, timezone
from pathlib import Path
from bridge.store import Store
from bridge.transport import IncomingMessage
store = Store(Path(sys.argv[1]))
n = 0
while True:
    now = datetime.now(timezone.utc)
    store.add_messages([IncomingMessage(f"M{n}-{i}", "120363000000000001@g.us", "27710000001@s.whatsapp.net",
                                        f"DR{1000000 + n} pole {i}", now) for i in (0, 1)])
    n += 1
    if n == 50:
        print("writing", flush=True)
"""


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


@pytest.mark.slow
def test_backup_is_consistent_while_a_writer_runs_and_restores(config_path: Path, tmp_path: Path) -> None:
    config = load(config_path)
    store_path = config.accounts["main"].store
    store_path.parent.mkdir(parents=True)
    Store(store_path).close()
    open_drops_store(config).close()
    config.watchdog.recovery_log.write_text('{"event": "start"}\n', encoding="utf-8")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(store_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        old_umask = os.umask(0o022)  # what an operator's shell has (the child inherits it): still private
        try:
            done = cli(config_path, "backup", str(tmp_path / "backups"))
        finally:
            os.umask(old_umask)
        assert writer.poll() is None  # the writer ran through the whole backup
    finally:
        writer.kill()
        writer.wait()
        writer.stdout.close()
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "backups").iterdir()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    manifest = json.loads((folder / "MANIFEST.json").read_text())
    assert [f["role"] for f in manifest["files"]] == ["drops", "messages:main", "recovery_log", "config"]
    for entry in manifest["files"]:
        assert stat.S_IMODE((folder / entry["path"]).stat().st_mode) == 0o600, entry
    copy = folder / "data" / "accounts" / "main" / "messages.db"
    assert not Path(f"{copy}-wal").exists()  # one self-contained file
    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    messages = _count(copy, "messages")
    assert messages > 0 and messages % 2 == 0 and _count(copy, "message_meta") == messages  # whole transactions only
    assert messages <= _count(store_path, "messages")

    # Restore onto a new host: the data folder of the backup becomes the data directory.
    restored = tmp_path / "new-host"
    shutil.copytree(folder / "data", restored)
    store = Store(restored / "accounts" / "main" / "messages.db")
    assert store.message_count() == messages
    store.close()
    listed = cli(config_path, "drops", "--data-dir", str(restored))
    assert (listed.returncode, listed.stdout.strip()) == (0, "no drops recorded")
    assert (restored / "recoveries.jsonl").read_text() == '{"event": "start"}\n'


def test_a_neonize_session_store_is_copied_and_postgres_is_named(write_config, tmp_path: Path) -> None:
    neonize = BASE_CONFIG.replace('transport = "sim"', 'transport = "neonize"')
    config = load(write_config(neonize))
    session = config.accounts["main"].session_dir / "neonize.db"
    session.parent.mkdir(parents=True)
    with sqlite3.connect(session) as conn:
        conn.execute("CREATE TABLE whatsmeow_device (jid TEXT)")
        conn.execute("INSERT INTO whatsmeow_device VALUES ('27710000000:7@s.whatsapp.net')")
    done = cli(config.path, "backup", str(tmp_path / "b1"))
    assert done.returncode == 0, done.stderr
    (folder,) = (tmp_path / "b1").iterdir()
    copied = folder / "data" / "accounts" / "main" / "session" / "neonize.db"
    with sqlite3.connect(copied) as conn:
        assert conn.execute("SELECT jid FROM whatsmeow_device").fetchall() == [("27710000000:7@s.whatsapp.net",)]
    assert "messages:main: " in done.stdout and "does not exist (not created yet), skipped" in done.stdout

    url = "postgresql://wa@127.0.0.1/wa"
    pg = load(write_config(neonize.replace('transport = "neonize"', f'transport = "neonize"\nsession_db = "{url}"')
                           + f'\n[database]\nurl = "{url}"\n', name="pg.toml"))
    done = cli(pg.path, "backup", str(tmp_path / "b2"))
    assert done.returncode == 0, done.stderr
    assert f"session:main is in PostgreSQL: back it up with pg_dump '{url}'" in done.stdout
    assert f"drops store is in PostgreSQL: back it up with pg_dump '{url}'" in done.stdout
    (folder,) = (tmp_path / "b2").iterdir()
    assert [f["role"] for f in json.loads((folder / "MANIFEST.json").read_text())["files"]] == ["config"]


def test_reading_a_stopped_store_as_root_leaves_its_files_to_their_owner(config_path: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: the case is root backing up a service user's files")
    config = load(config_path)
    store_path = config.accounts["main"].store
    store_path.parent.mkdir(parents=True)
    Store(store_path).close()  # a clean close: no -wal / -shm left
    nobody = 65534
    for path in (config.data_dir, store_path.parent.parent, store_path.parent, store_path):
        os.chown(path, nobody, nobody)
    assert cli(config_path, "backup", str(tmp_path / "b")).returncode == 0
    for side in (Path(f"{store_path}-wal"), Path(f"{store_path}-shm")):
        assert not side.exists() or side.stat().st_uid == nobody, side


def test_a_backup_inside_the_data_dir_is_refused(config_path: Path, data_dir: Path) -> None:
    refused = cli(config_path, "backup", str(data_dir / "backups"))
    assert refused.returncode == 2 and "is inside the data directory" in refused.stderr
    assert not (data_dir / "backups").exists()
