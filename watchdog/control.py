"""The control API of a running watchdog: status, restart one component, Prometheus metrics.

The arbiter owns the state; this module only translates HTTP to its two
callables, so the handlers stay thin. With `watchdog.control_token` set every
request must carry it as a bearer token (required by the config whenever the
API listens beyond loopback); the console's pages also take the cookie its
sign-in form gives a browser. The operator console (`watchdog/console/`) is
served on the same port at `/`.
"""
from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from watchdog.config import WatchdogConfig
from watchdog.console import web as console_web
from watchdog.console.changes import Changes
from watchdog.console.guard import browser_guard
from watchdog.console.view import Console
from watchdog.metrics import Metrics

STATUS = web.AppKey("status", Callable[[], list[dict]])
RESTART = web.AppKey("restart", Callable[[str], Awaitable[dict]])
METRICS = web.AppKey("metrics", Metrics)


def authorized(header: str | None, token: str) -> bool:
    """True if no token is configured or the Authorization header carries exactly it."""
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _token_middleware(token: str, console: bool):
    @web.middleware
    async def check_token(request: web.Request, handler):
        if authorized(request.headers.get("Authorization"), token) or (console and (
                console_web.public(request) or console_web.wants_page(request) and console_web.signed_in(request))):
            return await handler(request)
        if console and console_web.wants_page(request):
            return console_web.login_required()
        return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                 headers={"WWW-Authenticate": "Bearer"})
    return check_token


async def _status(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATUS]())


async def _restart(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        return web.json_response(await request.app[RESTART](name))
    except KeyError:
        return web.json_response({"error": f"no component named {name}"}, status=404)
    except RuntimeError as exc:  # e.g. the watchdog is shutting down: a state conflict, not a server fault
        return web.json_response({"error": str(exc)}, status=409)


async def _metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": content_type})


def build_app(config: WatchdogConfig, status: Callable[[], list[dict]], restart: Callable[[str], Awaitable[dict]],
              metrics: Metrics, console: Console | None = None, changes: Changes | None = None) -> web.Application:
    token = config.control_token
    app = web.Application(middlewares=[browser_guard(bool(token)),
                                       *([_token_middleware(token, console is not None)] if token else [])])
    if console is not None:
        console_web.add_routes(app, console, changes or Changes(), token)
    app[STATUS] = status
    app[RESTART] = restart
    app[METRICS] = metrics
    app.router.add_get("/status", _status)
    app.router.add_post("/restart/{name}", _restart)
    app.router.add_get("/metrics", _metrics)
    return app


async def start_control_server(config: WatchdogConfig, status: Callable[[], list[dict]],
                               restart: Callable[[str], Awaitable[dict]], metrics: Metrics,
                               console: Console | None = None,
                               changes: Changes | None = None) -> tuple[web.AppRunner, str]:
    """Serve the control API on control_host:control_port (0 = any free port); returns the runner and its URL.

    The caller publishes the URL as the `control` endpoint of component
    `watchdog` (that is where `wa-watchdog status` looks) and calls
    `runner.cleanup()` on shutdown.
    """
    runner = web.AppRunner(build_app(config, status, restart, metrics, console, changes), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.control_host, config.control_port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(exc.errno, f"control API cannot listen on {config.control_host}:{config.control_port}: "
                                 f"{exc.strerror}") from exc
    host, port = runner.addresses[0][:2]
    return runner, f"http://{f'[{host}]' if ':' in host else host}:{port}"
