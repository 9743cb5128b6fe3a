"""Read queries the drops API serves: pages of drops newest first, one drop with its history.

Paging is by keyset on (message_time, id), the order of the `drops_newest`
and `drops_project_newest` indexes, so page 1,000 costs what page 1 does.
The cursor is opaque to callers (base64 of the last row's key).
"""
from __future__ import annotations

import base64
import binascii
import json
import uuid

from monitors.store.model import (Drop, DropDetail, DropPage, FEEDBACK_STATUSES, drop_from_row, event_from_row,
                                  feedback_from_row)
from monitors.store.sql import Backend

DROP_COLUMNS = ("d.id, d.public_id, d.project, d.drop_number, d.group_jid, d.group_name, d.submitted_by, "
                "d.message_id, d.message_time, d.detected_at, d.backfilled, d.feedback_status, d.feedback_sent_at")
FEEDBACK_COLUMNS = ("f.id, d.project, d.drop_number, f.kind, f.recipient, f.text, f.mentions, f.idempotency_key, "
                    "f.status, f.created_at, f.sent_at, f.attempts, f.error, f.bridge_message_id, f.server_at, "
                    "f.delivered_at, f.read_at, f.carrier_id")
EVENT_COLUMNS = "kind, group_jid, submitted_by, message_id, message_time, detected_at, backfilled"
MAX_LIMIT = 1000


def encode_cursor(drop: Drop) -> str:
    return base64.urlsafe_b64encode(json.dumps([drop.message_time, drop.id]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, int]:
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        message_time, drop_id = raw
        # what the stores can bind (else a 500): SQLite raises OverflowError past 64 bits and cannot encode a lone
        # surrogate, PostgreSQL refuses a NUL; a store time is printable ASCII
        if (not isinstance(message_time, str) or not (message_time.isascii() and message_time.isprintable())
                or type(drop_id) is not int or not 0 <= drop_id < 2**63):
            raise ValueError
    except (ValueError, TypeError, RecursionError, binascii.Error):
        raise ValueError(f"cursor: {cursor[:40]!r} is not a cursor this API returned") from None
    return message_time, drop_id


class DropQueries:
    """Mixed into DropsDB: reads that need nothing but its backend."""

    db: Backend

    def list_drops(self, project: str | None = None, since: str | None = None, until: str | None = None,
                   backfilled: bool | None = None, feedback: str | None = None, limit: int = 100,
                   cursor: str | None = None, drop_number: str | None = None) -> DropPage:
        """Drops newest first (message time): since inclusive, until exclusive. Raises ValueError naming a bad filter."""
        if not 1 <= limit <= MAX_LIMIT:
            raise ValueError(f"limit: must be 1..{MAX_LIMIT}, got {limit}")
        if feedback is not None and feedback not in FEEDBACK_STATUSES:
            raise ValueError(f"feedback: must be one of {', '.join(FEEDBACK_STATUSES)}, got {feedback!r}")
        where, params = [], []
        for clause, value in (("d.project = ?", project), ("d.drop_number = ?", drop_number),
                              ("d.message_time >= ?", since), ("d.message_time < ?", until),
                              ("d.backfilled = ?", backfilled), ("d.feedback_status = ?", feedback)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if cursor is not None:
            where.append("(d.message_time, d.id) < (?, ?)")
            params.extend(decode_cursor(cursor))
        sql = f"SELECT {DROP_COLUMNS} FROM drops d"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.rows(sql + " ORDER BY d.message_time DESC, d.id DESC LIMIT ?", (*params, limit + 1))
        drops = [drop_from_row(row) for row in rows[:limit]]
        return DropPage(drops, encode_cursor(drops[-1]) if len(rows) > limit else None)

    def drop_by_public_id(self, public_id: str) -> DropDetail | None:
        """One drop with its submissions and feedback history, oldest first; None if unknown (or not a UUID)."""
        try:
            public_id = str(uuid.UUID(public_id))
        except (ValueError, TypeError, AttributeError):
            return None
        rows = self.db.rows(f"SELECT {DROP_COLUMNS} FROM drops d WHERE d.public_id = ?", (public_id,))
        if not rows:
            return None
        drop = drop_from_row(rows[0])
        events = self.db.rows(f"SELECT {EVENT_COLUMNS} FROM drop_events WHERE drop_id = ? ORDER BY id", (drop.id,))
        return DropDetail(drop, [event_from_row(r) for r in events], self.feedback_of(drop))

    def feedback_of(self, drop: Drop) -> list:
        rows = self.db.rows(f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id "
                            "WHERE f.drop_id = ? ORDER BY f.id", (drop.id,))
        return [feedback_from_row(row) for row in rows]
