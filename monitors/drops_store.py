"""The drops store: every project's drops, their events, feedback, cursors, reported windows and webhook events.

One set of methods over two backends (`monitors/store/`): SQLite drops.db
(the embedded default) or PostgreSQL (`[database] url`), opened with
`open_drops_store(config)`. The schema is a contract: docs/DROPS-SCHEMA.md.

Exactly once: a batch of messages with drops is recorded in the same transaction that
advances the project's cursor (batches without drops move it lazily: `save_cursors`), so a monitor killed at any instant either
recorded a message and moved past it, or did neither. Every submission is
also unique per (drop, message id), so even a replayed message adds nothing
(also after a PostgreSQL commit whose answer was lost). Webhook events are
written in the same transaction as the change they report, and only for
rows that transaction really inserted or changed.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from bridge.schema import now_ts
from monitors.events import (DROP_BACKFILLED, DROP_RECORDED, DROP_RESUBMITTED, FEEDBACK_DELIVERED_EVENT,
                             FEEDBACK_FAILED_EVENT, FEEDBACK_READ_EVENT, FEEDBACK_SENT_EVENT)
from monitors.store.feedback_state import feedback_event, sync_drop_feedback
from monitors.store.fence import FENCE, Fence, LeaseLost, store_session_name
from monitors.store.model import (FEEDBACK_ACCEPTED, FEEDBACK_FAILED, FEEDBACK_NONE, FEEDBACK_PENDING, FEEDBACK_QUEUED,
                                  FEEDBACK_SENT, FEEDBACK_STATUSES, FEEDBACK_UNKNOWN, KIND_ACK, KIND_OPERATOR, Drop,
                                  DropDetail, DropEvent, DropPage, Feedback, NewFeedback, OutboxCounts, OutboxEvent,
                                  Position, Submission, check_feedback_transition, drop_from_row, feedback_from_row)
from monitors.store.outbox import WebhookOutbox, enqueue
from monitors.store.queries import DROP_COLUMNS, FEEDBACK_COLUMNS, DropQueries
from monitors.store.shapes import drop_json, rfc3339
from monitors.store.receipts import ReceiptStamp, ReceiptStamping
from monitors.store.requeue import Requeueing
from monitors.store.sql import Backend, StoreUnavailable, Tx, one
from monitors.store.windows import ReportedWindows
from watchdog.components import Config

__all__ = ["DROP_BACKFILLED", "DROP_RECORDED", "DROP_RESUBMITTED", "FEEDBACK_ACCEPTED",
           "FEEDBACK_DELIVERED_EVENT", "FEEDBACK_FAILED", "FEEDBACK_FAILED_EVENT", "FEEDBACK_NONE", "FEEDBACK_PENDING",
           "FEEDBACK_QUEUED", "FEEDBACK_READ_EVENT", "FEEDBACK_SENT", "FEEDBACK_SENT_EVENT", "FEEDBACK_STATUSES",
           "FEEDBACK_UNKNOWN",
           "KIND_ACK", "KIND_OPERATOR", "Drop", "DropDetail", "DropEvent", "DropPage", "DropsDB", "Feedback", "Fence",
           "LeaseLost", "NewFeedback", "OutboxCounts", "OutboxEvent", "Position", "ReceiptStamp", "StoreUnavailable",
           "Submission", "check_feedback_transition", "drops_db_path", "open_drops_store"]


def drops_db_path(data_dir: Path) -> Path:
    """One file for all projects, beside the accounts' stores."""
    return data_dir / "drops.db"


def open_drops_store(config: Config, readonly: bool = False) -> DropsDB:
    """The configured store: PostgreSQL when `[database] url` is set (psycopg imported only then), else drops.db.

    SQLite opens (and migrates) at once; PostgreSQL connects on first use, so a monitor can start,
    report the outage and wait while the server is down. Raises SchemaTooNew for a newer database.
    """
    if config.database.url:
        from monitors.store.postgres import PostgresBackend
        if config.cluster is None:
            return DropsDB(PostgresBackend(config.database.url, config.database.schema))
        # A cluster: named after the node, so that a host taking over its lease can end its sessions (lease.py);
        # a silent peer given up within about lease_s, so that a cut-off host's locks do not outlive its lease
        from monitors.store.postgres import silence_bounds
        server, client = silence_bounds(config.cluster.lease_s)
        return DropsDB(PostgresBackend(config.database.url, config.database.schema,
                                       application_name=store_session_name(config.cluster.node), settings=server,
                                       **client))
    from monitors.store.sqlite import SqliteBackend
    return DropsDB(SqliteBackend(drops_db_path(config.data_dir), readonly=readonly))


RESENT_KEY_SUFFIX = ":resent"  # feedback an operator decided to send again gets a new Idempotency-Key


class DropsDB(ReceiptStamping, Requeueing, ReportedWindows, DropQueries):
    """The store's one interface; its parts: monitors/store/ (queries, receipts, requeue, windows)."""

    def __init__(self, backend: Backend) -> None:
        self.db = backend
        self.outbox = WebhookOutbox(backend)

    @property
    def description(self) -> str:
        return self.db.description

    def close(self) -> None:
        self.db.close()

    # -- cursor and recording ------------------------------------------------------------------

    def cursor(self, project: str, account: str) -> int:
        return self.position(project, account).rowid

    def position(self, project: str, account: str) -> Position:
        """The project's cursor with what identifies it (Position(0) before it read anything)."""
        row = one(self.db.rows("SELECT rowid, message_id, stored_at, store_id FROM cursors "
                               "WHERE project = ? AND account = ?", (project, account)))
        return Position(*row) if row else Position(0)

    def record(self, project: str, account: str, cursor: Position | int, submissions: list[Submission],
               ack: Callable[[Submission], NewFeedback] | None) -> list[Drop]:
        """Record submissions and move the cursor to `cursor` (a bare rowid has no marks), in one transaction.

        A drop number new to the project becomes a drop (plus its acknowledgement, pending,
        when `ack` is given) and a drop.recorded / drop.backfilled event; a known one becomes a
        `resubmitted` event of that drop (and a drop.resubmitted webhook event). Returns the new drops.
        """
        detected_at = now_ts()
        new: list[Drop] = []
        with self.db.transaction() as tx:
            for sub in submissions:
                public_id = str(uuid.uuid4())
                status = FEEDBACK_NONE if ack is None else FEEDBACK_PENDING  # of its acknowledgement, added below
                inserted = one(tx.rows(
                    "INSERT INTO drops (public_id, project, drop_number, group_jid, group_name, submitted_by, "
                    "message_id, message_time, detected_at, backfilled, feedback_status) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, drop_number) DO NOTHING RETURNING id",
                    (public_id, project, sub.drop_number, sub.group_jid, sub.group_name, sub.submitted_by,
                     sub.message_id, sub.message_time, detected_at, sub.backfilled, status)))
                if inserted:
                    drop_id, kind = inserted[0], "submitted"
                    if ack is not None:
                        tx.run(self._INSERT_FEEDBACK, self._feedback_values(drop_id, ack(sub)))
                    drop = Drop(drop_id, public_id, project, sub.drop_number, sub.group_jid, sub.group_name,
                                sub.submitted_by, sub.message_id, sub.message_time, detected_at, sub.backfilled,
                                status, None)
                    new.append(drop)
                    enqueue(tx, self.db.dialect, DROP_BACKFILLED if sub.backfilled else DROP_RECORDED,
                            {"drop": drop_json(drop)}, public_id)
                else:
                    drop_id, kind = tx.rows("SELECT id FROM drops WHERE project = ? AND drop_number = ?",
                                            (project, sub.drop_number))[0][0], "resubmitted"
                event = ("INSERT INTO drop_events (drop_id, kind, group_jid, submitted_by, message_id, message_time, "
                         "detected_at, backfilled) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                         "ON CONFLICT (drop_id, message_id) DO NOTHING")
                values = (drop_id, kind, sub.group_jid, sub.submitted_by, sub.message_id, sub.message_time,
                          detected_at, sub.backfilled)
                if kind == "submitted":
                    tx.run(event, values)  # a new drop: its first event cannot exist yet
                elif tx.rows(event + " RETURNING id", values):
                    known = self._drop_by_id(tx, drop_id)
                    enqueue(tx, self.db.dialect, DROP_RESUBMITTED, {
                        "drop": drop_json(known),
                        "submission": {"message_id": sub.message_id, "submitted_by": sub.submitted_by,
                                       "message_time": rfc3339(sub.message_time), "backfilled": sub.backfilled}},
                        f"{known.public_id}/{sub.message_id}")
            self._move_cursor(tx, project, account, cursor, detected_at)
        return new

    def save_cursors(self, cursors: Sequence[tuple[str, str, Position]]) -> None:
        """Move (project, account, position) cursors past messages without drops, all in one transaction.

        Why not with every message: a project's cursor only has to be exact in the transaction that records
        its drops (exactly once); messages without drops read again after a crash add nothing. So monitors
        save the rest now and then, instead of one write per message per project (100 projects, 100 commits
        a message on one drops store).
        """
        if cursors:
            with self.db.transaction() as tx:
                for project, account, position in cursors:
                    self._move_cursor(tx, project, account, position, now_ts())

    @staticmethod
    def _move_cursor(tx: Tx, project: str, account: str, cursor: Position | int, at: str) -> None:
        position = Position(cursor) if isinstance(cursor, int) else cursor
        tx.run("INSERT INTO cursors (project, account, rowid, message_id, stored_at, store_id, updated_at) "
               "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (project, account) DO UPDATE SET rowid = excluded.rowid, "
               "message_id = excluded.message_id, stored_at = excluded.stored_at, store_id = excluded.store_id, "
               "updated_at = excluded.updated_at", (project, account, *position, at))

    # -- drops ---------------------------------------------------------------------------------

    @staticmethod
    def _drop_by_id(tx: Tx, drop_id: int) -> Drop:
        return drop_from_row(tx.rows(f"SELECT {DROP_COLUMNS} FROM drops d WHERE d.id = ?", (drop_id,))[0])

    def drop(self, project: str, drop_number: str) -> Drop | None:
        row = one(self.db.rows(f"SELECT {DROP_COLUMNS} FROM drops d WHERE d.project = ? AND d.drop_number = ?",
                               (project, drop_number)))
        return drop_from_row(row) if row else None

    def drops(self, project: str | None = None, since: str = "", backfilled_only: bool = False) -> list[Drop]:
        """Drops posted at or after `since` (message time), oldest first."""
        where, params = [], []
        for clause, value in (("d.message_time >= ?", since or None), ("d.project = ?", project),
                              ("d.backfilled = ?", True if backfilled_only else None)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {DROP_COLUMNS} FROM drops d" + (" WHERE " + " AND ".join(where) if where else "")
        return [drop_from_row(row) for row in self.db.rows(sql + " ORDER BY d.message_time, d.id", params)]

    def drop_count(self, project: str) -> int:
        return self.db.rows("SELECT COUNT(*) FROM drops WHERE project = ?", (project,))[0][0]

    def resubmissions(self, drop: Drop) -> int:
        return self.db.rows("SELECT COUNT(*) FROM drop_events WHERE drop_id = ? AND kind = 'resubmitted'",
                            (drop.id,))[0][0]

    def latest_message_id(self, drop: Drop) -> str:
        """The message of the drop's latest submission (operator feedback answers that one)."""
        return self.db.rows("SELECT message_id FROM drop_events WHERE drop_id = ? ORDER BY id DESC LIMIT 1",
                            (drop.id,))[0][0]

    # -- feedback ------------------------------------------------------------------------------

    _INSERT_FEEDBACK = ("INSERT INTO feedback (drop_id, kind, recipient, text, mentions, idempotency_key, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING")

    @staticmethod
    def _feedback_values(drop_id: int, new: NewFeedback) -> tuple:
        return (drop_id, new.kind, new.recipient, new.text, json.dumps(list(new.mentions)), new.idempotency_key,
                now_ts())

    def _add_feedback(self, tx: Tx, drop_id: int, new: NewFeedback) -> int:
        row = one(tx.rows(self._INSERT_FEEDBACK + " RETURNING id", self._feedback_values(drop_id, new)))
        if row is None:
            return tx.rows("SELECT id FROM feedback WHERE idempotency_key = ?", (new.idempotency_key,))[0][0]
        sync_drop_feedback(tx, drop_id)
        return row[0]

    def add_feedback(self, drop: Drop, new: NewFeedback) -> Feedback:
        """Record a feedback message as pending; the same idempotency key returns the first one."""
        with self.db.transaction() as tx:
            feedback_id = self._add_feedback(tx, drop.id, new)
        return self.feedback(feedback_id)

    @staticmethod
    def _feedback(tx: Tx | Backend, feedback_id: int) -> Feedback:
        return feedback_from_row(tx.rows(f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d "
                                         "ON d.id = f.drop_id WHERE f.id = ?", (feedback_id,))[0])

    def feedback(self, feedback_id: int) -> Feedback:
        return self._feedback(self.db, feedback_id)

    def pending_feedback(self, project: str, limit: int = 100) -> list[Feedback]:
        rows = self.db.rows(f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id "
                            "WHERE f.status = 'pending' AND d.project = ? ORDER BY f.id LIMIT ?", (project, limit))
        return [feedback_from_row(row) for row in rows]

    def queued_feedback(self, project: str, limit: int = 1000) -> list[Feedback]:
        """Feedback of `project` a bridge accepted into its outbox (202) and has not been seen sent yet."""
        rows = self.db.rows(f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id "
                            "WHERE f.status = 'queued' AND d.project = ? ORDER BY f.id LIMIT ?", (project, limit))
        return [feedback_from_row(row) for row in rows]

    def claim_feedback(self, project: str, fence: Fence, limit: int = 100) -> list[Feedback]:
        """Pending feedback of `project` claimed under a sender lease (a cluster, PostgreSQL): none unless `fence`
        is the account's current grant, in the same statement. Rows another transaction holds are skipped (a
        paused holder's unfinished mark must not stall the new holder); each row remembers the claim's token,
        which its mark must carry (`finish_feedback(..., fence=)`)."""
        with self.db.transaction() as tx:
            ids = [row[0] for row in tx.rows(
                "UPDATE feedback SET claim_token = ?, claimed_by = ? WHERE id IN (SELECT f.id FROM feedback f "
                "JOIN drops d ON d.id = f.drop_id WHERE f.status = 'pending' AND d.project = ? ORDER BY f.id "
                f"LIMIT ? FOR UPDATE OF f SKIP LOCKED) AND {FENCE} RETURNING id",
                (fence.token, fence.holder, project, limit, *fence.params))]
            if not ids:
                return []
            rows = tx.rows(f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id "
                           f"WHERE f.id IN ({', '.join('?' * len(ids))}) ORDER BY f.id", ids)
        return [feedback_from_row(row) for row in rows]

    def carry(self, rows: Sequence[Feedback], fence: Fence | None = None) -> list[Feedback]:
        """Record that one message carries `rows` (pending, not carried yet): each row's carrier_id becomes the
        first one's id, before anything is posted. Returns the rows this call grouped (those another process
        grouped or answered meanwhile are left out); with a `fence`, only rows claimed under its token."""
        if not rows:
            return []
        ids = sorted(row.id for row in rows)
        marks = ", ".join("?" * len(ids))
        free = f"id IN ({marks}) AND status = 'pending' AND carrier_id IS NULL"
        fenced, fence_params = (f" AND claim_token = ? AND {FENCE}", (fence.token, *fence.params)) if fence else ("", ())
        with self.db.transaction() as tx:  # the subquery sees the rows as before the update: one carrier for all
            grouped = {row[0] for row in tx.rows(
                f"UPDATE feedback SET carrier_id = (SELECT MIN(id) FROM feedback WHERE {free}) "
                f"WHERE {free}{fenced} RETURNING id", (*ids, *ids, *fence_params))}
        return [self.feedback(i) for i in ids if i in grouped]

    def carried(self, carrier_id: int) -> list[Feedback]:
        """Every row one coalesced message carries (answered ones too: the message is rebuilt the same)."""
        return [feedback_from_row(row) for row in self.db.rows(
            f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE f.carrier_id = ? "
            "ORDER BY f.id", (carrier_id,))]

    def finish_feedback(self, feedback: Feedback, status: str, error: str = "",
                        bridge_message_id: str | None = None, fence: Fence | None = None) -> Feedback:
        """Record the bridge's answer (or another failed attempt, status pending).

        If another process (the monitor, `wa-watchdog feedback`, the drops API) recorded an answer
        first, that one stands: all posted the same idempotency key, so the bridge gave all the
        same result. A final answer enqueues feedback.sent (sent or queued) or feedback.failed.
        With a `fence` (a cluster) the mark needs the row's claim under that token and the grant still
        current, in the same statement: LeaseLost (nothing written) otherwise.
        """
        with self.db.transaction() as tx:
            old, drop_id = tx.rows("SELECT status, drop_id FROM feedback WHERE id = ?", (feedback.id,))[0]
            if old != FEEDBACK_PENDING:
                return self._feedback(tx, feedback.id)
            check_feedback_transition(old, status)
            accepted = status in FEEDBACK_ACCEPTED
            update = ("UPDATE feedback SET status = ?, error = ?, attempts = attempts + 1, "
                      "bridge_message_id = COALESCE(?, bridge_message_id), "
                      "sent_at = CASE WHEN ? THEN ? ELSE sent_at END WHERE id = ?")
            values = (status, error, bridge_message_id, accepted, now_ts(), feedback.id)
            if fence is None:
                tx.run(update, values)
            elif not tx.rows(f"{update} AND claim_token = ? AND {FENCE} RETURNING id",
                             (*values, fence.token, *fence.params)):
                raise LeaseLost(f"feedback {feedback.id}: {fence.account}'s sender lease is no longer "
                                f"{fence.holder}'s token {fence.token}")
            sync_drop_feedback(tx, drop_id)
            done = self._feedback(tx, feedback.id)
            if accepted or status == FEEDBACK_FAILED:  # unknown is no outcome to report: an operator decides it
                feedback_event(tx, self.db.dialect, FEEDBACK_SENT_EVENT if accepted else FEEDBACK_FAILED_EVENT,
                                     self._drop_by_id(tx, drop_id), done)
        return done

    def decide_unknown(self, feedback_id: int, status: str, bridge_message_id: str | None = None) -> Feedback:
        """The decision on feedback of unknown fate (an operator's, or its copy found later: `bridge_message_id`):
        it went (sent, feedback.sent enqueued) or it is to be sent (pending, as if never handed to a bridge, under a
        new Idempotency-Key: the bridge that lost its answer holds the old one in doubt and never sends it again,
        bridge/outbox.py). A row no longer unknown is returned as it is."""
        with self.db.transaction() as tx:
            old, drop_id = tx.rows("SELECT status, drop_id FROM feedback WHERE id = ?", (feedback_id,))[0]
            if old != FEEDBACK_UNKNOWN:
                return self._feedback(tx, feedback_id)
            check_feedback_transition(old, status)
            tx.run("UPDATE feedback SET status = ?, sent_at = CASE WHEN ? THEN ? ELSE sent_at END, "
                   "bridge_message_id = COALESCE(?, bridge_message_id), "
                   "handed_by = CASE WHEN ? THEN NULL ELSE handed_by END, "
                   "idempotency_key = CASE WHEN ? THEN idempotency_key || ? ELSE idempotency_key END WHERE id = ?",
                   (status, status == FEEDBACK_SENT, now_ts(), bridge_message_id, status == FEEDBACK_PENDING,
                    status == FEEDBACK_PENDING, RESENT_KEY_SUFFIX, feedback_id))
            sync_drop_feedback(tx, drop_id)
            done = self._feedback(tx, feedback_id)
            if status == FEEDBACK_SENT:
                feedback_event(tx, self.db.dialect, FEEDBACK_SENT_EVENT, self._drop_by_id(tx, drop_id), done)
        return done

    def unknown_feedback(self, project: str | None = None) -> list[Feedback]:
        """Feedback of unknown fate (of one project, or all), oldest first: what an operator has to decide."""
        where, params = ("f.status = ?", (FEEDBACK_UNKNOWN,)) if project is None else \
            ("f.status = ? AND d.project = ?", (FEEDBACK_UNKNOWN, project))
        return [feedback_from_row(row) for row in self.db.rows(
            f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE {where} "
            "ORDER BY f.id", params)]

    # -- small shared state (followers' cursors, e.g. the receipts follower) -----------------------

    def get_state(self, key: str) -> str | None:
        row = one(self.db.rows("SELECT value FROM store_state WHERE key = ?", (key,)))
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.db.transaction() as tx:
            tx.run("INSERT INTO store_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = excluded.value", (key, value))

