"""The outbox's rows in messages.db (the `outbox` and `outbox_requests` tables): queued durably before the first
attempt, found again by Idempotency-Key or by the fingerprint of an identical request, counted, withdrawn, failed.
`Store` (bridge/store.py) carries these methods; marking a row sent stays there, with the message it stores."""
from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from bridge.fence import SendFence
from bridge.schema import format_epoch, now_ts
from watchdog.shared import clock


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
    context: dict | None = None  # {"quote": {...}} or {"reaction": {...}} (bridge/outbox.py)
    fence: SendFence | None = None  # the sender lease it was sent under (bridge/fence.py), None: unfenced


class IdempotencyConflict(Exception):
    """An Idempotency-Key already used for a different request (answered 422)."""

    def __init__(self, message: str, row: OutboxRow) -> None:
        super().__init__(message)
        self.row = row


def _outbox_row(row: tuple) -> OutboxRow:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    values[13] = json.loads(values[13]) if values[13] else None
    lease, token = values.pop(14), values.pop(14)
    return OutboxRow(*values, fence=SendFence(lease, token) if lease is not None else None)


_OUTBOX_COLUMNS = ("seq, message_id, idempotency_key, recipient, recipient_jid, text, mentioned_jids, media_path, "
                   "media_type, status, created_at, sent_at, error, context, fence_lease, fence_token")


class OutboxRows:
    """The outbox's part of the store (a base of `Store`, whose connection and transactions it uses)."""

    conn: sqlite3.Connection
    transaction: Callable[..., AbstractContextManager[sqlite3.Connection]]

    def outbox_add(self, message_id: str, idempotency_key: str | None, recipient: str, recipient_jid: str,
                   text: str, mentioned_jids: Iterable[str], media_path: str | None,
                   media_type: str | None, endpoint: str = "", fingerprint: str = "",
                   dedupe_window: float | None = None, context: dict | None = None,
                   fence: SendFence | None = None) -> OutboxRow:
        """Queue a send durably; returns the row that stands for this request.

        With an idempotency key already used, that first row (IdempotencyConflict if it was a
        different request); without a key, the row of an identical request (`fingerprint`, same
        `endpoint`) made in the last `dedupe_window` seconds, if any: a client retrying what it thinks failed.
        A withdrawn row posted again is queued again, under the new request's `fence` (the caller refuses a
        request whose fence is superseded before it gets here): the holder of the lease now, or a failback.
        """
        lease, token = (fence.lease, fence.token) if fence else (None, None)
        with self.transaction() as conn:
            existing = self._outbox_same_request(idempotency_key, endpoint, fingerprint, dedupe_window)
            if existing is not None and existing.status == "withdrawn":
                conn.execute("UPDATE outbox SET status = 'pending', error = '', fence_lease = ?, fence_token = ? "
                             "WHERE seq = ?", (lease, token, existing.seq))
                conn.execute("UPDATE outbox_requests SET attempts = 0 WHERE seq = ?", (existing.seq,))
            elif existing is not None:
                return existing
            if existing is not None:
                return self.outbox_row(existing.message_id)  # type: ignore[return-value]
            now = clock.instant()
            created = format_epoch(now.wall)
            cursor = conn.execute(
                "INSERT INTO outbox (message_id, idempotency_key, recipient, recipient_jid, text, mentioned_jids, "
                "media_path, media_type, created_at, context, fence_lease, fence_token) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (message_id, idempotency_key, recipient, recipient_jid, text, json.dumps(list(mentioned_jids)),
                 media_path, media_type, created, json.dumps(context, sort_keys=True) if context else None,
                 lease, token))
            conn.execute("INSERT INTO outbox_requests (seq, endpoint, fingerprint, staged_media, created_at, boot_id, "
                         "boottime) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         (cursor.lastrowid, endpoint, fingerprint, media_path, created, now.boot_id, now.boottime))
        return self.outbox_row(message_id)  # type: ignore[return-value]

    def _outbox_same_request(self, idempotency_key: str | None, endpoint: str, fingerprint: str,
                             dedupe_window: float | None) -> OutboxRow | None:
        if idempotency_key is not None:
            existing = self.outbox_by_key(idempotency_key)
            if existing is None:
                return None
            first = self.conn.execute("SELECT endpoint, fingerprint FROM outbox_requests WHERE seq = ?",
                                      (existing.seq,)).fetchone()
            if first is not None and fingerprint and first != (endpoint, fingerprint):
                what = f"another endpoint ({first[0]})" if first[0] != endpoint else "a different request body"
                raise IdempotencyConflict(f"Idempotency-Key {idempotency_key!r} was already used for {what} "
                                          f"(message {existing.message_id}); use a new key for a new message",
                                          existing)
            return existing
        if dedupe_window is None or not fingerprint:
            return None
        # "Within the window" on the boot's clock, which a corrected wall clock does not move; a request from
        # another boot (or release) by the wall clock, and only one stamped in the past.
        now = clock.instant()
        since = format_epoch(now.wall - dedupe_window)
        row = self.conn.execute(
            f"SELECT {', '.join('o.' + c.strip() for c in _OUTBOX_COLUMNS.split(','))} FROM outbox_requests r "
            "JOIN outbox o USING (seq) WHERE r.fingerprint = ? AND r.endpoint = ? AND o.idempotency_key IS NULL "
            "AND CASE WHEN r.boot_id = ? THEN r.boottime BETWEEN ? AND ? ELSE r.created_at BETWEEN ? AND ? END "
            "ORDER BY r.seq DESC LIMIT 1",
            (fingerprint, endpoint, now.boot_id or None, now.boottime - dedupe_window, now.boottime, since,
             format_epoch(now.wall))).fetchone()
        return _outbox_row(row) if row else None

    def outbox_attempt(self, row: OutboxRow, step: int = 1) -> int:
        """Count a send attempt before it starts (so a crash during it counts too); returns the count.

        `step=-1` takes back an attempt WhatsApp answered with rate-overlimit: it was not lost."""
        with self.transaction(durable=False) as conn:
            conn.execute("INSERT INTO outbox_requests (seq, endpoint, fingerprint, created_at) VALUES (?, '', '', ?) "
                         "ON CONFLICT (seq) DO NOTHING", (row.seq, row.created_at))
            conn.execute("UPDATE outbox_requests SET attempts = attempts + ? WHERE seq = ?", (step, row.seq))
            return conn.execute("SELECT attempts FROM outbox_requests WHERE seq = ?", (row.seq,)).fetchone()[0]

    def outbox_staged_media(self, row: OutboxRow) -> str | None:
        found = self.conn.execute("SELECT staged_media FROM outbox_requests WHERE seq = ?", (row.seq,)).fetchone()
        return found[0] if found else None

    def outbox_dead_letters(self) -> int:
        """Rows moved aside for good (status failed): health and status show the count."""
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'failed'").fetchone()[0]

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

    def outbox_recent_sent(self, limit: int) -> list[OutboxRow]:
        """The last `limit` rows sent, oldest first: what the pace counts after a restart (bridge/pace.py)."""
        rows = self.conn.execute(f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE status = 'sent' ORDER BY seq DESC "
                                 "LIMIT ?", (limit,)).fetchall()
        return [_outbox_row(row) for row in reversed(rows)]

    def outbox_depth(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]

    def outbox_withdraw(self, rows: Iterable[OutboxRow], reason: str) -> list[OutboxRow]:
        """Take back pending rows: never sent (a superseded fence, or a failover to another account). Returns
        those withdrawn now (a row no longer pending is left as it is)."""
        rows = list(rows)
        seqs = [row.seq for row in rows]
        if not seqs:
            return []
        with self.transaction() as conn:
            done = {seq for (seq,) in conn.execute(
                f"UPDATE outbox SET status = 'withdrawn', error = ? WHERE status = 'pending' AND seq IN "
                f"({', '.join('?' * len(seqs))}) RETURNING seq", (reason, *seqs)).fetchall()}
        return [row for row in rows if row.seq in done]

    def outbox_withdrawn(self, lease: str, up_to_token: int, since: str) -> list[str]:
        """Message ids of the rows of `lease` withdrawn under a token up to `up_to_token`, queued since `since`."""
        return [message_id for (message_id,) in self.conn.execute(
            "SELECT message_id FROM outbox WHERE status = 'withdrawn' AND fence_lease = ? AND fence_token <= ? "
            "AND created_at >= ? ORDER BY seq", (lease, up_to_token, since))]

    def outbox_doubt(self, row: OutboxRow, reason: str) -> bool:
        """A pending row whose answer was lost is in doubt: never sent again by the bridge (bridge/outbox.py). False
        if it was no longer pending."""
        with self.transaction() as conn:
            return conn.execute("UPDATE outbox SET status = 'doubt', error = ? WHERE seq = ? AND status = 'pending'",
                                (reason, row.seq)).rowcount == 1

    def outbox_in_doubt(self, lease: str, since: str) -> list[str]:
        """Message ids of the rows of `lease` in doubt, queued since `since` (the fence word's answer)."""
        return [message_id for (message_id,) in self.conn.execute(
            "SELECT message_id FROM outbox WHERE status = 'doubt' AND fence_lease = ? AND created_at >= ? "
            "ORDER BY seq", (lease, since))]

    def outbox_failed(self, row: OutboxRow, error: str) -> None:
        """Dead-letter a row: it can never be sent (refused, unreadable, failed too often); the rest drain."""
        with self.transaction() as conn:
            conn.execute("UPDATE outbox SET status = 'failed', error = ? WHERE seq = ?", (error, row.seq))
            conn.execute("UPDATE outbox_requests SET dead_at = ? WHERE seq = ?", (now_ts(), row.seq))

