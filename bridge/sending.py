"""Parsing of send requests: recipients, mentions, text. Plain functions, no I/O (media: `bridge.media`).

The rules follow whatsapp-mcp's Go bridge (a bare number means a personal
chat, media type by extension, the message is the caption), its
verygoodplugins fork (quoted replies on `/api/send`, `/api/react`,
`/api/mark-read`, `/api/typing`) plus the production web app's contract
(`mentions` / `mentioned_jid`, `/send-message`).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bridge.transport import Quote, Reaction

from watchdog.shared.web_guard import unknown_field

USER_SERVER = "s.whatsapp.net"
GROUP_SERVER = "g.us"
_TAG = re.compile(r"@([0-9]+)(?![0-9])")
_NUMBER = re.compile(r"^\+?[0-9]{5,20}$")
_NUMBER_PUNCTUATION = re.compile(r"[\s\-().]")  # how people write numbers: +27 71 000 0001, (071) 000-0001
# Server refusals that are the caller's mistake, in the simulator's and whatsmeow's words
# (whatsmeow's ErrGroupNotFound, ErrNotInGroup).
_CALLER_MISTAKES = ((re.compile(r"unknown group|that group does not exist", re.IGNORECASE), 404),
                    (re.compile(r"not participating in that group", re.IGNORECASE), 403))
# user[:device]@server; groups are digits or the old "creator-timestamp" form.
_JID = re.compile(r"^(?P<user>[0-9]{1,20}(-[0-9]{1,20})?)(:[0-9]{1,4})?@(?P<server>s\.whatsapp\.net|g\.us|lid|"
                  r"broadcast|newsletter|c\.us)$")

MAX_TEXT = 65_536  # characters: WhatsApp's own limit for a message
MAX_MENTIONS = 1024  # WhatsApp's group size limit: more mentions than members cannot be meant
MEDIA_TYPES = {"jpg": "image", "jpeg": "image", "png": "image", "gif": "image", "webp": "image",
               "ogg": "audio", "mp4": "video", "avi": "video", "mov": "video"}


class BadRequest(ValueError):
    """The request is malformed; the message says what is wrong (answered with `status`)."""

    status = 400


@dataclass(frozen=True)
class SendRequest:
    recipient: str  # as the client wrote it: "Message sent to <recipient>"
    recipient_jid: str
    text: str
    mentioned_jids: tuple[str, ...]
    media_path: str | None  # as the client wrote it; opened, checked and copied by bridge.media
    quote: Quote | None = None
    reaction: Reaction | None = None
    priority: str = ""  # "operator": goes before automatic messages (bridge/pace.py)

    @property
    def context(self) -> dict | None:
        """What the outbox keeps beside the text (bridge/store.py, outbox.context): a reaction or a quote, and
        the priority when there is one."""
        context: dict = {"priority": self.priority} if self.priority else {}
        if self.reaction is not None:
            context["reaction"] = vars(self.reaction)
        elif self.quote is not None:
            context["quote"] = vars(self.quote)
        return context or None


def context_parts(context: dict | None) -> tuple[Quote | None, Reaction | None]:
    """The quote or reaction of an outbox row's context."""
    context = context or {}
    quote, reaction = context.get("quote"), context.get("reaction")
    return (Quote(**quote) if quote else None), (Reaction(**reaction) if reaction else None)


def json_object(body: object, fields: Sequence[str]) -> dict:
    """The request body as a JSON object with no field but `fields`; BadRequest naming the problem."""
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if problem := unknown_field(body, fields):
        raise BadRequest(problem)
    return body


def parse_jid(value: object, what: str = "recipient") -> str:
    """A bare number (`27710000001`, `+27...`) or a JID -> a normalized JID; BadRequest if neither."""
    if value is None or value == "" or (isinstance(value, str) and not value.strip()):
        raise BadRequest(f"{what} is required")
    if not isinstance(value, str):
        raise BadRequest(f"{what} must be a string (a phone number or a JID), got {type(value).__name__}")
    value = value.strip()
    if "@" not in value:
        number = _NUMBER_PUNCTUATION.sub("", value)
        if not _NUMBER.match(number):
            raise BadRequest(f"malformed {what} {value!r}: expected a phone number with country code or a JID")
        return f"{number.lstrip('+')}@{USER_SERVER}"
    match = _JID.match(value)
    if not match:
        raise BadRequest(f"malformed {what} JID {value!r}: expected like 27710000001@s.whatsapp.net "
                         "or 120363000000000001@g.us")
    server = USER_SERVER if match["server"] == "c.us" else match["server"]
    return f"{match['user']}@{server}"


def refusal_status(error: str) -> int:
    """The HTTP status for a send the server refused: 404 unknown group, 403 not a member of it, else 422."""
    return next((status for pattern, status in _CALLER_MISTAKES if pattern.search(error)), 422)


def parse_mentions(value: object) -> tuple[str, ...]:
    """`mentions` / `mentioned_jid`: a string or a list of numbers or JIDs -> user JIDs, in order, no repeats."""
    if value is None or value == "" or value == []:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise BadRequest("mentions must be a number, a JID or a list of them")
    if len(items) > MAX_MENTIONS:
        raise BadRequest(f"{len(items)} mentions; at most {MAX_MENTIONS} (WhatsApp's group size limit)")
    jids: dict[str, None] = {}  # ordered, and linear to de-duplicate
    for item in items:
        jid = parse_jid(item, "mention")
        if jid.endswith(f"@{GROUP_SERVER}"):
            raise BadRequest(f"cannot mention a group: {item!r}")
        jids[jid] = None
    return tuple(jids)


def with_mention_tags(text: str, mentioned_jids: tuple[str, ...]) -> str:
    """WhatsApp renders a mention only where the text carries `@<number>`: prepend any missing ones.

    One pass over the text for the tags already there, so the work is linear in text and mentions.
    """
    present = set(_TAG.findall(text))
    missing = [f"@{user}" for user in (jid.split("@")[0] for jid in mentioned_jids) if user not in present]
    return " ".join([*missing, text]) if text else " ".join(missing)


class TooLongToSend(BadRequest):
    """A message within the document's maxLength that the mention tags we add push over WhatsApp's limit:
    well formed, yet it could never be sent, so answered as a refusal (422), not as bad input."""

    status = 422


def check_text(text: str, tagged: bool = False) -> str:
    """`text`, or BadRequest (TooLongToSend once the mention tags are in) beyond WhatsApp's limit."""
    if len(text) > MAX_TEXT:
        error = TooLongToSend if tagged else BadRequest
        raise error(f"message is {len(text):,} characters{' with mention tags' if tagged else ''}; "
                    f"WhatsApp's limit is {MAX_TEXT:,}")
    return text


def media_type_for(path: Path) -> str:
    """whatsapp-mcp's mapping: image / audio (ogg voice note) / video by extension, else document."""
    return MEDIA_TYPES.get(path.suffix.lower().lstrip("."), "document")


def _text(body: dict, name: str, required: bool = False) -> str:
    """A string field; missing, null or "" is "" (BadRequest if `required`)."""
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


MAX_ID = 200  # characters of a message id, as /api/download takes it


def _message_id(value: object, name: str) -> str:
    text = _text({name: value}, name, required=True)
    if len(text) > MAX_ID:
        raise BadRequest(f"{name} is longer than {MAX_ID} characters")
    return text


def _optional_jid(body: dict, name: str) -> str:
    """A JID field the fork may send as "" or null for none; '' when none."""
    value = body.get(name)
    return "" if value is None or value == "" else parse_jid(value, name)


def parse_quote(body: dict) -> Quote | None:
    """The fork's quoted reply: `quoted_message_id`, `quoted_sender_jid` (the quoted message's sender),
    `quoted_content` (its text, shown above the reply); no quote without `quoted_message_id`."""
    sender_jid = _optional_jid(body, "quoted_sender_jid")
    content = check_text(_text(body, "quoted_content"))
    if body.get("quoted_message_id") in (None, ""):
        return None
    return Quote(_message_id(body["quoted_message_id"], "quoted_message_id"), sender_jid, content)


PRIORITIES = ("normal", "operator")


def parse_send(body: object) -> SendRequest:
    """`POST /api/send {"recipient", "message", "media_path"?, "mentions"? | "mentioned_jid"?, "quoted_message_id"?,
    "quoted_sender_jid"?, "quoted_content"?, "priority"?}`."""
    body = json_object(body, ("recipient", "message", "media_path", "mentions", "mentioned_jid", "quoted_message_id",
                              "quoted_sender_jid", "quoted_content", "priority"))
    priority = "normal" if body.get("priority") in (None, "") else body["priority"]
    if priority not in PRIORITIES:
        raise BadRequest(f"priority must be {' or '.join(map(repr, PRIORITIES))}, got {str(priority)[:40]!r}")
    recipient = body.get("recipient")
    recipient_jid = parse_jid(recipient)
    message = "" if body.get("message") is None else body["message"]
    if not isinstance(message, str):
        raise BadRequest("message must be a string")
    media_path = body.get("media_path")
    if media_path is not None and not isinstance(media_path, str):
        raise BadRequest("media_path must be a string")
    media_path = media_path if media_path and media_path.strip() else None  # empty or blank: no media
    if not message and media_path is None:
        raise BadRequest("message or media_path is required")
    check_text(message)
    mentions = parse_mentions(body.get("mentions", body.get("mentioned_jid")))
    text = check_text(with_mention_tags(message, mentions), tagged=True)
    return SendRequest(str(recipient).strip(), recipient_jid, text, mentions, media_path, parse_quote(body),
                       priority="" if priority == "normal" else priority)


MAX_EMOJI = 32  # characters: one emoji is at most a few code points (skin tones, ZWJ sequences)


def parse_react(body: object) -> SendRequest:
    """`POST /api/react {"recipient", "message_id", "emoji", "from_me"?, "sender_jid"?}` (the fork's shape):
    react to a message; "" removes our reaction. In a group the sender of the message is needed (its key)."""
    body = json_object(body, ("recipient", "message_id", "emoji", "from_me", "sender_jid"))
    recipient_jid = parse_jid(body.get("recipient"))
    message_id = _message_id(body.get("message_id"), "message_id")
    emoji = body.get("emoji")
    if not isinstance(emoji, str):
        raise BadRequest("emoji is required: a string (\"\" removes the reaction)")
    if len(emoji) > MAX_EMOJI:
        raise BadRequest(f"emoji must be one emoji (at most {MAX_EMOJI} characters)")
    from_me = body.get("from_me", False)
    if not isinstance(from_me, bool):
        raise BadRequest("from_me must be true or false")
    sender_jid = _optional_jid(body, "sender_jid")
    if not from_me and not sender_jid:
        if recipient_jid.endswith(f"@{GROUP_SERVER}"):
            raise BadRequest("sender_jid is required for group reactions when from_me is false")
        sender_jid = recipient_jid
    return SendRequest(str(body.get("recipient")).strip(), recipient_jid, emoji, (), None,
                       reaction=Reaction(message_id, sender_jid, from_me, emoji))


@dataclass(frozen=True)
class MarkRead:
    chat_jid: str
    sender_jid: str  # '' in a direct chat
    message_ids: tuple[str, ...]
    at: datetime | None  # when they were read (None: now)


MAX_READ_IDS = 1000


def parse_mark_read(body: object) -> MarkRead:
    """`POST /api/mark-read {"message_ids", "chat_jid", "sender_jid"?, "timestamp"?}` (the fork's shape)."""
    body = json_object(body, ("message_ids", "chat_jid", "sender_jid", "timestamp"))
    chat_jid = parse_jid(body.get("chat_jid"), "chat_jid")
    ids = body.get("message_ids")
    if not isinstance(ids, list) or not ids:
        raise BadRequest("message_ids is required: a list of message ids")
    if len(ids) > MAX_READ_IDS:
        raise BadRequest(f"{len(ids)} message_ids; at most {MAX_READ_IDS}")
    message_ids = tuple(dict.fromkeys(_message_id(i, "message_ids[]") for i in ids))
    sender_jid = _optional_jid(body, "sender_jid")
    if not sender_jid and chat_jid.endswith(f"@{GROUP_SERVER}"):
        raise BadRequest("sender_jid is required for group read receipts")
    stamp = _text(body, "timestamp")
    return MarkRead(chat_jid, sender_jid, message_ids, parse_rfc3339(stamp, "timestamp") if stamp else None)


_RFC3339 = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([Zz]|[+-][0-9]{2}:[0-9]{2})$")


class Impossible(BadRequest):
    """Well formed, but no such moment (a 31 February): answered 422, as the document allows a valid-looking
    request to be refused."""

    status = 422


def parse_rfc3339(text: str, name: str) -> datetime:
    if not _RFC3339.search(text):
        raise BadRequest(f"{name} must be RFC 3339 (like 2026-11-24T22:31:27Z), got {text[:40]!r}")
    try:
        return datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise Impossible(f"{name} {text[:40]!r} is not a real time: {exc}") from None


def parse_typing(body: object) -> tuple[str, bool]:
    """`POST /api/typing {"recipient", "is_typing"}` (the fork's shape): (chat JID, composing)."""
    body = json_object(body, ("recipient", "is_typing"))
    recipient_jid = parse_jid(body.get("recipient"))
    typing = body.get("is_typing", False)
    if not isinstance(typing, bool):
        raise BadRequest("is_typing must be true or false")
    return recipient_jid, typing


def parse_send_message(body: object) -> SendRequest:
    """`POST /send-message {"group_jid", "recipient_jid", "message"}`: into the group, mentioning the recipient."""
    body = json_object(body, ("group_jid", "recipient_jid", "message"))
    group_jid = parse_jid(body.get("group_jid"), "group_jid")
    if not group_jid.endswith(f"@{GROUP_SERVER}"):
        raise BadRequest(f"group_jid must be a group JID (…@g.us), got {body.get('group_jid')!r}")
    if not body.get("recipient_jid"):
        raise BadRequest("recipient_jid is required")
    mentioned = parse_mentions(body["recipient_jid"])
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        raise BadRequest("message is required")
    check_text(message)
    text = check_text(with_mention_tags(message, mentioned), tagged=True)
    return SendRequest(group_jid, group_jid, text, mentioned, None)
