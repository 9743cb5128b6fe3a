"""Webhook events and receipts in the drops store, on drops.db and on PostgreSQL: each change once, in its own
transaction, delivered per webhook with retries and dead letters."""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from bridge.schema import format_ts
from monitors.drops_store import (FEEDBACK_FAILED, FEEDBACK_QUEUED, FEEDBACK_SENT, DropsDB, NewFeedback, ReceiptStamp,
                                  Submission, drops_db_path, open_drops_store)
from monitors.feedback import coalesced
from monitors.store.outbox import outbox_channel
from monitors.store.rejoin import rejoin
from monitors.store.shapes import rfc3339
from tests.conftest import BASE_CONFIG, GROUP_A
from watchdog.components import load

CONTRACTOR = "27710000001@s.whatsapp.net"
OTHER = "27710000002@s.whatsapp.net"
T0 = datetime(2026, 11, 24, 8, 0, 0, tzinfo=timezone.utc)


def at(seconds: float) -> str:
    return format_ts(T0 + timedelta(seconds=seconds))


def sub(number: str, message_id: str, backfilled: bool = False, by: str = CONTRACTOR, seconds: float = 0) -> Submission:
    return Submission(number, GROUP_A, "Lawley Fibre", by, message_id, at(seconds), backfilled)


def ack(s: Submission) -> NewFeedback:
    return NewFeedback("ack", s.group_jid, f"@27710000001 {s.drop_number} received", (s.submitted_by,),
                       f"key-{s.drop_number}-{s.message_id}")


@pytest.fixture(autouse=True)
def at_t0(fixed_clock: Callable[[datetime], None]) -> None:
    """The store stamps events at T0, the times these tests compare them with."""
    fixed_clock(T0)


@pytest.fixture
def drops(write_config, drops_backend: str) -> Iterator[DropsDB]:  # noqa: ANN001
    store = open_drops_store(load(write_config(BASE_CONFIG + drops_backend)))
    yield store
    store.close()


def types(drops: DropsDB, webhook: str = "all") -> list[str]:
    return [e.type for e in drops.outbox.due(webhook, limit=1000, now=at(10**6))]


@pytest.mark.slow
def test_every_change_enqueues_its_event_once(drops: DropsDB) -> None:
    batch = [sub("DR1000001", "M1"), sub("DR1000002", "M2", backfilled=True), sub("DR1000001", "M3", by=OTHER)]
    new = drops.record("lawley", "main", 3, batch, ack)
    drops.record("lawley", "main", 3, batch, ack)  # replayed (a lost commit answer, a restored cursor)
    assert [d.drop_number for d in new] == ["DR1000001", "DR1000002"]
    events = drops.outbox.due("all", now=at(10**6))
    assert [e.type for e in events] == ["drop.recorded", "drop.backfilled", "drop.resubmitted"]
    recorded = events[0].data
    # RFC 3339 times, as the REST API answers them (the store's own text has a space for the T)
    assert recorded["type"] == "drop.recorded" and recorded["timestamp"] == rfc3339(events[0].created_at)
    assert recorded["data"]["drop"] == {
        "id": new[0].public_id, "project": "lawley", "drop_number": "DR1000001", "group_jid": GROUP_A,
        "group_name": "Lawley Fibre", "submitted_by": CONTRACTOR, "message_id": "M1", "message_time": rfc3339(at(0)),
        "detected_at": rfc3339(new[0].detected_at), "backfilled": False, "feedback_status": "pending",
        "feedback_sent_at": None}
    assert events[2].data["data"]["submission"] == {"message_id": "M3", "submitted_by": OTHER,
                                                    "message_time": rfc3339(at(0)), "backfilled": False}
    assert len({e.id for e in events}) == 3

    first, second = drops.pending_feedback("lawley")
    drops.finish_feedback(first, "pending", "bridge down")  # another attempt: no event
    sent = drops.finish_feedback(first, FEEDBACK_SENT, bridge_message_id="3EB0A1")
    drops.finish_feedback(first, FEEDBACK_SENT, bridge_message_id="3EB0A1")  # a second answer: the first stands
    drops.finish_feedback(second, FEEDBACK_FAILED, "HTTP 400: not a group")
    assert types(drops)[3:] == ["feedback.sent", "feedback.failed"]
    feedback_event = json.loads(drops.outbox.due("all", now=at(10**6))[3].payload)["data"]
    assert feedback_event["feedback"]["status"] == "sent" and feedback_event["feedback"]["id"] == sent.id
    assert feedback_event["drop"]["feedback_status"] == "sent"


def sent_events(drops: DropsDB) -> list[tuple[str, int, str, str]]:
    """Every feedback.sent in the outbox, oldest first: (webhook-id, feedback id, its status, its message id)."""
    return [(e.id, f["id"], f["status"], f["bridge_message_id"]) for e in drops.outbox.due("all", limit=1000, now=at(10**6))
            if e.type == "feedback.sent" for f in [e.data["data"]["feedback"]]]


def test_feedback_queued_again_after_a_give_back_is_one_event_under_one_id(drops: DropsDB) -> None:
    """Issue 21: a row a bridge accepted (202), gave back (a failover's withdrawal, a superseded token's give-back)
    and that was accepted again is the same outcome: one feedback.sent, one webhook-id, the first report standing.
    Sent, after one more give-back, is another outcome: its own event."""
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], ack)
    (row,) = drops.pending_feedback("lawley")
    queued = drops.finish_feedback(row, FEEDBACK_QUEUED, bridge_message_id="3EB0A1")
    assert drops.requeue_feedback([queued]) == [row.id]  # a failover: its bridge withdrew it, never sent
    drops.finish_feedback(drops.feedback(row.id), FEEDBACK_QUEUED, bridge_message_id="3EB0A2")
    with drops.db.transaction() as tx:  # claimed under token 3, as a cluster's holder claims it (claim_feedback)
        tx.run("UPDATE feedback SET claim_token = 3 WHERE id = ?", (row.id,))
    assert drops.give_back(["3EB0A2"], 3) == [row.id]  # token 3 superseded: its bridge gave it back
    drops.finish_feedback(drops.feedback(row.id), FEEDBACK_QUEUED, bridge_message_id="3EB0A3")
    (first,) = sent_events(drops)
    assert first[1:] == (row.id, "queued", "3EB0A1")
    assert drops.requeue_feedback([drops.feedback(row.id)]) == [row.id]
    drops.finish_feedback(drops.feedback(row.id), FEEDBACK_SENT, bridge_message_id="3EB0A4")  # through another number
    again, sent = sent_events(drops)
    assert again == first and sent[1:] == (row.id, "sent", "3EB0A4") and sent[0] != first[0]
    assert types(drops) == ["drop.recorded", "feedback.sent", "feedback.sent"]


def test_a_queued_ack_joined_into_a_later_message_is_one_event_per_row(drops: DropsDB) -> None:
    """Coalescing while waiting (monitors/store/rejoin.py): the queued acknowledgement is withdrawn, joins the one
    falling due, and the message carrying both is queued: the first row's feedback.sent is not written twice."""
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], ack)
    (row,) = drops.pending_feedback("lawley")
    queued = drops.finish_feedback(row, FEEDBACK_QUEUED, bridge_message_id="3EB0A1")
    drops.record("lawley", "main", 2, [sub("DR1000002", "M2", seconds=30)], ack)
    (later,) = drops.pending_feedback("lawley")
    joined = rejoin(drops, [queued], [later])
    assert [r.id for r in joined] == [row.id, later.id]
    for carried in joined:
        drops.finish_feedback(carried, FEEDBACK_QUEUED, bridge_message_id="3EB0C1")
    assert [event[1:] for event in sent_events(drops)] == [(row.id, "queued", "3EB0A1"),
                                                           (later.id, "queued", "3EB0C1")]


def stamped(drops: DropsDB, message_id: str, kind: str, at: str, recipient_jid: str = "") -> bool:
    """One receipt on its own: did it change the feedback?"""
    return drops.record_receipts([ReceiptStamp(message_id, kind, at, recipient_jid)])[1] > 0


def test_receipts_stamp_feedback_once_and_enqueue_delivered_and_read(drops: DropsDB) -> None:
    (drop,) = drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], ack)
    (feedback,) = drops.pending_feedback("lawley")
    drops.finish_feedback(feedback, FEEDBACK_QUEUED, bridge_message_id="3EB0A1")
    assert not stamped(drops, "unknown-id", "delivered", at(1))
    assert stamped(drops, "3EB0A1", "server_ack", at(1))
    assert stamped(drops, "3EB0A1", "delivered", at(2), OTHER)  # delivered to any member's phone
    assert not stamped(drops, "3EB0A1", "delivered", at(3), CONTRACTOR)  # the first one stands
    assert not stamped(drops, "3EB0A1", "read", at(4), OTHER)  # read by someone it does not mention
    assert not stamped(drops, "3EB0A1", "played", at(4), CONTRACTOR)
    assert stamped(drops, "3EB0A1", "read", at(5), "27710000001:12@s.whatsapp.net")  # the contractor's device
    assert not stamped(drops, "3EB0A1", "read", at(6), CONTRACTOR)
    (done,) = drops.feedback_of(drop)
    assert (done.server_at, done.delivered_at, done.read_at) == (at(1), at(2), at(5))
    assert types(drops) == ["drop.recorded", "feedback.sent", "feedback.delivered", "feedback.read"]
    read = drops.outbox.due("all", now=at(10**6))[-1].data["data"]["feedback"]
    # queued (202) until the server ack showed the bridge's outbox sent it
    assert (read["delivered_at"], read["read_at"], read["status"]) == (rfc3339(at(2)), rfc3339(at(5)), "sent")


def test_a_queued_reaction_is_sent_once_its_server_ack_arrives(drops: DropsDB) -> None:
    """A reaction gets no delivered/read receipts: its server ack is final, nothing stays queued waiting."""
    (drop,) = drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], ack)
    (feedback,) = drops.pending_feedback("lawley")
    drops.finish_feedback(feedback, FEEDBACK_QUEUED, bridge_message_id="3EB0R1")  # the bridge was reconnecting
    assert drops.drop("lawley", "DR1000001").feedback_status == "queued"
    assert stamped(drops, "3EB0R1", "server_ack", at(1))
    (done,) = drops.feedback_of(drop)
    assert (done.status, done.server_at, drops.drop("lawley", "DR1000001").feedback_status) == ("sent", at(1), "sent")
    assert types(drops) == ["drop.recorded", "feedback.sent"]  # announced once, when the bridge accepted it


def test_a_read_receipt_without_delivered_first_stamps_both(drops: DropsDB) -> None:
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], ack)
    (feedback,) = drops.pending_feedback("lawley")
    drops.finish_feedback(feedback, FEEDBACK_SENT, bridge_message_id="3EB0A1")
    assert stamped(drops, "3EB0A1", "read", at(3), CONTRACTOR)
    (done,) = drops.feedback_of(drops.drop("lawley", "DR1000001"))
    assert (done.delivered_at, done.read_at) == (at(3), at(3))
    assert types(drops)[-2:] == ["feedback.delivered", "feedback.read"]


def test_a_batch_of_receipts_stamps_like_one_at_a_time_in_one_transaction(drops: DropsDB) -> None:
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1"), sub("DR1000002", "M2")], ack)
    first, second = drops.pending_feedback("lawley")
    drops.finish_feedback(first, FEEDBACK_SENT, bridge_message_id="3EB0A1")
    drops.finish_feedback(second, FEEDBACK_SENT, bridge_message_id="3EB0A2")
    batch = [ReceiptStamp("3EB0A1", "server_ack", at(1)), ReceiptStamp("3EB0A1", "delivered", at(2), OTHER),
             ReceiptStamp("3EB0A1", "delivered", at(3), CONTRACTOR),  # the first one stands
             ReceiptStamp("3EB0A2", "read", at(4), OTHER),  # read by someone it does not mention: nothing
             ReceiptStamp("3EB0A2", "read", at(5), CONTRACTOR),  # read first: delivered too
             ReceiptStamp("3EB0A2", "played", at(6), CONTRACTOR), ReceiptStamp("STRANGER", "delivered", at(6))]
    assert drops.record_receipts(batch) == ({"3EB0A1", "3EB0A2"}, 4)
    assert drops.record_receipts(batch) == ({"3EB0A1", "3EB0A2"}, 0)  # again: nothing changes, no event
    stamped = {f.bridge_message_id: (f.server_at, f.delivered_at, f.read_at)
               for f in drops.feedback_of(drops.drop("lawley", "DR1000001")) + drops.feedback_of(
                   drops.drop("lawley", "DR1000002"))}
    assert stamped == {"3EB0A1": (at(1), at(2), None), "3EB0A2": (None, at(5), at(5))}
    assert sorted(types(drops)[4:]) == ["feedback.delivered", "feedback.delivered", "feedback.read"]


def test_a_failed_record_leaves_no_event(drops: DropsDB) -> None:
    def dies(s: Submission) -> NewFeedback:
        raise RuntimeError("killed mid-batch")
    with pytest.raises(RuntimeError):
        drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], dies)
    assert types(drops) == [] and drops.drop_count("lawley") == 0 and drops.cursor("lawley", "main") == 0


def test_postgres_notifies_the_schemas_channel_at_commit_never_for_a_rollback(write_config,  # noqa: ANN001
                                                                                pg_url: str) -> None:
    import psycopg  # (the test session needs it only with PostgreSQL)
    config = load(write_config(BASE_CONFIG + f'\n[database]\nurl = "{pg_url}"\nschema = "site_b"\n'))
    drops = open_drops_store(config)
    try:
        with psycopg.connect(pg_url, autocommit=True) as listener:
            listener.execute('LISTEN "site_b_outbox"; LISTEN "wa_watchdog_outbox"')
            def dies_on_the_second(s: Submission) -> NewFeedback:
                if s.drop_number == "DR1000002":
                    raise RuntimeError("killed mid-batch")
                return ack(s)
            with pytest.raises(RuntimeError):  # after the first drop's event and its pg_notify
                drops.record("lawley", "main", 2, [sub("DR1000001", "M1"), sub("DR1000002", "M2")], dies_on_the_second)
            assert list(listener.notifies(timeout=0.3)) == []  # rolled back: nothing to wake for
            drops.record("lawley", "main", 2, [sub("DR1000001", "M1"), sub("DR1000002", "M2")], ack)
            notes = list(listener.notifies(timeout=5, stop_after=1))
            assert [n.channel for n in notes] == [outbox_channel("site_b")] == ["site_b_outbox"]  # one per commit
    finally:
        drops.close()


def test_delivery_state_per_webhook_retry_dead_and_counts(drops: DropsDB) -> None:
    drops.record("lawley", "main", 3, [sub("DR1000001", "M1"), sub("DR1000002", "M2", backfilled=True),
                                       sub("DR1000001", "M3")], None)
    outbox = drops.outbox
    assert outbox.counts("crm", ["drop.recorded", "drop.backfilled"]).pending == 2  # not pulled yet: still pending
    due = outbox.due("crm", ["drop.recorded", "drop.backfilled"], now=at(10**6))
    assert [e.type for e in due] == ["drop.recorded", "drop.backfilled"]
    assert [e.type for e in outbox.due("audit", [], now=at(10**6))] == [
        "drop.recorded", "drop.backfilled", "drop.resubmitted"]  # another webhook has its own state
    recorded, backfilled = due
    outbox.delivered("crm", recorded.seq)
    next_attempt_at = at(3600)
    outbox.failed("crm", backfilled.seq, "HTTP 500", next_attempt_at=next_attempt_at)
    assert outbox.due("crm", ["drop.recorded", "drop.backfilled"]) == []  # not due before its next attempt
    assert outbox.next_retry("crm", at(0)) == next_attempt_at
    assert outbox.next_retry("audit", at(10**6)) is None  # all due from the look that pulled them
    (retry,) = outbox.due("crm", ["drop.recorded", "drop.backfilled"], now=at(10**9))
    assert (retry.seq, retry.id, retry.attempts) == (backfilled.seq, backfilled.id, 1)
    outbox.dead("crm", retry.seq, "HTTP 410 gone")
    assert outbox.next_retry("crm", at(0)) is None
    outbox.delivered("crm", retry.seq)  # a late answer cannot revive or re-count a dead event
    assert outbox.due("crm", ["drop.recorded", "drop.backfilled"], now=at(10**9)) == []
    counts = outbox.counts("crm", ["drop.recorded", "drop.backfilled"])
    assert (counts.pending, counts.dead, counts.delivered, counts.oldest_pending_at) == (0, 1, 1, None)
    audit = outbox.counts("audit")
    assert (audit.pending, audit.dead, audit.delivered) == (3, 0, 0) and audit.oldest_pending_at is not None
    # Events recorded later reach both webhooks.
    drops.record("lawley", "main", 4, [sub("DR1000003", "M4")], None)
    assert [e.type for e in outbox.due("crm", ["drop.recorded", "drop.backfilled"], now=at(10**9))] == [
        "drop.recorded"]


def test_an_idle_look_takes_no_write_lock_from_the_monitors(write_config) -> None:  # noqa: ANN001
    config = load(write_config(BASE_CONFIG))
    drops = open_drops_store(config)
    try:
        drops.record("lawley", "main", 1, [sub("DR1000001", "M1")], None)
        (event,) = drops.outbox.due("crm", now=at(10**6))
        drops.outbox.delivered("crm", event.seq)
        monitor = sqlite3.connect(drops_db_path(config.data_dir))
        monitor.execute("BEGIN IMMEDIATE")  # a monitor in the middle of its write transaction
        try:
            started = time.monotonic()
            assert drops.outbox.due("crm", now=at(10**6)) == []  # was: waited out the busy timeout, then unavailable
            assert time.monotonic() - started < 0.5
        finally:
            monitor.rollback()
            monitor.close()
        drops.record("lawley", "main", 2, [sub("DR1000002", "M2")], None)
        assert [e.data["data"]["drop"]["drop_number"] for e in drops.outbox.due("crm", now=at(10**6))] == [
            "DR1000002"]
    finally:
        drops.close()


@pytest.mark.slow
def test_state_for_followers(drops: DropsDB) -> None:
    assert drops.get_state("receipts:main") is None
    drops.set_state("receipts:main", "41")
    drops.set_state("receipts:main", "42")
    assert drops.get_state("receipts:main") == "42"


def test_one_message_carries_several_acks_and_its_receipts_stamp_each(drops: DropsDB) -> None:
    """Coalescing: the rows are grouped once (carrier_id, before the post); the answer's message id goes on each;
    its receipts stamp them all, a read only the rows mentioning the reader."""
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1"), sub("DR1000002", "M2", by=OTHER),
                                       sub("DR1000003", "M3")], ack)
    rows = drops.pending_feedback("lawley")
    grouped = drops.carry(rows)
    assert [r.carrier_id for r in grouped] == [rows[0].id] * 3
    assert drops.carry(rows) == []  # grouped already: a second grouping takes nothing
    assert drops.carried(rows[0].id) == grouped
    for row in grouped:
        drops.finish_feedback(row, FEEDBACK_SENT, bridge_message_id="3EB0C1")
    assert drops.record_receipts([ReceiptStamp("3EB0C1", "delivered", at(2), OTHER),
                                  ReceiptStamp("3EB0C1", "read", at(3), OTHER)]) == ({"3EB0C1"}, 4)
    stamps = {f.drop_number: (f.bridge_message_id, f.delivered_at, f.read_at) for f in drops.carried(rows[0].id)}
    assert stamps == {"DR1000001": ("3EB0C1", at(2), None), "DR1000002": ("3EB0C1", at(2), at(3)),
                      "DR1000003": ("3EB0C1", at(2), None)}


def test_a_coalesced_message_is_rebuilt_the_same_after_a_restart(drops: DropsDB, write_config) -> None:  # noqa: ANN001
    """Grouped before the post: a monitor killed after the bridge sent the message, with some rows marked, posts
    the same text under the same Idempotency-Key (the bridge answers from its outbox), for the rest only."""
    project = load(write_config(BASE_CONFIG)).project("lawley")
    drops.record("lawley", "main", 1, [sub("DR1000001", "M1"), sub("DR1000002", "M2", by=OTHER),
                                       sub("DR1000003", "M3")], ack)
    grouped = drops.carry(drops.pending_feedback("lawley"))
    first = coalesced(project, grouped, "Lawley Fibre")
    assert first.text == ("@27710000001 DR1000001, DR1000003 received, thank you\n"
                          "@27710000002 DR1000002 received, thank you")
    assert first.mentions == (CONTRACTOR, OTHER) and first.id == grouped[0].id
    drops.finish_feedback(grouped[0], FEEDBACK_SENT, bridge_message_id="3EB0C1")  # killed after the first mark
    again = coalesced(project, drops.carried(grouped[0].id), "Lawley Fibre")
    assert (again.text, again.idempotency_key, again.mentions) == (first.text, first.idempotency_key, first.mentions)
    assert again.id == grouped[1].id  # the first row still pending: what deliver checks and marks from
