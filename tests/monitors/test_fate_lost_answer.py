"""A send whose answer this host's own bridge lost (issue 21, monitors/fate.py, monitors/store/copies.py), below the
processes, on a real PostgreSQL: the copy is not in this host's messages.db (a device gets no copy of its own
sends) but published by the other host's monitors in `device_copies` (drops schema 13); found there it is marked
sent with that id, else the row waits and becomes unknown, never sent again by itself; what the bridge accepted
(queued) and then lost is pending again, still handed by this node; an operator's resend is a new key."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bridge.schema import StoredMessage, format_ts
from monitors.config import ClusterConfig
from monitors.drops_store import (FEEDBACK_PENDING, FEEDBACK_QUEUED, FEEDBACK_SENT, FEEDBACK_UNKNOWN, DropsDB,
                                  Feedback, Fence)
from monitors.fate import FOUND, UNKNOWN, WAIT, Connection, Fates
from monitors.store import copies
from monitors.store.handed import Handed, hand
from monitors.store.lease import SenderLease
from tests.conftest import GROUP_A, GROUP_B
from tests.monitors import test_fate
from tests.monitors.test_fate import HANDED_AT, OWN, acknowledged
from watchdog.components import Config

pytestmark = pytest.mark.parametrize("drops_backend", ["postgres"], indirect=True)
config, drops = test_fate.config, test_fate.drops  # its fixtures: a config with the drops store, the store


def copy_of(text: str, message_id: str, seconds: int = 1, at: str = "") -> StoredMessage:
    """A from-me message as a sibling device stored it (source live: not the sending bridge's own `sent`)."""
    return StoredMessage(1, message_id, GROUP_A, "Lawley", OWN.split("@")[0], text,
                         at or format_ts(HANDED_AT.replace(second=seconds)), True, None, "live")


def test_published_copies_are_idempotent_leave_out_this_bridges_own_sends_and_age_out(config: Config,
                                                                                     drops: DropsDB) -> None:
    own_send = copy_of("DR1 received", "3EB0OWN", 2)
    sibling = [copy_of("DR1 received", "3EB0AAA", 1), copy_of("DR2 received", "3EB0BBB", 3)]
    assert copies.sibling_copies([*sibling, StoredMessage(**{**vars(own_send), "source": "sent"}),
                                  StoredMessage(**{**vars(own_send), "is_from_me": False})]) == sibling
    for node in ("vps-a", "vps-a", "vps-b"):  # again after a restart; and the other host saw them too
        copies.publish(drops.db, OWN, node, sibling, format_ts(HANDED_AT.replace(hour=0)))
    published = copies.PublishedCopies(drops.db, OWN)
    assert published.has("3EB0AAA", GROUP_A) and not published.has("3EB0AAA", GROUP_B)
    assert not copies.PublishedCopies(drops.db, "27719999999@s.whatsapp.net").has("3EB0AAA", GROUP_A)
    assert published.with_text(GROUP_A, "DR1 received") == ["3EB0AAA"]  # one message, seen by two devices
    assert published.with_text(GROUP_A, "DR1 received", format_ts(HANDED_AT.replace(second=2))) == []
    copies.publish(drops.db, OWN, "vps-a", [], format_ts(HANDED_AT.replace(second=2)))  # older ones age out
    assert drops.db.rows("SELECT node, message_id FROM device_copies ORDER BY node, message_id") == [
        ("vps-a", "3EB0BBB"), ("vps-b", "3EB0AAA"), ("vps-b", "3EB0BBB")]


@contextmanager
def handed_by_b(config: Config, drops: DropsDB) -> Iterator[tuple[Feedback, Feedback, Fence]]:
    """vps-b holds the sender lease, claims a drop's acknowledgement and hands it to its bridge: the recorded row,
    the claimed one and the fence."""
    lease = SenderLease(config.database.url, "wa_watchdog", "main", "vps-b", 30.0)
    try:
        lease.acquire()
        fence = lease.fence()
        assert fence is not None
        feedback = acknowledged(config, drops)
        [claimed] = drops.claim_feedback("lawley", fence)
        hand(drops.db, [claimed.id], fence)
        yield feedback, claimed, fence
    finally:
        lease.close()


def test_a_lost_answer_is_found_through_the_other_hosts_published_copy_or_becomes_unknown_never_sent(
        config: Config, drops: DropsDB) -> None:
    cluster = ClusterConfig("vps-b", copy_grace_s=1.0, unknown_after_s=60.0)
    fates = Fates(config, config.project("lawley"), cluster, drops)
    with handed_by_b(config, drops) as (feedback, claimed, fence):
        assert fates.doubted([claimed]) == {}  # this node's own: its bridge answers for it
        fates.lost(claimed, [claimed])  # ... until it answered: in doubt
        [doubt] = fates.doubted([claimed]).values()
        assert doubt.node == "vps-b"
        connected = Connection(3600.0, True)  # connected throughout: says nothing of its own sends
        assert fates.judge(claimed, doubt, connected) == (WAIT, None)
        fates._met[claimed.idempotency_key] -= 61
        assert fates.judge(claimed, doubt, connected) == (UNKNOWN, None)  # never SEND by itself
        fates._met[claimed.idempotency_key] += 61
        jid = config.account("main").jid
        copies.publish(drops.db, jid, "vps-a", [copy_of(feedback.text, "3EB0FROMA", at=claimed.created_at)],
                       format_ts(HANDED_AT.replace(hour=0)))  # vps-a's device received vps-b's send
        verdict, copy = fates.judge(claimed, doubt, connected)
        assert verdict == FOUND and copy is not None and (copy.message_id, copy.how) == ("3EB0FROMA", "text")
        fates.settle(verdict, copy, claimed, [claimed], doubt, fence)
        done = drops.feedback(feedback.id)
        assert (done.status, done.bridge_message_id) == (FEEDBACK_SENT, "3EB0FROMA")
        assert fates.doubted([claimed]) == {}  # settled: no longer this node's doubt


def test_queued_feedback_its_bridge_lost_is_pending_again_and_an_operators_resend_is_a_new_key(
        config: Config, drops: DropsDB) -> None:
    with handed_by_b(config, drops) as (feedback, claimed, fence):
        drops.finish_feedback(claimed, FEEDBACK_QUEUED, "", "3EB0QUEUED", fence=fence)
        assert drops.requeue_in_doubt(["3EB0QUEUED"], "vps-a") == []  # another node's word: not its row
        assert drops.requeue_in_doubt(["3EB0QUEUED"], "vps-b") == [feedback.id]
        assert drops.requeue_in_doubt(["3EB0QUEUED"], "vps-b") == []  # said again at the next word: no change
        again = drops.feedback(feedback.id)
        assert (again.status, again.bridge_message_id) == (FEEDBACK_PENDING, None)
        assert drops.db.rows("SELECT handed_by FROM feedback WHERE id = ?", (feedback.id,)) == [("vps-b",)]
        drops.finish_feedback(again, FEEDBACK_UNKNOWN, "no copy", fence=fence)
        resent = drops.decide_unknown(feedback.id, FEEDBACK_PENDING)
        assert resent.idempotency_key == feedback.idempotency_key + ":resent"  # the bridge holds the old in doubt
        assert drops.decide_unknown(feedback.id, FEEDBACK_PENDING).idempotency_key == resent.idempotency_key


def test_judging_another_nodes_doubt_is_unchanged(config: Config, drops: DropsDB) -> None:
    """The takeover case still sends what never went once this host's bridge was connected long enough."""
    fates = Fates(config, config.project("lawley"), ClusterConfig("vps-b", copy_grace_s=1.0), drops)
    message = acknowledged(config, drops)
    fates._met[message.idempotency_key] = 0.0  # met long ago
    assert fates.judge(message, Handed("vps-a", 3, format_ts(HANDED_AT)), Connection(3600.0, True))[0] == "send"
