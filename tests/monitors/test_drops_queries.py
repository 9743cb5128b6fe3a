"""The drops API's queries on drops.db and PostgreSQL: newest first, filters, keyset pages, one drop's history."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from monitors.drops_store import FEEDBACK_SENT, DropsDB, ReceiptStamp, open_drops_store
from tests.conftest import BASE_CONFIG
from tests.monitors.test_drops_outbox import CONTRACTOR, OTHER, ack, at, sub
from watchdog.components import load


@pytest.fixture
def drops(write_config, drops_backend: str) -> Iterator[DropsDB]:  # noqa: ANN001
    store = open_drops_store(load(write_config(BASE_CONFIG + drops_backend)))
    # 250 drops a minute apart, every 10th backfilled, in two projects; two posted at the same instant.
    store.record("lawley", "main", 250, [sub(f"DR{1000000 + i}", f"M{i}", backfilled=i % 10 == 0, seconds=60 * i)
                                         for i in range(250)], ack)
    store.record("mohadin", "main", 260, [sub(f"DR{2000000 + i}", f"N{i}", seconds=60 * i) for i in range(10)]
                 + [sub("DR2999999", "N99", seconds=60 * 9)], None)
    yield store
    store.close()


def numbers(page) -> list[str]:  # noqa: ANN001
    return [d.drop_number for d in page.drops]


@pytest.mark.slow
def test_newest_first_in_keyset_pages_that_cover_every_drop_once(drops: DropsDB) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = drops.list_drops(limit=100, cursor=cursor)
        seen += numbers(page)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3 and len(seen) == len(set(seen)) == 261
    times = [d.message_time for d in drops.list_drops(limit=1000).drops]
    assert times == sorted(times, reverse=True)
    # Ties on message time are ordered by id, and a page boundary between them loses neither.
    first = drops.list_drops(project="mohadin", limit=1)
    second = drops.list_drops(project="mohadin", limit=1, cursor=first.next_cursor)
    assert (numbers(first), numbers(second)) == (["DR2999999"], ["DR2000009"])


def test_filters(drops: DropsDB) -> None:
    assert len(drops.list_drops(project="mohadin", limit=1000).drops) == 11
    backfilled = drops.list_drops(project="lawley", backfilled=True, limit=1000).drops
    assert len(backfilled) == 25 and all(d.backfilled for d in backfilled)
    assert len(drops.list_drops(project="lawley", backfilled=False, limit=1000).drops) == 225
    window = drops.list_drops(project="lawley", since=at(60 * 10), until=at(60 * 20), limit=1000)
    assert numbers(window) == [f"DR{1000000 + i}" for i in range(19, 9, -1)]  # since inclusive, until exclusive
    assert len(drops.list_drops(feedback="pending", limit=1000).drops) == 250
    assert len(drops.list_drops(feedback="none", limit=1000).drops) == 11
    (feedback, *_) = drops.pending_feedback("lawley")
    drops.finish_feedback(feedback, FEEDBACK_SENT, bridge_message_id="3EB0A1")
    assert numbers(drops.list_drops(feedback="sent")) == [feedback.drop_number]


def test_bad_parameters_are_named(drops: DropsDB) -> None:
    for kwargs, name in (({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"feedback": "maybe"}, "feedback"),
                         ({"cursor": "not-a-cursor"}, "cursor"), ({"cursor": "WzEsMl0"}, "cursor")):
        with pytest.raises(ValueError, match=f"^{name}: "):
            drops.list_drops(**kwargs)


def test_one_drop_with_its_submissions_and_feedback_history(drops: DropsDB) -> None:
    drops.record("lawley", "main", 251, [sub("DR1000005", "R1", by=OTHER, seconds=99999)], None)
    drop = drops.drop("lawley", "DR1000005")
    (feedback,) = drops.pending_feedback("lawley", limit=6)[5:]
    assert feedback.drop_number == "DR1000005"
    drops.finish_feedback(feedback, FEEDBACK_SENT, bridge_message_id="3EB0A1")
    drops.record_receipts([ReceiptStamp("3EB0A1", "delivered", at(100000))])
    detail = drops.drop_by_public_id(drop.public_id.upper())  # any UUID spelling
    assert detail is not None and detail.drop == drops.drop("lawley", "DR1000005")
    assert [(s.kind, s.submitted_by, s.message_id) for s in detail.submissions] == [
        ("submitted", CONTRACTOR, "M5"), ("resubmitted", OTHER, "R1")]
    assert [(f.kind, f.status, f.delivered_at) for f in detail.feedback] == [("ack", "sent", at(100000))]
    body = detail.as_json()
    assert body["public_id"] == drop.public_id and "id" not in body and body["feedback"][0]["mentions"] == [CONTRACTOR]
    assert "id" not in body["submissions"][0]
    assert drops.drop_by_public_id("00000000-0000-4000-8000-000000000000") is None
    assert drops.drop_by_public_id("DR1000005") is None
