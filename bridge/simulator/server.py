"""`wa-watchdog sim`: the simulated WhatsApp service (control API + session websocket).

One aiohttp server on 127.0.0.1; handlers are thin and the state lives in
`bridge.simulator.state`. The frames are described in docs/ARCHITECTURE.md,
"Simulator wire protocol".
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import WSMsgType, web
from loguru import logger

from bridge.simulator.connection import Connection, spawn
from bridge.simulator.interactions import Interactions
from bridge.simulator.limits import Gatekeeper, Refusal
from bridge.simulator.state import Session, SimError, SimReceipt, SimState, iso
from bridge.simulator.traffic import run_traffic
from watchdog.shared import endpoints, logs
from watchdog.shared.child_entry import ChildEntry
from watchdog.components import Config
from watchdog.shared.config import ConfigError
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK

COMPONENT = "sim"
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


class Sim:
    def __init__(self, config: Config, state: SimState) -> None:
        assert config.sim is not None
        self.config = config
        self.state = state
        self.tasks: set[asyncio.Task] = set()
        self.replacing: set[asyncio.Task] = set()  # replaced connections being probed (cancelled on shutdown)
        self.rng = random.Random()
        self.gate = Gatekeeper()  # WhatsApp's limits on senders (bridge/simulator/limits.py)
        self.interactions = Interactions()  # reactions, read receipts, typing (bridge/simulator/interactions.py)
        # (phone, node) whose sends WhatsApp takes but whose answers never reach the device (POST /sim/withhold) ->
        # whether its connection is dropped right after such a send
        self.withheld: dict[tuple[str, str], bool] = {}

    def attach(self, session: Session, ws: web.WebSocketResponse) -> Connection:
        old = session.connection
        if isinstance(old, Connection):
            old.detach("stream replaced: another connection took this session")
            spawn(self.replacing, self._replace(old))
        conn = Connection(session, ws)
        session.connection = conn
        session.connections += 1
        logger.info("session {}: connected ({} queued)", session.name, len(session.queue))
        return conn

    async def _replace(self, old: Connection) -> None:
        """Close the connection a newer one of its device replaced, having asked whether it was still alive.

        A live one was two connections of one device: WhatsApp's stream replaced, counted in `stream_replaced`.
        One that no longer answers is a half-open leftover (the client already gave it up, e.g. across a network
        cut shorter than our heartbeat): the new connection is its successor, not a second one, so it is
        counted in `dead_replaced`. Both are closed with 4409: a frozen client that wakes up learns the truth
        and does not fight the newer connection for the session.
        """
        session = old.session
        if await old.answers(PROBE_S):
            session.stream_replaced += 1
            logger.warning("session {}: stream replaced by a new connection (the older one still answered)",
                           session.name)
        else:
            session.dead_replaced += 1
            old.reason = f"replaced by a new connection; this one no longer answered (for {PROBE_S:g} s)"
            logger.info("session {}: a new connection replaced a dead one (no answer for {:g} s)", session.name,
                        PROBE_S)
        await old.ws.close(code=CLOSE_STREAM_REPLACED,
                           message=b"stream replaced: another connection took this session")

    def disconnect(self, phone: object, reason: str, node: object = None) -> bool:
        """Disconnect the number's connected devices (only `node`'s, if given); False if none was connected."""
        self.session(phone)  # a clear error for an unknown number
        dropped = False
        for session in self.state.devices[phone]:  # type: ignore[index]
            conn = session.connection
            if isinstance(conn, Connection) and node in (None, session.node):
                session.disconnects += 1
                logger.info("session {}: server disconnect ({})", session.name, reason)
                conn.drop(CLOSE_SERVER_DISCONNECT, f"server disconnect: {reason}", self.tasks)
                dropped = True
        return dropped

    def withhold(self, body: object) -> bool:
        """POST /sim/withhold {session, node?, withhold, drop?}: WhatsApp takes the device's sends (the group and the
        sibling devices get them) but its answers are lost, as when a connection dies just after the server got
        the message: the sender cannot know it went. With `drop`, the device's connection is dropped right after each
        such send (the sender hears at once that it is gone, not after a timeout). Returns whether any send answer
        is withheld now."""
        if not isinstance(body, dict) or not isinstance(body.get("withhold"), bool) or \
                not isinstance(body.get("drop", False), bool):
            raise SimError("expected a JSON object {session, node?, withhold: true|false, drop?: true|false}")
        self.session(body.get("session"))  # a clear error for an unknown number
        device = (str(body["session"]), str(body.get("node") or ""))
        self.withheld.pop(device, None)
        if body["withhold"]:
            self.withheld[device] = body.get("drop", False)
        return bool(self.withheld)

    def log_out(self, phone: object) -> bool:
        """POST /sim/logout: the phone removed the linked device; this session is refused from now on."""
        session = self.session(phone)
        self.gate.log_out(session.phone)
        logger.info("session {}: logged out", session.phone)
        dropped = False
        for device in self.state.devices[session.phone]:  # the standing is the number's: every device goes
            if isinstance(conn := device.connection, Connection):
                conn.drop(CLOSE_LOGGED_OUT, "logged out: the linked device was removed on the phone", self.tasks)
                dropped = True
        return dropped

    async def _ban(self, conn: Connection) -> None:
        """Tell the number's clients it is temporarily banned (code, expiry), then close: as WhatsApp does. The ban
        is the number's: every linked device goes (a cluster's other host too), not only the one that sent."""
        phone = conn.session.phone
        frame = self.gate.ban_frame(phone)
        logger.warning("session {}: temporarily banned ({}, {} s)", phone, frame["code"], frame["expire_s"])
        for device in self.state.devices[phone]:
            if isinstance(banned := device.connection, Connection):
                with contextlib.suppress(ConnectionError):
                    await banned.ws.send_str(json.dumps(frame))
                banned.drop(CLOSE_TEMPORARY_BAN, f"temporary ban ({frame['code']})", self.tasks)

    def _refused(self, conn: Connection, frame: dict) -> Refusal | None:
        """WhatsApp's limits on a new send (a resend of a known id is the same message, not counted)."""
        if frame.get("id") in self.state.sent:
            return None
        refusal = self.gate.check_send(conn.session.phone, frame.get("recipient"))
        if refusal is not None and refusal.ban:
            spawn(self.tasks, self._ban(conn))
        return refusal

    def session(self, phone: object) -> Session:
        try:
            return self.state.sessions[phone]  # type: ignore[index]
        except (KeyError, TypeError):
            known = ", ".join(self.state.sessions) or "none"
            raise SimError(f"session: unknown session {phone!r} (known: {known})") from None

    def shutdown(self) -> None:
        for task in self.replacing:  # a dead one is not worth a wait: the server closes every socket anyway
            task.cancel()
        for session in self.state.all_devices():
            if isinstance(session.connection, Connection):
                session.connection.drop(CLOSE_GOING_AWAY, "server going away", self.tasks)

    def status(self) -> str:
        sessions = list(self.state.all_devices())
        connected = sum(1 for s in sessions if s.connection is not None)
        queued = sum(len(s.queue) for s in sessions)
        return f"{connected}/{len(sessions)} sessions connected, {queued} queued, {len(self.state.sent)} sent"

    def sessions_json(self) -> dict:
        """Per number: its devices' counters added up (one device: its own), each device (phone, node), and its
        standing with WhatsApp's limits (rate, ban, logout: bridge/simulator/limits.py)."""
        return {phone: {**_numbers([_device_json(d) for d in devices]), "standing": self.gate.json(phone)}
                for phone, devices in self.state.devices.items()}

    # -- one session connection -------------------------------------------------

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


def _device_json(session: Session) -> dict:
    return {"node": session.node, "connected": session.connection is not None, "queue_depth": len(session.queue),
            "connections": session.connections, "stream_replaced": session.stream_replaced,
            "dead_replaced": session.dead_replaced, "disconnects": session.disconnects,
            "delivered": session.delivered, "acked": session.acked, "resent": session.resent,
            "server_ids": session.server_ids}


def _numbers(devices: list[dict]) -> dict:
    """A number's entry: `connected` if any device is, the counters summed, and the devices themselves."""
    total = {key: sum(d[key] for d in devices) for key in devices[0] if key not in ("node", "connected", "server_ids")}
    return {"connected": any(d["connected"] for d in devices), **total, "devices": devices}


def _parse(msg: aiohttp.WSMessage) -> dict | None:
    """A client frame as a dict, or None if it is not a JSON object."""
    if msg.type != WSMsgType.TEXT:
        return None
    try:
        frame = json.loads(msg.data)
    except ValueError:
        return None
    return frame if isinstance(frame, dict) else None


# -- control API (thin handlers) ------------------------------------------------

STATE = web.AppKey("sim", Sim)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _errors_as_400(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except SimError as exc:
            return web.json_response({"error": str(exc)}, status=400)
    return wrapped


async def _json_body(request: web.Request) -> object:
    try:
        return await request.json()
    except ValueError:
        raise SimError("body: not valid JSON") from None


@_errors_as_400
async def inject(request: web.Request) -> web.Response:
    body = await _json_body(request)
    posted = [{"id": m.id, "timestamp": iso(m.timestamp)} for m in request.app[STATE].state.inject(body)]
    return web.json_response(posted if isinstance(body, list) else posted[0])


@_errors_as_400
async def sent(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].state.sent_by(request.query.get("session")))


@_errors_as_400
async def disconnect(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise SimError("expected a JSON object {session, reason?}")
    reason = body.get("reason") or "requested"
    return web.json_response({"disconnected": request.app[STATE].disconnect(body.get("session"), str(reason),
                                                                            body.get("node"))})


@_errors_as_400
async def withhold(request: web.Request) -> web.Response:
    return web.json_response({"withheld": request.app[STATE].withhold(await _json_body(request))})


async def interactions(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].interactions.json())


@_errors_as_400
async def limits(request: web.Request) -> web.Response:
    sim = request.app[STATE]
    return web.json_response(sim.gate.configure(await _json_body(request), sim.state.sessions).json())


@_errors_as_400
async def logout(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise SimError("expected a JSON object {session}")
    return web.json_response({"logged_out": True, "was_connected": request.app[STATE].log_out(body.get("session"))})


@_errors_as_400
async def read(request: web.Request) -> web.Response:
    return web.json_response({"receipts": request.app[STATE].state.read(await _json_body(request))})


@_errors_as_400
async def messages(request: web.Request) -> web.Response:
    q = request.query
    found = request.app[STATE].state.history(q.get("chat_jid"), q.get("since"), q.get("until"))
    return web.json_response([m.wire for m in found])


@_errors_as_400
async def sessions(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].sessions_json())


async def socket(request: web.Request) -> web.StreamResponse:
    return await request.app[STATE].socket(request)


def build_app(sim: Sim) -> web.Application:
    app = web.Application(client_max_size=MAX_FRAME)
    app[STATE] = sim
    app.router.add_post("/sim/inject", inject)
    app.router.add_get("/sim/sent", sent)
    app.router.add_post("/sim/disconnect", disconnect)
    app.router.add_post("/sim/read", read)
    app.router.add_post("/sim/limits", limits)
    app.router.add_post("/sim/logout", logout)
    app.router.add_post("/sim/withhold", withhold)
    app.router.add_get("/sim/interactions", interactions)
    app.router.add_get("/sim/messages", messages)
    app.router.add_get("/sim/sessions", sessions)
    app.router.add_get("/ws", socket)
    return app


# -- process -------------------------------------------------------------------

async def serve(config: Config) -> int:
    assert config.sim is not None
    sim = Sim(config, SimState(config))
    runner = web.AppRunner(build_app(sim), handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", config.sim.port).start()
    except OSError as exc:
        logger.error("sim: cannot listen on 127.0.0.1:{}: {}", config.sim.port, exc.strerror or exc)
        await runner.cleanup()
        return EXIT_ERROR
    port = runner.addresses[0][1]
    endpoints.publish(config.data_dir, COMPONENT, {"api": f"http://127.0.0.1:{port}", "ws": f"ws://127.0.0.1:{port}/ws"})
    async with ChildEntry(config.sim.watchdog_sec, sim.status) as entry:  # SIGTERM/SIGINT stop it from here on
        entry.ready()
        logger.info("sim serving on 127.0.0.1:{} ({} sessions, {} groups)", port, len(sim.state.sessions),
                    len(sim.state.groups))
        entry.start_heartbeat()
        background = ([asyncio.create_task(run_traffic(sim.state, config.sim.traffic.interval))]
                      if config.sim.traffic.enabled else [])
        await entry.stop.wait()

        entry.stopping()
        logger.info("sim stopping")
        await entry.stop_heartbeat()
        for task in background:
            task.cancel()
        sim.shutdown()
        await asyncio.gather(*background, *sim.tasks, *sim.replacing, return_exceptions=True)
        await runner.cleanup()
        record = endpoints.read(config.data_dir, COMPONENT)
        if record and record.get("pid") == os.getpid():
            endpoints.remove(config.data_dir, COMPONENT)
        return EXIT_OK


def cmd_sim(config: Config, args: argparse.Namespace) -> int:
    if config.sim is None:
        raise ConfigError(f"{config.path}: sim: missing [sim] table")
    logs.setup("sim")
    return asyncio.run(serve(config))
