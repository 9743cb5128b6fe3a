"""`wa-watchdog prune`: old messages go once every listening monitor has read them; nothing still needed does."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.schema import format_ts

from bridge.store import Store
from bridge.transport import IncomingMessage
from monitors.drops_store import open_drops_store
from tests.conftest import GROUP_A
from tests.monitor_support import cli
from watchdog.components import load

OLD = datetime.now(timezone.utc) - timedelta(days=400)
NEW = datetime.now(timezone.utc) - timedelta(days=1)


def _messages(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY rowid")]


@pytest.mark.slow
def test_prune_keeps_what_a_monitor_has_not_read_and_the_newest_row(config_path: Path) -> None:
    config = load(config_path)
    path = config.accounts["main"].store
    path.parent.mkdir(parents=True)
    store = Store(path)
    store.add_messages([IncomingMessage(f"M{n}", GROUP_A, "27710000001@s.whatsapp.net", f"DR{1000000 + n}",
                                        OLD if n < 8 else NEW) for n in range(10)])
    store.close()
    with sqlite3.connect(path) as conn:  # a sent message's receipt long ago, and one of yesterday
        conn.executemany("INSERT INTO receipts (message_id, chat_jid, kind, at, stored_at) VALUES (?, ?, 'read', ?, ?)",
                         [(f"S{n}", GROUP_A, when, when) for n, when in enumerate((format_ts(OLD), format_ts(NEW)))])
    drops = open_drops_store(config)
    drops.record("lawley", "main", 6, [], None)  # lawley has read rowids 1-6
    drops.record("mohadin", "main", 9, [], None)
    drops.close()

    dry = cli(config_path, "prune", "--older-than", "180d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("main: would remove 6 messages, 0 outbox")
    assert len(_messages(path)) == 10

    done = cli(config_path, "prune", "--older-than", "180d")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("main: removed 6 messages, 0 outbox, 0 outbox_requests, 1 receipts")
    assert _messages(path) == ["M6", "M7", "M8", "M9"]  # M6, M7: old but not yet read by lawley
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM message_meta").fetchone()[0] == 4

    drops = open_drops_store(config)
    drops.record("lawley", "main", 9, [], None)
    drops.close()
    everything = cli(config_path, "prune", "--older-than", "0s")
    assert everything.stdout.startswith("main: removed 3 messages")
    assert _messages(path) == ["M9"]  # the newest row stays: its rowid must never be handed out again
    store = Store(path)
    store.add_messages([IncomingMessage("M10", GROUP_A, "27710000001@s.whatsapp.net", "after", NEW)])
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT rowid FROM messages WHERE id = 'M10'").fetchone()[0] == 11
    store.close()


@pytest.mark.slow
def test_prune_refuses_a_bad_age_and_keeps_everything_before_any_monitor_ran(config_path: Path) -> None:
    bad = cli(config_path, "prune", "--older-than", "half a year")
    assert bad.returncode == 2 and "--older-than 'half a year'" in bad.stderr
    config = load(config_path)
    path = config.accounts["main"].store
    path.parent.mkdir(parents=True)
    store = Store(path)
    store.add_messages([IncomingMessage(f"M{n}", GROUP_A, "27710000001@s.whatsapp.net", "x", OLD) for n in range(3)])
    store.close()
    done = cli(config_path, "prune", "--older-than", "1d")
    assert done.returncode == 0 and done.stdout.startswith("main: removed 0 messages")
    assert len(_messages(path)) == 3
