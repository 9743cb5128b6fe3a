"""Real WhatsApp through neonize 0.5.2 (whatsmeow in a Go shared library): a `Transport`.

How neonize runs: `NewClient.connect()` blocks for the whole session (the Go
side keeps the websocket and reconnects by itself after a drop) and calls our
event callbacks, one at a time, from one Go goroutine. The callbacks hand each
event to the bridge's asyncio loop and wait until the handler returned (for
messages: committed), so the Go side cannot run far ahead of the store; see
docs/NEONIZE.md for what WhatsApp has already been told at that point.

The session lives in neonize's database (SQLite in the account's session
directory, or a PostgreSQL URL; neonize_session.py), guarded by the bridge's
session lock. A connect that fails (no network, WhatsApp down) is reported as
CONNECT_FAILED and retried with tenacity backoff; terminal events (stream
replaced, logged out, outdated) stop the client and end run(). A temporary ban
stops the client until its expiry, then a new session starts (whatsmeow does
not retry one). Requests (send, mark read, ...): neonize_requests.py.
"""
from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import functools
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from google.protobuf.message import Message
from loguru import logger
from neonize.client import NewClient
from neonize.events import (ClientOutdatedEv, ConnectedEv, ConnectFailureEv, DisconnectedEv, HistorySyncEv,
                            KeepAliveRestoredEv, KeepAliveTimeoutEv, LoggedOutEv, MessageEv, OfflineSyncCompletedEv,
                            ReceiptEv, StreamErrorEv, StreamReplacedEv, TemporaryBanEv)
from neonize.exc import NeonizeError
from neonize.proto import Neonize_pb2 as nz
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

from bridge.transport import (TERMINAL_KINDS, Capabilities, ConnectionEvent, ConnectionKind, Handler, Source,
                              Transport)
from bridge.transports import neonize_mapping as mapping
from bridge.transports.neonize_requests import HISTORY_LIMIT, NeonizeClient, NeonizeRequests
from bridge.transports.neonize_session import ensure_paired, prepare_session
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.waiting import wait_event
from watchdog.shared import clock

RETRY_WAIT = wait_exponential_jitter(multiplier=0.5, max=60.0, jitter=0.5)  # 0.5 s, 1 s, 2 s ... 60 s, each + up to 0.5 s
RESTART_PAUSE = 1.0  # before a new session after a stream error (whatsmeow does not reconnect after one)
HANDLER_TIMEOUT = 30.0  # a callback waits this long for the handler before letting the Go side go on
POLL = 0.25  # how often a waiting callback checks whether the transport is closing
CLOSE_TIMEOUT = 5.0
RETRY_PAUSE = 1.0  # between attempts to commit a message after the handler failed
MAX_BATCH = 5000  # history-sync messages per on_messages call

# Connection events the transport subscribes to (message and history events have their own callbacks).
CONNECTION_EVENTS = (ConnectedEv, DisconnectedEv, KeepAliveTimeoutEv, KeepAliveRestoredEv, OfflineSyncCompletedEv,
                     StreamReplacedEv, LoggedOutEv, TemporaryBanEv, ClientOutdatedEv, ConnectFailureEv, StreamErrorEv)


class _ConnectFailed(Exception):
    """client.connect() gave up before a session existed (no network, DNS, WhatsApp unreachable)."""


def _new_client(database: str, device: nz.JID) -> NeonizeClient:
    return NewClient(database, jid=device)


# -- the transport ------------------------------------------------------------------------------------

class NeonizeTransport(NeonizeRequests, Transport):
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
