"""The receipt follower on real stores: a receipt that arrives before the feedback row knows its message is
kept and stamped once the bridge's answer is recorded, also across a restart; strangers' receipts age out."""
from __future__ import annotations

from datetime import timedelta

from bridge.store import Store
from bridge.transport import Receipt, ReceiptKind
from monitors.drops_store import FEEDBACK_SENT, NewFeedback, Submission, open_drops_store
from monitors.follow import StoreFollower
from monitors.receipts import GRACE, ReceiptFollower
from monitors.store_watch import StoreWakes
from tests.bridge_support import SENDER
from tests.conftest import GROUP_A
from watchdog.components import load
from watchdog.shared import clock


def test_early_receipts_wait_for_their_feedback_and_survive_a_restart(write_config) -> None:
    config = load(write_config())
    account = config.account("main")
    bridge = Store(account.store)
    drops = open_drops_store(config)
    now = clock.now()
    (drop,) = drops.record("lawley", "main", 1, [Submission("DR1234567", GROUP_A, "Lawley Fibre", SENDER, "M1",
                                                            "2026-11-24 08:00:00.000000+00:00", False)], None)
    feedback = drops.add_feedback(drop, NewFeedback("operator", GROUP_A, "@27710000001 DR1234567 - fix", (SENDER,),
                                                    "key-1"))
    # WhatsApp delivered and the contractor read it before the sender recorded the bridge's answer;
    # a receipt of some other message, old enough to have aged out, is passed over.
    bridge.add_receipts([Receipt(("3EB0F1",), GROUP_A, SENDER, ReceiptKind.DELIVERED, now),
                         Receipt(("OTHER",), GROUP_A, SENDER, ReceiptKind.DELIVERED, now - timedelta(seconds=GRACE + 1)),
                         Receipt(("3EB0F1",), GROUP_A, SENDER, ReceiptKind.READ, now)])
    store = StoreFollower(account.store)
    follower = ReceiptFollower(drops, account, StoreWakes())
    follower.catch_up(store)
    assert [r.message_id for r in follower.waiting] == ["3EB0F1", "3EB0F1"] and follower.cursor == 3
    assert drops.get_state(follower.key) == "0"  # saved before the oldest waiting receipt

    restarted = ReceiptFollower(drops, account, StoreWakes())  # a monitor restarted now reads them again
    restarted.catch_up(store)
    assert len(restarted.waiting) == 2

    drops.finish_feedback(feedback, FEEDBACK_SENT, bridge_message_id="3EB0F1")
    restarted.retry_waiting()
    assert restarted.waiting == [] and drops.get_state(restarted.key) == "3" and restarted.stamped == 2
    (stamped,) = drops.drop_by_public_id(drop.public_id).feedback
    assert stamped.delivered_at and stamped.read_at
    store.close()
    drops.close()
    bridge.close()

