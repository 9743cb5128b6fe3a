"""The transport interface: what the bridge needs from a WhatsApp connection.

Two implementations: `bridge.transports.sim` (the simulated WhatsApp service,
the embedded default) and `bridge.transports.neonize_transport` (real
WhatsApp). The bridge core never knows which one it drives.

Acknowledge after commit is structural: a transport hands messages to
`Handler.on_messages` and acknowledges them to the server only after that
coroutine returned, i.e. after the store committed them.
"""
from __future__ import annotations

import abc
import enum
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol


class Source(str, enum.Enum):
    """How a message reached the store; monitors mark non-live drops as backfilled."""

    LIVE = "live"
    OFFLINE = "offline"  # server's offline queue, replayed on reconnect
    HISTORY = "history"  # history sync / on-demand history backfill
    SENT = "sent"  # sent by this bridge


class ConnectionKind(str, enum.Enum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"  # reason says why (server closed, network, keepalive timeout)
    OFFLINE_SYNC_DONE = "offline_sync_done"  # the offline queue has been replayed: caught up
    STREAM_REPLACED = "stream_replaced"  # another client took the session: never reconnect in a loop
    LOGGED_OUT = "logged_out"  # re-pairing needed
    CONNECT_FAILED = "connect_failed"  # could not connect (no network, server down)
    TEMPORARY_BAN = "temporary_ban"
    CLIENT_OUTDATED = "client_outdated"


# Kinds after which the transport stops and waits for an operator. A temporary ban is not one: the
# transport waits until it expires (ConnectionEvent.until), then connects again.
TERMINAL_KINDS = frozenset({ConnectionKind.STREAM_REPLACED, ConnectionKind.LOGGED_OUT,
                            ConnectionKind.CLIENT_OUTDATED})


@dataclass(frozen=True)
class MediaInfo:
    """Media metadata as the whatsapp-mcp schema stores it; enough to download later."""

    media_type: str  # image | video | audio | document
    filename: str
    url: str
    media_key: bytes = b""
    file_sha256: bytes = b""
    file_enc_sha256: bytes = b""
    file_length: int = 0
    # Transport-specific extras needed to download (e.g. neonize direct_path, mimetype).
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IncomingMessage:
    id: str
    chat_jid: str
    sender_jid: str  # full JID; the store keeps the bare user part
    text: str  # text, extended text or media caption
    timestamp: datetime  # timezone-aware, UTC
    source: Source = Source.LIVE
    is_from_me: bool = False
    chat_name: str | None = None
    media: MediaInfo | None = None
    quoted_message_id: str | None = None  # the message this one replies to (WhatsApp's ContextInfo.stanzaID)


@dataclass(frozen=True)
class ConnectionEvent:
    kind: ConnectionKind
    at: datetime
    reason: str = ""
    until: datetime | None = None  # TEMPORARY_BAN: when WhatsApp lifts it


class ReceiptKind(str, enum.Enum):
    """What WhatsApp tells the sender about a message it sent: stored in `receipts`, carried to feedback rows."""

    SERVER_ACK = "server_ack"  # WhatsApp's server accepted the send (the bridge records it itself)
    DELIVERED = "delivered"  # reached the recipient's phone
    READ = "read"  # the recipient opened the chat
    PLAYED = "played"  # a voice note or video was played (implies read)


@dataclass(frozen=True)
class Receipt:
    """One receipt from `recipient_jid` for our messages `message_ids` in `chat_jid`."""

    message_ids: tuple[str, ...]
    chat_jid: str
    recipient_jid: str  # who delivered / read it (a group participant, or the user of a direct chat)
    kind: ReceiptKind
    at: datetime  # timezone-aware, UTC


@dataclass(frozen=True)
class OutgoingMedia:
    path: Path  # already confined to the configured media folders
    media_type: str  # image | video | audio | document, by extension as whatsapp-mcp does
    filename: str


@dataclass(frozen=True)
class Quote:
    """The message a reply quotes, as WhatsApp's ContextInfo carries it: its id (stanzaID), its sender
    (participant) and its content (the preview shown above the reply)."""

    message_id: str
    sender_jid: str
    text: str


@dataclass(frozen=True)
class Reaction:
    """A reaction (an emoji; '' removes ours) to the message `message_id` sent by `sender_jid` (or by us)."""

    message_id: str
    sender_jid: str
    from_me: bool
    emoji: str


@dataclass(frozen=True)
class OutgoingMessage:
    message_id: str  # chosen by the bridge before sending: a resend after a crash is the same message
    recipient_jid: str
    text: str
    mentioned_jids: tuple[str, ...] = ()
    media: OutgoingMedia | None = None
    quote: Quote | None = None  # a reply quoting this message
    reaction: Reaction | None = None  # not a message but a reaction (text is its emoji)


@dataclass(frozen=True)
class SendResult:
    message_id: str
    timestamp: datetime


@dataclass(frozen=True)
class Capabilities:
    history_request: bool
    # Why not, when history_request is False; logged once by the bridge and documented.
    history_limit: str = ""
    # The sender chooses each message's id (OutgoingMessage.message_id), so a resend is the same message, which
    # WhatsApp dedupes. False (neonize 0.5.2, docs/NEONIZE.md): WhatsApp's id is the message's, and a resend after
    # a lost answer is a second message.
    chooses_ids: bool = True


class NotConnected(Exception):
    """The transport has no live connection; the bridge queues the send in its outbox."""


class AnswerLost(NotConnected):
    """The send was handed to WhatsApp, then the connection dropped (or nothing answered) before its answer: it may
    be in the chat or not. A NotConnected, so that a caller that only retries (the same id) needs no change; the
    outbox tells it apart where a resend would be a second message (Capabilities.chooses_ids False)."""


class SendFailed(Exception):
    """The server refused the message (bad recipient, ...); retrying will not help."""


class RateLimited(Exception):
    """WhatsApp answered rate-overlimit: the message stays queued and the account pauses (bridge/send_pause.py)."""


class HistoryUnsupported(Exception):
    """This transport cannot request history on demand."""


class Handler(Protocol):
    """Implemented by the bridge core; called by the transport from its event loop."""

    async def on_messages(self, messages: list[IncomingMessage]) -> None:
        """Store the messages; return only once committed (the transport acks after)."""

    async def on_connection(self, event: ConnectionEvent) -> None:
        """Record a connection state change."""

    async def on_receipts(self, receipts: list[Receipt]) -> None:
        """Store delivery / read receipts of messages we sent; return once committed (then acked)."""

    async def on_unmappable(self, message_id: str, chat_jid: str, reason: str, raw: str) -> None:
        """Quarantine an event the transport could not turn into a message (`raw`: its payload as text)."""


class Transport(abc.ABC):
    capabilities: Capabilities

    @abc.abstractmethod
    async def run(self, handler: Handler) -> None:
        """Connect and stay connected, reconnecting with backoff, until close().

        Returns (without reconnecting) after a terminal event (TERMINAL_KINDS),
        which it has reported to the handler first.
        """

    @abc.abstractmethod
    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one message; raises NotConnected (not handed over), AnswerLost (handed over, no answer) or
        SendFailed."""

    @abc.abstractmethod
    async def request_history(self, chat_jid: str, since: datetime, until: datetime) -> list[IncomingMessage]:
        """Messages of a chat in [since, until]; raises HistoryUnsupported or NotConnected."""

    @abc.abstractmethod
    async def download(self, media: MediaInfo) -> bytes:
        """The decrypted bytes of a received media message; raises NotConnected."""

    @abc.abstractmethod
    async def joined_groups(self) -> list[str]:
        """JIDs of the groups this account is a member of, as WhatsApp knows them; raises NotConnected.

        Why: a project that follows a group the number is not in (a mistyped JID, the number removed)
        receives nothing, which looks exactly like a quiet group unless someone asks WhatsApp.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and make run() return."""

    async def mark_read(self, chat_jid: str, sender_jid: str, message_ids: tuple[str, ...], at: datetime) -> None:
        """Send read receipts for received messages (`sender_jid`: their sender, needed in groups);
        raises NotConnected or SendFailed."""
        raise SendFailed(f"{type(self).__name__} cannot send read receipts")

    async def typing(self, chat_jid: str, composing: bool) -> None:
        """Show (or stop showing) "typing…" in a chat; raises NotConnected or SendFailed."""
        raise SendFailed(f"{type(self).__name__} cannot send typing indicators")
