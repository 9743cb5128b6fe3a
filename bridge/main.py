"""`wa-watchdog bridge --account NAME`: one WhatsApp session, its store and its REST API.

Start-up order matters: the session lock first (a second bridge must never
open a socket), then the store (crash window from the last heartbeat), then
the API (health answers `connecting` at once), then the transport. The import
path stays lean (no psutil, prometheus, neonize): a cold start is what the
recovery time is made of; the transport module is imported only when chosen.

`--standby` (a warm standby kept by the watchdog): imports, config and the
transport module are loaded first, then the process blocks on the session
lock, holding nothing else (no store, no socket, no endpoint, no sd_notify);
when the owner dies the kernel hands the lock over and only the real start-up
work (~15 ms) is left.

A store that cannot be written (disk full, another program holding its lock)
does not stop the bridge: health says so (`store_error`, naming the lock and
for how long), nothing is acknowledged (the batch is retried every
`STORE_RETRY` seconds, so ingest resumes by itself once the store is
writable again), and the event loop keeps heartbeating. Nor does a URL it
cannot publish (run/<component>.json on that full disk): it is retried in the
background while the watchdog finds the bridge on its health socket
(`endpoints.health_socket`, outside the public API's connection cap). An idle bridge
writes nothing to the store (each commit wakes every monitor): its heartbeat
is the file `bridge.alive`, and the store is probed with a write only while
that is the only way to know (`_probe_store`). A corrupt store is
refused at start and abandoned at run time with exit 2.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone

from aiohttp import web
from loguru import logger
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_fixed

from bridge.alive import AliveFile, alive_path
from bridge.api import build_app
from bridge.health import CONNECTED, STATE_OF_KIND, Health, HealthInputs
from bridge.outbox import Outbox
from bridge.quarantine import Quarantined, unmappable
from bridge.pace import Pacer
from bridge.send_pause import SendPause
from bridge.session_lock import SessionHeld, SessionLock
from bridge.integrity import CorruptStore, check_or_refuse
from bridge.membership import Membership
from bridge.schema import format_ts, now_ts
from bridge.outbox_store import OutboxRow
from bridge.store import Store, StoreCorrupt, StoreError, StoreLocked
from bridge.transport import ConnectionEvent, ConnectionKind, IncomingMessage, Receipt, Transport
from bridge.transports import transport_class
from bridge.windows import STOPPED_REASON, Windows
from watchdog.shared import clock, endpoints, exit_handoff, logs, web_guard
from watchdog.shared.child_entry import ChildEntry
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, EXIT_SESSION_HELD
from watchdog.shared.http_server import LimitedRunner, serve_private
from watchdog.shared.migrations import SchemaTooNew
from watchdog.shared.notify import Notifier
from watchdog.shared.publishing import publish_or_retry
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.waiting import wait_event

OFFLINE_SYNC_WAIT = 10.0  # backfill anyway if the transport never says the offline queue is replayed
DRAIN_ON_STOP = 3.0  # seconds to flush the outbox on SIGTERM
TRANSPORT_CLOSE = 3.0
PORT_WAIT = 1.0  # seconds a taken api_port is retried before giving up (or falling back)
MAX_TICK = 1.0  # heartbeat period (bridge.alive: the start of a crash window is at most this stale)
# Seconds between write probes of a store that looks fine. Between them a tick only takes and drops the write
# lock (another program's lock shows; nothing is written), because every commit wakes every monitor; a write
# finds what only a write can (a read-only file, a quota) while no message arrives to find it.
STORE_PROBE = 30.0
LOW_SPACE = 1 << 20  # bytes: below this a commit may fail with a full disk, so every tick probes with a write
STORE_RETRY = 0.5  # seconds between attempts to store a batch the store refused (full disk, locked)


def _port_in_use(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


def _describe(event: ConnectionEvent) -> str:
    """A window / health reason: the transport's reason, named by the kind unless it is a plain disconnect."""
    label = event.kind.value.replace("_", " ")
    if event.kind in (ConnectionKind.DISCONNECTED, ConnectionKind.CONNECT_FAILED) or event.reason.startswith(label):
        return event.reason or label
    return f"{label}: {event.reason}" if event.reason else label


class Bridge:
    """The running bridge: the transport's Handler and the API's context."""

    def __init__(self, config: Config, account: AccountConfig, store: Store, transport: Transport,
                 died: tuple[int, str] | None = None) -> None:
        self.config = config
        self.account = account
        self.component = account.component
        self.store = store
        self.transport = transport
        self.media_dirs = account.media_dirs
        self.media_limits_mb = dataclasses.asdict(account.media_max_mb)
        self.staging_dir = store.path.parent / "outbox-media"
        self.download_dir = account.download_dir
        self.health = Health(account.name)
        self.recovery_log = RecoveryLog(config.watchdog.recovery_log, config.watchdog.recovery_log_max_bytes)
        self.outbox = Outbox(store, transport, account.jid, is_connected=lambda: self.health.connected,
                             on_dead_letter=self._dead_letter, max_attempts=account.send_max_attempts,
                             delivery_wait=account.send_wait_s, dedupe_window=account.dedupe_window_s,
                             pause=SendPause(first=account.send_pause_s), pacer=Pacer(account.pace))
        store.on_set_aside = self._set_aside
        self.alive = AliveFile(alive_path(account.session_dir, store.path, config.data_dir, self.component))
        self.windows = Windows(store, self.alive, self.recovery_log, self.component, transport,
                               account.follow_groups)
        self.membership = Membership(config, account, transport)
        # WATCHDOG=1 comes from the loop, so it continues while WhatsApp is away and while the store cannot be
        # written (full disk, locked by another program): the process is fine, health reports the problem, and a
        # restart would fix neither.
        self.entry = ChildEntry(account.watchdog_sec, self.status_line, tick=self._tick, max_period=MAX_TICK)
        self._steps = clock.StepDetector()  # wall-clock steps, logged by the heartbeat
        self._synced = asyncio.Event()
        self._stopping = False
        self._died = died  # (pid, time) the previous process was last known alive (crash window start)
        self._windows_started = False  # on_start written (retried by the heartbeat while the store refuses)
        self._next_write_probe = time.monotonic() + STORE_PROBE  # on_start is the first write
        self._connected_at = clock.instant()
        self._exit_code: int | None = None  # set by a fatal store problem (corruption)
        self._tasks: set[asyncio.Task] = set()

    # -- Handler (called by the transport) ------------------------------------------------------

    async def on_messages(self, messages: list[IncomingMessage]) -> None:
        """Commit, then return: the transport acknowledges only after this.

        While the store refuses (full disk, locked by another program) the batch is retried here, not
        acknowledged, and the loop stays free for health; a stop or a corrupt store gives up (raises).
        """
        self.health.event_seen()
        while True:
            try:
                added = self.store.add_messages(messages)
                break
            except StoreError as exc:
                self._store_failed(exc)
                if self._stopping or isinstance(exc, StoreCorrupt):
                    raise
                await asyncio.sleep(STORE_RETRY)
        if not self.health.store_writable:
            logger.info("store writable again: {} messages stored", len(messages))
        self.health.store_result("")
        if added:
            logger.info("stored {} new of {} messages", added, len(messages))

    async def on_receipts(self, receipts: list[Receipt]) -> None:
        """Commit, then return (acked after, like messages); monitors carry them to the feedback rows.

        A refused write raises: the receipts are not acknowledged, so WhatsApp (or the simulator) sends
        them again on the next connection.
        """
        self.health.event_seen()
        try:
            added = self.store.add_receipts(receipts)
        except StoreError as exc:
            self._store_failed(exc)
            raise
        if added:
            logger.debug("stored {} receipts", added)

    async def on_unmappable(self, message_id: str, chat_jid: str, reason: str, raw: str) -> None:
        self.store.quarantine([unmappable(message_id, chat_jid, reason, raw)])

    def _store_failed(self, exc: StoreError) -> None:
        """Report a store that refused a write; a corrupt one ends the bridge with exit 2."""
        if self.health.store_writable:
            logger.error("store not writable, nothing acknowledged until it is: {}", exc)
        self.health.store_result(str(exc), self.store.path.name if isinstance(exc, StoreLocked) else "")
        if isinstance(exc, StoreCorrupt) and self._exit_code is None:
            logger.error("{}", CorruptStore(self.store.path, str(exc.__cause__ or exc)))
            self._exit_code = EXIT_CONFIG
            self.entry.request_stop()

    async def on_connection(self, event: ConnectionEvent) -> None:
        self.health.event_seen()
        reason = _describe(event)
        try:
            self.store.add_connection_event(format_ts(event.at), event.kind.value, event.reason)
        except StoreError as exc:  # a diagnostic row; the state below matters more
            self._store_failed(exc)
        if event.kind == ConnectionKind.OFFLINE_SYNC_DONE:
            logger.info("offline queue replayed ({})", event.reason)
            self._synced.set()
            return
        state = STATE_OF_KIND[event.kind]
        if state is None or self._stopping or self.health.terminal:
            return  # while stopping, on_stop records the window ("bridge stopped")
        self.health.transition(state, reason)
        if event.kind == ConnectionKind.TEMPORARY_BAN:
            self._banned(event, reason)
        if state == CONNECTED:
            self.outbox.pause.lifted()
            self.outbox.pacer.connected()
            logger.info("connected to WhatsApp as {}", self.account.phone)
            self._connected_at = clock.instant(event.at.timestamp())
            self._synced.clear()
            self._spawn(self._after_connect())
            self._ready()
        else:
            try:
                self.windows.on_disconnect(reason, format_ts(event.at))
            except StoreError as exc:  # the crash-window logic of the next start covers what is lost here
                self._store_failed(exc)
            if self.health.terminal:
                logger.error("{}: not reconnecting; an operator must act (health reports {})", reason, state)
                self._spawn(self.transport.close())  # never fight over the session, whatever the transport does
                # Up as far as it will get: under systemd a missing READY=1 would mean a restart, which
                # would take the session back (stream replaced) or fail again (logged out).
                self._ready()
        self._publish_status()

    def _banned(self, event: ConnectionEvent, reason: str) -> None:
        """A temporary ban: nothing is sent until it expires (its window records it; health carries it to the
        watchdog's `temporary_ban` alert)."""
        self.outbox.pause.banned(event.until, reason)
        logger.error("{}: nothing is sent on this account until then; the transport reconnects at the expiry",
                     reason)

    def _set_aside(self, records: list[Quarantined]) -> None:
        """Poison messages: logged and one recovery-log record per batch; the rest of the batch is stored."""
        for record in records:
            logger.warning("message {} in {} {}: {}", record.message_id, record.chat_jid, record.action, record.reason)
        counts = {action: sum(r.action == action for r in records) for action in ("sanitised", "quarantined")}
        self.recovery_log.append(self.component, "quarantine", **counts,
                                 message_ids=[r.message_id for r in records][:20],
                                 message=f"{counts['sanitised']} stored sanitised, {counts['quarantined']} quarantined "
                                         f"(raw payloads in the quarantine table of {self.store.path.name})")

    def _dead_letter(self, row: OutboxRow, reason: str) -> None:
        """A send moved aside for good: one recovery-log record (the alert), then the outbox goes on."""
        self.recovery_log.append(self.component, "dead_letter", message_id=row.message_id,
                                 recipient=row.recipient_jid, message=reason)
        self._publish_status()

    def _ready(self) -> None:
        self.entry.ready()

    # -- API context -------------------------------------------------------------------------------

    def health_inputs(self) -> HealthInputs:
        try:
            return HealthInputs(self.store.outbox_depth(), self.store.open_window(), self.store.outbox_dead_letters(),
                                self.store.quarantine_counts(), self.membership.health(), self.outbox.sending())
        except sqlite3.Error as exc:
            self.health.store_result(f"cannot read {self.store.path}: {exc}")
            return HealthInputs(-1, None, -1, {}, self.membership.health(), self.outbox.pause.snapshot())

    def status_line(self) -> str:
        try:
            counts = f"{self.store.message_count()} messages · outbox {self.store.outbox_depth()}"
            dead, poison = self.store.outbox_dead_letters(), sum(self.store.quarantine_counts().values())
            counts += (f" · dead-lettered {dead}" if dead else "") + (f" · quarantined {poison}" if poison else "")
            if (sending := self.outbox.sending())["paused"]:
                counts += f" · sending paused until {sending['until']}"
            elif sending["depth"]:
                counts += f" · next send {sending['next_send_at']}, drained in ~{sending['drain_s']:.0f} s"
        except sqlite3.Error:
            counts = "store unreadable"
        return f"{self.health.reported_state} · {counts}"

    # -- background work ---------------------------------------------------------------------------

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("background task failed")

    async def _after_connect(self) -> None:
        """Drain the outbox; once the offline queue is replayed, close the window and backfill.

        The window stays open until the server says its offline queue is replayed, so
        neither the store nor health claims to be caught up before it is.
        """
        await self.outbox.drain()
        if not await wait_event(self._synced, OFFLINE_SYNC_WAIT):
            logger.info("no offline-sync-done within {}s; closing the window anyway", OFFLINE_SYNC_WAIT)
        if self.health.connected:
            self.windows.on_caught_up(self._connected_at)
            await self.windows.backfill()
        await self.membership.refresh(lambda: self.health.connected)

    def _publish_status(self) -> None:
        self.entry.publish_status()

    def _tick(self) -> None:
        """Each heartbeat's work, before WATCHDOG=1 and STATUS=: bridge.alive, the store probe, stuck sends."""
        if (step := self._steps.check()) is not None:  # the watchdog records it; nothing here runs on the wall clock
            logger.warning("{}: windows and the send dedupe keep to the boot's clock", clock.describe_step(step))
        try:
            if not self._windows_started:
                self.windows.on_start(self._died)
                self._windows_started = True
            else:
                self.windows.heartbeat()
                self._probe_store()
            if self.health.connected and not self.outbox.busy and self.store.outbox_depth() > 0:
                self._spawn(self.outbox.drain())  # e.g. a send that timed out earlier
            self.health.store_result("")
        except StoreError as exc:
            self._store_failed(exc)
        except sqlite3.Error as exc:
            self._store_failed(StoreError(f"cannot read {self.store.path}: {exc}"))

    def _probe_store(self) -> None:
        """Raise StoreError if the store cannot be written, writing to it only where a write is the only way
        to know: while it is in trouble (until a write works), while its disk is nearly full, and every
        STORE_PROBE; otherwise the write lock is only taken and dropped. Real writes report their own result."""
        now = time.monotonic()
        if not self.health.store_writable or now >= self._next_write_probe or self.store.space_left() < LOW_SPACE:
            self._next_write_probe = now + STORE_PROBE
            self.windows.record_alive()
        else:
            self.store.probe_lock()

    # -- life cycle --------------------------------------------------------------------------------

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


def cmd_bridge(config: Config, args: argparse.Namespace) -> int:
    account = config.account(args.account)
    logs.setup(logs.standby_log_name(account.component) if args.standby else account.component)
    try:  # before the lock: a standby waits with everything heavy already imported
        transport_cls = transport_class(account.transport)
    except ImportError as exc:  # e.g. neonize not installed: restarting will not help
        logger.error("transport {!r} unavailable: {}", account.transport, exc)
        return EXIT_CONFIG
    try:  # before the lock too: read-only, and a standby's takeover must not wait for it
        check_or_refuse(account.store)
    except CorruptStore as exc:
        return _refuse(exc)
    if args.standby:
        logger.info("standby pid {}: waiting for session {}", os.getpid(), account.session_dir)
    try:
        lock = SessionLock(account.session_dir, wait=args.standby)
    except SessionHeld as exc:
        print(exc, file=sys.stderr)
        return EXIT_SESSION_HELD
    died = _predecessor_died(config, account, lock)
    if args.standby:
        logger.info("standby pid {}: took over session {}", os.getpid(), account.session_dir)
        logs.rename(account.component)  # from here on it is the active bridge
    try:
        try:
            store = Store(account.store)
        except StoreCorrupt as exc:
            return _refuse(CorruptStore(account.store, str(exc.__cause__ or exc)))
        except SchemaTooNew as exc:  # written by a newer release: never half-used, no restart loop
            logger.error("{}", exc)
            return EXIT_CONFIG
        except (StoreError, sqlite3.Error, OSError) as exc:
            logger.error("cannot open the store {}: {}", account.store, exc)
            return EXIT_ERROR
        try:
            bridge = Bridge(config, account, store, transport_cls(config, account), died)
            return asyncio.run(bridge.run())
        finally:
            store.close()
    finally:
        lock.release()


def _refuse(refusal: CorruptStore) -> int:
    logger.error("{}", refusal)
    Notifier().status(str(refusal))  # the watchdog's `failed` alert names it
    return EXIT_CONFIG


def _predecessor_died(config: Config, account: AccountConfig, lock: SessionLock) -> tuple[int, str] | None:
    """(pid, time) the previous bridge was last known alive: for a standby that waited, now (the kernel just
    handed it the lock of the owner named in the file), else the exit the watchdog saw; None if unknown."""
    if lock.waited and lock.previous_owner is not None:
        return lock.previous_owner, now_ts()
    exited = exit_handoff.predecessor_exit(config.data_dir, account.component)
    return (exited[0], format_ts(datetime.fromtimestamp(exited[1], timezone.utc))) if exited else None
