"""The outbox's side of a cluster's fence (bridge/fence.py) and of withdrawals: a send under a superseded token is
answered withdrawn, the lease keeper's word is taken (and answered with what was withdrawn or is in doubt), sends
are taken back by key, and only rows whose lease is valid now are sendable. `Outbox` (bridge/outbox.py) carries
these methods."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from loguru import logger

from bridge.fence import Fences, FenceWord, SendFence
from bridge.outbox_answers import reply, superseded_reason
from bridge.outbox_store import OutboxRow
from bridge.pace import PLAN_LIMIT
from bridge.schema import format_ts
from bridge.store import Store
from watchdog.shared import clock


class OutboxFence:
    """The fence and withdrawals of the outbox (a base of `Outbox`, whose state and wake-up it uses)."""

    store: Store
    fences: Fences
    _in_flight: int | None
    _done: dict[str, asyncio.Event]
    _heard: asyncio.Event
    _wake: Callable[[float], None]

    def _superseded(self, fence: SendFence, idempotency_key: str | None) -> tuple[int, dict]:
        row = self.store.outbox_by_key(idempotency_key) if idempotency_key else None
        if row is None:
            return 409, {"success": False, "withdrawn": True,
                         "message": f"Withdrawn, not queued: {superseded_reason(fence)}"}
        if row.status == "pending":
            self._withdraw([row], superseded_reason(fence))
            row = self.store.outbox_row(row.message_id) or row
        return reply(row)

    def fence_word(self, word: FenceWord) -> dict:
        """The lease keeper's word (POST /api/fence): the lease as this bridge knows it now and, when the word
        changed the token or said one lost, the message ids of the lease's rows of superseded tokens withdrawn
        (by this word or before, queued in the last day: a keeper that missed an answer, or started after it,
        hears it again; giving those rows back to the holder is idempotent), and those of the lease's rows in doubt
        (their answer lost, queued in the last day: the monitors find out whether they went; said at every word, as
        taking them is idempotent too). Rows that may go now are drained."""
        lease, was = word.fence.lease, self.fences.allows(word.fence)
        if word.valid_until is None:
            changed = self.fences.lost(lease, word.fence.token)
        else:
            changed = self.fences.renewed(lease, word.fence.token, word.valid_until, word.keeper)
        self._heard.set()
        self._heard = asyncio.Event()
        withdrawn: list[str] = []
        up_to = self.fences.superseded_up_to(lease)
        day = format_ts(clock.now() - timedelta(days=1))
        if up_to and (changed or word.valid_until is None):  # a renewal of the same token supersedes nothing
            self._withdraw_superseded(self.store.outbox_pending(limit=PLAN_LIMIT))
            withdrawn = self.store.outbox_withdrawn(lease, up_to, day)
        if not was and self.fences.allows(word.fence) and self.store.outbox_depth():
            self._wake(0.0)
        return {**self.fences.snapshot(lease), "withdrawn": withdrawn, "doubt": self.store.outbox_in_doubt(lease, day)}

    def withdraw(self, keys: tuple[str, ...], reason: str) -> dict[str, str]:
        """Take back the sends made with these Idempotency-Keys, if not yet handed to WhatsApp: each key's state
        after (withdrawn; sending: handed to WhatsApp right now; sent; failed; unknown: no such send here)."""
        rows = {key: self.store.outbox_by_key(key) for key in keys}
        self._withdraw([r for r in rows.values() if r is not None and r.status == "pending"], reason)
        states = {}
        for key, row in rows.items():
            now = self.store.outbox_row(row.message_id) if row is not None else None
            states[key] = "unknown" if now is None else "sending" if now.status == "pending" else now.status
        return states

    def _withdraw(self, rows: list[OutboxRow], reason: str) -> list[OutboxRow]:
        """Withdraw pending rows but the one in flight (whoever waits for one is answered: withdrawn)."""
        done = self.store.outbox_withdraw([r for r in rows if r.seq != self._in_flight], reason)
        for row in done:
            logger.warning("withdrew {} to {}: {}", row.message_id, row.recipient_jid, reason)
            if (event := self._done.get(row.message_id)) is not None:
                event.set()
        return done

    def _withdraw_superseded(self, rows: list[OutboxRow]) -> list[OutboxRow]:
        superseded = [r for r in rows if r.fence is not None and self.fences.superseded(r.fence)]
        return self._withdraw(superseded, superseded_reason(superseded[0].fence)) if superseded else []  # type: ignore[arg-type]

    def _sendable(self, rows: list[OutboxRow]) -> dict[int, OutboxRow]:
        """Pending rows that may go now, by seq: a fenced row whose lease is not valid now waits, and so does
        everything behind it in its chat (one chat's order is kept); superseded ones are withdrawn."""
        withdrawn = {r.seq for r in self._withdraw_superseded(rows)}
        waiting: set[str] = set()
        sendable = {}
        for row in rows:
            if row.seq in withdrawn or row.recipient_jid in waiting:
                continue
            if self.fences.allows(row.fence):
                sendable[row.seq] = row
            else:
                waiting.add(row.recipient_jid)
        return sendable
