"""The receipt follower on real stores: a receipt that arrives before the feedback row knows its message is
kept and stamped once the bridge's answer is recorded, also across a restart; strangers' receipts age out, on the
boot's clock whatever the wall clock does."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

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
    asyncio.run(follower.catch_up(store))
    assert [w.receipt.message_id for w in follower.waiting] == ["3EB0F1", "3EB0F1"] and follower.cursor == 3
    assert drops.get_state(follower.key) == "0"  # saved before the oldest waiting receipt

    restarted = ReceiptFollower(drops, account, StoreWakes())  # a monitor restarted now reads them again
    asyncio.run(restarted.catch_up(store))
    assert len(restarted.waiting) == 2

    drops.finish_feedback(feedback, FEEDBACK_SENT, bridge_message_id="3EB0F1")
    asyncio.run(restarted.retry_waiting())
    assert restarted.waiting == [] and drops.get_state(restarted.key) == "3" and restarted.stamped == 2
    (stamped,) = drops.drop_by_public_id(drop.public_id).feedback
    assert stamped.delivered_at and stamped.read_at
    store.close()
    drops.close()
    bridge.close()



T0 = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("step", [3600.0, -3600.0], ids=["forward", "back"])
def test_the_grace_of_a_receipt_is_kept_on_the_boots_clock(write_config: Callable[..., Path], fixed_clock: Callable,
                                                           step: float) -> None:
    """The wall clock stepped an hour while receipts wait. Forward: a receipt read a second before is still young
    and is stamped once its answer is recorded (it aged out at once). Back: a stranger's receipt ages out after
    the grace, and the saved cursor moves past it (it waited, holding the cursor back, for an hour)."""
    fixed_clock(T0)
    config = load(write_config())
    account = config.account("main")
    bridge, drops = Store(account.store), open_drops_store(config)
    (drop,) = drops.record("lawley", "main", 1, [Submission("DR1234567", GROUP_A, "Lawley Fibre", SENDER, "M1",
                                                            "2026-12-06 08:59:00.000000+00:00", False)], None)
    feedback = drops.add_feedback(drop, NewFeedback("operator", GROUP_A, "@27710000001 DR1234567 - fix", (SENDER,),
                                                    "key-1"))
    bridge.add_receipts([Receipt(("3EB0F1",), GROUP_A, SENDER, ReceiptKind.DELIVERED, clock.now()),
                         Receipt(("OTHER",), GROUP_A, SENDER, ReceiptKind.DELIVERED, clock.now())])
    store = StoreFollower(account.store)
    follower = ReceiptFollower(drops, account, StoreWakes())
    asyncio.run(follower.catch_up(store))
    clock.step_for_tests(step)
    clock.pass_for_tests(1)
    asyncio.run(follower.retry_waiting())  # the retry a second later: the answer is not recorded yet
    drops.finish_feedback(feedback, FEEDBACK_SENT, bridge_message_id="3EB0F1")
    asyncio.run(follower.retry_waiting())
    assert follower.stamped == 1 and drops.drop_by_public_id(drop.public_id).feedback[0].delivered_at
    assert len(follower.waiting) == 1  # the stranger's, within its grace
    clock.pass_for_tests(GRACE)
    asyncio.run(follower.retry_waiting())
    assert follower.waiting == [] and drops.get_state(follower.key) == "2"
    store.close()
    drops.close()
    bridge.close()


def test_each_cluster_host_keeps_its_own_position_in_its_own_receipts(write_config: Callable[..., Path],
                                                                       tmp_path: Path) -> None:
    """Two hosts' messages.db number the same account's receipts each its own way: host A's position saved in the
    shared drops store must not move host B's (B read one receipt, A three: B must still read its next)."""
    config = load(write_config())
    account = config.account("main")
    drops = open_drops_store(config)
    stores = {}
    for node, count in (("vps-b", 1), ("vps-a", 3)):  # B saves first, A after: A's must not be B's
        path = tmp_path / node / "messages.db"
        path.parent.mkdir()
        bridge = Store(path)
        old = clock.now() - timedelta(seconds=GRACE + 1)  # strangers past their grace: the position moves past them
        bridge.add_receipts([Receipt((f"{node}-{n}",), GROUP_A, SENDER, ReceiptKind.DELIVERED, old)
                             for n in range(count)])
        bridge.close()
        stores[node] = StoreFollower(path)
    followers = {node: ReceiptFollower(drops, account, StoreWakes(), reader=f"main@{node}") for node in stores}
    for node, follower in followers.items():
        asyncio.run(follower.catch_up(stores[node]))
    assert followers["vps-a"].cursor == 3 and followers["vps-b"].cursor == 1
    restarted_b = ReceiptFollower(drops, account, StoreWakes(), reader="main@vps-b")
    assert drops.get_state(followers["vps-a"].key) == "3"
    assert drops.get_state(restarted_b.key) == "1"  # not A's 3: the receipt B stores next (rowid 2) is read
    for store in stores.values():
        store.close()
    drops.close()
