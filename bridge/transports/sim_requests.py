"""The sim transport's requests to the simulator: one frame, its answer matched by `req` (NotConnected if it could
not be written, AnswerLost if the connection ended before the answer); send (media read and encoded in a thread),
mark read, typing, history, the joined groups, media download. A part of SimTransport (bridge/transports/sim.py).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
from datetime import datetime

import aiohttp
from loguru import logger

from bridge import refusals
from bridge.transport import (AnswerLost, IncomingMessage, MediaInfo, NotConnected, OutgoingMedia, OutgoingMessage,
                              SendFailed, SendResult, Source)

REQUEST_TIMEOUT = 10.0


def incoming_message(raw: dict, source: Source, own_jid: str) -> IncomingMessage:
    """A message as the wire carries it (a `messages` frame, a history reply)."""
    media = raw.get("media")
    return IncomingMessage(
        id=raw["id"], chat_jid=raw["chat_jid"], sender_jid=raw["sender_jid"], text=raw["text"],
        timestamp=datetime.fromisoformat(raw["timestamp"]), source=source,
        is_from_me=raw["sender_jid"] == own_jid, chat_name=raw.get("chat_name"),
        quoted_message_id=raw.get("quoted_message_id"),
        media=MediaInfo(media["type"], media["filename"], media["url"], base64.b64decode(media["media_key"]),
                        base64.b64decode(media["file_sha256"]), base64.b64decode(media["file_enc_sha256"]),
                        media["file_length"]) if media else None)


_DATA = "\u0000data\u0000"  # stands in for the base64 media bytes until they are spliced in


def _frame_bytes(body: dict, media: OutgoingMedia | None) -> bytes:
    """The frame as UTF-8 JSON; media read and base64-encoded straight into bytes.

    Splicing the base64 (which JSON needs no escaping for) instead of letting json.dumps scan a
    100 MB string keeps the GIL-holding work per send small: this runs in a thread beside the loop.
    """
    if media is None:
        return json.dumps(body).encode()
    try:
        data = media.path.read_bytes()
    except OSError as exc:
        raise SendFailed(f"cannot read media {media.path}: {exc.strerror or exc}") from None
    text = json.dumps({**body, "media": {"type": media.media_type, "filename": media.filename, "data_b64": _DATA}})
    head, tail = text.encode().split(json.dumps(_DATA).encode())
    return b"".join((head, b'"', base64.b64encode(data), b'"', tail))


class SimRequests:
    _jid: str
    _socket: aiohttp.ClientWebSocketResponse | None
    _connected: bool
    _pending: dict[int, asyncio.Future[dict]]
    _requests: itertools.count

    async def _request(self, frame: dict, media: OutgoingMedia | None = None) -> dict:
        """The simulator's answer to `frame`: NotConnected if it could not be written, AnswerLost if it was and the
        connection ended (or nothing answered) before the answer (a send may then be in the chat)."""
        ws = self._socket
        if ws is None or ws.closed or not self._connected:
            raise NotConnected("not connected to the simulator")
        req = next(self._requests)
        future: asyncio.Future[dict] = asyncio.get_running_loop().create_future()
        self._pending[req] = future
        try:
            body = {**frame, "req": req}
            try:
                if media is None:
                    await ws.send_str(json.dumps(body))
                else:  # read and encoded in a thread: up to 100 MB must not stall the loop
                    await ws.send_frame(await asyncio.to_thread(_frame_bytes, body, media), aiohttp.WSMsgType.TEXT)
            except (ConnectionError, aiohttp.ClientError) as exc:
                raise NotConnected(f"connection lost: {exc}") from None
            try:
                return await asyncio.wait_for(future, REQUEST_TIMEOUT)
            except NotConnected as exc:
                raise AnswerLost(str(exc)) from None
            except asyncio.TimeoutError:
                raise AnswerLost(f"no reply from the simulator within {REQUEST_TIMEOUT:g}s") from None
        finally:
            self._pending.pop(req, None)

    async def send(self, message: OutgoingMessage) -> SendResult:
        frame: dict = {"type": "send", "id": message.message_id, "recipient": message.recipient_jid,
                       "text": message.text, "mentioned_jids": list(message.mentioned_jids)}
        if message.quote is not None:
            frame["quote"] = vars(message.quote)
        if message.reaction is not None:
            frame["reaction"] = vars(message.reaction)
        reply = await self._request(frame, message.media)
        if not reply.get("ok"):
            error = str(reply.get("error") or "refused by the simulator")
            code = reply.get("code")
            raise refusals.classify(code if isinstance(code, int) else None, error) or SendFailed(error)
        return SendResult(reply["id"], datetime.fromisoformat(reply["timestamp"]))

    async def mark_read(self, chat_jid: str, sender_jid: str, message_ids: tuple[str, ...], at: datetime) -> None:
        await self._ask({"type": "read", "chat_jid": chat_jid, "sender_jid": sender_jid,
                         "message_ids": list(message_ids), "at": at.isoformat()})

    async def typing(self, chat_jid: str, composing: bool) -> None:
        await self._ask({"type": "presence", "chat_jid": chat_jid, "composing": composing})

    async def _ask(self, frame: dict) -> None:
        reply = await self._request(frame)
        if not reply.get("ok"):
            raise SendFailed(str(reply.get("error") or "refused by the simulator"))

    async def request_history(self, chat_jid: str, since: datetime, until: datetime) -> list[IncomingMessage]:
        reply = await self._request({"type": "history", "chat_jid": chat_jid,
                                     "since": since.isoformat(), "until": until.isoformat()})
        if not reply.get("ok"):
            logger.warning("sim transport: history of {} refused: {}", chat_jid, reply.get("error"))
            return []
        return [incoming_message(raw, Source.HISTORY, self._jid) for raw in reply["messages"]]

    async def joined_groups(self) -> list[str]:
        reply = await self._request({"type": "groups"})
        if not reply.get("ok"):  # not known: never an empty list, which would mean "in no group"
            raise NotConnected(f"the simulator did not list the groups: {reply.get('error')}")
        return [str(jid) for jid in reply.get("groups") or []]

    async def download(self, media: MediaInfo) -> bytes:
        reply = await self._request({"type": "download", "url": media.url})
        if not reply.get("ok"):
            raise FileNotFoundError(f"simulator: {reply.get('error')}")
        return base64.b64decode(reply["data_b64"])
