"""Queued feedback pending again: what a bridge withdrew, gave back or lost the answer of, and what a dead node's
bridge held. A part of DropsDB (monitors/drops_store.py)."""
from __future__ import annotations

from collections.abc import Sequence

from monitors.store.feedback_state import sync_drop_feedback
from monitors.store.fence import FENCE, Fence, LeaseLost
from monitors.store.model import Feedback
from monitors.store.sql import Backend


class Requeueing:
    db: Backend

    def requeue_feedback(self, rows: Sequence[Feedback], fence: Fence | None = None) -> list[int]:
        """Queued feedback its bridge withdrew (a failover: never sent there) is pending again, to be sent through
        another account; with a `fence`, only rows claimed under its token while it is current. The ids done."""
        fenced, params = (f" AND claim_token = ? AND {FENCE}", (fence.token, *fence.params)) if fence else ("", ())
        return self._requeue("id", [row.id for row in rows], fenced, params, unhand=True)

    def give_back(self, message_ids: Sequence[str], up_to_token: int) -> list[int]:
        """Queued feedback a bridge withdrew because its sender lease's token (at most `up_to_token`) was superseded
        (bridge/fence.py: never sent, never to be) is pending again, for the lease's holder now to claim and send.
        Not fenced: it only states what the bridge did, and gives no host the right to send. The ids done."""
        return self._requeue("bridge_message_id", message_ids, " AND claim_token <= ?", (up_to_token,), unhand=True)

    def requeue_in_doubt(self, message_ids: Sequence[str], node: str) -> list[int]:
        """Queued feedback `node` handed to its bridge, which then lost the send's answer and never sends it again
        (bridge/outbox.py, status doubt): pending again, still marked as handed by `node`, so the sender finds out
        whether it went (monitors/fate.py) rather than post it. Not fenced: it only states what the bridge did.
        The ids done."""
        return self._requeue("bridge_message_id", message_ids, " AND handed_by = ?", (node,))

    def take_queued(self, project: str, fence: Fence, after_s: float) -> float | None:
        """A cluster's holder takes over feedback another node's bridge accepted (202, `queued`) under an older
        token: that node is gone or will give nothing back, and its rows would stay queued for ever. Each is pending
        again, claimed under `fence` and still marked as handed by that node, so the feedback sender finds out
        whether it went (monitors/fate.py) as for a send in doubt. Only once `after_s` (the lease) has passed since
        this grant by the database's clock: the other bridge sends under an older token only until that token's
        validity ended, which is before its lease could expire, which is before this grant plus a lease. Fenced
        and conditional on the older claim: a row the other node gave back, or marked, first is left alone, and
        its give-back (`give_back`, `claim_token <= ` its token) of a row taken here changes nothing. Rows no node
        handed on (one host before the cluster) stay the bridge's outbox's job. Returns None once looked, else
        the seconds until it may; LeaseLost when `fence` is no longer the grant."""
        grant = self.db.rows("SELECT EXTRACT(EPOCH FROM acquired_at + make_interval(secs => ?) - now()) FROM "
                             "sender_leases WHERE account = ? AND holder = ? AND token = ? AND expires_at > now()",
                             (after_s, *fence.params))
        if not grant:
            raise LeaseLost(f"{fence.account}'s sender lease is no longer {fence.holder}'s token {fence.token}")
        if (wait := float(grant[0][0])) > 0:
            return wait
        # handed_by <> ?: a NULL (never handed on) is not <> anything
        ids = [row[0] for row in self.db.rows(
            "SELECT f.id FROM feedback f JOIN drops d ON d.id = f.drop_id WHERE f.status = 'queued' AND d.project = ? "
            "AND f.handed_by <> ? AND f.claim_token < ?", (project, fence.holder, fence.token))]
        self._requeue("id", ids, f" AND handed_by <> ? AND claim_token < ? AND {FENCE}",
                      (fence.holder, fence.token, *fence.params), claim=fence)
        return None

    def _requeue(self, column: str, values: Sequence[object], condition: str, params: tuple,
                 claim: Fence | None = None, unhand: bool = False) -> list[int]:
        """Queued rows pending again (`claim`: claimed under that grant); the ids done. `unhand`: the bridge said it
        withdrew them (never sent), so no host need look for a copy before sending them (monitors/fate.py)."""
        if not values:
            return []
        claimed, claim_params = ((", claim_token = ?, claimed_by = ?", (claim.token, claim.holder)) if claim
                                 else ("", ()))
        if unhand:
            claimed += ", handed_by = NULL, handed_token = NULL, handed_at = NULL"
        with self.db.transaction() as tx:
            done = tx.rows(
                f"UPDATE feedback SET status = 'pending', bridge_message_id = NULL, sent_at = NULL{claimed} WHERE "
                f"{column} IN ({', '.join('?' * len(values))}) AND status = 'queued'{condition} RETURNING id, drop_id",
                (*claim_params, *values, *params))
            for drop_id in {drop_id for _, drop_id in done}:
                sync_drop_feedback(tx, drop_id)
        return [feedback_id for feedback_id, _ in done]
