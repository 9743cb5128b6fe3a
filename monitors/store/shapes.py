"""The JSON the web app sees of a drop and its feedback: one shape for the REST answers and the webhook payloads.

Times are RFC 3339 (`2026-11-24T22:31:27.123456+00:00`), what `new Date()` and
`datetime.fromisoformat` parse, in both: the store's text format differs only
by the space where RFC 3339 has a `T`. watchdog/openapi/drops-api.json describes
these shapes (`Drop`, `Feedback`, and the webhook events that carry them).
"""
from __future__ import annotations

from monitors.store.model import Drop, DropEvent, Feedback


def rfc3339(text: str | None) -> str | None:
    """Store text (`2026-11-24 22:31:27.123456+00:00`, fixed width, always UTC) as RFC 3339 with a `T`.

    A string edit rather than parse-and-format: a page of 100 drops has 300 of them.
    """
    return f"{text[:10]}T{text[11:]}" if text else None


def drop_json(drop: Drop) -> dict:
    return {"id": drop.public_id, "project": drop.project, "drop_number": drop.drop_number,
            "group_jid": drop.group_jid, "group_name": drop.group_name, "submitted_by": drop.submitted_by,
            "message_id": drop.message_id, "message_time": rfc3339(drop.message_time),
            "detected_at": rfc3339(drop.detected_at), "backfilled": drop.backfilled,
            "feedback_status": drop.feedback_status, "feedback_sent_at": rfc3339(drop.feedback_sent_at)}


def feedback_json(feedback: Feedback) -> dict:
    return {"id": feedback.id, "kind": feedback.kind, "status": feedback.status, "text": feedback.text,
            "recipient": feedback.recipient, "mentions": list(feedback.mentions),
            "bridge_message_id": feedback.bridge_message_id, "created_at": rfc3339(feedback.created_at),
            "sent_at": rfc3339(feedback.sent_at), "server_at": rfc3339(feedback.server_at),
            "delivered_at": rfc3339(feedback.delivered_at), "read_at": rfc3339(feedback.read_at),
            "attempts": feedback.attempts, "error": feedback.error}


def submission_json(event: DropEvent) -> dict:
    return {"kind": event.kind, "group_jid": event.group_jid, "submitted_by": event.submitted_by,
            "message_id": event.message_id, "message_time": rfc3339(event.message_time),
            "detected_at": rfc3339(event.detected_at), "backfilled": event.backfilled}
