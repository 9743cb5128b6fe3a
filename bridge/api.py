"""The bridge's REST API (aiohttp), drop-in compatible with whatsapp-mcp's Go bridge.

Handlers are thin: parse with `bridge.sending`, act through the outbox,
downloads and health objects, answer JSON. Every error answer has the
whatsapp-mcp shape `{"success": false, "message": ...}`. The verygoodplugins
fork's endpoints answer in its shapes: `/api/react` `{"ok": true}` (a
reaction goes through the outbox like a message: durable, in order, paced),
`/api/mark-read` and `/api/typing` `{"success", "message"}` (sent at once:
nothing to keep if WhatsApp is away, so 503).

A cluster's monitors fence their sends (bridge/fence.py): `"fence"` in a send's body,
`POST /api/fence` for the lease keeper's word, `POST /api/withdraw` to take queued sends back (a failover).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

from aiohttp import web

from bridge import media
from bridge.downloads import DownloadError, download_media, parse_download
from bridge.fence import SendFence, parse_fence_word, parse_withdraw, take_send_fence
from bridge.health import Health, HealthInputs
from bridge.outbox import Outbox
from bridge.sending import (BadRequest, SendRequest, parse_mark_read, parse_react, parse_send, parse_send_message,
                            parse_typing)
from bridge.outbox_store import IdempotencyConflict
from bridge.store import Store, StoreError
from bridge.transport import NotConnected, SendFailed, Transport
from watchdog.shared import clock, web_guard
from watchdog.shared.http_server import add_openapi

IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BODY = 1024 * 1024


class BridgeContext(Protocol):
    """What the handlers need from the running bridge."""

    store: Store
    transport: Transport
    outbox: Outbox
    health: Health
    media_dirs: list[Path]
    media_limits_mb: dict[str, float]
    staging_dir: Path  # private copies of media to send (bridge/media.py)
    download_dir: Path

    def health_inputs(self) -> HealthInputs: ...


def _fail(status: int, message: str) -> web.Response:
    return web.json_response(web_guard.mcp_shape(message), status=status)


NOT_CONNECTED = "WhatsApp client is not connected. Please wait for reconnection."


async def _at_once(action: Awaitable[None], done: str) -> web.Response:
    """A request WhatsApp must answer now (read receipts, typing): 503 while not connected, 422 if refused."""
    try:
        await action
    except NotConnected:
        return _fail(503, NOT_CONNECTED)
    except SendFailed as exc:
        return _fail(422, str(exc))
    return web.json_response({"success": True, "message": done})


def _reacted(status: int, body: dict) -> web.Response:
    """The outbox's answer in the fork's /api/react shape (`ok`; `error` when not), ours kept beside it."""
    ok = status in (200, 202)
    extra = {"ok": True} if ok else {"ok": False, "error": body.get("message", "")}
    return web.json_response({**extra, **body}, status=status)


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_HEADER, "").strip()
    if len(key) > 200:
        raise BadRequest(f"{IDEMPOTENCY_HEADER} longer than 200 characters")
    if web_guard.json_problem(key) or any(ord(c) < 32 for c in key):
        raise BadRequest(f"{IDEMPOTENCY_HEADER} must be printable UTF-8 text")
    return key or None


@web.middleware
async def _domain_errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
    """The bridge's own errors; everything else (HTTP errors, bugs) is shaped by web_guard's json_errors."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return _fail(exc.status, str(exc))
    except IdempotencyConflict as exc:
        return _fail(422, str(exc))
    except StoreError as exc:  # nothing was queued: the client must retry later
        return _fail(503, str(exc))


def build_app(bridge: BridgeContext, api_token: str = "", allowed_hosts: Sequence[str] = (),
              allowed_origins: Sequence[str] = ()) -> web.Application:
    guard = web_guard.middlewares(allowed_hosts, allowed_origins, api_token, error_body=web_guard.mcp_shape)
    app = web.Application(middlewares=[*guard, _domain_errors], client_max_size=MAX_BODY)

    async def queue(request: web.Request, parsed: SendRequest, fence: SendFence | None) -> tuple[int, dict]:
        key = _idempotency_key(request)
        staged = None
        if parsed.media_path is not None:
            staged = await media.prepare(parsed.media_path, bridge.media_dirs, bridge.media_limits_mb,
                                         bridge.staging_dir)
        return await bridge.outbox.submit(parsed, staged, key, request.path, fence)

    async def parsed(request: web.Request, parse: Callable[[object], SendRequest]
                     ) -> tuple[SendRequest, SendFence | None]:
        """The request body parsed, and its cluster fence taken out of it (bridge/fence.py)."""
        body = await web_guard.json_body(request)
        fence = take_send_fence(body)
        return parse(body), fence

    async def submit(request: web.Request, parse: Callable[[object], SendRequest]) -> web.Response:
        status, body = await queue(request, *await parsed(request, parse))
        return web.json_response(body, status=status)

    async def react(request: web.Request) -> web.Response:
        return _reacted(*await queue(request, *await parsed(request, parse_react)))

    async def mark_read(request: web.Request) -> web.Response:
        read = parse_mark_read(await web_guard.json_body(request))
        return await _at_once(bridge.transport.mark_read(read.chat_jid, read.sender_jid, read.message_ids,
                                                         read.at or clock.now()), "Messages marked as read")

    async def typing(request: web.Request) -> web.Response:
        chat_jid, composing = parse_typing(await web_guard.json_body(request))
        return await _at_once(bridge.transport.typing(chat_jid, composing),
                              f"Typing indicator set to {str(composing).lower()}")

    async def send(request: web.Request) -> web.Response:
        return await submit(request, parse_send)

    async def send_message(request: web.Request) -> web.Response:
        return await submit(request, parse_send_message)

    async def fence(request: web.Request) -> web.Response:
        word = parse_fence_word(await web_guard.json_body(request), bridge.outbox.fences.now())
        return web.json_response({"success": True, **bridge.outbox.fence_word(word)})

    async def withdraw(request: web.Request) -> web.Response:
        keys = parse_withdraw(await web_guard.json_body(request))
        states = bridge.outbox.withdraw(keys, "withdrawn by its sender (a failover, or joined to a later message)")
        return web.json_response({"success": True, "withdrawn": [k for k, s in states.items() if s == "withdrawn"],
                                  "states": states})

    async def download(request: web.Request) -> web.Response:
        message_id, chat_jid = parse_download(await web_guard.json_body(request))
        try:
            done = await download_media(bridge.store, bridge.transport, bridge.download_dir, message_id, chat_jid)
        except DownloadError as exc:
            return _fail(exc.status, str(exc))
        except NotConnected as exc:
            return _fail(503, f"Failed to download media: not connected to WhatsApp ({exc})")
        return web.json_response({"success": True, "message": f"Successfully downloaded {done.media_type} media",
                                  "filename": done.filename, "path": str(done.path)})

    async def health(request: web.Request) -> web.Response:
        status, body = bridge.health.snapshot(bridge.health_inputs())
        return web.json_response(body, status=status)

    app.router.add_post("/api/send", send)
    app.router.add_post("/send-message", send_message)
    app.router.add_post("/api/download", download)
    app.router.add_post("/api/react", react)
    app.router.add_post("/api/mark-read", mark_read)
    app.router.add_post("/api/typing", typing)
    app.router.add_post("/api/fence", fence)
    app.router.add_post("/api/withdraw", withdraw)
    app.router.add_get("/api/health", health)
    add_openapi(app, "bridge-api.json")
    return app
