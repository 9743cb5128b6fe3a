"""The console's own defences against a page elsewhere on this host, on top of `watchdog/shared/web_guard.py`.

The JSON API's guard refuses any form post (only application/json bodies);
the console's restart and sign-in are forms, so its routes pass through
`web.gate` instead, which keeps the same Host and Origin rules and adds a CSRF
token: an HMAC, under a secret of this process, of a random cookie. A page
elsewhere on this host can neither read it nor forge it (it could set the
cookie, ports do not separate cookies, but not compute the HMAC).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets

from aiohttp import web

CSRF_COOKIE = "wa_console_csrf"
SESSION_COOKIE = "wa_console_session"


class Secrets:
    """Per-process secret for CSRF tokens, and the signed-in cookie derived from the sign-in token.

    The sign-in token is `watchdog.control_token` when configured (then every page needs it), else the
    watchdog's restart token (`run/control.token`): reading stays open on loopback, acting does not,
    as with the JSON API.
    """

    def __init__(self, control_token: str, restart_token: str = "") -> None:
        self._key = secrets.token_bytes(32)
        self.control_token = control_token
        self.sign_in_token = control_token or restart_token

    def token_ok(self, given: str) -> bool:
        return bool(self.sign_in_token) and hmac.compare_digest(given.encode(), self.sign_in_token.encode())

    def may_act(self, request: web.Request) -> bool:
        """Signed in (or a bearer token), or no token exists at all."""
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        return (not self.sign_in_token or self.signed_in(request)
                or (scheme.lower() == "bearer" and self.token_ok(given.strip())))

    def csrf_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: web.Request, given: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(self.csrf_for(cookie), given)

    def session_value(self) -> str:
        """What the signed-in cookie holds: derived from the token, so a new token signs everybody out."""
        return hmac.new(self.sign_in_token.encode(), b"wa-watchdog console session", hashlib.sha256).hexdigest()

    def signed_in(self, request: web.Request) -> bool:
        return bool(self.sign_in_token) and hmac.compare_digest(request.cookies.get(SESSION_COOKIE, ""),
                                                                self.session_value())


def from_our_page(request: web.Request, allowed_origins: frozenset[str] = frozenset()) -> bool:
    """A console form post: the browser names its origin (Origin, or at least Referer), and it is ours.

    A browser always sends Origin with a form post; a missing one means a client that is not a browser
    form, which has the JSON API.
    """
    site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if site in ("cross-site", "same-site"):
        return False
    ours = f"{request.scheme}://{request.headers.get('Host', '')}".lower()
    origin = request.headers.get("Origin")
    if origin is not None:
        origin = origin.strip().lower().rstrip("/")
        return origin == ours or origin in allowed_origins
    referer = request.headers.get("Referer", "").lower()
    return referer == ours or referer.startswith(ours + "/")
