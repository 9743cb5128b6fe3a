"""The neonize transport's requests to WhatsApp: send (text, media, reaction; mentions by LID in LID-addressed
groups), mark read, typing, the joined groups, media download. A part of NeonizeTransport
(bridge/transports/neonize_transport.py). Send errors are WhatsApp's codes (bridge/refusals.py): rate-overlimit
pauses the account, a refusal for one contact fails that message.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Protocol

from loguru import logger
from neonize.exc import (DownloadError, GetGroupInfoError, GetJIDFromStoreError, MarkReadError, NeonizeError,
                         SendMessageError, SendPresenceError, UploadError)
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, ReceiptType

from bridge import refusals
from bridge.config import AccountConfig
from bridge.transport import (AnswerLost, HistoryUnsupported, IncomingMessage, MediaInfo, NotConnected,
                              OutgoingMessage, SendFailed, SendResult)
from bridge.transports import neonize_mapping as mapping
from watchdog.shared import clock

HISTORY_LIMIT = (
    "neonize 0.5.2 cannot send whatsmeow's on-demand history-sync request: it must go out as a peer message "
    "(SendRequestExtra{Peer: true}) to the account's own number, but neonize's SendMessage export always passes "
    "SendRequestExtra{} (no Peer, no ID), and its only export that takes a SendRequestExtra (SendFBMessage) sends "
    "a v3 FB ConsumerApplication, for which whatsmeow refuses peer messages; windows on this transport are "
    "backfilled from WhatsApp's offline queue only (docs/NEONIZE.md)")
NOT_CONNECTED_HINTS = ("not connected", "websocket", "timed out", "timeout", "context canceled", "connection")
# whatsmeow's errors once the message node was written to the socket (send.go: a DisconnectedError for
# "message send", ErrMessageTimedOut): WhatsApp may have it. The others above come before (a device-list query,
# sendNode's ErrNotConnected): nothing went.
ANSWER_LOST_HINTS = ("before message send returned", "waiting for message send response")


class NeonizeClient(Protocol):
    """The part of neonize's NewClient the transport uses: the seam tests replace to fake the network."""

    event: Callable

    def connect(self) -> None: ...
    def stop(self) -> None: ...
    def send_message(self, to: nz.JID, message: object) -> nz.SendResponse: ...
    def upload(self, binary: bytes, media_type: object = None) -> nz.UploadResponse: ...
    def download_any(self, message: object) -> bytes: ...
    def get_group_info(self, jid: nz.JID) -> nz.GroupInfo: ...
    def get_joined_groups(self) -> Sequence[nz.GroupInfo]: ...
    def get_lid_from_pn(self, jid: nz.JID) -> nz.JID: ...
    def build_reaction(self, chat: nz.JID, sender: nz.JID, message_id: str, reaction: str) -> object: ...
    def mark_read(self, *message_ids: str, chat: nz.JID, sender: nz.JID, receipt: ReceiptType,
                  timestamp: int | None = None) -> None: ...
    def send_chat_presence(self, jid: nz.JID, state: ChatPresence, media: ChatPresenceMedia) -> None: ...


def _classify(exc: Exception) -> Exception:
    """A neonize send/upload error as RateLimited (the account pauses), SendFailed with WhatsApp's code and
    meaning (it will not work), AnswerLost (handed over, no answer: the outbox must not simply resend, the id is
    WhatsApp's) or NotConnected (nothing went: the outbox retries)."""
    text = str(exc)
    if (refused := refusals.classify(refusals.server_code(text), text)) is not None:
        return refused
    if any(hint in text.lower() for hint in ANSWER_LOST_HINTS):
        return AnswerLost(f"WhatsApp: {text}")
    if any(hint in text.lower() for hint in NOT_CONNECTED_HINTS):
        return NotConnected(f"WhatsApp: {text}")
    return SendFailed(f"WhatsApp refused the message: {text}")


class NeonizeRequests:
    _account: AccountConfig
    _client: NeonizeClient | None
    _connected: bool
    _lid_groups: dict[str, bool]

    def _live_client(self) -> NeonizeClient:
        client = self._client
        if client is None or not self._connected:
            raise NotConnected("not connected to WhatsApp")
        return client

    async def send(self, message: OutgoingMessage) -> SendResult:
        client = self._live_client()
        media_bytes = None
        if message.media is not None:
            try:
                media_bytes = await asyncio.to_thread(message.media.path.read_bytes)
            except OSError as exc:
                raise SendFailed(f"cannot read media {message.media.path}: {exc.strerror or exc}") from None
        return await asyncio.to_thread(self._send_blocking, client, message, media_bytes)

    def _send_blocking(self, client: NeonizeClient, message: OutgoingMessage, media_bytes: bytes | None) -> SendResult:
        text, mentioned = message.text, list(message.mentioned_jids)
        if mentioned and message.recipient_jid.endswith(f"@{mapping.GROUP_SERVER}"):
            text, mentioned = mapping.with_lids(text, mentioned, self._lids(client, message.recipient_jid, mentioned))
        try:
            if message.reaction is not None:  # whatsmeow's BuildReaction: the reacted message's key, the emoji
                reaction = message.reaction
                sender = self._account.jid if reaction.from_me else reaction.sender_jid
                payload = client.build_reaction(mapping.parse_jid(message.recipient_jid), mapping.parse_jid(sender),
                                                reaction.message_id, reaction.emoji)
            elif message.media is not None and media_bytes is not None:
                upload = client.upload(media_bytes, mapping.UPLOAD_TYPE[message.media.media_type])
                payload = mapping.media_message(message.media.media_type, upload, message.media.filename, text, mentioned,
                                                message.quote)
            else:
                payload = mapping.text_message(text, mentioned, message.quote)
            response = client.send_message(mapping.parse_jid(message.recipient_jid), payload)
        except (SendMessageError, UploadError) as exc:
            raise _classify(exc) from None
        # neonize cannot send with our pre-chosen id (see docs/NEONIZE.md): WhatsApp's id is the message's id.
        return SendResult(response.ID, mapping.from_unix(response.Timestamp) if response.Timestamp else clock.now())

    def _lids(self, client: NeonizeClient, group_jid: str, mentioned: list[str]) -> dict[str, str]:
        """LIDs of the mentioned numbers when the group is addressed by LID (else {}: mention by number)."""
        if not self._lid_addressed(client, group_jid):
            return {}
        lids = {}
        for jid in mentioned:
            if not jid.endswith(f"@{mapping.USER_SERVER}"):
                continue
            with contextlib.suppress(GetJIDFromStoreError):
                lid = client.get_lid_from_pn(mapping.parse_jid(jid))
                if lid.User:
                    lids[jid] = f"{lid.User}@{mapping.LID_SERVER}"
        return lids

    def _lid_addressed(self, client: NeonizeClient, group_jid: str) -> bool:
        """From the group's last message, else from its participant list (whose JIDs are LIDs in LID groups)."""
        if group_jid not in self._lid_groups:
            try:
                info = client.get_group_info(mapping.parse_jid(group_jid))
            except GetGroupInfoError as exc:
                logger.warning("neonize transport: group info of {} unavailable ({}); mentioning by number",
                               group_jid, exc)
                return False
            self._lid_groups[group_jid] = any(p.JID.Server == mapping.LID_SERVER for p in info.Participants)
        return self._lid_groups[group_jid]

    async def mark_read(self, chat_jid: str, sender_jid: str, message_ids: tuple[str, ...], at: datetime) -> None:
        client = self._live_client()
        chat = mapping.parse_jid(chat_jid)
        try:
            await asyncio.to_thread(functools.partial(
                client.mark_read, *message_ids, chat=chat, sender=mapping.parse_jid(sender_jid) if sender_jid else chat,
                receipt=ReceiptType.READ, timestamp=int(at.timestamp())))
        except MarkReadError as exc:
            raise _classify(exc) from None

    async def typing(self, chat_jid: str, composing: bool) -> None:
        client = self._live_client()
        state = ChatPresence.CHAT_PRESENCE_COMPOSING if composing else ChatPresence.CHAT_PRESENCE_PAUSED
        try:
            await asyncio.to_thread(client.send_chat_presence, mapping.parse_jid(chat_jid), state,
                                    ChatPresenceMedia.CHAT_PRESENCE_MEDIA_TEXT)
        except SendPresenceError as exc:
            raise _classify(exc) from None

    async def joined_groups(self) -> list[str]:
        client = self._live_client()
        try:
            return mapping.group_jids(await asyncio.to_thread(client.get_joined_groups))
        except NeonizeError as exc:  # GetJoinedGroupsError and the like: not known now, asked again later
            raise NotConnected(f"WhatsApp did not list the joined groups: {exc}") from None

    async def request_history(self, chat_jid: str, since: datetime, until: datetime) -> list[IncomingMessage]:
        raise HistoryUnsupported(HISTORY_LIMIT)

    async def download(self, media: MediaInfo) -> bytes:
        client = self._live_client()
        try:
            return await asyncio.to_thread(client.download_any, mapping.download_message(media))
        except DownloadError as exc:
            raise OSError(f"WhatsApp media download failed: {exc}") from None
