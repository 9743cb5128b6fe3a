"""Serving an API app with bounded connections: a cap that sheds load with 503, a header-read timeout, and
aiohttp's own protocol errors (bad request line, oversized header) answered as JSON and logged once a minute.

Why: 1,100 idle connections used to exhaust the bridge's 1,024 descriptors, so
every new client (and accept() itself) failed while a prober on its old pooled
connection saw a healthy bridge, and the identical accept() tracebacks rotated
the log history away. Connections above `max_connections` get an immediate
`503` and are closed (so a client learns to back off instead of hanging), and a
connection that has not completed its request headers within `header_timeout`
is closed (aiohttp's keep-alive timer, which also runs from the first byte).

The cap counts only TCP connections. A unix socket site (`serve_private`,
under the 0700 run/ dir) is the service user's own: the watchdog's health probe
goes there, so 300 half-sent requests from any local user cannot take its slot
and make a busy service look failed. The 503 of the cap carries `SHED_HEADER`,
so a prober that does meet it knows the service is overloaded, not broken.

`LimitedRunner` is a drop-in `web.AppRunner`; `add_openapi(app, name)` serves the API's contract
(watchdog/openapi/<name>, package data: an installed copy serves it too) at GET /openapi.json.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server
from loguru import logger

from watchdog.shared import file_modes
from watchdog.shared.logs import RateLimitedLog
from watchdog.shared.web_guard import ErrorBody, error_shape

MAX_CONNECTIONS = 256  # far below the default 1,024 descriptors (neonize, SQLite and logs need some too)
HEADER_TIMEOUT = 10.0  # seconds for a connection to send its request headers (and to sit idle between requests)
SHED_HEADER = "X-Connections-Shed"  # on the cap's 503: the service is alive and overloaded


def _is_private(transport: asyncio.BaseTransport) -> bool:
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.family == socket.AF_UNIX


class _LimitedHandler(RequestHandler):
    private = False  # on the service's own unix socket: neither counted nor shed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self._manager
        assert isinstance(server, LimitedServer)
        self.private = _is_private(transport)
        if not self.private and server.public_connections() >= server.max_connections:
            self.force_close()  # never registered: nothing is parsed or handled on this connection
            transport.write(server.shed_response)  # type: ignore[attr-defined]
            transport.close()
            server.log.report("shed", f"shedding connections with 503: {len(server.connections)} open, "
                                      f"the limit is {server.max_connections}")
            return
        super().connection_made(transport)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """aiohttp's own errors (the request could not even be parsed): JSON in the app's shape, logged sparingly."""
        server = self._manager
        assert isinstance(server, LimitedServer)
        text = message or (str(exc) if exc else "") or HTTPStatus(status).phrase
        server.log.report(f"protocol {status}", f"refused a malformed HTTP request ({status}) from {request.remote}: {text}")
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        response = web.json_response(server.error_body(text if status < 500 else "internal error"), status=status)
        response.force_close()
        return response


class LimitedServer(Server):
    def __init__(self, *args: Any, max_connections: int, error_body: ErrorBody, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.error_body = error_body
        body = json.dumps(error_body("too many connections; retry shortly")).encode()
        self.shed_response = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                              b"Retry-After: 1\r\n%s: %d\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                              % (SHED_HEADER.encode(), max_connections, len(body), body))
        self.log = RateLimitedLog()

    def public_connections(self) -> int:
        return sum(not getattr(handler, "private", False) for handler in self.connections)

    def __call__(self) -> RequestHandler:
        return _LimitedHandler(self, loop=self._loop, **self._kwargs)


class LimitedRunner(web.AppRunner):
    """An AppRunner whose server caps connections and bounds header time; errors shaped by `error_body`."""

    def __init__(self, app: web.Application, *, max_connections: int = MAX_CONNECTIONS,
                 header_timeout: float = HEADER_TIMEOUT, error_body: ErrorBody = error_shape, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=header_timeout, **kwargs)
        self._limits = {"max_connections": max_connections, "error_body": error_body}

    async def _make_server(self) -> Server:
        plain = await super()._make_server()
        return LimitedServer(plain.request_handler, request_factory=plain.request_factory,
                             handler_cancellation=plain.handler_cancellation, loop=plain._loop, **self._limits,
                             **self._kwargs)


def openapi_document(name: str) -> bytes:
    """An API's OpenAPI document (e.g. "drops-api.json"), read from the package: docs/ links to these files."""
    return resources.files("watchdog").joinpath("openapi", name).read_bytes()


async def serve_private(runner: web.AppRunner, path: Path) -> bool:
    """Serve `runner`'s app on the unix socket `path` too (0600, in a 0700 dir): the service user's own way in,
    outside the connection cap. A failure is logged, not raised: the public API still serves."""
    try:
        file_modes.ensure_dir(path.parent, file_modes.PRIVATE_DIR)
        await web.UnixSite(runner, str(path)).start()  # a stale socket of an earlier process is replaced
        os.chmod(path, file_modes.PRIVATE_FILE)
    except OSError as exc:
        logger.warning("not serving on {}: {}; probes go to the public API", path, exc.strerror or exc)
        return False
    return True


def add_openapi(app: web.Application, name: str) -> None:
    """GET /openapi.json: the API's OpenAPI document, the file the drift test checks against the routes."""
    body = openapi_document(name)

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")
    app.router.add_get("/openapi.json", openapi)
