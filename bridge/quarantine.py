"""Poison messages: what the store cannot hold as received is stored sanitised, or set aside with its raw payload.

Why: one message that cannot be encoded (a lone surrogate from a buggy client)
used to fail its whole batch; the batch was never acknowledged, so the offline
replay failed again after every reconnect, and the good messages in it were
never stored. Now a text with lone surrogates is stored with U+FFFD in their
place (drop numbers in it are still found) and a message that cannot be stored
at all is kept only in `quarantine`; both leave a record there with the raw
payload (JSON, `\\udfff` escapes intact), health counts them, and the bridge
writes a recovery-log `quarantine` record.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import re
from dataclasses import dataclass

from bridge.transport import IncomingMessage, MediaInfo

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


@dataclass(frozen=True)
class Quarantined:
    message_id: str
    chat_jid: str
    action: str  # sanitised (stored with U+FFFD) | quarantined (not stored)
    reason: str
    raw: str

    def row(self) -> tuple[str, str, str, str, str]:
        return (self.message_id, self.chat_jid, self.action, self.reason, self.raw)


def clean(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD (valid UTF-8 from then on)."""
    return _SURROGATE.sub(REPLACEMENT, text)


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return str(value)


def raw_payload(message: object) -> str:
    """The message as JSON; ensure_ascii keeps lone surrogates as escapes, so nothing is lost."""
    body = dataclasses.asdict(message) if dataclasses.is_dataclass(message) else message
    return json.dumps(body, ensure_ascii=True, default=_json_default, sort_keys=True)


def quarantined(message: IncomingMessage, action: str, reason: str) -> Quarantined:
    return Quarantined(clean(str(message.id)), clean(str(message.chat_jid)), action, reason, raw_payload(message))


def sanitise(message: IncomingMessage) -> tuple[IncomingMessage, list[str]]:
    """The message with lone surrogates replaced in every text field, and the names of the fields changed."""
    changed: list[str] = []

    def fix(name: str, value: object) -> object:
        if isinstance(value, str) and _SURROGATE.search(value):
            changed.append(name)
            return clean(value)
        if isinstance(value, bytes) and name != "media.extra":  # protobuf (proto2) hands over invalid UTF-8 as bytes
            changed.append(name)
            return value.decode("utf-8", "replace")
        return value

    fields = {name: fix(name, getattr(message, name)) for name in ("id", "chat_jid", "sender_jid", "text", "chat_name")}
    media = message.media
    if isinstance(media, MediaInfo):
        media_fields = {name: fix(f"media.{name}", getattr(media, name)) for name in ("media_type", "filename", "url")}
        extra = {fix("media.extra", k if isinstance(k, str) else str(k)): fix("media.extra", v if isinstance(v, str) else str(v))
                 for k, v in media.extra.items()}
        media = dataclasses.replace(media, **media_fields, extra=extra)
    if not changed:
        return message, []
    return dataclasses.replace(message, **fields, media=media), sorted(set(changed))


def unmappable(message_id: object, chat_jid: object, reason: str, raw: str) -> Quarantined:
    """A transport event that could not even be read as a message (kept as the transport's raw bytes)."""
    return Quarantined(clean(str(message_id)), clean(str(chat_jid)), "quarantined", reason, raw)
