"""`wa-watchdog sim`: the simulated WhatsApp service (control API + session websocket).

One aiohttp server on 127.0.0.1; handlers are thin: the service is `bridge.simulator.service.Sim` (its session
websocket: wire.py) and the state lives in `bridge.simulator.state`. The frames are described in
docs/ARCHITECTURE.md, "Simulator wire protocol".
"""
from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable

from aiohttp import web
from loguru import logger

from bridge.simulator.service import Sim
from bridge.simulator.model import iso
from bridge.simulator.state import SimError, SimState
from bridge.simulator.traffic import run_traffic
from bridge.simulator.wire import MAX_FRAME
from watchdog.shared import endpoints, logs
from watchdog.shared.child_entry import ChildEntry
from watchdog.components import Config
from watchdog.shared.config import ConfigError
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK

COMPONENT = "sim"


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
