"""The simulator client: a `Transport` over the simulated WhatsApp service's session websocket.

Frames are described in docs/ARCHITECTURE.md, "Simulator wire protocol".
Two tasks per connection: a reader that answers request futures at once (so a
send never waits behind a large ingest) and queues everything else in order,
and the run loop that hands consecutive message frames to the handler as one
batch and acknowledges them only after the handler returned (committed).

Keepalive is ours, not aiohttp's heartbeat, so that an outage is dated
truthfully: the reader notes when it last heard anything (a frame, a pong,
a ping), pings after `keepalive / 3` of silence and gives the connection up
after `keepalive` of silence, reporting the disconnect *at the moment it last
heard from the server* — the last moment the connection was known good. A
connection whose packets are dropped (no FIN, no RST) is so noticed within one
keepalive interval.

WhatsApp's limits as the simulator models them: a refused send carries
WhatsApp's code (bridge/refusals.py: 429 pauses the account, 463 fails the
message); a temporary ban is a `temporary_ban` frame (code, expiry) and close
code 4402, after which the transport waits for the expiry before connecting.
Requests (send, history, ...): sim_requests.py.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from datetime import datetime, timedelta

import aiohttp
from loguru import logger
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from bridge.transport import (TERMINAL_KINDS, Capabilities, ConnectionEvent, ConnectionKind, Handler, IncomingMessage,
                              NotConnected, Receipt, ReceiptKind, Source, Transport)
from bridge.transports.sim_requests import SimRequests, incoming_message
from watchdog.shared import endpoints
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.waiting import wait_event
from watchdog.shared import clock

# Close codes chosen by bridge/simulator/wire.py.
CLOSE_CODES = {4409: ConnectionKind.STREAM_REPLACED, 4401: ConnectionKind.LOGGED_OUT,
               4402: ConnectionKind.TEMPORARY_BAN}
MAX_FRAME = 144 * 1024 * 1024  # a 100 MB document (WhatsApp's limit) travels base64 in one frame
MAX_BATCH = 5000  # messages per on_messages call
SERVER_IDS_LIMIT = "[sim] server_ids: the sim transport sends and backfills as neonize 0.5.2 does (no history requests)"
RETRY_WAIT = wait_random_exponential(multiplier=0.05, max=2.0)  # full jitter: ~0.1 s, 0.2 s, ... capped at 2 s


class _Unreachable(Exception):
    """No simulator to connect to (not published, refused, timed out)."""


class _Closed:
    """End of a connection, as the reader saw it; `at`: when it was last known good."""

    def __init__(self, kind: ConnectionKind, reason: str, at: datetime | None = None,
                 until: datetime | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.at = at or clock.now()
        self.until = until  # a temporary ban's expiry


def _ban(frame: dict | None, reason: str) -> _Closed:
    """The close after a `temporary_ban` frame: WhatsApp's reason code and the expiry."""
    frame = frame or {}
    expire_s = frame.get("expire_s") if isinstance(frame.get("expire_s"), int) else 0
    until = clock.now() + timedelta(seconds=expire_s)
    code = frame.get("code") or "unknown reason"
    return _Closed(ConnectionKind.TEMPORARY_BAN, f"temporary ban by WhatsApp ({code}) until "
                   f"{until.isoformat(timespec='seconds')} (in {expire_s} s)" if frame else reason, until=until)


class SimTransport(SimRequests, Transport):
    capabilities = Capabilities(history_request=True)
    handshake_timeout = 3.0  # connect + websocket upgrade; a frozen simulator accepts but never answers
    keepalive = 3.0  # seconds of silence after which the connection is dead (pings after a third of it)

    def __init__(self, config: Config, account: AccountConfig) -> None:
        self._data_dir = config.data_dir
        self._phone = account.phone
        # A host of a cluster is a linked device of its own (issue 21); a simulator it shares, by [sim] url.
        self._node = config.cluster.node if config.cluster is not None else ""
        self._sim_url = config.sim.url if config.sim is not None else ""
        # `[sim] server_ids`: as through neonize 0.5.2 (docs/NEONIZE.md), ids are the simulator's (said in the hello)
        # and there is no on-demand history: a device's own send is in its store only as its own answer said
        self._server_ids = config.sim is not None and config.sim.server_ids
        self.capabilities = Capabilities(history_request=not self._server_ids, chooses_ids=not self._server_ids,
                                         history_limit=SERVER_IDS_LIMIT if self._server_ids else "")
        self._jid = account.jid
        self._socket: aiohttp.ClientWebSocketResponse | None = None  # the open websocket, if any
        self._connected = False  # the simulator accepted our hello: requests may go out
        self._pending: dict[int, asyncio.Future[dict]] = {}
        self._requests = itertools.count(1)
        self._closed = asyncio.Event()
        self._heard_at = clock.now()  # the last time anything arrived on the current connection
        self._closing: asyncio.Future | None = None  # the background close of the last connection

    # -- connection loop ---------------------------------------------------------

    async def run(self, handler: Handler) -> None:
        # sock_read bounds the upgrade only: aiohttp lifts it once the websocket is open.
        timeout = aiohttp.ClientTimeout(total=None, connect=self.handshake_timeout, sock_read=self.handshake_timeout)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not self._closed.is_set():
                ws = await self._connect_until_up(http, handler)
                if ws is None or self._closed.is_set():
                    if ws is not None:
                        await ws.close()
                    return
                self._socket = ws  # from here on close() can end it
                end = await self._serve(ws, handler)
                if self._closed.is_set():
                    end = _Closed(ConnectionKind.DISCONNECTED, "closed by client")
                logger.info("sim transport: {} ({}), last heard {}", end.kind.value, end.reason, end.at)
                await handler.on_connection(ConnectionEvent(end.kind, end.at, end.reason, end.until))
                if end.kind in TERMINAL_KINDS:
                    return
                if end.until is not None:  # banned: connecting before the expiry is refused again
                    await self._sleep_unless_closed(max(0.0, (end.until - clock.now()).total_seconds()))

    async def _connect_until_up(self, http: aiohttp.ClientSession,
                                handler: Handler) -> aiohttp.ClientWebSocketResponse | None:
        """Connect, retrying with backoff; report the first failure of an outage. None once closed."""
        reported = False
        retrying = AsyncRetrying(wait=RETRY_WAIT, retry=retry_if_exception_type(_Unreachable),
                                 stop=self._stop_when_closed, sleep=self._sleep_unless_closed, reraise=True)
        with contextlib.suppress(_Unreachable):
            async for attempt in retrying:
                with attempt:
                    if self._closed.is_set():
                        return None
                    try:
                        return await self._connect(http)
                    except _Unreachable as exc:
                        logger.debug("sim transport: {}", exc)
                        if not reported:
                            reported = True
                            await handler.on_connection(ConnectionEvent(ConnectionKind.CONNECT_FAILED, clock.now(), str(exc)))
                        raise
        return None

    def _stop_when_closed(self, state: RetryCallState) -> bool:
        return self._closed.is_set()

    async def _sleep_unless_closed(self, delay: float) -> None:
        await wait_event(self._closed, delay)

    async def _connect(self, http: aiohttp.ClientSession) -> aiohttp.ClientWebSocketResponse:
        # Read on every attempt: a restarted simulator may listen on another port.
        url = f"ws{self._sim_url.rstrip('/')[4:]}/ws" if self._sim_url else endpoints.url(self._data_dir, "sim", "ws")
        if not url:
            raise _Unreachable(f"the simulator has published no endpoint ({endpoints.run_dir(self._data_dir)}/sim.json)")
        try:
            return await http.ws_connect(url, autoping=False, max_msg_size=MAX_FRAME,
                                         timeout=aiohttp.ClientWSTimeout(ws_close=2.0))
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise _Unreachable(f"cannot connect to the simulator at {url}: {exc or type(exc).__name__}") from None

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, handler: Handler) -> _Closed:
        """Handle one connection until it ends; returns how it ended."""
        inbox: collections.deque[dict | _Closed] = collections.deque()
        arrived = asyncio.Event()
        reader = asyncio.create_task(self._read(ws, inbox, arrived))
        try:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError):  # if it fails, the reader says why
                await ws.send_str(json.dumps({"type": "hello", "session": self._phone,
                                              **({"node": self._node} if self._node else {}),
                                              **({"server_ids": True} if self._server_ids else {})}))
            while True:
                if not inbox:
                    arrived.clear()
                    await arrived.wait()
                    continue
                item = inbox.popleft()
                if isinstance(item, _Closed):
                    return item
                kind = item.get("type")
                if kind == "connected":
                    self._connected = True
                    await handler.on_connection(ConnectionEvent(ConnectionKind.CONNECTED, clock.now()))
                elif kind == "offline_sync_done":
                    await handler.on_connection(ConnectionEvent(ConnectionKind.OFFLINE_SYNC_DONE, clock.now(),
                                                                f"{item.get('count', 0)} offline messages"))
                elif kind == "messages":
                    await self._ingest(ws, handler, self._batch(item, inbox))
                elif kind == "receipts":
                    await self._take_receipts(ws, handler, item["receipts"])
        finally:
            self._socket = None
            self._connected = False
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            if not ws.closed:  # in the background: a dead peer would hold up the reconnect until ws_close
                self._closing = asyncio.ensure_future(ws.close())

    def _batch(self, first: dict, inbox: collections.deque) -> list[IncomingMessage]:
        """The first message frame plus every message frame right behind it, as one batch."""
        frames = [first]
        count = len(first["messages"])
        while inbox and isinstance(inbox[0], dict) and inbox[0].get("type") == "messages" and count < MAX_BATCH:
            frames.append(inbox.popleft())
            count += len(frames[-1]["messages"])
        return [incoming_message(raw, Source.OFFLINE if frame.get("offline") else Source.LIVE, self._jid)
                for frame in frames for raw in frame["messages"]]

    async def _ingest(self, ws: aiohttp.ClientWebSocketResponse, handler: Handler,
                      batch: list[IncomingMessage]) -> None:
        try:
            await handler.on_messages(batch)
        except Exception as exc:  # noqa: BLE001 - whatever the handler's failure, the batch is not committed
            # Not acknowledged: the simulator redelivers them on the next connection.
            logger.error("sim transport: handler failed on {} messages, not acknowledged: {!r}", len(batch), exc)
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await ws.send_str(json.dumps({"type": "ack", "ids": [m.id for m in batch]}))

    async def _take_receipts(self, ws: aiohttp.ClientWebSocketResponse, handler: Handler, raw: list[dict]) -> None:
        """Receipts go the same way as messages: committed by the handler, then acked (else redelivered)."""
        receipts = [Receipt(tuple(r["message_ids"]), r["chat_jid"], r["recipient_jid"], ReceiptKind(r["kind"]),
                            datetime.fromisoformat(r["timestamp"])) for r in raw]
        try:
            await handler.on_receipts(receipts)
        except Exception as exc:  # noqa: BLE001 - not committed, so not acknowledged
            logger.error("sim transport: handler failed on {} receipts, not acknowledged: {!r}", len(receipts), exc)
            return
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await ws.send_str(json.dumps({"type": "ack", "ids": [r["id"] for r in raw]}))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, inbox: collections.deque,
                    arrived: asyncio.Event) -> None:
        """Answer request futures at once; queue every other frame, then how the connection ended."""
        end = _Closed(ConnectionKind.DISCONNECTED, "connection closed")
        loop = asyncio.get_running_loop()
        banned: dict | None = None  # the temporary_ban frame before a 4402 close
        heard = pinged = loop.time()
        self._heard_at = clock.now()
        try:
            while True:
                silent = loop.time() - heard
                if silent >= self.keepalive:
                    end = _Closed(ConnectionKind.DISCONNECTED,
                                  f"connection lost: keepalive timeout (nothing for {silent:.1f} s)", self._heard_at)
                    break
                if silent >= self.keepalive / 3 and loop.time() - pinged >= self.keepalive / 3:
                    pinged = loop.time()
                    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                        await ws.ping()
                try:
                    msg = await ws.receive(timeout=min(self.keepalive / 6, self.keepalive - silent))
                except asyncio.TimeoutError:
                    continue
                heard, self._heard_at = loop.time(), clock.now()
                if msg.type == aiohttp.WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                        await ws.pong(msg.data)
                    continue
                if msg.type == aiohttp.WSMsgType.PONG:
                    continue
                if msg.type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    if not isinstance(frame, dict):
                        raise ValueError(f"frame is not a JSON object: {msg.data[:80]!r}")
                    if frame.get("type") == "temporary_ban":
                        banned = frame
                    elif frame.get("type") == "result":
                        future = self._pending.get(frame.get("req"))
                        if future and not future.done():
                            future.set_result(frame)
                    else:
                        inbox.append(frame)
                        arrived.set()
                    continue
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    code = ws.close_code or msg.data
                    reason = msg.extra or f"closed by the simulator (code {code})"
                    kind = CLOSE_CODES.get(code, ConnectionKind.DISCONNECTED)
                    end = _ban(banned, reason) if kind == ConnectionKind.TEMPORARY_BAN else _Closed(kind, reason)
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    error = msg.data
                    end = _Closed(ConnectionKind.DISCONNECTED, f"connection lost: {error or type(error).__name__}",
                                  self._heard_at)
                elif msg.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                    end = _Closed(ConnectionKind.DISCONNECTED, f"connection lost (code {ws.close_code})",
                                  self._heard_at)
                else:
                    continue
                break
        except ValueError as exc:  # includes JSONDecodeError: a protocol bug; reconnecting starts clean
            logger.error("sim transport: bad frame from the simulator: {}", exc)
            end = _Closed(ConnectionKind.DISCONNECTED, f"protocol error: {exc}")
        finally:
            self._connected = False
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(NotConnected(f"connection ended before the reply: {end.reason}"))
            inbox.append(end)
            arrived.set()

    async def close(self) -> None:
        self._closed.set()
        ws = self._socket
        if ws is not None:
            await ws.close(message=b"client closing")
