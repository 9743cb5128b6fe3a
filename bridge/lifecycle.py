"""The bridge's life cycle: start (disconnect windows, the API on its port or a free one, the health socket, the
endpoint, the heartbeat, the transport), run until stopped or the transport ends, and a clean stop (drain the
outbox, close the transport, record the stop). A part of Bridge (bridge/main.py).
"""
from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import time

from aiohttp import web
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from bridge.alive import AliveFile
from bridge.api import build_app
from bridge.health import Health
from bridge.membership import Membership
from bridge.outbox import Outbox
from bridge.store import Store, StoreError
from bridge.transport import Transport
from bridge.windows import STOPPED_REASON, Windows
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared import endpoints, web_guard
from watchdog.shared.child_entry import ChildEntry
from watchdog.shared.exitcodes import EXIT_ERROR, EXIT_OK
from watchdog.shared.http_server import LimitedRunner, serve_private
from watchdog.shared.publishing import publish_or_retry

DRAIN_ON_STOP = 3.0  # seconds to flush the outbox on SIGTERM
TRANSPORT_CLOSE = 3.0
PORT_WAIT = 1.0  # seconds a taken api_port is retried before giving up (or falling back)


def _port_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


class LifeCycle:
    config: Config
    account: AccountConfig
    component: str
    store: Store
    transport: Transport
    health: Health
    windows: Windows
    membership: Membership
    outbox: Outbox
    entry: ChildEntry
    alive: AliveFile
    _died: tuple[int, str] | None
    _windows_started: bool
    _stopping: bool
    _exit_code: int | None
    _tasks: set[asyncio.Task]

    async def run(self) -> int:
        async with self.entry:  # SIGTERM/SIGINT stop it from here on
            return await self._run()

    async def _run(self) -> int:
        try:
            self.windows.on_start(self._died)
            self._windows_started = True
        except StoreError as exc:  # full disk or locked: serve health anyway; the heartbeat retries it
            self._store_failed(exc)
        runner = LimitedRunner(build_app(self, self.account.api_token, self.account.api_allowed_hosts,
                                         self.account.api_allowed_origins),
                               error_body=web_guard.mcp_shape, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            taken = await self._serve(runner)
        except OSError as exc:
            logger.error("cannot serve the API on {}:{}: {} (accounts.{}.api_port)", self.account.api_host,
                         self.account.api_port, os.strerror(exc.errno) if exc.errno else exc, self.account.name)
            await runner.cleanup()
            return EXIT_ERROR
        host, port = runner.addresses[0][:2]
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        if taken:
            logger.warning("api_port {} is taken: serving on free port {} instead (api_port_fallback)", taken, port)
        socket_path = endpoints.health_socket(self.config.data_dir, self.component)
        if socket_path is not None:
            await serve_private(runner, socket_path)
        if (later := publish_or_retry(self.config.data_dir, self.component, {"api": url})) is not None:
            self._spawn(later)  # never the reason the bridge is down
        logger.info("bridge {} serving on {} (transport {}, store {})", self.account.name, url,
                    self.account.transport, self.store.path)
        self._spawn(self.health.measure_loop_lag())
        self.entry.start_heartbeat()
        self._spawn(self.membership.keep_fresh(lambda: self.health.connected, self.entry.stop))
        transport_task = asyncio.create_task(self.transport.run(self))
        stop_task = asyncio.create_task(self.entry.stop.wait())
        await asyncio.wait({transport_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        exit_code, stop_reason = EXIT_OK, STOPPED_REASON
        if self._exit_code is not None:
            exit_code, stop_reason = self._exit_code, f"store {self.store.path} is corrupt"
        elif not self.entry.stop.is_set():
            error = transport_task.exception()
            if error is not None:
                # An exception may name its own exit code (NeedsOperator: 4, an unpaired neonize session).
                exit_code = getattr(error, "exit_code", EXIT_ERROR)
                if exit_code == EXIT_ERROR:
                    logger.opt(exception=error).error("transport failed")
                else:
                    logger.error("{}", error)
                stop_reason = f"bridge error: {type(error).__name__}: {error}"
            else:
                logger.warning("transport stopped ({}); serving health until stopped", self.health.state)
                await stop_task
        stop_task.cancel()
        await self._shutdown(runner, transport_task, stop_reason)
        return exit_code

    async def _serve(self, runner: web.AppRunner) -> int | None:
        """Bind the API on api_port; with api_port_fallback a taken port means any free one (returns the taken port).

        A port in use is retried for PORT_WAIT first: a standby that takes over a killed bridge gets the
        session lock in the same instant the kernel closes the old bridge's listening socket.
        """
        try:
            async for attempt in AsyncRetrying(stop=stop_after_delay(PORT_WAIT), wait=wait_fixed(0.02), reraise=True,
                                               retry=retry_if_exception(_port_in_use)):
                with attempt:
                    await web.TCPSite(runner, self.account.api_host, self.account.api_port).start()
            return None
        except OSError as exc:
            if not _port_in_use(exc) or not self.account.api_port_fallback:
                raise
        await web.TCPSite(runner, self.account.api_host, 0).start()
        return self.account.api_port

    async def _shutdown(self, runner: web.AppRunner, transport_task: asyncio.Task, reason: str) -> None:
        started = time.monotonic()
        logger.info("stopping ({})", reason)
        self.entry.stopping()
        self._stopping = True
        if self.health.connected and self.store.outbox_depth():
            try:
                await asyncio.wait_for(self.outbox.drain(), DRAIN_ON_STOP)
            except TimeoutError:
                logger.warning("outbox not drained within {}s; {} stay queued for the next start", DRAIN_ON_STOP,
                               self.store.outbox_depth())
        self.outbox.close()
        await self.transport.close()
        try:
            await asyncio.wait_for(transport_task, TRANSPORT_CLOSE)
        except (TimeoutError, Exception):  # noqa: BLE001 - stopping anyway; the window below records it
            transport_task.cancel()
        await self.entry.stop_heartbeat()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await runner.cleanup()
        try:
            self.windows.on_stop(reason)
        except (StoreError, sqlite3.Error) as exc:  # the next start sees a crash window instead
            logger.error("could not record the stop: {}", exc)
        self.alive.close()
        endpoints.remove(self.config.data_dir, self.component)
        logger.info("stopped cleanly in {:.0f} ms", (time.monotonic() - started) * 1000)
