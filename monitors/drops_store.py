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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from bridge.schema import bare_user, now_ts
from monitors.events import (DROP_BACKFILLED, DROP_RECORDED, DROP_RESUBMITTED, FEEDBACK_DELIVERED_EVENT,
                             FEEDBACK_FAILED_EVENT, FEEDBACK_READ_EVENT, FEEDBACK_SENT_EVENT)
from monitors.store.model import (FEEDBACK_ACCEPTED, FEEDBACK_FAILED, FEEDBACK_NONE, FEEDBACK_PENDING, FEEDBACK_QUEUED,
                                  FEEDBACK_SENT, FEEDBACK_STATUSES, FEEDBACK_UNKNOWN, KIND_ACK, KIND_OPERATOR, RECEIPT_COLUMNS, Drop,
                                  DropDetail, DropEvent, DropPage, Feedback, NewFeedback, OutboxCounts, OutboxEvent, Position, Submission, check_feedback_transition, drop_from_row,
                                  feedback_from_row)
from monitors.store.fence import FENCE, Fence, LeaseLost, store_session_name
from monitors.store.outbox import WebhookOutbox, enqueue
from monitors.store.shapes import drop_json, feedback_json, rfc3339
from monitors.store.queries import DROP_COLUMNS, FEEDBACK_COLUMNS, DropQueries
from monitors.store.sql import Backend, StoreUnavailable, Tx, one
from watchdog.components import Config

__all__ = ["DROP_BACKFILLED", "DROP_RECORDED", "DROP_RESUBMITTED", "FEEDBACK_ACCEPTED",
           "FEEDBACK_DELIVERED_EVENT", "FEEDBACK_FAILED", "FEEDBACK_FAILED_EVENT", "FEEDBACK_NONE", "FEEDBACK_PENDING",
           "FEEDBACK_QUEUED", "FEEDBACK_READ_EVENT", "FEEDBACK_SENT", "FEEDBACK_SENT_EVENT", "FEEDBACK_STATUSES",
           "FEEDBACK_UNKNOWN",
           "KIND_ACK", "KIND_OPERATOR", "Drop", "DropDetail", "DropEvent", "DropPage", "DropsDB", "Feedback", "Fence",
           "LeaseLost", "NewFeedback", "OutboxCounts", "OutboxEvent", "Position", "ReceiptStamp", "StoreUnavailable",
           "Submission", "check_feedback_transition", "drops_db_path", "open_drops_store"]


RECEIPT_LOOKUP_CHUNK = 500  # message ids per IN (...) lookup (SQLite allows 32766 parameters, PostgreSQL 65535)
STAMP_COLUMNS = ("server_at", "delivered_at", "read_at")  # the receipt columns of feedback (RECEIPT_COLUMNS' values)


T = TypeVar("T")


def _chunks(values: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(values), RECEIPT_LOOKUP_CHUNK):
        yield values[start:start + RECEIPT_LOOKUP_CHUNK]


class ReceiptStamp(NamedTuple):
    """What of a bridge receipt stamps feedback (bridge.store.StoredReceipt has these fields too)."""

    message_id: str
    kind: str
    at: str
    recipient_jid: str = ""


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


class DropsDB(DropQueries):
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
        self._sync_drop_feedback(tx, drop_id)
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

    def requeue_feedback(self, rows: Sequence[Feedback], fence: Fence | None = None) -> list[int]:
        """Queued feedback its bridge withdrew (a failover: never sent there) is pending again, to be sent through
        another account; with a `fence`, only rows claimed under its token while it is current. The ids done."""
        fenced, params = (f" AND claim_token = ? AND {FENCE}", (fence.token, *fence.params)) if fence else ("", ())
        return self._requeue("id", [row.id for row in rows], fenced, params, unhand=True)

    def give_back(self, message_ids: Sequence[str], up_to_token: int) -> list[int]:
        """Queued feedback a bridge withdrew because its sender lease's token (at most `up_to_token`) was superseded
        (bridge/fence.py: never sent, never to be) is pending again, for the lease's holder now to claim and send.
        Not fenced: it only states what the bridge did, and gives no host the right to send. The ids done."""
        return self._requeue("bridge_message_id", message_ids, " AND claim_token <= ?", (up_to_token,), unhand=True)

    def requeue_in_doubt(self, message_ids: Sequence[str], node: str) -> list[int]:
        """Queued feedback `node` handed to its bridge, which then lost the send's answer and never sends it again
        (bridge/outbox.py, status doubt): pending again, still marked as handed by `node`, so the sender finds out
        whether it went (monitors/fate.py) rather than post it. Not fenced: it only states what the bridge did.
        The ids done."""
        return self._requeue("bridge_message_id", message_ids, " AND handed_by = ?", (node,))

    def take_queued(self, project: str, fence: Fence, after_s: float) -> float | None:
        """A cluster's holder takes over feedback another node's bridge accepted (202, `queued`) under an older
        token: that node is gone or will give nothing back, and its rows would stay queued for ever. Each is pending
        again, claimed under `fence` and still marked as handed by that node, so the feedback sender finds out
        whether it went (monitors/fate.py) as for a send in doubt. Only once `after_s` (the lease) has passed since
        this grant by the database's clock: the other bridge sends under an older token only until that token's
        validity ended, which is before its lease could expire, which is before this grant plus a lease. Fenced
        and conditional on the older claim: a row the other node gave back, or marked, first is left alone, and
        its give-back (`give_back`, `claim_token <= ` its token) of a row taken here changes nothing. Rows no node
        handed on (one host before the cluster) stay the bridge's outbox's job. Returns None once looked, else
        the seconds until it may; LeaseLost when `fence` is no longer the grant."""
        grant = self.db.rows("SELECT EXTRACT(EPOCH FROM acquired_at + make_interval(secs => ?) - now()) FROM "
                             "sender_leases WHERE account = ? AND holder = ? AND token = ? AND expires_at > now()",
                             (after_s, *fence.params))
        if not grant:
            raise LeaseLost(f"{fence.account}'s sender lease is no longer {fence.holder}'s token {fence.token}")
        if (wait := float(grant[0][0])) > 0:
            return wait
        # handed_by <> ?: a NULL (never handed on) is not <> anything
        ids = [row[0] for row in self.db.rows(
            "SELECT f.id FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE f.status = 'queued' AND d.project = ? "
            "AND f.handed_by <> ? AND f.claim_token < ?", (project, fence.holder, fence.token))]
        self._requeue("id", ids, f" AND handed_by <> ? AND claim_token < ? AND {FENCE}",
                      (fence.holder, fence.token, *fence.params), claim=fence)
        return None

    def _requeue(self, column: str, values: Sequence[object], condition: str, params: tuple,
                 claim: Fence | None = None, unhand: bool = False) -> list[int]:
        """Queued rows pending again (`claim`: claimed under that grant); the ids done. `unhand`: the bridge said it
        withdrew them (never sent), so no host need look for a copy before sending them (monitors/fate.py)."""
        if not values:
            return []
        claimed, claim_params = ((", claim_token = ?, claimed_by = ?", (claim.token, claim.holder)) if claim
                                 else ("", ()))
        if unhand:
            claimed += ", handed_by = NULL, handed_token = NULL, handed_at = NULL"
        with self.db.transaction() as tx:
            done = tx.rows(
                f"UPDATE feedback SET status = 'pending', bridge_message_id = NULL, sent_at = NULL{claimed} WHERE "
                f"{column} IN ({', '.join('?' * len(values))}) AND status = 'queued'{condition} RETURNING id, drop_id",
                (*claim_params, *values, *params))
            for drop_id in {drop_id for _, drop_id in done}:
                self._sync_drop_feedback(tx, drop_id)
        return [feedback_id for feedback_id, _ in done]

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
            self._sync_drop_feedback(tx, drop_id)
            done = self._feedback(tx, feedback.id)
            if accepted or status == FEEDBACK_FAILED:  # unknown is no outcome to report: an operator decides it
                self._feedback_event(tx, FEEDBACK_SENT_EVENT if accepted else FEEDBACK_FAILED_EVENT,
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
            self._sync_drop_feedback(tx, drop_id)
            done = self._feedback(tx, feedback_id)
            if status == FEEDBACK_SENT:
                self._feedback_event(tx, FEEDBACK_SENT_EVENT, self._drop_by_id(tx, drop_id), done)
        return done

    def unknown_feedback(self, project: str | None = None) -> list[Feedback]:
        """Feedback of unknown fate (of one project, or all), oldest first: what an operator has to decide."""
        where, params = ("f.status = ?", (FEEDBACK_UNKNOWN,)) if project is None else \
            ("f.status = ? AND d.project = ?", (FEEDBACK_UNKNOWN, project))
        return [feedback_from_row(row) for row in self.db.rows(
            f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE {where} "
            "ORDER BY f.id", params)]

    def _feedback_event(self, tx: Tx, event_type: str, drop: Drop, feedback: Feedback) -> None:
        """One event per outcome of a feedback row (its status): the same outcome reported again, after the row was
        given back and queued again, is the same event (outbox.enqueue)."""
        enqueue(tx, self.db.dialect, event_type, {"drop": drop_json(drop), "feedback": feedback_json(feedback)},
                f"{drop.public_id}/{feedback.idempotency_key}/{feedback.status}")

    @staticmethod
    def _sync_drop_feedback(tx: Tx, drop_id: int) -> None:
        """The drop shows its newest feedback's status and the last time the bridge accepted any."""
        tx.run("UPDATE drops SET "
               "feedback_status = (SELECT status FROM feedback WHERE drop_id = ? ORDER BY id DESC LIMIT 1), "
               "feedback_sent_at = (SELECT MAX(sent_at) FROM feedback WHERE drop_id = ?) WHERE id = ?",
               (drop_id, drop_id, drop_id))

    # -- receipts ------------------------------------------------------------------------------

    def record_receipts(self, receipts: Sequence[ReceiptStamp]) -> tuple[set[str], int]:
        """Stamp receipts of sent feedback (server_ack | delivered | read), all in one transaction.

        Returns (the message ids that are feedback, how many stamps changed a row). The first receipt of
        a kind stands. A read receipt counts only from someone the feedback mentions (the contractor it
        answers; any reader when it mentions nobody or the receipt names nobody), and also stamps
        delivered_at if no delivered receipt came first. feedback.delivered / feedback.read are enqueued
        in the same transaction. Set-based (a few statements per batch, not per receipt): on PostgreSQL
        each statement that answers is a round trip, and a sender's receipts arrive by the hundred.
        Receipts of other messages (most of what the sending number gets receipts for) cost one read.
        """
        tracked = [r for r in receipts if r.kind in RECEIPT_COLUMNS]  # played (voice notes): not tracked
        # message id -> [(id, drop_id, readers, {column: value})]: a coalesced message carried several rows
        feedback: dict[str, list[tuple]] = {}
        for chunk in _chunks(sorted({r.message_id for r in tracked})):
            for message_id, feedback_id, drop_id, mentions, *stamped in self.db.rows(
                    f"SELECT bridge_message_id, id, drop_id, mentions, {', '.join(STAMP_COLUMNS)} FROM feedback "
                    f"WHERE bridge_message_id IN ({', '.join('?' * len(chunk))})", chunk):
                readers = {bare_user(jid) for jid in json.loads(mentions)}
                feedback.setdefault(message_id, []).append(
                    (feedback_id, drop_id, readers, dict(zip(STAMP_COLUMNS, stamped))))
        stamps: dict[str, dict[int, str]] = {column: {} for column in STAMP_COLUMNS}  # column -> id -> time
        for receipt in tracked:
            for feedback_id, _, readers, current in feedback.get(receipt.message_id, ()):
                if receipt.kind == "read" and receipt.recipient_jid and readers and \
                        bare_user(receipt.recipient_jid) not in readers:
                    continue  # a coalesced message's read counts for the rows that mention the reader
                for column in [RECEIPT_COLUMNS[receipt.kind]] + (["delivered_at"] if receipt.kind == "read" else []):
                    if current[column] is None:
                        stamps[column].setdefault(feedback_id, receipt.at)  # the first one stands
        if not any(stamps.values()):
            return set(feedback), 0
        drops_of = {feedback_id: drop_id for rows in feedback.values() for feedback_id, drop_id, _, _ in rows}
        with self.db.transaction() as tx:
            changed = {column: self._stamp(tx, column, by_id) for column, by_id in stamps.items() if by_id}
            self._settle_queued(tx, sorted(set().union(*changed.values())))
            events = [(FEEDBACK_DELIVERED_EVENT, fid) for fid in changed.get("delivered_at", ())] + \
                     [(FEEDBACK_READ_EVENT, fid) for fid in changed.get("read_at", ())]
            if events:
                ids = sorted({fid for _, fid in events})
                marks = ", ".join("?" * len(ids))
                rows = {row[0]: feedback_from_row(row) for row in tx.rows(
                    f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE f.id IN ({marks})",
                    ids)}
                drop_ids = sorted({drops_of[fid] for fid in ids})
                drops = {row[0]: drop_from_row(row) for row in tx.rows(
                    f"SELECT {DROP_COLUMNS} FROM drops d WHERE d.id IN ({', '.join('?' * len(drop_ids))})", drop_ids)}
                for event_type, fid in events:
                    self._feedback_event(tx, event_type, drops[drops_of[fid]], rows[fid])
        return set(feedback), sum(len(ids) for ids in changed.values())

    def _settle_queued(self, tx: Tx, ids: list[int]) -> None:
        """Queued feedback (the bridge answered 202) that a receipt shows went out is sent: its final state. A
        reaction never gets delivered/read receipts, so its server ack is the last word on it and nothing
        may wait for more. (feedback.sent was enqueued when the bridge accepted it.)"""
        for chunk in _chunks(ids):
            settled = tx.rows(f"UPDATE feedback SET status = ? WHERE status = ? AND id IN ({', '.join('?' * len(chunk))}) "
                              "RETURNING drop_id", (FEEDBACK_SENT, FEEDBACK_QUEUED, *chunk))
            for drop_id in sorted({row[0] for row in settled}):
                self._sync_drop_feedback(tx, drop_id)

    def _stamp(self, tx: Tx, column: str, by_id: dict[int, str]) -> set[int]:
        """Set `column` where it is still empty, one statement for the batch; the ids it changed."""
        types = self.db.dialect.types
        row = f"SELECT CAST(? AS {types['int']}) AS id, CAST(? AS {types['ts']}) AS at"  # typed: PostgreSQL
        values = " UNION ALL ".join([row] * len(by_id))
        params = [value for pair in by_id.items() for value in pair]
        return {found[0] for found in tx.rows(
            f"UPDATE feedback SET {column} = v.at FROM ({values}) AS v "
            f"WHERE feedback.id = v.id AND feedback.{column} IS NULL RETURNING feedback.id", params)}

    # -- small shared state (followers' cursors, e.g. the receipts follower) -----------------------

    def get_state(self, key: str) -> str | None:
        row = one(self.db.rows("SELECT value FROM store_state WHERE key = ?", (key,)))
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.db.transaction() as tx:
            tx.run("INSERT INTO store_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                   "value = excluded.value", (key, value))

    # -- disconnect windows --------------------------------------------------------------------

    def reported_windows(self, project: str, account: str) -> dict[int, str | None]:
        """Windows already claimed for a report (written or being written): id -> the window's start (None when
        claimed before starts were kept)."""
        rows = self.db.rows("SELECT window_id, window_started_at FROM reported_windows WHERE project = ? "
                            "AND account = ?", (project, account))
        return dict(rows)

    def unfinished_reports(self, project: str, account: str) -> dict[int, str | None]:
        """Windows claimed whose log line may not have been written (the monitor died in between)."""
        rows = self.db.rows("SELECT window_id, window_started_at FROM reported_windows WHERE project = ? "
                            "AND account = ? AND reported_at IS NULL ORDER BY window_id", (project, account))
        return dict(rows)

    def claim_window(self, project: str, account: str, window_id: int, started_at: str,
                     ended_at: str) -> list[str]:
        """Claim a window for its report and mark the project's drops posted in it backfilled.

        Returns those drop numbers (also the ones recorded live just before a crash, whose
        window was only known after the bridge restarted). A claim of the same id with another start was a
        window of a file since replaced (a restored backup numbers its windows again): this one takes its place.
        """
        key = (project, account, window_id)
        with self.db.transaction() as tx:
            claimed = tx.rows("SELECT window_started_at FROM reported_windows WHERE project = ? AND account = ? "
                              "AND window_id = ?", key)
            if claimed and claimed[0][0] not in (None, started_at):
                tx.run("UPDATE reported_windows SET window_started_at = ?, claimed_at = ?, reported_at = NULL "
                       "WHERE project = ? AND account = ? AND window_id = ?", (started_at, now_ts(), *key))
            else:
                tx.run("INSERT INTO reported_windows (project, account, window_id, claimed_at, window_started_at) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", (*key, now_ts(), started_at))
            tx.run("UPDATE drops SET backfilled = ? WHERE project = ? AND message_time BETWEEN ? AND ?",
                   (True, project, started_at, ended_at))
            rows = tx.rows("SELECT drop_number FROM drops WHERE project = ? AND message_time BETWEEN ? AND ? "
                           "ORDER BY message_time, id", (project, started_at, ended_at))
            return [row[0] for row in rows]

    def window_reported(self, project: str, account: str, window_id: int) -> None:
        with self.db.transaction() as tx:
            tx.run("UPDATE reported_windows SET reported_at = ? WHERE project = ? AND account = ? "
                   "AND window_id = ?", (now_ts(), project, account, window_id))
