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

Bridge's parts: what the transport reports (transport_events.py), start and stop (lifecycle.py).
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sqlite3
import sys
import time
from datetime import datetime, timezone

from loguru import logger

from bridge.alive import AliveFile, alive_path
from bridge.health import Health, HealthInputs
from bridge.lifecycle import LifeCycle
from bridge.outbox import Outbox
from bridge.pace import Pacer
from bridge.send_pause import SendPause
from bridge.session_lock import SessionHeld, SessionLock
from bridge.integrity import CorruptStore, check_or_refuse
from bridge.membership import Membership
from bridge.schema import format_ts, now_ts
from bridge.store import Store, StoreCorrupt, StoreError
from bridge.transport import Transport
from bridge.transport_events import TransportEvents
from bridge.transports import transport_class
from bridge.windows import Windows
from watchdog.shared import clock, exit_handoff, logs
from watchdog.shared.child_entry import ChildEntry
from bridge.config import AccountConfig
from watchdog.components import Config
from watchdog.shared.exitcodes import EXIT_CONFIG, EXIT_ERROR, EXIT_SESSION_HELD
from watchdog.shared.migrations import SchemaTooNew
from watchdog.shared.notify import Notifier
from watchdog.shared.recovery_log import RecoveryLog
from watchdog.shared.waiting import wait_event

OFFLINE_SYNC_WAIT = 10.0  # backfill anyway if the transport never says the offline queue is replayed
MAX_TICK = 1.0  # heartbeat period (bridge.alive: the start of a crash window is at most this stale)
# Seconds between write probes of a store that looks fine. Between them a tick only takes and drops the write
# lock (another program's lock shows; nothing is written), because every commit wakes every monitor; a write
# finds what only a write can (a read-only file, a quota) while no message arrives to find it.
STORE_PROBE = 30.0
LOW_SPACE = 1 << 20  # bytes: below this a commit may fail with a full disk, so every tick probes with a write


class Bridge(TransportEvents, LifeCycle):
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
