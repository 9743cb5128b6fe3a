"""The webhook event types: what the drops store records (the `events.type` column) and drops-api delivers.

`WEBHOOK_EVENTS` is the one list of them, what a `[[webhooks]] events` may name (monitors/config.py);
tests/watchdog/test_api_contracts.py holds the events the store writes, the schema's CHECK and the OpenAPI
document's `webhooks` to it. Kept free of imports: every process loads the configuration.
"""
from __future__ import annotations

DROP_RECORDED = "drop.recorded"
DROP_BACKFILLED = "drop.backfilled"
DROP_RESUBMITTED = "drop.resubmitted"
FEEDBACK_SENT_EVENT = "feedback.sent"
FEEDBACK_FAILED_EVENT = "feedback.failed"
FEEDBACK_DELIVERED_EVENT = "feedback.delivered"
FEEDBACK_READ_EVENT = "feedback.read"
WEBHOOK_EVENTS = (DROP_RECORDED, DROP_BACKFILLED, DROP_RESUBMITTED, FEEDBACK_SENT_EVENT, FEEDBACK_DELIVERED_EVENT,
                  FEEDBACK_READ_EVENT, FEEDBACK_FAILED_EVENT)
