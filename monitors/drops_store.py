"""drops.db: every project's drops, their events, feedback, cursors and reported windows.

One SQLite file (WAL) shared by all monitors and the ops commands; each
writer takes short `BEGIN IMMEDIATE` transactions and waits on a busy
timeout, so six monitors never fail on each other's locks.

Exactly once: a batch of messages is recorded in the same transaction that
advances the project's cursor, so a monitor killed at any instant either
recorded a message and moved past it, or did neither. Every submission is
also unique per (drop, message id), so even a replayed message adds nothing.

Timestamps use the bridge store's text format (`bridge.store.format_ts`), so
they compare with message times and window bounds as text.
"""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_random

from bridge.store import now_ts

FEEDBACK_NONE = "none"  # no feedback asked for (auto_ack off, no operator feedback yet)
FEEDBACK_PENDING = "pending"  # recorded, not yet accepted by the bridge (retried)
FEEDBACK_SENT = "sent"  # bridge answered 200: delivered to WhatsApp
FEEDBACK_QUEUED = "queued"  # bridge answered 202: in its durable outbox, sent on reconnect
FEEDBACK_FAILED = "failed"  # bridge refused it (400/500): retrying the same request cannot help
FEEDBACK_ACCEPTED = (FEEDBACK_SENT, FEEDBACK_QUEUED)

# A feedback message's life; a drop's feedback_status is the status of its newest feedback.
FEEDBACK_TRANSITIONS = {
    FEEDBACK_PENDING: {FEEDBACK_PENDING, FEEDBACK_SENT, FEEDBACK_QUEUED, FEEDBACK_FAILED},
}

KIND_ACK = "ack"
KIND_OPERATOR = "operator"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS drops (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project TEXT NOT NULL,
    drop_number TEXT NOT NULL,
    group_jid TEXT NOT NULL,
    group_name TEXT NOT NULL DEFAULT '',
    submitted_by TEXT NOT NULL,          -- the contractor's JID
    message_id TEXT NOT NULL,            -- the first submission
    message_time TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    backfilled INTEGER NOT NULL DEFAULT 0,
    feedback_status TEXT NOT NULL DEFAULT '{FEEDBACK_NONE}'
        CHECK (feedback_status IN ('none', 'pending', 'sent', 'queued', 'failed')),
    feedback_sent_at TEXT,               -- when the bridge last accepted feedback for it
    UNIQUE (project, drop_number)
);
CREATE INDEX IF NOT EXISTS drops_time ON drops (message_time);
CREATE TABLE IF NOT EXISTS drop_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    drop_id INTEGER NOT NULL REFERENCES drops (id),
    kind TEXT NOT NULL CHECK (kind IN ('submitted', 'resubmitted')),
    group_jid TEXT NOT NULL,
    submitted_by TEXT NOT NULL,
    message_id TEXT NOT NULL,
    message_time TEXT NOT NULL,
    detected_at TEXT NOT NULL,
    backfilled INTEGER NOT NULL DEFAULT 0,
    UNIQUE (drop_id, message_id)
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    drop_id INTEGER NOT NULL REFERENCES drops (id),
    kind TEXT NOT NULL CHECK (kind IN ('ack', 'operator')),
    recipient TEXT NOT NULL,
    text TEXT NOT NULL,
    mentions TEXT NOT NULL DEFAULT '[]',
    idempotency_key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'queued', 'failed')),
    created_at TEXT NOT NULL,
    sent_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    bridge_message_id TEXT
);
CREATE INDEX IF NOT EXISTS feedback_pending ON feedback (status, id);
CREATE TABLE IF NOT EXISTS cursors (
    project TEXT NOT NULL,
    account TEXT NOT NULL,               -- a cursor is a rowid of that account's messages.db
    rowid INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (project, account)
);
CREATE TABLE IF NOT EXISTS reported_windows (
    project TEXT NOT NULL,
    account TEXT NOT NULL,
    window_id INTEGER NOT NULL,
    claimed_at TEXT NOT NULL,
    reported_at TEXT,                    -- NULL: claimed, log line maybe not written yet
    PRIMARY KEY (project, account, window_id)
);
"""

_DROP_COLUMNS = ("id, project, drop_number, group_jid, group_name, submitted_by, message_id, message_time, "
                 "detected_at, backfilled, feedback_status, feedback_sent_at")
_FEEDBACK_COLUMNS = ("f.id, d.project, d.drop_number, f.kind, f.recipient, f.text, f.mentions, f.idempotency_key, "
                     "f.status, f.created_at, f.sent_at, f.attempts, f.error")


@dataclass(frozen=True)
class Submission:
    """A drop number seen in one message of a project's group."""

    drop_number: str
    group_jid: str
    group_name: str
    submitted_by: str
    message_id: str
    message_time: str
    backfilled: bool


@dataclass(frozen=True)
class Drop:
    id: int
    project: str
    drop_number: str
    group_jid: str
    group_name: str
    submitted_by: str
    message_id: str
    message_time: str
    detected_at: str
    backfilled: bool
    feedback_status: str
    feedback_sent_at: str | None

    def as_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "id"}


@dataclass(frozen=True)
class NewFeedback:
    kind: str
    recipient: str
    text: str
    mentions: tuple[str, ...]
    idempotency_key: str


@dataclass(frozen=True)
class Feedback:
    id: int
    project: str
    drop_number: str
    kind: str
    recipient: str
    text: str
    mentions: tuple[str, ...]
    idempotency_key: str
    status: str
    created_at: str
    sent_at: str | None
    attempts: int
    error: str


def _drop(row: tuple) -> Drop:
    values = list(row)
    values[9] = bool(values[9])
    return Drop(*values)


def _feedback(row: tuple) -> Feedback:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    return Feedback(*values)


def drops_db_path(data_dir: Path) -> Path:
    """One file for all projects, beside the accounts' stores."""
    return data_dir / "drops.db"


def check_feedback_transition(old: str, new: str) -> None:
    if new not in FEEDBACK_TRANSITIONS.get(old, set()):
        raise ValueError(f"feedback status cannot go from {old!r} to {new!r}")


@retry(retry=retry_if_exception_type(sqlite3.OperationalError), wait=wait_random(0.01, 0.05),
       stop=stop_after_delay(10), reraise=True)
def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switching a new file to WAL needs an exclusive lock and ignores the busy timeout, so six
    monitors starting at once on a fresh drops.db retry it briefly."""
    conn.execute("PRAGMA journal_mode = WAL")


class DropsDB:
    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=10.0)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        if readonly:
            return
        # WAL (readers never block the writers); NORMAL survives a kill -9, like the bridge store.
        _enable_wal(self.conn)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self.conn.execute("PRAGMA foreign_keys = ON")
        with self.transaction() as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- cursor and recording ------------------------------------------------------------------

    def cursor(self, project: str, account: str) -> int:
        row = self.conn.execute("SELECT rowid FROM cursors WHERE project = ? AND account = ?",
                                (project, account)).fetchone()
        return row[0] if row else 0

    def record(self, project: str, account: str, cursor: int, submissions: list[Submission],
               ack: Callable[[Submission], NewFeedback] | None) -> list[Drop]:
        """Record submissions and move the cursor to `cursor`, in one transaction.

        A drop number new to the project becomes a drop (plus its acknowledgement, pending,
        when `ack` is given); a known one becomes a `resubmitted` event of that drop.
        Returns the new drops.
        """
        detected_at = now_ts()
        new_ids: list[int] = []
        with self.transaction() as conn:
            for sub in submissions:
                inserted = conn.execute(
                    "INSERT INTO drops (project, drop_number, group_jid, group_name, submitted_by, message_id, "
                    "message_time, detected_at, backfilled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (project, drop_number) DO NOTHING RETURNING id",
                    (project, sub.drop_number, sub.group_jid, sub.group_name, sub.submitted_by, sub.message_id,
                     sub.message_time, detected_at, int(sub.backfilled))).fetchone()
                if inserted:
                    drop_id, kind = inserted[0], "submitted"
                    new_ids.append(drop_id)
                    if ack is not None:
                        self._add_feedback(conn, drop_id, ack(sub))
                else:
                    drop_id = conn.execute("SELECT id FROM drops WHERE project = ? AND drop_number = ?",
                                           (project, sub.drop_number)).fetchone()[0]
                    kind = "resubmitted"
                conn.execute(
                    "INSERT INTO drop_events (drop_id, kind, group_jid, submitted_by, message_id, message_time, "
                    "detected_at, backfilled) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (drop_id, message_id) DO NOTHING",
                    (drop_id, kind, sub.group_jid, sub.submitted_by, sub.message_id, sub.message_time, detected_at,
                     int(sub.backfilled)))
            conn.execute("INSERT INTO cursors (project, account, rowid, updated_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT (project, account) DO UPDATE SET rowid = excluded.rowid, "
                         "updated_at = excluded.updated_at", (project, account, cursor, detected_at))
        return [self._drop_by_id(i) for i in new_ids]

    # -- drops ---------------------------------------------------------------------------------

    def _drop_by_id(self, drop_id: int) -> Drop:
        return _drop(self.conn.execute(f"SELECT {_DROP_COLUMNS} FROM drops WHERE id = ?", (drop_id,)).fetchone())

    def drop(self, project: str, drop_number: str) -> Drop | None:
        row = self.conn.execute(f"SELECT {_DROP_COLUMNS} FROM drops WHERE project = ? AND drop_number = ?",
                                (project, drop_number)).fetchone()
        return _drop(row) if row else None

    def drops(self, project: str | None = None, since: str = "", backfilled_only: bool = False) -> list[Drop]:
        """Drops posted at or after `since` (message time), oldest first."""
        sql = f"SELECT {_DROP_COLUMNS} FROM drops WHERE message_time >= ?"
        params: list[object] = [since]
        if project is not None:
            sql += " AND project = ?"
            params.append(project)
        if backfilled_only:
            sql += " AND backfilled = 1"
        return [_drop(row) for row in self.conn.execute(sql + " ORDER BY message_time, id", params)]

    def drop_count(self, project: str) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM drops WHERE project = ?", (project,)).fetchone()[0]

    def resubmissions(self, drop: Drop) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM drop_events WHERE drop_id = ? AND kind = 'resubmitted'",
                                 (drop.id,)).fetchone()[0]

    def latest_message_id(self, drop: Drop) -> str:
        """The message of the drop's latest submission (operator feedback answers that one)."""
        return self.conn.execute("SELECT message_id FROM drop_events WHERE drop_id = ? ORDER BY id DESC LIMIT 1",
                                 (drop.id,)).fetchone()[0]

    # -- feedback ------------------------------------------------------------------------------

    def _add_feedback(self, conn: sqlite3.Connection, drop_id: int, new: NewFeedback) -> int:
        row = conn.execute(
            "INSERT INTO feedback (drop_id, kind, recipient, text, mentions, idempotency_key, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            (drop_id, new.kind, new.recipient, new.text, json.dumps(list(new.mentions)), new.idempotency_key,
             now_ts())).fetchone()
        if row is None:
            return conn.execute("SELECT id FROM feedback WHERE idempotency_key = ?",
                                (new.idempotency_key,)).fetchone()[0]
        self._sync_drop_feedback(conn, drop_id)
        return row[0]

    def add_feedback(self, drop: Drop, new: NewFeedback) -> Feedback:
        """Record a feedback message as pending; the same idempotency key returns the first one."""
        with self.transaction() as conn:
            feedback_id = self._add_feedback(conn, drop.id, new)
        return self.feedback(feedback_id)

    def feedback(self, feedback_id: int) -> Feedback:
        return _feedback(self.conn.execute(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback f JOIN drops d "
                                           "ON d.id = f.drop_id WHERE f.id = ?", (feedback_id,)).fetchone())

    def pending_feedback(self, project: str, limit: int = 100) -> list[Feedback]:
        rows = self.conn.execute(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id "
                                 "WHERE f.status = 'pending' AND d.project = ? ORDER BY f.id LIMIT ?",
                                 (project, limit))
        return [_feedback(row) for row in rows]

    def finish_feedback(self, feedback: Feedback, status: str, error: str = "",
                        bridge_message_id: str | None = None) -> Feedback:
        """Record the bridge's answer (or another failed attempt, status pending).

        If another process (the monitor, `wa-watchdog feedback`) recorded an answer first, that
        one stands: both posted the same idempotency key, so the bridge gave both the same result.
        """
        with self.transaction() as conn:
            old, drop_id = conn.execute("SELECT status, drop_id FROM feedback WHERE id = ?",
                                        (feedback.id,)).fetchone()
            if old != FEEDBACK_PENDING:
                return self.feedback(feedback.id)
            check_feedback_transition(old, status)
            conn.execute("UPDATE feedback SET status = ?, error = ?, attempts = attempts + 1, "
                         "bridge_message_id = COALESCE(?, bridge_message_id), "
                         "sent_at = CASE WHEN ? THEN ? ELSE sent_at END WHERE id = ?",
                         (status, error, bridge_message_id, status in FEEDBACK_ACCEPTED, now_ts(), feedback.id))
            self._sync_drop_feedback(conn, drop_id)
        return self.feedback(feedback.id)

    @staticmethod
    def _sync_drop_feedback(conn: sqlite3.Connection, drop_id: int) -> None:
        """The drop shows its newest feedback's status and the last time the bridge accepted any."""
        conn.execute("UPDATE drops SET "
                     "feedback_status = (SELECT status FROM feedback WHERE drop_id = ?1 ORDER BY id DESC LIMIT 1), "
                     "feedback_sent_at = (SELECT MAX(sent_at) FROM feedback WHERE drop_id = ?1) WHERE id = ?1",
                     (drop_id,))

    def feedback_of(self, drop: Drop) -> list[Feedback]:
        rows = self.conn.execute(f"SELECT {_FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id "
                                 "WHERE f.drop_id = ? ORDER BY f.id", (drop.id,))
        return [_feedback(row) for row in rows]

    # -- disconnect windows --------------------------------------------------------------------

    def reported_window_ids(self, project: str, account: str) -> set[int]:
        """Windows already claimed for a report (written or being written)."""
        rows = self.conn.execute("SELECT window_id FROM reported_windows WHERE project = ? AND account = ?",
                                 (project, account))
        return {row[0] for row in rows}

    def unfinished_reports(self, project: str, account: str) -> list[int]:
        """Windows claimed whose log line may not have been written (the monitor died in between)."""
        rows = self.conn.execute("SELECT window_id FROM reported_windows WHERE project = ? AND account = ? "
                                 "AND reported_at IS NULL ORDER BY window_id", (project, account))
        return [row[0] for row in rows]

    def claim_window(self, project: str, account: str, window_id: int, started_at: str,
                     ended_at: str) -> list[str]:
        """Claim a window for its report and mark the project's drops posted in it backfilled.

        Returns those drop numbers (also the ones recorded live just before a crash, whose
        window was only known after the bridge restarted).
        """
        with self.transaction() as conn:
            conn.execute("INSERT INTO reported_windows (project, account, window_id, claimed_at) VALUES (?, ?, ?, ?) "
                         "ON CONFLICT DO NOTHING", (project, account, window_id, now_ts()))
            conn.execute("UPDATE drops SET backfilled = 1 WHERE project = ? AND message_time BETWEEN ? AND ?",
                         (project, started_at, ended_at))
            return self.window_drops(project, started_at, ended_at)

    def window_drops(self, project: str, started_at: str, ended_at: str) -> list[str]:
        rows = self.conn.execute("SELECT drop_number FROM drops WHERE project = ? AND message_time BETWEEN ? AND ? "
                                 "ORDER BY message_time, id", (project, started_at, ended_at))
        return [row[0] for row in rows]

    def window_reported(self, project: str, account: str, window_id: int) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE reported_windows SET reported_at = ? WHERE project = ? AND account = ? "
                         "AND window_id = ?", (now_ts(), project, account, window_id))
