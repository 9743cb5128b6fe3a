"""Receipts of sent feedback (server ack, delivered, read) stamped on the rows their message carried, with their
webhook events. A part of DropsDB (monitors/drops_store.py)."""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import NamedTuple, TypeVar

from bridge.schema import bare_user
from monitors.events import FEEDBACK_DELIVERED_EVENT, FEEDBACK_READ_EVENT
from monitors.store.feedback_state import feedback_event, sync_drop_feedback
from monitors.store.model import FEEDBACK_QUEUED, FEEDBACK_SENT, RECEIPT_COLUMNS, drop_from_row, feedback_from_row
from monitors.store.queries import DROP_COLUMNS, FEEDBACK_COLUMNS
from monitors.store.sql import Backend, Tx

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


class ReceiptStamping:
    db: Backend

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
                    feedback_event(tx, self.db.dialect, event_type, drops[drops_of[fid]], rows[fid])
        return set(feedback), sum(len(ids) for ids in changed.values())

    def _settle_queued(self, tx: Tx, ids: list[int]) -> None:
        """Queued feedback (the bridge answered 202) that a receipt shows went out is sent: its final state. A
        reaction never gets delivered/read receipts, so its server ack is the last word on it and nothing
        may wait for more. (feedback.sent was enqueued when the bridge accepted it.)"""
        for chunk in _chunks(ids):
            settled = tx.rows(f"UPDATE feedback SET status = ? WHERE status = ? AND id IN ({', '.join('?' * len(chunk))}) "
                              "RETURNING drop_id", (FEEDBACK_SENT, FEEDBACK_QUEUED, *chunk))
            for drop_id in sorted({row[0] for row in settled}):
                sync_drop_feedback(tx, drop_id)

    def _stamp(self, tx: Tx, column: str, by_id: dict[int, str]) -> set[int]:
        """Set `column` where it is still empty, one statement for the batch; the ids it changed."""
        types = self.db.dialect.types
        row = f"SELECT CAST(? AS {types['int']}) AS id, CAST(? AS {types['ts']}) AS at"  # typed: PostgreSQL
        values = " UNION ALL ".join([row] * len(by_id))
        params = [value for pair in by_id.items() for value in pair]
        return {found[0] for found in tx.rows(
            f"UPDATE feedback SET {column} = v.at FROM ({values}) AS v "
            f"WHERE feedback.id = v.id AND feedback.{column} IS NULL RETURNING feedback.id", params)}
