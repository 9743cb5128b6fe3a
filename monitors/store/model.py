"""What the drops store holds, as plain frozen records; the same on SQLite and PostgreSQL.

Times are the bridge store's text format (`bridge.schema.format_ts`) on both
backends, so they compare as text with message times and window bounds.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import NamedTuple

FEEDBACK_NONE = "none"  # no feedback asked for (auto_ack off, no operator feedback yet)
FEEDBACK_PENDING = "pending"  # recorded, not yet accepted by the bridge (retried)
FEEDBACK_SENT = "sent"  # bridge answered 200: delivered to WhatsApp
FEEDBACK_QUEUED = "queued"  # bridge answered 202: in its durable outbox, sent on reconnect
FEEDBACK_FAILED = "failed"  # bridge refused it (400/500): retrying the same request cannot help
# A cluster's send of unknown fate (monitors/fate.py): another host handed it to its bridge and died before marking
# it, and this host could not find out whether it went; an operator decides (`wa-watchdog feedback --resend` or
# `--mark-sent`), never a second send by itself.
FEEDBACK_UNKNOWN = "unknown"
FEEDBACK_ACCEPTED = (FEEDBACK_SENT, FEEDBACK_QUEUED)
FEEDBACK_STATUSES = (FEEDBACK_NONE, FEEDBACK_PENDING, FEEDBACK_SENT, FEEDBACK_QUEUED, FEEDBACK_FAILED, FEEDBACK_UNKNOWN)

# A feedback message's life; a drop's feedback_status is the status of its newest feedback.
FEEDBACK_TRANSITIONS = {
    FEEDBACK_PENDING: {FEEDBACK_PENDING, FEEDBACK_SENT, FEEDBACK_QUEUED, FEEDBACK_FAILED, FEEDBACK_UNKNOWN},
    FEEDBACK_QUEUED: {FEEDBACK_SENT,  # a receipt shows the bridge's outbox sent it (DropsDB.record_receipts)
                      FEEDBACK_PENDING},  # its bridge withdrew it, to send it through another account (failover)
    FEEDBACK_UNKNOWN: {FEEDBACK_SENT, FEEDBACK_PENDING},  # the operator's decision: it went, or send it (again)
}

KIND_ACK = "ack"
KIND_OPERATOR = "operator"

# Receipt kinds as the bridge's receipts table names them -> the feedback column they stamp.
RECEIPT_COLUMNS = {"server_ack": "server_at", "delivered": "delivered_at", "read": "read_at"}

DELIVERY_PENDING = "pending"
DELIVERY_DELIVERED = "delivered"
DELIVERY_DEAD = "dead"


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


class Position(NamedTuple):
    """How far a project has read its account's messages.db, and what was there: a rowid alone is no identity.

    `message_id` and `stored_at` are those of the message at `rowid` when it was read, `store_id` the file's
    (bridge_state); None where unknown (a cursor saved before positions had marks). monitors/lineage.py
    checks them against the file at start.
    """

    rowid: int
    message_id: str | None = None
    stored_at: str | None = None
    store_id: str | None = None


@dataclass(frozen=True)
class Drop:
    id: int
    public_id: str  # stable UUID for the web app
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
        return {k: v for k, v in asdict(self).items() if k != "id"}


@dataclass(frozen=True)
class DropEvent:
    """One submission of a drop: the first (`submitted`) or a later one (`resubmitted`)."""

    kind: str
    group_jid: str
    submitted_by: str
    message_id: str
    message_time: str
    detected_at: str
    backfilled: bool

    def as_json(self) -> dict:
        return asdict(self)


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
    bridge_message_id: str | None
    server_at: str | None  # receipts from WhatsApp for the sent message
    delivered_at: str | None
    read_at: str | None
    carrier_id: int | None = None  # coalesced: the feedback row whose WhatsApp message carried this one

    def as_json(self) -> dict:
        return {**asdict(self), "mentions": list(self.mentions)}


@dataclass(frozen=True)
class DropDetail:
    drop: Drop
    submissions: list[DropEvent]
    feedback: list[Feedback]

    def as_json(self) -> dict:
        return {**self.drop.as_json(), "submissions": [s.as_json() for s in self.submissions],
                "feedback": [f.as_json() for f in self.feedback]}


@dataclass(frozen=True)
class DropPage:
    drops: list[Drop]
    next_cursor: str | None  # None: this was the last page


@dataclass(frozen=True)
class OutboxEvent:
    """An event due for delivery to one webhook; `payload` is the JSON body to send, as stored."""

    seq: int
    id: str  # the webhook-id: stable across retries, receivers de-duplicate on it
    type: str
    created_at: str
    payload: str
    attempts: int

    @property
    def data(self) -> dict:
        return json.loads(self.payload)


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    dead: int
    delivered: int
    oldest_pending_at: str | None


def drop_from_row(row: tuple) -> Drop:
    values = list(row)
    values[10] = bool(values[10])
    return Drop(*values)


def feedback_from_row(row: tuple) -> Feedback:
    values = list(row)
    values[6] = tuple(json.loads(values[6]))
    return Feedback(*values)


def event_from_row(row: tuple) -> DropEvent:
    values = list(row)
    values[6] = bool(values[6])
    return DropEvent(*values)


def check_feedback_transition(old: str, new: str) -> None:
    if new not in FEEDBACK_TRANSITIONS.get(old, set()):
        raise ValueError(f"feedback status cannot go from {old!r} to {new!r}")
