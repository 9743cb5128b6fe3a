"""The simulated WhatsApp's numbers and their linked devices: a new connection taking a device's place, the faults
the control API makes (disconnect, withheld answers, log out) and WhatsApp's limits on a send (a ban drops every
device of the number), the status and the sessions' counters. Its session websocket: wire.py.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import random

from aiohttp import web
from loguru import logger

from bridge.simulator.connection import Connection, spawn
from bridge.simulator.interactions import Interactions
from bridge.simulator.limits import Gatekeeper, Refusal
from bridge.simulator.model import Session
from bridge.simulator.state import SimError, SimState
from bridge.simulator.wire import (CLOSE_GOING_AWAY, CLOSE_LOGGED_OUT, CLOSE_SERVER_DISCONNECT, CLOSE_STREAM_REPLACED,
                                   CLOSE_TEMPORARY_BAN, PROBE_S, SessionWire)
from watchdog.components import Config


class Sim(SessionWire):
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
