"""Nothing sent is lost: every send goes through a durable, ordered outbox.

The message id is chosen and committed before the first attempt, so a resend
after a crash or a timeout is the same WhatsApp message (the server dedupes
by id) and never a second one. One lock serializes sending, so the outbox
drains strictly in order, whether an API request or a reconnect triggers it.
"""
from __future__ import annotations

import asyncio
import secrets
from datetime import timezone
from pathlib import Path

from loguru import logger

from bridge.sending import SendRequest, refusal_status
from bridge.store import OutboxRow, Store
from bridge.transport import (IncomingMessage, MediaInfo, NotConnected, OutgoingMedia, OutgoingMessage, SendFailed,
                              Source, Transport)

SEND_TIMEOUT = 10.0  # an unanswered send stays pending and is retried (same id) later


def new_message_id() -> str:
    """A WhatsApp-style message id (`3EB0` + 18 hex digits, as whatsmeow generates)."""
    return "3EB0" + secrets.token_hex(9).upper()


def reply(row: OutboxRow) -> tuple[int, dict]:
    """The HTTP answer for an outbox row: 200 sent, 202 queued, 404 unknown recipient, 500 refused otherwise."""
    if row.status == "sent":
        return 200, {"success": True, "message": f"Message sent to {row.recipient}", "id": row.message_id}
    if row.status == "pending":
        return 202, {"success": True, "queued": True, "id": row.message_id,
                     "message": f"Not connected to WhatsApp: queued for {row.recipient}, sent on reconnect"}
    return refusal_status(row.error or ""), {"success": False, "id": row.message_id,
                                             "message": f"Error sending message: {row.error}"}


class Outbox:
    def __init__(self, store: Store, transport: Transport, own_jid: str, send_timeout: float = SEND_TIMEOUT) -> None:
        self.store = store
        self.transport = transport
        self.own_jid = own_jid
        self.send_timeout = send_timeout
        self._lock = asyncio.Lock()

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def submit(self, request: SendRequest, idempotency_key: str | None) -> tuple[int, dict]:
        """Queue durably, then try to send it (and anything queued before it) now."""
        media = request.media
        row = self.store.outbox_add(new_message_id(), idempotency_key, request.recipient, request.recipient_jid,
                                    request.text, request.mentioned_jids, str(media.path) if media else None,
                                    media.media_type if media else None)
        if row.status == "pending":
            await self.drain(until_seq=row.seq)
            row = self.store.outbox_row(row.message_id) or row
            if row.status == "pending":
                logger.info("queued {} to {}: not connected ({} in the outbox)", row.message_id, row.recipient_jid,
                            self.store.outbox_depth())
        return reply(row)

    async def drain(self, until_seq: int | None = None) -> int:
        """Send pending rows in order until empty, `until_seq` is done, or the connection is gone.

        Returns how many were sent.
        """
        sent = 0
        async with self._lock:
            while True:
                pending = self.store.outbox_pending(limit=50)
                if not pending:
                    return sent
                for row in pending:
                    if until_seq is not None and row.seq > until_seq:
                        return sent
                    outcome = await self._send(row)
                    if outcome is None:
                        return sent
                    sent += outcome

    async def _send(self, row: OutboxRow) -> int | None:
        """1 = sent, 0 = refused (marked failed), None = not connected (stays pending)."""
        media = OutgoingMedia(Path(row.media_path), row.media_type or "document", Path(row.media_path).name) \
            if row.media_path else None
        message = OutgoingMessage(row.message_id, row.recipient_jid, row.text, row.mentioned_jids, media)
        try:
            result = await asyncio.wait_for(self.transport.send(message), self.send_timeout)
        except NotConnected:
            return None
        except TimeoutError:
            logger.warning("send {} to {}: no answer within {}s; stays queued", row.message_id, row.recipient_jid,
                           self.send_timeout)
            return None
        except (SendFailed, OSError) as exc:
            logger.error("send {} to {} refused: {}", row.message_id, row.recipient_jid, exc)
            self.store.outbox_failed(row, str(exc) or type(exc).__name__)
            return 0
        stored = IncomingMessage(
            id=result.message_id, chat_jid=row.recipient_jid, sender_jid=self.own_jid, text=row.text,
            timestamp=result.timestamp if result.timestamp.tzinfo else result.timestamp.replace(tzinfo=timezone.utc),
            source=Source.SENT, is_from_me=True,
            media=MediaInfo(media.media_type, media.filename, "") if media else None)
        self.store.outbox_sent(row, stored)
        logger.info("sent {} to {}{}", row.message_id, row.recipient_jid,
                    f" mentioning {', '.join(row.mentioned_jids)}" if row.mentioned_jids else "")
        return 1

