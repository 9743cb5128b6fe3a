"""`/api/download` as whatsapp-mcp does it: save a received media file under the download folder.

Names come from other people's messages, so the chat folder and file name are
reduced to safe single path components: a download can never write outside
`account.download_dir`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bridge.sending import BadRequest, parse_jid
from bridge.store import Store
from bridge.transport import Transport

_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]")


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
    cleaned = _UNSAFE.sub("_", Path(name).name).strip(" .")
    return cleaned or fallback


def parse_download(body: object) -> tuple[str, str]:
    if not isinstance(body, dict) or not body.get("message_id") or not body.get("chat_jid"):
        raise BadRequest("Message ID and Chat JID are required")
    message_id, chat_jid = body["message_id"], body["chat_jid"]
    if not isinstance(message_id, str):
        raise BadRequest("message_id must be a string")
    return message_id, parse_jid(chat_jid, "chat_jid")


async def download_media(store: Store, transport: Transport, download_dir: Path, message_id: str,
                         chat_jid: str) -> Downloaded:
    media = store.media_of(message_id, chat_jid)
    if media is None:
        raise DownloadError(404, f"Failed to download media: no message {message_id} in {chat_jid}")
    if not media.media_type:
        raise DownloadError(400, "Failed to download media: not a media message")
    folder = download_dir / chat_jid.replace(":", "_")
    filename = safe_filename(media.filename, f"{media.media_type}_{safe_filename(message_id, 'media')}")
    path = folder / filename
    if not path.exists():
        try:
            data = await transport.download(media)
        except OSError as exc:
            raise DownloadError(502, f"Failed to download media: {exc}") from None
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{filename}.{os.getpid()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return Downloaded(media.media_type, filename, path.resolve())
