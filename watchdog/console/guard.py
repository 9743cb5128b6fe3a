"""Browser-forgery checks for the control port: a page on this host must not act through it.

`browser_guard` is the control app's one middleware for this until the shared
`watchdog/web_guard.py` replaces it: state-changing requests from a browser
are refused unless they come from the console's own origin (Origin,
Sec-Fetch-Site), and without a token every request must name a loopback Host
(a DNS-rebinding page names its own). The console's forms also carry a CSRF
token: an HMAC, under a secret of this process, of a random cookie, which a
page elsewhere on this host can neither read nor forge (it could set the
cookie, ports do not separate cookies, but not compute the HMAC).
"""
from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

from aiohttp import web

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CSRF_COOKIE = "wa_console_csrf"
SESSION_COOKIE = "wa_console_session"
LOOPBACK_NAMES = ("localhost",)


class Secrets:
    """Per-process secret for CSRF tokens, and the signed-in cookie derived from the control token."""

    def __init__(self, control_token: str) -> None:
        self._key = secrets.token_bytes(32)
        self.control_token = control_token

    def csrf_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: web.Request, given: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(self.csrf_for(cookie), given)

    def session_value(self) -> str:
        """What the signed-in cookie holds: derived from the token, so a new token signs everybody out."""
        return hmac.new(self.control_token.encode(), b"wa-watchdog console session", hashlib.sha256).hexdigest()

    def signed_in(self, request: web.Request) -> bool:
        return bool(self.control_token) and hmac.compare_digest(request.cookies.get(SESSION_COOKIE, ""),
                                                                self.session_value())


def _is_loopback_host(host: str) -> bool:
    """Host header -> is it this machine's loopback (127.0.0.0/8, ::1, localhost), with or without a port?"""
    name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def refusal(request: web.Request, token_required: bool) -> str | None:
    """Why a request looks forged (None: it does not); the same checks for the JSON API and the console."""
    host = request.headers.get("Host", "")
    if not token_required and not _is_loopback_host(host):
        return f"refused: Host {host!r} is not this machine's loopback address"
    if request.method in SAFE_METHODS:
        return None
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"refused: a cross-origin request (Sec-Fetch-Site: {site})"
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{host}":
        return f"refused: a request from another origin ({origin})"
    return None


def browser_guard(token_required: bool):
    @web.middleware
    async def guard(request: web.Request, handler):
        problem = refusal(request, token_required)
        if problem:
            return web.json_response({"error": problem}, status=403)
        return await handler(request)
    return guard


def from_our_page(request: web.Request) -> bool:
    """A console form post: a browser names where it comes from (Origin, or at least Referer) - a same-origin one."""
    host = request.headers.get("Host", "")
    ours = f"{request.scheme}://{host}"
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == ours
    referer = request.headers.get("Referer", "")
    return referer == ours or referer.startswith(ours + "/")
