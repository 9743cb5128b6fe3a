"""The bridge's message store: whatsapp-mcp's `chats` + `messages` schema plus our own tables.

Why exactly whatsapp-mcp's schema: its MCP server (and anything written
against it) reads our `messages.db` unchanged. Why timestamps as fixed-width
text `YYYY-MM-DD HH:MM:SS.ffffff+00:00` (space, not `T`): the Go bridge stores
them that way (go-sqlite3's format), and whatsapp-mcp compares
`messages.timestamp > ?` against Python datetimes, which sqlite3 adapts with a
space; fixed width makes text order time order.

One writer (the bridge process) holds a `Store`; readers (monitors, tools)
open the file read-only with `bridge.schema.open_readonly` and use the read
functions there (the schema, its version, the timestamp format and the readers
are one module both sides import).
`messages.rowid` only grows (we never delete or VACUUM), so readers follow it
with a cursor; a backfilled message gets a new, higher rowid although its
timestamp is older.
"""
from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from bridge.integrity import is_corrupt, is_locked
from bridge.quarantine import Quarantined, quarantined, sanitise
from bridge.outbox_store import OutboxRow, OutboxRows
from bridge.schema import MIGRATIONS, WINDOW_SELECT, Window, bare_user, format_ts, now_ts
from bridge.transport import IncomingMessage, MediaInfo, Receipt, ReceiptKind, Source
from watchdog.shared import file_modes
from watchdog.shared.migrations import SchemaTooNew, SqliteTarget, latest, migrate

WINDOW_STATUSES = ("pending", "done", "unsupported", "failed")


def fallback_chat_name(chat_jid: str) -> str:
    """whatsapp-mcp's fallback when no name is known: `Group <id>` for groups, else the contact's number."""
    user = bare_user(chat_jid)
    return f"Group {user}" if chat_jid.endswith("@g.us") else user


@dataclass(frozen=True)
class StoredReceipt:
    """A row of `receipts` with its id: what monitors follow to stamp feedback delivered / read."""

    rowid: int
    message_id: str
    chat_jid: str
    recipient_jid: str
    kind: str
    at: str


class StoreError(Exception):
    """The store cannot be written (disk full, read-only, corrupt): the health state store_error."""


class StoreLocked(StoreError):
    """Another program holds the write lock (e.g. an operator's `sqlite3` in BEGIN EXCLUSIVE)."""


class StoreCorrupt(StoreError):
    """SQLite says the file is damaged: never keep serving on it (exit 2, restore from a backup)."""


def store_error(text: str, exc: sqlite3.Error) -> StoreError:
    """The StoreError subclass for a sqlite3 error, by SQLite's primary result code."""
    kind = StoreLocked if is_locked(exc) else StoreCorrupt if is_corrupt(exc) else StoreError
    return kind(f"{text}: {exc}")


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


def _under_clients_ids(conn: sqlite3.Connection, rows: list[tuple]) -> list[tuple]:
    """`rows` (receipt rows) of messages WhatsApp gave another id than the bridge's (outbox.sent_id), again under
    the bridge's id: the one its client was answered with and follows (the monitors' feedback)."""
    ids = sorted({row[0] for row in rows})
    aliases = dict(conn.execute(f"SELECT sent_id, message_id FROM outbox WHERE sent_id IN ({', '.join('?' * len(ids))})",
                                ids).fetchall()) if ids else {}
    return [(aliases[row[0]], *row[1:]) for row in rows if row[0] in aliases]


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
        self.set_aside: list[Quarantined] = []  # sanitised (stored) or quarantined (not stored)
        for received in messages:
            if not received.text and received.media is None:
                continue
            msg, changed = sanitise(received)
            try:
                row, meta, ts = self._rows(msg, source, stored_at)
            except (ValueError, TypeError, AttributeError, OverflowError) as exc:  # a poison message
                self.set_aside.append(quarantined(received, "quarantined", f"cannot be stored: {exc}"))
                continue
            if changed:
                self.set_aside.append(quarantined(received, "sanitised",
                                                  f"invalid text (lone surrogates, bad UTF-8) in {', '.join(changed)} "
                                                  "replaced by U+FFFD"))
            name, fallback, newest = self.chats.get(msg.chat_jid, (None, fallback_chat_name(msg.chat_jid), ""))
            self.chats[msg.chat_jid] = (msg.chat_name or name, fallback, max(newest, ts))
            self.message_rows.append(row)
            self.meta_rows.append(meta)

    @staticmethod
    def _rows(msg: IncomingMessage, source: Source | None, stored_at: str) -> tuple[tuple, tuple, str]:
        """The messages and message_meta rows; ValueError/TypeError/OverflowError for what SQLite cannot bind."""
        ts = format_ts(msg.timestamp)
        media = msg.media or MediaInfo("", "", "")
        if not -2**63 <= int(media.file_length or 0) < 2**63:
            raise OverflowError(f"file_length {media.file_length} out of range")
        for value in (msg.id, msg.chat_jid, msg.sender_jid, msg.text):
            if not isinstance(value, str):
                raise TypeError(f"expected text, got {type(value).__name__}")
        row = (msg.id, msg.chat_jid, bare_user(msg.sender_jid), msg.text, ts, int(msg.is_from_me),
               media.media_type or None, media.filename or None, media.url or None, media.media_key or None,
               media.file_sha256 or None, media.file_enc_sha256 or None, media.file_length or None,
               msg.quoted_message_id or None)
        meta = (msg.id, msg.chat_jid, (source or msg.source).value, stored_at, json.dumps(media.extra, sort_keys=True))
        return row, meta, ts

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
                         "media_type, filename, url, media_key, file_sha256, file_enc_sha256, file_length, "
                         "quoted_message_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", self.message_rows)
        added = conn.total_changes - before
        conn.executemany("INSERT OR IGNORE INTO message_meta (id, chat_jid, source, stored_at, media_extra) "
                         "VALUES (?, ?, ?, ?, ?)", self.meta_rows)
        conn.executemany("INSERT INTO quarantine (message_id, chat_jid, action, reason, raw, at) VALUES (?, ?, ?, ?, ?, ?)",
                         [(*q.row(), now_ts()) for q in self.set_aside])
        return added


# Writes run on the bridge's event loop, so SQLite's busy wait must stay short: a write that finds
# another program holding the lock fails fast as StoreLocked (health names the lock, the batch is
# retried), instead of freezing health answers and heartbeats for seconds.
BUSY_TIMEOUT_MS = 100


class Store(OutboxRows):
    """The single writer of messages.db. Every method commits before it returns."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Told about every message stored sanitised or quarantined (the bridge logs it and writes the recovery log).
        self.on_set_aside: Callable[[list[Quarantined]], None] = lambda records: None
        file_modes.prepare_sqlite(path)  # 0640 (and its -wal/-shm): stored messages are not for other users
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 10000")  # migrations at start may wait; the loop is not serving yet
        target = SqliteTarget(self.conn, str(path))
        try:
            found = target.refuse_if_newer(MIGRATIONS)  # a newer release's file: refused before anything is written
        except SchemaTooNew:
            self.conn.close()
            raise
        # FULL: each commit is fsynced before the transport acknowledges, so an acked message
        # survives a power cut too. Batches keep that cheap (one fsync per batch): the bench
        # measures >15,000 messages/s and /api/send p99 ~10 ms with it on ext4.
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        # Up to date and in WAL: nothing to write, so the store opens on a full disk and while another
        # program holds the write lock (health then says so, instead of a crash loop).
        if found != latest(MIGRATIONS) or self.conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self.conn.execute("PRAGMA journal_mode = WAL")
            migrate(target, MIGRATIONS)
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

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
            raise store_error(f"cannot write {self.path}", exc) from exc
        try:
            yield self.conn
        except sqlite3.DatabaseError as exc:  # disk full, I/O error, read-only or corrupt file
            self._rollback()
            raise store_error(f"cannot write {self.path}", exc) from exc
        except BaseException:
            self._rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise store_error(f"cannot commit to {self.path}", exc) from exc

    def probe_lock(self) -> None:
        """Take and drop the write lock: raises StoreLocked while another program holds it, without writing
        a byte (an empty BEGIN IMMEDIATE ... ROLLBACK changes no file, so no follower is woken)."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(f"cannot write {self.path}", exc) from exc
        self.conn.execute("ROLLBACK")

    def space_left(self) -> int:
        """Bytes an unprivileged writer may still use on the store's filesystem (statvfs: nothing written)."""
        try:
            found = os.statvfs(self.path.parent)
        except OSError:  # e.g. its directory is gone: say none, so that a real write finds out what is wrong
            return 0
        return found.f_bavail * found.f_frsize

    def _rollback(self) -> None:
        if self.conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
            with suppress(sqlite3.Error):  # a failed rollback leaves nothing committed either
                self.conn.execute("ROLLBACK")

    # -- messages ----------------------------------------------------------------------------

    def add_messages(self, messages: Iterable[IncomingMessage], source: Source | None = None) -> int:
        """Store a batch in one transaction; returns how many were new (duplicates are ignored).

        `source` overrides each message's own source (backfill stores everything as history).
        """
        batch = _Batch(messages, source)
        if not batch.message_rows and not batch.set_aside:
            return 0
        with self.transaction() as conn:
            added = batch.insert(conn)
        if batch.set_aside:
            self.on_set_aside(batch.set_aside)
        return added

    def quarantine(self, records: list[Quarantined]) -> None:
        """Keep what a transport could not even map to a message (its raw payload), and say so."""
        with self.transaction() as conn:
            conn.executemany("INSERT INTO quarantine (message_id, chat_jid, action, reason, raw, at) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [(*q.row(), now_ts()) for q in records])
        self.on_set_aside(records)

    def quarantine_counts(self) -> dict[str, int]:
        """{"sanitised": n, "quarantined": m}: poison messages so far (health reports them)."""
        counts = dict(self.conn.execute("SELECT action, COUNT(*) FROM quarantine GROUP BY action").fetchall())
        return {"sanitised": counts.get("sanitised", 0), "quarantined": counts.get("quarantined", 0)}

    def message_count(self) -> int:
        """Messages ever stored: MAX(rowid), O(log n); `wa-watchdog prune` keeps the newest row, so it never drops."""
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
            conn.executemany(_INSERT_RECEIPT, rows + _under_clients_ids(conn, rows))
            return conn.total_changes - before

    # -- connection events and disconnect windows -----------------------------------------------

    def add_connection_event(self, at: str, kind: str, reason: str = "") -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO connection_events (at, kind, reason) VALUES (?, ?, ?)", (at, kind, reason))

    def connection_events(self) -> list[tuple[str, str, str]]:
        return list(self.conn.execute("SELECT at, kind, reason FROM connection_events ORDER BY id"))

    def open_window(self) -> Window | None:
        row = self.conn.execute(f"{WINDOW_SELECT} WHERE ended_at IS NULL ORDER BY id DESC LIMIT 1").fetchone()
        return Window(*row) if row else None

    def start_window(self, started_at: str, reason: str) -> Window:
        """Open a window unless one is open already (then that one keeps its start and reason)."""
        with self.transaction() as conn:
            current = self.open_window()
            if current is not None:
                return current
            conn.execute("INSERT INTO disconnect_windows (started_at, reason) VALUES (?, ?)", (started_at, reason))
        return self.open_window()  # type: ignore[return-value]

    def end_window(self, ended_at: str, started_at: str | None = None) -> Window | None:
        """Close the open window (if any), restating its start if given (the wall clock was stepped since it
        opened, bridge/windows.py); returns it closed."""
        with self.transaction() as conn:
            current = self.open_window()
            if current is None:
                return None
            started_at = started_at or current.started_at
            conn.execute("UPDATE disconnect_windows SET started_at = ?, ended_at = ? WHERE id = ?",
                         (started_at, max(ended_at, started_at), current.id))
        return self.window(current.id)

    def window(self, window_id: int) -> Window:
        return Window(*self.conn.execute(f"{WINDOW_SELECT} WHERE id = ?", (window_id,)).fetchone())

    def windows_to_backfill(self) -> list[Window]:
        rows = self.conn.execute(f"{WINDOW_SELECT} WHERE ended_at IS NOT NULL AND backfill_status = 'pending' "
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

    def outbox_sent(self, row: OutboxRow, sent: IncomingMessage, store_message: bool = True) -> None:
        """Mark a send done and store the sent message (is_from_me, source sent) in one transaction
        (`store_message=False`: a reaction, which is not a message of the chat).

        Not fsynced: if a power cut loses it, the row is pending again and the resend carries the
        same message id, which the server dedupes. (The outbox_add before the send is durable.)
        """
        batch = _Batch([sent], Source.SENT)
        # Also under the id the bridge answered its client with (where WhatsApp chose another: neonize), so a send
        # its client recorded as queued (202, that id) is seen sent (the monitors' receipts follower).
        ack = Receipt(tuple(dict.fromkeys((sent.id, row.message_id))), sent.chat_jid, "", ReceiptKind.SERVER_ACK,
                      sent.timestamp)
        with self.transaction(durable=False) as conn:
            conn.execute("UPDATE outbox SET status = 'sent', sent_at = ?, sent_id = ? WHERE seq = ?",
                         (format_ts(sent.timestamp), sent.id if sent.id != row.message_id else None, row.seq))
            if store_message:
                batch.insert(conn)
            conn.executemany(_INSERT_RECEIPT, _receipt_rows(ack, now_ts()))
