"""CORS for the drops API: a browser app on one of `[drops_api] allowed_origins` may call it, no other page may.

A browser asks before a cross-origin request that carries a token or a JSON
body (a preflight: OPTIONS with `Access-Control-Request-Method`, and never any
credentials), then lets the page read the answer only if it names the page's
origin. So the preflight is answered here, before the token check, and every
answer to an allowed origin names that origin (never `*`); other origins get no
CORS headers (the browser keeps the answer from the page) and a preflight from
them is a 403 that says why. `Vary: Origin` on every answer: a cache must not
hand one origin's answer to another. The forgery guard (watchdog.shared.web_guard)
still refuses their POSTs whatever the browser does.

A small middleware rather than aiohttp-cors: that library answers preflights
from a route of its own, behind our token middleware, which would refuse them.
"""
from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from watchdog.shared.web_guard import Handler, normal_origin

ALLOWED_HEADERS = "Authorization, Content-Type, Idempotency-Key"
EXPOSED_HEADERS = "Retry-After, WWW-Authenticate"  # 401's scheme and a 503's retry hint, for the page to read
MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer


def middleware(allowed_origins: Sequence[str]) -> Handler:
    """The CORS middleware of the drops API, to go first (outside the token check)."""
    allowed = frozenset(normal_origin(origin) for origin in allowed_origins)

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        trusted = origin is not None and normal_origin(origin) in allowed
        if origin is not None and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response = _preflight(request, origin, trusted)
        else:
            response = await handler(request)
        response.headers["Vary"] = "Origin"
        if trusted:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    return cors


def _preflight(request: web.Request, origin: str, trusted: bool) -> web.Response:
    """204 with what an allowed origin may send to this path; 403 for another origin, 404/405 for a wrong request."""
    if not trusted:
        return web.json_response({"error": f"Origin {origin!r} is not allowed (drops_api.allowed_origins)"},
                                 status=403)
    unmatched = request.match_info.http_exception  # an OPTIONS request matches no route of ours
    if not isinstance(unmatched, web.HTTPMethodNotAllowed):
        return web.json_response({"error": f"no such endpoint: {request.path}"}, status=404)
    methods = sorted(unmatched.allowed_methods - {"HEAD"})
    wanted = request.headers["Access-Control-Request-Method"].strip().upper()
    if wanted not in unmatched.allowed_methods:
        return web.json_response({"error": f"method {wanted} not allowed on {request.path} "
                                           f"(allowed: {', '.join(methods)})"}, status=405,
                                 headers={"Allow": ", ".join(methods)})
    headers = {"Access-Control-Allow-Methods": ", ".join(methods), "Access-Control-Allow-Headers": ALLOWED_HEADERS,
               "Access-Control-Max-Age": MAX_AGE}
    if request.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"  # Chrome: a public page calling a loopback API
    return web.Response(status=204, headers=headers)
