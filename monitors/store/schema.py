"""The drops store's numbered migrations, one list for SQLite and PostgreSQL (types from the Dialect).

Step 1 is the schema of the release before migrations (drops.db files from
then are at user_version 0 and already hold these tables: `IF NOT EXISTS`
makes the step a no-op for them). docs/DROPS-SCHEMA.md is the contract for
what the steps add up to; keep the two in step.
"""
from __future__ import annotations

import uuid

from monitors.store.sql import Dialect
from watchdog.shared.migrations import Executor, Migration

V1_TODAY = """
CREATE TABLE IF NOT EXISTS drops (
    id {pk},
    project TEXT NOT NULL,
    drop_number TEXT NOT NULL,
    group_jid TEXT NOT NULL,
    group_name TEXT NOT NULL DEFAULT '',
    submitted_by TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message_time {ts} NOT NULL,
    detected_at {ts} NOT NULL,
    backfilled {bool} NOT NULL DEFAULT {false},
    feedback_status TEXT NOT NULL DEFAULT 'none'
        CHECK (feedback_status IN ('none', 'pending', 'sent', 'queued', 'failed')),
    feedback_sent_at {ts},
    UNIQUE (project, drop_number)
);
CREATE INDEX IF NOT EXISTS drops_time ON drops (message_time);
CREATE TABLE IF NOT EXISTS drop_events (
    id {pk},
    drop_id {int} NOT NULL REFERENCES drops (id),
    kind TEXT NOT NULL CHECK (kind IN ('submitted', 'resubmitted')),
    group_jid TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message_time {ts} NOT NULL,
    detected_at {ts} NOT NULL,
    backfilled {bool} NOT NULL DEFAULT {false},
    UNIQUE (drop_id, message_id)
);
CREATE TABLE IF NOT EXISTS feedback (
    id {pk},
    drop_id {int} NOT NULL REFERENCES drops (id),
    kind TEXT NOT NULL CHECK (kind IN ('ack', 'operator')),
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    mentions TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'queued', 'failed')),
    created_at {ts} NOT NULL,
    sent_at {ts},
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    bridge_message_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_pending ON feedback (status, id);
CREATE TABLE IF NOT EXISTS cursors (
    project TEXT NOT NULL,
    account TEXT NOT NULL,
    rowid {int} NOT NULL,
    updated_at {ts} NOT NULL,
    PRIMARY KEY (project, account)
);
CREATE TABLE IF NOT EXISTS reported_windows (
    project TEXT NOT NULL,
    account TEXT NOT NULL,
    window_id {int} NOT NULL,
    claimed_at {ts} NOT NULL,
    reported_at {ts},
    PRIMARY KEY (project, account, window_id)
)
"""

V2_PUBLIC_IDS = """
ALTER TABLE drops ADD COLUMN public_id {uuid}
"""

V2_INDEXES = """
CREATE UNIQUE INDEX drops_public_id ON drops (public_id);
DROP INDEX IF EXISTS drops_time;
CREATE INDEX drops_newest ON drops (message_time, id);
CREATE INDEX drops_project_newest ON drops (project, message_time, id);
CREATE INDEX drops_feedback_newest ON drops (feedback_status, message_time, id);
CREATE INDEX drops_project_feedback_newest ON drops (project, feedback_status, message_time, id);
CREATE INDEX drop_events_drop ON drop_events (drop_id, id);
CREATE INDEX feedback_drop ON feedback (drop_id, id)
"""

V3_RECEIPTS = """
ALTER TABLE feedback ADD COLUMN server_at {ts};
ALTER TABLE feedback ADD COLUMN delivered_at {ts};
ALTER TABLE feedback ADD COLUMN read_at {ts};
CREATE INDEX feedback_bridge_message ON feedback (bridge_message_id)
"""

V4_OUTBOX = """
CREATE TABLE events (
    seq {pk},
    id {uuid} NOT NULL UNIQUE,
    type TEXT NOT NULL CHECK (type IN ('drop.recorded', 'drop.backfilled', 'drop.resubmitted', 'feedback.sent',
                                       'feedback.failed', 'feedback.delivered', 'feedback.read')),
    created_at {ts} NOT NULL,
    payload {json} NOT NULL
);
CREATE TABLE webhook_cursors (
    webhook TEXT PRIMARY KEY,
    seq {int} NOT NULL,
    updated_at {ts} NOT NULL
);
CREATE TABLE deliveries (
    webhook TEXT NOT NULL,
    event_seq {int} NOT NULL REFERENCES events (seq),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {ts} NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    updated_at {ts} NOT NULL,
    PRIMARY KEY (webhook, event_seq)
);
CREATE INDEX deliveries_due ON deliveries (webhook, status, next_attempt_at, event_seq);
CREATE TABLE store_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)
"""


V5_BACKFILLED_INDEXES = """
CREATE INDEX drops_backfilled_newest ON drops (backfilled, message_time, id);
CREATE INDEX drops_project_backfilled_newest ON drops (project, backfilled, message_time, id)
"""

V6_NUMBER_INDEX = """
CREATE INDEX drops_number ON drops (drop_number)
"""


V7_CURSOR_MARKS = """
ALTER TABLE cursors ADD COLUMN message_id TEXT;
ALTER TABLE cursors ADD COLUMN stored_at TEXT;
ALTER TABLE cursors ADD COLUMN store_id TEXT
"""

# A window id alone names nothing across files: messages.db restored from a backup numbers its windows again.
V8_WINDOW_STARTS = """
ALTER TABLE reported_windows ADD COLUMN window_started_at TEXT
"""

# Issue 21: one sender per account in a cluster. A lease row per sending account, renewed by its holder and
# judged by the database's clock; `token` only grows (monitors/store/lease.py). Feedback remembers the token
# it was claimed under: a mark with another token is refused.
V9_SENDER_LEASES = """
CREATE TABLE sender_leases (
    account TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token {int} NOT NULL,
    session TEXT NOT NULL DEFAULT '',
    backend_pid {int},
    acquired_at {ts} NOT NULL,
    renewed_at {ts} NOT NULL,
    expires_at {ts} NOT NULL
);
ALTER TABLE feedback ADD COLUMN claim_token {int};
ALTER TABLE feedback ADD COLUMN claimed_by TEXT
"""

# Issue 21: the nodes of a cluster, each renewing its row (the database's clock) while its processes run, and
# which node has alerted on which silence of another (one alert per observer and silence, however many of the
# observer's processes look: the insert that wins alerts).
V10_CLUSTER_NODES = """
CREATE TABLE cluster_nodes (
    node TEXT PRIMARY KEY,
    first_seen {ts} NOT NULL,
    last_seen {ts} NOT NULL
);
CREATE TABLE cluster_silences (
    node TEXT NOT NULL,
    seen_by TEXT NOT NULL,
    last_seen {ts} NOT NULL,
    alerted_at {ts} NOT NULL,
    PRIMARY KEY (node, seen_by, last_seen)
)
"""

# Issue 22: acknowledgements of one group falling due together go out as one message. Each row names the
# feedback row whose message carries it (the first of the message's rows, itself included), recorded before the
# post: a restart posts the same rows again as the same message, under the same Idempotency-Key.
V11_CARRIERS = """
ALTER TABLE feedback ADD COLUMN carrier_id {int}
"""

# Issue 21: a send of unknown fate is found out, not guessed (monitors/fate.py). A row remembers which node handed
# it to its bridge, under which token and when (recorded, fenced, just before the post): the host that takes over
# knows which pending rows another host may already have sent. And a status `unknown` for the ones it could not
# find out (an operator decides), on the feedback and on its drop.
V12_HANDED = """
ALTER TABLE feedback ADD COLUMN handed_by TEXT;
ALTER TABLE feedback ADD COLUMN handed_token {int};
ALTER TABLE feedback ADD COLUMN handed_at {ts}
"""
# Issue 21: a send whose answer its own host's bridge lost is found out by the OTHER host's device, which received
# a copy of it (a device gets no copy of its own sends). Every host's monitors publish the from-me messages their
# bridge received from a sibling device, with what monitors/fate.py matches on; `node`: the host that saw it.
V13_DEVICE_COPIES = """
CREATE TABLE device_copies (
    account TEXT NOT NULL,
    node TEXT NOT NULL,
    message_id TEXT NOT NULL,
    chat_jid TEXT NOT NULL,
    content TEXT NOT NULL,
    timestamp {ts} NOT NULL,
    PRIMARY KEY (account, message_id, node)
);
CREATE INDEX device_copies_chat ON device_copies (account, chat_jid, timestamp)
"""
# Issue 21: every grant of a sender lease, kept: which holder got which token when (the database's clock) and how
# (`first`, `expired`, `released`, `holder_gone`: its holder's sessions were gone before it expired), from whom. The
# lease row keeps only the newest grant; a check of "sent under the current token" (scripts/chaos --cluster) and an
# operator asking who sent when need them all. One row per takeover or restart, inserted by the grant itself.
V14_LEASE_GRANTS = """
CREATE TABLE sender_lease_grants (
    account TEXT NOT NULL,
    token {int} NOT NULL,
    holder TEXT NOT NULL,
    acquired_at {ts} NOT NULL,
    previous TEXT,
    how TEXT NOT NULL,
    PRIMARY KEY (account, token)
)
"""
_OLD_STATUSES, _NEW_STATUSES = "'queued', 'failed'))", "'queued', 'failed', 'unknown'))"


def _sqlite_unknown_status(ex: Executor) -> None:
    """Let the status CHECKs of feedback and drops take 'unknown'. SQLite cannot alter a constraint; widening a
    CHECK leaves every stored row valid, which is the case SQLite documents editing the schema text for
    (sqlite.org/lang_altertable.html, "making other kinds of table schema changes"): in this transaction, with
    the schema version bumped so every connection reads the new text."""
    version = ex.rows("PRAGMA schema_version")[0][0]
    ex.run("PRAGMA writable_schema = ON")
    try:
        for table in ("feedback", "drops"):
            ex.run("UPDATE sqlite_master SET sql = replace(sql, ?, ?) WHERE type = 'table' AND name = ?",
                   (_OLD_STATUSES, _NEW_STATUSES, table))
            if _NEW_STATUSES not in ex.rows("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                            (table,))[0][0]:
                raise RuntimeError(f"drops store: {table}'s status CHECK is not the one this migration knows")
        ex.run(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        ex.run("PRAGMA writable_schema = OFF")


def _postgres_unknown_status(ex: Executor) -> None:
    """Replace the status CHECKs of feedback and drops by ones that also take 'unknown'."""
    for table, column in (("feedback", "status"), ("drops", "feedback_status")):
        for (name,) in ex.rows("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass(?) AND contype = 'c' "
                               "AND pg_get_constraintdef(oid) ~ ?", (table, rf"\m{column}\M")):
            ex.run(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        statuses = "'pending', 'sent', 'queued', 'failed', 'unknown'" if table == "feedback" else \
            "'none', 'pending', 'sent', 'queued', 'failed', 'unknown'"
        ex.run(f"ALTER TABLE {table} ADD CONSTRAINT {table}_{column}_check CHECK ({column} IN ({statuses}))")


def _fill_public_ids(ex: Executor) -> None:
    """Drops recorded before public ids existed get one now (new drops get theirs when recorded)."""
    for (drop_id,) in ex.rows("SELECT id FROM drops WHERE public_id IS NULL ORDER BY id"):
        ex.run("UPDATE drops SET public_id = ? WHERE id = ?", (str(uuid.uuid4()), drop_id))


def migrations(dialect: Dialect) -> list[Migration]:
    """The list for one engine; data steps use `?` placeholders (both backends' executors take them)."""
    return [
        Migration(1, "drops, drop_events, feedback, cursors, reported_windows", (dialect.ddl(V1_TODAY),)),
        Migration(2, "drops.public_id (UUID) and the API's indexes",
                  (dialect.ddl(V2_PUBLIC_IDS), _fill_public_ids, dialect.ddl(V2_INDEXES))),
        Migration(3, "feedback receipts: server_at, delivered_at, read_at", (dialect.ddl(V3_RECEIPTS),)),
        Migration(4, "webhook outbox: events, webhook_cursors, deliveries; store_state", (dialect.ddl(V4_OUTBOX),)),
        Migration(5, "indexes for listing backfilled drops newest first", (V5_BACKFILLED_INDEXES,)),
        Migration(6, "an index for finding a drop by its number in any project", (V6_NUMBER_INDEX,)),
        Migration(7, "cursors: the message id and stored_at at the cursor and the store's id (restores, recover)",
                  (V7_CURSOR_MARKS,)),
        Migration(8, "reported_windows.window_started_at: a window is its id and its start (restored stores reuse ids)",
                  (V8_WINDOW_STARTS,)),
        Migration(9, "sender_leases (one sender per account in a cluster); feedback.claim_token, claimed_by",
                  (dialect.ddl(V9_SENDER_LEASES),)),
        Migration(10, "cluster_nodes (each node's last renewal), cluster_silences (who alerted on which silence)",
                  (dialect.ddl(V10_CLUSTER_NODES),)),
        Migration(11, "feedback.carrier_id: the feedback row whose message carried a coalesced acknowledgement",
                  (dialect.ddl(V11_CARRIERS),)),
        Migration(12, "feedback.handed_by, handed_token, handed_at (sends of unknown fate); status 'unknown'",
                  (dialect.ddl(V12_HANDED),
                   _sqlite_unknown_status if dialect.name == "sqlite" else _postgres_unknown_status)),
        Migration(13, "device_copies: from-me messages a host's device received from a sibling device (a send whose "
                      "answer was lost is found out by the other host's copy)", (dialect.ddl(V13_DEVICE_COPIES),)),
        Migration(14, "sender_lease_grants: every grant of a sender lease (token, holder, when, how, from whom)",
                  (dialect.ddl(V14_LEASE_GRANTS),)),
    ]
