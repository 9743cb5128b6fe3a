"""The webhook outbox: events written in the same transaction as the change they report, then delivered.

`enqueue(tx, dialect, type, data, identity)` is called by the store's writers inside their own
transaction, so an event exists exactly when its change committed; its id is derived from what it
reports, so the same outcome reported again is the same event, written once. Delivery
state is per webhook: `webhook_cursors` says how far a webhook has pulled
the event stream, `deliveries` holds one row per (webhook, event) it wants,
pending until delivered or dead. The deliverer (drops-api) first calls
`start` for each webhook: one new to the store starts after the newest event
(a receiver added to a running system is not sent its whole history) or,
asked to, before the oldest; one the store knows keeps its place. It then calls
`due`, then `delivered`, `failed` (with the next attempt's time, its own
backoff) or `dead`; `next_retry` says when to look again.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Sequence

from bridge.schema import now_ts
from monitors.store.fence import FENCE, Fence
from monitors.store.model import DELIVERY_DEAD, DELIVERY_DELIVERED, DELIVERY_PENDING, OutboxCounts, OutboxEvent
from monitors.store.shapes import rfc3339
from monitors.store.sql import Backend, Dialect, Tx, one

PULL_BATCH = 1000  # events moved into a webhook's deliveries per `due` call
EVENT_IDS = uuid.UUID("9d478795-15db-49a9-a772-0962935e951e")  # the namespace of derived event ids (uuid5)


def enqueue(tx: Tx, dialect: Dialect, event_type: str, data: dict, identity: str) -> str:
    """Add an event in the caller's transaction, as its last statements (`Tx.at_commit`); returns its id.

    `identity` is what the event reports (a drop's public id; a feedback row's drop, key and status): its id is
    derived from it, and an event already written under that id stands (the insert does nothing). Feedback a
    bridge queued, gave back (a lease taken over, a failover, a rejoin) and queued again is one feedback.sent,
    not one per pass: receivers de-duplicate on the id, and the web app saw the same outcome twice under two.

    Its last statements, because on PostgreSQL the event lock (events commit in `seq` order) is held from its statement to
    COMMIT: taken at the end, every writer holds it for its final statements and the commit only, never
    across the transaction's round trips to the client (six monitors had queued behind each other's
    whole transactions: post -> committed p99 ~150 ms on a quiet machine).
    """
    if dialect.event_lock:
        tx.at_commit(dialect.event_lock)
    # Never before the previous event, even after the wall clock was stepped back: receivers order by it.
    last = tx.rows("SELECT created_at FROM events ORDER BY seq DESC LIMIT 1")
    created_at = max(now_ts(), last[0][0] if last else "")
    payload = json.dumps({"type": event_type, "timestamp": rfc3339(created_at), "data": data}, separators=(",", ":"))
    event_id = str(uuid.uuid5(EVENT_IDS, f"{event_type}/{identity}"))
    tx.at_commit("INSERT INTO events (id, type, created_at, payload) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                 (event_id, event_type, created_at, payload))
    if dialect.event_notify:
        tx.at_commit(dialect.event_notify)
    return event_id


def outbox_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema's outbox: two installs on one database do not wake each other.

    Channel names are identifiers (at most 63 bytes): a schema name too long for the suffix keeps a hash of itself.
    """
    channel = f"{schema}_outbox"
    return channel if len(channel) <= 63 else f"{schema[:42]}_{hashlib.sha1(schema.encode()).hexdigest()[:13]}_outbox"


def _types_clause(types: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """`AND type IN (?, ...)`; no types = every type."""
    if not types:
        return "", ()
    return f" AND type IN ({', '.join('?' * len(types))})", tuple(types)


class WebhookOutbox:
    def __init__(self, db: Backend) -> None:
        self.db = db

    def _pull(self, tx: Tx, webhook: str, types: Sequence[str], now: str) -> None:
        """Move events past the webhook's cursor into its deliveries (the ones of its types), due `now` on the
        deliverer's clock (not at their created_at, another process's, which may be ahead of it)."""
        row = one(tx.rows("SELECT seq FROM webhook_cursors WHERE webhook = ?", (webhook,)))
        cursor = row[0] if row else 0
        upto = tx.rows("SELECT MAX(seq) FROM (SELECT seq FROM events WHERE seq > ? ORDER BY seq LIMIT ?) s",
                       (cursor, PULL_BATCH))[0][0]
        if upto is None:
            return
        clause, params = _types_clause(types)
        tx.run("INSERT INTO deliveries (webhook, event_seq, status, attempts, next_attempt_at, last_error, updated_at) "
               f"SELECT ?, seq, 'pending', 0, ?, '', ? FROM events WHERE seq > ? AND seq <= ?{clause} "
               "ON CONFLICT (webhook, event_seq) DO NOTHING", (webhook, now, now, cursor, upto, *params))
        tx.run("INSERT INTO webhook_cursors (webhook, seq, updated_at) VALUES (?, ?, ?) ON CONFLICT (webhook) "
               "DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at", (webhook, upto, now))

    def start(self, webhook: str, start_at: str = "now") -> None:
        """Give a webhook new to the store its place: after the newest event ("now") or before the oldest ("oldest").

        A webhook the store already knows keeps its place, whatever `start_at` says now (a restart, an edit).
        """
        first = "(SELECT COALESCE(MAX(seq), 0) FROM events)" if start_at == "now" else "0"
        with self.db.transaction() as tx:
            tx.run(f"INSERT INTO webhook_cursors (webhook, seq, updated_at) VALUES (?, {first}, ?) "
                   "ON CONFLICT (webhook) DO NOTHING", (webhook, now_ts()))

    def due(self, webhook: str, types: Sequence[str] = (), now: str | None = None,
            limit: int = 100) -> list[OutboxEvent]:
        """Events to send to `webhook` now (next attempt due), oldest due first.

        A look that finds nothing is one read: the deliverer looks on every change of the store, and a write
        transaction each time took drops.db's write lock from the monitors (on PostgreSQL: four round trips).
        """
        now = now or now_ts()
        if not self._anything_due(webhook, now):
            return []
        with self.db.transaction() as tx:
            self._pull(tx, webhook, types, now)
            rows = tx.rows("SELECT e.seq, e.id, e.type, e.created_at, e.payload, d.attempts FROM deliveries d "
                           "JOIN events e ON e.seq = d.event_seq WHERE d.webhook = ? AND d.status = ? "
                           "AND d.next_attempt_at <= ? ORDER BY d.next_attempt_at, d.event_seq LIMIT ?",
                           (webhook, DELIVERY_PENDING, now, limit))
        return [OutboxEvent(*row) for row in rows]

    def next_retry(self, webhook: str, after: str) -> str | None:
        """When the first delivery not due yet at `after` falls due (a retry's backoff): no write wakes for it."""
        return self.db.rows("SELECT MIN(next_attempt_at) FROM deliveries WHERE webhook = ? AND status = ? "
                            "AND next_attempt_at > ?", (webhook, DELIVERY_PENDING, after))[0][0]

    def reschedule(self, webhook: str, now: str, later_than: str) -> int:
        """Make deliveries whose next attempt lies after `later_than` due `now`; returns how many.

        The deliverer's backoff never schedules an attempt further ahead than its longest wait, so one that is
        was scheduled on a wall clock since stepped back (NTP, a VM restored): without this it would wait for as
        long as the step."""
        with self.db.transaction() as tx:
            found = tx.rows("SELECT COUNT(*) FROM deliveries WHERE webhook = ? AND status = ? AND next_attempt_at > ?",
                            (webhook, DELIVERY_PENDING, later_than))[0][0]
            if found:
                tx.run("UPDATE deliveries SET next_attempt_at = ? WHERE webhook = ? AND status = ? "
                       "AND next_attempt_at > ?", (now, webhook, DELIVERY_PENDING, later_than))
        return found

    def _anything_due(self, webhook: str, now: str) -> bool:
        """Events past the webhook's cursor (of any type: pulling moves the cursor past the others), or a retry due."""
        new, retry = self.db.rows(
            "SELECT (SELECT MAX(seq) FROM events) > COALESCE((SELECT seq FROM webhook_cursors WHERE webhook = ?), 0), "
            "EXISTS (SELECT 1 FROM deliveries WHERE webhook = ? AND status = ? AND next_attempt_at <= ?)",
            (webhook, webhook, DELIVERY_PENDING, now))[0]
        return bool(new or retry)

    def _finish(self, webhook: str, seq: int, status: str, error: str, next_attempt_at: str | None,
                fence: Fence | None) -> None:
        """Record an attempt; with a `fence` (a cluster) only while that grant is current (else nothing)."""
        fenced, params = ("", ()) if fence is None else (f" AND {FENCE}", fence.params)
        with self.db.transaction() as tx:
            tx.run("UPDATE deliveries SET status = ?, attempts = attempts + 1, last_error = ?, "
                   "next_attempt_at = COALESCE(?, next_attempt_at), updated_at = ? "
                   f"WHERE webhook = ? AND event_seq = ? AND status = ?{fenced}",
                   (status, error, next_attempt_at, now_ts(), webhook, seq, DELIVERY_PENDING, *params))

    def delivered(self, webhook: str, seq: int, fence: Fence | None = None) -> None:
        self._finish(webhook, seq, DELIVERY_DELIVERED, "", None, fence)

    def failed(self, webhook: str, seq: int, error: str, next_attempt_at: str, fence: Fence | None = None) -> None:
        """An attempt failed; try again at `next_attempt_at` (the deliverer's backoff with jitter)."""
        self._finish(webhook, seq, DELIVERY_PENDING, error, next_attempt_at, fence)

    def dead(self, webhook: str, seq: int, error: str, fence: Fence | None = None) -> None:
        """Give up on this event for this webhook (attempts used up, or a final 4xx)."""
        self._finish(webhook, seq, DELIVERY_DEAD, error, None, fence)

    def counts(self, webhook: str, types: Sequence[str] = ()) -> OutboxCounts:
        """For status and /metrics: pending includes events not pulled into deliveries yet."""
        by_status = dict(self.db.rows("SELECT status, COUNT(*) FROM deliveries WHERE webhook = ? GROUP BY status",
                                      (webhook,)))
        row = one(self.db.rows("SELECT seq FROM webhook_cursors WHERE webhook = ?", (webhook,)))
        clause, params = _types_clause(types)
        unpulled, oldest_new = self.db.rows(f"SELECT COUNT(*), MIN(created_at) FROM events WHERE seq > ?{clause}",
                                            (row[0] if row else 0, *params))[0]
        oldest_due = self.db.rows("SELECT MIN(e.created_at) FROM deliveries d JOIN events e ON e.seq = d.event_seq "
                                  "WHERE d.webhook = ? AND d.status = ?", (webhook, DELIVERY_PENDING))[0][0]
        oldest = min((t for t in (oldest_due, oldest_new) if t is not None), default=None)
        return OutboxCounts(by_status.get(DELIVERY_PENDING, 0) + unpulled, by_status.get(DELIVERY_DEAD, 0),
                            by_status.get(DELIVERY_DELIVERED, 0), oldest)


class FencedOutbox:
    """The outbox as a cluster's webhook deliverer uses it: it delivers only while its host holds the webhooks
    lease (`held`, monitors/lease_keeper.py) and records attempts under that grant's token. A deliverer that
    was paused records nothing after a takeover; the new holder delivers those events again (at least once,
    receivers dedupe on the webhook-id). Otherwise the Deliverer's WebhookOutbox protocol, unchanged."""

    def __init__(self, outbox: WebhookOutbox, held: Callable[[], Fence | None]) -> None:
        self.outbox = outbox
        self.held = held

    def start(self, webhook: str, start_at: str = "now") -> None:
        self.outbox.start(webhook, start_at)

    def due(self, webhook: str, types: Sequence[str] = (), now: str | None = None,
            limit: int = 100) -> list[OutboxEvent]:
        return self.outbox.due(webhook, types, now, limit) if self.held() else []

    def next_retry(self, webhook: str, after: str) -> str | None:
        return self.outbox.next_retry(webhook, after)

    def reschedule(self, webhook: str, now: str, later_than: str) -> int:
        return self.outbox.reschedule(webhook, now, later_than) if self.held() else 0

    def delivered(self, webhook: str, seq: int) -> None:
        if fence := self.held():
            self.outbox.delivered(webhook, seq, fence)

    def failed(self, webhook: str, seq: int, error: str, next_attempt_at: str) -> None:
        if fence := self.held():
            self.outbox.failed(webhook, seq, error, next_attempt_at, fence)

    def dead(self, webhook: str, seq: int, error: str) -> None:
        if fence := self.held():
            self.outbox.dead(webhook, seq, error, fence)
