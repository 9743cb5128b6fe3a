"""One session's websocket in the simulated WhatsApp: the hello that names the device, the offline replay and
live delivery, the answers to the client's frames; and the close codes the client maps to connection kinds.
A part of Sim (bridge/simulator/service.py). The frames: docs/ARCHITECTURE.md, "Simulator wire protocol".
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import random

import aiohttp
from aiohttp import WSMsgType, web
from loguru import logger

from bridge.simulator.connection import Connection
from bridge.simulator.interactions import Interactions
from bridge.simulator.limits import Gatekeeper
from bridge.simulator.model import Session, SimReceipt, iso
from bridge.simulator.state import SimError, SimState
from watchdog.components import Config

# Close codes the client maps to connection kinds (4000-4999 are for applications).
CLOSE_SERVER_DISCONNECT = 4000  # -> disconnected, reason in the close message
CLOSE_LOGGED_OUT = 4401  # -> logged_out (unknown session)
CLOSE_STREAM_REPLACED = 4409  # -> stream_replaced
CLOSE_TEMPORARY_BAN = 4402  # -> temporary_ban, after a temporary_ban frame with the code and expiry
CLOSE_PROTOCOL = 4400  # the client broke the protocol -> disconnected
CLOSE_GOING_AWAY = 1001  # simulator shutting down -> disconnected
BATCH = 500  # messages per frame: a bridge ingests thousands per second in few frames
MAX_FRAME = 144 * 1024 * 1024  # media travels base64 inside frames: a 100 MB document (WhatsApp's limit) fits
HELLO_TIMEOUT = 5.0
SERVER_HEARTBEAT = 10.0  # drop a client that stopped answering pings (a frozen bridge)
# How long an older connection of a device has to answer a ping when a new one takes its place: the deadline
# aiohttp's heartbeat gives a pong, so "live" means what the heartbeat would have kept.
PROBE_S = SERVER_HEARTBEAT / 2


class SessionWire:
    config: Config
    state: SimState
    rng: random.Random
    gate: Gatekeeper
    interactions: Interactions
    withheld: dict[tuple[str, str], bool]

    async def deliver(self, conn: Connection) -> None:
        """Replay the offline queue (flagged offline), say so, then push live messages as they are queued."""
        session = conn.session
        boundary = session.last_seq  # queued before this connection: offline
        offline_count = 0
        synced = False
        while not conn.closing:
            entries = session.after(conn.cursor, BATCH)
            offline = bool(entries) and entries[0][0] <= boundary
            if not synced and not offline:  # the replay is done, even if live messages are already waiting
                synced = True
                await conn.ws.send_str(json.dumps({"type": "offline_sync_done", "count": offline_count}))
            elif entries:
                if offline:
                    entries = [e for e in entries if e[0] <= boundary]
                    offline_count += len(entries)
                conn.cursor = entries[-1][0]
                session.delivered += len(entries)
                for is_receipt, run in itertools.groupby(entries, lambda e: isinstance(e[1], SimReceipt)):
                    key = "receipts" if is_receipt else "messages"
                    await conn.ws.send_str(json.dumps({"type": key, "offline": offline, key: [m.wire for _, m in run]}))
            else:
                session.wakeup.clear()
                await session.wakeup.wait()

    async def scheduled_disconnect(self, conn: Connection) -> None:
        lo, hi = self.config.sim.disconnect_every  # type: ignore[union-attr]
        await asyncio.sleep(self.rng.uniform(lo, hi))
        if conn.session.connection is conn:
            self.disconnect(conn.session.phone, "scheduled")

    def request(self, conn: Connection, frame: dict) -> dict | None:
        """Answer one client frame; None for frames without a reply (ack)."""
        kind = frame.get("type")
        if kind == "ack":
            ids = frame.get("ids")
            if isinstance(ids, list):
                conn.session.ack(i for i in ids if isinstance(i, str))
            return None
        reply: dict = {"type": "result", "req": frame.get("req")}
        try:
            if kind == "send":
                if (refusal := self._refused(conn, frame)) is not None:
                    reply.update(ok=False, error=refusal.error, code=refusal.code)
                    return reply
                if frame.get("reaction") is not None:
                    reaction = self.interactions.react(self.state, conn.session.phone, frame)
                    reply.update(ok=True, id=reaction["id"], timestamp=reaction["time"])
                else:
                    sent = self.state.send(conn.session, frame)
                    reply.update(ok=True, id=sent.id, timestamp=iso(sent.time))
                if (device := (conn.session.phone, conn.session.node)) in self.withheld:
                    if self.withheld[device]:
                        self.disconnect(conn.session.phone, "dropped right after a send was taken", conn.session.node)
                    return None  # in the group and at the sibling devices; the sender never hears so
            elif kind == "read":
                self.interactions.read(conn.session.phone, frame)
                reply.update(ok=True)
            elif kind == "presence":
                self.interactions.presence(conn.session.phone, frame)
                reply.update(ok=True)
            elif kind == "history":
                found = self.state.history(frame.get("chat_jid"), frame.get("since"), frame.get("until"))
                reply.update(ok=True, messages=[m.wire for m in found])
            elif kind == "groups":
                reply.update(ok=True, groups=sorted(self.state.members[conn.session.phone]))
            elif kind == "download":
                data = self.state.download(frame.get("url"))
                reply.update(ok=True, data_b64=base64.b64encode(data).decode("ascii"))
            else:
                raise SimError(f"type: unknown frame type {kind!r}")
        except SimError as exc:
            reply.update(ok=False, error=str(exc))
        return reply

    async def hello(self, ws: web.WebSocketResponse) -> Session | None:
        """Wait for the client's hello naming its session; close the socket and return None if it is not one.

        Taking over a session only on a hello means a handshake the client
        already gave up on (timed out while we were slow) never replaces
        the connection it made afterwards.
        """
        try:
            msg = await ws.receive(timeout=HELLO_TIMEOUT)
        except asyncio.TimeoutError:
            await ws.close(code=CLOSE_PROTOCOL, message=b"protocol error: no hello frame")
            return None
        frame = _parse(msg)
        if frame is None or frame.get("type") != "hello":
            if not ws.closed:
                await ws.close(code=CLOSE_PROTOCOL, message=b"protocol error: expected a hello frame first")
            return None
        phone = frame.get("session")
        session = self.state.device(phone, frame.get("node", ""))  # a host of a cluster: its own linked device
        if session is not None:
            session.server_ids = frame.get("server_ids") is True
        if session is None:
            await ws.close(code=CLOSE_LOGGED_OUT, message=f"logged out: unknown session {phone!r}".encode()[:123])
        elif self.gate.standing[session.phone].logged_out:
            await ws.close(code=CLOSE_LOGGED_OUT, message=b"logged out: the linked device was removed on the phone")
            return None
        elif self.gate.ban_left(session.phone):
            await ws.send_str(json.dumps(self.gate.ban_frame(session.phone)))
            await ws.close(code=CLOSE_TEMPORARY_BAN, message=b"temporary ban")
            return None
        return session

    async def socket(self, request: web.Request) -> web.WebSocketResponse:
        # autoping off: a pong must reach `Connection.heard` (a liveness probe); pings are answered below
        ws = web.WebSocketResponse(heartbeat=SERVER_HEARTBEAT, autoping=False, max_msg_size=MAX_FRAME, timeout=2.0)
        await ws.prepare(request)
        session = await self.hello(ws)
        if session is None:
            return ws
        conn = self.attach(session, ws)
        await ws.send_str(json.dumps({"type": "connected", "session": session.phone, "node": session.node,
                                      "jid": session.jid}))
        workers = [asyncio.create_task(self.deliver(conn))]
        if self.config.sim.disconnect_every:  # type: ignore[union-attr]
            workers.append(asyncio.create_task(self.scheduled_disconnect(conn)))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    await ws.pong(msg.data)
                    continue
                if msg.type == WSMsgType.PONG:  # a frame sent before the client gave the connection up is no answer
                    conn.heard()
                    continue
                frame = _parse(msg)
                reply = self.request(conn, frame) if frame is not None else {
                    "type": "result", "req": None, "ok": False, "error": "frame: not a JSON object"}
                if reply is not None and not conn.closing:
                    await ws.send_str(json.dumps(reply))
        except ConnectionError:
            pass
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            conn.ended = True
            conn.heard(alive=False)
            if session.connection is conn:
                session.connection = None
            logger.info("session {}: connection closed ({})", session.name, conn.reason)
        return ws


def _parse(msg: aiohttp.WSMessage) -> dict | None:
    """A client frame as a dict, or None if it is not a JSON object."""
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        frame = json.loads(msg.data)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None
