"""The bridge's message store: whatsapp-mcp's `chats` + `messages` schema plus our own tables.

Why exactly whatsapp-mcp's schema: its MCP server (and anything written
against it) reads our `messages.db` unchanged. Why timestamps as fixed-width
text `YYYY-MM-DD HH:MM:SS.ffffff+00:00` (space, not `T`): the Go bridge stores
them that way (go-sqlite3's format), and whatsapp-mcp compares
`messages.timestamp > ?` against Python datetimes, which sqlite3 adapts with a
space; fixed width makes text order time order.

One writer (the bridge process) holds a `Store`; readers (monitors, tools)
open the file read-only with `open_readonly` and use the read functions below.
`messages.rowid` only grows (we never delete or VACUUM), so readers follow it
with a cursor; a backfilled message gets a new, higher rowid although its
timestamp is older.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from bridge.transport import IncomingMessage, MediaInfo, Receipt, ReceiptKind, Source

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f+00:00"

# Exactly the whatsapp-mcp bridge schema (whatsapp-bridge/main.go).
WHATSAPP_MCP_SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    jid TEXT PRIMARY KEY,
    name TEXT,
    last_message_time TIMESTAMP
);
CREATE TABLE IF NOT EXISTS messages (
    id TEXT,
    chat_jid TEXT,
    sender TEXT,
    content TEXT,
    timestamp TIMESTAMP,
    is_from_me BOOLEAN,
    media_type TEXT,
    filename TEXT,
    url TEXT,
    media_key BLOB,
    file_sha256 BLOB,
    file_enc_sha256 BLOB,
    file_length INTEGER,
    PRIMARY KEY (id, chat_jid),
    FOREIGN KEY (chat_jid) REFERENCES chats(jid)
);
"""

OUR_SCHEMA = """
CREATE TABLE IF NOT EXISTS message_meta (
    id TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    source TEXT NOT NULL CHECK (source IN ('live', 'offline', 'history', 'sent')),
    stored_at TEXT NOT NULL,
    media_extra TEXT NOT NULL DEFAULT '{}',  -- transport-specific download extras (JSON)
    PRIMARY KEY (id, chat_jid)
);
CREATE TABLE IF NOT EXISTS connection_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS disconnect_windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    reason TEXT NOT NULL,
    backfill_status TEXT NOT NULL DEFAULT 'pending'
        CHECK (backfill_status IN ('pending', 'done', 'unsupported', 'failed')),
    recovered INTEGER NOT NULL DEFAULT 0,
    backfilled_at TEXT
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    recipient TEXT NOT NULL,          -- as the client wrote it ("Message sent to <recipient>")
    recipient_jid TEXT NOT NULL,
    text TEXT NOT NULL,
    mentioned_jids TEXT NOT NULL DEFAULT '[]',
    media_path TEXT,
    media_type TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    created_at TEXT NOT NULL,
    sent_at TEXT,
    error TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (status, seq);
CREATE TABLE IF NOT EXISTS bridge_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS receipts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- readers follow it with a cursor, like messages.rowid
    message_id TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    recipient_jid TEXT NOT NULL DEFAULT '',  -- who delivered / read it, '' for server_ack
    kind TEXT NOT NULL CHECK (kind IN ('server_ack', 'delivered', 'read', 'played')),
    at TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    UNIQUE (message_id, recipient_jid, kind)
);
"""

WINDOW_STATUSES = ("pending", "done", "unsupported", "failed")
OUTBOX_STATUSES = ("pending", "sent", "failed")


def format_ts(when: datetime) -> str:
    """The one timestamp text format of the store (UTC, fixed width, readable by fromisoformat)."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: store timestamps must be timezone-aware")
    return when.astimezone(timezone.utc).strftime(TS_FORMAT)


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def now_ts() -> str:
    return format_ts(datetime.now(timezone.utc))


def bare_user(jid: str) -> str:
    """`27710000001:12@s.whatsapp.net` -> `27710000001` (what whatsmeow's Sender.User holds)."""
    return jid.split("@", 1)[0].split(":", 1)[0]


def fallback_chat_name(chat_jid: str) -> str:
    """whatsapp-mcp's fallback when no name is known: `Group <id>` for groups, else the contact's number."""
    user = bare_user(chat_jid)
    return f"Group {user}" if chat_jid.endswith("@g.us") else user


@dataclass(frozen=True)
class StoredMessage:
    """A row of `messages` with its rowid and `message_meta.source`: what monitors follow."""

    rowid: int
    id: str
    chat_jid: str
    chat_name: str | None
    sender: str
    content: str
    timestamp: str
    is_from_me: bool
    media_type: str | None
    source: str


@dataclass(frozen=True)
class Window:
    """A period without a live WhatsApp connection; ended_at None while still open."""

    id: int
    started_at: str
    ended_at: str | None
    reason: str
    backfill_status: str
    recovered: int
    backfilled_at: str | None

    @property
    def span(self) -> str:
        """`08:03:10-08:06:40` in local time, as the recovery log shows it to ops; `08:03:10-now` while open."""
        end = f"{parse_ts(self.ended_at).astimezone():%H:%M:%S}" if self.ended_at else "now"
        return f"{parse_ts(self.started_at).astimezone():%H:%M:%S}-{end}"


@dataclass(frozen=True)
class StoredReceipt:
    """A row of `receipts` with its id: what monitors follow to stamp feedback delivered / read."""

    rowid: int
    message_id: str
    chat_jid: str
    recipient_jid: str
    kind: str
    at: str


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    message_id: str
    idempotency_key: str | None
    recipient: str
    recipient_jid: str
    text: str
    mentioned_jids: tuple[str, ...]
    media_path: str | None
    media_type: str | None
    status: str
    created_at: str
    sent_at: str | None
    error: str


class StoreError(Exception):
    """The store cannot be written (disk full, read-only, corrupt): the health state store_error."""


# -- readers (any connection, also read-only ones) --------------------------------------------

MESSAGES_AFTER_SQL = """
SELECT m.rowid, m.id, m.chat_jid, c.name, m.sender, m.content, m.timestamp, m.is_from_me, m.media_type,
       COALESCE(mm.source, 'live')
FROM messages m
LEFT JOIN chats c ON c.jid = m.chat_jid
LEFT JOIN message_meta mm ON mm.id = m.id AND mm.chat_jid = m.chat_jid
WHERE m.rowid > ?
ORDER BY m.rowid
LIMIT ?
"""


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (monitors): never blocks the bridge's writes in WAL mode."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def messages_after(conn: sqlite3.Connection, rowid: int, limit: int = 1000) -> list[StoredMessage]:
    """Messages with a rowid above `rowid`, oldest rowid first, with how they arrived (source)."""
    return [StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5] or "", r[6], bool(r[7]), r[8] or None, r[9])
            for r in conn.execute(MESSAGES_AFTER_SQL, (rowid, limit))]


_WINDOW_SELECT = ("SELECT id, started_at, ended_at, reason, backfill_status, recovered, backfilled_at "
                  "FROM disconnect_windows")


def windows(conn: sqlite3.Connection, since: str = "") -> list[Window]:
    """Disconnect windows that started at or after `since` (store timestamp text), oldest first."""
    return [Window(*row) for row in conn.execute(f"{_WINDOW_SELECT} WHERE started_at >= ? ORDER BY id", (since,))]


def receipts_after(conn: sqlite3.Connection, rowid: int, limit: int = 1000) -> list[StoredReceipt]:
    """Receipts with an id above `rowid`, oldest first (ids only grow; a repeated receipt adds no row)."""
    return [StoredReceipt(*row) for row in conn.execute(
        "SELECT id, message_id, chat_jid, recipient_jid, kind, at FROM receipts WHERE id > ? ORDER BY id LIMIT ?",
        (rowid, limit))]


def _receipt_rows(receipt: Receipt, stored_at: str) -> list[tuple]:
    at = format_ts(receipt.at)
    return [(message_id, receipt.chat_jid, receipt.recipient_jid, receipt.kind.value, at, stored_at)
            for message_id in receipt.message_ids]


_INSERT_RECEIPT = ("INSERT OR IGNORE INTO receipts (message_id, chat_jid, recipient_jid, kind, at, stored_at) "
                   "VALUES (?, ?, ?, ?, ?, ?)")


def _outbox_row(row: tuple) -> OutboxRow:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    return OutboxRow(*values)


class _Batch:
    """Rows for one batch of messages, ready to insert in the caller's transaction.

    Messages with neither text nor media (reactions, protocol messages) are skipped, as
    whatsapp-mcp does.
    """

    def __init__(self, messages: Iterable[IncomingMessage], source: Source | None) -> None:
        stored_at = now_ts()
        self.chats: dict[str, tuple[str | None, str, str]] = {}  # jid -> (known name, fallback, newest ts)
        self.message_rows: list[tuple] = []
        self.meta_rows: list[tuple] = []
        for msg in messages:
            if not msg.text and msg.media is None:
                continue
            sender = bare_user(msg.sender_jid)
            ts = format_ts(msg.timestamp)
            name, fallback, newest = self.chats.get(msg.chat_jid,
                                                    (None, fallback_chat_name(msg.chat_jid), ""))
            self.chats[msg.chat_jid] = (msg.chat_name or name, fallback, max(newest, ts))
            media = msg.media or MediaInfo("", "", "")
            self.message_rows.append((msg.id, msg.chat_jid, sender, msg.text, ts, int(msg.is_from_me),
                                      media.media_type or None, media.filename or None, media.url or None,
                                      media.media_key or None, media.file_sha256 or None,
                                      media.file_enc_sha256 or None, media.file_length or None))
            self.meta_rows.append((msg.id, msg.chat_jid, (source or msg.source).value, stored_at,
                                   json.dumps(media.extra, sort_keys=True)))

    def insert(self, conn: sqlite3.Connection) -> int:
        """Insert; returns the number of new messages."""
        # Chats first (foreign key); last_message_time only ever moves forward, so a late
        # backfill of older messages never rewinds it.
        conn.executemany(
            "INSERT INTO chats (jid, name, last_message_time) VALUES (?, COALESCE(?, ?), ?) "
            "ON CONFLICT (jid) DO UPDATE SET "
            "name = COALESCE(?, chats.name, excluded.name), "
            "last_message_time = CASE WHEN chats.last_message_time IS NULL "
            "OR excluded.last_message_time > chats.last_message_time "
            "THEN excluded.last_message_time ELSE chats.last_message_time END",
            [(jid, name, fallback, newest, name) for jid, (name, fallback, newest) in self.chats.items()])
        before = conn.total_changes
        conn.executemany("INSERT OR IGNORE INTO messages (id, chat_jid, sender, content, timestamp, is_from_me, "
                         "media_type, filename, url, media_key, file_sha256, file_enc_sha256, file_length) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.message_rows)
        added = conn.total_changes - before
        conn.executemany("INSERT OR IGNORE INTO message_meta (id, chat_jid, source, stored_at, media_extra) "
                         "VALUES (?, ?, ?, ?, ?)", self.meta_rows)
        return added


_OUTBOX_COLUMNS = ("seq, message_id, idempotency_key, recipient, recipient_jid, text, mentioned_jids, media_path, "
                   "media_type, status, created_at, sent_at, error")


class Store:
    """The single writer of messages.db. Every method commits before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL")
        # FULL: each commit is fsynced before the transport acknowledges, so an acked message
        # survives a power cut too. Batches keep that cheap (one fsync per batch): the bench
        # measures >15,000 messages/s and /api/send p99 ~10 ms with it on ext4.
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.conn.execute("PRAGMA busy_timeout = 10000")
        with self.transaction() as conn:
            for statement in (WHATSAPP_MCP_SCHEMA + OUR_SCHEMA).split(";"):
                if statement.strip():
                    conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; sqlite3 errors become StoreError (a health state).

        `durable=False` skips the fsync of this commit (the next durable commit carries it):
        for writes whose loss in a power cut is harmless, on the hot path.
        """
        if not durable:
            self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            with self._transaction() as conn:
                yield conn
        finally:
            if not durable:
                self.conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write {self.path}: {exc}") from exc
        try:
            yield self.conn
        except sqlite3.DatabaseError as exc:  # disk full, I/O error, read-only or corrupt file
            self._rollback()
            raise StoreError(f"cannot write {self.path}: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"cannot commit to {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        if self.conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            self.conn.execute("ROLLBACK")

    # -- messages ----------------------------------------------------------------------------

    def add_messages(self, messages: Iterable[IncomingMessage], source: Source | None = None) -> int:
        """Store a batch in one transaction; returns how many were new (duplicates are ignored).

        `source` overrides each message's own source (backfill stores everything as history).
        """
        batch = _Batch(messages, source)
        if not batch.message_rows:
            return 0
        with self.transaction() as conn:
            return batch.insert(conn)

    def message_count(self) -> int:
        """Stored messages; MAX(rowid) is O(log n) and equals COUNT(*) because rows are never deleted."""
        return self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM messages").fetchone()[0]

    def media_of(self, message_id: str, chat_jid: str) -> MediaInfo | None:
        """The media of a stored message for /api/download; None if no such message."""
        row = self.conn.execute(
            "SELECT m.media_type, m.filename, m.url, m.media_key, m.file_sha256, m.file_enc_sha256, m.file_length, "
            "mm.media_extra FROM messages m LEFT JOIN message_meta mm ON mm.id = m.id AND mm.chat_jid = m.chat_jid "
            "WHERE m.id = ? AND m.chat_jid = ?", (message_id, chat_jid)).fetchone()
        if row is None:
            return None
        return MediaInfo(row[0] or "", row[1] or "", row[2] or "", row[3] or b"", row[4] or b"", row[5] or b"",
                         row[6] or 0, json.loads(row[7] or "{}"))

    # -- receipts ------------------------------------------------------------------------------

    def add_receipts(self, receipts: Iterable[Receipt]) -> int:
        """Store receipts in one transaction; returns how many were new (a repeat of one is ignored)."""
        stored_at = now_ts()
        rows = [row for receipt in receipts for row in _receipt_rows(receipt, stored_at)]
        if not rows:
            return 0
        with self.transaction() as conn:
            before = conn.total_changes
            conn.executemany(_INSERT_RECEIPT, rows)
            return conn.total_changes - before

    # -- connection events and disconnect windows -----------------------------------------------

    def add_connection_event(self, at: str, kind: str, reason: str = "") -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO connection_events (at, kind, reason) VALUES (?, ?, ?)", (at, kind, reason))

    def connection_events(self) -> list[tuple[str, str, str]]:
        return list(self.conn.execute("SELECT at, kind, reason FROM connection_events ORDER BY id"))

    def open_window(self) -> Window | None:
        row = self.conn.execute(f"{_WINDOW_SELECT} WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1").fetchone()
        return Window(*row) if row else None

    def start_window(self, started_at: str, reason: str) -> Window:
        """Open a window unless one is open already (then that one keeps its start and reason)."""
        with self.transaction() as conn:
            current = self.open_window()
            if current is not None:
                return current
            conn.execute("INSERT INTO disconnect_windows (started_at, reason) VALUES (?, ?)", (started_at, reason))
        return self.open_window()  # type: ignore[return-value]

    def end_window(self, ended_at: str) -> Window | None:
        """Close the open window (if any); returns it closed."""
        with self.transaction() as conn:
            current = self.open_window()
            if current is None:
                return None
            conn.execute("UPDATE disconnect_windows SET ended_at = ? WHERE id = ?",
                         (max(ended_at, current.started_at), current.id))
        return self.window(current.id)

    def window(self, window_id: int) -> Window:
        return Window(*self.conn.execute(f"{_WINDOW_SELECT} WHERE id = ?", (window_id,)).fetchone())

    def windows_to_backfill(self) -> list[Window]:
        rows = self.conn.execute(f"{_WINDOW_SELECT} WHERE ended_at IS NOT NULL AND backfill_status = 'pending' "
                                 "ORDER BY id")
        return [Window(*row) for row in rows]

    def finish_backfill(self, window_id: int, status: str, recovered: int = 0) -> Window:
        assert status in WINDOW_STATUSES, status
        with self.transaction() as conn:
            conn.execute("UPDATE disconnect_windows SET backfill_status = ?, recovered = ?, backfilled_at = ? "
                         "WHERE id = ?", (status, recovered, now_ts(), window_id))
        return self.window(window_id)

    # -- bridge_state ------------------------------------------------------------------------

    def get_state(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM bridge_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_state(self, durable: bool = True, **values: str) -> None:
        with self.transaction(durable) as conn:
            conn.executemany("INSERT INTO bridge_state (key, value) VALUES (?, ?) "
                             "ON CONFLICT (key) DO UPDATE SET value = excluded.value", list(values.items()))

    # -- outbox ------------------------------------------------------------------------------

    def outbox_add(self, message_id: str, idempotency_key: str | None, recipient: str, recipient_jid: str,
                   text: str, mentioned_jids: Iterable[str], media_path: str | None,
                   media_type: str | None) -> OutboxRow:
        """Queue a send durably. With an idempotency key already used, returns that first row instead."""
        with self.transaction() as conn:
            if idempotency_key is not None:
                existing = self.outbox_by_key(idempotency_key)
                if existing is not None:
                    return existing
            conn.execute("INSERT INTO outbox (message_id, idempotency_key, recipient, recipient_jid, text, "
                         "mentioned_jids, media_path, media_type, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (message_id, idempotency_key, recipient, recipient_jid, text, json.dumps(list(mentioned_jids)),
                          media_path, media_type, now_ts()))
        return self.outbox_row(message_id)  # type: ignore[return-value]

    def outbox_row(self, message_id: str) -> OutboxRow | None:
        row = self.conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE message_id = ?", (message_id,)).fetchone()
        return _outbox_row(row) if row else None

    def outbox_by_key(self, idempotency_key: str) -> OutboxRow | None:
        row = self.conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE idempotency_key = ?",
                                (idempotency_key,)).fetchone()
        return _outbox_row(row) if row else None

    def outbox_pending(self, limit: int = 100) -> list[OutboxRow]:
        rows = self.conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'pending' ORDER BY seq LIMIT ?",
                                 (limit,))
        return [_outbox_row(row) for row in rows]

    def outbox_depth(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]

    def outbox_sent(self, row: OutboxRow, sent: IncomingMessage) -> None:
        """Mark a send done and store the sent message (is_from_me, source sent) in one transaction.

        Not fsynced: if a power cut loses it, the row is pending again and the resend carries the
        same message id, which the server dedupes. (The outbox_add before the send is durable.)
        """
        batch = _Batch([sent], Source.SENT)
        ack = Receipt((sent.id,), sent.chat_jid, "", ReceiptKind.SERVER_ACK, sent.timestamp)
        with self.transaction(durable=False) as conn:
            conn.execute("UPDATE outbox SET status = 'sent', sent_at = ? WHERE seq = ?",
                         (format_ts(sent.timestamp), row.seq))
            batch.insert(conn)
            conn.executemany(_INSERT_RECEIPT, _receipt_rows(ack, now_ts()))

    def outbox_failed(self, row: OutboxRow, error: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE outbox SET status = 'failed', error = ? WHERE seq = ?", (error, row.seq))

