"""`/api/download` as whatsapp-mcp does it: save a received media file under the download folder.

Names come from other people's messages, so the chat folder and file name are
reduced to safe single path components of bounded length: a download can never
write outside `account.download_dir`. Each message gets its own folder
(`<chat>/<message id>/<file name>`): two media with the same file name in one
chat are two files.
"""
from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bridge.sending import BadRequest, json_object, parse_jid
from bridge.store import Store
from bridge.transport import Transport

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")
MAX_COMPONENT = 120  # characters of a name we write (ASCII after cleaning): far below the 255-byte limit
MAX_ID = 200


@dataclass(frozen=True)
class Downloaded:
    media_type: str
    filename: str
    path: Path


class DownloadError(Exception):
    """The download failed; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def safe_filename(name: str, fallback: str) -> str:
    """One safe path component, at most MAX_COMPONENT characters, keeping a short extension."""
    cleaned = _UNSAFE.sub("_", Path(name).name).strip(" .")
    if len(cleaned) > MAX_COMPONENT:
        stem, dot, suffix = cleaned.rpartition(".")
        suffix = suffix[:10] if dot and stem else ""
        cleaned = cleaned[:MAX_COMPONENT - len(suffix) - 1].rstrip(" .") + (f".{suffix}" if suffix else "")
    return cleaned or fallback


def parse_download(body: object) -> tuple[str, str]:
    body = json_object(body, ("message_id", "chat_jid"))
    if not body.get("message_id") or not body.get("chat_jid"):
        raise BadRequest("Message ID and Chat JID are required")
    message_id, chat_jid = body["message_id"], body["chat_jid"]
    if not isinstance(message_id, str):
        raise BadRequest("message_id must be a string")
    if len(message_id) > MAX_ID:
        raise BadRequest(f"message_id longer than {MAX_ID} characters")
    return message_id, parse_jid(chat_jid, "chat_jid")


async def download_media(store: Store, transport: Transport, download_dir: Path, message_id: str,
                         chat_jid: str) -> Downloaded:
    media = store.media_of(message_id, chat_jid)
    if media is None:
        raise DownloadError(404, f"Failed to download media: no message {message_id} in {chat_jid}")
    if not media.media_type:
        raise DownloadError(400, "Failed to download media: not a media message")
    folder = download_dir / chat_jid.replace(":", "_") / safe_filename(message_id, "message")
    filename = safe_filename(media.filename, f"{media.media_type}_{safe_filename(message_id, 'media')}")
    path = folder / filename
    if not path.exists():
        try:
            data = await transport.download(media)
        except OSError as exc:
            raise DownloadError(502, f"Failed to download media: {exc}") from None
        await asyncio.to_thread(_save, path, data)
    return Downloaded(media.media_type, filename, path.resolve())


def _save(path: Path, data: bytes) -> None:
    """Write atomically into a private folder (received media are messages)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)
