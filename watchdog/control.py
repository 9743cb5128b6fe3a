"""The control API of a running watchdog: status, restart one component, Prometheus metrics.

The arbiter owns the state; this module only translates HTTP to its two
callables, so the handlers stay thin. With `watchdog.control_token` set every
request must carry it as a bearer token (required by the config whenever the
API listens beyond loopback). A restart also accepts the watchdog's own
`restart_token` (`watchdog.control_token`, a file only the service user can
read): without one of the two, no local user can restart anything.
"""
from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from watchdog.config import WatchdogConfig
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


def _token_middleware(token: str, restart_token: str):
    @web.middleware
    async def check_token(request: web.Request, handler):
        header = request.headers.get("Authorization")
        if request.method == "POST" and restart_token:  # either token may restart
            allowed = authorized(header, restart_token) or bool(token) and authorized(header, token)
        else:
            allowed = authorized(header, token)
        if not allowed:
            return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)
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
              metrics: Metrics, restart_token: str = "") -> web.Application:
    guarded = config.control_token or restart_token
    app = web.Application(middlewares=[_token_middleware(config.control_token, restart_token)] if guarded else [])
    app[STATUS] = status
    app[RESTART] = restart
    app[METRICS] = metrics
    app.router.add_get("/status", _status)
    app.router.add_post("/restart/{name}", _restart)
    app.router.add_get("/metrics", _metrics)
    return app


async def start_control_server(config: WatchdogConfig, status: Callable[[], list[dict]],
                               restart: Callable[[str], Awaitable[dict]],
                               metrics: Metrics, restart_token: str = "") -> tuple[web.AppRunner, str]:
    """Serve the control API on control_host:control_port (0 = any free port); returns the runner and its URL.

    The caller publishes the URL as the `control` endpoint of component
    `watchdog` (that is where `wa-watchdog status` looks) and calls
    `runner.cleanup()` on shutdown.
    """
    runner = web.AppRunner(build_app(config, status, restart, metrics, restart_token), access_log=None)
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
