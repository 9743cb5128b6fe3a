"""The console's routes on the control port: thin handlers over `view.Console` and `render`.

    GET  /                          the page (?range=1h|24h|7d); reads without JavaScript
    GET  /console/events            server-sent events: panels again as HTML whenever they change
    POST /console/restart           form: component, csrf -> 303 back to / with the outcome
    POST /console/login             form: token -> signed-in cookie (only when a control token is set)
    GET  /console/static/{name}     the CSS and the small script, shipped in the package
    GET  /console/x/{ext}/{key}     an extension's detail page (e.g. a drop and its messages)
"""
from __future__ import annotations

import asyncio
import secrets
from importlib import resources
from urllib.parse import quote

from aiohttp import web
from loguru import logger

from watchdog.shared import web_guard
from watchdog.control.console import render, timeline
from watchdog.control.console.changes import Changes
from watchdog.control.console.guard import CSRF_COOKIE, SESSION_COOKIE, Secrets, from_our_page
from watchdog.control.console.view import EXTENSION_TIMEOUT_S, Console

CONSOLE = web.AppKey("console", Console)
SECRETS = web.AppKey("console_secrets", Secrets)
CHANGES = web.AppKey("console_changes", Changes)
STOPPING = web.AppKey("console_stopping", asyncio.Event)
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
PUBLIC_PREFIXES = ("/console/login", "/console/static/")  # reachable before signing in
TICK_S = 1.0  # the live stream looks again at least this often (uptimes, log files, the time axis)
HEADERS = {
    # No inline script or style, nothing from elsewhere, no framing (a framed restart button could be clicked
    # through a decoy page).
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                               "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def add_routes(app: web.Application, console: Console, changes: Changes, control_token: str,
               restart_token: str = "") -> None:
    app[CONSOLE] = console
    app[SECRETS] = Secrets(control_token, restart_token)
    app[CHANGES] = changes
    app[STOPPING] = asyncio.Event()
    app.on_shutdown.append(_stop_streams)
    app.router.add_get("/", index)
    app.router.add_get("/console/events", events)
    app.router.add_post("/console/restart", restart)
    app.router.add_post("/console/login", login)
    app.router.add_get("/console/login", login_form)
    app.router.add_get("/console/static/{name}", static)
    app.router.add_get("/console/x/{extension}/{key:.+}", detail)


def is_console(request: web.Request) -> bool:
    return request.path == "/" or request.path.startswith("/console/")


def gate(token: str, allowed_hosts: list[str], allowed_origins: list[str]):
    """The console's middleware, outermost on the control app: its routes pass here instead of the JSON guard.

    Same Host rule as `web_guard` (here for reads too: the page holds the CSRF token), form posts only
    from the console's own origin, and with a control token a bearer token or the sign-in cookie. Other
    paths go on to the JSON API's middlewares untouched.
    """
    guard = web_guard.Guard(allowed_hosts, allowed_origins)

    @web.middleware
    async def console_gate(request: web.Request, handler):
        if not is_console(request):
            return await handler(request)
        host = request.headers.get("Host")
        if host is not None and not guard.host_allowed(host):
            return _refused(f"Host {host!r} is not this machine (a loopback name, an IP address or one of "
                            "allowed_hosts)")
        if request.method not in web_guard.SAFE_METHODS and not from_our_page(request, guard.allowed_origins):
            return _refused("this form was not sent from the console page itself")
        if token and not (request.path.startswith(PUBLIC_PREFIXES) or request.app[SECRETS].signed_in(request)
                          or web_guard.authorized(request.headers.get("Authorization"), token)):
            return _html(render.login_page(True), status=401)
        try:
            return await request.match_info.handler(request)  # past the JSON API's middlewares: see above
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _html(render.frame(exc.reason, f'<p class="bad">{exc.status} {exc.reason}: {request.path}</p>'),
                         status=exc.status)
        except Exception:  # noqa: BLE001 - a console bug must not look like a dead watchdog
            logger.exception("console: {} {} failed", request.method, request.path)
            return _html(render.frame("error", '<p class="bad">internal error; see the watchdog log</p>'), status=500)
    return console_gate


def _refused(why: str) -> web.Response:
    return _html(render.frame("refused", f'<p class="bad">refused: {why}</p>'), status=403)


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=HEADERS)


def _range(request: web.Request) -> str:
    chosen = request.query.get("range", timeline.DEFAULT_RANGE)
    return chosen if chosen in timeline.RANGES else timeline.DEFAULT_RANGE


def _csrf(request: web.Request) -> tuple[str, str | None]:
    """This browser's CSRF token ("" while it may not act: it must sign in), and a new cookie to set if needed."""
    cookie = request.cookies.get(CSRF_COOKIE)
    new = None if cookie else secrets.token_hex(16)
    guard = request.app[SECRETS]
    return (guard.csrf_for(cookie or new or "") if guard.may_act(request) else ""), new


async def index(request: web.Request) -> web.Response:
    csrf, new_cookie = _csrf(request)
    page = await render.page(request.app[CONSOLE], _range(request), csrf, render.flash(dict(request.query)))
    response = _html(page)
    if new_cookie:
        response.set_cookie(CSRF_COOKIE, new_cookie, httponly=True, samesite="Strict", path="/")
    return response


def _event(name: str, html: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in html.split("\n"))
    return f"event: {name}\n{data}\n".encode("utf-8")


async def events(request: web.Request) -> web.StreamResponse:
    if "text/event-stream" not in request.headers.get("Accept", ""):  # what EventSource sends; others would hang
        return _html(render.frame("not an event stream client", '<p class="bad">this is the console page\'s live '
                                  'stream: ask with Accept: text/event-stream</p>'), status=406)
    console, changes, stopping = request.app[CONSOLE], request.app[CHANGES], request.app[STOPPING]
    range_name = _range(request)
    csrf, _ = _csrf(request)
    response = web.StreamResponse(headers={**HEADERS, "Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    sent: dict[str, str] = {}
    try:
        while not stopping.is_set():
            seen = changes.version
            for name, html in (await render.fragments(console, range_name, csrf)).items():
                if sent.get(name) != html:  # only what changed
                    await response.write(_event(name, html))
                    sent[name] = html
            await changes.wait(seen, TICK_S)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


async def _stop_streams(app: web.Application) -> None:
    app[STOPPING].set()
    app[CHANGES].bump()  # wakes every stream now, not at its next tick


async def restart(request: web.Request) -> web.Response:
    guard = request.app[SECRETS]
    if not guard.may_act(request):
        return _html(render.login_page(bool(guard.control_token), "a restart needs you to sign in first"), status=401)
    form = await request.post()
    if not request.app[SECRETS].csrf_ok(request, str(form.get("csrf", ""))):
        return _html(render.frame("refused", '<p class="bad">refused: the form\'s CSRF token is missing or '
                                             'stale; <a href="/">reload the console</a> and try again</p>'),
                     status=403)
    name = str(form.get("component", ""))
    try:
        result = await request.app[CONSOLE].restart(name)
    except KeyError:
        return _see_other("/?error=" + quote(f"no component named {name}"))
    except RuntimeError as exc:  # e.g. the watchdog is shutting down
        return _see_other("/?error=" + quote(str(exc)))
    return _see_other(render.restarted_location(result))


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={**HEADERS, "Location": location})


async def login(request: web.Request) -> web.Response:
    guard = request.app[SECRETS]
    given = str((await request.post()).get("token", "")).strip()
    if not guard.token_ok(given):
        return _html(render.login_page(bool(guard.control_token), "wrong token"), status=401)
    response = _see_other("/")
    response.set_cookie(SESSION_COOKIE, guard.session_value(), httponly=True, samesite="Strict", path="/")
    return response


async def login_form(request: web.Request) -> web.Response:
    return _html(render.login_page(bool(request.app[SECRETS].control_token)))


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in STATIC:
        raise web.HTTPNotFound()
    body = (resources.files("watchdog.control.console") / "static" / name).read_bytes()
    return web.Response(body=body, content_type=STATIC[name], headers={**HEADERS, "Cache-Control": "max-age=300"})


async def detail(request: web.Request) -> web.Response:
    name, key = request.match_info["extension"], request.match_info["key"]
    for extension in request.app[CONSOLE].extensions:
        if extension.name == name:
            try:
                found = await asyncio.wait_for(asyncio.to_thread(extension.detail, key), EXTENSION_TIMEOUT_S)
            except asyncio.TimeoutError:
                return _html(render.frame("no answer", f'<p class="bad">{extension.title}: no answer within '
                                                       f'{EXTENSION_TIMEOUT_S:g} s</p>'), status=504)
            if found is not None:
                title, html = found  # type: ignore[misc]
                return _html(render.detail_page(title, html))
    raise web.HTTPNotFound()
