"""Real WhatsApp through neonize 0.5.2 (whatsmeow in a Go shared library): a `Transport`.

How neonize runs: `NewClient.connect()` blocks for the whole session (the Go
side keeps the websocket and reconnects by itself after a drop) and calls our
event callbacks, one at a time, from one Go goroutine. The callbacks hand each
event to the bridge's asyncio loop and wait until the handler returned (for
messages: committed), so the Go side cannot run far ahead of the store; see
docs/NEONIZE.md for what WhatsApp has already been told at that point.

The session lives in neonize's database (SQLite in the account's session
directory, or a PostgreSQL URL), guarded by the bridge's session lock. A
connect that fails (no network, WhatsApp down) is reported as CONNECT_FAILED
and retried with tenacity backoff; terminal events (stream replaced, logged
out, outdated) stop the client and end run(). A temporary ban stops the client
until its expiry, then a new session starts (whatsmeow does not retry one).
Send errors are WhatsApp's codes (bridge/refusals.py): rate-overlimit pauses
the account, a refusal for one contact fails that message.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from google.protobuf.message import Message
from loguru import logger
from neonize._binder import func_callback_bytes2, gocode
from neonize.client import NewClient
from neonize.events import (ClientOutdatedEv, ConnectedEv, ConnectFailureEv, DisconnectedEv, HistorySyncEv,
                            KeepAliveRestoredEv, KeepAliveTimeoutEv, LoggedOutEv, MessageEv, OfflineSyncCompletedEv,
                            ReceiptEv, StreamErrorEv, StreamReplacedEv, TemporaryBanEv)
from neonize.exc import (DownloadError, GetGroupInfoError, GetJIDFromStoreError, MarkReadError, NeonizeError,
                         SendMessageError, SendPresenceError, UploadError)
from neonize.proto import Neonize_pb2 as nz
from neonize.utils.enum import ChatPresence, ChatPresenceMedia, ReceiptType
from neonize.utils.log import log_whatsmeow
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from bridge.transport import (AnswerLost, TERMINAL_KINDS, Capabilities, ConnectionEvent, ConnectionKind, Handler,
                              HistoryUnsupported, IncomingMessage, MediaInfo, NotConnected, OutgoingMessage,
                              SendFailed, SendResult, Source, Transport)
from bridge import refusals
from bridge.transports import neonize_mapping as mapping
from bridge.transports.neonize_account import session_database
from watchdog.shared import file_modes
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.config_model import is_postgres_url
from watchdog.shared.exitcodes import EXIT_NEEDS_OPERATOR
from watchdog.shared.waiting import wait_event
from watchdog.shared import clock

RETRY_WAIT = wait_exponential_jitter(multiplier=0.5, max=60.0, jitter=0.5)  # 0.5 s, 1 s, 2 s ... 60 s, each + up to 0.5 s
RESTART_PAUSE = 1.0  # before a new session after a stream error (whatsmeow does not reconnect after one)
HANDLER_TIMEOUT = 30.0  # a callback waits this long for the handler before letting the Go side go on
POLL = 0.25  # how often a waiting callback checks whether the transport is closing
CLOSE_TIMEOUT = 5.0
RETRY_PAUSE = 1.0  # between attempts to commit a message after the handler failed
MAX_BATCH = 5000  # history-sync messages per on_messages call
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

# Connection events the transport subscribes to (message and history events have their own callbacks).
CONNECTION_EVENTS = (ConnectedEv, DisconnectedEv, KeepAliveTimeoutEv, KeepAliveRestoredEv, OfflineSyncCompletedEv,
                     StreamReplacedEv, LoggedOutEv, TemporaryBanEv, ClientOutdatedEv, ConnectFailureEv, StreamErrorEv)


class NeedsOperator(Exception):
    """The session cannot be used without a human (not paired): exit with EXIT_NEEDS_OPERATOR, do not restart."""

    exit_code = EXIT_NEEDS_OPERATOR


class SessionStoreError(Exception):
    """neonize's session database cannot be read (a file problem, PostgreSQL down): an operational error."""


class _ConnectFailed(Exception):
    """client.connect() gave up before a session existed (no network, DNS, WhatsApp unreachable)."""


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


# -- session store ----------------------------------------------------------------------------------

def prepare_session(account: AccountConfig) -> str:
    """The session database, its directory made (0700) by the process that will use it.

    The session's keys are the account: an existing file (with its -wal/-shm, perhaps left 0644 by an
    older version) is tightened to 0600; neonize creates new ones under umask 027.
    """
    database = session_database(account)
    if not is_postgres_url(database):
        file_modes.ensure_dir(account.session_dir, file_modes.PRIVATE_DIR)
        file_modes.restrict(*file_modes.sqlite_files(Path(database)), mode=file_modes.PRIVATE_FILE)
    return database


def _device_jid(text: str) -> nz.JID:
    """`27710000000:7@s.whatsapp.net` (whatsmeow_device.jid) as a neonize JID."""
    user_device, _, server = text.partition("@")
    user, _, device = user_device.partition(":")
    return nz.JID(User=user, Device=int(device or 0), Server=server, RawAgent=0, Integrator=0, IsEmpty=False)


def linked_devices(database: str) -> list[nz.JID]:
    """Device JIDs stored in a neonize session database.

    Uses neonize's GetAllDevices export (the same Go code and schema as the
    client) but parses only the JID: ClientFactory.get_all_devices_from_db
    splits each row on commas and breaks on a push name that contains one.
    """
    answer = gocode.GetAllDevices(database.encode(), func_callback_bytes2(log_whatsmeow)).decode()
    if answer.startswith("error: "):
        raise SessionStoreError(f"cannot read the neonize session store {database}: {answer[len('error: '):]}")
    return [_device_jid(row.split(",", 1)[0]) for row in filter(None, answer.split("|\u0001|"))]


def _read_only_devices(database: Path) -> list[nz.JID]:
    """The devices of a SQLite session store, read without writing a byte (GetAllDevices migrates the schema).

    `immutable` when there is no -wal (the file is the whole database, and a WAL-mode read would create
    -wal and -shm); a plain read-only open when a bridge has them open already."""
    wal = database.with_name(database.name + "-wal").exists()
    uri = f"file:{database}?{'mode=ro' if wal else 'immutable=1'}"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            rows = conn.execute("SELECT jid FROM whatsmeow_device").fetchall()
    except sqlite3.Error as exc:
        raise SessionStoreError(f"cannot read the neonize session store {database}: {exc}") from None
    return [_device_jid(str(jid)) for (jid,) in rows]


def linked_device(account: AccountConfig, read_only: bool = False) -> nz.JID | None:
    """This account's paired device, or None (a missing SQLite file is not created just to look).

    `read_only` (wa-watchdog check): a SQLite store is read without neonize, so that looking writes nothing."""
    database = session_database(account)
    if not is_postgres_url(database):
        if not Path(database).exists():
            return None
        if read_only:
            return next((jid for jid in _read_only_devices(Path(database)) if jid.User == account.phone), None)
    return next((jid for jid in linked_devices(database) if jid.User == account.phone), None)


def ensure_paired(account: AccountConfig) -> nz.JID:
    """The paired device to resume; raises NeedsOperator naming the fix when there is none."""
    device = linked_device(account)
    if device is None:
        raise NeedsOperator(
            f"account {account.name!r} ({account.phone}) is not paired: the neonize session store "
            f"{session_database(account)} holds no linked device for it; link it with "
            f"`wa-watchdog pair --account {account.name} --phone {account.phone}` (or without --phone for a QR code)")
    return device


def _new_client(database: str, device: nz.JID) -> NeonizeClient:
    return NewClient(database, jid=device)


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


# -- the transport ------------------------------------------------------------------------------------

class NeonizeTransport(Transport):
    capabilities = Capabilities(history_request=False, history_limit=HISTORY_LIMIT, chooses_ids=False)

    def __init__(self, config: Config, account: AccountConfig,
                 client_factory: Callable[[str, nz.JID], NeonizeClient] = _new_client) -> None:
        self._account = account
        self._database = prepare_session(account)
        self._new_client = client_factory
        self._client: NeonizeClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handler: Handler | None = None
        self._closed = asyncio.Event()
        self._closing = threading.Event()  # read by callbacks on neonize's thread
        self._connected = False
        self._offline_done = False  # messages before WhatsApp's offline sync completes come from its offline queue
        self._keepalive_lost = False
        self._terminal: ConnectionEvent | None = None
        self._restart = False  # the session must be replaced (stream error: whatsmeow will not reconnect)
        self._banned_until: datetime | None = None  # a temporary ban: the next session starts at its expiry
        self._lid_groups: dict[str, bool] = {}

    # -- connection loop ---------------------------------------------------------------------------------

    async def run(self, handler: Handler) -> None:
        device = await asyncio.to_thread(ensure_paired, self._account)
        self._loop = asyncio.get_running_loop()
        self._handler = handler
        # One client object for every attempt: a dropped NewClient's finalizer stops the Go session by phone
        # number, which would kill a newer session of the same account if it ran later.
        client = self._new_client(self._database, device)
        client.event(MessageEv)(self._on_message)
        client.event(HistorySyncEv)(self._on_history)
        client.event(ReceiptEv)(self._on_receipt)
        for kind in CONNECTION_EVENTS:
            client.event(kind)(self._on_connection)
        while not self._closed.is_set() and self._terminal is None:
            self._restart = False
            retrying = AsyncRetrying(wait=RETRY_WAIT, retry=retry_if_exception_type(_ConnectFailed),
                                     stop=self._stop_when_closed, sleep=self._sleep_unless_closed, reraise=True)
            with contextlib.suppress(_ConnectFailed):
                async for attempt in retrying:
                    with attempt:
                        await self._session(client, handler)
            if self._banned_until is not None:
                wait = max(RESTART_PAUSE, (self._banned_until - clock.now()).total_seconds())
                logger.warning("neonize transport: temporarily banned; connecting again in {:.0f} s", wait)
                self._banned_until = None
                await self._sleep_unless_closed(wait)
            elif self._restart:
                await self._sleep_unless_closed(RESTART_PAUSE)
        if self._terminal is not None:
            logger.error("neonize transport: {} ({}); not reconnecting", self._terminal.kind.value, self._terminal.reason)

    def _stop_when_closed(self, state: RetryCallState) -> bool:
        return self._closed.is_set()

    async def _sleep_unless_closed(self, delay: float) -> None:
        await wait_event(self._closed, delay)

    async def _session(self, client: NeonizeClient, handler: Handler) -> None:
        """One neonize session: returns once it was stopped; raises _ConnectFailed (reported) if it never started."""
        if self._closed.is_set():
            return  # tenacity makes one more attempt after a sleep that close() cut short
        self._client = client
        try:
            await asyncio.to_thread(client.connect)
        except NeonizeError as exc:
            reason = f"cannot connect to WhatsApp: {exc}"
            logger.warning("neonize transport: {}", reason)
            await handler.on_connection(ConnectionEvent(ConnectionKind.CONNECT_FAILED, clock.now(), reason))
            raise _ConnectFailed(reason) from None
        finally:
            self._client = None
            self._connected = False

    async def close(self) -> None:
        """Stop the session and make run() return.

        Stop is repeated until connect() returned: a Stop that reaches the Go
        side before its Neonize() call registered the session does nothing.
        """
        self._closed.set()
        self._closing.set()
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while (client := self._client) is not None and time.monotonic() < deadline:
            await asyncio.to_thread(client.stop)
            await asyncio.sleep(POLL)

    async def _stop_client(self) -> None:
        client = self._client
        if client is not None:
            await asyncio.to_thread(client.stop)

    # -- callbacks (neonize's Go thread) ------------------------------------------------------------------

    def _wait_for(self, work: Callable[[], Awaitable[None]], what: str, retry_failures: bool = False) -> None:
        """Run `work()` on the bridge loop and block this (neonize's) thread until it finished.

        Blocking is the point: neonize's Go side queues at most 100 events
        while this callback runs, and whatsmeow's node handler stops reading
        (and acknowledging) further messages once that queue is full, so the
        gap between WhatsApp's receipt and our commit stays bounded. A failed
        commit is retried (`retry_failures`) for up to HANDLER_TIMEOUT: WhatsApp
        has its receipt already and will not deliver the message again.
        """
        deadline = time.monotonic() + HANDLER_TIMEOUT
        while self._loop is not None and not self._closing.is_set():
            try:
                future = asyncio.run_coroutine_threadsafe(work(), self._loop)  # type: ignore[arg-type]
            except RuntimeError:  # the loop is gone: shutting down
                return
            try:
                while True:
                    try:
                        future.result(timeout=POLL)
                        return
                    except concurrent.futures.TimeoutError:
                        if self._closing.is_set():
                            return
                        if time.monotonic() > deadline:
                            logger.warning("neonize transport: handler still busy with {} after {:.0f}s; "
                                           "not waiting longer", what, HANDLER_TIMEOUT)
                            return
            except Exception:  # noqa: BLE001 - a callback must never raise into neonize (ctypes swallows it)
                logger.exception("neonize transport: handler failed on {}", what)
                if not retry_failures or time.monotonic() > deadline:
                    return
                self._closing.wait(RETRY_PAUSE)

    def _on_message(self, _client: object, event: nz.Message) -> None:
        try:
            source = Source.LIVE if self._offline_done else Source.OFFLINE
            if event.Info.MessageSource.IsGroup:
                chat = mapping.jid_string(event.Info.MessageSource.Chat)
                self._lid_groups[chat] = event.Info.MessageSource.AddressingMode == nz.AddressingMode.LID
            message = mapping.incoming_message(event, source)
        except Exception as exc:  # noqa: BLE001 - a poison message: quarantined with its raw bytes, never lost
            logger.error("neonize transport: cannot map message {}: {!r}; quarantined", event.Info.ID, exc)
            self._quarantine(event.Info.ID, mapping.jid_string(event.Info.MessageSource.Chat), exc, event)
            return
        if message is not None and self._handler is not None:
            self._wait_for(functools.partial(self._handler.on_messages, [message]), f"message {message.id}",
                           retry_failures=True)

    def _on_receipt(self, _client: object, event: nz.Receipt) -> None:
        try:
            receipt = mapping.receipt(event)
        except Exception:  # noqa: BLE001
            logger.exception("neonize transport: cannot map a receipt for {}", list(event.MessageIDs))
            return
        if receipt is not None and self._handler is not None:
            self._wait_for(functools.partial(self._handler.on_receipts, [receipt]),
                           f"{receipt.kind.value} receipt for {', '.join(receipt.message_ids)}", retry_failures=True)

    def _quarantine(self, message_id: object, chat_jid: str, exc: Exception, raw: Message) -> None:
        handler = self._handler
        if handler is not None:
            payload = base64.b64encode(raw.SerializePartialToString()).decode("ascii")
            reason = f"cannot be mapped: {type(exc).__name__}: {exc}"
            self._wait_for(functools.partial(handler.on_unmappable, str(message_id), chat_jid, reason,
                                             f'{{"protobuf_b64": "{payload}", "type": "{type(raw).__name__}"}}'),
                           f"quarantine of {message_id}", retry_failures=True)

    def _on_history(self, _client: object, event: nz.HistorySync) -> None:
        messages, poison = mapping.history_messages(event.Data, self._account.jid)
        for item, chat, exc in poison:
            logger.error("neonize transport: cannot map history message {}: {!r}; quarantined", item.message.key.ID, exc)
            self._quarantine(item.message.key.ID, chat, exc, item)
        logger.info("neonize transport: history sync ({}) with {} messages", event.Data.syncType, len(messages))
        handler = self._handler
        batches = [messages[start:start + MAX_BATCH] for start in range(0, len(messages), MAX_BATCH)]
        for batch in batches:
            if handler is not None:
                self._wait_for(functools.partial(handler.on_messages, batch), f"{len(batch)} history messages",
                               retry_failures=True)

    def _on_connection(self, _client: object, event: object) -> None:
        try:
            mapped = mapping.connection_event(event, clock.now())
        except Exception:  # noqa: BLE001
            logger.exception("neonize transport: cannot map {}", type(event).__name__)
            return
        if mapped is not None:
            keepalive = isinstance(event, (KeepAliveTimeoutEv, KeepAliveRestoredEv))
            stream_error = isinstance(event, StreamErrorEv)
            self._wait_for(functools.partial(self._report, mapped, keepalive, stream_error), mapped.kind.value)

    # -- connection state (bridge loop) -------------------------------------------------------------------

    async def _report(self, event: ConnectionEvent, keepalive: bool = False, stream_error: bool = False) -> None:
        """Keep the state, tell the handler what changed, stop the client on terminal events."""
        handler = self._handler
        assert handler is not None
        kind = event.kind
        if keepalive and kind == ConnectionKind.DISCONNECTED:
            if not self._connected or self._keepalive_lost:
                return  # one report per outage, not one per missed keep-alive
            self._keepalive_lost = True
        elif keepalive and kind == ConnectionKind.CONNECTED:
            if not self._keepalive_lost:
                return
            # The socket never closed: nothing was queued for us, so we are caught up at once.
            self._keepalive_lost, self._connected = False, True
            await handler.on_connection(event)
            await handler.on_connection(ConnectionEvent(ConnectionKind.OFFLINE_SYNC_DONE, event.at,
                                                        "keep-alive restored on the same connection"))
            return
        if kind == ConnectionKind.CONNECTED:
            self._connected, self._offline_done, self._keepalive_lost = True, False, False
        elif kind == ConnectionKind.OFFLINE_SYNC_DONE:
            self._offline_done = True
        elif kind != ConnectionKind.CONNECT_FAILED:
            self._connected = False
        logger.info("neonize transport: {}{}", kind.value, f" ({event.reason})" if event.reason else "")
        await handler.on_connection(event)
        if kind in TERMINAL_KINDS:
            self._terminal = event
            await self._stop_client()
        elif kind == ConnectionKind.TEMPORARY_BAN:
            self._banned_until = event.until or clock.now()
            await self._stop_client()
        elif stream_error:
            self._restart = True  # whatsmeow expects this disconnect and will not reconnect by itself
            await self._stop_client()

    # -- requests -----------------------------------------------------------------------------------------

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
