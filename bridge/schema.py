"""messages.db's numbered migrations (watchdog/migrations.py runs them; the version is PRAGMA user_version).

Step 1 is the release before migrations: whatsapp-mcp's `chats` + `messages`
exactly, plus our own tables, all `IF NOT EXISTS` (files from then are at
user_version 0 and already hold them). Later steps add tables other
components need; a released step is never edited. To add one: append
`Migration(N, "what it adds", (SQL,))` with N the next number.
"""
from __future__ import annotations

from watchdog.migrations import Migration

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

MIGRATIONS = [
    Migration(1, "whatsapp-mcp chats and messages; message_meta, connection_events, disconnect_windows, outbox, "
                 "bridge_state", (WHATSAPP_MCP_SCHEMA, OUR_SCHEMA)),
    Migration(2, "receipts (server ack, delivered, read) of messages the bridge sent", (RECEIPTS,)),
]
