"""Acknowledgements waiting in the bridge's outbox joined by later ones (issue 22, coalescing while waiting).

The pace holds a group's message for 30-60 s; acknowledgements of the same group falling due meanwhile go out in
it rather than after it: the queued message is withdrawn from the bridge (only if not yet handed to WhatsApp),
and its rows join the new ones under one carrier, in one transaction, before the one message is posted. The
order keeps every moment of a restart right: before the transaction the rows still name the withdrawn message
and the new rows are still pending, so a restarted monitor withdraws again (the bridge answers "withdrawn" once
more) and joins them; after it, every row is pending under the new carrier, and the message is rebuilt the same.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from monitors.store.fence import FENCE, Fence, LeaseLost
from monitors.store.model import FEEDBACK_PENDING, FEEDBACK_QUEUED, KIND_ACK, Feedback, feedback_from_row
from monitors.store.feedback_state import sync_drop_feedback
from monitors.store.queries import FEEDBACK_COLUMNS

if TYPE_CHECKING:
    from monitors.drops_store import DropsDB


def _fenced(fence: Fence | None) -> tuple[str, tuple]:
    return (f" AND claim_token = ? AND {FENCE}", (fence.token, *fence.params)) if fence else ("", ())


def queued_acks(drops: DropsDB, project: str, recipient: str, fence: Fence | None = None) -> list[Feedback]:
    """`project`'s acknowledgements to `recipient` its bridge accepted into the outbox (202) and not yet seen sent;
    in a cluster, only those claimed under `fence`'s token (another token's are not this holder's to take back)."""
    fenced, params = (" AND f.claim_token = ?", (fence.token,)) if fence else ("", ())
    return [feedback_from_row(row) for row in drops.db.rows(
        f"SELECT {FEEDBACK_COLUMNS} FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE f.status = ? "
        f"AND f.kind = ? AND f.recipient = ? AND d.project = ?{fenced} ORDER BY f.id",
        (FEEDBACK_QUEUED, KIND_ACK, recipient, project, *params))]


def rejoin(drops: DropsDB, withdrawn: Sequence[Feedback], unit: Sequence[Feedback],
           fence: Fence | None = None) -> list[Feedback]:
    """One transaction: the rows of messages the bridge withdrew (`withdrawn`, queued) are pending again, and they
    and `unit` (pending: the acknowledgements falling due now) are carried by one message (carrier: the first row's
    id). Returns every row that message carries. With a `fence`, LeaseLost (nothing written) unless the grant is
    current and the rows are claimed under its token."""
    fenced, params = _fenced(fence)
    old = sorted(row.id for row in withdrawn)
    new = sorted(row.id for row in unit if row.status == FEEDBACK_PENDING)
    with drops.db.transaction() as tx:
        back = {} if not old else dict(tx.rows(
            f"UPDATE feedback SET status = ?, bridge_message_id = NULL, sent_at = NULL WHERE id IN "
            f"({', '.join('?' * len(old))}) AND status = ?{fenced} RETURNING id, drop_id",
            (FEEDBACK_PENDING, *old, FEEDBACK_QUEUED, *params)))
        ids = sorted(set(back) | set(new))
        if not ids:
            return []
        if fence is not None and old and not back:
            raise LeaseLost(f"feedback {', '.join(map(str, old))}: {fence.account}'s sender lease is no longer "
                            f"{fence.holder}'s token {fence.token}")
        tx.run(f"UPDATE feedback SET carrier_id = ? WHERE id IN ({', '.join('?' * len(ids))}) AND status = ?{fenced}",
               (ids[0], *ids, FEEDBACK_PENDING, *params))
        for drop_id in set(back.values()):  # the drop shows its feedback pending again, until the answer
            sync_drop_feedback(tx, drop_id)
    return drops.carried(ids[0])
