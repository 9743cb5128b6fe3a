"""The messages.db contract both sides import: its schema as numbered migrations, its version, and the readers.

The bridge (the one writer, bridge/store.py) creates and migrates the file from
MIGRATIONS (watchdog/shared/migrations.py runs them; the version is PRAGMA
user_version, SCHEMA_VERSION the newest this release knows). Readers
(monitors, tools) use `open_readonly` and the read functions at the end, which
refuse a file written by a newer release.

Step 1 is the release before migrations: whatsapp-mcp's `chats` + `messages`
exactly, plus our own tables, all `IF NOT EXISTS` (files from then are at
user_version 0 and already hold them). Later steps add tables other
components need; a released step is never edited. To add one: append
`Migration(N, "what it adds", (SQL,))` with N the next number.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchdog.shared.migrations import Migration, SchemaTooNew, latest
from watchdog.shared import clock

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
"""

RECEIPTS = """
CREATE TABLE receipts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- readers follow it with a cursor, like messages.rowid
    message_id TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    recipient_jid TEXT NOT NULL DEFAULT '',  -- who delivered / read it ('' for server_ack)
    kind TEXT NOT NULL CHECK (kind IN ('server_ack', 'delivered', 'read', 'played')),
    at TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    UNIQUE (message_id, recipient_jid, kind)
)
"""

OUTBOX_REQUESTS_AND_QUARANTINE = """
CREATE TABLE outbox_requests (
    seq INTEGER PRIMARY KEY,          -- outbox.seq
    endpoint TEXT NOT NULL,           -- /api/send | /send-message
    fingerprint TEXT NOT NULL,        -- sha256 of the parsed request: key reuse conflicts, keyless retries
    staged_media TEXT,                -- our private copy of the media (bridge/media.py), removed when done
    attempts INTEGER NOT NULL DEFAULT 0,
    dead_at TEXT,                     -- moved aside for good (refused, unreadable, too many attempts)
    created_at TEXT NOT NULL
);
CREATE INDEX outbox_requests_fingerprint ON outbox_requests (fingerprint, created_at);
CREATE TABLE quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('sanitised', 'quarantined')),
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,                -- the message as received, JSON with \\u escapes (lone surrogates kept)
    at TEXT NOT NULL
)
"""

# Who this file is: a random id written once, when the file is created (or upgraded to step 4), and kept by
# every copy of it (`wa-watchdog backup`, `.recover`). Monitors keep it with their cursors: a rowid means
# nothing in another file (monitors/lineage.py).
STORE_ID = """
INSERT OR IGNORE INTO bridge_state (key, value) VALUES ('store_id', lower(hex(randomblob(16))))
"""

# The boot a request came in (clock.boot_id) and its CLOCK_BOOTTIME: the keyless dedupe window, immune to
# clock steps.
OUTBOX_REQUEST_INSTANT = """
ALTER TABLE outbox_requests ADD COLUMN boot_id TEXT;
ALTER TABLE outbox_requests ADD COLUMN boottime REAL
"""

# whatsapp-mcp's fork (verygoodplugins) reads messages.quoted_message_id: the id a message replies to. The
# outbox keeps what a send needs beyond text: a quoted reply's quote, or a reaction (JSON, NULL for neither).
QUOTES_AND_REACTIONS = """
ALTER TABLE messages ADD COLUMN quoted_message_id TEXT;
ALTER TABLE outbox ADD COLUMN context TEXT
"""

# The outbox table as steps 7 and 8 rebuild it (SQLite cannot widen a CHECK in place: the table is rebuilt, the
# same rows and seq, AUTOINCREMENT's counter following the rename) with the statuses it takes and the columns
# copied from the table before.
REBUILT_OUTBOX = """
CREATE TABLE outbox_rebuilt (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT UNIQUE,
    recipient TEXT NOT NULL,
    recipient_jid TEXT NOT NULL,
    text TEXT NOT NULL,
    mentioned_jids TEXT NOT NULL DEFAULT '[]',
    media_path TEXT,
    media_type TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({statuses})),
    created_at TEXT NOT NULL,
    sent_at TEXT,
    error TEXT NOT NULL DEFAULT '',
    context TEXT,
    fence_lease TEXT,
    fence_token INTEGER
);
INSERT INTO outbox_rebuilt ({columns}) SELECT {columns} FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;
CREATE INDEX outbox_pending ON outbox (status, seq)
"""
_OUTBOX_V6 = ("seq, message_id, idempotency_key, recipient, recipient_jid, text, mentioned_jids, media_path, "
              "media_type, status, created_at, sent_at, error, context")

# The outbox's fence (issue 21): a send made under a cluster's sender lease carries the lease and its token, and
# is sent only while that token is valid (bridge/fence.py); a row whose token was superseded is `withdrawn`, never
# sent (the monitor that holds the lease now sends it), and so is a row an account's failover took back.
OUTBOX_FENCE = REBUILT_OUTBOX.format(statuses="'pending', 'sent', 'failed', 'withdrawn'", columns=_OUTBOX_V6)

# A send whose answer was lost (issue 21): handed to WhatsApp, then the connection dropped or nothing answered.
# Where the transport cannot choose message ids (neonize) a resend would be a second message, so a fenced row (a
# cluster) is `doubt`: never sent again by the bridge, answered as such, found out by the monitors
# (monitors/fate.py).
OUTBOX_DOUBT = REBUILT_OUTBOX.format(statuses="'pending', 'sent', 'failed', 'withdrawn', 'doubt'",
                                     columns=_OUTBOX_V6 + ", fence_lease, fence_token")

# WhatsApp's id of a sent row where WhatsApp chose it (neonize cannot send with the bridge's): its delivered and read
# receipts name that id, and are stored under the bridge's id too, the one its client was answered with.
OUTBOX_SENT_ID = """
ALTER TABLE outbox ADD COLUMN sent_id TEXT;
CREATE INDEX outbox_sent_id ON outbox (sent_id) WHERE sent_id IS NOT NULL
"""

MIGRATIONS = [
    Migration(1, "whatsapp-mcp chats and messages; message_meta, connection_events, disconnect_windows, outbox, "
                 "bridge_state", (WHATSAPP_MCP_SCHEMA, OUR_SCHEMA)),
    Migration(2, "receipts (server ack, delivered, read) of messages the bridge sent", (RECEIPTS,)),
    Migration(3, "outbox_requests (fingerprint, attempts, dead letters, staged media) and quarantine (poison messages)",
              (OUTBOX_REQUESTS_AND_QUARANTINE,)),
    Migration(4, "bridge_state store_id: which file a reader's rowid cursor belongs to", (STORE_ID,)),
    Migration(5, "outbox_requests.boot_id and boottime: keyless retries recognised on the boot's clock",
              (OUTBOX_REQUEST_INSTANT,)),
    Migration(6, "messages.quoted_message_id (whatsapp-mcp fork's reply column) and outbox.context (a quote or "
                 "a reaction)", (QUOTES_AND_REACTIONS,)),
    Migration(7, "outbox.fence_lease and fence_token (a cluster's sender lease fences the send) and the status "
                 "withdrawn (superseded or taken back, never sent)", (OUTBOX_FENCE,)),
    Migration(8, "outbox status doubt: a cluster's send whose answer was lost, never sent again by the bridge "
                 "where the transport cannot choose message ids", (OUTBOX_DOUBT,)),
    Migration(9, "outbox.sent_id: WhatsApp's id of a sent row where it is not the bridge's (receipts under both)",
              (OUTBOX_SENT_ID,)),
]

SCHEMA_VERSION = latest(MIGRATIONS)

# -- timestamps and readers (any connection, also read-only ones) ------------------------------

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f+00:00"

def format_ts(when: datetime) -> str:
    """The one timestamp text format of the store (UTC, fixed width, readable by fromisoformat)."""
    if when.tzinfo is None:
        raise ValueError(f"naive datetime {when!r}: store timestamps must be timezone-aware")
    return when.astimezone(timezone.utc).strftime(TS_FORMAT)


def format_epoch(seconds: float) -> str:
    """format_ts of epoch seconds (a `clock.Instant`'s wall time)."""
    return format_ts(datetime.fromtimestamp(seconds, timezone.utc))


def parse_ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def now_ts() -> str:
    return format_ts(clock.now())


def bare_user(jid: str) -> str:
    """`27710000001:12@s.whatsapp.net` -> `27710000001` (what whatsmeow's Sender.User holds)."""
    return jid.split("@", 1)[0].split(":", 1)[0]


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
    stored_at: str | None = None  # message_meta.stored_at (None for a row without meta: whatsapp-mcp's own)


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


MESSAGES_AFTER_SQL = """
SELECT m.rowid, m.id, m.chat_jid, c.name, m.sender, m.content, m.timestamp, m.is_from_me, m.media_type,
       COALESCE(mm.source, 'live'), mm.stored_at
FROM messages m
LEFT JOIN chats c ON c.jid = m.chat_jid
LEFT JOIN message_meta mm ON mm.id = m.id AND mm.chat_jid = m.chat_jid
WHERE m.rowid > ?
ORDER BY m.rowid
LIMIT ?
"""


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (monitors): never blocks the bridge's writes in WAL mode.

    SchemaTooNew if a newer release wrote the file: its rows may not mean what this reader thinks.
    """
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    found = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        conn.close()
        raise SchemaTooNew(f"{path} has schema version {found}, newer than this wa-watchdog reads "
                           f"({SCHEMA_VERSION}): upgrade wa-watchdog")
    return conn


def messages_after(conn: sqlite3.Connection, rowid: int, limit: int = 1000) -> list[StoredMessage]:
    """Messages with a rowid above `rowid`, oldest rowid first, with how they arrived (source)."""
    return [StoredMessage(r[0], r[1], r[2], r[3], r[4], r[5] or "", r[6], bool(r[7]), r[8] or None, r[9], r[10])
            for r in conn.execute(MESSAGES_AFTER_SQL, (rowid, limit))]


def bridge_state(conn: sqlite3.Connection, key: str) -> str | None:
    """A bridge_state value, for readers; None if unset or the file has no bridge_state yet."""
    try:
        row = conn.execute("SELECT value FROM bridge_state WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError:  # no bridge_state yet
        return None
    return row[0] if row else None


def store_id(conn: sqlite3.Connection) -> str | None:
    """The file's identity (bridge_state `store_id`); None before the bridge has migrated it to step 4."""
    return bridge_state(conn, "store_id")


MARKS_DOWN_FROM_SQL = """
SELECT m.rowid, m.id, mm.stored_at
FROM messages m
LEFT JOIN message_meta mm ON mm.id = m.id AND mm.chat_jid = m.chat_jid
WHERE m.rowid <= ?
ORDER BY m.rowid DESC
"""


def marks_down_from(conn: sqlite3.Connection, rowid: int) -> Iterator[tuple[int, str, str | None]]:
    """(rowid, message id, stored_at) of the rows at or below `rowid`, newest rowid first, read as consumed."""
    yield from conn.execute(MARKS_DOWN_FROM_SQL, (rowid,))


WINDOW_SELECT = ("SELECT id, started_at, ended_at, reason, backfill_status, recovered, backfilled_at "
                  "FROM disconnect_windows")


def windows(conn: sqlite3.Connection, after: int = 0) -> list[Window]:
    """Disconnect windows with an id above `after`, oldest first: ids only grow, start times go back with the
    wall clock."""
    return [Window(*row) for row in conn.execute(f"{WINDOW_SELECT} WHERE id > ? ORDER BY id", (after,))]


BACKFILL_MARGIN = timedelta(seconds=30)  # history is asked for this much either side of a window


@dataclass(frozen=True)
class WindowCounts:
    """What one disconnect window's messages did: `recovered` from history by its backfill (within the margin),
    `late`: posted in it and delivered by WhatsApp afterwards (offline queue, or live after the reconnect)."""

    recovered: int
    late: int


def window_counts(conn: sqlite3.Connection, window: Window, chats: Collection[str] | None = None) -> WindowCounts:
    """The one account of a finished window, from the rows themselves: the bridge's line counts every chat,
    each monitor its project's groups, by the same query in the same words (a project's numbers are a share
    of the bridge's). History rows count if the backfill stored them (between the window's end and
    `backfilled_at`) within the margin it asked for."""
    ended = window.ended_at or now_ts()
    low = format_ts(parse_ts(window.started_at) - BACKFILL_MARGIN)
    high = format_ts(parse_ts(ended) + BACKFILL_MARGIN)
    finished = window.backfilled_at or now_ts()
    where, values = "", []
    if chats is not None:
        where = f" AND m.chat_jid IN ({','.join('?' * len(chats))})"
        values = sorted(chats)
    recovered, late = conn.execute(
        "SELECT COALESCE(SUM(mm.source = 'history' AND mm.stored_at BETWEEN ? AND ?), 0), "
        "COALESCE(SUM(mm.source IN ('offline', 'live') AND m.timestamp BETWEEN ? AND ? AND mm.stored_at >= ?), 0) "
        "FROM messages m JOIN message_meta mm ON mm.id = m.id AND mm.chat_jid = m.chat_jid "
        f"WHERE m.timestamp BETWEEN ? AND ?{where}",
        (ended, finished, window.started_at, ended, window.started_at, low, high, *values)).fetchone()
    return WindowCounts(recovered, late)


