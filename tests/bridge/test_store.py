"""The bridge store on real SQLite files: whatsapp-mcp schema and queries, dedupe, windows, outbox, lock."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.session_lock import SessionHeld, SessionLock, holder_pid
from bridge.schema import format_ts, messages_after, open_readonly, windows
from bridge.store import Store, StoreError
from bridge.transport import IncomingMessage, MediaInfo, Source
from tests.conftest import GROUP_A, GROUP_B, ROOT

T0 = datetime(2026, 11, 24, 22, 31, 27, 123456, tzinfo=timezone.utc)


def msg(n: int, chat: str = GROUP_A, minutes: float = 0, source: Source = Source.LIVE, text: str | None = None,
        name: str | None = None, **kw: object) -> IncomingMessage:
    return IncomingMessage(id=f"M{n}", chat_jid=chat, sender_jid="27710000001:7@s.whatsapp.net",
                           text=f"DR{1000000 + n}" if text is None else text,
                           timestamp=T0 + timedelta(minutes=minutes), source=source, chat_name=name, **kw)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "messages.db")
    yield s
    s.close()


def test_schema_is_exactly_whatsapp_mcp(store: Store) -> None:
    """whatsapp-mcp's columns in its order, then its verygoodplugins fork's quoted_message_id (the upstream client
    names its columns, so an extra one at the end is invisible to it)."""
    def columns(table: str) -> list[tuple]:
        return [(r[1], r[2], r[5]) for r in store.conn.execute(f"PRAGMA table_info({table})")]
    assert columns("chats") == [("jid", "TEXT", 1), ("name", "TEXT", 0), ("last_message_time", "TIMESTAMP", 0)]
    assert columns("messages") == [
        ("id", "TEXT", 1), ("chat_jid", "TEXT", 2), ("sender", "TEXT", 0), ("content", "TEXT", 0),
        ("timestamp", "TIMESTAMP", 0), ("is_from_me", "BOOLEAN", 0), ("media_type", "TEXT", 0),
        ("filename", "TEXT", 0), ("url", "TEXT", 0), ("media_key", "BLOB", 0), ("file_sha256", "BLOB", 0),
        ("file_enc_sha256", "BLOB", 0), ("file_length", "INTEGER", 0), ("quoted_message_id", "TEXT", 0)]
    fks = list(store.conn.execute("PRAGMA foreign_key_list(messages)"))
    assert [(f[2], f[3], f[4]) for f in fks] == [("chats", "chat_jid", "jid")]
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_rows_are_what_whatsapp_mcp_writes(store: Store) -> None:
    assert store.add_messages([msg(1, name="Lawley Fibre"), msg(2, chat=GROUP_B, minutes=1)]) == 2
    rows = store.conn.execute("SELECT id, chat_jid, sender, content, timestamp, is_from_me FROM messages "
                              "ORDER BY rowid").fetchall()
    assert rows[0] == ("M1", GROUP_A, "27710000001", "DR1000001", "2026-11-24 22:31:27.123456+00:00", 0)
    assert datetime.fromisoformat(rows[1][4]) == T0 + timedelta(minutes=1)
    chats = dict(store.conn.execute("SELECT jid, name FROM chats"))
    assert chats == {GROUP_A: "Lawley Fibre", GROUP_B: "Group 120363000000000002"}
    # A name learned later replaces the fallback; an unknown name never erases a known one.
    store.add_messages([msg(3, chat=GROUP_B, name="Mohadin Fibre"), msg(4, minutes=2)])
    assert dict(store.conn.execute("SELECT jid, name FROM chats")) == {GROUP_A: "Lawley Fibre",
                                                                        GROUP_B: "Mohadin Fibre"}


def test_timestamps_are_fixed_width_utc_text() -> None:
    sast = timezone(timedelta(hours=2))
    assert format_ts(datetime(2026, 1, 2, 5, 4, 3, tzinfo=sast)) == "2026-01-02 03:04:03.000000+00:00"
    with pytest.raises(ValueError, match="naive"):
        format_ts(datetime(2026, 1, 2))


def test_duplicate_delivery_never_creates_a_second_row(store: Store) -> None:
    assert store.add_messages([msg(1), msg(2)]) == 2
    assert store.add_messages([msg(2), msg(1, source=Source.OFFLINE), msg(3)]) == 1
    assert store.message_count() == 3
    sources = dict(store.conn.execute("SELECT id, source FROM message_meta"))
    assert sources == {"M1": "live", "M2": "live", "M3": "live"}  # the first arrival's source stays


def test_last_message_time_is_the_newest_message_even_after_an_older_backfill(store: Store) -> None:
    store.add_messages([msg(1, minutes=10), msg(2, minutes=5)])
    newest = format_ts(T0 + timedelta(minutes=10))
    assert store.conn.execute("SELECT last_message_time FROM chats").fetchone()[0] == newest
    assert store.add_messages([msg(3, minutes=1)], Source.HISTORY) == 1
    assert store.conn.execute("SELECT last_message_time FROM chats").fetchone()[0] == newest
    assert store.conn.execute("SELECT source FROM message_meta WHERE id = 'M3'").fetchone()[0] == "history"


def test_empty_messages_are_skipped_as_whatsapp_mcp_does(store: Store) -> None:
    assert store.add_messages([msg(1, text="")]) == 0
    media = MediaInfo("image", "photo.jpg", "https://mmg.whatsapp.net/x", b"k", b"s", b"e", 42, {"mimetype": "image/jpeg"})
    assert store.add_messages([msg(2, text="", media=media)]) == 1
    assert store.media_of("M2", GROUP_A) == media
    assert store.media_of("nope", GROUP_A) is None


def test_monitors_read_by_rowid_with_source_from_a_readonly_connection(store: Store) -> None:
    store.add_messages([msg(1), msg(2)])
    store.add_messages([msg(0, minutes=-5)], Source.HISTORY)
    reader = open_readonly(store.path)
    rows = messages_after(reader, 0)
    assert [(r.id, r.source, r.chat_name) for r in rows] == [("M1", "live", "Group 120363000000000001"),
                                                              ("M2", "live", "Group 120363000000000001"),
                                                              ("M0", "history", "Group 120363000000000001")]
    assert [r.id for r in messages_after(reader, rows[1].rowid)] == ["M0"]
    with pytest.raises(sqlite3.OperationalError):
        reader.execute("DELETE FROM messages")


def test_sent_messages_are_stored_from_me(store: Store) -> None:
    row = store.outbox_add("3EB0AA", None, "27710000001", "27710000001@s.whatsapp.net", "hi", [], None, None)
    sent = IncomingMessage("3EB0AA", GROUP_A, "27710000000@s.whatsapp.net", "hi", T0, Source.SENT, is_from_me=True)
    store.outbox_sent(row, sent)
    assert store.conn.execute("SELECT sender, is_from_me FROM messages").fetchone() == ("27710000000", 1)
    assert store.conn.execute("SELECT source FROM message_meta").fetchone()[0] == "sent"
    assert store.outbox_row("3EB0AA").status == "sent"
    assert store.outbox_depth() == 0


def test_outbox_is_ordered_and_idempotent(store: Store) -> None:
    first = store.outbox_add("ID1", "key-1", "123456789", "123456789@s.whatsapp.net", "a", ["1@s.whatsapp.net"],
                             None, None)
    again = store.outbox_add("ID2", "key-1", "123456789", "123456789@s.whatsapp.net", "a", [], None, None)
    assert again == first and again.mentioned_jids == ("1@s.whatsapp.net",)
    store.outbox_add("ID3", None, "r", "r@s.whatsapp.net", "b", [], None, None)
    store.outbox_add("ID4", None, "r", "r@s.whatsapp.net", "c", [], None, None)
    assert [r.message_id for r in store.outbox_pending()] == ["ID1", "ID3", "ID4"]
    store.outbox_failed(first, "bad recipient")
    assert store.outbox_depth() == 2 and store.outbox_by_key("key-1").error == "bad recipient"


def test_disconnect_windows(store: Store) -> None:
    a = store.start_window("2026-11-24 22:00:00.000000+00:00", "bridge crash")
    assert store.start_window("2026-11-24 22:00:05.000000+00:00", "server closed") == a  # one open window
    assert store.windows_to_backfill() == []
    closed = store.end_window("2026-11-24 22:00:09.500000+00:00")
    assert (closed.started_at, closed.ended_at, closed.reason) == (a.started_at, "2026-11-24 22:00:09.500000+00:00",
                                                                   "bridge crash")
    assert store.end_window("2026-11-24 22:00:10.000000+00:00") is None
    assert [w.id for w in store.windows_to_backfill()] == [a.id]
    done = store.finish_backfill(a.id, "done", recovered=7)
    assert (done.backfill_status, done.recovered) == ("done", 7) and done.backfilled_at
    assert windows(open_readonly(store.path)) == [done]


def test_ingest_batch_is_one_transaction(store: Store) -> None:
    batch = [msg(n, chat=GROUP_A if n % 2 else GROUP_B, minutes=n / 1000) for n in range(3000)]
    assert store.add_messages(batch) == 3000
    newest_b = format_ts(T0 + timedelta(minutes=2998 / 1000))
    assert store.conn.execute("SELECT last_message_time FROM chats WHERE jid = ?", (GROUP_B,)).fetchone()[0] == newest_b


def test_a_full_disk_raises_store_error_and_loses_nothing_stored(store: Store) -> None:
    store.add_messages([msg(1)])
    pages = store.conn.execute("PRAGMA page_count").fetchone()[0]
    store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full now
    with pytest.raises(StoreError, match="messages.db.*full"):
        store.add_messages([msg(n, text="x" * 5000) for n in range(2, 50)])
    assert store.message_count() == 1


# -- whatsapp-mcp's read queries (whatsapp-mcp-server/whatsapp.py), run unchanged on our store --

LIST_CHATS_SQL = """
    SELECT
        chats.jid,
        chats.name,
        chats.last_message_time,
        messages.content as last_message,
        messages.sender as last_sender,
        messages.is_from_me as last_is_from_me
    FROM chats
    LEFT JOIN messages ON chats.jid = messages.chat_jid
    AND chats.last_message_time = messages.timestamp
    ORDER BY chats.last_message_time DESC LIMIT ? OFFSET ?"""

LIST_MESSAGES_SQL = (
    "SELECT messages.timestamp, messages.sender, chats.name, messages.content, messages.is_from_me, chats.jid, "
    "messages.id, messages.media_type FROM messages JOIN chats ON messages.chat_jid = chats.jid "
    "WHERE messages.timestamp > ? AND messages.timestamp < ? AND messages.chat_jid = ? "
    "ORDER BY messages.timestamp DESC LIMIT ? OFFSET ?")

SEARCH_CONTACTS_SQL = """
    SELECT DISTINCT
        jid,
        name
    FROM chats
    WHERE
        (LOWER(name) LIKE LOWER(?) OR LOWER(jid) LIKE LOWER(?))
        AND jid NOT LIKE '%@g.us'
    ORDER BY name, jid
    LIMIT 50"""


def test_whatsapp_mcp_queries_return_correct_rows(store: Store) -> None:
    store.add_messages([msg(1, minutes=0, name="Lawley Fibre"), msg(2, minutes=30), msg(3, minutes=60),
                        msg(4, chat=GROUP_B, minutes=45, name="Mohadin Fibre")])
    store.add_messages([msg(5, minutes=-30)], Source.HISTORY)  # older, arrives last
    dm = IncomingMessage("D1", "27710000009@s.whatsapp.net", "27710000009@s.whatsapp.net", "hello", T0, chat_name="Thabo")
    store.add_messages([dm])
    conn = sqlite3.connect(store.path)  # as whatsapp-mcp opens it

    chats = conn.execute(LIST_CHATS_SQL, (20, 0)).fetchall()
    assert [(c[0], c[1], c[3], c[4]) for c in chats] == [
        (GROUP_A, "Lawley Fibre", "DR1000003", "27710000001"),
        (GROUP_B, "Mohadin Fibre", "DR1000004", "27710000001"),
        ("27710000009@s.whatsapp.net", "Thabo", "hello", "27710000009")]
    assert datetime.fromisoformat(chats[0][2]) == T0 + timedelta(hours=1)

    # whatsapp-mcp passes datetimes parsed from the user's ISO text; sqlite3 adapts them itself.
    after = datetime.fromisoformat((T0 + timedelta(minutes=-31)).isoformat())
    before = datetime.fromisoformat((T0 + timedelta(minutes=59)).isoformat())
    rows = conn.execute(LIST_MESSAGES_SQL, (after, before, GROUP_A, 20, 0)).fetchall()
    assert [r[6] for r in rows] == ["M2", "M1", "M5"]
    assert all(isinstance(datetime.fromisoformat(r[0]), datetime) for r in rows)
    naive_after = datetime(2026, 11, 24, 22, 40)  # what fromisoformat gives for "2026-11-24T22:40:00"
    assert [r[6] for r in conn.execute(LIST_MESSAGES_SQL, (naive_after, before, GROUP_A, 20, 0))] == ["M2"]

    assert conn.execute(SEARCH_CONTACTS_SQL, ("%thab%", "%thab%")).fetchall() == [
        ("27710000009@s.whatsapp.net", "Thabo")]
    assert conn.execute(SEARCH_CONTACTS_SQL, ("%lawley%", "%lawley%")).fetchall() == []  # groups excluded


# -- session lock --------------------------------------------------------------------------------

HOLD = "import sys, time; from pathlib import Path; from bridge.session_lock import SessionLock; " \
       "SessionLock(Path(sys.argv[1])); print('held', flush=True); sys.stdin.read()"


def test_session_lock_one_owner_and_holder_pid(tmp_path: Path) -> None:
    session = tmp_path / "session"
    assert holder_pid(session) is None
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(session)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert holder.stdout.readline() == b"held\n"
        assert holder_pid(session) == holder.pid
        with pytest.raises(SessionHeld, match=rf"session {session}/session.lock is held by pid {holder.pid}"):
            SessionLock(session)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert holder_pid(session) is None  # the kernel released it with the process
    mine = SessionLock(session)
    assert holder_pid(session) is not None
    mine.release()
    assert holder_pid(session) is None
