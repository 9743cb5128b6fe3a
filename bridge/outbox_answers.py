"""What the outbox answers and how it recognises a send: message ids derived from Idempotency-Keys, the
fingerprint of a request, the HTTP answer for a row, and what the pace needs of one (bridge/outbox.py)."""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta

from bridge.fence import SendFence
from bridge.media import StagedMedia
from bridge.pace import Queued
from bridge.sending import SendRequest, refusal_status
from bridge.outbox_store import OutboxRow
from watchdog.shared import clock


def new_message_id(own_jid: str, idempotency_key: str | None) -> str:
    """A WhatsApp-style message id (`3EB0` + 18 hex digits, as whatsmeow generates): random, or, for a request
    with an Idempotency-Key, derived from the key and the sending account. So a client's retry is the same
    WhatsApp message (deduped by id) even where the outbox no longer knows the key: messages.db put back from
    a backup taken before the first send, a monitor posting again the feedback whose answer a stop cut off, and
    in a cluster the host that takes over sending posting a feedback its predecessor may already have sent
    (issue 21: the same account, so the same id where the transport lets the sender choose it)."""
    if idempotency_key is None:
        return "3EB0" + secrets.token_hex(9).upper()
    return "3EB0" + hashlib.sha256(f"{own_jid}\n{idempotency_key}".encode()).hexdigest()[:18].upper()


def fingerprint(endpoint: str, request: SendRequest, media: StagedMedia | None) -> str:
    """What makes two requests the same send: where they went, to whom, what (media by content, a quote or a
    reaction: appended only when there is one, so a plain send's fingerprint is what it always was). Not its
    priority, which says when, not what: a monitor re-posting, with operator priority, feedback it first posted
    without (an upgrade in between) is the same send, not a conflict."""
    key = [endpoint, request.recipient_jid, request.text, list(request.mentioned_jids), media.sha256 if media else None]
    if context := {k: v for k, v in (request.context or {}).items() if k != "priority"}:
        key.append(context)
    return hashlib.sha256(json.dumps(key, ensure_ascii=True).encode()).hexdigest()


def reply(row: OutboxRow, paused: str = "", position: int | None = None, in_s: float | None = None) -> tuple[int, dict]:
    """The HTTP answer for an outbox row: 200 sent, 202 queued (`paused`: why sending waits; `position` and
    `in_s`: its place in the paced queue and when it is expected out; else not connected); 409 withdrawn (never
    sent) or in doubt (its answer was lost: never sent again here, its sender finds out); never to be sent:
    404 unknown group, 403 not a member of it, else 422 (refused, dead-lettered).

    422, not 500: the bridge is fine; this message cannot be delivered as asked, and repeating it will not help.
    """
    if row.status == "sent":
        return 200, {"success": True, "message": f"Message sent to {row.recipient}", "id": row.message_id}
    if row.status == "doubt":
        return 409, {"success": False, "doubt": True, "id": row.message_id,
                     "message": f"In doubt, not sent again: {row.error}"}
    if row.status == "withdrawn":
        return 409, {"success": False, "withdrawn": True, "id": row.message_id,
                     "message": f"Withdrawn, not sent: {row.error}"}
    if row.status == "pending":
        if paused:
            why = f"Sending paused ({paused}): queued for {row.recipient}, sent when the pause ends"
        elif position is None and row.fence is not None:
            why = (f"Queued for {row.recipient}: waits until its sender lease ({row.fence.lease}, token "
                   f"{row.fence.token}) is known to be valid")
        elif position is not None:
            why = f"Paced: queued for {row.recipient} at position {position}, expected out in {in_s or 0:.0f} s"
        else:
            why = f"Not connected to WhatsApp: queued for {row.recipient}, sent on reconnect"
        body = {"success": True, "queued": True, "id": row.message_id, "message": why}
        if position is not None:
            body["position"] = position
            body["expected_at"] = wall(in_s or 0.0)
        return 202, body
    return refusal_status(row.error or ""), {"success": False, "id": row.message_id,
                                             "message": f"Error sending message: {row.error}"}


def wall(in_s: float) -> str:
    """A moment `in_s` seconds from now, for people (UTC, ISO 8601)."""
    return (clock.now() + timedelta(seconds=max(0.0, in_s))).isoformat(timespec="seconds")


def queued(row: OutboxRow) -> Queued:
    """What the pace needs of a row."""
    context = row.context or {}
    return Queued(row.seq, row.recipient_jid, str(context.get("priority", "")), "reaction" in context, len(row.text))


def superseded_reason(fence: SendFence) -> str:
    return f"its sender lease {fence.lease} (token {fence.token}) is no longer valid"
