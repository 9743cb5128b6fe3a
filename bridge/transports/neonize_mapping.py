"""Pure mapping between neonize's protobuf objects and the transport interface.

No client, no network, no state: every function takes protobuf objects from
`neonize.proto` (what neonize 0.5.2 hands to event callbacks, or what it
sends) and returns the interface's dataclasses, or the reverse. The transport
(bridge/transports/neonize_transport.py) owns the client and the state; this
module is what the tests check message by message. Imported only by the
neonize transport, pairing and tests (importing neonize.proto loads neonize).
"""
from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone

from neonize.proto import Neonize_pb2 as nz
from neonize.proto.waE2E import WAWebProtobufsE2E_pb2 as e2e
from neonize.proto.waHistorySync import WAWebProtobufsHistorySync_pb2 as history
from neonize.proto.waWeb.WAWebProtobufsWeb_pb2 import WebMessageInfo
from neonize.utils.enum import MediaType

from bridge.transport import (ConnectionEvent, ConnectionKind, IncomingMessage, MediaInfo, Quote, Receipt, ReceiptKind,
                              Source)

USER_SERVER = "s.whatsapp.net"
LID_SERVER = "lid"
GROUP_SERVER = "g.us"

# waE2E.Message field -> MediaInfo.media_type (the whatsapp-mcp names), in the order they are looked for.
MEDIA_FIELDS = (("imageMessage", "image"), ("videoMessage", "video"), ("audioMessage", "audio"),
                ("documentMessage", "document"))
FIELD_OF_MEDIA = {media_type: field for field, media_type in MEDIA_FIELDS}
UPLOAD_TYPE = {"image": MediaType.MediaImage, "video": MediaType.MediaVideo, "audio": MediaType.MediaAudio,
               "document": MediaType.MediaDocument}
VOICE_NOTE_MIME = "audio/ogg; codecs=opus"  # what WhatsApp plays as a voice note (PTT)
MS_THRESHOLD = 100_000_000_000  # a Unix time above this is milliseconds (as seconds it would be the year 5138)


# -- JIDs and times -----------------------------------------------------------------------------------

def jid_string(jid: nz.JID) -> str:
    """`user@server` without agent or device: the chat/sender form the store keeps."""
    return f"{jid.User}@{jid.Server}" if jid.User else jid.Server


def group_jids(groups: Iterable[nz.GroupInfo]) -> list[str]:
    """The JIDs of neonize's joined groups (client.get_joined_groups()), as the store writes chat JIDs."""
    return sorted({jid_string(group.JID) for group in groups if group.JID.Server == GROUP_SERVER})


def parse_jid(text: str) -> nz.JID:
    """`user@server` (device suffix dropped) or a bare number as a neonize JID."""
    user, _, server = text.partition("@")
    return nz.JID(User=user.split(":")[0].split(".")[0], Server=server or USER_SERVER, Device=0, RawAgent=0,
                  Integrator=0, IsEmpty=False)


def bare_jid(text: str) -> str:
    """`user.agent:device@server` -> `user@server` for JIDs that arrive as strings (history sync)."""
    return jid_string(parse_jid(text)) if text else ""


def from_unix(value: int) -> datetime:
    """A neonize timestamp as an aware UTC datetime.

    neonize changed the unit of MessageInfo.Timestamp between releases (Unix
    seconds before, milliseconds in 0.5.x's encoder), and WebMessageInfo and
    SendResponse carry seconds; a value that can only be milliseconds is read
    as such, so a neonize upgrade cannot silently date messages in 1970 or 5138.
    """
    seconds = value / 1000 if value >= MS_THRESHOLD else value
    return datetime.fromtimestamp(seconds, timezone.utc)


# -- incoming messages ----------------------------------------------------------------------------------

def unwrap(message: e2e.Message) -> e2e.Message:
    """The content inside ephemeral / view-once / document-with-caption wrappers (history sync is raw)."""
    for wrapper in ("ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "documentWithCaptionMessage"):
        if message.HasField(wrapper) and getattr(message, wrapper).HasField("message"):
            return unwrap(getattr(message, wrapper).message)
    return message


def message_text(message: e2e.Message) -> str:
    """Text of a plain or extended text message, or the caption of a media message."""
    if message.conversation:
        return message.conversation
    if message.HasField("extendedTextMessage"):
        return message.extendedTextMessage.text
    for field, _ in MEDIA_FIELDS:
        if message.HasField(field):
            return getattr(getattr(message, field), "caption", "")
    return ""


def media_info(message: e2e.Message, at: datetime) -> MediaInfo | None:
    """Media metadata as whatsapp-mcp stores it, plus what whatsmeow needs to download it later."""
    for field, media_type in MEDIA_FIELDS:
        if not message.HasField(field):
            continue
        media = getattr(message, field)
        filename = getattr(media, "fileName", "") or _generated_name(media_type, media.mimetype, at)
        return MediaInfo(media_type=media_type, filename=filename, url=media.URL, media_key=media.mediaKey,
                         file_sha256=media.fileSHA256, file_enc_sha256=media.fileEncSHA256,
                         file_length=media.fileLength,
                         extra={"direct_path": media.directPath, "mimetype": media.mimetype})
    return None


def _generated_name(media_type: str, mimetype: str, at: datetime) -> str:
    """whatsapp-mcp's naming for media without a file name: `image_20261124_223127.jpg`."""
    extension = mimetypes.guess_extension(mimetype.split(";")[0].strip()) if mimetype else None
    extension = extension or ".bin"
    return f"{media_type}_{at:%Y%m%d_%H%M%S}{extension}"


def _content(message: e2e.Message, at: datetime) -> tuple[str, MediaInfo | None, str | None]:
    inner = unwrap(message)
    return message_text(inner), media_info(inner, at), quoted_id(inner)


def quoted_id(message: e2e.Message) -> str | None:
    """The id of the message this one replies to: its ContextInfo's stanzaID (text or media), else None."""
    for field in ("extendedTextMessage", *(name for name, _ in MEDIA_FIELDS)):
        if message.HasField(field):
            context = getattr(message, field).contextInfo
            return context.stanzaID or None
    return None


def sender_of(source: nz.MessageSource) -> str:
    """The sender's phone-number JID when WhatsApp gives one: in LID-addressed groups Sender is the LID
    and SenderAlt the number, and the monitors need the number to @mention a contractor back."""
    sender = source.Sender
    if sender.Server == LID_SERVER and source.SenderAlt.User:
        sender = source.SenderAlt
    return jid_string(sender)


def incoming_message(event: nz.Message, source: Source) -> IncomingMessage | None:
    """A live or offline message event; None for messages without text or media (reactions, protocol...)."""
    info = event.Info
    at = from_unix(info.Timestamp)
    text, media, quoted = _content(event.Message, at)
    if not text and media is None:
        return None
    origin = info.MessageSource
    direct_chat_name = info.Pushname if not origin.IsGroup and not origin.IsFromMe and info.Pushname else None
    return IncomingMessage(id=info.ID, chat_jid=jid_string(origin.Chat), sender_jid=sender_of(origin), text=text,
                           timestamp=at, source=source, is_from_me=origin.IsFromMe, chat_name=direct_chat_name,
                           media=media, quoted_message_id=quoted)


def history_messages(sync: history.HistorySync, own_jid: str
                     ) -> tuple[list[IncomingMessage], list[tuple[history.HistorySyncMsg, str, Exception]]]:
    """A history-sync batch as messages with Source.HISTORY (LID senders mapped to numbers where the batch says),
    and the items that could not be mapped (item, chat, error): one poison item must not cost the batch."""
    number_of = {bare_jid(m.lidJID): bare_jid(m.pnJID) for m in sync.phoneNumberToLidMappings}
    messages: list[IncomingMessage] = []
    poison: list[tuple[history.HistorySyncMsg, str, Exception]] = []
    for conversation in sync.conversations:
        chat = bare_jid(conversation.ID)
        for item in conversation.messages:
            try:
                message = _history_message(item.message, chat, conversation.name, number_of, own_jid)
            except Exception as exc:  # noqa: BLE001 - whatever the item holds, the rest of the batch goes on
                poison.append((item, chat, exc))
                continue
            if message is not None:
                messages.append(message)
    return messages, poison


def _history_message(web: WebMessageInfo, chat: str, chat_name: str, number_of: Mapping[str, str],
                     own_jid: str) -> IncomingMessage | None:
    at = from_unix(web.messageTimestamp)
    text, media, quoted = _content(web.message, at)
    if not text and media is None:
        return None
    if web.key.fromMe:
        sender = own_jid
    else:
        sender = bare_jid(web.participant or web.key.participant or web.key.remoteJID or chat)
        sender = number_of.get(sender, sender)
    return IncomingMessage(id=web.key.ID, chat_jid=chat, sender_jid=sender, text=text, timestamp=at,
                           source=Source.HISTORY, is_from_me=web.key.fromMe, chat_name=chat_name or None, media=media,
                           quoted_message_id=quoted)


# -- receipts ----------------------------------------------------------------------------------------------

# whatsmeow's receipt types for messages we sent; READ_SELF / PLAYED_SELF (our own other device), SENDER, RETRY,
# SERVER_ERROR, INACTIVE, PEER_MSG and HISTORY_SYNC say nothing about whether the recipient got the message.
RECEIPT_KINDS = {nz.Receipt.ReceiptType.DELIVERED: ReceiptKind.DELIVERED, nz.Receipt.ReceiptType.READ: ReceiptKind.READ,
                 nz.Receipt.ReceiptType.PLAYED: ReceiptKind.PLAYED}


def receipt(event: nz.Receipt) -> Receipt | None:
    """A delivered / read / played receipt from a recipient; None for every other receipt type or our own devices.

    In a group `Sender` is the participant who delivered or read the message (its number via SenderAlt when
    the group addresses by LID), so the monitors can tell whether the mentioned contractor read the feedback.
    """
    kind = RECEIPT_KINDS.get(event.Type)
    source = event.MessageSource
    if kind is None or source.IsFromMe or not event.MessageIDs:
        return None
    return Receipt(tuple(event.MessageIDs), jid_string(source.Chat), sender_of(source), kind, from_unix(event.Timestamp))


# -- connection events ------------------------------------------------------------------------------------

def connection_event(event: object, at: datetime) -> ConnectionEvent | None:
    """The interface's view of a neonize connection event; None for events it has no kind for."""
    match event:
        case nz.Connected():
            return ConnectionEvent(ConnectionKind.CONNECTED, at)
        case nz.Disconnected():
            return ConnectionEvent(ConnectionKind.DISCONNECTED, at, "connection to WhatsApp closed (whatsmeow reconnects)")
        case nz.KeepAliveTimeout():
            # The outage began at the last keep-alive answer, not when whatsmeow gave up on the next ones.
            answered = from_unix(event.LastSuccess) if event.LastSuccess else None
            last = answered.isoformat(timespec="seconds") if answered else "never"
            return ConnectionEvent(ConnectionKind.DISCONNECTED, min(answered, at) if answered else at,
                                   f"keep-alive timeout ({event.ErrorCount} unanswered, last answer {last})")
        case nz.KeepAliveRestored():
            return ConnectionEvent(ConnectionKind.CONNECTED, at, "keep-alive restored")
        case nz.OfflineSyncCompleted():
            return ConnectionEvent(ConnectionKind.OFFLINE_SYNC_DONE, at, f"{event.Count} offline events replayed")
        case nz.StreamReplaced():
            return ConnectionEvent(ConnectionKind.STREAM_REPLACED, at,
                                   "another client connected with this session (stream replaced)")
        case nz.LoggedOut():
            when = "on connect" if event.OnConnect else "while connected"
            return ConnectionEvent(ConnectionKind.LOGGED_OUT, at,
                                   f"logged out by WhatsApp {when} ({_reason_name(event.Reason)}); re-pair the account")
        case nz.TemporaryBan():
            return temporary_ban(event, at)
        case nz.ClientOutdated():
            return ConnectionEvent(ConnectionKind.CLIENT_OUTDATED, at,
                                   "WhatsApp refused this client version (client outdated); upgrade neonize")
        case nz.ConnectFailure():
            detail = f": {event.Message}" if event.Message else ""
            return ConnectionEvent(ConnectionKind.CONNECT_FAILED, at,
                                   f"WhatsApp refused the login ({_reason_name(event.Reason)}){detail}")
        case nz.StreamError():
            return ConnectionEvent(ConnectionKind.DISCONNECTED, at, f"stream error {event.Code or 'without a code'}")
    return None


def temporary_ban(event: nz.TemporaryBan, at: datetime) -> ConnectionEvent:
    """WhatsApp's reason code and the expiry (neonize sends whatsmeow's Expire duration in seconds)."""
    try:
        code = nz.TemporaryBan.TempBanReason.Name(event.Code)
    except ValueError:
        code = f"code {event.Code}"
    until = at + timedelta(seconds=max(0, event.Expire))
    return ConnectionEvent(ConnectionKind.TEMPORARY_BAN, at, f"temporary ban by WhatsApp ({code}) until "
                           f"{until.isoformat(timespec='seconds')} (in {event.Expire} s)", until)


def _reason_name(value: int) -> str:
    try:
        return nz.ConnectFailureReason.Name(value)
    except ValueError:
        return f"code {value}"


# -- outgoing messages -----------------------------------------------------------------------------------

def visible_mentions(text: str, mentioned_jids: Sequence[str]) -> str:
    """The text with `@<user>` for every mentioned JID, prepended where missing: WhatsApp only renders a
    mention whose `@<user>` is in the text."""
    missing = [f"@{jid.partition('@')[0]}" for jid in mentioned_jids
               if not re.search(rf"@{re.escape(jid.partition('@')[0])}\b", text)]
    return " ".join([*missing, text]) if missing else text


def with_lids(text: str, mentioned_jids: Sequence[str], lid_of: Mapping[str, str]) -> tuple[str, list[str]]:
    """Mentions re-addressed by LID (for LID-addressed groups): `@<number>` in the text becomes `@<lid>` and the
    JID `<number>@s.whatsapp.net` becomes `<lid>@lid`; numbers without a known LID stay as they are."""
    jids = []
    for jid in mentioned_jids:
        lid = lid_of.get(jid)
        if lid:
            text = re.sub(rf"@{re.escape(jid.partition('@')[0])}\b", f"@{lid.partition('@')[0]}", text)
        jids.append(lid or jid)
    return text, jids


def _context(mentioned_jids: Sequence[str], quote: Quote | None = None) -> e2e.ContextInfo | None:
    """WhatsApp's ContextInfo: the mentioned JIDs, and for a reply the quoted message's id (stanzaID), sender
    (participant) and content (quotedMessage, the preview above the reply), as whatsmeow's clients build it."""
    if quote is not None:
        return e2e.ContextInfo(stanzaID=quote.message_id, participant=quote.sender_jid or None,
                               quotedMessage=e2e.Message(conversation=quote.text), mentionedJID=list(mentioned_jids))
    return e2e.ContextInfo(mentionedJID=list(mentioned_jids)) if mentioned_jids else None


def text_message(text: str, mentioned_jids: Sequence[str] = (), quote: Quote | None = None) -> e2e.Message:
    """Plain text as `conversation`; with mentions or a quote an extended text carrying them in contextInfo."""
    if not mentioned_jids and quote is None:
        return e2e.Message(conversation=text)
    return e2e.Message(extendedTextMessage=e2e.ExtendedTextMessage(
        text=visible_mentions(text, mentioned_jids), contextInfo=_context(mentioned_jids, quote)))


def mime_type(media_type: str, filename: str) -> str:
    if media_type == "audio" and filename.lower().endswith(".ogg"):
        return VOICE_NOTE_MIME
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def media_message(media_type: str, upload: nz.UploadResponse, filename: str, caption: str,
                  mentioned_jids: Sequence[str] = (), quote: Quote | None = None) -> e2e.Message:
    """An uploaded file as an image / video / audio / document message with its caption.

    Audio messages have no caption field in WhatsApp; an .ogg file goes as a voice note (PTT) as whatsapp-mcp does.
    """
    mimetype = mime_type(media_type, filename)
    common = dict(URL=upload.url, directPath=upload.DirectPath, mediaKey=upload.MediaKey,
                  fileEncSHA256=upload.FileEncSHA256, fileSHA256=upload.FileSHA256, fileLength=upload.FileLength,
                  mimetype=mimetype)
    caption = visible_mentions(caption, mentioned_jids) if caption or mentioned_jids else ""
    context = _context(mentioned_jids, quote)
    if media_type == "image":
        return e2e.Message(imageMessage=e2e.ImageMessage(**common, caption=caption, contextInfo=context))
    if media_type == "video":
        return e2e.Message(videoMessage=e2e.VideoMessage(**common, caption=caption, contextInfo=context))
    if media_type == "audio":
        return e2e.Message(audioMessage=e2e.AudioMessage(**common, PTT=mimetype == VOICE_NOTE_MIME, contextInfo=context))
    return e2e.Message(documentMessage=e2e.DocumentMessage(**common, fileName=filename, title=filename, caption=caption,
                                                           contextInfo=context))


def download_message(media: MediaInfo) -> e2e.Message:
    """The stored metadata rebuilt as the media message whatsmeow's DownloadAny takes (direct path, keys, hashes)."""
    fields = dict(URL=media.url, directPath=media.extra.get("direct_path", ""), mediaKey=media.media_key,
                  fileSHA256=media.file_sha256, fileEncSHA256=media.file_enc_sha256, fileLength=media.file_length,
                  mimetype=media.extra.get("mimetype", ""))
    kinds = {"image": e2e.ImageMessage, "video": e2e.VideoMessage, "audio": e2e.AudioMessage,
             "document": e2e.DocumentMessage}
    field = FIELD_OF_MEDIA.get(media.media_type, "documentMessage")
    return e2e.Message(**{field: kinds.get(media.media_type, e2e.DocumentMessage)(**fields)})
