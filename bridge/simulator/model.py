"""What the simulated WhatsApp servers hold: messages (with media) as the wire carries them, the sends a bridge
made, receipts, a device's session with its offline queue, a group with its history in time order. Plain
objects, kept and changed by SimState (bridge/simulator/state.py).
"""
from __future__ import annotations

import asyncio
import base64
import bisect
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property


def iso(moment: datetime) -> str:
    """Fixed-width UTC ISO-8601, so text order is time order (the store relies on it)."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")



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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
