"""What every change of a feedback row also writes: the drop's summary of its feedback, and the row's webhook event."""
from __future__ import annotations

from monitors.store.model import Drop, Feedback
from monitors.store.outbox import enqueue
from monitors.store.shapes import drop_json, feedback_json
from monitors.store.sql import Dialect, Tx


def feedback_event(tx: Tx, dialect: Dialect, event_type: str, drop: Drop, feedback: Feedback) -> None:
    """One event per outcome of a feedback row (its status): the same outcome reported again, after the row was
    given back and queued again, is the same event (outbox.enqueue)."""
    enqueue(tx, dialect, event_type, {"drop": drop_json(drop), "feedback": feedback_json(feedback)},
            f"{drop.public_id}/{feedback.idempotency_key}/{feedback.status}")


def sync_drop_feedback(tx: Tx, drop_id: int) -> None:
    """The drop shows its newest feedback's status and the last time the bridge accepted any."""
    tx.run("UPDATE drops SET "
           "feedback_status = (SELECT status FROM feedback WHERE drop_id = ? ORDER BY id DESC LIMIT 1), "
           "feedback_sent_at = (SELECT MAX(sent_at) FROM feedback WHERE drop_id = ?) WHERE id = ?",
           (drop_id, drop_id, drop_id))
