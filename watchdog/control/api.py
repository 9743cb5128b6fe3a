"""The control API of a running watchdog: status, restart one component, reload, the config in effect, metrics.

The arbiter owns the state; this module only translates HTTP to its four
callables (status, restart, reload, config) and the Prometheus `Metrics`, so the
handlers stay thin. `watchdog.shared.web_guard` answers every error
as `{"error": ...}`, refuses what a browser page could forge and, with
`watchdog.control_token` set, checks the bearer token on every request
(required by the config whenever the API listens beyond loopback). A restart
(and a reload) needs a token even on loopback, which every local user can reach: the
configured one or the watchdog's `restart_token` (`run/control.token`, a file
only the service user and root can read; `watchdog/control/token.py`).
The operator console (`watchdog/control/console/`) is served on the same port at `/`
behind its own gate (forms with a CSRF token; a browser signs in with the same
tokens and keeps a cookie).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from watchdog.shared import web_guard
from watchdog.shared.config import WatchdogConfig
from watchdog.control.console import web as console_web
from watchdog.control.console.changes import Changes
from watchdog.control.console.view import Console
from watchdog.shared.http_server import LimitedRunner, add_openapi
from watchdog.core.metrics import Metrics

STATUS = web.AppKey("status", Callable[[], list[dict]])
RESTART = web.AppKey("restart", Callable[[str], Awaitable[dict]])
METRICS = web.AppKey("metrics", Metrics)
MAX_BODY = 64 * 1024  # no endpoint reads a body today
RELOAD = web.AppKey("reload", Callable[[str], Awaitable[dict]])
CONFIG = web.AppKey("config", Callable[[], dict])


def _restart_token_middleware(restart_token: str):
    @web.middleware
    async def check_restart_token(request: web.Request, handler):
        if request.method == "POST" and not web_guard.authorized(request.headers.get("Authorization"), restart_token):
            return web.json_response(web_guard.error_shape("restart and reload need the bearer token in run/control.token"),
                                     status=401, headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)
    return check_restart_token


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


async def _reload(request: web.Request) -> web.Response:
    """Read the config again: 200 with what changed, or 400 naming the problem (the old config stays)."""
    answer = await request.app[RELOAD]("operator")
    return web.json_response(answer if answer["ok"] else {"error": answer["error"]}, status=200 if answer["ok"] else 400)


async def _config(request: web.Request) -> web.Response:
    return web.json_response(request.app[CONFIG]())


def build_app(config: WatchdogConfig, status: Callable[[], list[dict]], restart: Callable[[str], Awaitable[dict]],
              metrics: Metrics, reload: Callable[[str], Awaitable[dict]] | None = None,
              config_info: Callable[[], dict] | None = None, restart_token: str = "",
              console: Console | None = None, changes: Changes | None = None) -> web.Application:
    guard = web_guard.middlewares(config.control_allowed_hosts, config.control_allowed_origins, config.control_token)
    if restart_token and not config.control_token:  # a configured token already guards every route
        guard.append(_restart_token_middleware(restart_token))
    if console is not None:
        guard.insert(0, console_web.gate(config.control_token, config.control_allowed_hosts,
                                         config.control_allowed_origins))
    app = web.Application(middlewares=guard, client_max_size=MAX_BODY)
    if console is not None:
        console_web.add_routes(app, console, changes or Changes(), config.control_token, restart_token)
    app[STATUS] = status
    app[RESTART] = restart
    app[METRICS] = metrics
    app.router.add_get("/status", _status)
    app.router.add_post("/restart/{name}", _restart)
    app.router.add_get("/metrics", _metrics)
    if reload is not None and config_info is not None:
        app[RELOAD] = reload
        app[CONFIG] = config_info
        app.router.add_post("/reload", _reload)
        app.router.add_get("/config", _config)
    add_openapi(app, "control-api.json")
    return app


async def start_control_server(config: WatchdogConfig, status: Callable[[], list[dict]],
                               restart: Callable[[str], Awaitable[dict]],
                               metrics: Metrics, reload: Callable[[str], Awaitable[dict]] | None = None,
                               config_info: Callable[[], dict] | None = None, restart_token: str = "",
                               console: Console | None = None,
                               changes: Changes | None = None) -> tuple[web.AppRunner, str]:
    """Serve the control API on control_host:control_port (0 = any free port); returns the runner and its URL.

    The caller publishes the URL as the `control` endpoint of component
    `watchdog` (that is where `wa-watchdog status` looks) and calls
    `runner.cleanup()` on shutdown.
    """
    runner = LimitedRunner(build_app(config, status, restart, metrics, reload, config_info, restart_token, console,
                                     changes), access_log=None)
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
