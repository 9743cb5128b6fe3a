"""The simulated WhatsApp servers' state: groups, their history, per-session offline queues, sends, media.

Plain objects with no I/O, so the server stays a thin layer of handlers over
them. Everything lives in memory: the simulator is a separate process and
outlives bridge crashes, as WhatsApp's servers do; a simulator restart is a
"WhatsApp data loss" nobody needs to model.
"""
from __future__ import annotations

import asyncio
import base64
import bisect
import hashlib
import itertools
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone

from bridge.config import GROUP_JID
from watchdog.components import Config
from watchdog.shared import clock

USER_JID = re.compile(r"^[0-9]+@s\.whatsapp\.net$")
MEDIA_TYPES = ("image", "video", "audio", "document")


class SimError(ValueError):
    """Bad input from a client or the control API; the message says what is wrong."""


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO-8601, so text order is time order (the store relies on it)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


def parse_time(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        # An unencoded "+00:00" in a query string arrives as " 00:00".
        head, _, tail = text.rpartition(" ") if isinstance(text, str) else ("", "", "")
        try:
            moment = datetime.fromisoformat(f"{head}+{tail}")
        except ValueError:
            raise SimError(f"{name}: not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise SimError(f"{name}: needs a timezone (e.g. 2026-11-24T22:31:27+00:00): {text!r}")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True)
class Media:
    media_type: str
    filename: str
    url: str
    media_key: bytes
    file_sha256: bytes
    file_enc_sha256: bytes
    file_length: int


@dataclass(frozen=True)
class Message:
    id: str
    chat_jid: str
    chat_name: str
    sender_jid: str
    text: str
    timestamp: datetime
    media: Media | None = None
    quoted_message_id: str | None = None  # a reply: the message it quotes

    @cached_property
    def wire(self) -> dict:
        """The message as a websocket frame carries it (docs/ARCHITECTURE.md, Simulator wire protocol)."""
        media = None
        if self.media:
            m = self.media
            media = {"type": m.media_type, "filename": m.filename, "url": m.url,
                     "media_key": _b64(m.media_key), "file_sha256": _b64(m.file_sha256),
                     "file_enc_sha256": _b64(m.file_enc_sha256), "file_length": m.file_length}
        return {"id": self.id, "chat_jid": self.chat_jid, "chat_name": self.chat_name,
                "sender_jid": self.sender_jid, "text": self.text, "timestamp": iso(self.timestamp),
                "media": media, "quoted_message_id": self.quoted_message_id}


@dataclass(frozen=True)
class Sent:
    """One message a bridge sent, as GET /sim/sent reports it."""

    session: str
    id: str
    recipient: str
    text: str
    mentioned_jids: tuple[str, ...]
    media_type: str | None
    time: datetime
    quote: dict | None = None  # a reply: {message_id, sender_jid, text} of the quoted message
    node: str = ""  # the linked device of `session` that sent it ("" the config's own)

    def json(self) -> dict:
        return {"session": self.session, "id": self.id, "recipient": self.recipient, "text": self.text,
                "mentioned_jids": list(self.mentioned_jids), "media_type": self.media_type,
                "time": iso(self.time), "quote": self.quote, "node": self.node}


@dataclass(frozen=True)
class SimReceipt:
    """A delivery / read receipt queued for the session that sent `message_id` (acked by its own `id`)."""

    id: str
    message_id: str
    chat_jid: str
    recipient_jid: str
    kind: str  # delivered | read
    timestamp: datetime

    @cached_property
    def wire(self) -> dict:
        return {"id": self.id, "message_ids": [self.message_id], "chat_jid": self.chat_jid,
                "recipient_jid": self.recipient_jid, "kind": self.kind, "timestamp": iso(self.timestamp)}


Queued = Message | SimReceipt


@dataclass
class Session:
    """One device's server-side session: its offline queue and connection counters.

    A device is (phone, node): "" is the one the config pairs; a host of a cluster links its own by naming
    its node in the hello (multi-device: every device of a number receives everything, issue 21).

    Queue entries are keyed by a per-session sequence number so a connection
    can deliver "everything after what I already sent" while entries stay until
    acknowledged; an unacknowledged entry goes out again on the next connection.
    """

    phone: str
    node: str = ""
    queue: dict[int, Queued] = field(default_factory=dict)  # seq -> message or receipt, in seq order
    seq_of: dict[str, int] = field(default_factory=dict)  # message / receipt id -> seq
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    last_seq: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    connection: object | None = None  # the one active connection (server-side object)
    connections: int = 0
    stream_replaced: int = 0  # a new connection replaced one that still answered: two connections of the device
    dead_replaced: int = 0  # ... replaced one that no longer answered (half-open): its successor, not a second one
    disconnects: int = 0
    delivered: int = 0
    acked: int = 0
    resent: int = 0  # sends of a message id already sent (by this device or a sibling): the same message again
    # The device's client cannot choose message ids (neonize 0.5.2, docs/NEONIZE.md; said in its hello): each send
    # gets a new id from the server, so a resend is a second message, as through real WhatsApp.
    server_ids: bool = False

    @property
    def jid(self) -> str:
        return f"{self.phone}@s.whatsapp.net"

    @property
    def name(self) -> str:
        """For logs: the phone, and the node of a linked device."""
        return f"{self.phone}/{self.node}" if self.node else self.phone

    def enqueue(self, message: Queued) -> None:
        if message.id in self.seq_of:
            return
        self.last_seq = next(self.seqs)
        self.queue[self.last_seq] = message
        self.seq_of[message.id] = self.last_seq
        self.wakeup.set()

    def after(self, cursor: int, limit: int) -> list[tuple[int, Queued]]:
        """Up to `limit` queued entries with a sequence number above `cursor`, oldest first."""
        entries = ((seq, m) for seq, m in self.queue.items() if seq > cursor)
        return list(itertools.islice(entries, limit))

    def ack(self, ids: Iterable[str]) -> int:
        removed = 0
        for message_id in ids:
            seq = self.seq_of.pop(message_id, None)
            if seq is not None:
                del self.queue[seq]
                removed += 1
        self.acked += removed
        return removed


@dataclass
class Group:
    jid: str
    name: str
    participants: list[str]
    history: list[Message] = field(default_factory=list)  # time order
    times: list[datetime] = field(default_factory=list)  # parallel to history, for range queries

    def add(self, message: Message) -> None:
        """Kept in time order, not arrival order: a clock stepped back (a simulator under a faked clock) or a
        message posted with an earlier time arrives after later ones, and `between` bisects."""
        at = bisect.bisect_right(self.times, message.timestamp)
        self.history.insert(at, message)
        self.times.insert(at, message.timestamp)

    def between(self, since: datetime | None, until: datetime | None) -> list[Message]:
        lo = bisect.bisect_left(self.times, since) if since else 0
        hi = bisect.bisect_right(self.times, until) if until else len(self.times)
        return self.history[lo:hi]


class SimState:
    def __init__(self, config: Config) -> None:
        assert config.sim is not None
        self.sessions = {a.phone: Session(a.phone) for a in config.accounts.values() if a.transport == "sim"}
        self.groups = {g.jid: Group(g.jid, g.name, list(g.participants)) for g in config.sim.groups}
        self.members = {phone: self.member_of(phone) for phone in self.sessions}
        self.devices: dict[str, list[Session]] = {phone: [session] for phone, session in self.sessions.items()}
        self.sent: dict[str, Sent] = {}  # by message id: a resend with a known id is the same message
        self.blobs: dict[str, bytes] = {}  # media url -> bytes
        self._ids = itertools.count(1)
        self._id_prefix = secrets.token_hex(4).upper()  # ids stay unique across simulator restarts

    def member_of(self, phone: str) -> frozenset[str]:
        """The groups a number is in: those that list it among their participants. A number no group lists
        is in every group (configs that list only the contractors who post, as the demo does)."""
        listed = frozenset(jid for jid, group in self.groups.items() if phone in group.participants)
        return listed or frozenset(self.groups)

    def device(self, phone: object, node: object = "") -> Session | None:
        """The device (phone, node) of a known number, linked on its first hello (each host pairs once);
        None for a number the simulator does not know."""
        if not isinstance(phone, str) or phone not in self.sessions or not isinstance(node, str):
            return None
        for device in self.devices[phone]:
            if device.node == node:
                return device
        device = Session(phone, node)
        self.devices[phone].append(device)
        return device

    def all_devices(self) -> Iterator[Session]:
        for devices in self.devices.values():
            yield from devices

    # -- posting ---------------------------------------------------------------

    def new_id(self) -> str:
        return f"SIM{self._id_prefix}{next(self._ids):08d}"

    def group(self, jid: object) -> Group:
        if not isinstance(jid, str) or not GROUP_JID.match(jid):
            raise SimError(f"chat_jid: not a group JID (like 120363000000000001@g.us): {jid!r}")
        try:
            return self.groups[jid]
        except KeyError:
            raise SimError(f"chat_jid: unknown group {jid} (known: {', '.join(self.groups) or 'none'})") from None

    def post(self, group: Group, sender_jid: str, text: str, media: Media | None = None,
             message_id: str | None = None, at: datetime | None = None, skip: Session | None = None,
             quoted_message_id: str | None = None) -> Message:
        """Add a message to a group's history and queue it for every device of every member except `skip` (the
        device that sent it: its siblings receive it, from their own number)."""
        message = Message(message_id or self.new_id(), group.jid, group.name, sender_jid, text, at or clock.now(), media,
                          quoted_message_id)
        group.add(message)
        for phone, devices in self.devices.items():
            if group.jid in self.members[phone]:  # WhatsApp delivers to members only
                for device in devices:
                    if device is not skip:
                        device.enqueue(message)
        return message

    def inject(self, body: object) -> list[Message]:
        """POST /sim/inject: participants post into groups (`quoted_message_id`: a reply); one object, or a list
        posted all-or-nothing."""
        items = body if isinstance(body, list) else [body]
        checked = [self._checked_post(item, f"[{i}] " if isinstance(body, list) else "") for i, item in enumerate(items)]
        return [self.post(group, sender, text, media, quoted_message_id=quoted)
                for group, sender, text, media, quoted in checked]

    def _checked_post(self, body: object, where: str) -> tuple[Group, str, str, Media | None, str | None]:
        if not isinstance(body, dict):
            raise SimError(f"{where or 'body: '}expected a JSON object {{chat_jid, sender_jid, text, media?}}")
        try:
            group = self.group(body.get("chat_jid"))
            sender = body.get("sender_jid")
            if not isinstance(sender, str) or not USER_JID.match(sender):
                raise SimError(f"sender_jid: not a user JID (like 27710000001@s.whatsapp.net): {sender!r}")
            media = self.store_media(body["media"], "media") if body.get("media") is not None else None
            text = body.get("text", "" if media else None)
            if not isinstance(text, str):
                raise SimError("text: missing (a string; may be empty only with media)")
            quoted = body.get("quoted_message_id")
            if quoted is not None and not isinstance(quoted, str):
                raise SimError(f"quoted_message_id: expected a message id, got {quoted!r}")
        except SimError as exc:
            raise SimError(f"{where}{exc}") from None
        return group, sender, text, media, quoted

    def store_media(self, raw: object, name: str) -> Media:
        if not isinstance(raw, dict):
            raise SimError(f"{name}: expected an object {{type, filename, data_b64}}")
        media_type, filename, data_b64 = raw.get("type"), raw.get("filename"), raw.get("data_b64")
        if media_type not in MEDIA_TYPES:
            raise SimError(f"{name}.type: must be one of {', '.join(MEDIA_TYPES)}, got {media_type!r}")
        if not isinstance(filename, str) or not filename:
            raise SimError(f"{name}.filename: missing")
        if not isinstance(data_b64, str):
            raise SimError(f"{name}.data_b64: missing (the file's bytes, base64)")
        try:
            data = base64.b64decode(data_b64, validate=True)
        except ValueError:
            raise SimError(f"{name}.data_b64: not valid base64") from None
        url = f"sim://media/{secrets.token_hex(8)}"
        key = os.urandom(32)
        self.blobs[url] = data
        return Media(media_type, filename, url, key, hashlib.sha256(data).digest(),
                     hashlib.sha256(key + data).digest(), len(data))

    # -- session requests -------------------------------------------------------

    def send(self, session: Session, body: dict) -> Sent:
        """A bridge sends; the client chose the id, so a known id returns the first record unchanged. A device whose
        client cannot choose ids (`server_ids`) gets a new one for every send: the same text again is a second
        message."""
        message_id = "3EB0" + secrets.token_hex(9).upper() if session.server_ids else body.get("id")
        if not isinstance(message_id, str) or not message_id:
            raise SimError("id: missing (the client chooses the message id)")
        if message_id in self.sent:
            session.resent += 1
            return self.sent[message_id]
        recipient, text = body.get("recipient"), body.get("text", "")
        mentions = body.get("mentioned_jids") or []
        if not isinstance(text, str):
            raise SimError("text: expected a string")
        if not isinstance(mentions, list) or not all(isinstance(j, str) and USER_JID.match(j) for j in mentions):
            raise SimError(f"mentioned_jids: expected a list of user JIDs, got {mentions!r}")
        group = None
        if isinstance(recipient, str) and recipient.endswith("@g.us"):
            group = self.group(recipient)
        elif not isinstance(recipient, str) or not USER_JID.match(recipient):
            raise SimError(f"recipient: neither a group JID nor a user JID: {recipient!r}")
        media = self.store_media(body["media"], "media") if body.get("media") is not None else None
        quote = body.get("quote")
        if quote is not None and not (isinstance(quote, dict) and isinstance(quote.get("message_id"), str)):
            raise SimError(f"quote: expected an object {{message_id, sender_jid, text}}, got {quote!r}")
        sent = Sent(session.phone, message_id, recipient, text, tuple(mentions),
                    media.media_type if media else None, clock.now(), quote, session.node)
        self.sent[message_id] = sent
        if group is not None:
            self.post(group, session.jid, text, media, message_id=message_id, at=sent.time, skip=session,
                      quoted_message_id=quote["message_id"] if quote else None)
        self._receipts(sent, "delivered", self.recipients(sent))  # delivered at once; read on POST /sim/read
        return sent

    def recipients(self, sent: Sent) -> list[str]:
        """Who receives a sent message: the group's participants and whoever it mentions, or the user."""
        if not sent.recipient.endswith("@g.us"):
            return [sent.recipient]
        members = [f"{phone}@s.whatsapp.net" for phone in self.groups[sent.recipient].participants]
        return [jid for jid in dict.fromkeys([*members, *sent.mentioned_jids]) if jid != f"{sent.session}@s.whatsapp.net"]

    def _receipts(self, sent: Sent, kind: str, readers: Iterable[str]) -> int:
        """Receipts reach every device of the sending number; returns how many readers."""
        devices = self.devices.get(sent.session, [])
        count = 0
        for reader in readers:
            if devices:
                receipt = SimReceipt(f"{kind}:{sent.id}:{reader}", sent.id, sent.recipient, reader, kind, clock.now())
                for device in devices:
                    device.enqueue(receipt)
                count += 1
        return count

    def read(self, body: object) -> int:
        """POST /sim/read {"id", "reader"?}: recipients read a sent message (all of them without `reader`)."""
        if not isinstance(body, dict):
            raise SimError("body: expected a JSON object {id, reader?}")
        sent = self.sent.get(body.get("id"))  # type: ignore[arg-type]
        if sent is None:
            raise SimError(f"id: no message sent with id {body.get('id')!r}")
        recipients = self.recipients(sent)
        reader = body.get("reader")
        if reader is not None and reader not in recipients:
            raise SimError(f"reader: {reader!r} did not receive {sent.id} (recipients: {', '.join(recipients)})")
        return self._receipts(sent, "read", [reader] if reader else recipients)

    def history(self, chat_jid: object, since: object, until: object) -> list[Message]:
        group = self.group(chat_jid)
        lo = parse_time(since, "since") if since else None
        hi = parse_time(until, "until") if until else None
        return group.between(lo, hi)

    def download(self, url: object) -> bytes:
        try:
            return self.blobs[url]  # type: ignore[index]
        except (KeyError, TypeError):
            raise SimError(f"url: no such media: {url!r}") from None

    def sent_by(self, session: str | None) -> list[dict]:
        return [s.json() for s in self.sent.values() if session is None or s.session == session]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
