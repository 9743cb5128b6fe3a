"""Nothing sent is lost, nothing twice, and no message blocks the others: a durable, ordered outbox.

The message id is chosen and committed before the first attempt, so a resend
after a crash or a timeout is the same WhatsApp message (the server dedupes
by id) and never a second one. One lock serializes sending, so the outbox
drains strictly in order, whether an API request or a reconnect triggers it.

A row that can never be sent (refused by the server, media unreadable) or that
failed `max_attempts` times while connected (each attempt is counted in the
store before it starts, so a send that crashes the bridge counts too) is
dead-lettered: marked failed, reported once through `on_dead_letter`, and the
rows behind it drain.

WhatsApp's own limits (bridge/refusals.py) are obeyed here: a rate-overlimit
answer leaves the row queued (the answered attempt does not count) and pauses
the whole account (`SendPause`), after which the outbox drains by itself; a
refusal for one recipient (463 and relatives) dead-letters that row with
WhatsApp's code and meaning.

The account's pace (bridge/pace.py) decides which row goes next and when: one chat's rows in order, a chat
holding operator feedback first, the account's budgets, the gap per chat, "typing…" before a text. A row that
cannot go at once is answered 202 with its place in the queue and its expected time; the outbox wakes itself
when the next row is due.

Exactly-once for clients that treat anything but 200 as failure (whatsapp-mcp's
`requests.post` without an Idempotency-Key): such a request waits up to
`delivery_wait` for its row to be sent (a reconnect takes well under that), and
an identical request without a key within `dedupe_window` is the same send
(recognised by the fingerprint of the parsed request), answered with the first
one's current state. See docs/ARCHITECTURE.md, "Exactly once".

A cluster's sends are fenced by the sender lease they were claimed under (bridge/fence.py): such a row goes
out only while its token is valid, waits while it is not known to be, and is withdrawn (never sent, answered
409) once a newer token superseded it. `withdraw` takes back rows by key (a failover to another account):
only rows not yet handed to WhatsApp; the one being sent at that moment is not withdrawn.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import timedelta, timezone
from pathlib import Path

from loguru import logger

from bridge import media as media_files
from bridge.fence import Fences, FenceWord, SendFence
from bridge.media import StagedMedia
from bridge.pace import PLAN_LIMIT, PaceConfig, Pacer, Plan, Queued
from bridge.send_pause import SendPause
from bridge.sending import SendRequest, context_parts, refusal_status
from bridge.schema import format_ts, parse_ts
from bridge.store import OutboxRow, Store
from bridge.transport import (IncomingMessage, MediaInfo, NotConnected, OutgoingMedia, OutgoingMessage, RateLimited,
                              SendFailed, Source, Transport)
from watchdog.shared import clock
from watchdog.shared.waiting import wait_event

SEND_TIMEOUT = 10.0  # an unanswered send stays pending and is retried (same id) later
MAX_ATTEMPTS = 5
DELIVERY_WAIT = 8.0  # below whatsapp-mcp's and the web app's request timeouts
DEDUPE_WINDOW = 120.0
SETTLE_WAIT = 2.0  # a row about to go: its request waits this long to be answered with what happened
RECENT_SENT = 1000  # sent rows a restart counts at least (the pace's minute and the chats' gaps need only the last)


def new_message_id(own_jid: str, idempotency_key: str | None) -> str:
    """A WhatsApp-style message id (`3EB0` + 18 hex digits, as whatsmeow generates): random, or, for a request
    with an Idempotency-Key, derived from the key and the sending account. So a client's retry is the same
    WhatsApp message (deduped by id) even where the outbox no longer knows the key: messages.db put back from
    a backup taken before the first send, a monitor posting again the feedback whose answer a stop cut off, and
    in a cluster the host that takes over sending posting a feedback its predecessor may already have sent
    (issue 21: the same account, so the same id where the transport lets the sender choose it)."""
    if idempotency_key is None:
        return "3EB0" + secrets.token_hex(9).upper()
    return "3EB0" + hashlib.sha256(f"{own_jid}\n{idempotency_key}".encode()).hexdigest()[:18].upper()


def fingerprint(endpoint: str, request: SendRequest, media: StagedMedia | None) -> str:
    """What makes two requests the same send: where they went, to whom, what (media by content, a quote or a
    reaction: appended only when there is one, so a plain send's fingerprint is what it always was). Not its
    priority, which says when, not what: a monitor re-posting, with operator priority, feedback it first posted
    without (an upgrade in between) is the same send, not a conflict."""
    key = [endpoint, request.recipient_jid, request.text, list(request.mentioned_jids), media.sha256 if media else None]
    if context := {k: v for k, v in (request.context or {}).items() if k != "priority"}:
        key.append(context)
    return hashlib.sha256(json.dumps(key, ensure_ascii=True).encode()).hexdigest()


def reply(row: OutboxRow, paused: str = "", position: int | None = None, in_s: float | None = None) -> tuple[int, dict]:
    """The HTTP answer for an outbox row: 200 sent, 202 queued (`paused`: why sending waits; `position` and
    `in_s`: its place in the paced queue and when it is expected out; else not connected); never to be sent:
    404 unknown group, 403 not a member of it, else 422 (refused, dead-lettered).

    422, not 500: the bridge is fine; this message cannot be delivered as asked, and repeating it will not help.
    """
    if row.status == "sent":
        return 200, {"success": True, "message": f"Message sent to {row.recipient}", "id": row.message_id}
    if row.status == "withdrawn":
        return 409, {"success": False, "withdrawn": True, "id": row.message_id,
                     "message": f"Withdrawn, not sent: {row.error}"}
    if row.status == "pending":
        if paused:
            why = f"Sending paused ({paused}): queued for {row.recipient}, sent when the pause ends"
        elif position is None and row.fence is not None:
            why = (f"Queued for {row.recipient}: waits until its sender lease ({row.fence.lease}, token "
                   f"{row.fence.token}) is known to be valid")
        elif position is not None:
            why = f"Paced: queued for {row.recipient} at position {position}, expected out in {in_s or 0:.0f} s"
        else:
            why = f"Not connected to WhatsApp: queued for {row.recipient}, sent on reconnect"
        body = {"success": True, "queued": True, "id": row.message_id, "message": why}
        if position is not None:
            body["position"] = position
            body["expected_at"] = _wall(in_s or 0.0)
        return 202, body
    return refusal_status(row.error or ""), {"success": False, "id": row.message_id,
                                             "message": f"Error sending message: {row.error}"}


def _wall(in_s: float) -> str:
    """A moment `in_s` seconds from now, for people (UTC, ISO 8601)."""
    return (clock.now() + timedelta(seconds=max(0.0, in_s))).isoformat(timespec="seconds")


def queued(row: OutboxRow) -> Queued:
    """What the pace needs of a row."""
    context = row.context or {}
    return Queued(row.seq, row.recipient_jid, str(context.get("priority", "")), "reaction" in context, len(row.text))


class Outbox:
    def __init__(self, store: Store, transport: Transport, own_jid: str, send_timeout: float = SEND_TIMEOUT,
                 is_connected: Callable[[], bool] = lambda: True,
                 on_dead_letter: Callable[[OutboxRow, str], None] = lambda row, reason: None,
                 max_attempts: int = MAX_ATTEMPTS, delivery_wait: float = DELIVERY_WAIT,
                 dedupe_window: float = DEDUPE_WINDOW, pause: SendPause | None = None,
                 pacer: Pacer | None = None, fences: Fences | None = None) -> None:
        self.store = store
        self.transport = transport
        self.own_jid = own_jid
        self.send_timeout = send_timeout
        self.is_connected = is_connected
        self.on_dead_letter = on_dead_letter
        self.max_attempts = max_attempts
        self.delivery_wait = delivery_wait
        self.dedupe_window = dedupe_window
        self.pause = pause or SendPause()
        self.pacer = pacer or Pacer(PaceConfig(per_minute=0, per_hour=0, per_day=0, chat_gap_s=0, chat_jitter_s=0,
                                               typing=False, ramp_s=0))
        self.fences = fences or Fences()
        self._in_flight: int | None = None  # seq of the row handed to WhatsApp right now (never withdrawn)
        self._lock = asyncio.Lock()
        self._done: dict[str, asyncio.Event] = {}  # message id -> set once sent or dead
        self._resume: asyncio.Task | None = None  # drains when the next row is due or the pause is over
        self._wake_at: float | None = None  # pacer time of that drain
        self._poke = asyncio.Event()  # an earlier wake-up was asked for
        self._heard = asyncio.Event()  # set (and replaced) at each word of a lease keeper
        self._count_sent_before()

    def _count_sent_before(self) -> None:
        """A restarted bridge keeps to the pace: what it sent in the last day counts (budgets, each chat's gap)."""
        now, mono = clock.now(), self.pacer.now()
        for row in self.store.outbox_recent_sent(max(self.pacer.pace.per_day, RECENT_SENT)):
            age = (now - parse_ts(row.sent_at)).total_seconds() if row.sent_at else None
            if age is not None and age < 86400:  # WhatsApp's timestamp may be a little ahead of ours: now, then
                self.pacer.record(row.recipient_jid, "reaction" in (row.context or {}), at=mono - max(0.0, age))

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def submit(self, request: SendRequest, media: StagedMedia | None, idempotency_key: str | None,
                     endpoint: str, fence: SendFence | None = None) -> tuple[int, dict]:
        """Queue durably (or find the same send queued before), then try to send it now. A send under a
        superseded `fence` is not queued: 409 withdrawn (its key's pending row, if any, is withdrawn too)."""
        window = self.dedupe_window if idempotency_key is None and self.dedupe_window > 0 else None
        try:
            if fence is not None and self.fences.superseded(fence):
                return self._superseded(fence, idempotency_key)
            row = self.store.outbox_add(
                new_message_id(self.own_jid, idempotency_key), idempotency_key, request.recipient,
                request.recipient_jid, request.text, request.mentioned_jids, str(media.media.path) if media else None,
                media.media.media_type if media else None, endpoint, fingerprint(endpoint, request, media), window,
                request.context, fence)
        finally:
            if media is not None and not self._owns(media):
                media_files.discard(media.media.path)  # refused, or a repeat: the first copy is the one sent
        if row.status == "pending":
            await self._settle(row)
            row = self.store.outbox_row(row.message_id) or row
        if row.status == "pending" and not self.busy:  # a drain under way plans again after its send: it sees this
            await self.drain()
            row = self.store.outbox_row(row.message_id) or row
        position, in_s = self._expected(row)
        if (row.status == "pending" and idempotency_key is None and self.delivery_wait > 0
                and (in_s is None or in_s <= self.delivery_wait)):
            row = await self._wait_for_delivery(row)
            position, in_s = self._expected(row)
        paused = self.pause.reason if self.pause.remaining() else ""
        if row.status == "pending" and not self.fences.allows(row.fence):
            position = None
        if row.status == "pending":
            logger.info("queued {} to {}: {} ({} in the outbox)", row.message_id, row.recipient_jid,
                        paused or (f"paced, position {position}" if position else "not connected"),
                        self.store.outbox_depth())
        return reply(row, paused, position if self.is_connected() else None, in_s)

    async def _settle(self, row: OutboxRow) -> None:
        """Answer what happened rather than 202 for a row about to go: a 202 recorded by the sender after the
        send's receipts were read would leave it waiting for them. A fenced row of a token not known valid waits
        for the word of its lease's keeper, if one speaks to this bridge (it follows a new grant at once); a row
        due now waits for a drain under way (it plans again after each send, and sends it)."""
        if row.fence is not None and not self.fences.allows(row.fence) and self.fences.knows(row.fence.lease):
            await wait_event(self._heard, SETTLE_WAIT)
        if not self.busy or not self.fences.allows(row.fence):
            return
        _, in_s = self._expected(row)
        if in_s is not None and in_s <= 0:
            try:
                await asyncio.wait_for(self._lock.acquire(), SETTLE_WAIT)
            except TimeoutError:
                return
            self._lock.release()

    def _superseded(self, fence: SendFence, idempotency_key: str | None) -> tuple[int, dict]:
        row = self.store.outbox_by_key(idempotency_key) if idempotency_key else None
        if row is None:
            return 409, {"success": False, "withdrawn": True,
                         "message": f"Withdrawn, not queued: {_superseded_reason(fence)}"}
        if row.status == "pending":
            self._withdraw([row], _superseded_reason(fence))
            row = self.store.outbox_row(row.message_id) or row
        return reply(row)

    def fence_word(self, word: FenceWord) -> dict:
        """The lease keeper's word (POST /api/fence): the lease as this bridge knows it now and, when the word
        changed the token or said one lost, the message ids of the lease's rows of superseded tokens withdrawn
        (by this word or before, queued in the last day: a keeper that missed an answer, or started after it,
        hears it again; giving those rows back to the holder is idempotent). Rows that may go now are drained."""
        lease, was = word.fence.lease, self.fences.allows(word.fence)
        if word.valid_until is None:
            changed = self.fences.lost(lease, word.fence.token)
        else:
            changed = self.fences.renewed(lease, word.fence.token, word.valid_until, word.keeper)
        self._heard.set()
        self._heard = asyncio.Event()
        withdrawn: list[str] = []
        up_to = self.fences.superseded_up_to(lease)
        if up_to and (changed or word.valid_until is None):  # a renewal of the same token supersedes nothing
            self._withdraw_superseded(self.store.outbox_pending(limit=PLAN_LIMIT))
            withdrawn = self.store.outbox_withdrawn(lease, up_to, format_ts(clock.now() - timedelta(days=1)))
        if not was and self.fences.allows(word.fence) and self.store.outbox_depth():
            self._wake(0.0)
        return {**self.fences.snapshot(lease), "withdrawn": withdrawn}

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
        return self._withdraw(superseded, _superseded_reason(superseded[0].fence)) if superseded else []  # type: ignore[arg-type]

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

    def _expected(self, row: OutboxRow) -> tuple[int | None, float | None]:
        """A pending row's place in the paced queue and seconds until it is expected out."""
        if row.status != "pending":
            return None, None
        plan = self.plan()
        position = plan.position(row.seq)
        if position is None:  # beyond the rows projected one by one: last, at the extrapolated end
            return self.store.outbox_depth(), (plan.drained_at or self.pacer.now()) - self.pacer.now()
        return position, plan.order[position - 1][1] - self.pacer.now()

    def plan(self) -> Plan:
        """The pending rows projected onto the pace (bridge/pace.py)."""
        return self.pacer.plan([queued(r) for r in self.store.outbox_pending(limit=PLAN_LIMIT)],
                               self.store.outbox_depth())

    def sending(self) -> dict:
        """`sending` in GET /api/health: the pause (bridge/send_pause.py), the queue's depth, when its next row is
        due (UTC) and in how many seconds it is expected empty."""
        plan = self.plan()
        now = self.pacer.now()
        pause = self.pause.remaining()
        next_in = max(plan.order[0][1] - now, pause) if plan.order else None
        drained_in = max(plan.drained_at - now, pause) if plan.drained_at is not None else None
        return {**self.pause.snapshot(), "depth": self.store.outbox_depth(),
                "next_send_at": _wall(next_in) if next_in is not None else None,
                "next_send_s": round(next_in, 1) if next_in is not None else None,
                "drain_s": round(drained_in, 1) if drained_in is not None else 0.0}

    def _owns(self, media: StagedMedia) -> bool:
        """True if an outbox row sends this staged copy."""
        return self.store.conn.execute("SELECT 1 FROM outbox_requests WHERE staged_media = ?",
                                       (str(media.media.path),)).fetchone() is not None

    async def _wait_for_delivery(self, row: OutboxRow) -> OutboxRow:
        done = self._done.setdefault(row.message_id, asyncio.Event())
        await wait_event(done, self.delivery_wait)
        self._done.pop(row.message_id, None)
        return self.store.outbox_row(row.message_id) or row

    async def drain(self) -> int:
        """Send the rows that are due, in the pace's order, until none is due, the queue is empty, sending is
        paused or the connection is gone (a later drain is scheduled for the first two). Returns how many were sent.
        """
        sent = 0
        async with self._lock:
            while True:
                if self.pause.remaining():
                    self._wake(self.pause.remaining())
                    return sent
                pending = self._sendable(self.store.outbox_pending(limit=PLAN_LIMIT))
                plan = self.pacer.plan([queued(r) for r in pending.values()], limit=1)
                if not plan.order:
                    return sent
                first, due = plan.order[0]
                if due > self.pacer.now():
                    self._wake(due - self.pacer.now())
                    return sent
                row = pending[first.seq]
                await self._typing(row, first)
                row = self.store.outbox_row(row.message_id) or row
                if row.status != "pending" or not self.fences.allows(row.fence):
                    continue  # withdrawn, or its lease ran out, while "typing…": planned again without it
                outcome = await self._send(row)  # checked just now: nothing awaits before the send
                if outcome is None:
                    return sent
                if outcome:
                    self.pacer.record(first.chat, first.reaction)
                sent += outcome

    async def _typing(self, row: OutboxRow, head: Queued) -> None:
        """"typing…" in the chat for as long as a person would take to type the text (best effort)."""
        seconds = 0.0 if head.reaction or row.media_path else self.pacer.pace.typing_s(row.text)
        if seconds <= 0 or not self.is_connected():
            return
        try:
            await self.transport.typing(row.recipient_jid, True)
        except (NotConnected, SendFailed) as exc:
            logger.debug("typing in {}: {}", row.recipient_jid, exc)
            return
        await asyncio.sleep(seconds)

    def _wake(self, delay: float) -> None:
        """Drain again in `delay` seconds (one waiting task; an earlier wake-up wins)."""
        at = self.pacer.now() + delay
        if self._wake_at is None or at < self._wake_at:
            self._wake_at = at
            self._poke.set()
        if self._resume is None or self._resume.done():
            self._resume = asyncio.ensure_future(self._drain_when_due())

    async def _drain_when_due(self) -> None:
        while self._wake_at is not None:
            self._poke.clear()
            left = self._wake_at - self.pacer.now()
            if left > 0:
                await wait_event(self._poke, left)
                continue
            self._wake_at = None
            if not self.is_connected():
                return  # the reconnect drains
            await self.drain()

    def close(self) -> None:
        """Stop waiting for a pause to end (the bridge is stopping; the rows stay queued)."""
        if self._resume is not None:
            self._resume.cancel()

    async def _send(self, row: OutboxRow) -> int | None:
        """1 = sent, 0 = dead-lettered, None = not connected, no answer or rate-limited (stays pending)."""
        counted = self.is_connected()
        if counted:
            attempts = self.store.outbox_attempt(row)
            if attempts > self.max_attempts:
                self._dead(row, f"dead-lettered after {self.max_attempts} attempts: no answer, or the connection "
                                "dropped, each time")
                return 0
        media = OutgoingMedia(Path(row.media_path), row.media_type or "document", Path(row.media_path).name) \
            if row.media_path else None
        quote, reaction = context_parts(row.context)
        message = OutgoingMessage(row.message_id, row.recipient_jid, row.text, row.mentioned_jids, media, quote, reaction)
        self._in_flight = row.seq  # from here the send is WhatsApp's: a withdraw leaves it
        try:
            result = await asyncio.wait_for(self.transport.send(message), self.send_timeout)
        except NotConnected:
            return None
        except RateLimited as exc:
            if counted:
                self.store.outbox_attempt(row, -1)  # answered: not an attempt lost to a dropped connection
            delay = self.pause.rate_limited(str(exc))
            logger.warning("send {} to {}: {}; the account pauses {:.3g} s, the message stays queued", row.message_id,
                           row.recipient_jid, exc, delay)
            self._wake(delay)
            return None
        except TimeoutError:
            logger.warning("send {} to {}: no answer within {}s; stays queued", row.message_id, row.recipient_jid,
                           self.send_timeout)
            return None
        except (SendFailed, OSError) as exc:
            self._dead(row, str(exc) or type(exc).__name__)
            return 0
        finally:
            self._in_flight = None
        stored = IncomingMessage(
            id=result.message_id, chat_jid=row.recipient_jid, sender_jid=self.own_jid, text=row.text,
            timestamp=result.timestamp if result.timestamp.tzinfo else result.timestamp.replace(tzinfo=timezone.utc),
            source=Source.SENT, is_from_me=True,
            media=MediaInfo(media.media_type, media.filename, "") if media else None,
            quoted_message_id=quote.message_id if quote else None)
        self.store.outbox_sent(row, stored, store_message=reaction is None)
        self.pause.sent()
        self._finished(row)
        logger.info("sent {} to {}{}", row.message_id, row.recipient_jid,
                    f" mentioning {', '.join(row.mentioned_jids)}" if row.mentioned_jids else "")
        return 1

    def _dead(self, row: OutboxRow, reason: str) -> None:
        logger.error("send {} to {} failed for good: {}", row.message_id, row.recipient_jid, reason)
        self.store.outbox_failed(row, reason)
        self._finished(row)
        self.on_dead_letter(row, reason)

    def _finished(self, row: OutboxRow) -> None:
        staged = self.store.outbox_staged_media(row)
        if staged:
            media_files.discard(Path(staged))
        done = self._done.get(row.message_id)
        if done is not None:
            done.set()


def _superseded_reason(fence: SendFence) -> str:
    return f"its sender lease {fence.lease} (token {fence.token}) is no longer valid"
