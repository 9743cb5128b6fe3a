"""The guard every HTTP API of ours puts in front of its handlers: JSON errors, bearer token, no browser forgeries.

Our APIs listen on loopback, and any page open in a browser on the same host
can reach loopback. A browser can forge exactly these things without a CORS
preflight: a "simple" request (form post, `text/plain` fetch), from a foreign
or opaque (`null`) Origin, to a DNS name rebound to 127.0.0.1 (a foreign
Host). So on every state-changing method we refuse a foreign Host, a foreign
Origin, `Sec-Fetch-Site: cross-site|same-site` and any body not declared
`application/json`. curl, a server-side web app (no Origin, no Sec-Fetch-*)
and whatsapp-mcp's Python client (`requests.post(json=...)`) send none of
these, so they keep working; a reverse proxy is configured with allow-lists.

`middlewares(...)` returns the list an `web.Application` takes; `json_body`
reads a request body with bounded nesting and numbers, and no unencodable text or NUL.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

from watchdog.shared.logs import RateLimitedLog

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ErrorBody = Callable[[str], dict]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a page may send without a CORS preflight; refused even with an empty body (an empty form post).
SIMPLE_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"})
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
OFF_LOOP_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # our bodies nest 3 deep; the C parser recurses on the stack
# No field of ours is a number this long; int() of more than 4,300 digits raises ValueError (a 500 once).
MAX_INT_DIGITS = 100
_PASSED_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def error_shape(message: str) -> dict:
    """`{"error": message}`: the control API's (and default) error body."""
    return {"error": message}


def mcp_shape(message: str) -> dict:
    """`{"success": false, "message": message}`: whatsapp-mcp's error body, for the bridge API."""
    return {"success": False, "message": message}


def bearer_token(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive), else None."""
    scheme, _, token = (header or "").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def authorized(header: str | None, token: str) -> bool:
    """True if no token is configured or the header carries exactly it (constant-time compare)."""
    if not token:
        return True
    given = bearer_token(header)
    return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def _host_name(host: str) -> str:
    """`Host` header -> lower-case name without port (`[::1]:80` -> `::1`)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def normal_origin(origin: str) -> str:
    """An Origin as compared with the allowed ones: trimmed, lower case, no trailing slash."""
    return origin.strip().lower().rstrip("/")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """The checks, configured once per app; `reason(request)` says why a request is refused, or None."""

    def __init__(self, allowed_hosts: Sequence[str], allowed_origins: Sequence[str]) -> None:
        self.allowed_hosts = frozenset(h.strip().lower() for h in allowed_hosts if h.strip())
        self.allowed_origins = frozenset(normal_origin(o) for o in allowed_origins if o.strip())

    def host_allowed(self, host: str) -> bool:
        """Loopback names, IP literals (a rebinding attack needs a DNS name) and the configured hosts."""
        name = _host_name(host)
        return (name in LOOPBACK_NAMES or name.endswith(".localhost") or _is_ip(name)
                or name in self.allowed_hosts or host.strip().lower() in self.allowed_hosts)

    def refusal(self, request: web.Request) -> tuple[int, str] | None:
        """(status, message) for a request a browser page may have forged; None when it may go on."""
        if request.method in SAFE_METHODS:
            return None
        host = request.headers.get("Host")
        if host is not None and not self.host_allowed(host):
            return 403, (f"Host {host!r} is not allowed (a loopback name, an IP address or one of allowed_hosts); "
                         "refused as a possible DNS-rebinding request")
        origin = request.headers.get("Origin")
        trusted = False
        if origin is not None:
            if origin.strip().lower() == "null":
                return 403, "Origin: null is refused (a sandboxed page or a redirected form)"
            trusted = normal_origin(origin) in self.allowed_origins
            split = urlsplit(origin.strip().lower())
            same_origin = host is not None and split.netloc == host.strip().lower()
            if not (trusted or same_origin):
                return 403, f"Origin {origin!r} is not allowed (same origin or one of allowed_origins)"
        fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
        if fetch_site in ("cross-site", "same-site") and not trusted:
            return 403, f"Sec-Fetch-Site: {fetch_site} is refused (a request made by another web page)"
        declared = request.headers.get("Content-Type")
        if (request.content_type != "application/json"
                and (request.body_exists or (declared is not None and request.content_type in SIMPLE_TYPES))):
            return 415, f"Content-Type {declared or '(none)'!r} is not accepted: send the body as application/json"
        return None


def _client(request: web.Request) -> str:
    return request.remote or "unknown"


def middlewares(allowed_hosts: Sequence[str] = (), allowed_origins: Sequence[str] = (), token: str = "",
                error_body: ErrorBody = error_shape) -> list:
    """The middlewares of an API app, outermost first: JSON errors, forgery guard, bearer token.

    `error_body(message)` shapes every error answer (`error_shape` or `mcp_shape`).
    With `token` set, every request must carry `Authorization: Bearer <token>`.
    """
    guard = Guard(allowed_hosts, allowed_origins)
    log = RateLimitedLog()  # refusals once per client and minute, a failing request once per route and minute

    def fail(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(error_body(message), status=status, headers=headers)

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            headers = {k: exc.headers[k] for k in _PASSED_HEADERS if k in exc.headers}
            return fail(exc.status, _http_error_message(request, exc), headers)
        except Exception as exc:  # noqa: BLE001 - a bug must still answer JSON, and be logged
            log.report(f"500 {request.method} {request.path} {type(exc).__name__}",
                       f"{request.method} {request.path} failed", exc)
            return fail(500, f"internal error: {type(exc).__name__}")

    @web.middleware
    async def forgery_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refusal = guard.refusal(request)
        if refusal is not None:
            status, message = refusal
            log.report(_client(request), f"refused a request from {_client(request)}: {request.method} "
                                         f"{request.path}: {status} {message}")
            return fail(status, message)
        return await handler(request)

    @web.middleware
    async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not authorized(request.headers.get("Authorization"), token):
            log.report(_client(request), f"refused a request from {_client(request)}: {request.method} "
                                         f"{request.path}: 401 missing or wrong bearer token")
            return fail(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                        {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return [json_errors, forgery_guard, *([bearer_auth] if token else [])]


def _http_error_message(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return f"method {request.method} not allowed on {request.path} (allowed: {', '.join(sorted(exc.allowed_methods))})"
    if isinstance(exc, web.HTTPNotFound) and exc.text == "404: Not Found":
        return f"no such endpoint: {request.method} {request.path}"
    return exc.text or exc.reason


async def json_body(request: web.Request, max_depth: int = MAX_JSON_DEPTH) -> object:
    """The request body as JSON, nesting at most `max_depth` deep and every string valid Unicode.

    Raises HTTPBadRequest naming the problem (answered as JSON by `json_errors`),
    HTTPRequestEntityTooLarge beyond the app's `client_max_size`.
    """
    raw = await request.read()
    if len(raw) > OFF_LOOP_BYTES:  # parsing and checking a large body is work the loop must not do
        value, problem = await asyncio.to_thread(_parse, raw, max_depth)
    else:
        value, problem = _parse(raw, max_depth)
    if problem:
        raise web.HTTPBadRequest(text=problem)
    return value


class _LongNumber(str):
    """An integer literal longer than MAX_INT_DIGITS, kept as its text so that `json_problem` can name its field."""


def _parse_int(text: str) -> int | _LongNumber:
    return _LongNumber(text) if len(text) > MAX_INT_DIGITS else int(text)


def _parse(raw: bytes, max_depth: int) -> tuple[object, str | None]:
    """(value, None) or (None, what is wrong with the body)."""
    try:
        value = json.loads(raw, parse_int=_parse_int)
    except RecursionError:
        return None, f"JSON nested deeper than {max_depth} levels"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return None, f"bad JSON: {exc}"
    return value, json_problem(value, max_depth)


def json_problem(value: object, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a parsed JSON value is unacceptable, naming where, else None: too deep, an integer of more than
    MAX_INT_DIGITS digits, a string that is not valid Unicode or holds a NUL (PostgreSQL refuses a NUL in
    text, SQLite's text functions stop at it: docs/ARCHITECTURE.md promises it is refused).

    Iterative, linear in the size of the value.
    """
    stack: list[tuple[object, int, str]] = [(value, 1, "body")]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, _LongNumber):
            return f"{where} is a number of {len(item.lstrip('-')):,} digits (at most {MAX_INT_DIGITS})"
        if isinstance(item, str):
            if problem := _text_problem(item):
                return f"{where} {problem}"
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > max_depth:
            return f"JSON nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if problem := _text_problem(key):
                    return f"a key in {where} {problem}"
                stack.append((child, depth + 1, key if where == "body" else f"{where}.{key}"))
        else:
            stack.extend((child, depth + 1, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def unknown_field(body: dict, known: Sequence[str]) -> str | None:
    """`<name>: unknown field (known: ...)` for the first field of `body` not in `known`, else None.

    Why refuse rather than ignore: a misspelt optional field (`mentoins`) would be dropped without a word,
    and the documents can then say `additionalProperties: false`, which the fuzz run holds us to.
    """
    extra = next((name for name in body if name not in known), None)
    return None if extra is None else f"{extra[:60]}: unknown field (known: {', '.join(known)})"


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character"
    return None if _encodable(text) else "contains a lone surrogate (not valid Unicode text)"


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
